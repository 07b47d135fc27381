"""Optax's small blocks, wrappers and functions on values, against Optax and at their edges.

The trajectories of tests/test_optax_parity.py cover the blocks on a finite
problem. Here, each against Optax's own implementation over 120 steps of random
gradients on a tree of four leaves (a matrix, a vector, a 3-D array and a
scalar), in float32 and float64, all runs of a dtype traced into one jitted
program:

* ``zero_nans`` and ``apply_if_finite``-free runs with NaNs and infinities in the
  gradients, ``found_nan`` flag by flag;
* ``apply_every`` (its count and sums), ``snapshot``'s measurements,
  ``conditionally_mask`` / ``conditionally_transform`` with the condition reading
  an extra argument, ``inject_stateful_hyperparams`` with a schedule driven by
  the loss;
* ``skip_not_finite`` / ``skip_large_updates`` as the ``should_skip_update_fn``
  of ``optax.MultiSteps``;
* ``incremental_update`` and ``periodic_update`` tracking a target network.

Then the edges: the deliberate differences (``apply_every`` after a non-finite
gradient, complex norms in ``skip_large_updates``), ``scale_gradient``'s backward
pass, the extra-argument types, ``MaskedNode``, freezing and the errors.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

NUM_STEPS = 120
# As tests/test_optax_parity.py: a few float32 ulps of the trajectory's scale.
TOL = {"float32": dict(rtol=1e-6, atol=5e-7), "float64": dict(rtol=1e-12, atol=1e-13)}
SHAPES = {"w": (3, 4), "b": (4,), "t": (2, 2, 2), "s": ()}


def _data(seed=5, bad_every=None):
    """Start, gradients (one row per step) and losses, float32-representable float64.

    With ``bad_every=n``, every n-th step's gradient holds a NaN in one leaf and an
    infinity in another.
    """
    rng = np.random.default_rng(seed)
    theta = {k: rng.normal(size=s).astype(np.float32).astype(np.float64) for k, s in SHAPES.items()}
    grads = {
        k: rng.normal(size=(NUM_STEPS, *s)).astype(np.float32).astype(np.float64)
        for k, s in SHAPES.items()
    }
    if bad_every:
        for step in range(bad_every - 1, NUM_STEPS, bad_every):
            grads["w"][step].flat[step % 12] = np.nan
            grads["b"][step][step % 4] = np.inf if step % 2 else np.nan
    losses = np.abs(rng.normal(size=NUM_STEPS)).cumsum()[::-1].copy() / NUM_STEPS
    losses[::7] += 0.5  # the loss goes up now and then
    return theta, grads, losses


def _cast(tree, dtype):
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)


def _path(tx, theta, grads, losses, record=lambda state: ()):
    """Params after every step (and ``record(state)``), feeding the loss as ``value``."""

    def body(carry, inputs):
        p, state = carry
        g, value = inputs
        updates, state = tx.update(g, state, p, value=value)
        p = jax.tree.map(lambda a, u: a + u, p, updates)
        return (p, state), (p, record(state))

    return jax.lax.scan(body, (theta, tx.init(theta)), (grads, losses))[1]


def _all_paths(pairs, dtype, **data):
    """For each ``(ours, theirs, record)``, both paths, in one jitted program."""
    theta, grads, losses = (_cast(x, dtype) for x in _data(**data))

    @jax.jit
    def run(theta, grads, losses):
        return [
            (_path(a(), theta, grads, losses, rec), _path(b(), theta, grads, losses, rec))
            for a, b, rec in pairs
        ]

    return jax.device_get(run(theta, grads, losses))


def _assert_close(ours, theirs, dtype):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL[dtype])


# ---------------------------------------------------------------- against Optax


class LossDrivenRate:
    """A stateful schedule (Optax's protocol): the rate halves when the loss goes up."""

    def init(self):
        return {"rate": jnp.asarray(0.05, jnp.float32), "last": jnp.asarray(np.inf, jnp.float32)}

    def update(self, state, value=None, **extra_args):
        value = jnp.asarray(value, state["last"].dtype)
        rate = jnp.where(value > state["last"], state["rate"] / 2, state["rate"])
        return {"rate": rate, "last": value}

    def __call__(self, state, **extra_args):
        return state["rate"]


def _every_third(step):
    return step % 3 == 0


def _below(step, value=None):
    return value < 0.5


def _nan_flags(state):
    return state[0].found_nan


PAIRS = {
    "zero_nans": (
        lambda: gradtx.chain(gradtx.zero_nans(), gradtx.clip(1.0), gradtx.sgd(0.05)),
        lambda: optax.chain(optax.zero_nans(), optax.clip(1.0), optax.sgd(0.05)),
        _nan_flags,
    ),
    "apply_every": (
        lambda: gradtx.chain(gradtx.apply_every(4), gradtx.sgd(0.02)),
        lambda: optax.chain(optax.apply_every(4), optax.sgd(0.02)),
        lambda state: (state[0].count, state[0].grad_acc),
    ),
    "snapshot": (
        lambda: gradtx.chain(gradtx.adam(0.05), gradtx.snapshot("n", gradtx.tree.global_norm)),
        lambda: optax.chain(optax.adam(0.05), optax.snapshot("n", optax.tree.norm)),
        lambda state: state[1].measurement["n"],
    ),
    "conditionally_mask-on-value": (
        lambda: gradtx.conditionally_mask(gradtx.adam(0.05), _below, forward_extra_args=True),
        lambda: optax.conditionally_mask(optax.adam(0.05), _below, forward_extra_args=True),
        lambda state: state.step,
    ),
    "conditionally_transform-every-third": (
        lambda: gradtx.chain(
            gradtx.conditionally_transform(gradtx.trace(0.9), _every_third), gradtx.sgd(0.05)
        ),
        lambda: optax.chain(
            optax.conditionally_transform(optax.trace(0.9), _every_third), optax.sgd(0.05)
        ),
        lambda state: state[0].step,
    ),
    "inject_stateful_hyperparams-on-value": (
        lambda: gradtx.inject_stateful_hyperparams(gradtx.sgd)(
            learning_rate=LossDrivenRate(), momentum=0.5
        ),
        lambda: optax.inject_hyperparams(optax.sgd)(learning_rate=LossDrivenRate(), momentum=0.5),
        lambda state: state.hyperparams["learning_rate"],
    ),
}


@functools.cache
def _paths(dtype):
    with jax.enable_x64(dtype == "float64"):
        paths = _all_paths(list(PAIRS.values()), dtype, bad_every=None)
        nan_paths = _all_paths([PAIRS["zero_nans"]], dtype, bad_every=5)
    return dict(zip(PAIRS, paths, strict=True)), nan_paths[0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(PAIRS))
def test_same_trajectory_and_state_readings_as_optax(name, dtype):
    ours, theirs = _paths(dtype)[0][name]
    _assert_close(ours, theirs, dtype)
    moved = max(float(np.max(np.abs(p[-1] - p[0]))) for p in jax.tree.leaves(ours[0]))
    assert moved > 0.05, name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_nans_with_nans_and_infinities_against_optax(dtype):
    (ours, our_flags), (theirs, their_flags) = _paths(dtype)[1]
    _assert_close(ours, theirs, dtype)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(ours))
    steps = np.arange(NUM_STEPS)
    bad = (steps + 1) % 5 == 0
    np.testing.assert_array_equal(our_flags["w"], bad)
    np.testing.assert_array_equal(our_flags["b"], bad & (steps % 2 == 0))  # inf is not NaN
    np.testing.assert_array_equal(our_flags["t"], False)
    jax.tree.map(np.testing.assert_array_equal, our_flags, their_flags)


