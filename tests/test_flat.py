"""``flat(inner)`` computes what ``inner`` computes, on one buffer per dtype.

Every per-leaf method of gradtx is element-wise, so running it on the
concatenation of the leaves must give the same numbers. Each trajectory case
runs ``STEPS`` steps of an optimizer and of ``flat`` of the same optimizer, in
one jitted ``lax.scan`` each, from the same start on the same noisy quadratic
(the gradient depends on the params, so any difference compounds), over a tree
with float32 and bfloat16 leaves (float64, float32 and bfloat16 with x64), a
scalar leaf, nesting and a ``None`` leaf, and compares the params after every
step.

Tolerances (the brief's): float32 ``rtol 1e-6``, float64 ``rtol 1e-12``, with
an ``atol`` of about a tenth of that (the params are of order 1): one ulp at
1.0 in float32 (``2^-23``, not 1e-7, which is less than that ulp), 1e-13 in
float64. Measured: 0 for most cases, at most 1.2e-7 (float32) and 1.6e-16
(float64) relative to ``|plain| + 1`` for those that take a power or a root,
because XLA evaluates those with vector code for a long buffer and with scalar
code for the scalar leaf, and rounds a fused loop's last bit as its code
generator decides (NAdam's ``(5, 3)`` leaf moved by one ulp at 1.0 when a
``select`` left its fusion; the HLO arithmetic was the same).

bfloat16 leaves: XLA's CPU compiler runs by default with
``--xla_allow_excess_precision``, which lets a fusion keep a float32
intermediate instead of rounding it to bfloat16 (Adam's step rounded to
bfloat16 and then multiplied by the rate). Which roundings are skipped depends
on how each program is fused, so two programs that compute the same bfloat16
numbers in principle differ by an ulp now and then, and a chaotic method
(centered RMSProp in bfloat16, where ``nu - mu^2`` is a difference of rounded
numbers) amplifies that ulp. In this process the bfloat16 leaves are only
checked to be finite, moved and of their dtype; one test reruns every float32
case in a subprocess with the flag off and requires every leaf, bfloat16
included, to match at the float32 bound (measured: 0).

Run ``python -m tests.test_flat`` for the table of the largest deviations.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import subprocess
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.transforms.flat import FlatState, flat

STEPS = 120
RTOL = {"float32": 1e-6, "float64": 1e-12}
ATOL = {"float32": 2.0**-23, "float64": 1e-13}  # params are of order 1

# Leaf dtypes of the mixed tree, per run: the float64 run keeps a float32 and a
# bfloat16 leaf, so three buffers are cut and pasted.
DTYPES = {
    "float32": {"w": "float32", "b": "bfloat16", "s": "float32", "n": "bfloat16"},
    "float64": {"w": "float64", "b": "float32", "s": "float64", "n": "bfloat16"},
}
SHAPES = {"w": (5, 3), "b": (7,), "s": (), "n": (4, 2)}


def _nest(leaves: dict) -> dict:
    """The test tree: nesting, a scalar leaf and a ``None`` leaf."""
    return {
        "w": leaves["w"],
        "b": leaves["b"],
        "s": leaves["s"],
        "nest": [None, leaves["n"]],
    }


def _problem():
    rng = np.random.default_rng(7)
    draw = {
        "p0": {k: rng.normal(size=s) for k, s in SHAPES.items()},
        "curv": {k: rng.uniform(0.3, 2.0, size=s) for k, s in SHAPES.items()},
        "target": {k: rng.normal(size=s) for k, s in SHAPES.items()},
        "noise": {k: 0.5 * rng.normal(size=(STEPS, *s)) for k, s in SHAPES.items()},
    }
    return draw


PROBLEM = _problem()


def _data(kind: str):
    """The problem as trees of the run's dtypes (call inside the x64 context for float64)."""

    def cast(values):
        return _nest({k: jnp.asarray(values[k], DTYPES[kind][k]) for k in SHAPES})

    return {name: cast(values) for name, values in PROBLEM.items()}


