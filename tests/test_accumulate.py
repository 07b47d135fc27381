"""``accumulate``: averaged micro-batches, Optax ``MultiSteps`` parity, errors.

Trajectory cases run a jitted ``lax.scan`` of 240 micro-steps (60 to 240 inner
steps), ``vmap``-ped over two learning rates, on a pytree of five leaves (a
scalar among them) fed a recorded sequence of random gradients, and compare the
parameters after every micro-step with ``tests/reference/wrappers.accumulate``
around the inner optimizer's numpy reference (the inner optimizer run on the
group means, the parameters standing still in between). Tolerances as in
tests/test_reference_trajectories.py: ``|gradtx - ref| <= rtol (|ref| + 1)``,
rtol 1e-10 (float64) and 1e-5 (float32).

Run ``python -m tests.reference.report_wrappers`` for the deviation table.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.transforms.accumulate import AccumulateState, accumulate, has_updated
from gradtx.transforms.conditional import apply_if_finite
from tests import reference as R
from tests.reference import wrappers as W
from tests.wrapper_harness import (
    IS_SHAPE,
    PARITY_TOL,
    RTOL,
    SHAPES,
    adam_ref,
    as_tree,
    momentum_ref,
    paths_of_all_cases,
    rmsprop_ref,
)

NUM_STEPS = 240
# Smaller than the other wrappers' (0.01, 0.05): up to 240 inner steps here, and
# float32 rounding grows with the distance the parameters travel.
RATES = (0.01, 0.03)


def _make_data(seed: int = 11):
    rng = np.random.default_rng(seed)
    theta0, grads = [], []
    for i, shape in enumerate(jax.tree.leaves(SHAPES, is_leaf=IS_SHAPE)):
        scale = (0.1, 3.0, 1.0)[i % 3]
        theta0.append(rng.normal(size=shape).astype(np.float32).astype(np.float64))
        # A slowly turning drift plus noise: the micro-batch gradients of one step
        # disagree, and the parameters wander but stay of order 1 (the scale the
        # tolerances are stated for).
        turning = np.cos(2 * np.pi * np.arange(NUM_STEPS) / 80).reshape(-1, *[1] * len(shape))
        drift = rng.normal(size=shape) * turning
        g = scale * (drift + 2.0 * rng.normal(size=(NUM_STEPS, *shape)))
        grads.append(g.astype(np.float32).astype(np.float64))
    return theta0, grads


THETA0, GRADS = _make_data()
GRADS_BY_STEP = [[g[k] for g in GRADS] for k in range(NUM_STEPS)]


def _inputs(dtype):
    return as_tree([jnp.asarray(x, dtype) for x in THETA0]), as_tree(
        [jnp.asarray(g, dtype) for g in GRADS]
    )


def scan_path(tx, theta, grads):
    """Params after each micro-step, and whether it was an inner step."""

    def body(carry, g):
        p, state = carry
        updates, state = tx.update(g, state, p)
        p = gradtx.apply_updates(p, updates)
        return (p, state), (p, has_updated(state))

    return jax.lax.scan(body, (theta, tx.init(theta)), grads)[1]


def batched_paths(make, dtype, rates=RATES):
    theta, grads = _inputs(dtype)
    run = jax.jit(jax.vmap(lambda rate: scan_path(make(rate), theta, grads)))
    return run(jnp.asarray(rates, dtype))


def deviation(path, reference):
    return max(
        float(np.max(np.abs(np.asarray(a, np.float64) - b[1:]) / (np.abs(b[1:]) + 1)))
        for a, b in zip(jax.tree.leaves(path), reference, strict=True)
    )


def adamw_ref(rate, lam=0.1):
    return functools.partial(
        R.adam.adamw, alpha=1.0, beta_1=0.9, beta_2=0.999, epsilon=1e-8, lam=lam, eta=rate
    )


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    every_k: int
    make: Callable[[float], gradtx.GradientTransformation]
    inner_reference: Callable[[float], Callable]
    method: str
    use_grad_mean: bool = True

    def __repr__(self):
        return self.id


CASES = [
    Case(
        "sgd_momentum_k2",
        2,
        lambda lr: accumulate(gradtx.sgd(lr, momentum=0.9), 2),
        momentum_ref,
        "accumulate(sgd momentum, 2)",
    ),
    Case("adam_k3", 3, lambda lr: accumulate(gradtx.adam(lr), 3), adam_ref, "accumulate(adam, 3)"),
    Case(
        "rmsprop_k4_sum",
        4,
        lambda lr: accumulate(gradtx.rmsprop(lr), 4, use_grad_mean=False),
        rmsprop_ref,
        "accumulate(rmsprop, 4, use_grad_mean=False)",
        use_grad_mean=False,
    ),
    Case(
        "optax_adamw_k2",
        2,
        lambda lr: accumulate(optax.adamw(lr, weight_decay=0.1), 2),
        adamw_ref,
        "accumulate(optax.adamw, 2)",
    ),
    Case("adam_k1", 1, lambda lr: accumulate(gradtx.adam(lr), 1), adam_ref, "accumulate(adam, 1)"),
]


@functools.cache
def all_batched_paths(dtype_name: str) -> dict:
    """Every case's paths in one program per dtype and process (float64 inside ``enable_x64``)."""
    return paths_of_all_cases(CASES, RATES, _inputs, scan_path, jnp.dtype(dtype_name))