def test_the_readings_are_not_vacuous():
    paths = _paths("float32")[0]
    count, _ = paths["apply_every"][0][1]
    np.testing.assert_array_equal(count, (np.arange(NUM_STEPS) + 1) % 4)
    rates = paths["inject_stateful_hyperparams-on-value"][0][1]
    assert len(set(np.asarray(rates).tolist())) > 2  # the loss went up several times
    step = paths["conditionally_mask-on-value"][0][1]
    np.testing.assert_array_equal(step, np.arange(1, NUM_STEPS + 1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_skip_predicates_drive_optax_multisteps_as_optax_own(dtype):
    """gradtx's predicates plug into ``optax.MultiSteps`` and skip what Optax's skip."""
    large = functools.partial(gradtx.skip_large_updates, max_squared_norm=40.0)
    optax_large = functools.partial(optax.skip_large_updates, max_squared_norm=40.0)
    pairs = [
        (
            lambda fn=fn: optax.MultiSteps(optax.adam(0.05), 2, should_skip_update_fn=fn),
            lambda fn=theirs: optax.MultiSteps(optax.adam(0.05), 2, should_skip_update_fn=fn),
            lambda state: (state.gradient_step, state.skip_state["should_skip"]),
        )
        for fn, theirs in (
            (gradtx.skip_not_finite, optax.skip_not_finite),
            (large, optax_large),
        )
    ]
    with jax.enable_x64(dtype == "float64"):
        results = _all_paths(pairs, dtype, bad_every=7)
    for (ours, ours_rec), (theirs, theirs_rec) in results:
        _assert_close(ours, theirs, dtype)
        np.testing.assert_array_equal(ours_rec[1], theirs_rec[1])
        assert 0 < int(np.sum(ours_rec[1])) < NUM_STEPS  # some skipped, not all
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(ours))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_target_networks_by_incremental_and_periodic_update_against_optax(dtype):
    with jax.enable_x64(dtype == "float64"):
        theta, grads, _ = (_cast(x, dtype) for x in _data())

        def run(incremental, periodic):
            def body(carry, g):
                p, soft, hard, k = carry
                p = jax.tree.map(lambda a, b: a - 0.05 * b, p, g)
                return (p, incremental(p, soft, 0.1), periodic(p, hard, k, 10), k + 1), (soft, hard)

            start = (theta, theta, theta, jnp.zeros([], jnp.int32))
            return jax.lax.scan(body, start, grads)[1]

        ours = jax.jit(lambda: run(gradtx.incremental_update, gradtx.periodic_update))()
        theirs = jax.jit(lambda: run(optax.incremental_update, optax.periodic_update))()
        _assert_close(ours, theirs, dtype)
        hard = ours[1]["b"]
        changes = np.flatnonzero(np.any(np.diff(np.asarray(hard), axis=0) != 0, axis=1)) + 1
        # Row r holds the copy before step r: refreshed at steps 0, 10, 20, ...
        np.testing.assert_array_equal(changes, np.arange(1, NUM_STEPS, 10))


# ---------------------------------------------------------------- apply_every


def test_apply_every_emits_the_sum_of_each_group_and_counts_modulo_k():
    tx = gradtx.apply_every(3)
    state = tx.init({"a": jnp.zeros(2)})
    outs, counts = [], []
    for k in range(7):
        out, state = tx.update({"a": jnp.full(2, float(k + 1))}, state)
        outs.append(float(out["a"][0]))
        counts.append(int(state.count))
    assert outs == [0, 0, 6, 0, 0, 15, 0]
    assert counts == [1, 2, 0, 1, 2, 0, 1]
    one = gradtx.apply_every(1)
    out, _ = one.update({"a": jnp.full(2, 5.0)}, one.init({"a": jnp.zeros(2)}))
    np.testing.assert_array_equal(out["a"], 5.0)


def test_apply_every_recovers_after_a_non_finite_gradient_where_optax_stays_nan():
    grads = [jnp.array([1.0]), jnp.array([np.inf]), jnp.array([2.0]), jnp.array([3.0])]
    ours, theirs = gradtx.apply_every(2), optax.apply_every(2)
    s_ours, s_theirs = ours.init(jnp.zeros(1)), theirs.init(jnp.zeros(1))
    got, want = [], []
    for g in grads:
        u, s_ours = ours.update(g, s_ours)
        v, s_theirs = theirs.update(g, s_theirs)
        got.append(float(u[0]))
        want.append(float(v[0]))
    assert got == [0.0, np.inf, 0.0, 5.0]  # the bad group emits inf, the next is clean
    assert np.isnan(want[2]) and np.isnan(want[3])  # 0 * inf poisons Optax's sum


def test_apply_every_keeps_the_gradient_dtype_and_sums_low_precision_in_float32():
    tx = gradtx.apply_every(2)
    params = jnp.zeros(3, jnp.bfloat16)
    state = tx.init(params)
    assert state.grad_acc.dtype == jnp.float32
    u, state = tx.update(jnp.full(3, 256.0, jnp.bfloat16), state)
    u, state = tx.update(jnp.full(3, 1.0, jnp.bfloat16), state)
    assert u.dtype == jnp.bfloat16 and float(state.grad_acc[0]) == 257.0


# ---------------------------------------------------------------- skip predicates


def test_skip_not_finite_counts_nan_and_inf_elements_and_complex_parts():
    g = {"a": jnp.array([1.0, np.nan, np.inf]), "c": jnp.array([1 + 1j, complex(0, np.inf)])}
    skip, info = gradtx.skip_not_finite(g, 0, None)
    assert bool(skip) and int(info["num_not_finite"]) == 3
    assert info["num_not_finite"].dtype == jnp.int32
    skip, info = jax.jit(gradtx.skip_not_finite)({"a": jnp.ones(2)}, 0, None)
    assert not bool(skip) and int(info["num_not_finite"]) == 0
    skip, info = gradtx.skip_not_finite({}, 0, None)
    assert not bool(skip) and info["num_not_finite"].dtype == jnp.int32


def test_skip_large_updates_skips_nan_inf_and_the_bound_itself():
    ok = jnp.array([3.0, 4.0])
    assert not bool(gradtx.skip_large_updates(ok, 0, None, 25.5)[0])
    assert bool(gradtx.skip_large_updates(ok, 0, None, 25.0)[0])  # not < bound
    assert bool(gradtx.skip_large_updates(jnp.array([np.nan]), 0, None, np.inf)[0])
    assert bool(gradtx.skip_large_updates(jnp.array([np.inf]), 0, None, 1e30)[0])
    assert not bool(gradtx.skip_large_updates(ok, 0, None, np.inf)[0])
    skip, info = jax.jit(gradtx.skip_large_updates)(ok, 0, None, jnp.float32(30.0))
    assert not bool(skip) and float(info["norm_squared"]) == 25.0


def test_skip_large_updates_measures_complex_magnitudes():
    g = jnp.array([3j, 4.0 + 0j])  # |g|^2 sums to 25; Optax's g**2 gives 7 + 0j
    skip, info = gradtx.skip_large_updates(g, 0, None, 10.0)
    assert bool(skip) and float(info["norm_squared"]) == 25.0
    their_skip, _ = optax.skip_large_updates(g, 0, None, 10.0)
    assert not bool(their_skip)


# ---------------------------------------------------------------- conditions


def test_a_turned_down_step_keeps_the_inner_state_and_counts():
    mask = gradtx.conditionally_mask(gradtx.adam(0.1), lambda step: step == 0)
    params = jnp.zeros(2)
    state = mask.init(params)
    _, state = mask.update(jnp.ones(2), state)
    inner_after_one = state.inner_state
    out, state = mask.update(jnp.ones(2), state)
    np.testing.assert_array_equal(out, 0.0)
    jax.tree.map(np.testing.assert_array_equal, state.inner_state, inner_after_one)
    assert int(state.step) == 2
    passed = gradtx.conditionally_transform(gradtx.scale(3.0), lambda step: step > 0)
    out, _ = passed.update(jnp.full(2, 2.0, jnp.bfloat16), passed.init(params))
    assert out.dtype == jnp.bfloat16 and float(out[0]) == 2.0


def test_jitted_and_eager_conditions_agree_and_integers_count_as_truth():
    tx = gradtx.conditionally_mask(gradtx.sgd(0.1, 0.9), lambda step: step % 2)
    params = jnp.zeros(2)
    eager_state, jit_state = tx.init(params), tx.init(params)
    step = jax.jit(tx.update)
    for k in range(4):
        g = jnp.full(2, float(k + 1))
        eager, eager_state = tx.update(g, eager_state)
        jitted, jit_state = step(g, jit_state)
        np.testing.assert_allclose(eager, jitted, rtol=1e-6)
        assert bool(jnp.all(eager == 0)) == (k % 2 == 0)


def test_extra_args_reach_the_inner_and_only_named_ones_the_condition():
    seen = {}

    def condition(step, value):
        seen["value"] = value
        return value > 1.0

    tx = gradtx.conditionally_transform(
        gradtx.reduce_on_plateau(patience=1), condition, forward_extra_args=True
    )
    state = tx.init(jnp.zeros(2))
    out, state = tx.update(jnp.ones(2), state, value=2.0, other="ignored")
    assert seen["value"] == 2.0
    assert float(state.inner_state.best_value) == 2.0  # reduce_on_plateau read value
    assert isinstance(tx, gradtx.GradientTransformationExtraArgs)


def test_a_condition_that_is_not_a_scalar_bool_is_refused():
    tx = gradtx.conditionally_mask(gradtx.sgd(0.1), lambda step: jnp.ones(2, bool))
    with pytest.raises(ValueError, match="must return a bool \\(or integer\\) scalar"):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
    tx = gradtx.conditionally_mask(gradtx.sgd(0.1), lambda step: 0.5)
    with pytest.raises(ValueError, match="got a float32 array of shape \\(\\)"):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))