def _gradient(p, curv, target, noise):
    c = gradtx.tree.compute_dtype(p.dtype)
    return (curv.astype(c) * (p.astype(c) - target.astype(c)) + noise.astype(c)).astype(p.dtype)


def _path(tx, data):
    """Params after each of ``STEPS`` steps (params are always passed to update)."""

    def body(carry, noise):
        p, s = carry
        g = jax.tree.map(_gradient, p, data["curv"], data["target"], noise)
        u, s = tx.update(g, s, p)
        p = gradtx.apply_updates(p, u)
        return (p, s), p

    return jax.lax.scan(body, (data["p0"], tx.init(data["p0"])), data["noise"])[1]


def run_both(make: Callable[[], gradtx.GradientTransformation], kind: str):
    """(plain trajectory, flat trajectory), both jitted; x64 must be set by the caller."""
    return run_many([make], kind)[0]


def run_many(makes, kind: str):
    """``[run_both(make, kind) for make in makes]``, traced into one jitted function.

    Independent scans side by side in one program: one compilation instead of one
    per case, the same arithmetic per scan.
    """
    data = _data(kind)
    return jax.jit(lambda d: [(_path(make(), d), _path(flat(make()), d)) for make in makes])(data)


# The cases of one kind are compiled in groups of GROUP consecutive (sorted) names;
# a test computes its group the first time one of its members runs in this
# process, and a group's tests share an xdist worker (``--dist loadgroup``).
GROUP = 5


@functools.cache
def _group_paths(kind: str, index: int):
    names = SORTED_CASES[index * GROUP : (index + 1) * GROUP]
    return run_many([CASES[name] for name in names], kind)


