"""Polyak-Ruppert and EMA averaging of the params: ``average_params`` / ``averaged_params``.

The averages are checked against numpy, computed from an independent float64
trajectory of the same optimizer (``tests/reference/lookahead.py``'s inner
optimizers on the recorded gradients) and, to isolate the averaging arithmetic,
from gradtx's own iterates. Tolerances: as in
``tests/test_reference_trajectories.py`` (1e-10 float64, 1e-5 float32, relative
to ``|reference| + 1``); an average of float32 iterates adds one rounding per
step to numbers of the params' scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.optimizers.averaging import AverageParamsState, average_params, averaged_params
from gradtx.optimizers.lookahead import lookahead, lookahead_slow_params
from tests.reference import lookahead as R

NUM_STEPS = 120
RTOL = {"float64": 1e-10, "float32": 1e-5}
SHAPES = {"layer": {"b": (5,), "w": (3, 4)}, "temperature": ()}
TREEDEF = jax.tree.structure(SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def _unflatten(leaves):
    return jax.tree.unflatten(TREEDEF, list(leaves))


def _make_data(seed: int = 19920701):
    rng = np.random.default_rng(seed)
    shapes = jax.tree.leaves(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
    theta0, grads = [], []
    for i, shape in enumerate(shapes):
        g = rng.normal(size=(NUM_STEPS, *shape)) * (0.3, 2.0, 1.0)[i % 3] + 0.3
        theta0.append(rng.normal(size=shape).astype(np.float32).astype(np.float64))
        grads.append(g.astype(np.float32).astype(np.float64))
    return theta0, grads


THETA0, GRADS = _make_data()
GRADS_BY_STEP = [[g[k] for g in GRADS] for k in range(NUM_STEPS)]


# ---------------------------------------------------------------- numpy averages


def numpy_average(trajectory, decay, debias):
    """The average after every step of ``trajectory`` (row t = theta_t), row 0 = theta_0.

    Written from the definitions, not the recurrence: the uniform mean of rows
    1..t; the EMA ``beta^t theta_0 + (1 - beta) sum_i beta^(t-i) theta_i``; its
    debiased form ``(1 - beta) sum_i beta^(t-i) theta_i / (1 - beta^t)``.
    """
    out = [trajectory[0]]
    for t in range(1, len(trajectory)):
        rows = trajectory[1 : t + 1]
        if decay is None:
            out.append(rows.mean(axis=0))
            continue
        weights = (1 - decay) * decay ** np.arange(t - 1, -1, -1.0)
        weighted = np.tensordot(weights, rows, axes=1)
        if debias:
            out.append(weighted / (1 - decay**t))
        else:
            out.append(decay**t * trajectory[0] + weighted)
    return np.stack(out)


def scan_run(tx, params, grads_stacked):
    """``(params, averaged params)`` after every step, one jitted scan."""

    def step(carry, g):
        p, state = carry
        updates, state = tx.update(g, state, p)
        p = gradtx.apply_updates(p, updates)
        return (p, state), (p, averaged_params(state))

    @jax.jit
    def run(params, grads_stacked):
        return jax.lax.scan(step, (params, tx.init(params)), grads_stacked)[1]

    return run(params, grads_stacked)


def with_start(tree):
    return [
        np.concatenate([np.asarray(t0, np.float64)[None], np.asarray(r, np.float64)])
        for t0, r in zip(THETA0, jax.tree.leaves(tree), strict=True)
    ]


def deviation(got, want):
    return max(
        float(np.max(np.abs(g - w) / (np.abs(w) + 1))) for g, w in zip(got, want, strict=True)
    )


INNERS = {
    "momentum": (lambda: gradtx.sgd(0.02, momentum=0.9), lambda: R.SGD(0.02, mu=0.9)),
    "adam": (lambda: gradtx.adam(0.05), lambda: R.Adam(0.05)),
    "rmsprop": (lambda: gradtx.rmsprop(0.01), lambda: R.RMSProp(0.01)),
}
AVERAGES = [(None, False), (0.9, False), (0.99, True), (0.0, False)]
RUNS = [
    (inner, decay, debias, dtype)
    for inner, (decay, debias) in zip(
        ["momentum", "adam", "rmsprop", "adam"], AVERAGES, strict=True
    )
    for dtype in ("float64", "float32")
] + [("momentum", 0.95, True, "float32"), ("rmsprop", None, False, "float64")]


def gradtx_run(inner, decay, debias, dtype):
    with jax.enable_x64(dtype == "float64"):
        params = _unflatten([jnp.asarray(t, dtype) for t in THETA0])
        grads = _unflatten([jnp.asarray(g, dtype) for g in GRADS])
        tx = gradtx.chain(INNERS[inner][0](), average_params(decay, debias))
        fast, average = scan_run(tx, params, grads)
        assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree.leaves(average))
        return with_start(fast), with_start(average)


# The float64 average of gradtx's own iterates: the averaging arithmetic alone.
OWN_TOL = {"float64": 1e-13, "float32": 1e-6}


@pytest.mark.parametrize("inner, decay, debias, dtype", RUNS)
def test_average_equals_numpy_average_of_the_param_trajectory(inner, decay, debias, dtype):
    params, average = gradtx_run(inner, decay, debias, dtype)
    own = [numpy_average(leaf, decay, debias) for leaf in params]
    assert deviation(average, own) <= OWN_TOL[dtype]
    reference = R.run(THETA0, GRADS_BY_STEP, INNERS[inner][1]())
    want = [numpy_average(leaf, decay, debias) for leaf in reference]
    # The average is not the last iterate (unless decay is 0): it did something.
    gap = deviation(want, reference)
    assert gap == 0.0 if decay == 0.0 else gap > 1e-2
    if dtype == "float64":
        # And end to end against the independent float64 run. (In float32 the
        # iterates alone stray up to ~1.2e-5 from it on this drifting data: Adam's
        # first steps use fl(1 - b2) in the moment but 1 - fl(b2)^t in the
        # correction, 1.3e-5 apart for b2 = 0.999; the optimizers' own reference
        # tests own that bound.)
        assert deviation(params, reference) <= RTOL[dtype]
        assert deviation(average, want) <= RTOL[dtype]


def test_uniform_average_of_lookahead_iterates_includes_the_sync_jumps():
    """Placed after lookahead, the average sees the final updates (the jumps too)."""
    params = _unflatten([jnp.asarray(t, jnp.float32) for t in THETA0])
    grads = _unflatten([jnp.asarray(g, jnp.float32) for g in GRADS])
    tx = gradtx.chain(lookahead(gradtx.adam(0.05), 5, 0.5), average_params())
    fast, average = scan_run(tx, params, grads)
    fast, average = with_start(fast), with_start(average)
    want = [numpy_average(leaf, None, False) for leaf in fast]
    assert deviation(average, want) <= 1e-6


def test_updates_pass_through_unchanged():
    params = _unflatten([jnp.asarray(t, jnp.float32) for t in THETA0])
    grads = _unflatten([jnp.asarray(g[:20], jnp.float32) for g in GRADS])
    with_average = scan_run(gradtx.chain(gradtx.adam(0.05), average_params(0.9)), params, grads)
    plain = scan_run(gradtx.chain(gradtx.adam(0.05), average_params(None)), params, grads)
    jax.tree.map(np.testing.assert_array_equal, with_average[0], plain[0])
    tx = average_params(0.5)
    g = {"w": jnp.asarray([1.0, -2.0])}
    out, _ = tx.update(g, tx.init(g), g)
    assert out is g


def test_ema_without_debias_equals_optax_incremental_update():
    """Optax's function for the same average, with step_size = 1 - decay."""
    params = _unflatten([jnp.asarray(t, jnp.float32) for t in THETA0])
    grads = _unflatten([jnp.asarray(g[:50], jnp.float32) for g in GRADS])
    fast, average = scan_run(gradtx.chain(gradtx.adam(0.05), average_params(0.8)), params, grads)
    ema = params
    for t in range(50):
        ema = optax.incremental_update(jax.tree.map(lambda x, t=t: x[t], fast), ema, 0.2)
        jax.tree.map(
            lambda a, b, t=t: np.testing.assert_allclose(a[t], b, rtol=1e-6, atol=1e-7),
            average,
            ema,
        )