# ---------------------------------------------------------------- freezing


def test_selective_transform_holds_no_state_for_frozen_leaves():
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    tx = gradtx.selective_transform(gradtx.adam(0.1), freeze_mask={"a": True, "b": False})
    state = tx.init(params)
    mu = state.inner_states["train"][0].mu
    assert mu["a"] is None and mu["b"].shape == (2,)
    out, _ = tx.update(params, state, params)
    np.testing.assert_array_equal(out["a"], 0.0)
    everything = gradtx.selective_transform(gradtx.adam(0.1), freeze_mask=True)
    out, _ = everything.update(params, everything.init(params), params)
    assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(out))
    by_rank = gradtx.freeze(lambda p: jax.tree.map(lambda x: x.size > 2, p))
    out, _ = by_rank.update(params, by_rank.init(params), params)
    np.testing.assert_array_equal(out["a"], 0.0)
    np.testing.assert_array_equal(out["b"], 1.0)


def test_freeze_takes_integer_leaves_with_float0_gradients():
    params = {"step": jnp.zeros((), jnp.int32), "w": jnp.ones(2)}
    grads = {"step": np.zeros((), jax.dtypes.float0), "w": jnp.ones(2)}
    tx = gradtx.chain(
        gradtx.freeze({"step": True, "w": False}),
        gradtx.masked(gradtx.sgd(0.1), {"step": False, "w": True}),
    )
    out, _ = tx.update(grads, tx.init(params), params)
    assert out["step"].dtype == jax.dtypes.float0
    np.testing.assert_allclose(out["w"], -0.1)