def grouped_run_both(name: str, kind: str):
    """``run_both(CASES[name], kind)``, compiled with its group (x64 set by the caller)."""
    index = SORTED_CASES.index(name)
    return _group_paths(kind, index // GROUP)[index % GROUP]


def deviation(a, b) -> float:
    """``max |a - b| / (|b| + 1)`` over every step and element."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(
        float(
            np.max(
                np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))
                / (1 + np.abs(np.asarray(y, np.float64)))
            )
        )
        for x, y in pairs
    )


def assert_same(plain, flat_path, *, bfloat16_too: bool = False):
    """Every leaf of the trajectories within its dtype's bound (see the module docstring)."""
    for x, y in zip(jax.tree.leaves(flat_path), jax.tree.leaves(plain), strict=True):
        assert x.dtype == y.dtype
        x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert np.all(np.isfinite(x64))
        # Every leaf moved, so agreement is not the trivial one of a frozen leaf.
        assert np.max(np.abs(x64[-1] - x64[0])) > 1e-2
        if x.dtype == jnp.bfloat16 and not bfloat16_too:
            continue
        tol = "float64" if x.dtype == jnp.float64 else "float32"
        np.testing.assert_allclose(x64, y64, rtol=RTOL[tol], atol=ATOL[tol])


def _schedule(count):
    return 0.05 / (1 + 0.05 * count)


def _chain_with_decay():
    return gradtx.chain(
        gradtx.add_decayed_weights(1e-2),
        gradtx.scale_by_adam(b1=0.8, eps_root=1e-8),
        gradtx.scale_by_learning_rate(_schedule),
    )


# Every per-leaf method of gradtx, with the options that change its arithmetic.
CASES: dict[str, Callable[[], gradtx.GradientTransformation]] = {
    "sgd": lambda: gradtx.sgd(0.05),
    "sgd_schedule": lambda: gradtx.sgd(_schedule),
    "momentum": lambda: gradtx.momentum(0.05, 0.9),
    "momentum_in_velocity": lambda: gradtx.momentum(_schedule, 0.9, learning_rate_in_velocity=True),
    "nesterov_momentum": lambda: gradtx.nesterov_momentum(0.05, 0.8),
    "adam": lambda: gradtx.adam(0.05),
    "adam_nesterov_eps_hat": lambda: gradtx.adam(0.05, nesterov=True, eps_hat=True),
    "adamw": lambda: gradtx.adamw(0.05, weight_decay=0.1),
    "rmsprop": lambda: gradtx.rmsprop(0.01),
    "rmsprop_centered_momentum": lambda: gradtx.rmsprop(
        0.01, centered=True, momentum=0.9, nesterov=True, bias_correction=True
    ),
    "adagrad": lambda: gradtx.adagrad(0.1),
    "adadelta": lambda: gradtx.adadelta(None, weight_decay=0.01),
    "amsgrad": lambda: gradtx.amsgrad(0.05),
    "adamax": lambda: gradtx.adamax(0.05),
    "nadam": lambda: gradtx.nadam(0.05),
    "nadam_constant_momentum": lambda: gradtx.nadam(0.05, momentum_decay=None),
    "chain_decay_adam_schedule": _chain_with_decay,
    "named_chain": lambda: gradtx.named_chain(
        ("clip", gradtx.scale_by_stddev(0.9)), ("step", gradtx.scale_by_learning_rate(0.01))
    ),
    "optax_adamw": lambda: optax.adamw(0.05, weight_decay=0.1),
}


SORTED_CASES = sorted(CASES)


def _grouped(kind: str) -> list:
    """``SORTED_CASES``, each marked with its group (one xdist worker per group)."""
    return [
        pytest.param(name, marks=pytest.mark.xdist_group(f"flat-{kind}-{i // GROUP}"))
        for i, name in enumerate(SORTED_CASES)
    ]


@pytest.mark.parametrize("name", _grouped("float32"))
def test_same_trajectory_float32(name):
    plain, flat_path = grouped_run_both(name, "float32")
    assert_same(plain, flat_path)


@pytest.mark.parametrize("name", _grouped("float64"))
def test_same_trajectory_float64(name):
    with jax.enable_x64(True):
        plain, flat_path = grouped_run_both(name, "float64")
        assert_same(plain, flat_path)
        assert {x.dtype.name for x in jax.tree.leaves(flat_path)} == {
            "float64",
            "float32",
            "bfloat16",
        }


def check_every_float32_case() -> dict[str, str]:
    """Runs every float32 case comparing bfloat16 leaves too: ``{case: failure}``."""
    failures = {}
    for name in SORTED_CASES:
        try:
            assert_same(*grouped_run_both(name, "float32"), bfloat16_too=True)
        except AssertionError as error:
            failures[name] = str(error)[:400]
    return failures


def test_bfloat16_leaves_match_too_without_excess_precision():
    # See the module docstring: in a process where XLA rounds every bfloat16
    # intermediate, the bfloat16 leaves of flat and of the plain run agree too.
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_allow_excess_precision=false".strip()
    code = "import json; from tests import test_flat as t; "
    code += "print(json.dumps(t.check_every_float32_case()))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=pathlib.Path(__file__).resolve().parents[1],
        env={**os.environ, "XLA_FLAGS": flags},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {}


# ---------------------------------------------------------------- the state


def _scan_updates(tx, params, grads, pass_params=True):
    """The updates for a stack of gradients (one per step), and the final state."""

    def body(state, g):
        u, state = tx.update(g, state, params if pass_params else None)
        return state, u

    return jax.lax.scan(body, tx.init(params), grads)


def assert_close(got, expected, rtol=1e-6):
    """float32 bound for updates of a few steps: two programs fused differently may
    evaluate a power or a root with vector and scalar code, one ulp apart."""
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        wide = np.complex128 if jnp.iscomplexobj(x) else np.float64
        x, y = np.asarray(x).astype(wide), np.asarray(y).astype(wide)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol / 10)


def _noisy_grads(params, steps, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=(steps, *jnp.shape(p))), p.dtype), params
    )