def test_accumulator_dtype_keeps_a_bfloat16_run_averaged_in_float32():
    params = {"w": jnp.zeros(64, jnp.bfloat16)}
    # Steps in multiples of 1/8 and a walk that stays within +-32: every iterate is
    # exact in bfloat16 (8 significant bits), so only the accumulator rounds.
    rng = np.random.default_rng(0)
    steps = np.round(rng.normal(size=(200, 64)) * 4) / 8
    assert np.max(np.abs(np.cumsum(steps, axis=0))) < 32
    steps = jnp.asarray(steps, jnp.bfloat16)

    def run(accumulator_dtype):
        tx = average_params(0.99, debias=True, accumulator_dtype=accumulator_dtype)

        def step(carry, s):  # iterates: a random walk of bfloat16 numbers
            p, state = carry
            _, state = tx.update({"w": s}, state, p)
            return (gradtx.apply_updates(p, {"w": s}), state), None

        (p, state), _ = jax.jit(lambda: jax.lax.scan(step, (params, tx.init(params)), steps))()
        return averaged_params(state)["w"], p

    wide, _ = run(jnp.float32)
    narrow, _ = run(None)
    assert wide.dtype == jnp.float32 and narrow.dtype == jnp.bfloat16
    iterates = np.concatenate([np.zeros((1, 64)), np.cumsum(np.asarray(steps, np.float64), 0)])
    want = numpy_average(iterates, 0.99, True)[-1]
    wide_error = float(np.max(np.abs(np.asarray(wide, np.float64) - want)))
    narrow_error = float(np.max(np.abs(np.asarray(narrow, np.float64) - want)))
    assert wide_error < 1e-4 and narrow_error > 1e-2, (wide_error, narrow_error)


