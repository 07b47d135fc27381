"""Line searches: transformations that choose how far to go along a direction.

Chained after a method that proposes a step ``d`` (an update to add to the
params, pointing downhill: ``newton``, ``lbfgs``, ``nonlinear_cg``, even
``sgd``), a line search returns ``eta * d`` with ``eta`` chosen on the loss
``phi(eta) = f(x + eta d)``, whose slope at 0 is ``phi'(0) = grad f(x)' d < 0``:

* Armijo's sufficient decrease (the first Wolfe condition),
  ``phi(eta) <= phi(0) + c1 eta phi'(0)``;
* the strong curvature condition, ``|phi'(eta)| <= c2 |phi'(0)|``.

Both read the loss from the extra argument ``value_fn`` and, when the caller has
them, ``value`` and ``grad`` (the loss and its gradient at ``params``). They keep
the loss and gradient at the accepted point in their state, so the next step
need not evaluate them again: :func:`value_and_grad_from_state` reads them back.
For the stored values to belong to the next params, nothing after the line
search may change the update.

Under :func:`jax.jit` with sharded params nothing is needed: XLA completes every
sum across devices. Inside :func:`jax.shard_map`, where each device holds only
its block of every leaf, pass ``axis_name``: the slopes ``grad f' d`` (the only
sums over the whole tree that a search forms) are ``psum``-med across that axis,
and ``value_fn`` must return the loss of the whole problem, the same on every
device (``jax.lax.psum`` of the per-block losses). With ``shard_map``'s default
``check_vma=True`` the gradient of that psum with respect to a device's block is
that block of the whole gradient (with ``check_vma=False`` JAX differentiates
the psum into ``n`` times it: do not use that mode here). Every device then
compares the same numbers and takes the same step as the unsharded search, and
:func:`value_and_grad_from_state` returns each device's block of the gradient.
A search without ``axis_name`` inside ``shard_map`` would decide on each block's
slope alone; ``check_vma`` refuses such a program while tracing it (a TypeError:
the ``while_loop``'s carry would differ between devices).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, apply_updates
from gradtx.second_order import _common

_GUESSES = ("one", "keep")


class BacktrackingLinesearchInfo(NamedTuple):
    """What the last :func:`scale_by_backtracking_linesearch` search found (Optax's fields)."""

    num_linesearch_steps: Array  # int32: loss evaluations made by the last search.
    # max(f(x + eta d) - (1 + delta) f(x) - c1 eta phi'(0), 0) at the last trial
    # (inf when its loss is not finite, or before any trial): the search
    # succeeded where it is <= atol.
    decrease_error: Array


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """State of :func:`scale_by_backtracking_linesearch`: Optax's fields, in Optax's order.

    Scalars are in the params' real compute dtype (at least float32).
    """

    learning_rate: Array  # eta accepted by the last successful search (the max at first).
    value: Array  # f(x + eta d): the loss at the point the last search moved to (inf at first).
    grad: Any  # its (JAX) gradient, a tree like params; None without store_grad.
    info: BacktrackingLinesearchInfo


class ZoomLinesearchInfo(NamedTuple):
    """What the last :func:`scale_by_zoom_linesearch` search found (Optax's fields).

    The errors are those of the step taken (of the last trial when no trial met
    sufficient decrease and the step is 0; inf before any trial): the search met
    the strong Wolfe conditions where both are <= ``tol``.
    """

    num_linesearch_steps: Array  # int32: loss evaluations made by the last search.
    decrease_error: Array  # how far from sufficient decrease (0: met), see _zoom_errors.
    curvature_error: Array  # how far from strong curvature, |phi'(eta)| - c2 |phi'(0)| (0: met).


class ScaleByZoomLinesearchState(NamedTuple):
    """State of :func:`scale_by_zoom_linesearch`: Optax's fields, in Optax's order.

    Scalars are in the params' real compute dtype (at least float32).
    """

    learning_rate: Array  # eta accepted by the last search that moved (1 or the max at first).
    value: Array  # f(x + eta d): the loss at the point the last search moved to (inf at first).
    grad: Any  # its (JAX) gradient, a tree like params.
    info: ZoomLinesearchInfo


_STATES = (ScaleByBacktrackingLinesearchState, ScaleByZoomLinesearchState)


def _init(owner: str, params: Any, learning_rate: float, store_grad: bool, zoom: bool):
    tree.check_inexact(params, owner)  # complex params are searched as in Optax (_start)
    dtype = tree.real_dtype(_common.tree_dtype(params))
    grad = jax.tree.map(jnp.zeros_like, params) if store_grad else None
    rate = jnp.asarray(learning_rate, dtype)

    def inf():  # a buffer per field, so that a donated state donates each once
        return jnp.full([], jnp.inf, dtype)

    if zoom:
        info = ZoomLinesearchInfo(jnp.int32(0), inf(), inf())
        return ScaleByZoomLinesearchState(rate, inf(), grad, info)
    info = BacktrackingLinesearchInfo(jnp.int32(0), inf())
    return ScaleByBacktrackingLinesearchState(rate, inf(), grad, info)


def _start(
    owner: str,
    params: Any,
    direction: Any,
    value_fn: Any,
    value: Any,
    grad: Any,
    axis_name: tree.AxisName | None,
    extra_args: dict[str, Any],
) -> tuple[Callable[[Any], Any], Array, Any, Array]:
    """The loss (with the extra arguments it names bound), ``phi(0)``, JAX's
    gradient at ``params`` and ``phi'(0) = <grad f, d>`` (summed across ``axis_name``).

    For complex params the ``grad`` a caller passes is Optax's L-BFGS convention,
    the conjugate of JAX's gradient (``d`` is built from it); the returned
    gradient is JAX's own, as :func:`jax.grad` gives it (and as the state keeps it).
    """
    _common.require_params(owner, params)
    value_fn = _common.bind_extra_args(owner, value_fn, extra_args)
    tree.check_structure(params, direction, owner=owner)
    dtype = tree.real_dtype(_common.tree_dtype(params))
    if value is None or grad is None:
        value, jax_grad = jax.value_and_grad(value_fn)(params)
    else:
        jax_grad = _common.conj(grad)
    jax_grad = tree.cast_like(jax_grad, params)
    f0 = jnp.asarray(value).astype(dtype)
    return value_fn, f0, jax_grad, _slope(jax_grad, direction, axis_name).astype(dtype)


def _slope(jax_grad: Any, direction: Any, axis_name: tree.AxisName | None) -> Array:
    """``phi'(eta) = <grad f, d>``, the real inner product (JAX's gradient conjugated)."""
    return _common.vdot(_common.conj(jax_grad), direction, axis_name)


def _trial(value_fn: Any, params: Any, direction: Any, eta: Array, with_grad: bool):
    """``f(x + eta d)`` (and its gradient), with ``x + eta d`` formed as apply_updates will."""
    point = apply_updates(params, _common.scaled(eta, direction))
    if with_grad:
        return jax.value_and_grad(value_fn)(point)
    return value_fn(point), None


def _select(flag: Array, a: Any, b: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.where(flag, x, y), a, b)


def _say(flag: Array, message: str, **values: Any) -> None:
    """Prints ``message`` (a ``jax.debug.print`` format) when ``flag`` holds, also under jit."""
    jax.lax.cond(flag, lambda: jax.debug.print(message, ordered=True, **values), lambda: None)


def scale_by_backtracking_linesearch(
    max_backtracking_steps: int,
    slope_rtol: float = 1e-4,
    decrease_factor: float = 0.8,
    increase_factor: float = 1.5,
    max_learning_rate: float = 1.0,
    atol: float = 0.0,
    rtol: float = 0.0,
    store_grad: bool = False,
    verbose: bool = False,
    *,
    axis_name: tree.AxisName | None = None,
) -> GradientTransformation:
    r"""Backtracking line search: the first ``eta`` of a shrinking sequence that satisfies Armijo.

    Tries ``eta_i = eta_0 * decrease_factor^i`` for ``i = 0, 1, ...,
    max_backtracking_steps`` and accepts the first with

    .. math::
        f(x + \eta d) \le (1 + \delta) f(x) + c_1 \eta \nabla f(x)^\top d + \epsilon

    (``c1`` = ``slope_rtol``, ``delta`` = ``rtol``, ``epsilon`` = ``atol``; with
    the default zeros, Armijo's condition), starting from ``eta_0 =
    min(increase_factor * eta_prev, max_learning_rate)``, where ``eta_prev`` is
    the last accepted ``eta`` (``max_learning_rate`` at first). Each trial costs
    one loss evaluation (and its gradient with ``store_grad``). The parameters,
    their names and their order are Optax's, and so is the state
    (:class:`ScaleByBacktrackingLinesearchState`): ``state.info`` holds the
    number of evaluations and the decrease error of the last trial.

    Note:
      If no trial passes, or ``d`` is not a descent direction, the update is 0
      and ``state.info.decrease_error`` is above ``atol`` (inf when no trial
      was made); Optax then takes the last (smallest) trial step unless its
      loss was not finite. The first search starts from
      ``max_learning_rate`` (Optax: ``min(increase_factor, max_learning_rate)``).
      Complex params are searched as by :func:`scale_by_zoom_linesearch` (and
      Optax): the slope is the real inner product, the ``grad`` passed and the
      direction are in Optax's L-BFGS convention (the conjugate of JAX's
      gradient), and the state keeps JAX's gradient.

    Args:
      max_backtracking_steps: the number of reductions tried after the first trial.
      slope_rtol: ``c1`` in [0, 1); 0 asks only for a decrease (with ``atol``
        and ``rtol``'s slack).
      decrease_factor: the reduction factor in (0, 1).
      increase_factor: the growth of the first trial over the last accepted step,
        >= 1; ``math.inf`` starts every search from ``max_learning_rate``.
      max_learning_rate: the largest step tried, > 0.
      atol: ``epsilon`` >= 0, an absolute slack on the decrease condition.
      rtol: ``delta`` >= 0, a slack relative to ``f(x)``.
      store_grad: also compute and keep the gradient at each trial point, so the
        next step can reuse it (:func:`value_and_grad_from_state`).
      verbose: print (``jax.debug.print``) the loss, the slope, the last trial
        and its error when a search fails.
      axis_name: ``None`` (every leaf is whole), or the mesh axis (or tuple of
        axes) of a ``shard_map`` over which *every* leaf of the params and the
        direction is split into disjoint blocks: the slope ``grad f(x)' d`` is
        ``psum``-med across it. ``value_fn`` (and ``value``, when given) must
        then be the loss of the whole problem on every device, e.g. the
        ``jax.lax.psum`` of the per-block losses, and ``grad`` this device's
        block of its gradient (module docstring). A leaf replicated over the
        axis would be counted once per device.

    Returns:
      A transformation; ``update`` needs ``params`` and ``value_fn``, and reads
      ``value`` and ``grad`` when given; the other extra arguments whose names
      are parameters of ``value_fn`` are passed to it (Optax's rule).

    Raises:
      ValueError: invalid hyperparameters; ``axis_name`` not None, a string or
        a non-empty tuple of strings; no ``params`` or ``value_fn`` at ``update``.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda p: jnp.sum(p ** 2)
      >>> tx = gradtx.chain(gradtx.sgd(1.0), gradtx.scale_by_backtracking_linesearch(20))
      >>> p = jnp.array([1.0, -2.0])
      >>> u, state = tx.update(jax.grad(loss)(p), tx.init(p), p, value_fn=loss)
      >>> loss(p + u) <= loss(p) + 1e-4 * jnp.vdot(jax.grad(loss)(p), u)
      Array(True, dtype=bool)

    References:
      Armijo (1966); Nocedal & Wright (2006), Numerical Optimization, 2nd ed.,
      Alg. 3.1.
    """
    owner = "scale_by_backtracking_linesearch"
    _checks.positive_int(owner, "max_backtracking_steps", max_backtracking_steps)
    _checks.in_range(owner, "slope_rtol", slope_rtol, 0.0, 1.0)
    _open_unit(owner, "decrease_factor", decrease_factor)
    factor = _checks.scalar(owner, "increase_factor", increase_factor)
    if factor is not None and not np.all(factor >= 1):  # NaN fails too; inf is allowed
        _checks._fail(owner, "increase_factor", increase_factor, "a number >= 1 (or math.inf)")
    _checks.positive(owner, "max_learning_rate", max_learning_rate)
    _checks.non_negative(owner, "atol", atol)
    _checks.non_negative(owner, "rtol", rtol)
    _checks.axis_name(owner, axis_name)

    def init_fn(params):
        return _init(owner, params, max_learning_rate, store_grad, zoom=False)

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, grad=None, **extra):
        value_fn, f0, g0, slope = _start(
            owner, params, updates, value_fn, value, grad, axis_name, extra
        )
        dtype = f0.dtype
        grown = jnp.minimum(state.learning_rate * increase_factor, max_learning_rate)
        # An infinite factor restarts from the largest step (also after a step of 0).
        eta0 = jnp.where(jnp.isinf(increase_factor), max_learning_rate, grown).astype(dtype)
        descent = slope < 0

        def not_done(carry):
            i, _, _, _, error = carry
            return descent & (error > atol) & (i <= max_backtracking_steps)

        def try_next(carry):
            i, _, _, _, _ = carry
            eta = (eta0 * jnp.asarray(decrease_factor, dtype) ** i).astype(dtype)
            f, g = _trial(value_fn, params, updates, eta, store_grad)
            f = f.astype(dtype)
            error = f - (1 + rtol) * f0 - slope_rtol * eta * slope
            bad = ~jnp.isfinite(f) | jnp.isnan(error)
            error = jnp.where(bad, jnp.inf, jnp.maximum(error, 0)).astype(dtype)
            return i + 1, eta, f, g, error

        inf = jnp.full([], jnp.inf, dtype)
        start = (jnp.int32(0), jnp.zeros([], dtype), f0, g0 if store_grad else None, inf)
        evaluations, eta, f, g, error = jax.lax.while_loop(not_done, try_next, start)
        ok = error <= atol
        if verbose:
            _say(
                ~ok,
                "scale_by_backtracking_linesearch: no step met the decrease condition "
                "(loss {value}, slope {slope}, last step {eta} with loss {f}); the update is 0.",
                value=f0,
                slope=slope,
                eta=eta,
                f=f,
            )
        eta = jnp.where(ok, eta, 0.0).astype(dtype)
        new_state = ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.where(ok, eta, state.learning_rate),
            value=jnp.where(ok, f, f0),
            grad=_select(ok, g, g0) if store_grad else None,
            info=BacktrackingLinesearchInfo(evaluations, error),
        )
        return _common.scaled(eta, updates), new_state

    return GradientTransformation(init_fn, update_fn)


