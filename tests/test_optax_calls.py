"""Calls written for Optax 0.2.8 work on gradtx's functions of the same name.

One test per call, written the Optax way (positional arguments in Optax's order,
Optax's keyword names), run side by side with Optax's own function for 100+ steps
in one jitted program, and compared step by step (or, where the two differ on
purpose, on what must agree). Float32 unless a test says otherwise; tolerances
are those of tests/test_optax_parity.py (two XLA programs round differently).
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

NUM_STEPS = 120
TOL = dict(rtol=1e-6, atol=1e-6)


def _close(got, expected, **tol):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **{**TOL, **tol})


def _grads(num_steps=NUM_STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(num_steps, 3, 2)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(num_steps, 2)), jnp.float32),
    }


def _params():
    return {"w": jnp.full((3, 2), 0.5), "b": jnp.zeros(2)}


def _paths(pairs, grads, *, read=None):
    """For each ``(tx_a, tx_b)``: both paths of the params (and ``read(state)``) over ``grads``."""

    def path(tx):
        def body(carry, g):
            p, state = carry
            updates, state = tx.update(g, state, p)
            p = optax.apply_updates(p, updates)
            return (p, state), (p, read(state) if read else ())

        return jax.lax.scan(body, (_params(), tx.init(_params())), grads)[1]

    return jax.jit(lambda: [(path(a), path(b)) for a, b in pairs])()


def test_signatures_match_optax():
    """Every argument of these Optax functions is here, in Optax's order (extras after)."""
    names = [
        "apply_if_finite",
        "MultiSteps",
        "value_and_grad_from_state",
        "scale_by_zoom_linesearch",
        "scale_by_backtracking_linesearch",
        "lbfgs",
        "scale_by_lbfgs",
        "linear_schedule",
        "polynomial_schedule",
        "exponential_decay",
        "cosine_decay_schedule",
        "warmup_cosine_decay_schedule",
        "lookahead",
    ]
    for name in names:
        theirs = list(inspect.signature(getattr(optax, name)).parameters)
        ours = list(inspect.signature(getattr(gradtx, name)).parameters)
        assert ours[: len(theirs)] == theirs, name
        extras = inspect.signature(getattr(gradtx, name)).parameters
        for extra in ours[len(theirs) :]:
            assert extras[extra].kind is inspect.Parameter.KEYWORD_ONLY, (name, extra)


# ------------------------------------------------------------------ 1. apply_if_finite


def test_apply_if_finite_max_consecutive_errors_positionally():
    """``apply_if_finite(inner, 3)``: 3 bad steps in a row are skipped, the 4th applied."""
    grads = _grads()
    grads["b"] = grads["b"].at[10, 0].set(jnp.nan)  # a lone bad step
    grads["b"] = grads["b"].at[30:33, 1].set(jnp.inf)  # three in a row: all skipped
    grads["w"] = grads["w"].at[60:64, 0, 0].set(jnp.nan)  # four in a row: the 4th applied
    counters = lambda s: (s.notfinite_count, s.last_finite, s.total_notfinite)  # noqa: E731
    [(ours, theirs)] = _paths(
        [(gradtx.apply_if_finite(optax.sgd(0.1), 3), optax.apply_if_finite(optax.sgd(0.1), 3))],
        grads,
        read=counters,
    )
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL, equal_nan=True)
    params = ours[0]
    assert np.isfinite(np.asarray(params["w"][62])).all()  # 3rd bad one: skipped
    assert np.isnan(np.asarray(params["w"][63][0, 0]))  # 4th: applied, as Optax does


# ----------------------------------------------------------------------- 2. MultiSteps


