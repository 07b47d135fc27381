"""Early stopping, Alg. 7.1-7.3: the state machine against the book's loop, and the helpers.

The oracle ``alg_7_1`` below is Alg. 7.1 of Goodfellow et al. (2016) written
line by line in plain Python (float64, the book's names ``i, j, v, theta*,
i*``), fed a list of validation values; it imports nothing from gradtx. The
jitted state machine, driven by ``lax.scan`` (and by ``vmap`` over runs), must
make the same decisions: identical steps and counters, and the best params of
the same evaluation. The loop helpers are checked on a small linear regression
that overfits (its validation curve is U-shaped) against plain Python loops of
Alg. 7.1-7.3 calling the same step function.

Tolerances: decisions are compared exactly; the values are float32 copies of
float64 inputs (``rtol = 1e-6``), and in the float64 regression runs the fused
``lax`` loops may round differently from eager calls (``rtol = 1e-10``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx.training.early_stopping import (
    EarlyStoppingState,
    continue_until_target,
    early_stopping,
    retrain_for_best_steps,
    run_early_stopping,
)

RTOL_F32 = 1e-6
RTOL_F64 = 1e-10


def alg_7_1(values, patience, n, rtol=0.0, atol=0.0):
    """Alg. 7.1 on precomputed validation values; ``theta`` at evaluation k is k.

    Returns the book's variables when the ``while j < p`` loop ends (or when the
    values run out): ``i, i*, v, theta*, j`` and whether it stopped.
    """
    i, j, v = 0, 0, math.inf
    theta_star, i_star = -1, 0  # -1 stands for theta_o
    for k, v_new in enumerate(values):
        if j >= patience:
            break
        i = i + n
        if v_new < v - (rtol * abs(v) + atol) or (math.isinf(v) and v_new < v):
            j = 0
            theta_star = k
            i_star = i
            v = v_new
        else:
            j = j + 1
    return dict(i=i, i_star=i_star, v=v, theta_star=theta_star, j=j, stopped=j >= patience)


def _scan(stopper, values, params0):
    """The state machine over ``values`` in one jitted scan; evaluation k sees params k."""
    ks = jnp.arange(len(values), dtype=jnp.float32)

    def body(state, x):
        value, k = x
        return stopper.update(state, value, jnp.full_like(params0, k)), None

    run = jax.jit(lambda s, xs: jax.lax.scan(body, s, xs)[0])
    return run(stopper.init(params0), (jnp.asarray(values, jnp.float32), ks))


def _assert_matches(state, expected, params0):
    assert int(state.step) == expected["i"]
    assert int(state.best_step) == expected["i_star"]
    assert int(state.patience_count) == expected["j"]
    assert bool(state.should_stop) == expected["stopped"]
    np.testing.assert_allclose(float(state.best_value), expected["v"], rtol=RTOL_F32)
    want = params0 if expected["theta_star"] < 0 else np.full(params0.shape, expected["theta_star"])
    np.testing.assert_array_equal(np.asarray(state.best_params), want)


def test_hand_made_sequence_gives_the_book_answer():
    # Evaluations every n=2 steps; patience 3. Best 3.0 at the 4th evaluation
    # (step 8); then 3.2, 3.1, 3.5 do not improve: stop at step 14. The 2.0 after
    # the stop must be ignored.
    values = [5.0, 4.0, 4.5, 3.0, 3.2, 3.1, 3.5, 2.0, 1.0]
    state = _scan(early_stopping(3, eval_every=2), values, jnp.zeros(2))
    assert int(state.best_step) == 8
    assert int(state.step) == 14
    assert float(state.best_value) == 3.0
    assert bool(state.should_stop)
    np.testing.assert_array_equal(state.best_params, [3.0, 3.0])  # the 4th evaluation's
    assert alg_7_1(values, 3, 2) == dict(i=14, i_star=8, v=3.0, theta_star=3, j=3, stopped=True)


def test_ties_do_not_improve_and_the_margin_is_applied():
    # atol=0.5: 2.6 is not below 3.0 - 0.5; 2.4 is. A tie never improves.
    stopper = early_stopping(2, atol=0.5)
    state = _scan(stopper, [3.0, 2.6, 2.4, 2.4, 2.0], jnp.zeros(()))
    assert (int(state.best_step), int(state.step)) == (3, 5)
    assert float(state.best_value) == float(np.float32(2.4))
    assert bool(state.should_stop)
    state = _scan(early_stopping(5, rtol=0.1), [-10.0, -10.5, -11.5, -11.6], jnp.zeros(()))
    # Relative to |v|, so a negative loss must also decrease by 10% of its size.
    assert (int(state.best_step), float(state.best_value)) == (3, -11.5)


@pytest.mark.parametrize("seed", range(6))
def test_random_sequences_match_the_book_loop(seed):
    rng = np.random.default_rng(seed)
    patience = int(rng.integers(1, 5))
    n = int(rng.integers(1, 4))
    rtol, atol = [(0.0, 0.0), (0.0, 0.05), (0.02, 0.0)][seed % 3]
    # Rounded to one decimal, the values tie often; a few are NaN.
    values = np.round(3 + np.cumsum(rng.normal(scale=0.3, size=30)), 1)
    values[rng.random(30) < 0.1] = np.nan
    values = values.astype(np.float32).astype(np.float64)  # what float32 arithmetic sees
    stopper = early_stopping(patience, eval_every=n, rtol=rtol, atol=atol)
    expected = alg_7_1(list(values), patience, n, rtol, atol)
    _assert_matches(_scan(stopper, values, jnp.zeros(3)), expected, np.zeros(3))


def test_eager_python_loop_equals_the_scan():
    values = [2.0, 1.5, 1.7, 1.6, 1.4, 1.45, 1.5, 1.6]
    stopper = early_stopping(2)
    state = stopper.init(jnp.zeros(2))
    for k, value in enumerate(values):
        state = stopper.update(state, value, jnp.full(2, float(k)))
    scanned = _scan(stopper, values, jnp.zeros(2))
    jax.tree.map(np.testing.assert_array_equal, state, scanned)
    _assert_matches(state, alg_7_1(values, 2, 1), np.zeros(2))


def test_vmap_over_runs_equals_each_run():
    rng = np.random.default_rng(7)
    batch = np.round(2 + np.cumsum(rng.normal(scale=0.2, size=(5, 25)), axis=1), 2)
    batch = batch.astype(np.float32)
    stopper = early_stopping(3, eval_every=4)
    runs = jax.vmap(lambda values: _scan(stopper, values, jnp.zeros(2)))(jnp.asarray(batch))
    for r, values in enumerate(batch.astype(np.float64)):
        one = jax.tree.map(lambda x, r=r: x[r], runs)
        _assert_matches(one, alg_7_1(list(values), 3, 4), np.zeros(2))


def test_nan_never_improves_and_first_value_always_does():
    state = _scan(early_stopping(2), [np.nan, 7.0, np.nan, np.nan], jnp.zeros(()))
    assert (int(state.best_step), float(state.best_value), int(state.step)) == (2, 7.0, 4)
    assert bool(state.should_stop)


def test_state_dtypes_follow_the_params():
    with jax.enable_x64(True):
        state = early_stopping(1).init({"w": jnp.zeros(2, jnp.float64), "n": jnp.zeros((), int)})
        assert state.best_value.dtype == jnp.float64
        state = early_stopping(1).update(state, 0.25, state.best_params)
        assert state.best_value.dtype == jnp.float64
        assert state.best_params["n"].dtype == jnp.int64
    state = early_stopping(1).init(jnp.zeros(2, jnp.bfloat16))
    assert state.best_value.dtype == jnp.float32
    assert state.best_params.dtype == jnp.bfloat16
    assert state.step.dtype == state.best_step.dtype == state.patience_count.dtype == jnp.int32
    assert isinstance(state, EarlyStoppingState)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(patience=0), "patience must be an integer >= 1, got 0"),
        (dict(patience=2.0), "patience must be an integer >= 1"),
        (dict(patience=2, eval_every=0), "eval_every must be an integer >= 1"),
        (dict(patience=2, rtol=-0.1), "rtol must be a finite number >= 0, got -0.1"),
        (dict(patience=2, atol=float("nan")), "atol must be a finite number >= 0"),
    ],
)
def test_bad_hyperparameters_fail_at_construction(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        early_stopping(**kwargs)


def test_a_non_scalar_value_is_refused():
    stopper = early_stopping(1)
    with pytest.raises(ValueError, match=r"scalar validation loss, got shape \(2,\)"):
        stopper.update(stopper.init(jnp.zeros(2)), jnp.ones(2), jnp.zeros(2))


# ------------------------------------------------- Alg. 7.1-7.3 on a linear regression


def _regression():
    """48 samples, 24 features, noisy: gradient descent on half overfits (U-shaped valid)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(48, 24))
    y = x @ (0.5 * rng.normal(size=24)) + 1.5 * rng.normal(size=48)
    return (x[:24], y[:24]), (x[24:], y[24:]), (x, y)