def _open_unit(owner: str, name: str, value: Any) -> None:
    _checks.in_range(owner, name, value, 0.0, 1.0)
    if _checks.is_zero(value):
        _checks._fail(owner, name, value, "in (0, 1)")


# ------------------------------------------------------------------ zoom (strong Wolfe)

_BRACKET, _ZOOM, _DONE = 0, 1, 2


class _ZoomCarry(NamedTuple):
    evaluations: Array  # int32
    stage: Array  # int32: _BRACKET, _ZOOM or _DONE
    eta: Array  # the next trial step
    prev: tuple[Array, Array, Array]  # (eta, phi, phi') of the previous bracketing trial
    lo: tuple[Array, Array, Array]  # the end of the zoom interval with the lower phi
    hi: tuple[Array, Array, Array]  # the other end
    best_eta: Array  # the accepted step so far (0, or a point with sufficient decrease)
    best_value: Array
    best_grad: Any
    found: Array  # bool: best satisfies the strong Wolfe conditions
    errors: tuple[Array, Array]  # (decrease, curvature) of best, or of the last trial if none


def cubic_minimizer(a: tuple[Array, Array, Array], b: tuple[Array, Array, Array]) -> Array:
    """The minimiser of the cubic through two points with their slopes, or a bisection.

    Nocedal & Wright (2006), eq. 3.59: from ``(eta_a, phi_a, phi'_a)`` and
    ``(eta_b, phi_b, phi'_b)``,
    ``d1 = phi'_a + phi'_b - 3 (phi_a - phi_b) / (eta_a - eta_b)``,
    ``d2 = sign(eta_b - eta_a) sqrt(d1^2 - phi'_a phi'_b)`` and
    ``eta = eta_b - (eta_b - eta_a) (phi'_b + d2 - d1) / (phi'_b - phi'_a + 2 d2)``.
    Safeguarded: when that is not finite or falls in the outer tenth of the
    interval at either end, the midpoint is returned instead.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.second_order.linesearch import cubic_minimizer
      >>> phi = lambda t: (t - 0.3) ** 2  # slope 2 (t - 0.3)
      >>> a, b = jnp.float32(0.0), jnp.float32(1.0)
      >>> eta = cubic_minimizer((a, phi(a), 2 * (a - 0.3)), (b, phi(b), 2 * (b - 0.3)))
      >>> round(float(eta), 6)
      0.3
    """
    (ea, fa, sa), (eb, fb, sb) = a, b
    width = eb - ea
    d1 = sa + sb - 3.0 * (fa - fb) / jnp.where(width == 0, 1.0, -width)
    radicand = d1 * d1 - sa * sb
    d2 = jnp.sign(width) * jnp.sqrt(jnp.maximum(radicand, 0.0))
    denominator = sb - sa + 2.0 * d2
    eta = eb - width * (sb + d2 - d1) / jnp.where(denominator == 0, 1.0, denominator)
    low, high = jnp.minimum(ea, eb), jnp.maximum(ea, eb)
    margin = 0.1 * (high - low)
    usable = (
        (radicand >= 0)
        & (denominator != 0)
        & jnp.isfinite(eta)
        & (eta >= low + margin)
        & (eta <= high - margin)
    )
    return jnp.where(usable, eta, 0.5 * (ea + eb))


