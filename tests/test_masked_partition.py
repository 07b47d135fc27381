"""``masked`` and ``partition``: trajectories, Optax parity, structure and errors.

Trajectory cases run a jitted ``lax.scan`` of 120 steps, ``vmap``-ped over two
learning rates (the factory is called inside the vmapped function, so the rate
is a tracer), on a pytree of five leaves of different shapes (a scalar among
them) fed a recorded sequence of random gradients, and compare the parameters
after every step with the numpy references of ``tests/reference/wrappers.py``
built around the optimizer's own reference (``tests/reference``). Tolerances as
in tests/test_reference_trajectories.py: ``|gradtx - ref| <= rtol (|ref| + 1)``
with rtol 1e-10 in float64 and 1e-5 in float32.

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
from gradtx.combine import MaskedState, PartitionState, masked, partition
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

NUM_STEPS = 120
RATES = (0.01, 0.05)

# Leaves in jax's (sorted-key) order: emb, layer/b, layer/w, norm/scale, temperature.
MASK = {
    "emb": True,
    "layer": {"b": False, "w": True},
    "norm": {"scale": False},
    "temperature": True,
}
MASK_LEAVES = jax.tree.leaves(MASK)


def _make_data(seed: int = 3):
    """Initial parameters and gradients, float32-representable float64 numbers."""
    rng = np.random.default_rng(seed)
    theta0, grads = [], []
    for i, shape in enumerate(jax.tree.leaves(SHAPES, is_leaf=IS_SHAPE)):
        scale = (0.1, 3.0, 1.0)[i % 3]
        theta0.append(rng.normal(size=shape).astype(np.float32).astype(np.float64))
        g = scale * rng.normal(size=(NUM_STEPS, *shape))
        grads.append(g.astype(np.float32).astype(np.float64))
    return theta0, grads


THETA0, GRADS = _make_data()
GRADS_BY_STEP = [[g[k] for g in GRADS] for k in range(NUM_STEPS)]


def scan_path(tx, theta, grads):
    """Params after each step of ``p <- p + update``, stacked along a leading axis."""

    def body(carry, g):
        p, state = carry
        updates, state = tx.update(g, state, p)
        p = gradtx.apply_updates(p, updates)
        return (p, state), p

    return jax.lax.scan(body, (theta, tx.init(theta)), grads)[1]


def _inputs(dtype):
    theta = as_tree([jnp.asarray(x, dtype) for x in THETA0])
    grads = as_tree([jnp.asarray(g, dtype) for g in GRADS])
    return theta, grads


def batched_paths(make, dtype, rates=RATES):
    """One jitted program: the trajectory for each rate, vmapped over the rates."""
    theta, grads = _inputs(dtype)
    run = jax.jit(jax.vmap(lambda rate: scan_path(make(rate), theta, grads)))
    return run(jnp.asarray(rates, dtype))


def deviation(path, reference):
    """``max |gradtx - ref| / (|ref| + 1)`` over every step, leaf and element."""
    return max(
        float(np.max(np.abs(np.asarray(a, np.float64) - b[1:]) / (np.abs(b[1:]) + 1)))
        for a, b in zip(jax.tree.leaves(path), reference, strict=True)
    )


# ---------------------------------------------------------------- reference cases


def adamw_ref(rate, lam=0.1):
    # Optax/gradtx adamw: the decay is scaled by the rate (alpha = 1, eta_t = lr).
    return functools.partial(
        R.adam.adamw, alpha=1.0, beta_1=0.9, beta_2=0.999, epsilon=1e-8, lam=lam, eta=rate
    )


def by_ndim(params):
    """True for the matrices (emb, layer/w): a mask from shapes only."""
    return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def by_name(params):
    """ "no_decay" for biases and scales, "decay" otherwise: labels from the paths."""

    def label(path, _):
        return "no_decay" if str(path[-1]) in ("['b']", "['scale']") else "decay"

    return jax.tree_util.tree_map_with_path(label, params)


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[float], gradtx.GradientTransformation]  # rate -> transformation
    reference: Callable[[list, list, float], list]  # (theta0, grads, rate) -> trajectory
    method: str  # the report's row
    against: str  # the report's reference column

    def __repr__(self):
        return self.id


CASES = [
    Case(
        "masked_sgd_momentum",
        lambda lr: masked(gradtx.sgd(lr, momentum=0.9), MASK),
        lambda th, gs, lr: W.masked(th, gs, MASK_LEAVES, momentum_ref(lr)),
        "masked(sgd momentum), mask tree",
        "momentum on the masked leaves, raw gradient elsewhere",
    ),
    Case(
        "masked_adam_mask_fn",
        lambda lr: masked(gradtx.adam(lr), by_ndim),
        lambda th, gs, lr: W.masked(th, gs, [True, False, True, False, False], adam_ref(lr)),
        "masked(adam), mask function",
        "Adam on the matrices, raw gradient elsewhere",
    ),
    Case(
        "masked_rmsprop_prefix_mask",
        lambda lr: masked(
            gradtx.rmsprop(lr), {"emb": False, "layer": True, "norm": False, "temperature": True}
        ),
        lambda th, gs, lr: W.masked(th, gs, [False, True, True, False, True], rmsprop_ref(lr)),
        "masked(rmsprop), prefix mask",
        "RMSProp on layer/* and temperature",
    ),
    Case(
        "masked_adamw_needs_params",
        lambda lr: masked(gradtx.adamw(lr, weight_decay=0.1), MASK),
        lambda th, gs, lr: W.masked(th, gs, MASK_LEAVES, adamw_ref(lr)),
        "masked(adamw)",
        "AdamW on the masked leaves (params masked too)",
    ),
    Case(
        "masked_optax_adamw",
        lambda lr: masked(optax.adamw(lr, weight_decay=0.1), MASK),
        lambda th, gs, lr: W.masked(th, gs, MASK_LEAVES, adamw_ref(lr)),
        "masked(optax.adamw)",
        "AdamW on the masked leaves",
    ),
    Case(
        "partition_label_tree",
        lambda lr: partition(
            {"adam": gradtx.adam(lr), "sgd": gradtx.sgd(lr, 0.9), "rms": gradtx.rmsprop(lr)},
            {
                "emb": "sgd",
                "layer": {"b": "rms", "w": "adam"},
                "norm": {"scale": "rms"},
                "temperature": "adam",
            },
        ),
        lambda th, gs, lr: W.partition(
            th,
            gs,
            ["sgd", "rms", "adam", "rms", "adam"],
            {"adam": adam_ref(lr), "sgd": momentum_ref(lr), "rms": rmsprop_ref(lr)},
        ),
        "partition(adam, sgd momentum, rmsprop)",
        "each optimizer run alone on its leaves",
    ),
    Case(
        "partition_label_fn_optax_unused",
        lambda lr: partition(
            {
                "decay": gradtx.adamw(lr, weight_decay=0.1),
                "no_decay": optax.adam(2 * lr),
                "unused": gradtx.sgd(1.0),
            },
            by_name,
        ),
        lambda th, gs, lr: W.partition(
            th,
            gs,
            ["decay", "no_decay", "decay", "no_decay", "decay"],
            {"decay": adamw_ref(lr), "no_decay": adam_ref(2 * lr)},
        ),
        "partition(adamw, optax.adam), label function",
        "AdamW on weights, Adam on biases and scales",
    ),
    Case(
        "partition_prefix_labels",
        lambda lr: partition(
            {
                "optax": optax.sgd(lr, momentum=0.9),
                "adam": gradtx.adam(lr),
                "rms": optax.rmsprop(lr),
            },
            {"emb": "optax", "layer": "adam", "norm": "rms", "temperature": "adam"},
        ),
        lambda th, gs, lr: W.partition(
            th,
            gs,
            ["optax", "adam", "adam", "rms", "adam"],
            {
                "optax": momentum_ref(lr),
                "adam": adam_ref(lr),
                # Optax's rmsprop puts eps inside the root, as the book.
                "rms": rmsprop_ref(lr),
            },
        ),
        "partition(optax.sgd, adam, optax.rmsprop), prefix labels",
        "each optimizer run alone on its leaves",
    ),
]


@functools.cache
def all_batched_paths(dtype_name: str) -> dict:
    """Every case's paths in one program per dtype and process (float64 inside ``enable_x64``)."""
    return paths_of_all_cases(CASES, RATES, _inputs, scan_path, jnp.dtype(dtype_name))


