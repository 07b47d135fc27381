"""Newton's method with an exact Hessian, plain or damped.

Goodfellow et al. (2016) approximate the loss near ``theta_0`` by its second-order
Taylor expansion (eq. 8.26) and jump to that quadratic's minimum (eq. 8.27,
Alg. 8.8):

    theta* = theta_0 - H^-1 g.

Where ``H`` is not positive definite (a saddle point, a concave region) the step
is not a descent step; adding ``alpha I`` regularises it (eq. 8.28):

    theta* = theta_0 - (H + alpha I)^-1 g.

The Hessian is materialised (``n x n`` for ``n`` parameters), so this is for small
problems; :func:`gradtx.hessian_free` solves the same system without forming ``H``.
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
from gradtx.transforms.scale import scale_by_learning_rate

_ON_INDEFINITE = ("error", "damp")
# Nocedal & Wright (2006), Alg. 3.3: the shift added when the diagonal is not
# positive, and the factor it grows by after each failed Cholesky factorisation.
_SHIFT = 1e-3
_SHIFT_GROWTH = 10.0
_MAX_FACTORISATIONS = 40


class ScaleByNewtonState(NamedTuple):
    """State of :func:`scale_by_newton`."""

    count: Array  # int32 scalar: steps taken.
    damping: Array  # real scalar: the alpha (plus any added shift) of the last step.


def _flat_hessian(value_fn: _common.ValueFn, params: Any, dtype: Any) -> Array:
    """The symmetric ``n x n`` Hessian of ``value_fn`` over the flattened ``params``."""
    flat, unravel = ravel_pytree(params)

    def flat_loss(x):
        return value_fn(unravel(x.astype(flat.dtype)))

    hessian = jax.hessian(flat_loss)(flat.astype(dtype)).astype(dtype)
    return 0.5 * (hessian + hessian.T)


def _cholesky_ok(factor: Array) -> Array:
    return jnp.all(jnp.isfinite(factor))


def _shifted_cholesky(matrix: Array) -> tuple[Array, Array]:
    """Cholesky of ``matrix + tau I`` with the smallest ``tau`` of N&W Alg. 3.3's sequence.

    ``tau_0 = 0`` if every diagonal entry is positive, else ``beta - min_i a_ii``;
    then ``tau <- max(10 tau, beta)`` until the factorisation succeeds
    (``beta = 1e-3``). Returns the factor and ``tau``.
    """
    eye = jnp.eye(matrix.shape[0], dtype=matrix.dtype)
    min_diagonal = jnp.min(jnp.diagonal(matrix), initial=jnp.inf)
    tau0 = jnp.where(min_diagonal > 0, 0.0, _SHIFT - min_diagonal).astype(matrix.dtype)

    def factor(tau):
        return jnp.linalg.cholesky(matrix + tau * eye)

    def not_done(carry):
        tries, _, chol = carry
        return (tries < _MAX_FACTORISATIONS) & ~_cholesky_ok(chol)

    def grow(carry):
        tries, tau, _ = carry
        tau = jnp.maximum(_SHIFT_GROWTH * tau, _SHIFT).astype(matrix.dtype)
        return tries + 1, tau, factor(tau)

    _, tau, chol = jax.lax.while_loop(not_done, grow, (jnp.int32(0), tau0, factor(tau0)))
    return chol, tau


def scale_by_newton(
    damping: float | Array = 0.0, *, on_indefinite: str = "error", checks: bool = True
) -> GradientTransformation:
    r"""Preconditions the gradient by the inverse (damped) Hessian: ``u = (H + alpha I)^-1 g``.

    ``H`` is the Hessian of the loss at the current parameters, computed from the
    extra argument ``value_fn`` over the whole parameter tree flattened into one
    vector (so it couples every pair of parameters, across leaves). The linear
    system is solved by a Cholesky factorisation, which exists exactly when
    ``H + alpha I`` is positive definite.

    Memory: ``H`` holds ``n^2`` numbers for ``n`` parameters (8 MB in float64 for
    ``n = 1000``, 200 MB for ``n = 5000``) and costs ``O(n^3)`` to factorise, plus
    ``n`` Hessian-vector products to build: meant for problems up to a few
    thousand parameters. Use :func:`gradtx.scale_by_hessian_free` beyond that.

    Like every ``scale_by_*`` block the output points uphill (it is ``g`` when
    ``H = I``); :func:`newton` follows it with the step ``-learning_rate * u``.

    Args:
      damping: ``alpha >= 0`` of Goodfellow et al. eq. 8.28.
      on_indefinite: what to do when ``H + alpha I`` is not positive definite:
        ``"error"`` (the default) raises: a ValueError when called eagerly, a
        ``JaxRuntimeError`` carrying the same message from a compiled program;
        ``"damp"`` adds ``tau I`` with the smallest ``tau`` of the sequence of
        Nocedal & Wright (2006) Alg. 3.3 that makes the factorisation succeed
        (``tau_0 = 0`` when the diagonal is positive, else ``1e-3 - min_i h_ii``;
        then ``tau <- max(10 tau, 1e-3)``). ``state.damping`` records
        ``alpha + tau``.
      checks: whether a compiled step raises on a non-finite Hessian (and,
        with ``"error"``, on an indefinite ``H + alpha I``); eager calls always
        do. A compiled step checks through a host callback, and on XLA:CPU a
        program that holds one runs every kernel slower: on tens of
        parameters a checked step costs several times an unchecked one,
        while from a few hundred on the factorisation dominates. With
        ``checks=False`` such a step returns non-finite updates where it
        would have raised.

    Returns:
      A transformation; ``update`` needs ``params`` and ``value_fn``.

    Raises:
      ValueError: ``damping`` is negative or not finite, or ``on_indefinite`` is
        unknown; at ``init``, complex parameters; at ``update``, no ``params`` or
        no ``value_fn``, a non-finite Hessian, or (with ``"error"``) an indefinite
        ``H + alpha I``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> loss = lambda p: 0.5 * (4.0 * p[0] ** 2 + p[1] ** 2)
      >>> tx = gradtx.scale_by_newton()
      >>> p = jnp.array([1.0, 1.0])
      >>> tx.update(jnp.array([4.0, 1.0]), tx.init(p), p, value_fn=loss)[0]
      Array([1., 1.], dtype=float32)

    References:
      Goodfellow, Bengio & Courville (2016), Deep Learning, Sec. 8.6.1, eq.
      8.26-8.28, Alg. 8.8. Nocedal & Wright (2006), Numerical Optimization,
      2nd ed., Sec. 3.4, Alg. 3.3 (Cholesky with added multiple of the identity).
    """
    owner = "scale_by_newton"
    _checks.non_negative(owner, "damping", damping)
    if on_indefinite not in _ON_INDEFINITE:
        _checks._fail(owner, "on_indefinite", on_indefinite, f"one of {_ON_INDEFINITE}")
    if not isinstance(checks, bool):
        _checks._fail(owner, "checks", checks, "True or False")

    def init_fn(params):
        _common.refuse_complex(owner, params)
        dtype = _common.tree_dtype(params)
        return ScaleByNewtonState(tree.zero_count(), jnp.asarray(damping, dtype))

    def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
        del extra_args
        _common.require_params(owner, params)
        value_fn = _common.require_value_fn(owner, value_fn)
        tree.check_structure(params, updates, owner=owner)
        dtype = state.damping.dtype
        g, unravel_updates = ravel_pytree(updates)
        hessian = _flat_hessian(value_fn, params, dtype)
        _common.error_if(
            ~jnp.all(jnp.isfinite(hessian)),
            f"{owner}: the Hessian of value_fn is not finite at these parameters.",
            compiled=checks,
        )
        alpha = jnp.asarray(damping, dtype)
        matrix = hessian + alpha * jnp.eye(hessian.shape[0], dtype=dtype)
        if on_indefinite == "damp":
            chol, tau = _shifted_cholesky(matrix)
        else:
            chol, tau = jnp.linalg.cholesky(matrix), jnp.zeros([], dtype)
            _common.error_if(
                ~_cholesky_ok(chol) & jnp.all(jnp.isfinite(hessian)),
                f"{owner}: H + damping * I is not positive definite at these parameters "
                "(a saddle point or a concave region). Raise damping, or pass "
                "on_indefinite='damp' to add a multiple of the identity automatically.",
                compiled=checks,
            )
        u = jax.scipy.linalg.cho_solve((chol, True), g.astype(dtype))
        new_state = ScaleByNewtonState(tree.safe_increment(state.count), alpha + tau)
        return unravel_updates(u.astype(g.dtype)), new_state

    return GradientTransformation(init_fn, update_fn)


def newton(
    learning_rate: float | Any = 1.0,
    damping: float | Array = 0.0,
    *,
    on_indefinite: str = "error",
    checks: bool = True,
    linesearch: GradientTransformation | None = None,
) -> GradientTransformation:
    """Newton's method (Goodfellow et al. 2016, Alg. 8.8; damped: eq. 8.28).

    ``chain(scale_by_newton(damping), scale_by_learning_rate(learning_rate),
    linesearch)``: the step ``-epsilon (H + alpha I)^-1 g``. With the default
    ``learning_rate=1`` and ``damping=0`` it is the pure Newton step, which
    minimises a positive-definite quadratic in one step. See
    :func:`scale_by_newton` for the math, the memory it needs and
    ``on_indefinite``.

    Args:
      learning_rate: ``epsilon``, a number or a schedule; 1 is Newton's step.
      damping: ``alpha >= 0``.
      on_indefinite: ``"error"`` or ``"damp"`` (see :func:`scale_by_newton`).
      checks: ``False`` spares a compiled step its host-callback checks, which
        cost every kernel on XLA:CPU (see :func:`scale_by_newton`).
      linesearch: a line search to chain after the step (e.g.
        :func:`gradtx.scale_by_backtracking_linesearch`), or None for the plain
        step. Far from a minimum, pure Newton may overshoot: Rosenbrock from
        ``(-1.2, 1)`` converges faster with a backtracking search.

    Returns:
      A transformation; ``update`` needs ``params`` and ``value_fn``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> loss = lambda p: jnp.sum((p - 3.0) ** 2) + jnp.sum(p) ** 2
      >>> result = gradtx.minimize(loss, jnp.zeros(2), gradtx.newton(), max_steps=5)
      >>> int(result.num_steps), result.params.round(5)
      (1, Array([1., 1.], dtype=float32))

    References:
      Goodfellow, Bengio & Courville (2016), Deep Learning, Alg. 8.8, eq. 8.28.
    """
    _checks.learning_rate("newton", learning_rate)
    members = [
        scale_by_newton(damping, on_indefinite=on_indefinite, checks=checks),
        scale_by_learning_rate(learning_rate),
    ]
    if linesearch is not None:
        members.append(linesearch)
    return chain(*members)