def _mse(w, data):
    x, y = data
    return jnp.mean((jnp.asarray(x) @ w - jnp.asarray(y)) ** 2)


def _gd_step(data, learning_rate=0.005):
    return lambda w: w - learning_rate * jax.grad(_mse)(w, data)


def _book_loop_7_1(step, valid, theta, patience, n):
    """Alg. 7.1 literally, calling the same step and validation functions eagerly."""
    i, j, v, theta_star, i_star = 0, 0, math.inf, theta, 0
    while j < patience:
        for _ in range(n):
            theta = step(theta)
        i = i + n
        v_new = float(valid(theta))
        if v_new < v:
            j, theta_star, i_star, v = 0, theta, i, v_new
        else:
            j = j + 1
    return theta, theta_star, i_star, v, i


def test_run_early_stopping_is_alg_7_1_on_a_regression():
    subtrain, valid, _ = _regression()
    with jax.enable_x64(True):
        step, loss = _gd_step(subtrain), lambda w: _mse(w, valid)
        w0 = jnp.zeros(24)
        carry, state = jax.jit(
            lambda w: run_early_stopping(step, loss, w, patience=5, eval_every=4)
        )(w0)
        theta, theta_star, i_star, v, i = _book_loop_7_1(step, loss, w0, 5, 4)
        assert (int(state.best_step), int(state.step)) == (i_star, i)
        np.testing.assert_allclose(state.best_params, theta_star, rtol=RTOL_F64)
        np.testing.assert_allclose(carry, theta, rtol=RTOL_F64)
        np.testing.assert_allclose(float(state.best_value), v, rtol=RTOL_F64)
        # The validation curve is U-shaped: i* is its minimum over the evaluation grid.
        w, curve = w0, []
        for _ in range(100):
            for _ in range(4):
                w = step(w)
            curve.append(float(loss(w)))
        assert int(state.best_step) == 4 * (int(np.argmin(curve)) + 1)
        assert 4 < int(state.best_step) < int(state.step) < 400


