"""Hessian-free (truncated) Newton: conjugate gradient on Hessian-vector products.

Newton's system ``(H + lambda I) u = g`` is solved approximately by the linear
conjugate-gradient method, which needs only products ``H v``. Each is one
forward-over-reverse pass, ``H v = d/dt grad f(theta + t v) |_{t=0}`` (Pearlmutter
1994), costing about two gradient evaluations and no ``n x n`` matrix, so the
method scales to models of any size. CG stops when the residual is small enough
(a relative tolerance, or Nocedal & Wright's forcing term), after a cap on
iterations, or as soon as it meets a direction of non-positive curvature, where
the quadratic model has no minimum (Nocedal & Wright 2006, Alg. 7.1).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation
from gradtx.combine import chain
from gradtx.second_order import _common
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByHessianFreeState(NamedTuple):
    """State of :func:`scale_by_hessian_free`."""

    count: Array  # int32 scalar: steps taken.
    cg_steps: Array  # int32 scalar: CG iterations (Hessian-vector products) of the last step.


class _CgCarry(NamedTuple):
    step: Array  # CG iterations done
    u: Any  # the iterate, u_j
    r: Any  # the residual g - B u_j
    p: Any  # the search direction
    rr: Array  # r'r
    done: Array  # stopped by the tolerance or by negative curvature


def hessian_vector_product(value_fn: _common.ValueFn, params: Any, v: Any) -> Any:
    """``H v`` for the Hessian ``H`` of ``value_fn`` at ``params``, by forward-over-reverse.

    Args:
      value_fn: the loss, ``params -> scalar``.
      params: where the Hessian is taken.
      v: a tree like ``params``.

    Returns:
      ``H v``, a tree like ``params``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.second_order.hessian_free import hessian_vector_product
      >>> loss = lambda p: p[0] ** 2 * p[1]
      >>> hessian_vector_product(loss, jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0]))
      Array([4., 2.], dtype=float32)
    """
    return jax.jvp(jax.grad(value_fn), (params,), (v,))[1]


def truncated_cg(
    matvec: Any,
    g: Any,
    *,
    max_steps: int,
    tolerance: Array,
    axis_name: tree.AxisName | None = None,
) -> tuple[Any, Array]:
    """Approximately solves ``B u = g`` for a symmetric ``B`` given by ``matvec``.

    Linear conjugate gradient from ``u_0 = 0`` (Nocedal & Wright 2006, Alg. 5.2),
    truncated as in their Alg. 7.1: it stops when ``|r_j| <= tolerance``, after
    ``max_steps`` iterations, or when a direction has ``p' B p <= 0``; there it
    returns the current iterate, or ``g`` itself if that happens on the first
    iteration (so ``-u`` is always a descent direction).

    Args:
      matvec: ``v -> B v`` on trees like ``g``.
      g: the right-hand side (the gradient).
      max_steps: the cap on iterations.
      tolerance: the absolute tolerance on the residual's norm.
      axis_name: ``None``, or the ``shard_map`` axis over which every leaf of
        ``g`` is split: the dot products are ``psum``-med over it.

    Returns:
      ``(u, iterations)``.
    """
    zero = jax.tree.map(jnp.zeros_like, g)
    rr0 = _common.vdot(g, g, axis_name)

    def not_done(carry):
        return (carry.step < max_steps) & ~carry.done

    def iterate(carry):
        bp = matvec(carry.p)
        curvature = _common.vdot(carry.p, bp, axis_name)
        negative = curvature <= 0
        alpha = jnp.where(negative, 0.0, carry.rr / jnp.where(negative, 1.0, curvature))
        u = _common.axpy(alpha, carry.p, carry.u)
        r = _common.axpy(-alpha, bp, carry.r)
        rr = _common.vdot(r, r, axis_name)
        beta = rr / jnp.where(carry.rr > 0, carry.rr, 1.0)
        p = _common.axpy(beta, carry.p, r)
        # Negative curvature on the first iteration: fall back to steepest descent.
        u = jax.tree.map(
            lambda new, old, gi: jnp.where(negative, jnp.where(carry.step == 0, gi, old), new),
            u,
            carry.u,
            g,
        )
        done = negative | (jnp.sqrt(rr) <= tolerance)
        return _CgCarry(carry.step + 1, u, r, p, rr, done)

    start = _CgCarry(jnp.int32(0), zero, g, g, rr0, jnp.sqrt(rr0) <= tolerance)
    final = jax.lax.while_loop(not_done, iterate, start)
    return final.u, final.step


def scale_by_hessian_free(
    damping: float | Array = 0.0,
    *,
    max_cg_steps: int = 100,
    cg_tol: float | Array | None = None,
    axis_name: tree.AxisName | None = None,
) -> GradientTransformation:
    r"""Preconditions the gradient by ``(H + lambda I)^-1`` through truncated CG.

    Solves ``(H + lambda I) u = g`` approximately with :func:`truncated_cg`, where
    ``H v`` is a forward-over-reverse product of the loss ``value_fn`` (an extra
    argument) at the current parameters; ``H`` is never formed, so memory is a few
    copies of the parameters. The CG residual tolerance is

    * ``cg_tol=None`` (the default): Nocedal & Wright's forcing sequence,
      ``min(0.5, sqrt(|g|)) |g|``, which gives superlinear convergence near a
      minimum (their Alg. 7.1; SciPy's Newton-CG uses the same);
    * a number ``c``: ``c |g|``.

    The output points uphill (it is ``g`` when ``H = I``);
    :func:`hessian_free` follows it with the step.

    Args:
      damping: ``lambda >= 0``, added to the Hessian (eq. 8.28 of Goodfellow et
        al.; Martens 2010 adapts it, here it is fixed or scheduled by the caller).
      max_cg_steps: the cap on CG iterations (each is one Hessian-vector product).
      cg_tol: None, or the relative residual tolerance in ``(0, 1)``.
      axis_name: ``None`` (every leaf is whole), or the mesh axis (or tuple of
        axes) of a ``shard_map`` over which every leaf of the params is split:
        the dot products of CG and ``|g|`` are ``psum``-med over it, so every
        device takes the unsharded run's decisions. ``value_fn`` must then
        return the loss of the whole problem (e.g. a ``psum`` of the blocks'
        losses), so that its Hessian-vector products are this device's blocks.

    Returns:
      A transformation; ``update`` needs ``params`` and ``value_fn``.
      ``state.cg_steps`` is the number of CG iterations of the last step.

    Raises:
      ValueError: invalid hyperparameters; complex parameters at ``init``; no
        ``params`` or ``value_fn`` at ``update``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> loss = lambda p: 0.5 * (4.0 * p[0] ** 2 + p[1] ** 2)
      >>> p = jnp.array([1.0, 1.0])
      >>> tx = gradtx.scale_by_hessian_free(cg_tol=1e-6)  # CG solves H u = g exactly here
      >>> tx.update(jnp.array([4.0, 1.0]), tx.init(p), p, value_fn=loss)[0].round(5)
      Array([1., 1.], dtype=float32)
      >>> tx = gradtx.scale_by_hessian_free()  # the forcing term stops it after 1 step
      >>> u, state = tx.update(jnp.array([4.0, 1.0]), tx.init(p), p, value_fn=loss)
      >>> int(state.cg_steps)
      1

    References:
      Nocedal & Wright (2006), Numerical Optimization, 2nd ed., Alg. 5.2 and
      Alg. 7.1 (line search Newton-CG). Pearlmutter (1994), Fast exact
      multiplication by the Hessian. Martens (2010), Deep learning via
      Hessian-free optimization.
    """
    owner = "scale_by_hessian_free"
    _checks.non_negative(owner, "damping", damping)
    _checks.axis_name(owner, axis_name)
    _checks.positive_int(owner, "max_cg_steps", max_cg_steps)
    if cg_tol is not None:
        _checks.in_range(owner, "cg_tol", cg_tol, 0.0, 1.0)
        if _checks.is_zero(cg_tol):
            _checks._fail(owner, "cg_tol", cg_tol, "None or in (0, 1)")

    def init_fn(params):
        _common.refuse_complex(owner, params)
        return ScaleByHessianFreeState(tree.zero_count(), jnp.int32(0))

    def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
        del extra_args
        _common.require_params(owner, params)
        value_fn = _common.require_value_fn(owner, value_fn)
        tree.check_structure(params, updates, owner=owner)
        dtype = _common.tree_dtype(params)
        g = tree.cast(updates, dtype)
        at = tree.cast(params, dtype)

        def loss_in_dtype(p):
            return value_fn(tree.cast_like(p, params))

        def matvec(v):
            hv = hessian_vector_product(loss_in_dtype, at, v)
            return _common.axpy(jnp.asarray(damping, dtype), v, tree.cast(hv, dtype))

        g_norm = jnp.sqrt(_common.vdot(g, g, axis_name))
        if cg_tol is None:
            tolerance = jnp.minimum(0.5, jnp.sqrt(g_norm)) * g_norm
        else:
            tolerance = cg_tol * g_norm
        u, steps = truncated_cg(
            matvec, g, max_steps=max_cg_steps, tolerance=tolerance, axis_name=axis_name
        )
        new_state = ScaleByHessianFreeState(tree.safe_increment(state.count), steps)
        return tree.cast_like(u, updates), new_state

    return GradientTransformation(init_fn, update_fn)


def hessian_free(
    learning_rate: float | Any = 1.0,
    damping: float | Array = 0.0,
    *,
    max_cg_steps: int = 100,
    cg_tol: float | Array | None = None,
    linesearch: GradientTransformation | None = None,
    axis_name: tree.AxisName | None = None,
) -> GradientTransformation:
    """Hessian-free (truncated) Newton: ``-epsilon (H + lambda I)^-1 g`` by CG.

    ``chain(scale_by_hessian_free(...), scale_by_learning_rate(learning_rate),
    linesearch)``; see :func:`scale_by_hessian_free` for the math.

    **Meta-gradients: forward mode only.** The conjugate-gradient iterations (and a
    line search's trials, if one is chained) run in ``lax.while_loop``, which JAX
    differentiates in forward mode only. A derivative through steps with respect to
    a hyperparameter or the starting point works with ``jax.jvp`` / ``jax.jacfwd``;
    reverse mode (``jax.grad``, ``jax.vjp``) raises JAX's "Reverse-mode
    differentiation does not work for lax.while_loop" ``ValueError``.

    Args:
      learning_rate: ``epsilon``, a number or a schedule; 1 is Newton's step.
      damping: ``lambda >= 0``.
      max_cg_steps: the cap on CG iterations per step.
      cg_tol: None (Nocedal & Wright's forcing term) or a relative tolerance.
      linesearch: a line search to chain after the step, or None.
      axis_name: see :func:`scale_by_hessian_free`; a ``linesearch`` is used as
        given: build it with the same ``axis_name``.

    Returns:
      A transformation; ``update`` needs ``params`` and ``value_fn``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> loss = lambda p: jnp.sum((p - 3.0) ** 2) + jnp.sum(p) ** 2
      >>> tx = gradtx.hessian_free(cg_tol=1e-6)
      >>> result = gradtx.minimize(loss, jnp.zeros(2), tx, max_steps=5)
      >>> int(result.num_steps), result.params
      (1, Array([1., 1.], dtype=float32))

    References:
      Nocedal & Wright (2006), Alg. 7.1. Martens (2010).
    """
    _checks.learning_rate("hessian_free", learning_rate)
    _checks.axis_name("hessian_free", axis_name)
    members = [
        scale_by_hessian_free(
            damping, max_cg_steps=max_cg_steps, cg_tol=cg_tol, axis_name=axis_name
        ),
        scale_by_learning_rate(learning_rate),
    ]
    if linesearch is not None:
        members.append(linesearch)
    return chain(*members)
