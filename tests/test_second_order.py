"""Second-order methods: line-search conditions, value reuse, bad input, ``minimize``.

* Line searches keep their promise at every accepted step of a run: Armijo for
  the backtracking search (and the accepted step is the FIRST of its sequence
  that passes), strong Wolfe for the zoom search, checked in float64 numpy
  (``tests/reference/second_order.py``'s checkers, on the problems' numpy
  losses and gradients) from the recorded params, updates and step sizes.
* ``value_and_grad_from_state``: the loss is never evaluated again at a point
  the line search has already evaluated; every evaluation is recorded by a
  ``jax.debug.callback`` inside the loss.
* Newton solves a quadratic in one step; an indefinite Hessian raises with
  ``on_indefinite="error"`` and gives a descent step with ``"damp"`` (the shift
  of Nocedal & Wright's Alg. 3.3, checked against the numpy reference).
* Bad input: no ``value_fn``, hyperparameters out of range.
* ``minimize`` under ``jit``: converged flag, step count, value, gradient.

Everything runs in float64 (``jax.enable_x64``) unless a test says otherwise.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import gradtx
from gradtx.second_order import (
    bfgs,
    hessian_free,
    lbfgs,
    minimize,
    newton,
    nonlinear_cg,
    scale_by_backtracking_linesearch,
    scale_by_hessian_free,
    scale_by_lbfgs,
    scale_by_newton,
    scale_by_nonlinear_cg,
    scale_by_zoom_linesearch,
    value_and_grad_from_state,
)
from tests.reference import second_order as R
from tests.second_order_problems import PROBLEMS

# ---------------------------------------------------------------- recording a run


_SEARCH_STATES = (gradtx.ScaleByBacktrackingLinesearchState, gradtx.ScaleByZoomLinesearchState)


def _linesearch_state(state):
    """The one line-search state inside a chain's state."""
    found = [
        node
        for node in jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, _SEARCH_STATES))
        if isinstance(node, _SEARCH_STATES)
    ]
    assert len(found) == 1, f"expected one line-search state, found {len(found)}"
    return found[0]


def _succeeded(search):
    """Every error in ``search.info`` within the default tolerance 0: the conditions held."""
    errors = search.info[1:]  # after num_linesearch_steps: decrease (and curvature) errors
    return jnp.all(jnp.stack([jnp.asarray(e) <= 0 for e in errors]))


def record(tx, problem, num_steps):
    """Runs ``tx`` for ``num_steps`` (one scan, float64); returns numpy arrays per step.

    ``x[k]`` the flat params before step k, ``u[k]`` the flat update of step k,
    ``eta[k]`` the line search's ``learning_rate`` after step k, ``ok[k]``
    whether its conditions held (:func:`_succeeded`).
    """
    loss = problem.loss

    def step(carry, _):
        params, state = carry
        value, grad = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        search = _linesearch_state(state)
        out = (
            ravel_pytree(params)[0],
            ravel_pytree(updates)[0],
            search.learning_rate,
            _succeeded(search),
        )
        return (gradtx.apply_updates(params, updates), state), out

    with jax.enable_x64(True):
        params0 = jax.tree.map(jnp.asarray, problem.params0)

        @jax.jit
        def run(params):
            _, out = jax.lax.scan(step, (params, tx.init(params)), None, length=num_steps)
            return out

        return tuple(np.asarray(a) for a in run(params0))


def _slack(f0):
    """The rounding allowance on ``f``: ``1e-12 (1 + |f|)``.

    The float64 loss evaluated by JAX (in the search) and by numpy (here) differs
    by a few ulps of its terms; this covers that and is far below every decrease
    that matters (the checks stop once the gradient is at the rounding floor).
    """
    return 1e-12 * (1.0 + abs(f0))


# ---------------------------------------------------------------- backtracking: Armijo

_DEFAULT_SEARCH = dict(
    slope_rtol=1e-4, decrease_factor=0.8, increase_factor=1.5, max_learning_rate=1.0
)

# case -> (direction + step (a function of the search), problem, search options, steps)
BACKTRACKING = {
    "newton-damp-rosenbrock_20d": (
        lambda search: newton(on_indefinite="damp", linesearch=search),
        "rosenbrock_20d",
        {**_DEFAULT_SEARCH, "slope_rtol": 0.3},
        60,
    ),
    "hessian_free-rosenbrock_2d": (
        lambda search: hessian_free(linesearch=search),
        "rosenbrock_2d",
        _DEFAULT_SEARCH,
        60,
    ),
    # Gradient descent on the ill-conditioned quadratic: the search has to shrink
    # the step by ~1e-4 from its maximum, and grows it again between steps.
    "gradient-quadratic": (
        lambda search: gradtx.chain(gradtx.scale_by_learning_rate(1.0), search),
        "quadratic",
        dict(slope_rtol=0.5, decrease_factor=0.5, increase_factor=3.0, max_learning_rate=2.0),
        100,
    ),
}