def _zoom_step(carry: _ZoomCarry, point, sufficient, wolfe) -> _ZoomCarry:
    """One evaluation of N&W Alg. 3.5 (bracketing) or Alg. 3.6 (zoom): the new intervals."""
    _, f, s = point
    bracketing = carry.stage == _BRACKET
    # Alg. 3.5: a trial without sufficient decrease, or no lower than the previous
    # one, closes the bracket [prev, eta]; a rising slope closes [eta, prev].
    worse = ~sufficient | ((carry.evaluations > 0) & (f >= carry.prev[1]))
    rising = s >= 0
    # Alg. 3.6: inside the zoom, the trial replaces hi, or becomes lo (and the old
    # lo becomes hi when the slope points past it).
    zoom_hi = ~sufficient | (f >= carry.lo[1])
    flip = s * (carry.hi[0] - carry.lo[0]) >= 0

    def pick(bracket_value, zoom_value):
        return jax.tree.map(lambda x, y: jnp.where(bracketing, x, y), bracket_value, zoom_value)

    lo = pick(
        _where3(worse, carry.prev, _where3(rising, point, carry.lo)),
        _where3(zoom_hi, carry.lo, point),
    )
    hi = pick(
        _where3(worse, point, _where3(rising, carry.prev, carry.hi)),
        _where3(zoom_hi, point, _where3(flip, carry.lo, carry.hi)),
    )
    to_zoom = bracketing & (worse | rising)
    stage = jnp.where(wolfe, _DONE, jnp.where(to_zoom, _ZOOM, carry.stage))
    return carry._replace(stage=stage.astype(jnp.int32), lo=lo, hi=hi, prev=point)


