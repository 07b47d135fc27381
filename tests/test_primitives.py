"""Identities between the primitives: each block is one idea, and they compose.

These check the design promises in the docstrings: ``bias_correction`` debiases
whatever EMA precedes it, the learning rate can sit inside or outside the
velocity, a schedule sees the 0-based step count, a mask spares leaves.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

STEPS = 30


def _gradients(seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(steps, 3, 2)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(steps, 2)), jnp.float32),
    }


def _outputs(tx, grads, params=None):
    """The sequence of updates ``tx`` emits for a stacked sequence of gradients."""
    first = jax.tree.map(lambda g: g[0], grads)
    state = tx.init(first if params is None else params)

    def step(state, g):
        u, state = tx.update(g, state, params)
        return state, u

    return jax.lax.scan(step, state, grads)[1]


def _assert_trees_close(a, b, rtol=1e-6, atol=1e-7):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_bias_correction_after_a_raw_ema_equals_the_debiased_ema():
    grads = _gradients()
    raw_then_corrected = gradtx.chain(gradtx.ema(0.8, debias=False), gradtx.bias_correction(0.8))
    _assert_trees_close(_outputs(raw_then_corrected, grads), _outputs(gradtx.ema(0.8), grads))


def test_bias_correction_debiases_an_ema_built_from_trace_and_scale():
    # trace gives sum_i b^(t-i) g_i; times (1 - b) it is an EMA started at zero.
    grads = _gradients(1)
    built = gradtx.chain(gradtx.trace(0.7), gradtx.scale(0.3), gradtx.bias_correction(0.7))
    _assert_trees_close(_outputs(built, grads), _outputs(gradtx.ema(0.7), grads), rtol=1e-5)


def test_debiased_ema_of_a_constant_is_that_constant_from_the_first_step():
    grads = {"w": jnp.full((5, 2), 3.0)}
    # float32: 1 - 0.99^t cancels, amplifying rounding by 1 / (1 - 0.99) = 100.
    np.testing.assert_allclose(_outputs(gradtx.ema(0.99), grads)["w"], 3.0, rtol=1e-5)


def test_scale_by_rms_bias_correction_equals_rms_of_the_corrected_moment():
    grads = _gradients(2)
    ours = _outputs(gradtx.scale_by_rms(0.9, eps=0.0, bias_correction=True), grads)
    second = _outputs(
        gradtx.chain(gradtx.stateless(lambda u, p: jax.tree.map(jnp.square, u)), gradtx.ema(0.9)),
        grads,
    )
    expected = jax.tree.map(lambda g, v: g / jnp.sqrt(v), grads, second)
    _assert_trees_close(ours, expected, rtol=1e-5)


def test_nesterov_is_trace_with_the_look_ahead_output():
    grads = _gradients(3)
    _assert_trees_close(
        _outputs(gradtx.nesterov(0.9), grads), _outputs(gradtx.trace(0.9, nesterov=True), grads)
    )
    # The look-ahead output is g + alpha * v_new, checked against trace's own v.
    velocity = _outputs(gradtx.trace(0.9), grads)
    expected = jax.tree.map(lambda g, v: g + 0.9 * v, grads, velocity)
    _assert_trees_close(_outputs(gradtx.nesterov(0.9), grads), expected, rtol=1e-5)


@pytest.mark.parametrize("nesterov", [False, True])
def test_learning_rate_placement_agrees_for_a_constant_rate(nesterov):
    grads = _gradients(4)
    outside = gradtx.sgd(0.05, momentum=0.9, nesterov=nesterov)
    inside = gradtx.sgd(0.05, momentum=0.9, nesterov=nesterov, learning_rate_in_velocity=True)
    _assert_trees_close(_outputs(outside, grads), _outputs(inside, grads), rtol=1e-5)


def test_learning_rate_placement_differs_once_the_rate_changes():
    grads = {"w": jnp.ones((3, 1))}
    schedule = lambda k: jnp.where(k == 0, 1.0, 0.0)  # noqa: E731
    outside = _outputs(gradtx.sgd(schedule, momentum=0.5), grads)["w"][:, 0]
    inside = _outputs(gradtx.sgd(schedule, momentum=0.5, learning_rate_in_velocity=True), grads)
    # Outside: -eps_k * (sum of decayed g) is zero once eps_k = 0.
    np.testing.assert_allclose(outside, [-1.0, 0.0, 0.0])
    # Inside (the book's v <- a v - eps g): the velocity keeps coasting.
    np.testing.assert_allclose(inside["w"][:, 0], [-1.0, -0.5, -0.25])


def test_scale_by_schedule_sees_the_zero_based_step_count():
    seen = _outputs(gradtx.scale_by_schedule(lambda k: k.astype(jnp.float32)), {"w": jnp.ones(4)})
    np.testing.assert_allclose(seen["w"], [0.0, 1.0, 2.0, 3.0])


def test_scale_by_learning_rate_flips_the_sign_of_a_schedule_too():
    out = _outputs(gradtx.scale_by_learning_rate(lambda k: 0.5 * (k + 1)), {"w": jnp.ones(2)})
    np.testing.assert_allclose(out["w"], [-0.5, -1.0])
    ascent = _outputs(gradtx.scale_by_learning_rate(0.5, flip_sign=False), {"w": jnp.ones(1)})
    np.testing.assert_allclose(ascent["w"], [0.5])


def test_add_decayed_weights_mask_as_tree_or_function_spares_the_biases():
    params = {"w": jnp.full(2, 2.0), "b": jnp.full(2, 2.0)}
    grads = jax.tree.map(jnp.zeros_like, params)
    by_tree = gradtx.add_decayed_weights(0.5, mask={"w": True, "b": False})
    by_fn = gradtx.add_decayed_weights(0.5, mask=lambda p: {k: k != "b" for k in p})
    for tx in (by_tree, by_fn):
        out, _ = tx.update(grads, tx.init(params), params)
        np.testing.assert_allclose(out["w"], [1.0, 1.0])
        np.testing.assert_allclose(out["b"], [0.0, 0.0])


def test_add_decayed_weights_follows_a_schedule():
    params = {"w": jnp.ones(1)}
    tx = gradtx.add_decayed_weights(lambda k: 0.1 * (k + 1))
    state = tx.init(params)
    out1, state = tx.update({"w": jnp.zeros(1)}, state, params)
    out2, state = tx.update({"w": jnp.zeros(1)}, state, params)
    np.testing.assert_allclose([out1["w"][0], out2["w"][0]], [0.1, 0.2], rtol=1e-6)


def test_add_decayed_weights_without_params_says_what_it_needs():
    tx = gradtx.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match="needs the params"):
        tx.update({"w": jnp.ones(1)}, tx.init({"w": jnp.ones(1)}))


def test_adamw_is_adam_plus_decoupled_decay_times_the_rate():
    grads = _gradients(5)
    params = jax.tree.map(lambda g: jnp.ones_like(g[0]), grads)
    adam = _outputs(gradtx.adam(0.01), grads, params)
    adamw = _outputs(gradtx.adamw(0.01, weight_decay=0.1), grads, params)
    expected = jax.tree.map(lambda u, p: u - 0.01 * 0.1 * p, adam, params)
    _assert_trees_close(adamw, expected, rtol=1e-5)


def test_adadelta_without_a_rate_descends_on_a_quadratic():
    loss = lambda w: jnp.sum((w - 3.0) ** 2)  # noqa: E731
    tx = gradtx.adadelta(rho=0.95)
    w = jnp.zeros(3)
    state = tx.init(w)
    for _ in range(50):
        updates, state = tx.update(jax.grad(loss)(w), state, w)
        assert np.all(np.asarray(updates) > 0)  # towards the minimum at 3
        w = gradtx.apply_updates(w, updates)
    assert loss(w) < loss(jnp.zeros(3))


def test_scale_by_adam_nesterov_equals_nadam_with_constant_momentum():
    grads = _gradients(6)
    _assert_trees_close(
        _outputs(gradtx.scale_by_adam(nesterov=True), grads),
        _outputs(gradtx.scale_by_nadam(momentum_decay=None), grads),
        rtol=1e-5,
    )


def test_eps_hat_moves_eps_onto_the_uncorrected_root():
    grads = {"w": jnp.full((1, 1), 1e-3)}
    plain = _outputs(gradtx.scale_by_adam(b2=0.999, eps=1e-3), grads)["w"][0, 0]
    hat = _outputs(gradtx.scale_by_adam(b2=0.999, eps=1e-3, eps_hat=True), grads)["w"][0, 0]
    # t=1: m_hat = v_hat^(1/2) = 1e-3. plain: 1e-3 / (1e-3 + 1e-3) = 0.5;
    # eps-hat: sqrt(1 - b2) * m_hat / (sqrt(v) + eps) with sqrt(v) = sqrt(1 - b2) * 1e-3.
    c = np.sqrt(1 - 0.999)
    np.testing.assert_allclose(plain, 0.5, rtol=1e-5)
    np.testing.assert_allclose(hat, c * 1e-3 / (c * 1e-3 + 1e-3), rtol=1e-5)


@pytest.mark.parametrize(
    "tx",
    [
        gradtx.adam(0.1, eps=0.0),
        gradtx.adam(0.1, eps=0.0, eps_hat=True),
        gradtx.amsgrad(0.1, eps=0.0),
        gradtx.nadam(0.1, eps=0.0),
        gradtx.rmsprop(0.1, eps=0.0),
        gradtx.adagrad(0.1, initial_accumulator_value=0.0, eps=0.0),
        gradtx.adamax(0.1, eps=0.0),
    ],
    ids=["adam", "adam-eps-hat", "amsgrad", "nadam", "rmsprop", "adagrad", "adamax"],
)
def test_eps_zero_with_an_all_zero_gradient_steps_zero_not_nan(tx):
    out = _outputs(tx, {"w": jnp.zeros((3, 2))})["w"]
    np.testing.assert_array_equal(np.asarray(out), 0.0)


def test_a_missing_learning_rate_is_refused_by_name():
    with pytest.raises(TypeError, match="learning_rate must be a real number .* or a schedule"):
        gradtx.scale_by_learning_rate(None)
    with pytest.raises(TypeError, match="adam: learning_rate .* got None"):
        gradtx.adam(None)
