"""``apply_if_finite``: skipped steps, counters, Optax parity, and the raise.

Trajectory cases run a jitted ``lax.scan`` of 120 steps, ``vmap``-ped over two
learning rates, on a pytree of five leaves (a scalar among them) fed a recorded
sequence of random gradients into which NaN and +-inf are injected at given
steps (one element of one leaf, or every leaf); the parameters after every step
and the counters are compared with ``tests/reference/wrappers.apply_if_finite``
around the inner optimizer's numpy reference: the same run with the bad steps
removed. Tolerances as in tests/test_reference_trajectories.py:
``|gradtx - ref| <= rtol (|ref| + 1)``, rtol 1e-10 (float64) and 1e-5 (float32).

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
from gradtx.transforms.conditional import ApplyIfFiniteState, apply_if_finite
from tests import reference as R
from tests.reference import wrappers as W
from tests.wrapper_harness import (
    IS_SHAPE,
    PARITY_TOL,
    RTOL,
    SHAPES,
    TREEDEF,
    adam_ref,
    as_tree,
    momentum_ref,
    paths_of_all_cases,
    rmsprop_ref,
)

NUM_STEPS = 120
RATES = (0.01, 0.05)

NUM_LEAVES = TREEDEF.num_leaves

# step -> (leaf index or None for every leaf, value). Runs of 1, 2 and 3 bad
# steps, the first step, the last step, each kind of non-finite value.
BAD = {
    0: (1, np.nan),
    17: (2, np.inf),
    18: (2, -np.inf),
    19: (4, np.nan),
    50: (None, np.nan),
    51: (0, np.inf),
    99: (3, np.nan),
    119: (4, -np.inf),
}


def _make_data(seed: int = 5):
    rng = np.random.default_rng(seed)
    theta0, grads = [], []
    for i, shape in enumerate(jax.tree.leaves(SHAPES, is_leaf=IS_SHAPE)):
        scale = (0.1, 3.0, 1.0)[i % 3]
        theta0.append(rng.normal(size=shape).astype(np.float32).astype(np.float64))
        g = scale * rng.normal(size=(NUM_STEPS, *shape))
        grads.append(g.astype(np.float32).astype(np.float64))
    for step, (leaf, value) in BAD.items():
        for i in range(NUM_LEAVES) if leaf is None else [leaf]:
            grads[i][(step, *[-1] * (grads[i].ndim - 1))] = value  # one element of the leaf
    return theta0, grads


THETA0, GRADS = _make_data()
GRADS_BY_STEP = [[g[k] for g in GRADS] for k in range(NUM_STEPS)]


def _inputs(dtype):
    return as_tree([jnp.asarray(x, dtype) for x in THETA0]), as_tree(
        [jnp.asarray(g, dtype) for g in GRADS]
    )


def scan_path(tx, theta, grads):
    """Params and the counters (consecutive, total) after each step."""

    def body(carry, g):
        p, state = carry
        updates, state = tx.update(g, state, p)
        p = gradtx.apply_updates(p, updates)
        return (p, state), (p, state.notfinite_count, state.total_notfinite)

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
    make: Callable[[float], gradtx.GradientTransformation]
    inner_reference: Callable[[float], Callable]
    method: str

    def __repr__(self):
        return self.id


CASES = [
    Case(
        "sgd_momentum",
        lambda lr: apply_if_finite(gradtx.sgd(lr, momentum=0.9)),
        momentum_ref,
        "apply_if_finite(sgd momentum)",
    ),
    Case("adam", lambda lr: apply_if_finite(gradtx.adam(lr)), adam_ref, "apply_if_finite(adam)"),
    Case(
        # raise_after larger than the longest run of bad steps (3): the host
        # check runs at every step, under jit, vmap and scan, and never fires.
        "rmsprop_raise_after_4",
        lambda lr: apply_if_finite(gradtx.rmsprop(lr), raise_after=4),
        rmsprop_ref,
        "apply_if_finite(rmsprop, raise_after=4)",
    ),
    Case(
        "optax_adamw",
        lambda lr: apply_if_finite(optax.adamw(lr, weight_decay=0.1)),
        adamw_ref,
        "apply_if_finite(optax.adamw)",
    ),
]


@functools.cache
def all_batched_paths(dtype_name: str) -> dict:
    """Every case's paths in one program per dtype and process (float64 inside ``enable_x64``)."""
    return paths_of_all_cases(CASES, RATES, _inputs, scan_path, jnp.dtype(dtype_name))


