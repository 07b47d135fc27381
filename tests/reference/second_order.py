"""Newton, truncated-CG Newton, nonlinear CG, BFGS, L-BFGS and the line-search conditions.

Written from the pseudo-code of Nocedal & Wright, *Numerical Optimization*
(2nd ed., 2006; "N&W" below) and Goodfellow, Bengio & Courville (2016), with
their symbols: ``x`` the point (the parameters flattened into one float64
vector, in the order of ``jax.flatten_util.ravel_pytree``: the tree's leaves in
order, each raveled row-major), ``g`` the gradient ``grad f(x)``, ``H`` a Hessian
or an inverse-Hessian approximation, ``s = x_{k+1} - x_k``, ``y = g_{k+1} - g_k``,
``rho = 1 / y's``, ``epsilon`` the learning rate.

gradtx's direction blocks return the *preconditioned gradient* ``u`` (same sign
as ``g``), and the step is ``x <- x - epsilon u``; the books' search direction is
``p = -u``. Every loop below takes the gradient (and where needed the Hessian)
as a function of the point, and returns the trajectory: an array shaped
``(num_steps + 1, n)``, row ``t`` the point after ``t`` steps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Vector = np.ndarray
"""A float64 vector: the flattened parameters, a gradient or a direction."""

GradFn = Callable[[Vector], Vector]
HessFn = Callable[[Vector], np.ndarray]


def _vector(x) -> Vector:
    return np.array(x, dtype=np.float64).reshape(-1)


def _run(x0, num_steps: int, step: Callable[[int, Vector], Vector]) -> np.ndarray:
    """Rows ``x_0, x_1, ...``, where ``x_{k+1} = step(k, x_k)``."""
    x = _vector(x0)
    rows = [x.copy()]
    for k in range(num_steps):
        x = step(k, x)
        rows.append(x.copy())
    return np.stack(rows)


# ---------------------------------------------------------------- Newton


def newton_direction(H: np.ndarray, g: Vector, alpha: float = 0.0) -> Vector:
    """Goodfellow et al. eq. 8.28: ``u = (H + alpha I)^{-1} g`` (Alg. 8.8 when ``alpha = 0``)."""
    H = np.asarray(H, np.float64)
    return np.linalg.solve(H + alpha * np.eye(H.shape[0]), _vector(g))


def newton(x0, grad: GradFn, hess: HessFn, epsilon: float, alpha: float, num_steps: int):
    """Damped Newton with a fixed rate: ``x <- x - epsilon (H(x) + alpha I)^{-1} g(x)``."""

    def step(k, x):
        return x - epsilon * newton_direction(hess(x), grad(x), alpha)

    return _run(x0, num_steps, step)


def modified_cholesky_shift(H: np.ndarray, beta: float = 1e-3, growth: float = 10.0) -> float:
    """N&W Alg. 3.3 (Cholesky with added multiple of the identity): the ``tau`` it settles on.

    ``tau_0 = 0`` when ``min_i H_ii > 0``, else ``beta - min_i H_ii``; then
    ``tau <- max(growth tau, beta)`` until ``H + tau I`` has a Cholesky factor.
    The book doubles ``tau`` (``growth = 2``); gradtx's ``on_indefinite="damp"`` multiplies
    by 10, the default here.
    """
    H = np.asarray(H, np.float64)
    smallest = float(np.min(np.diag(H)))
    tau = 0.0 if smallest > 0 else beta - smallest
    while True:
        try:
            np.linalg.cholesky(H + tau * np.eye(H.shape[0]))
            return tau
        except np.linalg.LinAlgError:
            tau = max(growth * tau, beta)


# ---------------------------------------------------------------- truncated CG (N&W Alg. 7.1)


def forcing_tolerance(g: Vector) -> float:
    """N&W Alg. 7.1: ``epsilon_k = min(0.5, sqrt(||g||)) ||g||`` (superlinear convergence)."""
    norm = float(np.linalg.norm(g))
    return min(0.5, np.sqrt(norm)) * norm


def truncated_cg(
    B: np.ndarray, g: Vector, tol: float, max_iters: int, counts: dict[str, int] | None = None
) -> Vector:
    """The inner loop of N&W Alg. 7.1 (line-search Newton-CG) on ``B p = -g``; returns ``u = -p``.

    ::

        z_0 = 0, r_0 = g, d_0 = -r_0
        for j = 0, 1, ...:
            if d_j' B d_j <= 0:  return p = -g if j == 0 else z_j
            alpha_j = r_j'r_j / d_j' B d_j
            z_{j+1} = z_j + alpha_j d_j
            r_{j+1} = r_j + alpha_j B d_j
            if ||r_{j+1}|| < tol:  return p = z_{j+1}
            beta_{j+1} = r_{j+1}'r_{j+1} / r_j'r_j
            d_{j+1} = -r_{j+1} + beta_{j+1} d_j

    truncated after ``max_iters`` iterations (then ``p = z_{max_iters}``).
    ``counts``, when given, receives how each call ended: ``"converged"``,
    ``"negative_curvature"`` or ``"capped"``.
    """
    counts = {} if counts is None else counts
    B, g = np.asarray(B, np.float64), _vector(g)
    z, r = np.zeros_like(g), g.copy()
    d = -r
    for j in range(max_iters):
        curvature = d @ B @ d
        if curvature <= 0:
            counts["negative_curvature"] = counts.get("negative_curvature", 0) + 1
            return g.copy() if j == 0 else -z
        alpha = (r @ r) / curvature
        z = z + alpha * d
        r_next = r + alpha * (B @ d)
        if np.linalg.norm(r_next) < tol:
            counts["converged"] = counts.get("converged", 0) + 1
            return -z
        beta = (r_next @ r_next) / (r @ r)
        d = -r_next + beta * d
        r = r_next
    counts["capped"] = counts.get("capped", 0) + 1
    return -z


def hessian_free(
    x0,
    grad: GradFn,
    hess: HessFn,
    epsilon: float,
    alpha: float,
    max_cg_steps: int,
    num_steps: int,
    cg_tol: float | None = None,
    counts: dict[str, int] | None = None,
):
    """Newton-CG, fixed rate: ``x <- x - epsilon u``, ``u`` from truncated CG on ``H + alpha I``.

    The residual tolerance is the forcing term of Alg. 7.1 when ``cg_tol`` is
    None, else ``cg_tol ||g||``. ``counts`` is passed to :func:`truncated_cg`.
    """

    def step(k, x):
        g, H = grad(x), hess(x)
        tol = forcing_tolerance(g) if cg_tol is None else cg_tol * np.linalg.norm(g)
        B = H + alpha * np.eye(H.shape[0])
        return x - epsilon * truncated_cg(B, g, tol, max_cg_steps, counts)

    return _run(x0, num_steps, step)


# ---------------------------------------------------------------- nonlinear CG (N&W Sec. 5.2)


def cg_beta(method: str, g: Vector, g_prev: Vector) -> float:
    """N&W eq. 5.41a (Fletcher-Reeves) and 5.45 (Polak-Ribiere+)."""
    if method == "fletcher_reeves":
        return float(g @ g) / float(g_prev @ g_prev)
    if method == "polak_ribiere_plus":
        return max(0.0, float(g @ (g - g_prev)) / float(g_prev @ g_prev))
    raise ValueError(f"unknown method {method!r}")


def nonlinear_cg(
    x0,
    grad: GradFn,
    epsilon: float,
    method: str,
    num_steps: int,
    restart_period: int | None = None,
    counts: dict[str, int] | None = None,
):
    """Nonlinear CG with a fixed rate, in gradtx's sign: ``u_k = g_k + beta_k u_{k-1}``.

    N&W Alg. 5.4 writes ``p_k = -g_k + beta_k p_{k-1}``; with ``u = -p`` this is
    the recursion above, and ``x_{k+1} = x_k - epsilon u_k``. ``beta_k = 0`` on the
    first step and on every step ``k`` (0-based) with ``k % restart_period == 0``;
    and ``u_k = g_k`` whenever the result is not a descent direction
    (``g_k' u_k <= 0``).

    ``counts``, when given, receives how often each branch ran: ``"restart"``
    (beta set to 0 by the period), ``"clipped"`` (PR+'s raw beta was negative) and
    ``"reset"`` (``g'u <= 0``).
    """
    memory: dict[str, Vector] = {}
    counts = {} if counts is None else counts
    for key in ("restart", "clipped", "reset"):
        counts.setdefault(key, 0)

    def step(k, x):
        g = grad(x)
        periodic = restart_period is not None and k > 0 and k % restart_period == 0
        counts["restart"] += periodic
        if k == 0 or periodic:
            u = g
        else:
            g_prev = memory["g"]
            counts["clipped"] += method == "polak_ribiere_plus" and g @ (g - g_prev) < 0
            u = g + cg_beta(method, g, g_prev) * memory["u"]
            if g @ u <= 0:
                counts["reset"] += 1
                u = g
        memory["g"], memory["u"] = g, u
        return x - epsilon * u

    return _run(x0, num_steps, step)


# ---------------------------------------------------------------- BFGS (N&W Sec. 6.1)


def first_step_scale(g: Vector, scale_init_precond: bool) -> float:
    """The multiplier of ``g`` before any curvature pair: ``min(1, 1/||g||)``, or 1."""
    if not scale_init_precond:
        return 1.0
    norm = float(np.linalg.norm(g))
    return 1.0 if norm == 0.0 else min(1.0, 1.0 / norm)


def bfgs_update(H: np.ndarray, s: Vector, y: Vector) -> np.ndarray:
    """N&W eq. 6.17: ``H+ = (I - rho s y') H (I - rho y s') + rho s s'``, ``rho = 1/(y's)``."""
    rho = 1.0 / float(y @ s)
    identity = np.eye(len(s))
    return (identity - rho * np.outer(s, y)) @ H @ (identity - rho * np.outer(y, s)) + rho * (
        np.outer(s, s)
    )


# A pair is used only when s'y > CURVATURE_EPS ||s|| ||y|| (gradtx.second_order.bfgs).
CURVATURE_EPS = 0.02


def curvature_ok(s: Vector, y: Vector) -> bool:
    """Whether the pair ``(s, y)`` is used: ``s'y > eps ||s|| ||y||``."""
    return float(s @ y) > CURVATURE_EPS * float(np.linalg.norm(s) * np.linalg.norm(y))


def bfgs(
    x0,
    grad: GradFn,
    epsilon: float,
    num_steps: int,
    scale_init_precond: bool = True,
    counts: dict[str, int] | None = None,
):
    """BFGS with a fixed rate: ``x_{k+1} = x_k - epsilon H_k g_k``.

    ``H`` starts as the identity; at step ``k >= 1`` the pair ``s = x_k - x_{k-1}``,
    ``y = g_k - g_{k-1}`` updates it by eq. 6.17 when ``s'y > eps ||s|| ||y||``
    (:func:`curvature_ok`) and is skipped otherwise; just before the first update
    that is not skipped, ``H`` is
    replaced by eq. 6.20's ``(y's / y'y) I`` when ``scale_init_precond``. On step 0
    ``u = min(1, 1/||g||) g`` (``g`` when not ``scale_init_precond``).
    ``counts["skipped"]``, when ``counts`` is given, counts the skipped pairs.
    """
    memory: dict = {"H": None, "updated": False}
    counts = {} if counts is None else counts
    counts.setdefault("skipped", 0)

    def step(k, x):
        g = grad(x)
        if k == 0:
            memory["H"] = np.eye(len(x))
            u = first_step_scale(g, scale_init_precond) * g
        else:
            s, y = x - memory["x"], g - memory["g"]
            if curvature_ok(s, y):
                if scale_init_precond and not memory["updated"]:
                    memory["H"] = (s @ y) / (y @ y) * np.eye(len(x))
                memory["H"] = bfgs_update(memory["H"], s, y)
                memory["updated"] = True
            else:
                counts["skipped"] += 1
            u = memory["H"] @ g
        memory["x"], memory["g"] = x, g
        return x - epsilon * u

    return _run(x0, num_steps, step)


# ---------------------------------------------------------------- L-BFGS (N&W Alg. 7.4)


def two_loop(g: Vector, pairs: list[tuple[Vector, Vector]], gamma: float) -> Vector:
    """N&W Alg. 7.4: ``r = H_k g`` from the pairs ``(s_i, y_i)``, oldest first, ``H_k^0 = gamma I``.

    ::

        q = g
        for i = k-1, ..., k-m:  alpha_i = rho_i s_i'q;  q = q - alpha_i y_i
        r = gamma q
        for i = k-m, ..., k-1:  beta = rho_i y_i'r;     r = r + s_i (alpha_i - beta)
    """
    q = _vector(g)
    alphas = []
    for s, y in reversed(pairs):
        alpha = (s @ q) / (y @ s)
        q = q - alpha * y
        alphas.append(alpha)
    r = gamma * q
    for (s, y), alpha in zip(pairs, reversed(alphas), strict=True):
        beta = (y @ r) / (y @ s)
        r = r + s * (alpha - beta)
    return r


def lbfgs(
    x0,
    grad: GradFn,
    epsilon: float,
    num_steps: int,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    counts: dict[str, int] | None = None,
):
    """L-BFGS with a fixed rate: ``x_{k+1} = x_k - epsilon H_k g_k`` by the two-loop recursion.

    The newest ``memory_size`` pairs with ``s'y > eps ||s|| ||y||``
    (:func:`curvature_ok`) are kept (others are never stored); ``gamma = s'y /
    y'y`` of the newest stored pair (N&W eq. 7.20), or 1
    when not ``scale_init_precond``. Step 0 is ``min(1, 1/||g||) g`` as in
    :func:`bfgs`. ``counts["skipped"]`` counts the pairs not stored.
    """
    memory: dict = {"pairs": []}
    counts = {} if counts is None else counts
    counts.setdefault("skipped", 0)

    def step(k, x):
        g = grad(x)
        pairs = memory["pairs"]
        if k > 0:
            s, y = x - memory["x"], g - memory["g"]
            if curvature_ok(s, y):
                pairs.append((s, y))
                del pairs[:-memory_size]
            else:
                counts["skipped"] += 1
        if k == 0:
            u = first_step_scale(g, scale_init_precond) * g
        else:
            s, y = pairs[-1] if pairs else (None, None)
            gamma = (s @ y) / (y @ y) if (scale_init_precond and pairs) else 1.0
            u = two_loop(g, pairs, gamma)
        memory["x"], memory["g"] = x, g
        return x - epsilon * u

    return _run(x0, num_steps, step)


# ---------------------------------------------------------------- line-search conditions


def armijo_holds(
    f0: float, slope0: float, f_new: float, eta: float, c1: float, slack: float = 0.0
) -> bool:
    """N&W eq. 3.6a (sufficient decrease): ``f(x + eta d) <= f(x) + c1 eta grad f(x)'d``.

    Args:
      f0: ``f(x)``.
      slope0: ``grad f(x)'d``, the directional derivative along the step ``d``.
      f_new: ``f(x + eta d)``.
      eta: the accepted step size.
      c1: the sufficient-decrease constant (``slope_rtol``).
      slack: an absolute allowance for rounding in ``f`` (the caller says why).
    """
    return f_new <= f0 + c1 * eta * slope0 + slack


def curvature_holds(slope0: float, slope_new: float, c2: float, slack: float = 0.0) -> bool:
    """N&W eq. 3.7b (strong curvature condition): ``|grad f(x + eta d)'d| <= c2 |grad f(x)'d|``.

    Args:
      slope0: ``grad f(x)'d``.
      slope_new: ``grad f(x + eta d)'d``.
      c2: the curvature constant (``curv_rtol``).
      slack: an absolute allowance for rounding in the slopes.
    """
    return abs(slope_new) <= c2 * abs(slope0) + slack


def strong_wolfe_holds(
    f0: float,
    slope0: float,
    f_new: float,
    slope_new: float,
    eta: float,
    c1: float,
    c2: float,
    slack: float = 0.0,
    slope_slack: float = 0.0,
) -> bool:
    """N&W eq. 3.7 (strong Wolfe): :func:`armijo_holds` and :func:`curvature_holds`."""
    sufficient = armijo_holds(f0, slope0, f_new, eta, c1, slack)
    return sufficient and curvature_holds(slope0, slope_new, c2, slope_slack)
