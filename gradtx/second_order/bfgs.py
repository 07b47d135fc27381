"""BFGS and L-BFGS: quasi-Newton methods that learn the inverse Hessian from gradients.

After a step ``s_k = x_{k+1} - x_k`` the gradient changed by ``y_k = g_{k+1} -
g_k``; the secant condition asks the new inverse-Hessian approximation to map
``y_k`` to ``s_k``. BFGS makes the smallest such change (Nocedal & Wright 2006,
eq. 6.17), with ``rho_k = 1 / (y_k' s_k)``:

    H_{k+1} = (I - rho_k s_k y_k') H_k (I - rho_k y_k s_k') + rho_k s_k s_k'.

It stays positive definite as long as ``y_k' s_k > 0`` (which a Wolfe line search
guarantees). Both methods use a pair only when

    s_k' y_k > eps ||s_k|| ||y_k||,      eps = CURVATURE_EPS = 0.02,

that is when the angle between ``s_k`` and ``y_k`` is below ~89 degrees: a pair
with nearly no curvature along ``s_k`` (where the loss is not convex, or in
rounding noise) would make ``H`` grow by up to ``1 / eps^2`` along ``s_k``, and
a step taken without a line search explode. (Dennis & Schnabel 1983, Appendix A,
skip the secant update on the same test with ``eps = sqrt(machine epsilon)``;
the larger ``eps`` here is what keeps a fixed-step run on Himmelblau's function
bounded, see ``tests/test_second_order.py``.) Optax keeps every pair, whatever
its sign.

BFGS keeps the dense ``n x n`` matrix; L-BFGS keeps only the last ``m`` pairs
and applies ``H_k`` by the two-loop recursion (Alg. 7.4), in ``O(m n)`` time and
memory, which is what large models can afford.

Both blocks build ``s_k`` and ``y_k`` from the params and gradients they are given
(they keep the previous ones), so any step rule may come after them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation
from gradtx.combine import chain
from gradtx.second_order import _common
from gradtx.second_order.linesearch import scale_by_zoom_linesearch
from gradtx.transforms.scale import scale_by_learning_rate


def _unit_step_linesearch(axis_name: tree.AxisName | None = None) -> GradientTransformation:
    return scale_by_zoom_linesearch(
        max_linesearch_steps=20, initial_guess_strategy="one", axis_name=axis_name
    )


# The default line search of the named optimizers (a transformation is immutable, so
# one instance serves every call; with an axis_name they build their own).
_UNIT_STEP_LINESEARCH = _unit_step_linesearch()


def _first_step_scale(g_norm: Array, scale_init_precond: bool) -> Array:
    """Before any curvature pair: ``u = min(1, 1/|g|) g``, a first step of length <= 1."""
    if not scale_init_precond:
        return jnp.ones_like(g_norm)
    return jnp.minimum(1.0, 1.0 / jnp.where(g_norm > 0, g_norm, 1.0))


# The cosine below which a curvature pair is not used (module docstring).
CURVATURE_EPS = 2e-2


def _curvature_pair(params, grads, prev_params, prev_grads, count, axis_name=None):
    """``s``, ``y``, ``s'y``, ``y'y`` and whether the pair is usable.

    Usable: ``count > 0`` and ``s'y > eps ||s|| ||y||`` (``eps`` =
    :data:`CURVATURE_EPS`), finite: the curvature along ``s`` is positive and
    not lost in rounding (see :func:`scale_by_lbfgs`).
    """
    s = jax.tree.map(jnp.subtract, params, prev_params)
    y = jax.tree.map(jnp.subtract, grads, prev_grads)
    sy = _common.vdot(s, y, axis_name)
    ss, yy = _common.vdot(s, s, axis_name), _common.vdot(y, y, axis_name)
    usable = (count > 0) & jnp.isfinite(sy) & (sy > CURVATURE_EPS * jnp.sqrt(ss * yy))
    return s, y, sy, yy, usable


# --------------------------------------------------------------------------- BFGS


class ScaleByBfgsState(NamedTuple):
    """State of :func:`scale_by_bfgs`."""

    count: Array  # int32 scalar: steps taken (k).
    inv_hessian: Array  # (n, n), compute dtype: H_k; the identity until the first pair.
    params: Any  # x_{k-1}, a tree like params in the compute dtype (>= float32).
    grad: Any  # g_{k-1}, likewise.
    has_pair: Array  # bool: a curvature pair has been used (H_k is no longer I).


def bfgs_inverse_update(inv_hessian: Array, s: Array, y: Array) -> Array:
    """The BFGS update of the inverse Hessian (Nocedal & Wright 2006, eq. 6.17).

    ``(I - rho s y') H (I - rho y s') + rho s s'`` with ``rho = 1 / y's``, expanded
    to ``H - rho (s (Hy)' + (Hy) s') + (rho^2 y'Hy + rho) s s'`` (``O(n^2)``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.second_order.bfgs import bfgs_inverse_update
      >>> s, y = jnp.array([1.0, 0.0]), jnp.array([2.0, 0.0])
      >>> bfgs_inverse_update(jnp.eye(2), s, y)  # now maps y to s
      Array([[0.5, 0. ],
             [0. , 1. ]], dtype=float32)
    """
    rho = 1.0 / jnp.vdot(y, s)
    hy = inv_hessian @ y
    return (
        inv_hessian
        - rho * (jnp.outer(s, hy) + jnp.outer(hy, s))
        + (rho * rho * jnp.vdot(y, hy) + rho) * jnp.outer(s, s)
    )


def scale_by_bfgs(scale_init_precond: bool = True) -> GradientTransformation:
    r"""Preconditions the gradient by the BFGS inverse-Hessian approximation: ``u = H_k g_k``.

    ``H_k`` is updated by :func:`bfgs_inverse_update` with the pair ``s = x_k -
    x_{k-1}``, ``y = g_k - g_{k-1}`` before it is applied; a pair with ``s'y <=
    0.02 ||s|| ||y||`` (or not finite) leaves ``H`` unchanged (the module
    docstring says why). With ``scale_init_precond``:

    * before the first pair is used, ``H_0 = (y's / y'y) I`` (Nocedal & Wright,
      eq. 6.20), which fits the scale of the problem;
    * on steps with no pair yet (the first), ``u = min(1, 1/|g|) g``, so a unit step
      moves at most 1.

    Without it, ``H_0 = I`` and the first ``u = g`` (scipy's ``BFGS``). The scaling
    suits most problems, but where the curvature spans decades it sets ``H_0``
    near ``1 / lambda_max`` and unexplored directions get tiny steps: on a 20-D
    quadratic with condition number 1e4, ``minimize`` with ``bfgs()`` needs 133
    steps and with ``bfgs(scale_init_precond=False)`` 21. The matrix has ``n^2`` entries
    for ``n`` parameters (the whole tree flattened): for problems up to a few
    thousand parameters; use :func:`scale_by_lbfgs` beyond.

    Args:
      scale_init_precond: scale the first matrix and the first step (above).

    Returns:
      A transformation; ``update`` needs ``params``.

    Raises:
      ValueError: complex params at ``init``; no ``params`` at ``update``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_bfgs()
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([3.0, 4.0]), state, jnp.zeros(2))
      >>> u  # the first step: g / |g|
      Array([0.6, 0.8], dtype=float32)

    References:
      Broyden (1970), Fletcher (1970), Goldfarb (1970), Shanno (1970). Nocedal &
      Wright (2006), Numerical Optimization, 2nd ed., Sec. 6.1, eq. 6.17, 6.20.
      Goodfellow, Bengio & Courville (2016), Sec. 8.6.3.
    """
    owner = "scale_by_bfgs"

    def init_fn(params):
        _common.refuse_complex(owner, params)
        dtype = _common.tree_dtype(params)
        size = ravel_pytree(params)[0].size
        eye = jnp.eye(size, dtype=dtype)
        # Separate buffers for each field, so that a donated state donates each once.
        return ScaleByBfgsState(
            tree.zero_count(),
            eye,
            tree.zeros_like(params, dtype),
            tree.zeros_like(params, dtype),
            jnp.asarray(False),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _common.require_params(owner, params)
        tree.check_structure(state.grad, updates, owner=owner)
        dtype = state.inv_hessian.dtype
        x, g = tree.cast(params, dtype), tree.cast(updates, dtype)
        s, y, sy, yy, usable = _curvature_pair(x, g, state.params, state.grad, state.count)
        s, y, g_flat = ravel_pytree(s)[0], ravel_pytree(y)[0], ravel_pytree(g)[0]
        inv_hessian = state.inv_hessian
        if scale_init_precond:
            gamma = sy / jnp.where(yy > 0, yy, 1.0)
            initial = gamma * jnp.eye(inv_hessian.shape[0], dtype=dtype)
            inv_hessian = jnp.where(state.has_pair, inv_hessian, initial)
        updated = bfgs_inverse_update(inv_hessian, s, jnp.where(usable, y, s))
        inv_hessian = jnp.where(usable, updated, state.inv_hessian)
        has_pair = state.has_pair | usable
        first = _first_step_scale(jnp.linalg.norm(g_flat), scale_init_precond) * g_flat
        u = jnp.where(has_pair, inv_hessian @ g_flat, first)
        unravel = ravel_pytree(updates)[1]
        new_state = ScaleByBfgsState(tree.safe_increment(state.count), inv_hessian, x, g, has_pair)
        return tree.cast_like(unravel(u), updates), new_state

    return GradientTransformation(init_fn, update_fn)


def bfgs(
    learning_rate: float | Any | None = None,
    scale_init_precond: bool = True,
    linesearch: GradientTransformation | None = _UNIT_STEP_LINESEARCH,
) -> GradientTransformation:
    """BFGS with a strong-Wolfe line search.

    ``chain(scale_by_bfgs(...), scale_by_learning_rate(learning_rate), linesearch)``;
    see :func:`scale_by_bfgs`.

    **Meta-gradients: forward mode only.** The line search's trials run in
    ``lax.while_loop``, which JAX differentiates in forward mode only. A derivative
    through steps with respect to a hyperparameter or the starting point works with
    ``jax.jvp`` / ``jax.jacfwd``; reverse mode (``jax.grad``, ``jax.vjp``) raises
    JAX's "Reverse-mode differentiation does not work for lax.while_loop"
    ``ValueError``.

    Args:
      learning_rate: scales the direction before the line search; None means 1,
        the quasi-Newton step.
      scale_init_precond: see :func:`scale_by_bfgs`.
      linesearch: by default :func:`gradtx.scale_by_zoom_linesearch` (20
        evaluations, first trial 1, ``c1 = 1e-4``, ``c2 = 0.9``); None takes the
        fixed step.

    Returns:
      A transformation; ``update`` needs ``params`` (and ``value_fn`` with a
      line search).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> loss = lambda p: jnp.sum((p - 2.0) ** 2) + 0.5 * jnp.sum(p ** 4)
      >>> result = gradtx.minimize(loss, jnp.zeros(3), gradtx.bfgs(), tol=1e-5)
      >>> bool(result.converged), result.params.round(4)
      (True, Array([1., 1., 1.], dtype=float32))

    References:
      Nocedal & Wright (2006), Alg. 6.1.
    """
    return _with_step(
        "bfgs", scale_by_bfgs(scale_init_precond=scale_init_precond), learning_rate, linesearch
    )


def _with_step(owner, direction, learning_rate, linesearch):
    if learning_rate is None:
        learning_rate = 1.0
    _checks.learning_rate(owner, learning_rate)
    members = [direction, scale_by_learning_rate(learning_rate)]
    if linesearch is not None:
        members.append(linesearch)
    return chain(*members)


# ------------------------------------------------------------------------- L-BFGS


def _leaf_dtype(x: Any, dtype: Any) -> Any:
    """``dtype`` for a complex leaf, its real counterpart for a real one."""
    return dtype if jnp.iscomplexobj(x) else tree.real_dtype(dtype)


def _cast(x: Any, dtype: Any) -> Any:
    return jax.tree.map(lambda v: jnp.asarray(v).astype(_leaf_dtype(v, dtype)), x)


def _zeros(x: Any, dtype: Any) -> Any:
    return jax.tree.map(lambda v: jnp.zeros_like(v, _leaf_dtype(v, dtype)), x)


class ScaleByLBFGSState(NamedTuple):
    """State of :func:`scale_by_lbfgs` (trees in the compute dtype, >= float32).

    The first six fields are Optax's, in Optax's order; the last two are
    gradtx's (a pair failing the curvature test is not stored, so the pair count
    is not the step count, and ``gamma`` is kept rather than recomputed).
    """

    count: Array  # int32 scalar: steps taken (k).
    params: Any  # x_{k-1} (complex leaves complex, real leaves real).
    updates: Any  # g_{k-1}, the gradient given at the last step.
    diff_params_memory: Any  # like params with a leading axis of memory_size: the s_i.
    diff_updates_memory: Any  # likewise, the y_i.
    weights_memory: Array  # (memory_size,): rho_i = 1 / y_i's_i; 0 for an empty slot.
    gamma: Array  # scalar: H_k^0 = gamma I, s'y / y'y of the newest pair.
    num_pairs: Array  # int32 scalar: pairs stored so far (the next slot is num_pairs % m).


def lbfgs_two_loop(
    g: Any,
    s_memory: Any,
    y_memory: Any,
    rho: Array,
    gamma: Array,
    newest: Array,
    axis_name: tree.AxisName | None = None,
) -> Any:
    """``H_k g`` by the L-BFGS two-loop recursion (Nocedal & Wright 2006, Alg. 7.4).

    ``q = g``; newest to oldest: ``alpha_i = rho_i s_i' q``, ``q -= alpha_i y_i``;
    ``r = gamma q``; oldest to newest: ``beta = rho_i y_i' r``,
    ``r += (alpha_i - beta) s_i``. Slots with ``rho_i = 0`` are empty and change
    nothing.

    Args:
      g: the vector (a tree).
      s_memory, y_memory: trees like ``g`` with a leading axis of length ``m``.
      rho: ``(m,)``.
      gamma: the scale of the initial matrix.
      newest: the slot of the newest pair (the ring buffer's head).
      axis_name: None, or the ``shard_map`` axis over which the trees are split:
        the dot products ``s_i' q`` and ``y_i' r`` are ``psum``-med across it.

    Returns:
      ``H_k g``, a tree like ``g``.
    """
    m = rho.shape[0]
    order = (newest - jnp.arange(m)) % m  # newest first

    def pair(i):
        return (
            jax.tree.map(lambda mem: mem[i], s_memory),
            jax.tree.map(lambda mem: mem[i], y_memory),
        )

    def backward(q, i):
        s, y = pair(i)
        alpha = rho[i] * _common.vdot(s, q, axis_name)
        return _common.axpy(-alpha, y, q), alpha

    q, alphas = jax.lax.scan(backward, g, order)
    r = _common.scaled(gamma, q)

    def forward(r, i_alpha):
        i, alpha = i_alpha
        s, y = pair(i)
        beta = rho[i] * _common.vdot(y, r, axis_name)
        return _common.axpy(alpha - beta, s, r), None

    r, _ = jax.lax.scan(forward, r, (order[::-1], alphas[::-1]))
    return r


def scale_by_lbfgs(
    memory_size: int = 10,
    scale_init_precond: bool = True,
    *,
    axis_name: tree.AxisName | None = None,
) -> GradientTransformation:
    r"""Preconditions the gradient by the L-BFGS inverse Hessian: ``u = H_k g_k``.

    Keeps the last ``m = memory_size`` curvature pairs ``(s_i, y_i)`` (built from
    the params and gradients it is given; a pair with ``s'y <= 0.02 ||s|| ||y||``
    is not stored, see the module docstring) and applies ``H_k`` by
    :func:`lbfgs_two_loop`, starting from ``H_k^0 = gamma_k I`` with ``gamma_k =
    s'y / y'y`` of the newest pair (Nocedal & Wright eq. 7.20; 1 without
    ``scale_init_precond``). Before any pair, ``u = min(1,
    1/|g|) g`` with ``scale_init_precond``, else ``g``. Memory: ``2m + 2`` copies
    of the parameters.

    Complex params work as in Optax: every product is the real inner product
    ``Re(a^H b)`` of ``C^n`` seen as ``R^{2n}``, and the gradient given must be
    in Optax's convention, the conjugate of JAX's (``jax.tree.map(jnp.conj,
    jax.grad(f)(z))``, the ascent direction ``df/dx + i df/dy``), as for
    :func:`gradtx.scale_by_zoom_linesearch`.

    Every sum over the whole tree (``s'y``, ``y'y``, ``|g|`` and the two-loop's
    ``s_i' q``, ``y_i' r``) is a dot product; inside :func:`jax.shard_map` with
    ``axis_name`` each is ``psum``-med across that axis, so every device keeps
    the same ``rho``, ``gamma`` and pair count and computes its block of the
    unsharded direction (the memory is split like the params).

    Args:
      memory_size: ``m >= 1``, the number of pairs kept.
      scale_init_precond: use ``gamma_k`` and scale the first step (above).
      axis_name: ``None`` (every leaf is whole), or the mesh axis (or tuple of
        axes) of a ``shard_map`` over which *every* leaf of the params and
        gradients is split into disjoint blocks (above). A leaf replicated over
        the axis would be counted once per device.

    Returns:
      A transformation; ``update`` needs ``params``.

    Raises:
      ValueError: ``memory_size`` is not an integer >= 1; ``axis_name`` not
        None, a string or a non-empty tuple of strings; no ``params`` at
        ``update``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_lbfgs(memory_size=5)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([3.0, 4.0]), state, jnp.zeros(2))
      >>> u  # the first step: g / |g|
      Array([0.6, 0.8], dtype=float32)

    References:
      Nocedal (1980); Liu & Nocedal (1989). Nocedal & Wright (2006), Numerical
      Optimization, 2nd ed., Sec. 7.2, Alg. 7.4 and 7.5, eq. 7.20.
    """
    owner = "scale_by_lbfgs"
    _checks.positive_int(owner, "memory_size", memory_size)
    _checks.axis_name(owner, axis_name)

    def init_fn(params):
        tree.check_inexact(params, owner)
        dtype = _common.tree_dtype(params)  # complex for complex params
        real = tree.real_dtype(dtype)

        def memory():
            # zeros_like then a broadcast: a placed (sharded) parameter's history is
            # placed like it, with the new leading axis unsplit.
            return jax.tree.map(
                lambda x: jnp.broadcast_to(
                    jnp.zeros_like(x, _leaf_dtype(x, dtype)), (memory_size, *jnp.shape(x))
                ),
                params,
            )

        # Separate buffers for each field, so that a donated state donates each once.
        return ScaleByLBFGSState(
            count=tree.zero_count(),
            params=_zeros(params, dtype),
            updates=_zeros(params, dtype),
            diff_params_memory=memory(),
            diff_updates_memory=memory(),
            weights_memory=jnp.zeros([memory_size], real),
            gamma=jnp.ones([], real),
            num_pairs=tree.zero_count(),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _common.require_params(owner, params)
        tree.check_structure(state.updates, updates, owner=owner)
        dtype, real = _common.tree_dtype(state.params), state.weights_memory.dtype
        x, g = _cast(params, dtype), _cast(updates, dtype)
        s, y, sy, yy, usable = _curvature_pair(
            x, g, state.params, state.updates, state.count, axis_name
        )
        slot = state.num_pairs % memory_size

        def store(memory, new):
            return jax.tree.map(
                lambda mem, v: jnp.where(usable, mem.at[slot].set(v), mem), memory, new
            )

        rho = state.weights_memory
        rho = jnp.where(usable, rho.at[slot].set(1.0 / jnp.where(usable, sy, 1.0)), rho)
        gamma = state.gamma
        if scale_init_precond:
            gamma = jnp.where(usable, sy / jnp.where(yy > 0, yy, 1.0), gamma).astype(real)
        num_pairs = tree.safe_increment(state.num_pairs)
        num_pairs = jnp.where(usable, num_pairs, state.num_pairs)
        s_memory = store(state.diff_params_memory, s)
        y_memory = store(state.diff_updates_memory, y)
        newest = (num_pairs - 1) % memory_size
        u = lbfgs_two_loop(g, s_memory, y_memory, rho, gamma, newest, axis_name)
        first = _first_step_scale(jnp.sqrt(_common.vdot(g, g, axis_name)), scale_init_precond)
        u = jax.tree.map(lambda ui, gi: jnp.where(num_pairs > 0, ui, first * gi), u, g)
        new_state = ScaleByLBFGSState(
            tree.safe_increment(state.count), x, g, s_memory, y_memory, rho, gamma, num_pairs
        )
        return tree.cast_like(u, updates), new_state

    return GradientTransformation(init_fn, update_fn)


def lbfgs(
    learning_rate: float | Any | None = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: GradientTransformation | None = _UNIT_STEP_LINESEARCH,
    *,
    axis_name: tree.AxisName | None = None,
) -> GradientTransformation:
    """L-BFGS with a strong-Wolfe line search.

    ``chain(scale_by_lbfgs(memory_size), scale_by_learning_rate(learning_rate),
    linesearch)``; see :func:`scale_by_lbfgs`. Optax's ``lbfgs`` has the same
    arguments, in the same order, with the same defaults; the difference is the
    curvature rule (the module docstring: Optax keeps every pair).

    **Meta-gradients: forward mode only.** The line search's trials run in
    ``lax.while_loop``, which JAX differentiates in forward mode only. A derivative
    through steps with respect to a hyperparameter or the starting point works with
    ``jax.jvp`` / ``jax.jacfwd``; reverse mode (``jax.grad``, ``jax.vjp``) raises
    JAX's "Reverse-mode differentiation does not work for lax.while_loop"
    ``ValueError``.

    Args:
      learning_rate: scales the direction before the line search; None means 1.
      memory_size: ``m``, the number of curvature pairs kept.
      scale_init_precond: see :func:`scale_by_lbfgs`.
      linesearch: by default :func:`gradtx.scale_by_zoom_linesearch` (20
        evaluations, first trial 1); None takes the fixed step.
      axis_name: ``None``, or the mesh axis (or tuple of axes) of a
        ``shard_map`` over which every leaf of the params is split: passed to
        :func:`scale_by_lbfgs` and to the default line search, whose
        ``value_fn`` must then return the loss of the whole problem (see
        :func:`gradtx.scale_by_zoom_linesearch`). A ``linesearch`` passed here
        is used as given: build it with the same ``axis_name``.

    Returns:
      A transformation; ``update`` needs ``params`` (and ``value_fn`` with a
      line search).

    Raises:
      ValueError: invalid ``learning_rate``, ``memory_size`` or ``axis_name``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> loss = lambda p: jnp.sum((p - 2.0) ** 2) + 0.5 * jnp.sum(p ** 4)
      >>> result = gradtx.minimize(loss, jnp.zeros(3), gradtx.lbfgs(), tol=1e-5)
      >>> bool(result.converged), result.params.round(4)
      (True, Array([1., 1., 1.], dtype=float32))

    References:
      Liu & Nocedal (1989); Nocedal & Wright (2006), Alg. 7.5.
    """
    _checks.axis_name("lbfgs", axis_name)
    direction = scale_by_lbfgs(
        memory_size, scale_init_precond=scale_init_precond, axis_name=axis_name
    )
    if linesearch is _UNIT_STEP_LINESEARCH and axis_name is not None:
        linesearch = _unit_step_linesearch(axis_name)
    return _with_step("lbfgs", direction, learning_rate, linesearch)