def case_deviations(case, dtype_name):
    paths, applied = all_batched_paths(dtype_name)[case.id]
    expected_applied = (np.arange(1, NUM_STEPS + 1) % case.every_k) == 0
    devs = []
    for i, rate in enumerate(RATES):
        rate = float(np.float32(rate)) if dtype_name == "float32" else rate
        ref = W.accumulate(
            THETA0,
            GRADS_BY_STEP,
            case.every_k,
            case.inner_reference(rate),
            use_grad_mean=case.use_grad_mean,
        )
        path = jax.tree.map(lambda x, i=i: x[i], paths)
        devs.append(deviation(path, ref))
        np.testing.assert_array_equal(applied[i], expected_applied)
        for leaf in jax.tree.leaves(path):
            assert float(np.max(np.abs(leaf[-1] - leaf[0]))) > 1e-3, case.id
    return max(devs)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_trajectory_matches_reference_float64(case):
    with jax.enable_x64(True):
        assert case_deviations(case, "float64") <= RTOL["float64"]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_trajectory_matches_reference_float32(case):
    assert case_deviations(case, "float32") <= RTOL["float32"]


# ---------------------------------------------------------------- Optax


def _both_many(pairs, dtype):
    """For each ``(ours, theirs)`` factory pair, both runs (params, has_updated and
    the counters after every micro-step), all in one jitted program (independent
    scans side by side, the same arithmetic per scan), fetched to numpy."""
    theta, grads = _inputs(dtype)

    def path(tx, applied):
        def body(carry, g):
            p, state = carry
            updates, state = tx.update(g, state, p)
            p = gradtx.apply_updates(p, updates)
            return (p, state), (p, applied(state), state.mini_step, state.gradient_step)

        return jax.lax.scan(body, (theta, tx.init(theta)), grads)[1]

    def both(ours, theirs):
        multi = theirs()
        return path(ours(), has_updated), path(multi, multi.has_updated)

    return jax.device_get(jax.jit(lambda: [both(*pair) for pair in pairs])())


ADAMS = {"optax": optax.adam, "gradtx": gradtx.adam}


def _multisteps(adam, **accumulator_dtype):
    """(ours, Optax's MultiSteps) of Adam every 3 steps; ``accumulator_dtype`` if given."""
    return (
        lambda: accumulate(adam(0.05), 3),
        lambda: optax.MultiSteps(optax.adam(0.05), 3, **accumulator_dtype),
    )


@functools.cache
def multisteps_runs(dtype: str) -> dict:
    """The runs against Optax's MultiSteps of this dtype, in one jitted program per
    process: ``{inner: (ours, theirs)}`` with Optax's accumulator in ``dtype``, and
    for float64 ``"default"``: Optax's accumulator left at its default (float32).
    Call it for float64 inside ``jax.enable_x64``."""
    pairs = {
        inner: _multisteps(adam, accumulator_dtype=jnp.dtype(dtype))
        for inner, adam in ADAMS.items()
    }
    if dtype == "float64":
        pairs["default"] = _multisteps(optax.adam)
    return dict(zip(pairs, _both_many(list(pairs.values()), jnp.dtype(dtype)), strict=True))