def _where3(flag, a, b):
    return tuple(jnp.where(flag, x, y) for x, y in zip(a, b, strict=True))


def _zoom_errors(f, s, eta, f0, s0, c1, c2, approx_dec_rtol):
    """How far a trial ``(eta, f = phi(eta), s = phi'(eta))`` is from each condition (0: met).

    The decrease error is Armijo's, ``f - f0 - c1 eta s0``; with
    ``approx_dec_rtol`` the smaller of it and Hager & Zhang's approximate Wolfe
    condition (2006, eq. 23 and 26-27, with one iterate), ``s <= (2 c1 - 1) s0``
    where ``f <= f0 + approx_dec_rtol |f0|``, which still holds within rounding
    of a minimum where Armijo's does not. The curvature error is ``|s| - c2 |s0|``.
    Both are clipped at 0, and infinite when ``f`` or ``s`` is not finite.
    """
    decrease = f - f0 - c1 * eta * s0
    if approx_dec_rtol is not None:
        approx = jnp.maximum(s - (2 * c1 - 1) * s0, f - f0 - approx_dec_rtol * jnp.abs(f0))
        decrease = jnp.minimum(decrease, approx)
    curvature = jnp.abs(s) - c2 * jnp.abs(s0)
    bad = ~(jnp.isfinite(f) & jnp.isfinite(s))
    return (
        jnp.where(bad, jnp.inf, jnp.maximum(decrease, 0)),
        jnp.where(bad | jnp.isnan(curvature), jnp.inf, jnp.maximum(curvature, 0)),
    )