def test_complex_params_are_averaged_as_complex_numbers():
    rng = np.random.default_rng(1)
    steps = (rng.normal(size=(10, 3)) + 1j * rng.normal(size=(10, 3))).astype(np.complex64)
    params = jnp.zeros(3, jnp.complex64)
    tx = average_params()
    state = tx.init(params)
    for s in steps:
        _, state = tx.update(jnp.asarray(s), state, params)
        params = params + s
    want = np.cumsum(steps.astype(np.complex128), axis=0).mean(axis=0)
    np.testing.assert_allclose(averaged_params(state), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="imaginary"):
        average_params(accumulator_dtype=jnp.float32).init(params)


def test_none_leaves_and_empty_trees_pass_through():
    params = {"w": jnp.ones(2), "frozen": None}
    tx = average_params(0.5)
    updates, state = tx.update({"w": jnp.ones(2), "frozen": None}, tx.init(params), params)
    assert updates["frozen"] is None and averaged_params(state)["frozen"] is None
    np.testing.assert_allclose(averaged_params(state)["w"], [1.5, 1.5])
    empty_state = tx.init({})
    assert tx.update({}, empty_state, {})[0] == {}


def test_jit_and_vmap_over_decay_equal_separate_runs():
    params = _unflatten([jnp.asarray(t, jnp.float32) for t in THETA0])
    grads = _unflatten([jnp.asarray(g[:12], jnp.float32) for g in GRADS])

    def final(decay):
        tx = gradtx.chain(gradtx.sgd(0.05), average_params(decay, debias=True))

        def body(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            return (gradtx.apply_updates(p, u), s), None

        (_, state), _ = jax.lax.scan(body, (params, tx.init(params)), grads)
        return averaged_params(state)

    decays = (0.0, 0.5, 0.9)
    batched = jax.jit(jax.vmap(final))(jnp.asarray(decays))
    for i, d in enumerate(decays):
        jax.tree.map(
            lambda a, b, i=i: np.testing.assert_allclose(a[i], b, 1e-6, 1e-7),
            batched,
            final(d),
        )


def test_averaged_params_is_found_in_chains_and_named_chains():
    params = {"w": jnp.ones(2)}
    for tx in [
        gradtx.chain(gradtx.sgd(0.1), average_params()),
        gradtx.named_chain(("opt", gradtx.adam(0.1)), ("avg", average_params(0.9))),
        average_params(),
    ]:
        state = tx.init(params)
        np.testing.assert_array_equal(averaged_params(state)["w"], [1.0, 1.0])
    with pytest.raises(ValueError, match="holds no AverageParamsState"):
        averaged_params(gradtx.adam(0.1).init(params))
    two = gradtx.chain(average_params(), average_params(0.9))
    with pytest.raises(ValueError, match="holds 2 AverageParamsState"):
        averaged_params(two.init(params))
    assert isinstance(two.init(params)[0], AverageParamsState)


def test_update_without_params_says_what_it_needs():
    tx = average_params()
    with pytest.raises(ValueError, match="average_params: update needs the params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"decay": 1.0}, r"decay must be in \[0, 1\), got 1.0"),
        ({"decay": -0.1}, r"decay .* got -0.1"),
        ({"decay": float("nan")}, r"decay .* got nan"),
        ({"accumulator_dtype": jnp.int32}, r"accumulator_dtype must be None or a floating"),
    ],
    ids=str,
)
def test_bad_hyperparameters_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        average_params(**kwargs)


def test_state_structure_and_dtypes_are_stable_and_init_copies():
    params = {"w": jnp.ones(3), "s": jnp.asarray(2.0)}
    tx = average_params(0.9, accumulator_dtype=jnp.float32)
    state = tx.init(params)
    assert state.average["w"] is not params["w"]
    step = jax.jit(tx.update, donate_argnums=1)
    new_state = state
    for _ in range(2):
        _, new_state = step(params, new_state, params)
    assert jax.tree.structure(new_state) == jax.tree.structure(tx.init(params))
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(tx.init(params)), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(params["w"], np.ones(3))  # survived the donation


def test_flax_nnx_optimizer_with_lookahead_and_averaging():
    """Plain params in NNX: no wrapper; both readers work on the optimizer's state."""
    from flax import nnx

    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    tx = gradtx.chain(lookahead(gradtx.sgd(0.1), 2, 0.5), average_params())
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    seen = [nnx.as_pure(nnx.state(model, nnx.Param))]
    for _ in range(4):
        optimizer.update(model, nnx.grad(lambda m: jnp.mean((m(x) - 1) ** 2))(model))
        seen.append(nnx.as_pure(nnx.state(model, nnx.Param)))
    state = nnx.as_pure(optimizer.opt_state)
    # Step 4 is a sync: the params are the slow weights (to the rounding of
    # params + update); the average is that of the iterates of steps 1-4.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, 2e-7, 1e-7),
        lookahead_slow_params(state, seen[-1]),
        seen[-1],
    )
    mean = jax.tree.map(lambda *xs: sum(xs[1:]) / 4, *seen)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, 1e-6, 1e-7), averaged_params(state), mean
    )