def test_run_early_stopping_respects_max_steps():
    subtrain, valid, _ = _regression()
    step, loss = _gd_step(subtrain), lambda w: _mse(w, valid)
    _, state = run_early_stopping(step, loss, jnp.zeros(24), patience=50, max_steps=10)
    assert int(state.step) == 10 and not bool(state.should_stop)
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1, got 0"):
        run_early_stopping(step, loss, jnp.zeros(24), patience=1, max_steps=0)


def test_retrain_for_best_steps_is_alg_7_2():
    subtrain, valid, train = _regression()
    with jax.enable_x64(True):
        _, state = run_early_stopping(
            _gd_step(subtrain), lambda w: _mse(w, valid), jnp.zeros(24), patience=5, eval_every=4
        )
        i_star = state.best_step
        step_all = _gd_step(train)
        # i* traced under jit: the loop length is a runtime value.
        retrained = jax.jit(lambda w, k: retrain_for_best_steps(step_all, w, k))(
            jnp.zeros(24), i_star
        )
        w = jnp.zeros(24)
        for _ in range(int(i_star)):
            w = step_all(w)
        np.testing.assert_allclose(retrained, w, rtol=RTOL_F64)
        np.testing.assert_array_equal(retrain_for_best_steps(step_all, jnp.ones(24), 0), 1.0)


def test_continue_until_target_is_alg_7_3():
    subtrain, valid, train = _regression()
    with jax.enable_x64(True):
        valid_loss = lambda w: _mse(w, valid)  # noqa: E731
        carry, _ = run_early_stopping(
            _gd_step(subtrain), valid_loss, jnp.zeros(24), patience=5, eval_every=4
        )
        epsilon = float(_mse(carry, subtrain))  # the training loss at the stopping point
        step_all = _gd_step(train)
        out = jax.jit(
            lambda w: continue_until_target(step_all, valid_loss, w, epsilon, eval_every=3)
        )(carry)
        # The book's while loop, eagerly.
        theta, steps = carry, 0
        while float(valid_loss(theta)) > epsilon:
            for _ in range(3):
                theta = step_all(theta)
            steps += 3
        assert int(out.steps) == steps > 0
        assert bool(out.reached)
        assert float(out.value) <= epsilon < float(valid_loss(carry))
        np.testing.assert_allclose(out.carry, theta, rtol=RTOL_F64)


def test_continue_until_target_stops_at_max_steps_and_on_nan():
    out = continue_until_target(lambda x: x - 1.0, lambda x: x, jnp.asarray(10.0), 0.0, max_steps=4)
    assert (int(out.steps), float(out.value), bool(out.reached)) == (4, 6.0, False)
    out = continue_until_target(lambda x: x * np.nan, lambda x: x, jnp.asarray(10.0), 0.0)
    assert int(out.steps) == 1 and not bool(out.reached)
    out = continue_until_target(lambda x: x - 1.0, lambda x: x, jnp.asarray(1.0), 2.0)
    assert int(out.steps) == 0 and bool(out.reached)  # already below: no training
    with pytest.raises(ValueError, match="eval_every must be an integer >= 1"):
        continue_until_target(lambda x: x, lambda x: x, jnp.zeros(()), 0.0, eval_every=0)