def _check_zoom(owner, max_linesearch_steps, max_learning_rate, tol, increase_factor,
                slope_rtol, curv_rtol, approx_dec_rtol, stepsize_precision,
                initial_guess_strategy, axis_name):  # fmt: skip
    _checks.positive_int(owner, "max_linesearch_steps", max_linesearch_steps)
    _checks.positive(owner, "max_learning_rate", max_learning_rate, optional=True)
    _checks.non_negative(owner, "tol", tol)
    factor = _checks.scalar(owner, "increase_factor", increase_factor)
    if factor is not None and not (np.isfinite(factor) and factor > 1.0):
        _checks._fail(owner, "increase_factor", increase_factor, "a finite number > 1")
    _open_unit(owner, "slope_rtol", slope_rtol)
    c1, c2 = _checks._concrete(slope_rtol), _checks.scalar(owner, "curv_rtol", curv_rtol)
    if c2 is not None and not (float(c2) > 0 and (c1 is None or float(c2) > float(c1))):
        _checks._fail(owner, "curv_rtol", curv_rtol, f"greater than slope_rtol={slope_rtol!r}")
    _checks.non_negative(owner, "approx_dec_rtol", approx_dec_rtol, optional=True)
    _checks.non_negative(owner, "stepsize_precision", stepsize_precision)
    if initial_guess_strategy not in _GUESSES:
        _checks._fail(owner, "initial_guess_strategy", initial_guess_strategy, f"one of {_GUESSES}")
    _checks.axis_name(owner, axis_name)