def case_deviations(case, dtype_name):
    """The deviation of each vmapped rate's trajectory from its reference."""
    paths = all_batched_paths(dtype_name)[case.id]
    devs = []
    for i, rate in enumerate(RATES):
        rate = float(np.float32(rate)) if dtype_name == "float32" else rate
        path = jax.tree.map(lambda x, i=i: x[i], paths)
        devs.append(deviation(path, case.reference(THETA0, GRADS_BY_STEP, rate)))
        # Guard against a vacuous pass: every leaf moved.
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


# ---------------------------------------------------------------- Optax parity
# Same inner optimizer: the masking bookkeeping must not change a bit. gradtx's
# own optimizers against Optax's: the bound of tests/test_optax_parity.py (a few
# float32 ulps of the trajectory's scale; 1e-12 in float64).

LABELS = {"emb": "sgd", "layer": {"b": "rms", "w": "adam"}, "norm": "rms", "temperature": "adam"}

PARITY = {
    "masked_same_inner": (
        lambda: masked(optax.adamw(0.05, weight_decay=0.1), by_ndim),
        lambda: optax.masked(optax.adamw(0.05, weight_decay=0.1), by_ndim),
        "exact",
    ),
    "masked_prefix_same_inner": (
        lambda: masked(
            optax.adam(0.05), {"emb": False, "layer": True, "norm": True, "temperature": False}
        ),
        lambda: optax.masked(
            optax.adam(0.05), {"emb": False, "layer": True, "norm": True, "temperature": False}
        ),
        "exact",
    ),
    "masked_gradtx_inner": (
        lambda: masked(gradtx.adam(0.05), MASK),
        lambda: optax.masked(optax.adam(0.05), MASK),
        "parity",
    ),
    "partition_same_inners": (
        lambda: partition(
            {"adam": optax.adam(0.05), "sgd": optax.sgd(0.05, 0.9), "rms": optax.rmsprop(0.01)},
            LABELS,
        ),
        lambda: optax.partition(
            {"adam": optax.adam(0.05), "sgd": optax.sgd(0.05, 0.9), "rms": optax.rmsprop(0.01)},
            LABELS,
        ),
        "exact",
    ),
    "partition_gradtx_inners": (
        lambda: partition(
            {"adam": gradtx.adam(0.05), "sgd": gradtx.sgd(0.05, 0.9), "rms": gradtx.rmsprop(0.01)},
            LABELS,
        ),
        lambda: optax.partition(
            {"adam": optax.adam(0.05), "sgd": optax.sgd(0.05, 0.9), "rms": optax.rmsprop(0.01)},
            LABELS,
        ),
        "parity",
    ),
}