@pytest.mark.parametrize("case", list(BACKTRACKING))
def test_backtracking_accepts_the_first_armijo_step(case):
    make, name, hyper, num_steps = BACKTRACKING[case]
    tx = make(scale_by_backtracking_linesearch(80, **hyper))
    problem = PROBLEMS[name]
    x, u, eta, ok = record(tx, problem, num_steps)
    c1, shrink = hyper["slope_rtol"], hyper["decrease_factor"]
    eta_before = np.concatenate([[hyper["max_learning_rate"]], eta[:-1]])
    checked = backtracked = 0
    for k in range(num_steps):
        g0 = problem.jac(x[k])
        if not ok[k] or np.linalg.norm(g0) < 1e-7:  # failed, or at the rounding floor
            continue
        d = u[k] / eta[k]  # the incoming direction: the search returns eta * d
        f0, slope0 = problem.fun(x[k]), g0 @ d
        assert slope0 < 0, f"step {k}: not a descent direction"
        assert R.armijo_holds(f0, slope0, problem.fun(x[k] + u[k]), eta[k], c1, _slack(f0)), k
        checked += 1
        # The first trial is min(increase * eta_prev, max); a smaller accepted step
        # means the trial before it (eta / decrease_factor) failed Armijo.
        first = min(hyper["increase_factor"] * eta_before[k], hyper["max_learning_rate"])
        if eta[k] < first * (1 - 1e-9):
            backtracked += 1
            larger = eta[k] / shrink
            f_larger = problem.fun(x[k] + larger * d)
            assert not R.armijo_holds(f0, slope0, f_larger, larger, c1, -_slack(f0)), k
    assert checked >= num_steps // 3
    assert backtracked > 0


# ---------------------------------------------------------------- zoom: strong Wolfe

# case -> (transformation, problem, slope_rtol c1, curv_rtol c2, steps)
ZOOM = {
    "bfgs-rosenbrock_20d": (bfgs, "rosenbrock_20d", 1e-4, 0.9, 100),
    "lbfgs-logistic": (lbfgs, "logistic", 1e-4, 0.9, 30),
    "nonlinear_cg-rosenbrock_2d": (nonlinear_cg, "rosenbrock_2d", 1e-4, 0.1, 20),
    "nonlinear_cg_fr-quadratic": (
        lambda: nonlinear_cg(method="fletcher_reeves"),
        "quadratic",
        1e-4,
        0.1,
        200,
    ),
    "lbfgs-strict-rosenbrock_2d": (
        lambda: lbfgs(linesearch=scale_by_zoom_linesearch(30, slope_rtol=0.3, curv_rtol=0.4)),
        "rosenbrock_2d",
        0.3,
        0.4,
        30,
    ),
}


@pytest.mark.parametrize("case", list(ZOOM))
def test_zoom_steps_satisfy_strong_wolfe(case):
    make, name, c1, c2, num_steps = ZOOM[case]
    problem = PROBLEMS[name]
    x, u, eta, ok = record(make(), problem, num_steps)
    live = succeeded = 0
    for k in range(num_steps):
        g0 = problem.jac(x[k])
        if np.linalg.norm(g0) < 1e-7:  # at the rounding floor: nothing left to check
            continue
        live += 1
        if not np.any(u[k]):
            continue  # no step taken (then succeeded must be False)
        d = u[k] / eta[k]
        f0, slope0 = problem.fun(x[k]), g0 @ d
        f_new, slope_new = problem.fun(x[k] + u[k]), problem.jac(x[k] + u[k]) @ d
        slack = _slack(f0)
        # Every step taken satisfies sufficient decrease (a search that ends
        # without a Wolfe point keeps its best sufficient-decrease trial).
        assert R.armijo_holds(f0, slope0, f_new, eta[k], c1, slack), k
        if ok[k]:
            succeeded += 1
            # Rounding of the two slopes: JAX's and numpy's gradients differ by a few
            # ulps, relative to |g| |d|.
            g_new = problem.jac(x[k] + u[k])
            slope_slack = 1e-12 * (np.linalg.norm(g0) + np.linalg.norm(g_new)) * np.linalg.norm(d)
            assert R.strong_wolfe_holds(
                f0, slope0, f_new, slope_new, eta[k], c1, c2, slack, slope_slack
            ), k
    assert live >= 5
    assert succeeded >= 0.9 * live