def case_deviations(case, dtype_name):
    paths, consecutive, total = all_batched_paths(dtype_name)[case.id]
    devs = []
    for i, rate in enumerate(RATES):
        rate = float(np.float32(rate)) if dtype_name == "float32" else rate
        ref, ref_consecutive, ref_total = W.apply_if_finite(
            THETA0, GRADS_BY_STEP, case.inner_reference(rate)
        )
        path = jax.tree.map(lambda x, i=i: x[i], paths)
        devs.append(deviation(path, ref))
        np.testing.assert_array_equal(consecutive[i], ref_consecutive)
        np.testing.assert_array_equal(total[i], ref_total)
        for leaf in jax.tree.leaves(path):
            assert np.all(np.isfinite(leaf)), case.id
            assert float(np.max(np.abs(leaf[-1] - leaf[0]))) > 1e-3, case.id
    return max(devs)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_trajectory_skips_bad_steps_float64(case):
    with jax.enable_x64(True):
        assert case_deviations(case, "float64") <= RTOL["float64"]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_trajectory_skips_bad_steps_float32(case):
    assert case_deviations(case, "float32") <= RTOL["float32"]


def test_reference_counters_are_what_the_injection_says():
    """Guards the reference itself: runs of 1, 2 and 3 and the totals."""
    _, consecutive, total = W.apply_if_finite(THETA0, GRADS_BY_STEP, adam_ref(0.1))
    assert [consecutive[k] for k in (0, 1, 17, 18, 19, 20, 50, 51, 52, 119)] == [
        1, 0, 1, 2, 3, 0, 1, 2, 0, 1
    ]  # fmt: skip
    assert total[-1] == len(BAD)


# ---------------------------------------------------------------- Optax
# Optax's apply_if_finite skips the same steps as long as fewer than
# max_consecutive_errors bad steps come in a row.


def _both(ours, theirs, dtype):
    theta, grads = _inputs(dtype)

    def path(tx):
        def body(carry, g):
            p, state = carry
            updates, state = tx.update(g, state, p)
            p = gradtx.apply_updates(p, updates)
            counters = (state.notfinite_count, state.total_notfinite, state.last_finite)
            return (p, state), (p, counters)

        return jax.lax.scan(body, (theta, tx.init(theta)), grads)[1]

    return jax.jit(lambda: (path(ours()), path(theirs())))()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_trajectory_and_counters_as_optax(dtype):
    with jax.enable_x64(dtype == "float64"):
        (a, ca), (b, cb) = _both(
            lambda: apply_if_finite(optax.adam(0.05)),
            lambda: optax.apply_if_finite(optax.adam(0.05), max_consecutive_errors=NUM_STEPS),
            jnp.dtype(dtype),
        )
        jax.tree.map(np.testing.assert_array_equal, (a, ca), (b, cb))
        (a, ca), (b, cb) = _both(
            lambda: apply_if_finite(gradtx.adam(0.05)),
            lambda: optax.apply_if_finite(optax.adam(0.05), max_consecutive_errors=NUM_STEPS),
            jnp.dtype(dtype),
        )
        jax.tree.map(np.testing.assert_array_equal, ca, cb)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **PARITY_TOL[dtype]), a, b)


def test_max_consecutive_errors_gives_up_as_optax_does():
    """Optax's meaning, positionally: the 3rd bad update in a row is applied.

    Without it gradtx keeps skipping (its default, ``None``).
    """
    for dtype in (jnp.float32, jnp.float64):
        with jax.enable_x64(dtype == jnp.float64):
            (a, ca), (b, cb) = _both(
                lambda: apply_if_finite(optax.adam(0.05), 2),
                lambda: optax.apply_if_finite(optax.adam(0.05), 2),
                dtype,
            )
            jax.tree.map(np.testing.assert_array_equal, (a, ca), (b, cb))
    (a, _), (b, _) = _both(
        lambda: apply_if_finite(optax.adam(0.05)),
        lambda: optax.apply_if_finite(optax.adam(0.05), max_consecutive_errors=2),
        jnp.float32,
    )
    step_19 = lambda path: [np.asarray(x)[19] for x in jax.tree.leaves(path)]  # noqa: E731 - 3rd bad in a row
    assert all(np.all(np.isfinite(x)) for x in step_19(a))
    assert not all(np.all(np.isfinite(x)) for x in step_19(b))


# ---------------------------------------------------------------- behaviour


def _params(dtype=jnp.float32):
    return as_tree([jnp.asarray(x, dtype) for x in THETA0])


def _grads(k, dtype=jnp.float32):
    return as_tree([jnp.asarray(g[k], dtype) for g in GRADS])


GOOD, NAN = 1, 0  # steps of GRADS: finite, and NaN in layer/b