def scale_by_zoom_linesearch(
    max_linesearch_steps: int,
    max_learning_rate: float | None = None,
    tol: float = 0.0,
    increase_factor: float = 2.0,
    slope_rtol: float = 1e-4,
    curv_rtol: float = 0.9,
    approx_dec_rtol: float | None = 1e-6,
    stepsize_precision: float = 1e-5,
    initial_guess_strategy: str = "keep",
    verbose: bool = False,
    *,
    axis_name: tree.AxisName | None = None,
) -> GradientTransformation:
    r"""A line search for the strong Wolfe conditions: bracketing, then zoom.

    Finds ``eta`` with

    .. math::
        f(x + \eta d) &\le f(x) + c_1 \eta \nabla f(x)^\top d + \epsilon
        \quad \text{(sufficient decrease)} \\
        |\nabla f(x + \eta d)^\top d| &\le c_2 |\nabla f(x)^\top d| + \epsilon
        \quad \text{(strong curvature)}

    (``c1`` = ``slope_rtol``, ``c2`` = ``curv_rtol``, ``epsilon`` = ``tol``) by
    Nocedal & Wright's Alg. 3.5: trial steps grow by ``increase_factor`` until
    one fails sufficient decrease, is no lower than the previous, or has a rising
    slope, which brackets a Wolfe point; Alg. 3.6 then shrinks the bracket, each
    trial the safeguarded minimiser of the cubic through its ends
    (:func:`cubic_minimizer`). With ``approx_dec_rtol`` the decrease condition
    also counts as met where Hager & Zhang's approximate one is (near a minimum,
    where rounding defeats Armijo's):

    .. math::
        \nabla f(x + \eta d)^\top d \le (2 c_1 - 1) \nabla f(x)^\top d
        \ \text{ and } \
        f(x + \eta d) \le f(x) + c_3 |f(x)|

    (``c3`` = ``approx_dec_rtol``). Every trial evaluates the loss and its
    gradient, which the state keeps (:func:`value_and_grad_from_state`). The
    parameters, their names, order and defaults are Optax's.

    The search stops at the first trial meeting both conditions; when the zoom
    interval is shorter than ``stepsize_precision`` and a trial met sufficient
    decrease, it takes the lowest such trial. If ``max_linesearch_steps``
    evaluations end without a Wolfe point, it takes the lowest trial that met
    sufficient decrease (or 0 if none did); a direction that is not downhill
    gives 0 at once. The state is Optax's (:class:`ScaleByZoomLinesearchState`):
    ``state.info`` (:class:`ZoomLinesearchInfo`) holds the number of evaluations
    and both errors of the step taken, each <= ``tol`` when the search succeeded.

    Note:
      Where no trial met sufficient decrease, Optax takes the last trial step
      anyway (an increase of the loss, or 0 if the loss there was not finite);
      gradtx takes 0. The trial steps inside the bracket are gradtx's
      (:func:`cubic_minimizer`), not Optax's (a cubic through three points, then
      a quadratic), so the two accept different points that both meet the
      conditions. Complex params are searched over the real inner product (as
      Optax): the ``grad`` passed to ``update`` and the direction are in Optax's
      L-BFGS convention, the conjugate of JAX's gradient, and the state keeps
      JAX's gradient (what :func:`value_and_grad_from_state` returns).

    Args:
      max_linesearch_steps: the cap on loss evaluations per search.
      max_learning_rate: the largest ``eta`` tried, or None for no bound.
      tol: ``epsilon`` >= 0, the slack on both conditions.
      increase_factor: the growth of the trial step while bracketing, > 1.
      slope_rtol: ``c1`` in (0, 1).
      curv_rtol: ``c2 > c1``; 0.9 for Newton and quasi-Newton directions, 0.1
        for conjugate gradient (Nocedal & Wright, Sec. 3.1); ``inf`` drops the
        curvature condition (a backtracking search by interpolation, as in Optax).
      approx_dec_rtol: ``c3`` >= 0, or None for Armijo's condition alone.
      stepsize_precision: the zoom interval length, >= 0, below which a trial
        with sufficient decrease is taken without the curvature condition.
      initial_guess_strategy: the first trial: ``"one"`` (``eta = 1``, for Newton
        and quasi-Newton directions, whose natural step is 1) or ``"keep"`` (the
        last accepted ``eta``).
      verbose: print (``jax.debug.print``) the loss, the slope and the step
        taken when a search fails.
      axis_name: ``None`` (every leaf is whole), or the mesh axis (or tuple of
        axes) of a ``shard_map`` over which *every* leaf of the params and the
        direction is split into disjoint blocks: the slopes ``grad f' d`` at 0
        and at each trial are ``psum``-med across it. ``value_fn`` (and
        ``value``, when given) must then be the loss of the whole problem on
        every device, e.g. the ``jax.lax.psum`` of the per-block losses, and
        ``grad`` this device's block of its gradient (module docstring). A leaf
        replicated over the axis would be counted once per device.

    Returns:
      A transformation; ``update`` needs ``params`` and ``value_fn``, and reads
      ``value`` and ``grad`` when given; the other extra arguments whose names
      are parameters of ``value_fn`` are passed to it (Optax's rule).

    Raises:
      ValueError: invalid hyperparameters (including ``curv_rtol <= slope_rtol``);
        ``axis_name`` not None, a string or a non-empty tuple of strings; no
        ``params`` or ``value_fn`` at ``update``.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda p: jnp.sum(jnp.cosh(p))
      >>> tx = gradtx.chain(gradtx.sgd(1.0), gradtx.scale_by_zoom_linesearch(20))
      >>> p = jnp.array([1.0, -2.0])
      >>> u, state = tx.update(jax.grad(loss)(p), tx.init(p), p, value_fn=loss)
      >>> info = state[1].info
      >>> bool(info.decrease_error <= 0) and bool(info.curvature_error <= 0)
      True
      >>> bool(loss(p + u) < loss(p))
      True

      Inside ``shard_map`` (here one device; with ``n`` each holds ``1/n`` of
      ``p``), the loss of the whole problem is the psum of the blocks' losses:

      >>> from jax.sharding import Mesh, PartitionSpec as P
      >>> mesh = Mesh(jax.devices()[:1], ("data",))
      >>> search = gradtx.scale_by_zoom_linesearch(20, axis_name="data")
      >>> tx = gradtx.chain(gradtx.sgd(1.0), search)
      >>> def step(p):
      ...     whole_loss = lambda q: jax.lax.psum(jnp.sum(jnp.cosh(q)), "data")
      ...     v, g = jax.value_and_grad(whole_loss)(p)
      ...     return tx.update(g, tx.init(p), p, value_fn=whole_loss, value=v, grad=g)[0]
      >>> sharded = jax.shard_map(step, mesh=mesh, in_specs=P("data"), out_specs=P("data"))
      >>> bool(jnp.allclose(sharded(p), u))  # the step of the unsharded search
      True

    References:
      Nocedal & Wright (2006), Numerical Optimization, 2nd ed., Sec. 3.5, Alg. 3.5
      and 3.6, eq. 3.59. Wolfe (1969). Hager & Zhang (2006), Algorithm 851:
      CG_DESCENT, ACM TOMS 32(1), eq. 23 (approximate Wolfe conditions).
    """
    owner = "scale_by_zoom_linesearch"
    _check_zoom(owner, max_linesearch_steps, max_learning_rate, tol, increase_factor,
                slope_rtol, curv_rtol, approx_dec_rtol, stepsize_precision,
                initial_guess_strategy, axis_name)  # fmt: skip
    largest = jnp.inf if max_learning_rate is None else max_learning_rate
    first = 1.0 if max_learning_rate is None else min(1.0, max_learning_rate)

    def init_fn(params):
        return _init(owner, params, first, True, zoom=True)

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, grad=None, **extra):
        value_fn, f0, g0, s0 = _start(
            owner, params, updates, value_fn, value, grad, axis_name, extra
        )
        dtype = f0.dtype
        if initial_guess_strategy == "one":
            eta0 = jnp.ones([], dtype)
        else:
            eta0 = jnp.asarray(state.learning_rate).astype(dtype)
        eta0 = jnp.minimum(eta0, largest).astype(dtype)
        descent = s0 < 0
        zero = jnp.zeros([], dtype)
        origin = (zero, f0, s0)

        def not_done(carry):
            return descent & (carry.stage != _DONE) & (carry.evaluations < max_linesearch_steps)

        def evaluate(carry):
            eta = carry.eta
            f, g = _trial(value_fn, params, updates, eta, True)
            f = f.astype(dtype)
            s = _slope(g, updates, axis_name).astype(dtype)
            decrease, curvature = _zoom_errors(
                f, s, eta, f0, s0, slope_rtol, curv_rtol, approx_dec_rtol
            )
            sufficient = decrease <= tol
            wolfe = sufficient & (curvature <= tol)
            improves = sufficient & (f < carry.best_value)
            keep = wolfe | improves
            report = keep | (carry.best_eta == 0)
            carry = carry._replace(
                errors=_where3(report, (decrease, curvature), carry.errors),
                best_eta=jnp.where(keep, eta, carry.best_eta),
                best_value=jnp.where(keep, f, carry.best_value),
                best_grad=_select(keep, g, carry.best_grad),
                found=carry.found | wolfe,
            )
            # The bracket follows the conditions without the slack (as Optax's).
            carry = _zoom_step(carry, (eta, f, s), decrease <= 0, wolfe)
            # The next trial: grow while bracketing (stop at max_learning_rate),
            # else the cubic step inside the bracket.
            grown = jnp.minimum(eta * increase_factor, largest).astype(dtype)
            at_cap = (carry.stage == _BRACKET) & (eta >= largest)
            zoomed = cubic_minimizer(carry.lo, carry.hi).astype(dtype)
            width = jnp.abs(carry.hi[0] - carry.lo[0])
            zooming = carry.stage == _ZOOM
            collapsed = zooming & (
                (width <= jnp.finfo(dtype).eps * jnp.maximum(carry.lo[0], carry.hi[0]))
                | ((width <= stepsize_precision) & (carry.best_eta > 0))
            )
            stage = jnp.where(at_cap | collapsed, _DONE, carry.stage).astype(jnp.int32)
            next_eta = jnp.where(carry.stage == _BRACKET, grown, zoomed)
            return carry._replace(
                evaluations=carry.evaluations + 1, stage=stage, eta=next_eta.astype(dtype)
            )

        start = _ZoomCarry(
            evaluations=jnp.int32(0),
            stage=jnp.int32(_BRACKET),
            eta=eta0,
            prev=origin,
            lo=origin,
            hi=origin,
            best_eta=zero,
            best_value=f0,
            best_grad=g0,
            found=jnp.asarray(False),
            errors=(jnp.full([], jnp.inf, dtype), jnp.full([], jnp.inf, dtype)),
        )
        final = jax.lax.while_loop(not_done, evaluate, start)
        eta = final.best_eta
        if verbose:
            _say(
                ~final.found,
                "scale_by_zoom_linesearch: no step met both conditions in {n} evaluations "
                "(loss {value}, slope {slope}: not a descent direction if >= 0); taking "
                "step {eta} (0: no step decreased the loss enough), loss {best}.",
                n=final.evaluations,
                value=f0,
                slope=s0,
                eta=eta,
                best=final.best_value,
            )
        moved = eta > 0
        new_state = ScaleByZoomLinesearchState(
            learning_rate=jnp.where(moved, eta, state.learning_rate),
            value=final.best_value,
            grad=final.best_grad,
            info=ZoomLinesearchInfo(final.evaluations, *final.errors),
        )
        return _common.scaled(eta, updates), new_state

    return GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------- reuse of the values