def test_multisteps_like_optax_with_int_schedule_and_skip():
    grads = _grads()
    grads["b"] = grads["b"].at[7, 1].set(jnp.nan).at[50, 0].set(jnp.inf)
    every_k = lambda step: jnp.where(step < 3, 1, jnp.where(step < 10, 2, 3))  # noqa: E731
    cases = [
        dict(every_k_schedule=3),
        dict(every_k_schedule=every_k, use_grad_mean=False),
        dict(every_k_schedule=every_k, should_skip_update_fn=optax.skip_not_finite),
    ]
    pairs, finite_grads = [], jax.tree.map(lambda g: jnp.nan_to_num(g, posinf=0.0), grads)
    for kwargs in cases:
        ours = gradtx.MultiSteps(optax.adam(0.05), **kwargs)
        theirs = optax.MultiSteps(optax.adam(0.05), **kwargs)
        pairs.append((ours, theirs))
    results = []
    for (ours, theirs), kwargs in zip(pairs, cases, strict=True):
        data = grads if "should_skip_update_fn" in kwargs else finite_grads

        def read(s, ours=ours, theirs=theirs):
            owner = ours if isinstance(s, gradtx.MultiStepsState) else theirs
            return owner.has_updated(s), s.mini_step, s.gradient_step

        results.append(
            _paths(
                [(ours.gradient_transformation(), theirs.gradient_transformation())],
                data,
                read=read,
            )[0]
        )
    for (a, b), kwargs in zip(results, cases, strict=True):
        _close(a, b)
        assert int(a[1][2][-1]) > 30, kwargs  # inner steps were taken
    # init / update / has_updated called on the object, as Optax's users do.
    ms = gradtx.MultiSteps(optax.sgd(1.0), every_k_schedule=2)
    state = ms.init(_params())
    _, state = ms.update(jax.tree.map(jnp.ones_like, _params()), state, _params())
    assert not bool(ms.has_updated(state))
    updates, state = ms.update(jax.tree.map(jnp.ones_like, _params()), state, _params())
    assert bool(ms.has_updated(state)) and float(updates["b"][0]) == -1.0


# ---------------------------------------------- 3. value_and_grad_from_state, 4. line searches


def _data():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(20, 3)), jnp.float32)
    y = jnp.asarray(x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=20), jnp.float32)
    return x, y


def _fn(params, x, y):
    return jnp.mean((x @ params - y) ** 2) + 0.1 * jnp.sum(params**4)


def _run_solver(solver, value_and_grad, num_steps=NUM_STEPS):
    """Optax's documented loop, with the data passed on to ``value_fn`` by name."""
    x, y = _data()

    def body(carry, _):
        params, state = carry
        value, grad = value_and_grad(params, x, y, state=state)
        updates, state = solver.update(
            grad, state, params, value=value, grad=grad, value_fn=_fn, x=x, y=y
        )
        params = optax.apply_updates(params, updates)
        return (params, state), (params, value)

    params = jnp.zeros(3)
    return jax.lax.scan(body, (params, solver.init(params)), None, length=num_steps)[1]


def test_value_and_grad_from_state_with_value_fn_and_backtracking_positionally():
    """Optax's example, positional backtracking arguments, data passed to ``value_fn``."""
    args = (15, 1e-4, 0.8, 1.5, 1.0, 0.0, 0.0, True, False)  # ... atol, rtol, store_grad, verbose
    ours = gradtx.chain(gradtx.sgd(0.1), gradtx.scale_by_backtracking_linesearch(*args))
    theirs = optax.chain(optax.sgd(0.1), optax.scale_by_backtracking_linesearch(*args))
    # Float64: near the minimum, float32 rounding of the slope decides between two
    # trial steps differently in the two programs (from step ~100).
    with jax.enable_x64(True):
        a, b = jax.jit(
            lambda: (
                _run_solver(ours, gradtx.value_and_grad_from_state(value_fn=_fn)),
                _run_solver(theirs, optax.value_and_grad_from_state(value_fn=_fn)),
            )
        )()
    _close(a, b, rtol=1e-10, atol=1e-12)