def test_a_skipped_step_returns_zeros_and_keeps_the_inner_state():
    tx = apply_if_finite(gradtx.adam(0.1))
    params = _params()
    state = tx.init(params)
    _, state = tx.update(_grads(GOOD), state, params)
    updates, skipped = jax.jit(tx.update)(_grads(NAN), state, params)
    for u in jax.tree.leaves(updates):
        assert u.dtype == jnp.float32 and bool(jnp.all(u == 0))
    jax.tree.map(np.testing.assert_array_equal, skipped.inner_state, state.inner_state)
    assert (int(skipped.notfinite_count), int(skipped.total_notfinite)) == (1, 1)
    assert not bool(skipped.last_finite)
    assert isinstance(skipped, ApplyIfFiniteState)
    assert jax.tree.structure(skipped) == jax.tree.structure(state)


def test_finite_steps_equal_the_inner_and_extra_args_reach_it():
    tx, inner = apply_if_finite(gradtx.rmsprop(0.1)), gradtx.rmsprop(0.1)
    params, g = _params(), _grads(GOOD)
    a, _ = tx.update(g, tx.init(params), params, value=jnp.float32(1.0), unknown="x")
    b, _ = inner.update(g, inner.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, a, b)

    seen = []

    def update(updates, state, params=None, *, value=None):
        seen.append(value)
        return updates, state

    probe = apply_if_finite(gradtx.GradientTransformation(lambda p: gradtx.EmptyState(), update))
    probe.update(g, probe.init(params), params, value=3.0, other=1)
    assert seen and all(v == 3.0 for v in seen)


def test_complex_gradients_are_checked_in_both_parts():
    tx = apply_if_finite(gradtx.adam(0.1))
    params = {"z": jnp.zeros(2, jnp.complex64)}
    state = tx.init(params)
    for bad in (complex(1.0, np.nan), complex(np.inf, 0.0), complex(0.0, -np.inf)):
        g = {"z": jnp.array([1 + 1j, bad], jnp.complex64)}
        updates, new = tx.update(g, state, params)
        assert int(new.total_notfinite) == 1 and bool(jnp.all(updates["z"] == 0))
        assert updates["z"].dtype == jnp.complex64
    updates, new = tx.update({"z": jnp.array([1 + 1j, -2j], jnp.complex64)}, state, params)
    assert int(new.total_notfinite) == 0 and bool(jnp.all(updates["z"] != 0))


def test_low_precision_and_empty_trees():
    tx = apply_if_finite(gradtx.adam(0.1))
    params = _params(jnp.bfloat16)
    updates, state = tx.update(_grads(NAN, jnp.bfloat16), tx.init(params), params)
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    assert int(state.total_notfinite) == 1
    empty = apply_if_finite(gradtx.sgd(0.1))
    updates, state = empty.update({}, empty.init({}), {})
    assert updates == {} and bool(state.last_finite)
    with_none = {"a": jnp.array([np.nan]), "b": None}
    updates, state = empty.update(with_none, empty.init(with_none))
    assert updates["b"] is None and int(state.total_notfinite) == 1