def test_a_search_that_takes_no_step_reports_failure():
    """An uphill direction: no step, and ``state.info`` reports the failure."""
    loss = PROBLEMS["rosenbrock_2d"].loss
    params = jax.tree.map(jnp.asarray, PROBLEMS["rosenbrock_2d"].params0)
    uphill = jax.grad(loss)(params)  # the search adds its input: this goes uphill
    for search in (scale_by_zoom_linesearch(20), scale_by_backtracking_linesearch(20)):
        u, state = search.update(uphill, search.init(params), params, value_fn=loss)
        assert all(float(leaf) == 0.0 for leaf in jax.tree.leaves(u))
        assert not bool(_succeeded(state))
        assert int(state.info.num_linesearch_steps) == 0
        assert float(state.info.decrease_error) == np.inf


# ---------------------------------------------------------------- value and gradient reuse


def _counted(problem):
    """The problem's loss, recording (as flat numpy vectors) every point it is run at."""
    points: list[np.ndarray] = []

    def loss(params):
        jax.debug.callback(lambda v: points.append(np.array(v)), ravel_pytree(params)[0])
        return problem.loss(params)

    return loss, points


def _evaluated_at(points, x, tolerance=0.0):
    """How many recorded points equal ``x`` (to ``tolerance``, element-wise)."""
    return sum(bool(np.all(np.abs(p - x) <= tolerance)) for p in points)


@pytest.mark.parametrize(
    "make,uses_hessian",
    [
        (lambda: lbfgs(), False),
        (lambda: bfgs(), False),
        (lambda: nonlinear_cg(), False),
        (lambda: newton(linesearch=scale_by_backtracking_linesearch(30, store_grad=True)), True),
    ],
    ids=["lbfgs", "bfgs", "nonlinear_cg", "newton-backtracking-store_grad"],
)
def test_value_and_grad_from_state_does_not_evaluate_twice(make, uses_hessian):
    problem = PROBLEMS["rosenbrock_2d"]
    tx = make()
    with jax.enable_x64(True):
        loss, points = _counted(problem)
        value_and_grad = jax.jit(value_and_grad_from_state(loss))
        update = jax.jit(lambda g, s, p, v: tx.update(g, s, p, value=v, grad=g, value_fn=loss))
        params = jax.tree.map(jnp.asarray, problem.params0)
        state = tx.init(params)
        for k in range(8):
            x = np.asarray(ravel_pytree(params)[0])
            points.clear()
            value, grad = value_and_grad(params, state)
            jax.effects_barrier()
            # Only the first step evaluates at the start; later ones reuse the
            # search's value and gradient at the point it accepted.
            assert len(points) == (1 if k == 0 else 0), k
            assert float(value) == pytest.approx(problem.fun(x), rel=1e-13, abs=1e-300)
            np.testing.assert_allclose(
                np.asarray(ravel_pytree(grad)[0]), problem.jac(x), rtol=1e-10, atol=1e-12
            )
            points.clear()
            updates, state = update(grad, state, params, value)
            params = gradtx.apply_updates(params, updates)
            jax.effects_barrier()
            if not uses_hessian:  # Newton's Hessian runs the loss at x (its forward pass)
                # The search never re-evaluates its start: it reads value and grad.
                assert _evaluated_at(points, x) == 0, k
            # It evaluated the point it moved to: the value stored is that one's. Up to
            # rounding: XLA may fuse x + eta d into one multiply-add inside the search's
            # compiled loop and not in apply_updates, so the two can differ by a few
            # ulps of x and of eta d (measured: up to 4 ulps of x).
            new = np.asarray(ravel_pytree(params)[0])
            step = np.abs(np.asarray(ravel_pytree(updates)[0]))
            tolerance = 8 * np.finfo(np.float64).eps * (np.abs(new) + step)
            assert _evaluated_at(points, new, tolerance) >= 1, k


