"""Freezing parameters, and snapshots of the updates in the state.

:func:`freeze` and :func:`selective_transform` are :func:`gradtx.masked` and
:func:`gradtx.partition` with :func:`gradtx.set_to_zero`, under Optax's names;
:func:`snapshot` stores a measurement of the updates (their norm, say) in the
state, where it can be logged from outside the compiled step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from gradtx.base import GradientTransformation, Updates, set_to_zero
from gradtx.combine import _bool_mask, check_members, is_function, masked, partition


def freeze(mask: Any) -> GradientTransformation:
    """Zeroes the updates of the parameters where ``mask`` is True: they stay as they are.

    ``masked(set_to_zero(), mask)``: the frozen leaves get zero updates, the
    others pass through unchanged (chain it with an optimizer, before or after).
    To also keep the optimizer's state off the frozen leaves, use
    :func:`selective_transform`. Same name, argument and behaviour as
    ``optax.freeze``.

    Args:
      mask: ``True`` where the parameters are frozen: one bool for the whole tree,
        a pytree of bools with the params' structure or a prefix of it, or a
        function of the params returning one (see :func:`gradtx.masked`). It must
        be known when the step is traced.

    Returns:
      A transformation whose state is :class:`gradtx.MaskedState`.

    Raises:
      TypeError: ``mask`` is None or has a leaf that is not a bool.
      ValueError: the mask does not have the params' tree structure or a prefix of it.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> params = {"a": jnp.ones(1), "b": jnp.ones(2)}
      >>> tx = gradtx.chain(gradtx.sgd(0.1), gradtx.freeze({"a": True, "b": False}))
      >>> tx.update(params, tx.init(params), params)[0]
      {'a': Array([0.], dtype=float32), 'b': Array([-0.1, -0.1], dtype=float32)}
    """
    if mask is None:
        raise TypeError(
            "freeze: mask must be a pytree of bools or a function of the params, got None."
        )
    if not is_function(mask):
        _bool_mask("freeze", mask)
    return masked(set_to_zero(), mask)


def selective_transform(
    optimizer: GradientTransformation, *, freeze_mask: Any
) -> GradientTransformation:
    """Runs ``optimizer`` on the parameters ``freeze_mask`` leaves free; zeros for the others.

    ``partition({"train": optimizer, "freeze": set_to_zero()}, labels)`` with the
    label ``"freeze"`` where ``freeze_mask`` is True: the frozen parameters get
    zero updates and the optimizer holds no state for them (it never sees them).
    Same name, arguments and behaviour as ``optax.selective_transform``;
    ``freeze_mask`` may also be a function of the params, as a mask of
    :func:`gradtx.masked` may.

    Args:
      optimizer: the transformation for the parameters that train.
      freeze_mask: ``True`` where the parameters are frozen: one bool, a pytree of
        bools with the params' structure (or a prefix of it), or a function of the
        params returning one; known when the step is traced.

    Returns:
      A transformation whose state is :class:`gradtx.PartitionState` with the
      labels ``"train"`` and ``"freeze"``.

    Raises:
      TypeError: ``optimizer`` is not a transformation; ``freeze_mask`` is None or
        has a leaf that is not a bool.
      ValueError: the mask does not have the params' tree structure or a prefix of it.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> params = {"a": jnp.ones(1), "b": jnp.ones(2)}
      >>> tx = gradtx.selective_transform(gradtx.sgd(0.1), freeze_mask={"a": True, "b": False})
      >>> tx.update(params, tx.init(params), params)[0]
      {'a': Array([0.], dtype=float32), 'b': Array([-0.1, -0.1], dtype=float32)}
    """
    check_members("selective_transform", (optimizer,))
    if freeze_mask is None:
        raise TypeError(
            "selective_transform: freeze_mask must be a pytree of bools or a function of the "
            "params, got None."
        )
    if not is_function(freeze_mask):
        _bool_mask("selective_transform", freeze_mask)

    def labels(tree: Any) -> Any:
        mask = freeze_mask(tree) if is_function(freeze_mask) else freeze_mask
        frozen = _bool_mask("selective_transform", mask)
        return jax.tree.map(lambda m: "freeze" if m else "train", frozen)

    return partition({"train": optimizer, "freeze": set_to_zero()}, labels)


class SnapshotState(NamedTuple):
    """State of :func:`snapshot` (Optax's field name)."""

    # {measure_name: measure(updates)} of the last updates (of the params after init).
    measurement: dict[str, Any]


def snapshot(measure_name: str, measure: Callable[[Updates], Any]) -> GradientTransformation:
    """Stores ``measure(updates)`` in the state and passes the updates through unchanged.

    Placed in a chain, it records what the updates look like at that point (the
    norm before a clipping, the fraction of zeros after a mask); read it from the
    state after the step: ``state[i].measurement[measure_name]`` in a
    ``chain``. ``init`` stores ``measure(params)``, so ``measure`` must give a
    result of the same tree, shapes and dtypes for the params and the updates
    (``gradtx.tree.global_norm`` does). Same name, arguments and state as
    ``optax.snapshot``.

    Args:
      measure_name: the key of the measurement in ``state.measurement``.
      measure: a function of the updates returning a pytree of arrays.

    Returns:
      A transformation whose state is :class:`SnapshotState`.

    Raises:
      TypeError: ``measure_name`` is not a string or ``measure`` is not callable.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.chain(gradtx.snapshot("norm", gradtx.tree.global_norm), gradtx.sgd(0.1))
      >>> _, state = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
      >>> state[0].measurement["norm"]
      Array(5., dtype=float32)
    """
    if not isinstance(measure_name, str):
        raise TypeError(
            f"snapshot: measure_name must be a string, got {measure_name!r} "
            f"({type(measure_name).__name__})."
        )
    if not callable(measure):
        raise TypeError(f"snapshot: measure must be callable, got {type(measure).__name__}.")

    def init_fn(params):
        return SnapshotState({measure_name: measure(params)})

    def update_fn(updates, state, params=None, **extra_args):
        del state, params, extra_args
        return updates, SnapshotState({measure_name: measure(updates)})

    return GradientTransformation(init_fn, update_fn)