def test_state_holds_one_buffer_per_dtype_and_reads_back_as_a_tree():
    params = _data("float32")["p0"]
    grads = _noisy_grads(params, 3)
    inner = gradtx.adam(0.05)

    @jax.jit
    def both():
        return _scan_updates(flat(inner), params, grads)[0], _scan_updates(inner, params, grads)[0]

    state, plain_state = both()
    assert isinstance(state, FlatState)
    mu = state.inner_state[0].mu
    assert {k: (v.shape, v.dtype.name) for k, v in mu.items()} == {
        "bfloat16": ((15,), "bfloat16"),
        "float32": ((16,), "float32"),
    }
    # ``to_tree`` cuts a buffer dict back into the params' tree, None leaf included.
    assert_close(state.to_tree(mu), plain_state[0].mu)
    assert_close(state.to_tree(state.inner_state[0].nu), plain_state[0].nu)


def test_jit_compiles_once_and_the_state_structure_is_stable():
    data = _data("float32")
    tx = flat(gradtx.adamw(0.05, weight_decay=0.1))
    traces = []

    @jax.jit
    def step(p, s, g):
        traces.append(1)
        u, s = tx.update(g, s, p)
        return gradtx.apply_updates(p, u), s

    p, s = data["p0"], tx.init(data["p0"])
    structure = jax.tree.structure(s)
    dtypes = [x.dtype for x in jax.tree.leaves(s)]
    grads = _noisy_grads(p, 3)
    for k in range(3):
        p, s = step(p, s, jax.tree.map(lambda g, k=k: g[k], grads))
        assert jax.tree.structure(s) == structure
        assert [x.dtype for x in jax.tree.leaves(s)] == dtypes
    assert len(traces) == 1


def _distinct_kernels(compiled_text: str) -> int:
    """The number of different fused computations, their names and metadata aside."""
    bodies = re.findall(r"^%fused_computation\S* \((.*?)^}", compiled_text, re.M | re.S)
    names = r"%[\w.\-]+|\bparam_[\d.]+|, metadata=\{[^}]*\}"
    normalised = {re.sub(names, "", body).strip() for body in bodies}
    return len(normalised)


def _same_shaped_leaves():
    params = {f"p{i:02d}": jnp.full((7,), 0.1 * i) for i in range(40)}
    grads = {k: jnp.full((7,), 0.01 * (1 + i)) for i, k in enumerate(params)}
    return params, grads


def _jitted_step(tx):
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return gradtx.apply_updates(p, u), s

    return jax.jit(step)


@pytest.mark.perf
@pytest.mark.skipif(
    jax.default_backend() != "cpu",
    reason="a property of XLA:CPU's kernels; XLA:GPU fuses the cuts otherwise",
)
@pytest.mark.parametrize("share_kernels", [True, False])
def test_leaves_of_one_shape_share_one_kernel(share_kernels):
    # XLA:CPU compiles each distinct kernel once; with the offsets as runtime
    # values, the 40 same-shaped leaves are cut by one kernel, not 40 (measured
    # compile times: benchmarks/xla_cpu_limits.py).
    params, grads = _same_shaped_leaves()
    tx = flat(gradtx.adam(1e-2), share_kernels=share_kernels)
    text = _jitted_step(tx).lower(params, tx.init(params), grads).compile().as_text()
    kernels = _distinct_kernels(text)
    if share_kernels:
        assert kernels <= 12  # Adam on the buffers, the count, the loop: one cut for all 40
    else:
        assert kernels >= 40


def test_shared_kernels_give_the_same_numbers():
    params, grads = _same_shaped_leaves()
    paths = []
    for tx in (
        flat(gradtx.adam(1e-2), share_kernels=True),
        flat(gradtx.adam(1e-2), share_kernels=False),
        gradtx.adam(1e-2),
    ):
        step, p, s = _jitted_step(tx), params, tx.init(params)
        for _ in range(20):
            p, s = step(p, s, grads)
        paths.append(p)
    shared, per_leaf, plain = paths
    for k in params:
        # The same program on the buffers, cut at other offsets: bit for bit.
        np.testing.assert_array_equal(np.asarray(shared[k]), np.asarray(per_leaf[k]))
        # Leaf by leaf, XLA may evaluate the root by other code (module docstring):
        # an ulp of the update, absolute here since a leaf starts at 0.
        np.testing.assert_allclose(
            np.asarray(shared[k]), np.asarray(plain[k]), rtol=1e-6, atol=1e-8
        )