def test_plain_value_and_grad_costs_one_more_evaluation_per_step():
    """The control: without the stored values, each step evaluates the new point again."""
    problem = PROBLEMS["rosenbrock_2d"]
    tx = lbfgs()
    counts = {}
    with jax.enable_x64(True):
        for reuse in (True, False):
            loss, points = _counted(problem)
            if reuse:
                value_and_grad = jax.jit(value_and_grad_from_state(loss))
            else:
                plain = jax.jit(jax.value_and_grad(loss))
                value_and_grad = lambda p, s, plain=plain: plain(p)  # noqa: E731
            update = jax.jit(
                lambda g, s, p, v, f=loss: tx.update(g, s, p, value=v, grad=g, value_fn=f)
            )
            params = jax.tree.map(jnp.asarray, problem.params0)
            state = tx.init(params)
            for _ in range(6):
                value, grad = value_and_grad(params, state)
                updates, state = update(grad, state, params, value)
                params = gradtx.apply_updates(params, updates)
            jax.effects_barrier()
            counts[reuse] = len(points)
    assert counts[False] - counts[True] == 5  # steps 2..6 evaluated their start again


# ---------------------------------------------------------------- Newton


@pytest.mark.parametrize("chained", [False, True], ids=["newton", "chain"])
def test_newton_solves_a_quadratic_in_one_step(chained):
    problem = PROBLEMS["quadratic"]
    tx = (
        gradtx.chain(scale_by_newton(), gradtx.scale_by_learning_rate(1.0)) if chained else newton()
    )
    with jax.enable_x64(True):
        params = jax.tree.map(jnp.asarray, problem.params0)
        grads = jax.grad(problem.loss)(params)
        updates, _ = tx.update(grads, tx.init(params), params, value_fn=problem.loss)
        x = problem.flatten(gradtx.apply_updates(params, updates))
    # Condition number 1e4 and |x*| ~ 2: the solve is accurate to ~1e4 * 1e-16.
    np.testing.assert_allclose(x, problem.minimiser, rtol=0, atol=1e-10)


def _saddle():
    """f(p, q) = 0.5 (2 p0^2 + p1^2 - q^2) + p0 p1: a saddle (eigenvalues ~2.6, ~0.4, -1)."""

    def loss(params):
        p, q = params["p"], params["q"]
        return 0.5 * (2.0 * p[0] ** 2 + p[1] ** 2 - q**2) + p[0] * p[1]

    hessian = np.array([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, -1.0]])  # order p0, p1, q
    params = {"p": jnp.asarray([0.3, -0.7]), "q": jnp.asarray(0.5)}
    return loss, hessian, params


def test_newton_on_an_indefinite_hessian_raises():
    loss, _, _ = _saddle()
    with jax.enable_x64(True):
        _, _, params = _saddle()
        tx = newton()
        grads = jax.grad(loss)(params)
        with pytest.raises(ValueError, match="positive definite"):
            tx.update(grads, tx.init(params), params, value_fn=loss)
        step = jax.jit(lambda p: tx.update(jax.grad(loss)(p), tx.init(p), p, value_fn=loss)[0])
        with pytest.raises(Exception, match="positive definite"):
            jax.block_until_ready(step(params))
        # Damping that makes H + alpha I positive definite removes the error.
        tx = newton(damping=1.5)
        tx.update(grads, tx.init(params), params, value_fn=loss)


def test_newton_without_checks_compiles_no_callback_and_gives_nan_where_it_would_raise():
    loss, _, _ = _saddle()
    with jax.enable_x64(True):
        _, _, params = _saddle()
        grads = jax.grad(loss)(params)

        def step(tx):
            return jax.jit(lambda p, g: tx.update(g, tx.init(p), p, value_fn=loss)[0])

        tx = newton(checks=False)
        # Eagerly it still raises: concrete values need no callback.
        with pytest.raises(ValueError, match="positive definite"):
            tx.update(grads, tx.init(params), params, value_fn=loss)
        text = step(tx).lower(params, grads).as_text()
        assert (
            "callback" not in text and "callback" in step(newton()).lower(params, grads).as_text()
        )
        updates = step(tx)(params, grads)  # indefinite: no error, non-finite updates
        assert not all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
        bad = lambda p: loss(p) + jnp.sqrt(p["q"] - 1.0)  # NaN Hessian at q = 0.5  # noqa: E731
        tx = newton(checks=False, on_indefinite="damp")
        with pytest.raises(ValueError, match="not finite"):
            tx.update(grads, tx.init(params), params, value_fn=bad)
        nan = jax.jit(lambda p, g: tx.update(g, tx.init(p), p, value_fn=bad)[0])(params, grads)
        assert not any(bool(jnp.any(jnp.isfinite(u))) for u in jax.tree.leaves(nan))
        # Where nothing fails, the step is the checked one, bit for bit.
        damped = newton(damping=1.5)
        unchecked = newton(damping=1.5, checks=False)
        expected = jax.jit(lambda p, g: damped.update(g, damped.init(p), p, value_fn=loss)[0])
        got = step(unchecked)(params, grads)
        for a, b in zip(
            jax.tree.leaves(got), jax.tree.leaves(expected(params, grads)), strict=True
        ):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", ["no", 1, None])