def parity_paths(ours, theirs, dtype):
    theta, grads = _inputs(dtype)
    both = jax.jit(lambda: (scan_path(ours(), theta, grads), scan_path(theirs(), theta, grads)))
    return both()


@functools.cache
def all_parity_paths(dtype_name: str) -> dict:
    """``{name: parity_paths(ours, theirs, dtype)}`` for every case of PARITY, in one
    jitted program per dtype and process (independent scans side by side, the same
    arithmetic per scan). Call it for float64 inside ``jax.enable_x64``."""
    theta, grads = _inputs(jnp.dtype(dtype_name))
    names = sorted(PARITY)
    run = jax.jit(
        lambda: [
            (scan_path(PARITY[n][0](), theta, grads), scan_path(PARITY[n][1](), theta, grads))
            for n in names
        ]
    )
    return dict(zip(names, jax.device_get(run()), strict=True))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(PARITY))
def test_same_trajectory_as_optax(name, dtype):
    kind = PARITY[name][2]
    with jax.enable_x64(dtype == "float64"):
        a, b = all_parity_paths(dtype)[name]
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            if kind == "exact":
                np.testing.assert_array_equal(x, y)
            else:
                np.testing.assert_allclose(x, y, **PARITY_TOL[dtype])


# ---------------------------------------------------------------- behaviour