def test_leaves_from_pack_below_up_keep_a_buffer_of_their_own():
    params = {"big": jnp.full((4, 5), 0.5), "small": jnp.ones(3), "tiny": jnp.zeros(())}
    grads = {"big": jnp.full((4, 5), 0.1), "small": jnp.full(3, -0.2), "tiny": jnp.array(0.3)}
    split = flat(gradtx.adam(1e-2), pack_below=20)
    state = split.init(params)
    # Leaves in tree order: big (20 elements, its own buffer), small, tiny (packed).
    assert state.layout.sizes == (("float32", 4), ("float32:0", 20))
    assert {k: v.shape for k, v in state.inner_state[0].mu.items()} == {
        "float32": (4,),
        "float32:0": (4, 5),  # the leaf itself, in its shape
    }
    packed = flat(gradtx.adam(1e-2), pack_below=None)
    assert packed.init(params).layout.sizes == (("float32", 24),)
    paths = []
    for tx in (split, packed, gradtx.adam(1e-2)):
        step, p, s = _jitted_step(tx), params, tx.init(params)
        for _ in range(20):
            p, s = step(p, s, grads)
        paths.append(p)
    for k in params:
        np.testing.assert_array_equal(np.asarray(paths[0][k]), np.asarray(paths[1][k]))
        np.testing.assert_allclose(
            np.asarray(paths[0][k]), np.asarray(paths[2][k]), rtol=1e-6, atol=1e-8
        )
    assert float(paths[0]["big"][0, 0]) < 0.5  # it moved


@pytest.mark.perf
def test_a_leaf_with_a_buffer_of_its_own_is_not_copied():
    # The step of a lone large leaf needs no temporary: the buffer is the leaf.
    params = {"w": jnp.ones((256, 256))}
    tx = flat(gradtx.adam(1e-3))
    step = jax.jit(
        lambda p, s, g: (lambda u, s: (gradtx.apply_updates(p, u), s))(*tx.update(g, s, p)),
        donate_argnums=(0, 1),
    )
    compiled = step.lower(params, tx.init(params), params).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < 4 * 256 * 256


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "16"])
def test_pack_below_must_be_a_positive_integer_or_none(bad):
    with pytest.raises(ValueError, match="pack_below must be an integer >= 1 or None"):
        flat(gradtx.sgd(0.1), pack_below=bad)


def test_updates_come_back_in_each_gradients_dtype():
    # Mixed precision: float32 gradients for bfloat16 params. The state's buffer
    # stays bfloat16; the updates are float32 like the gradients, and equal to
    # the leaf-by-leaf run's.
    params = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.full((2, 2), 2.0, jnp.bfloat16)}
    grads = _noisy_grads(jax.tree.map(lambda p: p.astype(jnp.float32), params), 4)
    inners = (gradtx.adam(0.1), gradtx.rmsprop(0.1, momentum=0.9), gradtx.sgd(0.1, 0.9))

    @jax.jit
    def run():
        return [
            (_scan_updates(flat(i), params, grads), _scan_updates(i, params, grads)) for i in inners
        ]

    for (state, updates), (_, expected) in run():
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(updates))
        buffers = [x for x in jax.tree.leaves(state.inner_state) if x.ndim]  # not the counts
        assert buffers and all(x.dtype == jnp.bfloat16 for x in buffers)
        # The bfloat16 moments may reach the update rounded or not (XLA's excess
        # precision, module docstring), so the bound is bfloat16's rounding, 2^-8.
        assert_close(updates, expected, rtol=2**-8)