def test_backtracking_atol_and_rtol_land_on_their_parameters():
    """Positional ``atol`` (6th) and ``rtol`` (7th) relax the decrease condition.

    ``f = |p|^2 + 1`` at ``p = (1, -1)`` (``f = 3``, slope ``-6`` along ``d = -1.5
    p``), ``c1 = 0.5``: the first trial ``eta = 1`` gives ``f = 1.5``, above
    Armijo's bound ``3 - 3 = 0``, so the exact search halves to ``eta = 0.5``;
    with ``atol = 2`` or ``rtol = 0.6`` the bound is 2 or 1.8, and ``eta = 1`` passes.
    """
    loss = lambda p: jnp.sum(p**2) + 1.0  # noqa: E731
    p = jnp.array([1.0, -1.0])
    value, grad = jax.value_and_grad(loss)(p)
    direction = -1.5 * p
    cases = [
        ((10, 0.5, 0.5), 0.5),
        ((10, 0.5, 0.5, 1.5, 1.0, 2.0), 1.0),
        ((10, 0.5, 0.5, 1.5, 1.0, 0.0, 0.6), 1.0),
    ]
    for args, expected_eta in cases:
        for search in (
            gradtx.scale_by_backtracking_linesearch,
            optax.scale_by_backtracking_linesearch,
        ):
            tx = search(*args)
            _, state = tx.update(direction, tx.init(p), p, value=value, grad=grad, value_fn=loss)
            assert float(state.learning_rate) == expected_eta, (search.__module__, args)


def test_zoom_positionally_lands_max_learning_rate_tol_and_precision():
    args = (20, 0.25, 0.0, 2.0, 1e-4, 0.9, 1e-6, 1e-5, "keep", False)
    ours, theirs = gradtx.scale_by_zoom_linesearch(*args), optax.scale_by_zoom_linesearch(*args)
    a, b = jax.jit(
        lambda: (
            _run_solver(gradtx.chain(gradtx.sgd(1.0), ours), gradtx.value_and_grad_from_state(_fn)),
            _run_solver(optax.chain(optax.sgd(1.0), theirs), optax.value_and_grad_from_state(_fn)),
        )
    )()
    # The cap (2nd positional argument) holds: no step moves by more than 0.25 * |grad|.
    x, y = _data()
    steps = np.diff(np.concatenate([np.zeros((1, 3)), np.asarray(a[0])]), axis=0)
    grads = np.asarray(jax.vmap(jax.grad(_fn), (0, None, None))(
        jnp.concatenate([jnp.zeros((1, 3)), a[0][:-1]]), x, y
    ))  # fmt: skip
    assert np.all(np.linalg.norm(steps, axis=1) <= 0.25 * np.linalg.norm(grads, axis=1) + 1e-6)
    # Both reach the same minimum; their bracketing trials differ (see the docstring).
    np.testing.assert_allclose(a[1][-1], b[1][-1], rtol=1e-5)
    np.testing.assert_allclose(a[0][-1], b[0][-1], rtol=1e-3, atol=1e-4)


def test_zoom_tol_stepsize_precision_and_approx_dec_rtol_mean_what_optax_means():
    """On ``f = x^4`` from ``x = 1`` along ``-f'``: ``tol`` is a slack on both
    conditions (1000: the first trial, ``f = 81``, passes, as in Optax);
    ``stepsize_precision`` ends the zoom at the first trial with sufficient
    decrease once the bracket is shorter (10: at once, Armijo holds, curvature
    not); ``approx_dec_rtol`` lets Hager & Zhang's approximate condition stand
    for Armijo's (a trial no lower than the start, with a small slope)."""
    loss = lambda p: jnp.sum(p**4)  # noqa: E731
    p = jnp.array([1.0])
    value, grad = jax.value_and_grad(loss)(p)

    def search(module, *args):
        tx = module.scale_by_zoom_linesearch(30, *args, initial_guess_strategy="one")
        return tx.update(-grad, tx.init(p), p, value=value, grad=grad, value_fn=loss)

    for module in (gradtx, optax):
        updates, _ = search(module, None, 1000.0, 2.0, 1e-4, 0.01)
        assert float(updates[0]) == -4.0  # eta = 1
    _, exact = search(gradtx, None, 0.0, 2.0, 1e-4, 0.01)
    _, coarse = search(gradtx, None, 0.0, 2.0, 1e-4, 0.01, 1e-6, 10.0)
    assert int(exact.info.num_linesearch_steps) == 3
    assert float(exact.info.decrease_error) == float(exact.info.curvature_error) == 0.0
    assert int(coarse.info.num_linesearch_steps) == 2
    assert float(coarse.info.decrease_error) == 0.0 < float(coarse.info.curvature_error)
    eta = float(coarse.learning_rate)
    assert 0 < eta < 1 and float(loss(p - eta * grad)) <= float(value) - 1e-4 * eta * 16
    from gradtx.second_order.linesearch import _zoom_errors

    # f(eta) = f(0) (no Armijo decrease), slope 0.1 |phi'(0)| after: approximate Wolfe.
    errors = lambda rtol: _zoom_errors(1.0, 0.1, 1.0, 1.0, -1.0, 1e-4, 0.9, rtol)  # noqa: E731
    assert float(errors(None)[0]) > 0 and float(errors(1e-6)[0]) == 0.0