def test_newton_checks_must_be_a_bool(bad):
    with pytest.raises(ValueError, match=r"checks must be True or False"):
        newton(checks=bad)


@pytest.mark.parametrize("damping", [0.0, 0.5])
def test_newton_damp_gives_the_shifted_descent_step(damping):
    loss, hessian, _ = _saddle()
    with jax.enable_x64(True):
        _, _, params = _saddle()
        tx = scale_by_newton(damping, on_indefinite="damp")
        grads = jax.grad(loss)(params)
        u, state = tx.update(grads, tx.init(params), params, value_fn=loss)
        downhill = gradtx.apply_updates(params, jax.tree.map(lambda t: -1e-3 * t, u))
        decrease = float(loss(params)) - float(loss(downhill))
        u, g = np.asarray(ravel_pytree(u)[0]), np.asarray(ravel_pytree(grads)[0])
    matrix = hessian + damping * np.eye(3)
    tau = R.modified_cholesky_shift(matrix)  # N&W Alg. 3.3, beta = 1e-3, growth 10
    assert tau > 0
    assert float(state.damping) == pytest.approx(damping + tau, rel=1e-12)
    np.testing.assert_allclose(u, np.linalg.solve(matrix + tau * np.eye(3), g), rtol=1e-10)
    assert g @ u > 0  # the step -u goes downhill
    assert decrease > 0


# ---------------------------------------------------------------- bad input

NEEDS_VALUE_FN = {
    "scale_by_newton": scale_by_newton,
    "newton": newton,
    "scale_by_hessian_free": scale_by_hessian_free,
    "hessian_free": hessian_free,
    "bfgs": bfgs,
    "lbfgs": lbfgs,
    "nonlinear_cg": nonlinear_cg,
    "scale_by_backtracking_linesearch": lambda: scale_by_backtracking_linesearch(10),
    "scale_by_zoom_linesearch": lambda: scale_by_zoom_linesearch(10),
}


@pytest.mark.parametrize("name", list(NEEDS_VALUE_FN))
def test_update_without_value_fn_says_how_to_pass_it(name):
    tx = NEEDS_VALUE_FN[name]()
    params = {"w": jnp.ones(3), "b": jnp.zeros(())}
    grads = jax.tree.map(jnp.ones_like, params)
    with pytest.raises(ValueError) as info:
        tx.update(grads, tx.init(params), params)
    message = str(info.value)
    assert "value_fn" in message
    assert "value_fn=" in message  # shows the call: tx.update(..., value_fn=loss_fn)


@pytest.mark.parametrize(
    "factory,kwargs,argument",
    [
        (scale_by_newton, dict(damping=-0.1), "damping"),
        (newton, dict(damping=-1.0), "damping"),
        (newton, dict(damping=float("nan")), "damping"),
        (scale_by_newton, dict(on_indefinite="ignore"), "on_indefinite"),
        (scale_by_hessian_free, dict(damping=-0.1), "damping"),
        (hessian_free, dict(damping=-1.0), "damping"),
        (scale_by_hessian_free, dict(max_cg_steps=0), "max_cg_steps"),
        (scale_by_hessian_free, dict(cg_tol=1.5), "cg_tol"),
        (scale_by_lbfgs, dict(memory_size=0), "memory_size"),
        (lbfgs, dict(memory_size=0), "memory_size"),
        (lbfgs, dict(memory_size=-3), "memory_size"),
        (scale_by_nonlinear_cg, dict(method="hestenes_stiefel"), "method"),
        (nonlinear_cg, dict(method="polak-ribiere"), "method"),
        (scale_by_nonlinear_cg, dict(restart_period=0), "restart_period"),
        (
            scale_by_backtracking_linesearch,
            dict(max_backtracking_steps=0),
            "max_backtracking_steps",
        ),
        (
            scale_by_backtracking_linesearch,
            dict(max_backtracking_steps=10, slope_rtol=-0.1),
            "slope_rtol",
        ),
        (
            scale_by_backtracking_linesearch,
            dict(max_backtracking_steps=10, slope_rtol=1.0),
            "slope_rtol",
        ),
        (
            scale_by_backtracking_linesearch,
            dict(max_backtracking_steps=10, decrease_factor=1.0),
            "decrease_factor",
        ),
        (scale_by_zoom_linesearch, dict(max_linesearch_steps=10, slope_rtol=-0.1), "slope_rtol"),
        (scale_by_zoom_linesearch, dict(max_linesearch_steps=10, slope_rtol=1.5), "slope_rtol"),
        (
            scale_by_zoom_linesearch,
            dict(max_linesearch_steps=10, slope_rtol=0.1, curv_rtol=0.1),
            "curv_rtol",
        ),
        (
            scale_by_zoom_linesearch,
            dict(max_linesearch_steps=10, slope_rtol=0.5, curv_rtol=0.2),
            "curv_rtol",
        ),
        (scale_by_zoom_linesearch, dict(max_linesearch_steps=10, curv_rtol=-1.0), "curv_rtol"),
        (scale_by_zoom_linesearch, dict(max_linesearch_steps=10, tol=-1e-3), "tol"),
        (
            scale_by_zoom_linesearch,
            dict(max_linesearch_steps=10, stepsize_precision=-1.0),
            "stepsize_precision",
        ),
        (
            scale_by_zoom_linesearch,
            dict(max_linesearch_steps=10, initial_guess_strategy="two"),
            "initial_guess_strategy",
        ),
        (scale_by_zoom_linesearch, dict(max_linesearch_steps=0), "max_linesearch_steps"),
    ],
)
def test_invalid_hyperparameters_raise(factory, kwargs, argument):
    """The message names the argument and shows the value given."""
    with pytest.raises(ValueError, match=re.escape(argument)) as info:
        factory(**kwargs)
    assert repr(kwargs[argument]) in str(info.value)


