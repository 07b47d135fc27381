"""Second-order directions against the numpy recursions of ``tests/reference/second_order.py``.

* The references themselves: truncated CG solves a positive definite system and
  stops at negative curvature as N&W Alg. 7.1 says; the BFGS update satisfies
  the secant equation; the two-loop recursion equals the dense BFGS matrix built
  from the same pairs; Alg. 3.3's shift makes the matrix positive definite.
* Trajectories with a FIXED learning rate (no line search, so every step is
  the direction block and nothing else), every step compared: damped Newton
  (120 steps) and Hessian-free Newton (60 steps; CG capped, forcing term,
  relative tolerance) on the L2-regularised logistic regression (a non-quadratic
  loss, params ``{"b", "w"}``); BFGS, L-BFGS and nonlinear CG (both betas, with
  and without restarts; 120 steps) on a rotated quadratic with three leaves and
  on a non-convex double well (where curvature pairs are skipped); in float64
  (x64 enabled) and float32; the named optimizers with ``linesearch=None`` and
  the explicit ``chain(block, scale_by_learning_rate)``.
* Single directions of Hessian-free Newton at negative curvature (met on CG's
  first, second and third iteration), against the reference's truncated CG on
  the same explicit matrix.

The numpy side is fed by hand-written gradients and Hessians (analytic, numpy
only), never by JAX's, so a wrong autodiff or flattening order in gradtx shows.

Measure: ``max |gradtx - reference| / (|reference| + 1)`` over every step and
coordinate. Float64 tolerance 1e-10: roundoff only. Every run was chosen well
conditioned: perturbing the reference's own gradients by 2e-16 (relative) moves
its trajectory by less than 1e-12, so 1e-10 cannot fail from rounding alone.
Float32 tolerances are stated where they are set, each about 10x the deviation
measured.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gradtx
from gradtx.second_order import (
    bfgs,
    hessian_free,
    lbfgs,
    newton,
    nonlinear_cg,
    scale_by_bfgs,
    scale_by_hessian_free,
    scale_by_lbfgs,
    scale_by_nonlinear_cg,
)
from tests.reference import second_order as R
from tests.second_order_problems import PROBLEMS, rotated_quadratic

STEPS = 120
RTOL64 = 1e-10

# ---------------------------------------------------------------- the quadratic with three leaves

SHAPES = {"a": (3, 4), "b": (5,), "c": ()}  # 18 coordinates, ravel order a, b, c
DIM = 18
A_MATRIX, X_STAR = rotated_quadratic(DIM, 100.0, seed=7)


def _f32(x):
    """float64 numbers that float32 holds exactly: both runs start from the same point."""
    return np.asarray(x, np.float64).astype(np.float32).astype(np.float64)


X0 = _f32(X_STAR + 2.0 * np.random.default_rng(8).normal(size=DIM))


def _unflatten(x, dtype, shapes=SHAPES):
    out, start = {}, 0
    for key, shape in shapes.items():
        size = int(np.prod(shape))
        out[key] = jnp.asarray(np.reshape(x[start : start + size], shape), dtype)
        start += size
    return out


def quadratic_loss(params):
    x = ravel_pytree(params)[0]
    d = x - jnp.asarray(X_STAR, x.dtype)
    return 0.5 * d @ (jnp.asarray(A_MATRIX, x.dtype) @ d)


def quadratic_grad(x):
    return A_MATRIX @ (x - X_STAR)


# ---------------------------------------------------------------- driver


def _scan(tx, loss, params, num_steps):
    def step(carry, _):
        params, state = carry
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params, value_fn=loss)
        params = gradtx.apply_updates(params, updates)
        return (params, state), ravel_pytree(params)[0]

    _, rows = jax.lax.scan(step, (params, tx.init(params)), None, length=num_steps)
    return jnp.concatenate([ravel_pytree(params)[0][None], rows])


def trajectory(tx, loss, params0, num_steps=STEPS):
    """The flat params after every step (row 0 the start) of ``tx`` on ``loss``, one scan."""
    return trajectories([(tx, loss, params0)], num_steps)[0]


def trajectories(runs, num_steps=STEPS):
    """``[trajectory(*run) for run in runs]``, traced into one jitted function.

    Independent scans side by side in one program: one compilation instead of one
    per run, the same arithmetic per scan.
    """
    txs_and_losses = [(tx, loss) for tx, loss, _ in runs]

    @jax.jit
    def run_all(starts):
        return [
            _scan(tx, loss, params, num_steps)
            for (tx, loss), params in zip(txs_and_losses, starts, strict=True)
        ]

    return [np.asarray(rows, np.float64) for rows in run_all([p for _, _, p in runs])]


def deviation(ours, reference):
    assert ours.shape == reference.shape
    assert np.all(np.isfinite(ours)), "gradtx produced non-finite params"
    return float(np.max(np.abs(ours - reference) / (np.abs(reference) + 1.0)))


# ---------------------------------------------------------------- the references are right


def test_reference_truncated_cg_solves_a_positive_definite_system():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(12, 12))
    b, g = m @ m.T + 0.5 * np.eye(12), rng.normal(size=12)
    np.testing.assert_allclose(R.truncated_cg(b, g, 0.0, 40), np.linalg.solve(b, g), rtol=1e-8)
    # Capped after one iteration: the Cauchy point along -g, (g'g / g'Bg) g.
    np.testing.assert_allclose(R.truncated_cg(b, g, 0.0, 1), (g @ g) / (g @ b @ g) * g)


def test_reference_truncated_cg_at_negative_curvature():
    b = np.diag([2.0, 1.0, -1.0])
    # First direction -g has negative curvature: the gradient itself comes back.
    g = np.array([0.0, 0.0, 1.0])
    np.testing.assert_array_equal(R.truncated_cg(b, g, 0.0, 10), g)
    # First direction has positive curvature, the second negative: z_1 comes back.
    g = np.array([1.0, 0.0, 0.1])
    z1 = (g @ g) / (g @ b @ g) * g
    np.testing.assert_allclose(R.truncated_cg(b, g, 0.0, 10), z1)


def test_reference_bfgs_update_meets_the_secant_equation():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(6, 6))
    h, s = m @ m.T + np.eye(6), rng.normal(size=6)
    y = s + 0.1 * rng.normal(size=6)  # s'y > 0
    h_next = R.bfgs_update(h, s, y)
    np.testing.assert_allclose(h_next @ y, s, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_next, h_next.T, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(h_next) > 0)


def test_reference_two_loop_equals_the_dense_bfgs_matrix():
    rng = np.random.default_rng(2)
    a = np.diag(np.linspace(1.0, 5.0, 8))
    pairs = [(s, a @ s) for s in rng.normal(size=(4, 8))]
    gamma, g = 0.3, rng.normal(size=8)
    h = gamma * np.eye(8)
    for s, y in pairs:
        h = R.bfgs_update(h, s, y)
    np.testing.assert_allclose(R.two_loop(g, pairs, gamma), h @ g, rtol=1e-10)


def test_reference_lbfgs_with_long_memory_equals_bfgs_from_the_identity():
    x0 = np.linspace(-1.0, 1.0, DIM)
    ours = R.lbfgs(x0, quadratic_grad, 0.05, 30, memory_size=50, scale_init_precond=False)
    dense = R.bfgs(x0, quadratic_grad, 0.05, 30, scale_init_precond=False)
    np.testing.assert_allclose(ours, dense, rtol=1e-9, atol=1e-12)


def test_reference_modified_cholesky_shift():
    h = np.array([[1.0, 2.5], [2.5, 1.0]])  # eigenvalues 3.5 and -1.5
    tau = R.modified_cholesky_shift(h)
    assert tau == pytest.approx(10.0)  # 0, 1e-3, 1e-2, 0.1 and 1 fail; 10 > 1.5
    tau = R.modified_cholesky_shift(h, beta=0.5, growth=2.0)
    assert tau == pytest.approx(2.0)  # 0, 0.5 and 1 fail; 2 > 1.5


# ---------------------------------------------------------------- Newton and Hessian-free


LOGISTIC = PROBLEMS["logistic"]
LOGISTIC_X0 = np.linspace(-0.5, 0.5, 31)  # away from 0, so the first Hessian is not degenerate

# Float32: the loss is a mean over 569 samples and the Hessian is solved with
# condition number up to ~25 (with the damping), so each step carries ~1e-6
# relative error; the steps contract, so errors do not grow. Measured ~1e-6.
NEWTON_F32 = 1e-5


@pytest.mark.parametrize(
    "named,dtype",
    [(True, "float64"), (True, "float32"), (False, "float64")],
    ids=["newton-float64", "newton-float32", "chain-float64"],
)
def test_damped_newton_equals_reference(named, dtype):
    epsilon, alpha = 0.3, 0.05
    if named:
        tx = newton(learning_rate=epsilon, damping=alpha)
    else:
        tx = gradtx.chain(
            gradtx.second_order.scale_by_newton(damping=alpha),
            gradtx.scale_by_learning_rate(epsilon),
        )
    reference = R.newton(LOGISTIC_X0, LOGISTIC.jac, LOGISTIC.hess, epsilon, alpha, STEPS)
    with jax.enable_x64(dtype == "float64"):
        params0 = jax.tree.map(jnp.asarray, LOGISTIC.unflatten(LOGISTIC_X0, np.dtype(dtype)))
        ours = trajectory(tx, LOGISTIC.loss, params0)
    assert deviation(ours, reference) <= (RTOL64 if dtype == "float64" else NEWTON_F32)
    # Not converged yet: the later steps still move (so they are compared, not all equal).
    assert np.max(np.abs(reference[-1] - reference[-2])) > 1e-6


# Hessian-free settings: CG capped at 2 iterations (the cap binds on 49 of the 60
# steps, the forcing term on the rest), the forcing term alone, and a relative
# tolerance. A tight relative tolerance (1e-3) is left out on purpose: there the
# stopping test ||r|| < tol is decided within rounding on some steps, and the
# reference itself moves by 7e-10 when its gradients are perturbed by 2e-16.
HESSIAN_FREE = [(2, None), (100, None), (100, 0.1)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("max_cg_steps,cg_tol", HESSIAN_FREE, ids=["cap2", "forcing", "relative"])
def test_hessian_free_equals_reference(dtype, max_cg_steps, cg_tol):
    epsilon, alpha = 0.3, 0.03
    tx = hessian_free(
        learning_rate=epsilon, damping=alpha, max_cg_steps=max_cg_steps, cg_tol=cg_tol
    )
    counts: dict[str, int] = {}
    reference = R.hessian_free(
        LOGISTIC_X0, LOGISTIC.jac, LOGISTIC.hess, epsilon, alpha, max_cg_steps, 60, cg_tol, counts
    )
    with jax.enable_x64(dtype == "float64"):
        params0 = jax.tree.map(jnp.asarray, LOGISTIC.unflatten(LOGISTIC_X0, np.dtype(dtype)))
        ours = trajectory(tx, LOGISTIC.loss, params0, num_steps=60)
    # Float32: measured ~1e-6 (Hessian-vector products of a mean over 569 samples).
    assert deviation(ours, reference) <= (RTOL64 if dtype == "float64" else 1e-5)
    if max_cg_steps == 2:
        assert counts["capped"] > 0 and counts["converged"] > 0


def _indefinite_loss(params):
    x = ravel_pytree(params)[0]
    return 0.5 * x @ (jnp.diag(jnp.asarray([2.0, 1.0, -1.0], x.dtype)) @ x)


# Points of f = (2 p0^2 + p1^2 - q^2) / 2 where CG meets negative curvature on its
# first iteration (the gradient comes back), its second (z_1) and its third (z_2).
@pytest.mark.parametrize(
    "point", [[0.0, 0.0, 1.0], [1.0, 0.0, 0.1], [1.0, 0.5, 0.05]], ids=["first", "second", "third"]
)
def test_hessian_free_stops_at_negative_curvature_as_the_reference(point):
    with jax.enable_x64(True):
        params = {"p": jnp.asarray(point[:2]), "q": jnp.asarray(point[2])}
        tx = scale_by_hessian_free(max_cg_steps=10, cg_tol=1e-12)
        grads = jax.grad(_indefinite_loss)(params)
        u, _ = tx.update(grads, tx.init(params), params, value_fn=_indefinite_loss)
        ours = np.asarray(ravel_pytree(u)[0])
    b = np.diag([2.0, 1.0, -1.0])
    g = b @ np.array(point)
    counts: dict[str, int] = {}
    expected = R.truncated_cg(b, g, 1e-12 * np.linalg.norm(g), 10, counts)
    assert counts == {"negative_curvature": 1}
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- quasi-Newton and nonlinear CG

# A non-convex loss for the skipped pairs: a double well in each coordinate,
# f(x) = sum_i (x_i^2 - 1)^2 / 4 + x'Bx / 2 with B small and positive definite,
# started inside the wells' concave middle (|x_i| < 1/sqrt(3)), so that steps
# there have s'y <= 0. Params {"p": (2,), "q": (2, 2)}.
WELL_SHAPES = {"p": (2,), "q": (2, 2)}
_M = np.random.default_rng(3).normal(size=(6, 6))
WELL_B = 0.2 * _M @ _M.T / 6
WELL_X0 = _f32(0.3 * np.random.default_rng(4).normal(size=6))


def well_loss(params):
    x = ravel_pytree(params)[0]
    return 0.25 * jnp.sum((x**2 - 1.0) ** 2) + 0.5 * x @ (jnp.asarray(WELL_B, x.dtype) @ x)


def well_grad(x):
    return x**3 - x + WELL_B @ x


# Float32 tolerance (about 10x the deviation measured, which is itself close to
# what rounding the reference's points and gradients to float32 gives): the
# quasi-Newton matrices are built from s = x_k - x_{k-1} and y = g_k - g_{k-1},
# differences of nearby float32 numbers whose relative error grows as the steps
# shrink, and each matrix feeds every later step; nonlinear CG's beta is a ratio
# of such gradient norms.
F32 = 1e-4

# (block, kwargs, problem, epsilon). Rates chosen so that every run is still
# moving after 120 steps, is well conditioned (perturbing the reference's
# gradients by 2e-16 moves it by < 1e-12), and, between them, every branch is
# taken: see test_the_runs_take_every_branch. L-BFGS at rate 0.1 on the
# quadratic is not well conditioned in that sense (1e-7 with memory 3).
CASES = [
    ("bfgs", dict(scale_init_precond=True), "quadratic", 0.1),
    # Without the scaled first matrix, H0 = I overshoots the stiff directions
    # (lambda_max = 100) at first; rate 0.02 keeps those early steps bounded.
    ("bfgs", dict(scale_init_precond=False), "quadratic", 0.02),
    ("bfgs", dict(scale_init_precond=True), "well", 0.1),
    ("lbfgs", dict(memory_size=10, scale_init_precond=True), "quadratic", 0.05),
    ("lbfgs", dict(memory_size=3, scale_init_precond=True), "quadratic", 0.05),
    # Without gamma the directions outside the 5 stored pairs get H0 = I: the rate
    # must then be below 2 / lambda_max = 0.02 for the run to stay bounded.
    ("lbfgs", dict(memory_size=5, scale_init_precond=False), "quadratic", 0.015),
    ("lbfgs", dict(memory_size=3, scale_init_precond=True), "well", 0.1),
    ("nonlinear_cg", dict(method="polak_ribiere_plus"), "quadratic", 0.02),
    ("nonlinear_cg", dict(method="polak_ribiere_plus", restart_period=7), "quadratic", 0.01),
    ("nonlinear_cg", dict(method="fletcher_reeves"), "quadratic", 0.012),
    # Resets (g'u <= 0) on 15 steps, each decided with |cos(g, u)| > 0.02, far
    # from rounding in either precision (with restart_period=7 one is at 3e-4).
    ("nonlinear_cg", dict(method="fletcher_reeves", restart_period=5), "quadratic", 0.02),
]


def _case_id(case):
    name, kwargs, problem, epsilon = case
    options = "-".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}-{options}-{problem}-{epsilon}"


def _start(problem):
    if problem == "quadratic":
        return X0, quadratic_grad, quadratic_loss, lambda x, dtype: _unflatten(x, dtype)
    return WELL_X0, well_grad, well_loss, lambda x, dtype: _unflatten(x, dtype, WELL_SHAPES)


def _transformation(name, kwargs, epsilon, named):
    if named:
        factory = {"bfgs": bfgs, "lbfgs": lbfgs, "nonlinear_cg": nonlinear_cg}[name]
        return factory(learning_rate=epsilon, linesearch=None, **kwargs)
    block = {"bfgs": scale_by_bfgs, "lbfgs": scale_by_lbfgs, "nonlinear_cg": scale_by_nonlinear_cg}
    return gradtx.chain(block[name](**kwargs), gradtx.scale_by_learning_rate(epsilon))


def _reference(name, kwargs, x0, grad, epsilon, counts=None):
    function = {"bfgs": R.bfgs, "lbfgs": R.lbfgs, "nonlinear_cg": R.nonlinear_cg}[name]
    return function(x0, grad, epsilon, num_steps=STEPS, counts=counts, **kwargs)


def _equals_reference(case, named, dtype, ours=None):
    name, kwargs, problem, epsilon = case
    x0, grad, loss, unflatten = _start(problem)
    reference = _reference(name, kwargs, x0, grad, epsilon)
    if ours is None:
        with jax.enable_x64(dtype == "float64"):
            tx = _transformation(name, kwargs, epsilon, named)
            ours = trajectory(tx, loss, unflatten(x0, dtype))
    assert deviation(ours, reference) <= (RTOL64 if dtype == "float64" else F32)
    # Still moving at the end, so that all 120 steps carry information.
    assert np.max(np.abs(reference[-1] - reference[-2])) > 1e-9


# The named runs of one dtype are compiled in groups of GROUP consecutive cases
# (see trajectories); a test computes its group the first time one of its members
# runs in this process, and neighbouring tests usually share an xdist worker.
GROUP = 6


@functools.cache
def _named_group(dtype: str, index: int) -> list[np.ndarray]:
    runs = []
    with jax.enable_x64(dtype == "float64"):
        for name, kwargs, problem, epsilon in CASES[index * GROUP : (index + 1) * GROUP]:
            x0, _, loss, unflatten = _start(problem)
            tx = _transformation(name, kwargs, epsilon, True)
            runs.append((tx, loss, unflatten(x0, dtype)))
        return trajectories(runs)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_named_optimizer_equals_reference(case, dtype):
    """``bfgs`` / ``lbfgs`` / ``nonlinear_cg`` with ``linesearch=None``."""
    index = CASES.index(case)
    _equals_reference(case, True, dtype, ours=_named_group(dtype, index // GROUP)[index % GROUP])


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[7]], ids=_case_id)
def test_block_and_step_equal_reference(case):
    """``chain(scale_by_*(...), scale_by_learning_rate(epsilon))``: the same numbers."""
    _equals_reference(case, False, "float64")


def test_the_runs_take_every_branch():
    """Between them, the runs above skip pairs, fill the memory, restart, clip and reset."""
    totals: dict[str, int] = {}
    for name, kwargs, problem, epsilon in CASES:
        x0, grad, _, _ = _start(problem)
        counts: dict[str, int] = {}
        _reference(name, kwargs, x0, grad, epsilon, counts)
        for key, value in counts.items():
            totals[f"{name}.{key}"] = totals.get(f"{name}.{key}", 0) + int(value)
    assert totals["bfgs.skipped"] > 0
    assert totals["lbfgs.skipped"] > 0
    assert totals["nonlinear_cg.restart"] > 0
    assert totals["nonlinear_cg.clipped"] > 0
    assert totals["nonlinear_cg.reset"] > 0
    # PR+ keeps a positive beta on most steps of the unrestarted run (it is not
    # steepest descent in disguise).
    counts = {}
    _reference("nonlinear_cg", CASES[7][1], X0, quadratic_grad, CASES[7][3], counts)
    assert counts["clipped"] < STEPS // 4