def test_zoom_verbose_prints_on_failure(capfd):
    tx = gradtx.scale_by_zoom_linesearch(5, None, 0.0, 2.0, 1e-4, 0.9, None, 1e-5, "one", True)
    p = jnp.array([1.0, 2.0])
    loss = lambda q: jnp.sum(q**2)  # noqa: E731
    updates, _ = tx.update(p, tx.init(p), p, value_fn=loss)  # uphill: no step
    jax.effects_barrier()
    assert "no step met both conditions" in capfd.readouterr().out
    assert float(jnp.abs(updates).sum()) == 0.0


# ------------------------------------------------------------------------------ 5. lbfgs


def test_lbfgs_and_scale_by_lbfgs_positionally():
    """``lbfgs(learning_rate, memory_size, scale_init_precond, linesearch)`` as Optax's."""
    x, y = _data()
    loss = lambda p: _fn(p, x, y)  # noqa: E731 - convex: every curvature pair is kept

    def path(tx):
        def step(carry, _):
            p, state = carry
            u, state = tx.update(jax.grad(loss)(p), state, p)
            p = optax.apply_updates(p, u)
            return (p, state), p

        return jax.lax.scan(step, (jnp.zeros(3), tx.init(jnp.zeros(3))), None, length=NUM_STEPS)[1]

    pairs = [
        (gradtx.lbfgs(0.1, 4, False, None), optax.lbfgs(0.1, 4, False, None)),
        (gradtx.lbfgs(0.1, 4, True, None), optax.lbfgs(0.1, 4, True, None)),
        (
            gradtx.chain(gradtx.scale_by_lbfgs(3, False), gradtx.scale(-0.05)),
            optax.chain(optax.scale_by_lbfgs(3, False), optax.scale(-0.05)),
        ),
    ]
    for a, b in jax.jit(lambda: [(path(p), path(q)) for p, q in pairs])():
        _close(a, b, rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------------- 6. schedules


def test_schedules_accept_float_steps_as_optax():
    cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=2.5, decay_steps=30.5)
    cases = [
        ("linear_schedule", (1.0, 0.1, 2.5)),
        ("linear_schedule", (1.0, 0.1, 40.5, 7.5)),
        ("polynomial_schedule", (1.0, 0.1, 2.0, 50.5, 3.5)),
        ("exponential_decay", (1.0, 12.5, 0.5, 4.5)),
        ("exponential_decay", (1.0, 12.5, 0.5, 4.5, True)),
        ("cosine_decay_schedule", (1.0, 77.5, 0.1)),
        ("warmup_cosine_decay_schedule", (0.0, 1.0, 10.5, 100.5, 0.01)),
        ("warmup_exponential_decay_schedule", (0.0, 1.0, 10.5, 20.5, 0.5, 3.5)),
        ("warmup_constant_schedule", (0.0, 1.0, 10.5)),
        ("linear_onecycle_schedule", (100.5, 1.0)),
        ("cosine_onecycle_schedule", (100.5, 1.0)),
        ("piecewise_constant_schedule", (1.0, {20.5: 0.5, 60.5: 0.1})),
        ("piecewise_interpolate_schedule", ("cosine", 1.0, {20.5: 0.5, 60.5: 0.1})),
        ("sgdr_schedule", ([cycle, cycle, cycle],)),
    ]
    counts = jnp.arange(NUM_STEPS, dtype=jnp.int32)
    for name, args in cases:
        ours, theirs = getattr(gradtx, name)(*args), getattr(optax, name)(*args)
        got = jax.jit(jax.vmap(ours))(counts)
        expected = jnp.stack([theirs(c) for c in counts])  # some of Optax's take a scalar only
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-7, err_msg=name)
    join = gradtx.join_schedules(
        [gradtx.constant_schedule(1.0), gradtx.linear_schedule(1.0, 0.0, 9.5)], [5.5]
    )
    theirs = optax.join_schedules(
        [optax.constant_schedule(1.0), optax.linear_schedule(1.0, 0.0, 9.5)], [5.5]
    )
    np.testing.assert_allclose(jax.vmap(join)(counts), jax.vmap(theirs)(counts), rtol=2e-6)