def test_minimize_rejects_bad_arguments():
    loss = PROBLEMS["rosenbrock_2d"].loss
    params = jax.tree.map(jnp.asarray, PROBLEMS["rosenbrock_2d"].params0)
    with pytest.raises(ValueError, match="max_steps"):
        minimize(loss, params, lbfgs(), max_steps=0)
    with pytest.raises(ValueError, match="tol"):
        minimize(loss, params, lbfgs(), tol=-1.0)


# ---------------------------------------------------------------- minimize


@pytest.mark.parametrize("max_steps", [200, 5])
def test_minimize_under_jit(max_steps):
    problem = PROBLEMS["logistic"]
    tol = 1e-7
    with jax.enable_x64(True):
        params0 = jax.tree.map(jnp.asarray, problem.params0)
        solve = jax.jit(lambda p: minimize(problem.loss, p, lbfgs(), max_steps=max_steps, tol=tol))
        result = solve(params0)
        value, grad = jax.value_and_grad(problem.loss)(result.params)
    x = problem.flatten(result.params)
    grad_norm = float(np.linalg.norm(problem.jac(x)))
    if max_steps == 5:
        # L-BFGS needs 26 steps here: the cap stops it, and it says it did not converge.
        assert int(result.num_steps) == 5 and not bool(result.converged)
    else:
        # It stopped on the tolerance, not on the cap.
        assert bool(result.converged) and int(result.num_steps) < max_steps
    assert float(result.value) == pytest.approx(problem.fun(x), rel=1e-12)
    assert float(result.value) == pytest.approx(float(value), rel=1e-12)
    np.testing.assert_allclose(problem.flatten(result.grad), problem.jac(x), atol=1e-10)
    np.testing.assert_allclose(problem.flatten(result.grad), problem.flatten(grad), atol=1e-12)
    assert bool(result.converged) == (grad_norm <= tol * (1 + 1e-9))
    if max_steps == 200:
        assert bool(result.converged) and int(result.num_steps) < max_steps
    else:
        assert not bool(result.converged) and int(result.num_steps) == max_steps
    # The leaves keep their structure and dtype.
    assert jax.tree.structure(result.params) == jax.tree.structure(params0)
    assert all(leaf.dtype == np.float64 for leaf in jax.tree.leaves(result.params))


def test_minimize_stops_at_the_first_step_that_meets_tol():
    """Starting at the minimiser: no step is taken, and it has converged."""
    problem = PROBLEMS["quadratic"]
    with jax.enable_x64(True):
        params = problem.unflatten(problem.minimiser)
        result = jax.jit(lambda p: minimize(problem.loss, p, bfgs(), tol=1e-6))(params)
    assert int(result.num_steps) == 0
    assert bool(result.converged)
    np.testing.assert_array_equal(problem.flatten(result.params), problem.minimiser)