def test_vmap_where_only_some_members_see_a_bad_gradient():
    params = {"w": jnp.zeros(3)}
    tx = apply_if_finite(gradtx.sgd(0.1, momentum=0.9))

    def step(g):
        return tx.update({"w": g}, tx.init(params), params)

    grads = jnp.array([[1.0, 2.0, 3.0], [1.0, np.nan, 3.0]])
    updates, state = jax.jit(jax.vmap(step))(grads)
    np.testing.assert_allclose(updates["w"][0], [-0.1, -0.2, -0.3], rtol=1e-6)
    np.testing.assert_array_equal(updates["w"][1], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(state.total_notfinite, [0, 1])


# ---------------------------------------------------------------- raise_after


def _run(tx, pattern, *, jit):
    """Feeds finite (True) / NaN (False) gradients in ``pattern`` order."""
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    state = tx.init(params)
    step = jax.jit(tx.update) if jit else tx.update
    for finite in pattern:
        g = {"w": jnp.array([1.0, np.nan if not finite else 2.0, 3.0]), "b": jnp.ones(())}
        _, state = step(g, state, params)
    return state


MESSAGE = (
    r"apply_if_finite: 2 consecutive gradients held NaN or inf \(raise_after=2; 3 skipped "
    r"in all\); the last one in: \['w'\]"
)


def test_raise_after_raises_eagerly_with_a_clear_message():
    tx = apply_if_finite(gradtx.adam(0.1), raise_after=2)
    state = _run(tx, [False, True, False, True], jit=False)  # never two in a row
    assert int(state.total_notfinite) == 2
    with pytest.raises(FloatingPointError, match=MESSAGE):
        _run(tx, [False, True, False, False], jit=False)


def test_raise_after_raises_under_jit_with_the_same_message():
    tx = apply_if_finite(gradtx.adam(0.1), raise_after=2)
    state = _run(tx, [False, True, False, True], jit=True)
    assert int(state.total_notfinite) == 2
    with pytest.raises(jax.errors.JaxRuntimeError, match=MESSAGE):
        _run(tx, [False, True, False, False], jit=True)


def test_raise_after_one_raises_at_the_first_bad_step_inside_scan_and_vmap():
    tx = apply_if_finite(gradtx.sgd(0.1), raise_after=1)
    params = {"w": jnp.zeros(2)}

    def run(grads):
        def body(state, g):
            _, state = tx.update({"w": g}, state, params)
            return state, None

        return jax.lax.scan(body, tx.init(params), grads)[0]

    good = jnp.ones((2, 3, 2))
    assert int(jnp.sum(jax.jit(jax.vmap(run))(good).total_notfinite)) == 0
    with pytest.raises(
        jax.errors.JaxRuntimeError,
        match=r"1 consecutive gradient held NaN or inf \(raise_after=1; 1 skipped",
    ):
        jax.jit(jax.vmap(run))(good.at[1, 2, 0].set(np.inf))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_raise_after_is_rejected(bad):
    with pytest.raises(ValueError, match=rf"raise_after must be an integer >= 1, got {bad!r}"):
        apply_if_finite(gradtx.adam(), raise_after=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_bad_max_consecutive_errors_is_rejected(bad):
    with pytest.raises(
        ValueError, match=rf"max_consecutive_errors must be an integer >= 0 or None, got {bad!r}"
    ):
        apply_if_finite(gradtx.adam(), bad)


def test_inner_is_checked():
    with pytest.raises(TypeError, match="init and update"):
        apply_if_finite(0.1)


def test_state_is_stable_and_jit_traces_once():
    tx = apply_if_finite(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1)))
    traces = []

    @jax.jit
    def step(p, s, g):
        traces.append(None)
        u, s = tx.update(g, s, p)
        return gradtx.apply_updates(p, u), s

    params = _params()
    first = state = tx.init(params)
    for k in range(4):
        params, state = step(params, state, _grads(k))
    assert len(traces) == 1
    assert jax.tree.structure(first) == jax.tree.structure(state)
    assert int(state.total_notfinite) == 1  # step 0 held a NaN


# ---------------------------------------------------------------- report


def report() -> list[list[str]]:
    """Rows ``[method, reference, max deviation f64, f32]`` for every case."""
    rows = []
    for case in CASES:
        with jax.enable_x64(True):
            f64 = case_deviations(case, "float64")
        f32 = case_deviations(case, "float32")
        against = "the inner's reference with the non-finite steps removed"
        rows.append([case.method, against, f"{f64:.1e}", f"{f32:.1e}"])
    return rows


def test_raise_after_names_exactly_the_bad_leaves():
    # Among leaves of one dtype and size, of others, and a large one: the error
    # names each bad leaf, and no good one.
    tx = apply_if_finite(gradtx.sgd(0.1), raise_after=1)
    params = {k: jnp.zeros(3) for k in "abcde"}
    params |= {"m": jnp.zeros((2, 2)), "big": jnp.zeros(2**14), "h": jnp.zeros(3, jnp.float16)}
    grads = jax.tree.map(jnp.ones_like, params)
    grads["c"] = grads["c"].at[1].set(np.nan)
    grads["big"] = grads["big"].at[-1].set(-np.inf)
    grads["h"] = grads["h"].at[0].set(np.inf)
    named = r"the last one in: \['big'\], \['c'\], \['h'\]\. The updates"
    with pytest.raises(FloatingPointError, match=named):
        tx.update(grads, tx.init(params), params)
    with pytest.raises(jax.errors.JaxRuntimeError, match=named):
        jax.block_until_ready(jax.jit(tx.update)(grads, tx.init(params), params))
    # Under vmap, a leaf is named when any member holds a bad element in it.
    batch = jax.tree.map(lambda g: jnp.stack([jnp.ones_like(g), jnp.ones_like(g)]), params)
    batch["e"] = batch["e"].at[1, 2].set(np.nan)
    states = jax.vmap(tx.init)(jax.tree.map(jnp.zeros_like, batch))
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"the last one in: \['e'\]\. The"):
        jax.block_until_ready(jax.jit(jax.vmap(tx.update))(batch, states, batch))