def test_complex_leaves_get_their_own_buffer():
    rng = np.random.default_rng(1)
    params = {
        "z": jnp.asarray(rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2)), jnp.complex64),
        "x": jnp.asarray(rng.normal(size=4), jnp.float32),
        "y": jnp.asarray(rng.normal(size=2) + 1j * rng.normal(size=2), jnp.complex64),
    }
    grads = jax.tree.map(
        lambda g, p: (g * (1 + 1j) if jnp.iscomplexobj(p) else g).astype(p.dtype),
        _noisy_grads(jax.tree.map(lambda p: p.real, params), 20),
        params,
    )
    inners = (gradtx.adam(0.05), gradtx.adagrad(0.1), gradtx.rmsprop(0.01, centered=True))

    @jax.jit
    def run():
        return [
            (_scan_updates(flat(i), params, grads, False), _scan_updates(i, params, grads, False))
            for i in inners
        ]

    for (state, updates), (_, expected) in run():
        assert state.layout.sizes == (("complex64", 8), ("float32", 4))
        assert_close(updates, expected)
        assert jnp.iscomplexobj(updates["z"]) and not jnp.iscomplexobj(updates["x"])


@pytest.mark.parametrize("empty", [{}, [], None, {"a": None}])
def test_empty_tree(empty):
    tx = flat(gradtx.adam(0.1))
    state = tx.init(empty)
    updates, state = jax.jit(tx.update)(empty, state, empty)
    assert jax.tree.structure(updates) == jax.tree.structure(empty)
    assert int(state.inner_state[0].count) == 1


def test_vmap_over_a_batch_of_params_and_over_a_learning_rate():
    # float32 leaves only: bfloat16 leaves are compared in the subprocess test.
    p0 = jax.tree.map(lambda p: p.astype(jnp.float32), _data("float32")["p0"])
    batch = jax.tree.map(lambda p: jnp.stack([p, 2 * p, -p]), p0)
    grads = jax.tree.map(lambda p: (jnp.sin(p.astype(jnp.float32)) + 0.1).astype(p.dtype), batch)
    inner = gradtx.adam(0.05)

    def two_steps(tx, p, g):
        s = tx.init(p)
        u, s = tx.update(g, s, p)
        return tx.update(g, s, p)[0]

    # A batch of params (init and update under vmap), in one program with the plain run.
    got, expected = jax.jit(
        lambda: (
            jax.vmap(lambda p, g: two_steps(flat(inner), p, g))(batch, grads),
            jax.vmap(lambda p, g: two_steps(inner, p, g))(batch, grads),
        )
    )()
    assert_close(got, expected)

    # A batch of learning rates: the rate is a tracer inside the flat optimizer.
    lrs = jnp.array([0.01, 0.1, 0.3])
    g0 = jax.tree.map(lambda x: x[0], grads)
    got, expected = jax.jit(
        lambda: (
            jax.vmap(lambda lr: two_steps(flat(gradtx.sgd(lr, 0.9)), p0, g0))(lrs),
            [two_steps(gradtx.sgd(lr, 0.9), p0, g0) for lr in (0.01, 0.1, 0.3)],
        )
    )()
    for i in range(3):
        assert_close(jax.tree.map(lambda x, i=i: x[i], got), expected[i])


def test_composes_with_chain_and_inject_hyperparams():
    from gradtx.transforms.inject import inject_hyperparams

    params = jax.tree.map(lambda p: p.astype(jnp.float32), _data("float32")["p0"])
    grads = _noisy_grads(params, 5)

    def flat_adam(learning_rate: float = 0.05):
        return flat(gradtx.adam(learning_rate))

    injected = inject_hyperparams(flat_adam)(learning_rate=0.05)
    chained = gradtx.chain(gradtx.scale(0.5), flat(gradtx.sgd(0.1, 0.9)))

    @jax.jit
    def run():
        return (
            _scan_updates(injected, params, grads)[1],
            _scan_updates(gradtx.adam(0.05), params, grads)[1],
            _scan_updates(chained, params, grads)[1],
            _scan_updates(gradtx.chain(gradtx.scale(0.5), gradtx.sgd(0.1, 0.9)), params, grads)[1],
        )

    injected_updates, adam_updates, chained_updates, sgd_updates = run()
    # Rounding of 1 - b2 differs between injected and plain Adam: see tests/test_inject.py.
    assert_close(injected_updates, adam_updates, rtol=2e-5)
    assert_close(chained_updates, sgd_updates)


