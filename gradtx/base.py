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
import numpy as np

from gradtx import _checks

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


TransformUpdateExtraArgsFn = TransformUpdateFn
"""Optax's name of the ``update`` signature with ``**extra_args``: in gradtx every
``update`` takes them, so it is :class:`TransformUpdateFn` itself."""


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


class GradientTransformationExtraArgs(GradientTransformation):
    """A :class:`GradientTransformation` typed as taking extra arguments (Optax's name).

    In gradtx every ``update`` already accepts ``**extra_args``, so this subclass
    adds no behaviour: it exists so that code written for Optax runs unchanged,
    ``GradientTransformationExtraArgs(init, update)`` builds a transformation and
    ``isinstance(tx, GradientTransformationExtraArgs)`` tells the ones built as
    such (or by :func:`with_extra_args_support`) apart. An ``optax.chain`` passes
    extra arguments only to members of *Optax's* class of this name, so a gradtx
    block that reads ``value`` inside an ``optax.chain`` must still be wrapped in
    ``optax.GradientTransformationExtraArgs`` (see :mod:`gradtx.combine`).

    Attributes:
      init: ``init(params) -> state``.
      update: ``update(updates, state, params=None, **extra_args) -> (updates, state)``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.GradientTransformationExtraArgs(*gradtx.scale(2.0))
      >>> isinstance(tx, gradtx.GradientTransformation)
      True
      >>> tx.update(jnp.ones(2), tx.init(None), loss=3.0)[0]
      Array([2., 2.], dtype=float32)
    """


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


def init_empty_state(params: Params) -> EmptyState:
    """The ``init`` of a stateless transformation: ignores the params.

    Args:
      params: any tree (unused).

    Returns:
      ``EmptyState()``.

    Examples:
      >>> import gradtx
      >>> gradtx.init_empty_state({"w": 1.0})
      EmptyState()
    """
    del params
    return EmptyState()


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


def stateless_with_tree_map(
    f: Callable[[Array, Array | None], Array],
) -> GradientTransformation:
    """Turns a per-leaf ``f(update, param) -> update`` into a stateless transformation.

    .. math::
        u'_\\ell = f(u_\\ell, p_\\ell) \\quad \\text{for every leaf } \\ell

    :func:`stateless` with the tree map done for you: ``f`` is mapped over the
    updates and the params together, or called as ``f(u, None)`` on each update
    leaf when ``update`` is called without params (Optax's behaviour).

    Args:
      f: a pure function of one update array and its param array (or ``None``).

    Returns:
      A transformation whose state is :class:`EmptyState`.

    Raises:
      TypeError: ``f`` is not callable.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.stateless_with_tree_map(lambda u, p: u if p is None else u * p)
      >>> tx.update({"w": jnp.ones(2)}, tx.init(None), {"w": jnp.array([2.0, 3.0])})[0]
      {'w': Array([2., 3.], dtype=float32)}
    """
    if not callable(f):
        raise TypeError(f"stateless_with_tree_map: f must be callable, got {f!r}.")

    def update_fn(updates, state, params=None, **extra_args):
        del state, extra_args
        if params is None:
            return jax.tree.map(lambda u: f(u, None), updates), EmptyState()
        return jax.tree.map(f, updates, params), EmptyState()

    return GradientTransformation(init_empty_state, update_fn)


def set_to_zero() -> GradientTransformation:
    """Replaces every update by zeros: the parameters it reaches do not move.

    With :func:`gradtx.masked` or :func:`gradtx.partition` it freezes part of the
    tree (:func:`gradtx.freeze` is ``masked(set_to_zero(), mask)``). Like
    :func:`identity` it never reads the params, so any tree is accepted, integer
    and boolean leaves included (a ``float0`` gradient gives a ``float0`` zero).
    Same name and behaviour as ``optax.set_to_zero``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.set_to_zero()
      >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
      Array([0., 0.], dtype=float32)
    """

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return jax.tree.map(jnp.zeros_like, updates), state

    return GradientTransformation(init_fn, update_fn)