# ---------------------------------------------------------------- extra-argument types


def test_with_extra_args_support_drops_what_an_update_does_not_name():
    plain = optax.scale(2.0)  # update(updates, state, params=None)
    tx = gradtx.with_extra_args_support(plain)
    out, _ = tx.update(jnp.ones(2), tx.init(None), None, value=1.0, key=None)
    np.testing.assert_array_equal(out, 2.0)
    assert isinstance(tx, gradtx.GradientTransformationExtraArgs)
    assert gradtx.with_extra_args_support(tx) is tx

    def update(updates, state, params=None, *, value=None):  # names one extra arg
        return jax.tree.map(lambda u: u * value, updates), state

    named = gradtx.with_extra_args_support(gradtx.GradientTransformation(plain.init, update))
    out, _ = named.update(jnp.ones(2), named.init(None), None, value=3.0, other=1)
    np.testing.assert_array_equal(out, 3.0)  # Optax's would have dropped value


def test_optax_style_code_with_the_extra_args_types_runs_on_gradtx():
    def make(factor):
        def update(updates, state, params=None, **extra_args):
            scale = extra_args.get("value", 1.0) * factor
            return jax.tree.map(lambda u: u * scale, updates), state

        return gradtx.GradientTransformationExtraArgs(lambda p: gradtx.EmptyState(), update)

    tx = gradtx.chain(make(2.0), gradtx.with_extra_args_support(optax.sgd(0.5)))
    out, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), None, value=3.0)
    np.testing.assert_allclose(out, -3.0)
    # The same block inside an optax.chain, handed over as Optax's own type.
    theirs = optax.chain(optax.GradientTransformationExtraArgs(*make(2.0)), optax.sgd(0.5))
    out, _ = theirs.update(jnp.ones(2), theirs.init(jnp.zeros(2)), None, value=3.0)
    np.testing.assert_allclose(out, -3.0)