# ---------------------------------------------------------------- extra args and masks


def _times_value(owner="times_value"):
    """A block that scales the updates by the loss at the params: uses ``value_fn``."""

    def init_fn(params):
        del params
        return gradtx.EmptyState()

    def update_fn(updates, state, params=None, *, value_fn, scale=1.0):
        factor = value_fn(params) * scale
        return jax.tree.map(lambda u: (u * factor).astype(u.dtype), updates), state

    return gradtx.GradientTransformation(init_fn, update_fn)


def test_value_fn_sees_the_params_tree_and_other_extra_args_pass_through():
    params = {"w": jnp.arange(3.0), "b": jnp.ones(2, jnp.bfloat16)}
    grads = jax.tree.map(jnp.ones_like, params)
    seen = []

    def value_fn(p):
        seen.append(jax.tree.structure(p))
        return jnp.sum(p["w"] ** 2) + jnp.sum(p["b"].astype(jnp.float32))

    tx = gradtx.chain(_times_value(), gradtx.scale(-1.0))
    expected, _ = tx.update(grads, tx.init(params), params, value_fn=value_fn, scale=2.0, unknown=1)
    got, _ = flat(tx).update(
        grads, flat(tx).init(params), params, value_fn=value_fn, scale=2.0, unknown=1
    )
    assert seen == [jax.tree.structure(params)] * 2
    jax.tree.map(np.testing.assert_array_equal, got, expected)
    assert float(got["w"][0]) == -2.0 * 7.0


def test_a_mask_tree_inside_flat_is_refused_and_the_recipe_outside_works():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    grads = {"w": jnp.full((2, 2), 0.5), "b": jnp.full(2, -0.5)}
    mask = {"w": True, "b": False}
    tx = flat(gradtx.adamw(0.1, weight_decay=0.1, mask=mask))
    with pytest.raises(ValueError, match="one 1-D buffer per dtype.*mask"):
        tx.update(grads, tx.init(params), params)
    # The recipe of the module docstring: the masked decay outside flat.
    outside = gradtx.chain(
        flat(gradtx.scale_by_adam()),
        gradtx.add_decayed_weights(0.1, mask),
        gradtx.scale_by_learning_rate(0.1),
    )
    plain = gradtx.adamw(0.1, weight_decay=0.1, mask=mask)
    got = outside.update(grads, outside.init(params), params)[0]
    expected = plain.update(grads, plain.init(params), params)[0]
    jax.tree.map(np.testing.assert_array_equal, got, expected)


# ---------------------------------------------------------------- errors


def test_structure_and_shape_mismatches_name_the_paths():
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(2)}
    tx = flat(gradtx.adam(0.1))
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"missing from updates: \['b'\]"):
        tx.update({"w": jnp.ones((2, 3))}, state)
    with pytest.raises(ValueError, match=r"leaf \['w'\] has shape \(3, 2\).*\(2, 3\)"):
        tx.update({"w": jnp.ones((3, 2)), "b": jnp.ones(2)}, state)
    with pytest.raises(ValueError, match=r"params leaf \['b'\] has shape \(3,\)"):
        tx.update(params, state, {"w": jnp.ones((2, 3)), "b": jnp.ones(3)})


def test_inner_must_be_a_transformation():
    with pytest.raises(TypeError, match="flat: inner must be a transformation"):
        flat(gradtx.adam)


# ---------------------------------------------------------------- Optax


