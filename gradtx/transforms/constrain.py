"""Constraints on the step: non-negative parameters, and NaN gradients set to zero.

Optax groups the same two blocks as its "constraining" transformations:
:func:`keep_params_nonnegative` projects the point a step lands on onto the
non-negative orthant, and :func:`zero_nans` replaces NaN elements of the updates
by zeros and records, per leaf, whether it did.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.base import Array, EmptyState, GradientTransformation

NonNegativeParamsState = EmptyState
"""Optax's name of the state of :func:`keep_params_nonnegative`: it is stateless, so this is
:class:`~gradtx.EmptyState` (no fields, as Optax's)."""


def _nonnegative_leaf(u: Array, w: Array) -> Array:
    """``u``, or ``-w`` where ``w + u < 0``: ``w + u`` projected onto ``[0, inf)``."""
    return jnp.where(w + u < 0, (-w).astype(u.dtype), u)


def keep_params_nonnegative() -> GradientTransformation:
    """Shortens the steps that would make a parameter negative: it lands on 0.

    Placed last in a chain, it sees the step ``u`` that will be added to ``w``
    and replaces it so that the parameters become the projection of ``w + u``
    onto the non-negative orthant (projected gradient descent; the projection is
    the proximal map of the constraint's indicator, Parikh & Boyd 2014, Sec. 1.2):

    .. math::
        u_i \\leftarrow \\begin{cases} -w_i & \\text{if } w_i + u_i < 0 \\\\
            u_i & \\text{otherwise} \\end{cases}
        \\qquad\\text{so}\\qquad w + u = \\max(w + u, 0)

    The parameters should be non-negative to start with: a negative one is set
    to 0 by the first step that does not move it up past 0. The result is exact
    when the updates have the params' dtype (``w + (-w) = 0``); a lower-precision
    update holds ``-w`` rounded. Same name and numbers as
    ``optax.keep_params_nonnegative``. Complex parameters are refused (they have
    no order).

    Raises:
      TypeError: at ``init``, parameters that are not real floating arrays.
      ValueError: ``update`` called without ``params``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.chain(gradtx.sgd(1.0), gradtx.keep_params_nonnegative())
      >>> w = jnp.array([0.5, 2.0])
      >>> updates, _ = tx.update(jnp.array([1.0, 1.0]), tx.init(w), w)
      >>> gradtx.apply_updates(w, updates)
      Array([0., 1.], dtype=float32)

    References:
      Parikh & Boyd (2014), Proximal Algorithms, Sec. 1.2 (the projection onto
      a convex set as a proximal map).
    """

    def init_fn(params):
        tree.check_inexact(params, "keep_params_nonnegative")
        complex_leaves = [
            jax.tree_util.keystr(path) or "the root"
            for path, w in jax.tree_util.tree_flatten_with_path(params)[0]
            if jnp.iscomplexobj(w)
        ]
        if complex_leaves:
            raise TypeError(
                "keep_params_nonnegative: parameters must be real (a complex number is neither "
                f"negative nor not), got complex leaves at {tree.name_paths(complex_leaves)}."
            )
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(
                "keep_params_nonnegative: update needs the params: "
                "call update(updates, state, params)."
            )
        tree.check_structure(params, updates, owner="keep_params_nonnegative")
        return jax.tree.map(_nonnegative_leaf, updates, params), state

    return GradientTransformation(init_fn, update_fn)


class ZeroNansState(NamedTuple):
    """State of :func:`zero_nans` (Optax's field name)."""

    # Per leaf of the updates, a bool scalar: whether the last updates held a NaN
    # there (all False after init). Read it to learn where NaNs were zeroed.
    found_nan: Any


def zero_nans() -> GradientTransformation:
    """Replaces every NaN element of the updates by 0, and records where it found one.

    .. math::
        u_i \\leftarrow \\begin{cases} 0 & \\text{if } u_i \\text{ is NaN} \\\\
            u_i & \\text{otherwise} \\end{cases}

    (a complex element with a NaN part counts as NaN). Infinities are left alone:
    :func:`gradtx.clip` bounds them, :func:`gradtx.apply_if_finite` skips the
    whole step. The state's ``found_nan`` holds, per leaf, whether the last
    updates had a NaN in it; nothing else reads it. Same name, state and numbers
    as ``optax.zero_nans``; as there, the state takes the tree of the latest
    updates (no check against the params: there is nothing per element to keep).

    Raises:
      TypeError: at ``init``, integer or boolean parameters.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.zero_nans()
      >>> g = {"a": jnp.array([1.0, jnp.nan]), "b": jnp.ones(2)}
      >>> updates, state = tx.update(g, tx.init(g))
      >>> updates["a"], bool(state.found_nan["a"]), bool(state.found_nan["b"])
      (Array([1., 0.], dtype=float32), True, False)
    """

    def init_fn(params):
        tree.check_inexact(params, "zero_nans")
        return ZeroNansState(jax.tree.map(lambda _: jnp.array(False), params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        found = jax.tree.map(lambda u: jnp.any(jnp.isnan(u)), updates)
        zeroed = jax.tree.map(lambda u: jnp.where(jnp.isnan(u), jnp.zeros_like(u), u), updates)
        return zeroed, ZeroNansState(found)

    return GradientTransformation(init_fn, update_fn)