# ---------------------------------------------------------------- MaskedNode


def test_masked_node_is_an_empty_subtree_for_every_block_and_apply_updates():
    params = {"w": jnp.ones(2), "frozen": gradtx.MaskedNode()}
    assert jax.tree.leaves(gradtx.MaskedNode()) == []
    tx = gradtx.adam(0.1)
    state = tx.init(params)
    out, _ = tx.update(params, state, params)
    assert out["frozen"] == gradtx.MaskedNode()
    moved = gradtx.apply_updates(params, out)
    assert moved["frozen"] == gradtx.MaskedNode()
    # Optax's masked state holds Optax's MaskedNode; both are empty named tuples.
    opt_state = optax.masked(optax.adam(0.1), {"w": True, "b": False}).init(
        {"w": jnp.ones(2), "b": jnp.ones(2)}
    )
    assert isinstance(opt_state.inner_state[0].mu["b"], optax.MaskedNode)
    assert tuple(gradtx.MaskedNode()) == tuple(optax.MaskedNode()) == ()


# ---------------------------------------------------------------- scale_gradient


@pytest.mark.parametrize("scale", [0.0, 1.0, 0.25, -1.0])
def test_scale_gradient_scales_the_backward_pass_as_optax(scale):
    x = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}

    def loss(x, fn):
        y = fn(x, scale)
        return jnp.sum(y["a"] ** 2) + y["b"] ** 3

    ours = jax.grad(loss)(x, gradtx.scale_gradient)
    theirs = jax.grad(loss)(x, optax.scale_gradient)
    jax.tree.map(np.testing.assert_allclose, ours, theirs)
    np.testing.assert_allclose(ours["a"], scale * 2 * x["a"])
    forward = gradtx.scale_gradient(x, scale)
    jax.tree.map(np.testing.assert_array_equal, forward, x)