@pytest.mark.parametrize("inner", ["optax", "gradtx"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_trajectory_as_optax_multisteps(dtype, inner):
    """With Optax's accumulator in the params' dtype; has_updated and counters exact."""
    with jax.enable_x64(dtype == "float64"):
        ours, theirs = multisteps_runs(dtype)[inner]
        jax.tree.map(np.testing.assert_array_equal, ours[1:], theirs[1:])
        tol = PARITY_TOL[dtype]
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), ours[0], theirs[0])


def test_apply_if_finite_around_is_optax_skip_not_finite():
    """A NaN micro-batch is dropped: the group waits for a finite one."""
    bad_steps = (4, 5, 31)

    def poisoned(g):
        return jax.tree.map(lambda x: x.at[bad_steps, ...].set(jnp.nan), g)

    theta, grads = _inputs(jnp.float32)
    grads = poisoned(grads)

    def path(tx):
        def body(carry, g):
            p, state = carry
            updates, state = tx.update(g, state, p)
            p = gradtx.apply_updates(p, updates)
            return (p, state), p

        return jax.lax.scan(body, (theta, tx.init(theta)), grads)[1]

    ours = apply_if_finite(accumulate(optax.adam(0.05), 3))
    theirs = optax.MultiSteps(
        optax.adam(0.05), 3, should_skip_update_fn=optax.skip_not_finite
    ).gradient_transformation()
    a, b = jax.jit(lambda: (path(ours), path(theirs)))()
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **PARITY_TOL["float32"]), a, b)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(a))


def test_optax_default_accumulator_loses_float64_digits():
    """The documented difference: Optax accumulates in float32 unless told otherwise."""
    with jax.enable_x64(True):
        ours, theirs = multisteps_runs("float64")["default"]  # MultiSteps' default dtype
        ref = W.accumulate(THETA0, GRADS_BY_STEP, 3, adam_ref(0.05))
        assert deviation(ours[0], ref) <= RTOL["float64"]
        assert deviation(theirs[0], ref) > 100 * RTOL["float64"]  # measured 2e-8


@pytest.mark.filterwarnings("ignore:Casting from complex to real")
def test_complex_gradients_keep_their_imaginary_part():
    """Optax's float32 accumulator drops it (with a warning); gradtx accumulates in complex64."""
    params = jnp.zeros(2, jnp.complex64)
    g = jnp.array([1 + 1j, 2 - 1j], jnp.complex64)
    ours, theirs = accumulate(gradtx.sgd(1.0), 2), optax.MultiSteps(optax.sgd(1.0), 2)
    s, t = ours.init(params), theirs.init(params)
    assert s.acc_grads.dtype == jnp.complex64
    for _ in range(2):
        u, s = ours.update(g, s, params)
        v, t = theirs.update(g, t, params)
    np.testing.assert_allclose(u, -g)
    assert not np.allclose(v, -g)
    with pytest.raises(ValueError, match="imaginary"):
        accumulate(gradtx.sgd(1.0), 2, accumulator_dtype=jnp.float32).init(params)


# ---------------------------------------------------------------- behaviour


def _params(dtype=jnp.float32):
    return as_tree([jnp.asarray(x, dtype) for x in THETA0])


def _grads(k, dtype=jnp.float32):
    return as_tree([jnp.asarray(g[k], dtype) for g in GRADS])


def test_in_between_steps_return_zeros_and_leave_the_inner_state_alone():
    tx = accumulate(gradtx.adam(0.1), 3)
    params = _params()
    state = tx.init(params)
    step = jax.jit(tx.update)
    flags = []
    for k in range(7):
        before = state
        updates, state = step(_grads(k), state, params)
        flags.append(bool(has_updated(state)))
        if not flags[-1]:
            assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
            jax.tree.map(np.testing.assert_array_equal, state.inner_state, before.inner_state)
        else:
            assert all(bool(jnp.all(a == 0)) for a in jax.tree.leaves(state.acc_grads))
    assert flags == [False, False, True, False, False, True, False]
    assert (int(state.mini_step), int(state.gradient_step)) == (1, 2)
    assert int(state.inner_state[0].count) == 2


def test_every_k_one_is_the_inner_bit_for_bit():
    tx, inner = accumulate(gradtx.rmsprop(0.1, momentum=0.9), 1), gradtx.rmsprop(0.1, momentum=0.9)
    params = _params()
    s, t = tx.init(params), inner.init(params)
    for k in range(3):
        a, s = tx.update(_grads(k), s, params)
        b, t = inner.update(_grads(k), t, params)
        jax.tree.map(np.testing.assert_array_equal, a, b)