# -------------------------------------------------------------------------- 7. lookahead


@pytest.mark.parametrize("pair", [optax.LookaheadParams, gradtx.LookaheadParams])
@pytest.mark.parametrize("reset_state", [False, True])
def test_lookahead_given_lookahead_params_follows_optax(pair, reset_state):
    """Optax's call, ``tx.init(LookaheadParams.init_synced(params))``, Optax's class or ours.

    120 steps of momentum in one jitted program: the fast and slow weights equal
    Optax's, and the updates come back in the class given. With ``reset_state``
    the inner state restarts from the synced weights (Optax: from the fast weights
    before the step), which momentum's ``init`` (zeros) does not see.
    """
    params = pair.init_synced(_params())
    grads = _grads()
    ours = gradtx.lookahead(gradtx.sgd(0.1, 0.9), 5, 0.5, reset_state)
    theirs = optax.lookahead(optax.sgd(0.1, 0.9), 5, 0.5, reset_state)
    state = ours.init(params)
    assert state.slow is None
    updates, _ = ours.update(params.fast, state, params)
    assert type(updates) is pair

    def path(tx, params):
        def body(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
            return (p, s), (p.fast, p.slow)

        return jax.lax.scan(body, (params, tx.init(params)), grads)[1]

    optax_params = optax.LookaheadParams.init_synced(_params())  # Optax returns its own class
    a, b = jax.jit(lambda: (path(ours, params), path(theirs, optax_params)))()
    _close(a, b)
    # The two ways of calling it give the same weights (the plain one keeps phi in its state).
    plain = gradtx.lookahead(gradtx.sgd(0.1, 0.9), 5, 0.5, reset_state)

    def plain_path():
        def body(carry, g):
            p, s = carry
            u, s = plain.update(g, s, p)
            p = optax.apply_updates(p, u)
            return (p, s), (p, gradtx.lookahead_slow_params(s))

        return jax.lax.scan(body, (params.fast, plain.init(params.fast)), grads)[1]

    _close(jax.jit(plain_path)(), a)


def test_lookahead_refuses_mixing_plain_params_and_lookahead_params():
    tx = gradtx.lookahead(gradtx.sgd(0.1), 5, 0.5)
    pair = gradtx.LookaheadParams.init_synced(_params())
    with pytest.raises(TypeError, match=r"update got a LookaheadParams but init got plain"):
        tx.update(pair.fast, tx.init(pair.fast), pair)
    with pytest.raises(TypeError, match=r"update got plain params but init got a LookaheadP"):
        tx.update(pair.fast, tx.init(pair), pair.fast)
    with pytest.raises(ValueError, match=r"slow weights are not in its state.*params\.slow"):
        gradtx.lookahead_slow_params(tx.init(pair))


def test_lookahead_params_fields_are_optax_s():
    assert gradtx.LookaheadParams._fields == optax.LookaheadParams._fields == ("fast", "slow")
    p = gradtx.LookaheadParams.init_synced(1.0)
    assert p == gradtx.LookaheadParams(fast=1.0, slow=1.0)