def _params(dtype=jnp.float32):
    return as_tree([jnp.asarray(x, dtype) for x in THETA0])


def _grads(k, dtype=jnp.float32):
    return as_tree([jnp.asarray(g[k], dtype) for g in GRADS])


def test_masked_out_leaves_pass_through_and_hold_no_state():
    tx = masked(gradtx.adam(0.1), MASK)
    params = _params()
    state = tx.init(params)
    assert isinstance(state, MaskedState)
    mu = state.inner_state[0].mu
    assert mu["layer"]["b"] is None and mu["norm"]["scale"] is None
    assert mu["emb"].shape == (4, 2) and mu["temperature"].shape == ()
    g = _grads(0)
    updates, new_state = jax.jit(tx.update)(g, state, params)
    np.testing.assert_array_equal(updates["layer"]["b"], g["layer"]["b"])
    np.testing.assert_array_equal(updates["norm"]["scale"], g["norm"]["scale"])
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    alone = gradtx.adam(0.1)
    sub = {"emb": g["emb"], "w": g["layer"]["w"], "t": g["temperature"]}
    expected, _ = alone.update(sub, alone.init(sub))
    np.testing.assert_allclose(updates["layer"]["w"], expected["w"], rtol=1e-6)


def test_state_is_stable_and_jit_traces_once():
    for tx in (
        masked(gradtx.sgd(0.1, 0.9), by_ndim),
        partition({"a": gradtx.adam(0.1), "b": optax.rmsprop(0.1)}, by_name_ab),
    ):
        traces = []

        @jax.jit
        def step(p, s, g, tx=tx, traces=traces):
            traces.append(None)
            u, s = tx.update(g, s, p)
            return gradtx.apply_updates(p, u), s

        params = _params()
        state = tx.init(params)
        first = state
        for k in range(3):
            params, state = step(params, state, _grads(k))
        assert len(traces) == 1
        assert jax.tree.structure(first) == jax.tree.structure(state)
        assert [x.dtype for x in jax.tree.leaves(first)] == [
            x.dtype for x in jax.tree.leaves(state)
        ]


def by_name_ab(params):
    return jax.tree.map(lambda x: "a" if jnp.ndim(x) >= 1 else "b", params)


