"""Nonlinear conjugate gradient: Fletcher-Reeves and Polak-Ribiere+.

Each direction mixes the new gradient with the previous direction,

    p_k = -g_k + beta_k p_{k-1},

so that on a quadratic with exact line searches the directions are conjugate and
the method ends in at most ``n`` steps (Goodfellow et al. 2016, Sec. 8.6.2). The
two classic choices of ``beta_k`` (Nocedal & Wright 2006, eq. 5.41a and 5.44):

    Fletcher-Reeves:   beta_k = g_k' g_k / g_{k-1}' g_{k-1}
    Polak-Ribiere+:    beta_k = max(0, g_k' (g_k - g_{k-1}) / g_{k-1}' g_{k-1})

The method needs a line search: Fletcher-Reeves is a descent method under the
strong Wolfe conditions with ``c2 < 1/2``; PR+ under the strong Wolfe conditions
with a small ``c2`` in practice.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation
from gradtx.combine import chain
from gradtx.second_order import _common
from gradtx.second_order.linesearch import scale_by_zoom_linesearch
from gradtx.transforms.scale import scale_by_learning_rate


def _cg_linesearch(axis_name: tree.AxisName | None = None) -> GradientTransformation:
    return scale_by_zoom_linesearch(max_linesearch_steps=30, curv_rtol=0.1, axis_name=axis_name)


# The default line search of the named optimizers (a transformation is immutable, so
# one instance serves every call; with an axis_name they build their own).
_CG_LINESEARCH = _cg_linesearch()

_METHODS = ("polak_ribiere_plus", "fletcher_reeves")


class ScaleByNonlinearCgState(NamedTuple):
    """State of :func:`scale_by_nonlinear_cg` (trees shaped like the params)."""

    count: Array  # int32 scalar: steps taken (k).
    grad: Any  # g_{k-1}, in the compute dtype (>= float32).
    direction: Any  # u_{k-1} = -p_{k-1}, the previous output before the step size.


def _beta(method: str, g: Any, g_prev: Any, axis_name: tree.AxisName | None) -> Array:
    """``beta_k`` of Fletcher-Reeves or Polak-Ribiere+; 0 when ``g_{k-1} = 0``."""
    previous = _common.vdot(g_prev, g_prev, axis_name)
    safe = jnp.where(previous > 0, previous, 1.0)
    if method == "fletcher_reeves":
        beta = _common.vdot(g, g, axis_name) / safe
    else:
        change = jax.tree.map(jnp.subtract, g, g_prev)
        beta = jnp.maximum(0.0, _common.vdot(g, change, axis_name) / safe)
    return jnp.where(previous > 0, beta, 0.0)


def scale_by_nonlinear_cg(
    method: str = "polak_ribiere_plus",
    *,
    restart_period: int | None = None,
    axis_name: tree.AxisName | None = None,
) -> GradientTransformation:
    r"""The nonlinear conjugate-gradient direction, pointing uphill: ``u_k = g_k + beta_k u_{k-1}``.

    With ``u_k = -p_k`` this is ``p_k = -g_k + beta_k p_{k-1}`` (module doc), the
    textbook direction; the step size comes from the line search after it.
    ``beta_k = 0`` (a restart to steepest descent) on the first step, every
    ``restart_period`` steps, and whenever ``-u_k`` would not be a descent
    direction (``g_k' u_k <= 0``). Inside :func:`jax.shard_map` with
    ``axis_name``, the dot products of ``beta_k`` and of the descent test are
    ``psum``-med across that axis, so every device restarts together and
    computes its block of the unsharded direction.

    Args:
      method: ``"polak_ribiere_plus"`` (the default; Polak & Ribiere 1969 with
        Powell's non-negativity, 1986) or ``"fletcher_reeves"`` (1964).
      restart_period: restart every this many steps (Nocedal & Wright suggest
        ``n``, the number of parameters), or None for no periodic restart.
      axis_name: ``None`` (every leaf is whole), or the mesh axis (or tuple of
        axes) of a ``shard_map`` over which *every* leaf of the gradients is
        split into disjoint blocks (above). A leaf replicated over the axis
        would be counted once per device.

    Returns:
      A transformation (it does not need ``params``).

    Raises:
      ValueError: unknown ``method``, a ``restart_period`` that is not an
        integer >= 1, or an ``axis_name`` not None, a string or a non-empty
        tuple of strings; complex parameters at ``init``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_nonlinear_cg("fletcher_reeves")
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([2.0, 0.0]), state)
      >>> tx.update(jnp.array([0.0, 1.0]), state)[0]  # beta = 1/4: g + u/4
      Array([0.5, 1. ], dtype=float32)

    References:
      Fletcher & Reeves (1964); Polak & Ribiere (1969); Powell (1986). Nocedal &
      Wright (2006), Numerical Optimization, 2nd ed., Sec. 5.2, Alg. 5.4.
      Goodfellow, Bengio & Courville (2016), Sec. 8.6.2.
    """
    owner = "scale_by_nonlinear_cg"
    if method not in _METHODS:
        _checks._fail(owner, "method", method, f"one of {_METHODS}")
    if restart_period is not None:
        _checks.positive_int(owner, "restart_period", restart_period)
    _checks.axis_name(owner, axis_name)

    def init_fn(params):
        _common.refuse_complex(owner, params)
        dtype = _common.tree_dtype(params)
        # Separate buffers for each field, so that a donated state donates each once.
        return ScaleByNonlinearCgState(
            tree.zero_count(), tree.zeros_like(params, dtype), tree.zeros_like(params, dtype)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.grad, updates, owner=owner)
        dtype = _common.tree_dtype(state.grad)
        g = tree.cast(updates, dtype)
        restart = state.count == 0
        if restart_period is not None:
            restart = restart | (state.count % restart_period == 0)
        beta = jnp.where(restart, 0.0, _beta(method, g, state.grad, axis_name)).astype(dtype)
        u = _common.axpy(beta, state.direction, g)
        descent = _common.vdot(g, u, axis_name) > 0
        u = jax.tree.map(lambda ui, gi: jnp.where(descent, ui, gi), u, g)
        new_state = ScaleByNonlinearCgState(tree.safe_increment(state.count), g, u)
        return tree.cast_like(u, updates), new_state

    return GradientTransformation(init_fn, update_fn)


def nonlinear_cg(
    learning_rate: float | Any = 1.0,
    method: str = "polak_ribiere_plus",
    *,
    restart_period: int | None = None,
    linesearch: GradientTransformation | None = _CG_LINESEARCH,
    axis_name: tree.AxisName | None = None,
) -> GradientTransformation:
    """Nonlinear conjugate gradient with a strong-Wolfe line search.

    ``chain(scale_by_nonlinear_cg(method), scale_by_learning_rate(learning_rate),
    linesearch)``; see :func:`scale_by_nonlinear_cg`.

    **Meta-gradients: forward mode only.** The line search's trials run in
    ``lax.while_loop``, which JAX differentiates in forward mode only. A derivative
    through steps with respect to a hyperparameter or the starting point works with
    ``jax.jvp`` / ``jax.jacfwd``; reverse mode (``jax.grad``, ``jax.vjp``) raises
    JAX's "Reverse-mode differentiation does not work for lax.while_loop"
    ``ValueError``.

    Args:
      learning_rate: scales the direction before the line search (the search's
        first trial step); a number or a schedule.
      method: ``"polak_ribiere_plus"`` or ``"fletcher_reeves"``.
      restart_period: restart to steepest descent every this many steps, or None.
      linesearch: the line search; by default
        ``scale_by_zoom_linesearch(max_linesearch_steps=30, curv_rtol=0.1)``
        (strong Wolfe with ``c2 = 0.1``, as Nocedal & Wright advise for CG). None
        takes the fixed step ``-learning_rate * u``.
      axis_name: ``None``, or the mesh axis (or tuple of axes) of a
        ``shard_map`` over which every leaf of the params is split: passed to
        :func:`scale_by_nonlinear_cg` and to the default line search, whose
        ``value_fn`` must then return the loss of the whole problem (see
        :func:`gradtx.scale_by_zoom_linesearch`). A ``linesearch`` passed here
        is used as given: build it with the same ``axis_name``.

    Returns:
      A transformation; ``update`` needs ``params`` and ``value_fn`` when a line
      search is used.

    Raises:
      ValueError: invalid ``learning_rate``, ``method``, ``restart_period`` or
        ``axis_name``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> loss = lambda p: 0.5 * (10.0 * p[0] ** 2 + p[1] ** 2)
      >>> result = gradtx.minimize(loss, jnp.array([1.0, 1.0]), gradtx.nonlinear_cg())
      >>> bool(result.converged), int(result.num_steps) <= 3
      (True, True)

    References:
      Nocedal & Wright (2006), Alg. 5.4; Fletcher & Reeves (1964); Polak &
      Ribiere (1969).
    """
    _checks.learning_rate("nonlinear_cg", learning_rate)
    _checks.axis_name("nonlinear_cg", axis_name)
    if linesearch is _CG_LINESEARCH and axis_name is not None:
        linesearch = _cg_linesearch(axis_name)
    members = [
        scale_by_nonlinear_cg(method, restart_period=restart_period, axis_name=axis_name),
        scale_by_learning_rate(learning_rate),
    ]
    if linesearch is not None:
        members.append(linesearch)
    return chain(*members)
