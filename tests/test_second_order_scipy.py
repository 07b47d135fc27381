"""Every second-order method reaches scipy.optimize's minimiser on the four problems of issue 5.

The problems (``tests/second_order_problems.py``): Rosenbrock in 2-D from
(-1.2, 1) and in 20-D (chained) from the origin, a 20-D rotated quadratic with
condition number 1e4 (three leaves), and L2-regularised logistic regression on
the bundled breast-cancer data (``{"b", "w"}``, 31 parameters). Each method runs
in float64 through ``minimize`` (one compiled ``while_loop``) with ``tol=1e-9``
on the gradient's 2-norm, and must land within 1e-6 (max abs) of scipy's
minimiser.

"Scipy's minimiser" is the most accurate of scipy's four answers (BFGS,
L-BFGS-B, Newton-CG with the Hessian, CG; the one with the smallest gradient),
and a test checks that all four agree with it: scipy's Newton-CG stops on the
logistic regression at ``|g| ~ 1e-7`` (its inner CG breaks when the curvature
``p'Hp`` falls below ``3 eps`` in absolute terms), 1.7e-6 away from the others,
so it is not a fair target at 1e-6 there.

Newton's method is pure (``learning_rate=1``, no line search) where it
converges from the start, and uses ``on_indefinite="damp"`` with a backtracking
line search on Rosenbrock 20-D, where the Hessian is indefinite on the way.
Fletcher-Reeves restarts every 20 steps on Rosenbrock 20-D: without restarts
it jams there (tiny steps, Nocedal & Wright 2006, Sec. 5.2) and is not
converged after 3000 steps.

Run ``python -m tests.reference.report_second_order`` for the table of
iterations (gradtx against scipy) and final deviations.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx.second_order import (
    bfgs,
    hessian_free,
    lbfgs,
    minimize,
    newton,
    nonlinear_cg,
    scale_by_backtracking_linesearch,
)
from tests.second_order_problems import PROBLEMS, SCIPY_METHODS, scipy_result

TOL = 1e-9  # on |grad f|_2, for minimize
PARAMS_ATOL = 1e-6  # issue 5: "to 1e-6 in parameters"
# Where the loss is ~0.07 (the logistic regression), a line search cannot see a
# decrease below ~1e-17 and may stop (no move) with |g| a little above TOL; the
# parameters are then still within 1e-8 of the minimiser. The gradient bound
# below allows that and nothing coarser.
GRAD_BOUND = 1e-8
MAX_STEPS = 3000


def _backtracking():
    return scale_by_backtracking_linesearch(max_backtracking_steps=50)


def _newton(problem: str):
    if problem == "rosenbrock_20d":
        return newton(on_indefinite="damp", linesearch=_backtracking())
    return newton()


def _fletcher_reeves(problem: str):
    period = 20 if problem == "rosenbrock_20d" else None
    return nonlinear_cg(method="fletcher_reeves", restart_period=period)


# name -> (problem name -> transformation, scipy's counterpart)
METHODS = {
    "newton": (_newton, "Newton-CG"),
    "hessian_free": (lambda problem: hessian_free(), "Newton-CG"),
    "nonlinear_cg_pr": (lambda problem: nonlinear_cg(method="polak_ribiere_plus"), "CG"),
    "nonlinear_cg_fr": (_fletcher_reeves, "CG"),
    "bfgs": (lambda problem: bfgs(), "BFGS"),
    "lbfgs": (lambda problem: lbfgs(), "L-BFGS-B"),
}


def scipy_minimiser(name: str) -> np.ndarray:
    """The most accurate of scipy's four answers (smallest gradient norm)."""
    problem = PROBLEMS[name]
    results = [scipy_result(name, method) for method in SCIPY_METHODS]
    return min(results, key=lambda r: np.linalg.norm(problem.jac(r.x))).x


@functools.cache
def run(method: str, name: str):
    """``minimize`` in float64 under jit; returns the result with numpy leaves (cached)."""
    problem = PROBLEMS[name]
    tx = METHODS[method][0](name)
    with jax.enable_x64(True):
        params0 = jax.tree.map(jnp.asarray, problem.params0)
        solve = jax.jit(lambda p: minimize(problem.loss, p, tx, max_steps=MAX_STEPS, tol=TOL))
        result = solve(params0)
        return jax.tree.map(np.asarray, result)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_scipy_methods_agree(name):
    """The target is sound: scipy's four answers agree, and match the exact minimiser."""
    problem = PROBLEMS[name]
    best = scipy_minimiser(name)
    for method in SCIPY_METHODS:
        # 2e-6: scipy's Newton-CG stops early on the logistic regression (above).
        assert np.max(np.abs(scipy_result(name, method).x - best)) < 2e-6, method
    if problem.minimiser is not None:
        np.testing.assert_allclose(best, problem.minimiser, rtol=0, atol=1e-9)
    assert np.linalg.norm(problem.jac(best)) < 1e-9


@pytest.mark.parametrize("name", list(PROBLEMS))
@pytest.mark.parametrize("method", list(METHODS))
def test_reaches_scipy_minimiser(method, name):
    problem = PROBLEMS[name]
    result = run(method, name)
    x = problem.flatten(result.params)
    assert np.max(np.abs(x - scipy_minimiser(name))) <= PARAMS_ATOL
    grad_norm = np.linalg.norm(problem.jac(x))
    assert grad_norm <= GRAD_BOUND
    # Its iteration count is that of scipy's counterpart to within a factor of 5
    # (python -m tests.reference.report_second_order lists both; the widest gap,
    # BFGS on the condition-1e4 quadratic, is 133 against 31: see scale_by_bfgs).
    scipy_steps = scipy_result(name, METHODS[method][1]).nit
    assert int(result.num_steps) <= 5 * scipy_steps, (int(result.num_steps), scipy_steps)
    assert bool(result.converged) == (np.linalg.norm(problem.flatten(result.grad)) <= TOL)


@pytest.mark.parametrize("method", ["newton", "hessian_free"])
def test_newton_methods_converge_quadratically_on_logistic(method):
    """Newton needs a handful of steps where first-order methods need dozens."""
    result = run(method, "logistic")
    assert int(result.num_steps) <= 12