def test_all_true_is_the_inner_and_all_false_is_the_identity():
    params, g = _params(), _grads(0)
    full = masked(gradtx.adam(0.1), True)
    inner = gradtx.adam(0.1)
    a, _ = full.update(g, full.init(params), params)
    b, _ = inner.update(g, inner.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    none = masked(gradtx.adam(0.1), lambda p: jax.tree.map(lambda _: False, p))
    state = none.init(params)
    assert all(jnp.ndim(x) == 0 for x in jax.tree.leaves(state))  # only Adam's count
    out, _ = none.update(g, state, params)
    jax.tree.map(np.testing.assert_array_equal, out, g)


def test_masked_works_without_params_and_nested():
    params, g = _params(), _grads(0)
    inner_mask = {"emb": True, "layer": {"b": True, "w": False}, "norm": True, "temperature": True}
    nested = masked(masked(gradtx.sgd(0.5), inner_mask), MASK)
    out, _ = nested.update(g, nested.init(params))  # no params: sgd needs none
    # Stepped only where both masks are True: emb and temperature.
    np.testing.assert_allclose(out["emb"], -0.5 * g["emb"])
    np.testing.assert_allclose(out["temperature"], -0.5 * g["temperature"])
    for path in (("layer", "b"), ("layer", "w"), ("norm", "scale")):
        np.testing.assert_array_equal(out[path[0]][path[1]], g[path[0]][path[1]])
    needs = masked(gradtx.adamw(0.1), MASK)
    with pytest.raises(ValueError, match="params"):
        needs.update(g, needs.init(params))


def test_complex_leaves_pass_through_and_are_transformed():
    params = {"a": jnp.ones(2, jnp.complex64), "b": jnp.ones(3, jnp.complex64)}
    g = {"a": jnp.array([1 + 2j, -1j], jnp.complex64), "b": jnp.array([1j, 2, 3], jnp.complex64)}
    tx = masked(gradtx.adam(0.1), {"a": True, "b": False})
    out, _ = tx.update(g, tx.init(params), params)
    np.testing.assert_array_equal(out["b"], g["b"])
    # Adam's first step is -lr * g / |g| element-wise (|g|^2 second moment).
    np.testing.assert_allclose(out["a"], -0.1 * g["a"] / jnp.abs(g["a"]), rtol=1e-5)


def _tagging_inner():
    """A stateless inner that adds its ``tags`` extra argument to the updates."""

    def update(updates, state, params=None, *, tags=None):
        return jax.tree.map(lambda u, t: u + t, updates, tags), state

    return gradtx.GradientTransformation(lambda p: gradtx.EmptyState(), update)


def test_mask_compatible_extra_args():
    params = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    g = {"a": jnp.ones(2), "b": jnp.ones(2)}
    tags = {"a": jnp.full(2, 10.0), "b": jnp.full(2, 20.0)}
    tx = masked(_tagging_inner(), {"a": True, "b": False}, mask_compatible_extra_args=True)
    out, _ = tx.update(g, tx.init(params), params, tags=tags, value=3.0)
    np.testing.assert_array_equal(out["a"], [11.0, 11.0])
    np.testing.assert_array_equal(out["b"], [1.0, 1.0])
    plain = masked(_tagging_inner(), {"a": True, "b": False})
    with pytest.raises(ValueError):  # unmasked tags do not match the masked updates
        plain.update(g, plain.init(params), params, tags=tags)
    split = partition(
        {"x": _tagging_inner(), "y": gradtx.identity()},
        {"a": "x", "b": "y"},
        mask_compatible_extra_args=True,
    )
    out, _ = split.update(g, split.init(params), params, tags=tags)
    np.testing.assert_array_equal(out["a"], [11.0, 11.0])
    np.testing.assert_array_equal(out["b"], [1.0, 1.0])


def test_partition_unused_transform_holds_an_empty_tree():
    tx = partition({"used": gradtx.adam(0.1), "unused": gradtx.adam(0.1)}, lambda p: "used")
    state = tx.init(_params())
    assert isinstance(state, PartitionState)
    unused = state.inner_states["unused"][0]
    assert jax.tree.leaves(unused.mu) == [] and int(unused.count) == 0
    _, state = tx.update(_grads(0), state, _params())
    assert int(state.inner_states["unused"][0].count) == 1  # its count still ticks


def test_partition_vmap_over_learning_rates_equals_separate_runs():
    params, grads = _params(), [_grads(k) for k in range(3)]

    def run(lr):
        tx = partition({"a": gradtx.sgd(lr, 0.9), "b": gradtx.adam(lr)}, by_name_ab)
        state, out = tx.init(params), None
        for g in grads:
            out, state = tx.update(g, state, params)
        return out

    batched = jax.vmap(run)(jnp.array([0.01, 0.1]))
    for i, lr in enumerate([0.01, 0.1]):
        jax.tree.map(
            lambda b, s, i=i: np.testing.assert_allclose(b[i], s, rtol=1e-6), batched, run(lr)
        )


# ---------------------------------------------------------------- errors


def test_masked_rejects_bad_masks():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    with pytest.raises(TypeError, match="mask must be a pytree of bools.*got None"):
        masked(gradtx.adam(), None)
    with pytest.raises(TypeError, match=r"must be a bool.*got 1 at \['a'\]"):
        masked(gradtx.adam(), {"a": 1, "b": True})
    with pytest.raises(TypeError, match=r"array of shape \(2,\) at \['a'\]"):
        masked(gradtx.adam(), {"a": np.array([True, False]), "b": True})
    with pytest.raises(TypeError, match="init and update"):
        masked(lambda g: g, {"a": True})
    value_mask = masked(gradtx.adam(), lambda p: jax.tree.map(lambda x: jnp.all(x > 0), p))
    state = value_mask.init(params)  # concrete: fine eagerly
    with pytest.raises(TypeError, match=r"traced value at \['a'\]"):
        jax.jit(value_mask.update)(params, state, params)


def test_masked_names_the_paths_that_differ():
    tx = masked(gradtx.adam(), {"a": True, "b": False})
    with pytest.raises(ValueError, match=r"in the params but not in the mask: \['c'\]"):
        tx.init({"a": jnp.ones(1), "b": jnp.ones(1), "c": jnp.ones(1)})
    state = tx.init({"a": jnp.ones(1), "b": jnp.ones(1)})
    with pytest.raises(ValueError, match=r"missing from updates: \['b'\]"):
        tx.update({"a": jnp.ones(1)}, state, {"a": jnp.ones(1), "b": jnp.ones(1)})
    with pytest.raises(ValueError, match=r"in the mask but not in the updates: \['b'\]"):
        tx.update({"a": jnp.ones(1)}, state)


def test_partition_rejects_bad_labels_and_transforms():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    txs = {"x": gradtx.adam(), "y": gradtx.sgd(0.1)}
    with pytest.raises(ValueError, match=r"no transformation for the label\(s\) 'z'.*'x', 'y'"):
        partition(txs, {"a": "x", "b": "z"})  # at construction for a label tree
    late = partition(txs, lambda p: {"a": "x", "b": "zz"})
    with pytest.raises(ValueError, match=r"label\(s\) 'zz'"):
        late.init(params)
    with pytest.raises(TypeError, match=r"hashable.*at \['a'\]"):
        partition(txs, {"a": np.array(["x"]), "b": "y"})
    with pytest.raises(TypeError, match="mapping"):
        partition([gradtx.adam()], {"a": 0})
    with pytest.raises(ValueError, match="empty"):
        partition({}, {"a": "x"})
    with pytest.raises(TypeError, match="init and update"):
        partition({"x": 0.1}, {"a": "x"})
    tx = partition(txs, {"a": "x", "b": "y"})
    with pytest.raises(ValueError, match=r"in the params but not in the labels: \['c'\]"):
        tx.init({**params, "c": jnp.ones(1)})
    with pytest.raises(ValueError, match=r"missing from updates: \['b'\]"):
        tx.update({"a": jnp.ones(2)}, tx.init(params), params)
    other = partition({"x": gradtx.adam()}, {"a": "x", "b": "x"})
    with pytest.raises(
        ValueError,
        match=r"PartitionState with the labels 'x', 'y' \(from init\), got the labels 'x'\.",
    ):
        tx.update(params, other.init(params), params)


# ---------------------------------------------------------------- report


def report() -> list[list[str]]:
    """Rows ``[method, reference, max deviation f64, f32]`` for every case."""
    rows = []
    for case in CASES:
        with jax.enable_x64(True):
            f64 = case_deviations(case, "float64")
        f32 = case_deviations(case, "float32")
        rows.append([case.method, case.against, f"{f64:.1e}", f"{f32:.1e}"])
    return rows


def test_tree_map_params_finds_the_params_inside_a_masked_state():
    """tree.map_params runs init on a placeholder; masked passes it to its inner init."""
    params = {"a": jnp.ones(2), "b": [jnp.ones(3), jnp.ones(1)]}
    tx = gradtx.masked(gradtx.sgd(0.1, momentum=0.9), {"a": True, "b": [False, True]})
    state = tx.init(params)
    shapes = gradtx.tree.map_params(
        tx, lambda x: x.shape, state, transform_non_params=lambda _: "other"
    )
    assert shapes.inner_state[0].trace == {"a": (2,), "b": [None, (1,)]}
