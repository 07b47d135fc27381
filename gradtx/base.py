"""The protocol every gradtx method speaks: a pair of pure functions.

A :class:`GradientTransformation` is ``(init, update)``:

* ``init(params) -> state``: a pytree of arrays (NamedTuples of arrays).
* ``update(updates, state, params=None, **extra_args) -> (updates, state)``.

The shape is structurally Optax's, so gradtx and Optax transformations mix in
either direction and Flax accepts gradtx optimizers, without gradtx importing
Optax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeAlias

import jax
import jax.numpy as jnp

Array: TypeAlias = jax.Array
Params: TypeAlias = Any
"""A pytree of parameter arrays (leaves may be ``None``)."""
Updates: TypeAlias = Any
"""A pytree shaped like the params: gradients at the head of a chain."""
OptState: TypeAlias = Any
"""A pytree of arrays holding a transformation's state."""
Schedule: TypeAlias = Callable[[Array], Array]
"""A function from the step count (int32 scalar) to a scalar hyperparameter."""
ScalarOrSchedule: TypeAlias = float | Array | Schedule


class TransformInitFn(Protocol):
    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
    """A pure ``(init, update)`` pair; the unit every gradtx method is made of.

    Attributes:
      init: ``init(params) -> state``.
      update: ``update(updates, state, params=None, **extra_args) -> (updates, state)``.
        ``extra_args`` carries what some methods need besides the gradient
        (``value``, ``value_fn``, ``key``, ...); each transformation takes what it
        needs by name and ignores the rest.
    """

    init: TransformInitFn
    update: TransformUpdateFn


class EmptyState(NamedTuple):
    """The state of a stateless transformation: an empty pytree."""


def identity() -> GradientTransformation:
    """Returns updates unchanged.

    It never reads the params, so any tree is accepted, integer and boolean
    leaves included (every other gradtx block refuses those at ``init``).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.identity()
      >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
      Array([1., 1.], dtype=float32)
    """

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return updates, state

    return GradientTransformation(init_fn, update_fn)


def stateless(f: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    """Turns ``f(updates, params) -> updates`` into a stateless transformation.

    Args:
      f: a pure function of the incoming updates and the params (which may be
        ``None`` when the caller does not pass them).

    Returns:
      A transformation whose state is :class:`EmptyState`. Its ``init`` accepts any
      tree, integer and boolean leaves included: what ``f`` does with them is
      ``f``'s business.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> halve = gradtx.stateless(lambda u, p: jax.tree.map(lambda x: x / 2, u))
      >>> halve.update(jnp.ones(2), halve.init(None))[0]
      Array([0.5, 0.5], dtype=float32)
    """

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        return f(updates, params), state

    return GradientTransformation(init_fn, update_fn)


def _add_keep_dtype(param: Array | None, update: Array | None) -> Array | None:
    if param is None:
        return None
    param = jnp.asarray(param)
    if jnp.shape(update) != param.shape:
        raise _ShapeMismatch
    return (param + update).astype(param.dtype)


class _ShapeMismatch(Exception):
    """An update leaf whose shape is not its parameter's (reported with its path)."""


def _shape_error(params: Params, updates: Updates) -> ValueError:
    def shape(x):
        return None if x is None else tuple(jnp.shape(x))

    is_none = lambda x: x is None  # noqa: E731
    pairs = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_none)[0]
    treedef = jax.tree.structure(params, is_leaf=is_none)
    others = treedef.flatten_up_to(updates)
    bad = [
        f"{jax.tree_util.keystr(path) or 'the root'} has shape {shape(p)}, its update {shape(u)}"
        for (path, p), u in zip(pairs, others, strict=True)
        if p is not None and shape(p) != shape(u)
    ]
    from gradtx.tree import name_paths  # noqa: PLC0415  (gradtx.tree imports this module)

    return ValueError(
        "apply_updates: every update must have its parameter's shape (no broadcasting): "
        f"{name_paths(bad)}."
    )


def apply_updates(params: Params, updates: Updates) -> Params:
    """Returns ``params + updates``, leaf by leaf, each in its parameter's dtype.

    Leaves that are ``None`` in the params stay ``None``. The sum is computed in
    the promoted dtype of the two leaves, then cast back, so a float32 update on a
    bfloat16 parameter rounds once.

    Args:
      params: the parameters, a pytree (its ``None`` leaves are kept).
      updates: a pytree shaped like ``params``, as returned by ``update``.

    Raises:
      ValueError: an update leaf's shape differs from its parameter's (it is not
        broadcast: a ``(3,)`` update on a ``(1,)`` parameter is an error, not a
        new ``(3,)`` parameter), or the trees differ.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.apply_updates({"w": jnp.ones(2)}, {"w": jnp.full(2, -0.5)})
      {'w': Array([0.5, 0.5], dtype=float32)}
    """
    try:
        return jax.tree.map(_add_keep_dtype, params, updates, is_leaf=lambda x: x is None)
    except _ShapeMismatch:
        raise _shape_error(params, updates) from None