def with_extra_args_support(tx: GradientTransformation) -> GradientTransformationExtraArgs:
    """``tx`` as a :class:`GradientTransformationExtraArgs`, whose ``update`` takes
    (and ignores) any extra argument ``tx.update`` does not declare.

    A :class:`GradientTransformationExtraArgs` is returned as it is. Otherwise the
    new ``update`` hands ``tx.update`` the extra arguments it names (all of them
    when it has ``**kwargs``, as every gradtx transformation does) and drops the
    rest, the rule every gradtx wrapper follows.

    Note:
      ``optax.with_extra_args_support`` drops *every* extra argument of a
      transformation that is not Optax's ``GradientTransformationExtraArgs``;
      here an ``update(updates, state, params=None, *, value=None)`` still gets
      ``value``, and a gradtx block gets them all. For an Optax block with the
      plain three-argument ``update`` both drop them all.

    Args:
      tx: a gradtx or Optax transformation (anything with ``init`` and ``update``).

    Returns:
      A :class:`GradientTransformationExtraArgs` with ``tx``'s ``init``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> plain = gradtx.GradientTransformation(
      ...     lambda p: gradtx.EmptyState(), lambda u, s, p=None: (u, s))
      >>> tx = gradtx.with_extra_args_support(plain)
      >>> tx.update(jnp.ones(2), tx.init(None), None, value=1.0)[0]
      Array([1., 1.], dtype=float32)
    """
    from gradtx.combine import accepts_extra_args, check_members  # noqa: PLC0415  (imports base)

    if isinstance(tx, GradientTransformationExtraArgs):
        return tx
    check_members("with_extra_args_support", (tx,))
    return GradientTransformationExtraArgs(tx.init, accepts_extra_args(tx.update))


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


def incremental_update(new_tensors: Params, old_tensors: Params, step_size: Any) -> Params:
    """A step of Polyak averaging: ``step_size * new + (1 - step_size) * old``, leaf by leaf.

    Called after every training step with the new parameters and the running
    average, it keeps an exponential moving average of the parameters (a
    "target network", or weights for evaluation):

    .. math::
        \\bar\\theta \\leftarrow \\tau \\theta + (1 - \\tau) \\bar\\theta

    Leaves that are ``None`` in ``new_tensors`` stay ``None``; each result has the
    dtype of its ``old_tensors`` leaf (the average's). Same name, arguments and
    numbers as ``optax.incremental_update``.

    Args:
      new_tensors: the latest parameters (``theta``).
      old_tensors: the running average (``theta_bar``), shaped like ``new_tensors``.
      step_size: ``tau`` in [0, 1], a number or a scalar array (traced values
        are not checked).

    Returns:
      The new average, shaped like ``old_tensors``.

    Raises:
      ValueError: a concrete ``step_size`` outside [0, 1].

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.incremental_update(jnp.ones(2), jnp.zeros(2), step_size=0.25)
      Array([0.25, 0.25], dtype=float32)

    References:
      Polyak & Juditsky (1992), Acceleration of Stochastic Approximation by
      Averaging; Lillicrap et al. (2016), DDPG's soft target updates.
    """
    _checks.in_range("incremental_update", "step_size", step_size, 0.0, 1.0, closed_high=True)

    def leaf(new, old):
        if new is None:
            return None
        average = step_size * new + (1.0 - step_size) * old
        return average.astype(jnp.result_type(old))

    return jax.tree.map(leaf, new_tensors, old_tensors, is_leaf=lambda x: x is None)


def periodic_update(
    new_tensors: Params, old_tensors: Params, steps: Any, update_period: Any
) -> Params:
    """``new_tensors`` when ``steps`` is a multiple of ``update_period``, else ``old_tensors``.

    A slow copy of the parameters refreshed every ``update_period`` steps: the
    target network of DQN (Mnih et al. 2015), or BYOL's (Grill et al. 2020) hard
    variant. At ``steps = 0`` the copy is refreshed. Same name, arguments and
    behaviour as ``optax.periodic_update``.

    Args:
      new_tensors: the latest parameters.
      old_tensors: the slow copy, with the tree and dtypes of ``new_tensors``.
      steps: the number of steps taken so far, an integer (traced or not).
      update_period: the refresh period, an integer >= 1 (traced values are not
        checked).

    Returns:
      ``new_tensors`` or ``old_tensors`` (a ``lax.cond`` when ``steps`` is traced).

    Raises:
      ValueError: a concrete ``update_period`` that is not an integer >= 1.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.periodic_update(jnp.ones(2), jnp.zeros(2), steps=4, update_period=2)
      Array([1., 1.], dtype=float32)
    """
    if not isinstance(update_period, jax.core.Tracer):
        period = np.asarray(update_period)
        integral = period.shape == () and np.issubdtype(period.dtype, np.integer)
        if not integral or period < 1 or isinstance(update_period, (bool, np.bool_)):
            raise ValueError(
                f"periodic_update: update_period must be an integer >= 1, got {update_period!r}."
            )
    refresh = jnp.mod(steps, update_period) == 0
    if isinstance(refresh, jax.core.Tracer):
        return jax.lax.cond(refresh, lambda: new_tensors, lambda: old_tensors)
    return new_tensors if bool(refresh) else old_tensors