def test_low_precision_gradients_are_averaged_in_float32():
    params = _params(jnp.bfloat16)
    tx = accumulate(gradtx.sgd(1.0), 2)
    state = tx.init(params)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(state.acc_grads))
    for k in range(2):
        updates, state = tx.update(_grads(k, jnp.bfloat16), state, params)
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    mean = jax.tree.map(
        lambda a, b: -(a.astype(jnp.float32) + b.astype(jnp.float32)) / 2,
        _grads(0, jnp.bfloat16),
        _grads(1, jnp.bfloat16),
    )
    jax.tree.map(
        lambda u, m: np.testing.assert_allclose(u.astype(np.float32), m, rtol=2**-8), updates, mean
    )
    pinned = accumulate(gradtx.sgd(1.0), 2, accumulator_dtype=jnp.bfloat16).init(params)
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(pinned.acc_grads))


def test_extra_args_reach_the_inner_on_its_steps():
    seen = []

    def update(updates, state, params=None, *, value=None):
        # Runs traced too (to learn the output shapes of the in-between steps).
        if not isinstance(updates, jax.core.Tracer):
            seen.append(value)
        return updates, state

    probe = gradtx.GradientTransformation(lambda p: gradtx.EmptyState(), update)
    tx = accumulate(probe, 2)
    state = tx.init(jnp.zeros(2))
    for k in range(4):
        _, state = tx.update(jnp.ones(2), state, value=float(k), other="ignored")
    assert seen == [1.0, 3.0]  # eagerly the inner runs on its steps only


def test_has_updated_finds_the_state_in_a_chain_and_rejects_ambiguity():
    tx = gradtx.chain(gradtx.scale(0.5), accumulate(gradtx.sgd(0.1), 2))
    state = tx.init(jnp.zeros(2))
    for _ in range(2):
        _, state = tx.update(jnp.ones(2), state)
    assert bool(has_updated(state)) and isinstance(state[1], AccumulateState)
    with pytest.raises(ValueError, match="exactly one AccumulateState.*found 0"):
        has_updated(gradtx.adam(0.1).init(jnp.zeros(2)))
    with pytest.raises(ValueError, match="found 2"):
        has_updated((state[1], state[1]))


def test_state_is_stable_and_jit_traces_once():
    tx = accumulate(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1)), 2)
    traces = []

    @jax.jit
    def step(p, s, g):
        traces.append(None)
        u, s = tx.update(g, s, p)
        return gradtx.apply_updates(p, u), s

    params = _params()
    first = state = tx.init(params)
    for k in range(3):
        params, state = step(params, state, _grads(k))
    assert len(traces) == 1
    assert jax.tree.structure(first) == jax.tree.structure(state)
    assert [x.dtype for x in jax.tree.leaves(first)] == [x.dtype for x in jax.tree.leaves(state)]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3", None])
def test_bad_every_k_is_rejected(bad):
    with pytest.raises(
        ValueError, match=rf"accumulate: every_k must be an integer >= 1, got {bad!r}"
    ):
        accumulate(gradtx.adam(), bad)


def test_bad_accumulator_dtype_and_inner_are_rejected():
    with pytest.raises(ValueError, match="accumulator_dtype must be None or a floating-point"):
        accumulate(gradtx.adam(), 2, accumulator_dtype=jnp.int32)
    with pytest.raises(TypeError, match="init and update"):
        accumulate(lambda g: g, 2)


def test_another_tree_names_the_paths():
    tx = accumulate(gradtx.sgd(0.1), 2)
    state = tx.init({"a": jnp.zeros(2), "b": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"accumulate: .*missing from updates: \['b'\]"):
        tx.update({"a": jnp.zeros(2)}, state)


# ---------------------------------------------------------------- report


def report() -> list[list[str]]:
    """Rows ``[method, reference, max deviation f64, f32]`` for every case."""
    rows = []
    for case in CASES:
        with jax.enable_x64(True):
            f64 = case_deviations(case, "float64")
        f32 = case_deviations(case, "float32")
        against = "the inner's reference on the group " + (
            "means" if case.use_grad_mean else "sums"
        )
        rows.append([case.method, against, f"{f64:.1e}", f"{f32:.1e}"])
    return rows