def test_scale_gradient_with_a_traced_scale_and_low_precision_cotangents():
    x = jnp.array([1.0, 2.0], jnp.bfloat16)

    @jax.jit
    def grad_at(scale):
        return jax.grad(lambda x: jnp.sum(gradtx.scale_gradient(x, scale)).astype(jnp.float32))(x)

    g = grad_at(jnp.float32(0.5))
    assert g.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(g, np.float32), 0.5)


# ---------------------------------------------------------------- functions on values


def test_incremental_and_periodic_update_keep_none_leaves_and_dtypes():
    new = {"a": jnp.ones(2, jnp.float32), "n": None}
    old = {"a": jnp.zeros(2, jnp.bfloat16), "n": None}
    out = gradtx.incremental_update(new, old, jnp.float32(0.25))
    assert out["n"] is None and out["a"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out["a"], np.float32), 0.25)
    both = {"a": jnp.ones(2)}, {"a": jnp.zeros(2)}
    np.testing.assert_array_equal(gradtx.periodic_update(*both, 0, 3)["a"], 1.0)
    np.testing.assert_array_equal(gradtx.periodic_update(*both, 4, 3)["a"], 0.0)
    traced = jax.jit(gradtx.periodic_update)(*both, jnp.int32(6), jnp.int32(3))
    np.testing.assert_array_equal(traced["a"], 1.0)