def linesearch_states(state: Any) -> list[Any]:
    """Every line search's state inside an optimizer state (chains, wrappers)."""
    nodes = jax.tree.leaves(state, is_leaf=lambda node: isinstance(node, _STATES))
    return [node for node in nodes if isinstance(node, _STATES)]


def value_and_grad_from_state(
    value_fn: Callable[..., Array],
) -> Callable[..., tuple[Array, Any]]:
    """Like ``jax.value_and_grad(value_fn)``, but reads them from the line search's state.

    A line search stores ``f`` and its gradient at the point it moved to. When the
    state holds exactly one line search with a stored gradient, the returned
    function gives those (once the search has run and stored a finite value;
    before, it evaluates ``value_fn``), so the loop costs no extra evaluation at
    the new params. Otherwise it evaluates ``jax.value_and_grad(value_fn)``. The
    stored values are those of the new params, up to rounding (the search forms
    ``x + eta d`` inside its compiled loop, where XLA may fuse the multiply-add: a
    few ulps), provided the update went to the params unchanged.

    The returned function is called as Optax's, ``value_and_grad(params,
    *args, state=state, **kwargs)``, where ``args`` and ``kwargs`` go to
    ``value_fn`` when it is evaluated (the stored values were computed with
    those the line search was given); ``value_and_grad(params, state)`` also
    works.

    Note:
      Optax raises when the state holds no value and gradient; here the loss is
      then evaluated.

    Args:
      value_fn: the loss, ``(params, *args, **kwargs) -> scalar``.

    Returns:
      ``value_and_grad(params, *args, state, **kwargs) -> (value, grad)``.

    Raises:
      ValueError: the state holds more than one line search (which one to read
        is ambiguous); no ``state`` was given.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
      >>> tx = gradtx.lbfgs()
      >>> value_and_grad = gradtx.value_and_grad_from_state(loss)
      >>> params = jnp.zeros(3)
      >>> state = tx.init(params)
      >>> for _ in range(3):
      ...     value, grad = value_and_grad(params, state=state)
      ...     updates, state = tx.update(
      ...         grad, state, params, value=value, grad=grad, value_fn=loss)
      ...     params = gradtx.apply_updates(params, updates)
      >>> params
      Array([1., 1., 1.], dtype=float32)

    References:
      Nocedal & Wright (2006), Sec. 3.5 (the function and gradient computed by
      the line search are those of the next iterate).
    """
    compute = jax.value_and_grad(value_fn)

    def value_and_grad(params, *args, state=_NO_STATE, **kwargs):
        if state is _NO_STATE:
            if not args:
                raise ValueError(
                    "value_and_grad_from_state: pass the optimizer state, "
                    "value_and_grad(params, state=opt_state)."
                )
            state, args = args[0], args[1:]
        searches = linesearch_states(state)
        stored = [s for s in searches if s.grad is not None]
        if len(searches) > 1:
            raise ValueError(
                "value_and_grad_from_state: the state holds several line searches; "
                "call jax.value_and_grad(value_fn) instead."
            )
        if not stored:
            return compute(params, *args, **kwargs)
        (search,) = stored
        shape = jax.eval_shape(value_fn, params, *args, **kwargs)

        def reuse(_):
            return search.value.astype(shape.dtype), tree.cast_like(search.grad, params)

        def evaluate(operands):
            p, a, k = operands
            value, grad = compute(p, *a, **k)
            return jnp.asarray(value).astype(shape.dtype), tree.cast_like(grad, params)

        use = jnp.isfinite(search.value)  # inf until a search has run
        return jax.lax.cond(use, reuse, evaluate, (params, args, kwargs))

    return value_and_grad


_NO_STATE = object()