def test_same_as_optax_flatten_on_a_float32_tree():
    # optax.flatten ravels everything into one vector (promoting dtypes); on a tree
    # of one dtype it is the same computation as flat.
    data = {
        "p0": {
            "w": jnp.asarray(PROBLEM["p0"]["w"], jnp.float32),
            "s": jnp.asarray(PROBLEM["p0"]["s"], jnp.float32),
        },
    }
    grads = [jax.tree.map(lambda p, k=k: jnp.cos(p + k), data["p0"]) for k in range(30)]
    ours, theirs = flat(gradtx.adam(0.05)), optax.flatten(optax.adam(0.05))
    s, t = ours.init(data["p0"]), theirs.init(data["p0"])
    for g in grads:
        u, s = ours.update(g, s)
        v, t = theirs.update(g, t)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), u, v)


def test_keeps_bfloat16_where_optax_flatten_promotes():
    params = {"w": jnp.ones(3, jnp.float32), "b": jnp.ones(2, jnp.bfloat16)}
    ours = flat(gradtx.adam(0.1)).init(params).inner_state[0].mu
    theirs = optax.flatten(optax.adam(0.1)).init(params)[0].mu
    assert {k: v.dtype.name for k, v in ours.items()} == {
        "bfloat16": "bfloat16",
        "float32": "float32",
    }
    assert theirs.dtype == jnp.float32 and theirs.shape == (5,)


def test_flax_nnx_optimizer_steps_like_the_plain_one():
    # nnx.Optimizer calls init on Variable-wrapped params and update on plain arrays.
    from flax import nnx

    def train(tx):
        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)

        @nnx.jit
        def step(model, optimizer):
            loss, grads = nnx.value_and_grad(lambda m: jnp.sum((m(x) - 0.5) ** 2))(model)
            optimizer.update(model, grads)
            return loss

        losses = [float(step(model, optimizer)) for _ in range(5)]
        return losses, nnx.state(model, nnx.Param)

    losses, params = train(flat(gradtx.adam(0.05)))
    plain_losses, plain_params = train(gradtx.adam(0.05))
    assert losses[-1] < losses[0]
    # float32 bound (the module docstring): the same numbers up to an ulp of fusion.
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), params, plain_params
    )


# ---------------------------------------------------------------- report


def deviations_by_dtype(a, b) -> dict[str, float]:
    """``deviation`` per leaf dtype: ``{dtype name: largest over its leaves}``."""
    out: dict[str, float] = {}
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        out[x.dtype.name] = max(out.get(x.dtype.name, 0.0), deviation(x, y))
    return out


def report() -> str:
    """Markdown table: the largest deviation of ``flat(tx)`` from ``tx``, per leaf dtype."""
    rows = []
    for name, make in sorted(CASES.items()):
        devs = [deviations_by_dtype(*run_both(make, "float32")[::-1])]
        with jax.enable_x64(True):
            devs.append(deviations_by_dtype(*run_both(make, "float64")[::-1]))
        worst = {k: max(d.get(k, 0.0) for d in devs) for k in ("float64", "float32", "bfloat16")}
        rows.append(
            f"| flat({name}) | {name} leaf by leaf | {worst['float64']:.1e} | "
            f"{worst['float32']:.1e} | {worst['bfloat16']:.1e} |"
        )
    header = "| method | reference | max deviation f64 | f32 | bf16 |\n|---|---|---|---|---|"
    return "\n".join([header, *rows])


if __name__ == "__main__":
    excess = "--xla_allow_excess_precision=false" not in os.environ.get("XLA_FLAGS", "")
    print(f"{STEPS} jitted steps, every step compared.")
    print("deviation = max |flat - plain| / (|plain| + 1), per leaf dtype over both runs.")
    if excess:
        print(
            "bf16 under XLA's default excess precision (see the module docstring); run with\n"
            "XLA_FLAGS=--xla_allow_excess_precision=false for the rounding-exact comparison."
        )
    print()
    print(report())