def test_inject_stateful_hyperparams_state_and_plain_schedules():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        optax.inject_stateful_hyperparams(optax.sgd)  # exists in Optax 0.2.8
    tx = gradtx.inject_stateful_hyperparams(gradtx.sgd)(
        learning_rate=LossDrivenRate(), momentum=lambda count: 0.5 * (count > 0)
    )
    state = tx.init(jnp.zeros(2))
    assert set(state.hyperparams) == {"learning_rate", "momentum"}
    assert set(state.hyperparams_states) == {"learning_rate"}
    for value in (1.0, 2.0, 0.5):
        _, state = tx.update(jnp.ones(2), state, value=value)
    assert float(state.hyperparams["learning_rate"]) == np.float32(0.025)  # halved at 2.0
    assert float(state.hyperparams["momentum"]) == 0.5 and int(state.count) == 3
    assert isinstance(tx, gradtx.GradientTransformationExtraArgs)


def test_wrapped_schedule_counts_its_own_steps_like_optaxs():
    """A plain schedule as a stateful one: the same rates as Optax's WrappedSchedule, jitted."""
    schedule = gradtx.schedules.warmup_cosine_decay_schedule(0.0, 1.0, 3, 10)
    ours = gradtx.inject_stateful_hyperparams(gradtx.sgd)(
        learning_rate=gradtx.schedules.WrappedSchedule(schedule)
    )
    theirs = optax.inject_stateful_hyperparams(optax.sgd)(
        learning_rate=optax.schedules.WrappedSchedule(schedule)
    )
    assert isinstance(gradtx.WrappedSchedule(schedule), gradtx.StatefulSchedule)
    assert not isinstance(schedule, gradtx.StatefulSchedule)
    params = jnp.zeros(3)

    @jax.jit
    def run_both():
        def step(carry, g):
            a, b = carry
            ua, a = ours.update(g, a, params)
            ub, b = theirs.update(g, b, params)
            return (a, b), (ua, ub)

        grads = jnp.linspace(-1.0, 1.0, 36).reshape(12, 3)
        return jax.lax.scan(step, (ours.init(params), theirs.init(params)), grads)[1]

    mine, optaxs = run_both()
    np.testing.assert_allclose(mine, optaxs, rtol=1e-6, atol=1e-7)
    assert float(jnp.max(jnp.abs(mine))) > 0.1  # the rate rose past the warm-up
    with pytest.raises(TypeError, match="WrappedSchedule: schedule_fn"):
        gradtx.WrappedSchedule(0.1)


def test_inject_hyperparams_given_a_stateful_schedule_injects_it_statefully():
    """Optax's inject_hyperparams accepts stateful schedules; gradtx's hands them on."""
    tx = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=LossDrivenRate())
    state = tx.init(jnp.zeros(2))
    assert isinstance(state, gradtx.InjectStatefulHyperparamsState)
    for value in (1.0, 2.0, 0.5):
        _, state = tx.update(jnp.ones(2), state, value=value)
    assert float(state.hyperparams["learning_rate"]) == np.float32(0.025)  # halved at 2.0