def test_minimize_works_in_float32():
    problem = PROBLEMS["rosenbrock_2d"]
    params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), problem.params0)
    result = jax.jit(lambda p: minimize(problem.loss, p, lbfgs(), max_steps=200, tol=1e-3))(params)
    assert bool(result.converged)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(result.params))
    # float32 near the minimiser: |x - 1| ~ sqrt(eps / lambda_min) ~ 1e-3 at most.
    np.testing.assert_allclose(problem.flatten(result.params), [1.0, 1.0], atol=5e-3)


# ------------------------------------------- curvature pairs, complex params (vs Optax)


def _himmelblau(p):
    x, y = p[0], p[1]
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def _fixed_step_path(tx, loss, params, num_steps):
    def body(carry, _):
        p, state = carry
        updates, state = tx.update(jax.grad(loss)(p), state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), (p, loss(p))

    return jax.lax.scan(body, (params, tx.init(params)), None, length=num_steps)[1]


@pytest.mark.parametrize("scale_init_precond", [True, False])
def test_fixed_step_on_himmelblau_keeps_the_loss_bounded(scale_init_precond):
    """Himmelblau's function from (1, 1) (loss 106, the Hessian negative definite
    there), ``linesearch=None``, learning rate 1e-3, 150 steps, float32.

    Every pair ``s'y <= 0.02 |s| |y|`` is dropped. Before that rule (pairs kept
    when ``s'y > 0``), with ``scale_init_precond=False`` a pair with ``cos(s, y) =
    0.014`` at step 9 sent L-BFGS to (251, 176) (loss 5e9; BFGS likewise). Now
    L-BFGS ends at (1.117, 1.094), loss 96.9 (``True``: no pair passes, the
    normalised gradient steps of the first step go on), and at (2.979, 2.022),
    loss 0.015 (``False``: plain gradient steps until the valley, then L-BFGS).
    Optax's ``lbfgs`` keeps every pair, negative ones included: its ``gamma =
    s'y / y'y < 0`` turns the step uphill, and it ends at (0.688, 0.526), loss
    136.4 (``True``), and (0.962, 0.528), loss 124.3 (``False``).
    """
    params = jnp.array([1.0, 1.0])
    start = float(_himmelblau(params))
    makers = {
        "lbfgs": lambda: gradtx.lbfgs(1e-3, 10, scale_init_precond, None),
        "bfgs": lambda: gradtx.bfgs(1e-3, scale_init_precond, None),
        "optax": lambda: optax.lbfgs(1e-3, 10, scale_init_precond, None),
    }
    paths = jax.jit(
        lambda: {k: _fixed_step_path(m(), _himmelblau, params, 150) for k, m in makers.items()}
    )()
    for name in ("lbfgs", "bfgs"):
        points, losses = paths[name]
        assert np.all(np.isfinite(np.asarray(points))), name
        # No blow-up: the loss never rises above its start (its first steps go downhill).
        assert float(losses.max()) <= start, (name, float(losses.max()))
        # And it ends no higher than Optax's run, which climbs.
        assert float(losses[-1]) <= float(paths["optax"][1][-1]), name
    assert float(paths["optax"][1][-1]) > start  # Optax's uphill steps (documented above)
    end, loss = paths["lbfgs"][0][-1], float(paths["lbfgs"][1][-1])
    if scale_init_precond:
        np.testing.assert_allclose(end, [1.117, 1.094], atol=2e-3)
    else:
        np.testing.assert_allclose(end, [2.979, 2.022], atol=2e-3)
        assert loss < 0.05


def test_curvature_rule_drops_a_pair_at_a_small_angle_only():
    s, y = jnp.array([1.0, 0.0]), jnp.array([0.015, 1.0])  # cos(s, y) = 0.015 < 0.02
    tx = scale_by_lbfgs(3)
    state = tx.init(jnp.zeros(2))
    _, state = tx.update(jnp.zeros(2), state, jnp.zeros(2))
    _, dropped = tx.update(y, state, s)
    assert int(dropped.num_pairs) == 0
    _, kept = tx.update(jnp.array([0.03, 1.0]), state, s)  # cos = 0.03
    assert int(kept.num_pairs) == 1


def _complex_problem():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(6, 4)) + 1j * rng.normal(size=(6, 4))
    b = rng.normal(size=6) + 1j * rng.normal(size=6)

    def loss(p):
        r = jnp.asarray(a) @ p["z"] - jnp.asarray(b)
        return (
            jnp.sum(jnp.abs(r) ** 2)
            + 0.1 * jnp.sum(jnp.abs(p["z"]) ** 4)
            + jnp.sum((p["w"] - 1.0) ** 2 + 0.1 * p["w"] ** 4)
        )

    params = {"z": jnp.zeros(4, jnp.complex128), "w": jnp.zeros(3)}
    return loss, params


def _optax_convention_path(tx, loss, params, num_steps):
    """Optax's complex loop: the conjugate of JAX's gradient is the update and ``grad``."""

    def body(carry, _):
        p, state = carry
        value, grad = jax.value_and_grad(loss)(p)
        grad = jax.tree.map(jnp.conj, grad)
        updates, state = tx.update(grad, state, p, value=value, grad=grad, value_fn=loss)
        p = optax.apply_updates(p, updates)
        return (p, state), (p, loss(p))

    return jax.lax.scan(body, (params, tx.init(params)), None, length=num_steps)[1]


def test_lbfgs_on_complex_params_is_optax_lbfgs():
    """A complex leaf and a real one, float64, 120 steps: with a fixed step the path is
    Optax's; with the default zoom line search both reach the same minimum."""
    with jax.enable_x64(True):
        loss, params = _complex_problem()
        pairs = [
            (gradtx.lbfgs(0.05, 5, True, None), optax.lbfgs(0.05, 5, True, None)),
            (gradtx.lbfgs(0.05, 5, False, None), optax.lbfgs(0.05, 5, False, None)),
            (gradtx.lbfgs(), optax.lbfgs()),
        ]
        paths = jax.jit(
            lambda: [
                (
                    _optax_convention_path(a, loss, params, 120),
                    _optax_convention_path(b, loss, params, 120),
                )
                for a, b in pairs
            ]
        )()
    for (ours, theirs), fixed in zip(paths, (True, True, False), strict=True):
        assert ours[0]["z"].dtype == jnp.complex128 and ours[0]["w"].dtype == jnp.float64
        if fixed:
            # The two-loop recursion divides by s'y, which grows the last-ulp
            # differences of the two libraries' operation orders step by step:
            # measured 2.6e-10 relative after 120 steps (float64), so 1e-9.
            for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
        else:
            np.testing.assert_allclose(ours[1][-1], theirs[1][-1], rtol=1e-12)
            for a, b in zip(jax.tree.leaves(ours[0]), jax.tree.leaves(theirs[0]), strict=True):
                np.testing.assert_allclose(np.asarray(a)[-1], np.asarray(b)[-1], atol=1e-6)


def test_zoom_reads_a_learning_rate_set_in_its_state_as_a_python_float():
    """A state edited by hand (``optax.tree.set(state, learning_rate=0.5)``) keeps working."""
    tx = gradtx.scale_by_zoom_linesearch(15)
    params = jnp.array([1.0, -2.0])
    loss = lambda w: jnp.sum(w**2)  # noqa: E731
    state = gradtx.tree.set(tx.init(params), learning_rate=0.5)
    grad = jax.grad(loss)(params)
    updates, _ = tx.update(-grad, state, params, value=loss(params), grad=grad, value_fn=loss)
    # The exact minimiser along -grad is at step 1/2, which the first trial (0.5) hits.
    np.testing.assert_allclose(np.asarray(params + updates), [0.0, 0.0], atol=1e-6)


def test_backtracking_with_no_slope_term_and_an_infinite_increase_restarts_from_the_largest_step():
    """Optax's ``slope_rtol=0`` (plain decrease) and ``increase_factor=math.inf``."""
    fn = lambda x: jnp.sum((x - 1.0) ** 2)  # noqa: E731
    tx = gradtx.chain(
        gradtx.sgd(1.5),
        scale_by_backtracking_linesearch(
            max_backtracking_steps=30,
            slope_rtol=0.0,
            increase_factor=math.inf,
            max_learning_rate=1.0,
        ),
    )
    params = jnp.array([3.0, -2.0])
    state = tx.init(params)
    rates = []
    for _ in range(3):
        value, grad = jax.value_and_grad(fn)(params)
        updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=fn)
        new = gradtx.apply_updates(params, updates)
        assert fn(new) < value
        rates.append(float(state[-1].learning_rate))
        params = new
    # sgd(1.5) overshoots: the step 1.0 fails (f grows 4x) and a shorter one passes.
    # Each search starts from 1.0 again, so on this quadratic every accepted step
    # is the same fraction of the largest.
    assert rates[0] < 1.0 and rates == [rates[0]] * 3
    with pytest.raises(ValueError, match=r"increase_factor must be a number >= 1"):
        scale_by_backtracking_linesearch(10, increase_factor=float("nan"))
