"""Muon (gradtx.muon, scale_by_muon): against Optax's contrib Muon, the float64
reference of tests/reference/muon.py, each convention switch, and bad input.

Every trajectory group is one jitted program (a ``lax.scan`` per case, side by
side), so each group costs one compilation per dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gradtx
from tests.reference import muon as reference
from tests.test_optax_parity import assert_moved, assert_trees_close, run_pairs

OD = optax.contrib.MuonDimensionNumbers
GD = gradtx.MuonDimensionNumbers


def _muon_mask(params):
    return jax.tree.map(lambda x: x.ndim == 2, params)


def _block_pair(**kwargs):
    """scale_by_muon alone on the matrices (SGD on the rest), in each library.

    Optax's block takes no ``None`` dimension numbers on a tree (it fails on a
    dict), so both get them from a function of the updates.
    """
    lr = -0.02
    ours = gradtx.chain(
        gradtx.masked(
            gradtx.scale_by_muon(**kwargs, weight_dimension_numbers=lambda u: jax.tree.map(
                lambda _: GD(), u)),
            _muon_mask,
        ),
        gradtx.scale(lr),
    )  # fmt: skip
    theirs = optax.chain(
        optax.masked(
            optax.contrib.scale_by_muon(**kwargs, weight_dimension_numbers=lambda u: jax.tree.map(
                lambda _: OD(), u)),
            _muon_mask,
        ),
        optax.scale(lr),
    )  # fmt: skip
    return lambda: ours, lambda: theirs


def _pair(**kwargs):
    """``muon(0.02, **kwargs)`` in gradtx and in Optax (dimension numbers translated)."""
    theirs = dict(kwargs)
    spec = kwargs.get("muon_weight_dimension_numbers")
    if isinstance(spec, dict):
        translate = lambda d: None if d is None else OD(d.reduction_axis, d.output_axis)  # noqa: E731
        theirs["muon_weight_dimension_numbers"] = jax.tree.map(
            translate, spec, is_leaf=lambda d: d is None or isinstance(d, GD)
        )
    return (lambda: gradtx.muon(0.02, **kwargs), lambda: optax.contrib.muon(0.02, **theirs))


def _schedule(count):
    return 0.01 / (1.0 + 0.05 * count)


# The parity problem's params (tests/test_optax_parity.py): w (5, 3) a tall
# matrix, b (3,) a bias, quad = [(2, 3) a wide matrix, () a scalar].
OPTAX_CASES = {
    "default": _pair(),
    "aol, no nesterov": _pair(preconditioning="aol", nesterov=False),
    "adaptive, spectral": _pair(adaptive=True, preconditioning="spectral"),
    "schatten, dion preset": _pair(preconditioning="schatten", ns_coeffs="dion"),
    "3 steps, beta 0.9, consistent rms, masked decay, adam options": _pair(
        ns_steps=3,
        beta=0.9,
        consistent_rms=0.2,
        weight_decay=0.1,
        weight_decay_mask={"w": True, "b": True, "quad": [False, False]},
        adam_b1=0.8,
        adam_b2=0.99,
        adam_weight_decay=0.01,
        adam_learning_rate=_schedule,
    ),
    "dimension numbers: w by rows, wide matrix to adam, b to adam": _pair(
        muon_weight_dimension_numbers={
            "w": GD(1, 0),
            "b": None,
            "quad": [None, None],
        }
    ),
    "scale_by_muon": _block_pair(),
}


@functools.cache
def _optax_runs(dtype):
    return run_pairs([(a, b, 1.0) for a, b in OPTAX_CASES.values()], dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_trajectory_as_optax_contrib_muon(dtype):
    with jax.enable_x64(dtype == "float64"):
        runs = _optax_runs(jnp.dtype(dtype))
        for name, (ours, theirs) in zip(OPTAX_CASES, runs, strict=True):
            assert jax.tree.leaves(ours)[0].dtype == jnp.dtype(dtype), name
            assert_moved(ours, 0.01)
            scale = max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(theirs))
            gap = max(
                float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True)
            )
            print(f"{dtype} {name}: max |gradtx - optax| = {gap:.2e} (params up to {scale:.2f})")
            assert_trees_close(ours, theirs, rtol=MUON_RTOL[dtype], atol=MUON_RTOL[dtype] * scale)


# One jitted step of gradtx's Muon is bit-identical to Optax's (same operations in
# the same order). Over a trajectory the two scans are compiled side by side and
# XLA:CPU fuses them differently, which costs an ulp now and then; Newton-Schulz
# multiplies an error in a small singular direction by up to a^k (3.4^5 ~ 480)
# and the loss feeds it back. So the bound is 1e-6 (float32) relative to the
# trajectory's scale (params up to ~2.8): measured at most 1.9e-6 absolute (aol
# without Nesterov; <= 1e-6 the others; 2.2e-6 for adaptive alone under the test
# suite's XLA flags). float64: <= 3.5e-15.
MUON_RTOL = {"float32": 1e-6, "float64": 1e-12}


def test_optax_dimension_numbers_for_a_stack_of_matrices():
    """A (2, 3, 4) leaf read as (fan_in = 2 * 3, fan_out = 4), and as 2 matrices (3, 4)."""
    rng = np.random.default_rng(3)
    params = {"k": jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)}
    grads = [{"k": jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)} for _ in range(4)]
    for g_dims, o_dims in (
        (GD((0, 1), 2), OD((0, 1), 2)),
        (GD(1, 2), OD(1, 2)),
        (GD(-1, 0), OD(-1, 0)),
    ):
        ours = gradtx.muon(0.1, muon_weight_dimension_numbers={"k": g_dims})
        theirs = optax.contrib.muon(0.1, muon_weight_dimension_numbers={"k": o_dims})
        s_ours, s_theirs = ours.init(params), theirs.init(params)
        for g in grads:
            u_ours, s_ours = ours.update(g, s_ours, params)
            u_theirs, s_theirs = theirs.update(g, s_theirs, params)
            np.testing.assert_allclose(u_ours["k"], u_theirs["k"], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------- reference

_RNG = np.random.default_rng(20240101)
THETA0 = [_RNG.normal(size=(4, 3)), _RNG.normal(size=(2, 5)), _RNG.normal(size=3)]
MATRIX = [True, True, False]
REF_STEPS = 120
GRADS = [_RNG.normal(size=(REF_STEPS, *np.shape(t))) for t in THETA0]
GRADS_BY_STEP = [[g[k] for g in GRADS] for k in range(REF_STEPS)]

# (gradtx kwargs, reference kwargs)
REF_CASES = {
    "optax form (bias-corrected nesterov)": ({}, {}),
    "no nesterov": ({"nesterov": False}, {"nesterov": False}),
    "torch form (no correction), nesterov": (
        {"bias_correction": False},
        {"bias_correction": False},
    ),
    "torch form, no nesterov": (
        {"bias_correction": False, "nesterov": False},
        {"bias_correction": False, "nesterov": False},
    ),
    "match_rms_adamw, decay, beta 0.9": (
        {"adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.1, "beta": 0.9},
        {"consistent_rms": 0.2, "lam": 0.1, "beta": 0.9},
    ),
    "original, 3 steps": ({"adjust_lr_fn": "original", "ns_steps": 3}, {"steps": 3}),
}


def _scan(tx, params, grads):
    def body(carry, g):
        p, state = carry
        updates, state = tx.update(g, state, p)
        p = gradtx.apply_updates(p, updates)
        return (p, state), p

    return jax.lax.scan(body, (params, tx.init(params)), grads)[1]


@functools.cache
def _gradtx_reference_runs(dtype):
    with jax.enable_x64(dtype == "float64"):
        params = [jnp.asarray(t, dtype) for t in THETA0]
        grads = [jnp.asarray(g, dtype) for g in GRADS]
        txs = [gradtx.muon(0.02, **kw) for kw, _ in REF_CASES.values()]
        runs = jax.jit(lambda p, g: [_scan(tx, p, g) for tx in txs])(params, grads)
        return [[np.asarray(leaf, np.float64) for leaf in run] for run in runs]


# float32 against float64: the iteration's rounding, ~1e-7 of O, is amplified in
# the directions of small singular values; over 120 steps of size 0.02 the params
# drift by at most ~3e-6 (measured 1.2e-6). float64: measured below 1e-13.
REF_TOL = {"float32": 5e-6, "float64": 1e-11}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_trajectory_matches_float64_reference(dtype):
    runs = _gradtx_reference_runs(dtype)
    for (name, (_, ref_kwargs)), got in zip(REF_CASES.items(), runs, strict=True):
        want = reference.muon(THETA0, GRADS_BY_STEP, 0.02, matrix=MATRIX, **ref_kwargs)
        for have, expected in zip(got, want, strict=True):
            assert np.max(np.abs(expected[-1] - expected[0])) > 0.05, name
            np.testing.assert_allclose(have, expected[1:], atol=REF_TOL[dtype], err_msg=name)


def test_the_conventions_compared_are_far_apart():
    """Each switch changes the trajectory far beyond the float32 tolerance."""
    runs = _gradtx_reference_runs("float64")
    by_name = dict(zip(REF_CASES, runs, strict=True))
    pairs = [
        ("optax form (bias-corrected nesterov)", "torch form (no correction), nesterov"),
        ("optax form (bias-corrected nesterov)", "original, 3 steps"),
    ]
    for a, b in pairs:
        gap = max(np.max(np.abs(x - y)) for x, y in zip(by_name[a], by_name[b], strict=True))
        assert gap > 100 * REF_TOL["float32"], (a, b, gap)


def test_newton_schulz_orthogonalises():
    """Many steps of a converging quintic (15/8, -10/8, 3/8) give U V^T of the SVD."""
    rng = np.random.default_rng(0)
    g = rng.normal(size=(6, 4))
    with jax.enable_x64(True):
        tx = gradtx.scale_by_muon((15 / 8, -10 / 8, 3 / 8), 25, beta=0.0, nesterov=False)
        out = tx.update(jnp.asarray(g), tx.init(jnp.asarray(g)))[0]
    u, _, vt = np.linalg.svd(g, full_matrices=False)
    np.testing.assert_allclose(np.asarray(out), u @ vt, atol=1e-10)
    np.testing.assert_allclose(
        np.asarray(out), reference.newton_schulz(g, (15 / 8, -10 / 8, 3 / 8), 25), atol=1e-12
    )


# ---------------------------------------------------------------------- switches


def test_adjust_lr_fn_names_optaxs_scales():
    """``original`` is Optax's default scale, ``match_rms_adamw`` is consistent_rms=0.2."""
    params = {"w": jnp.ones((2, 5)), "t": jnp.ones((6, 2)), "b": jnp.ones(2)}
    grads = jax.tree.map(
        lambda x: jnp.cos(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape), params
    )

    def first(tx):
        return tx.update(grads, tx.init(params), params)[0]

    for name, theirs in (("original", {}), ("match_rms_adamw", {"consistent_rms": 0.2})):
        got = first(gradtx.muon(0.1, adjust_lr_fn=name))
        want = first(gradtx.muon(0.1, **theirs))
        jax.tree.map(np.testing.assert_array_equal, got, want)
    a = first(gradtx.muon(0.1))["t"]
    b = first(
        gradtx.muon(0.1, muon_weight_dimension_numbers={"w": GD(), "t": GD(1, 0), "b": None})
    )["t"]
    # (6, 2) read as fan_in 6: factor 1; as fan_in 2, fan_out 6: sqrt(3).
    np.testing.assert_allclose(np.asarray(b), np.sqrt(3.0) * np.asarray(a), rtol=1e-6)


def test_ns_dtype_runs_the_iteration_in_bfloat16():
    rng = np.random.default_rng(1)
    g = jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)
    f32 = gradtx.scale_by_muon()
    bf16 = gradtx.scale_by_muon(ns_dtype=jnp.bfloat16)
    a = f32.update(g, f32.init(g))[0]
    b = bf16.update(g, bf16.init(g))[0]
    assert b.dtype == jnp.float32
    gap = float(jnp.max(jnp.abs(a - b)))
    assert 1e-4 < gap < 0.1, gap  # bfloat16's rounding, not another algorithm
    # Every entry of O is a bfloat16 number (the iteration's last rounding).
    np.testing.assert_array_equal(b.astype(jnp.bfloat16).astype(jnp.float32), b)


def test_bias_correction_without_nesterov_changes_only_eps():
    """The normalisation removes the common factor 1 / (1 - beta^t)."""
    rng = np.random.default_rng(2)
    params = jnp.zeros((3, 4))
    tx_a = gradtx.scale_by_muon(nesterov=False, eps=0.0)
    tx_b = gradtx.scale_by_muon(nesterov=False, eps=0.0, bias_correction=False)
    s_a, s_b = tx_a.init(params), tx_b.init(params)
    for _ in range(5):
        g = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
        a, s_a = tx_a.update(g, s_a)
        b, s_b = tx_b.update(g, s_b)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mu_dtype_and_update_dtype():
    params = {"w": jnp.ones((3, 2), jnp.bfloat16), "b": jnp.ones(2, jnp.bfloat16)}
    tx = gradtx.muon(0.1, mu_dtype=jnp.float32)
    state = tx.init(params)
    updates, state = tx.update(params, state, params)
    assert {x.dtype for x in jax.tree.leaves(updates)} == {jnp.dtype(jnp.bfloat16)}
    muon_state = state.inner_states["muon"][0]
    assert isinstance(muon_state, gradtx.MuonState)
    assert muon_state.mu["w"].dtype == jnp.float32


def test_leaves_muon_does_not_own_go_to_adamw():
    """A 3-D leaf goes to AdamW by default (as Optax), to Muon with dimension numbers."""
    params = {"k": jnp.ones((2, 3, 4)), "w": jnp.ones((3, 4))}
    grads = jax.tree.map(
        lambda x: jnp.sin(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape), params
    )
    by_default = gradtx.muon(0.1)
    u = by_default.update(grads, by_default.init(params), params)[0]
    adam = gradtx.adamw(0.1, weight_decay=0.0, nesterov=True)
    np.testing.assert_allclose(
        u["k"], adam.update(grads, adam.init(params), params)[0]["k"], rtol=1e-6
    )
    spec = {"k": GD(1, 2), "w": GD()}
    stacked = gradtx.muon(0.1, muon_weight_dimension_numbers=spec)
    v = stacked.update(grads, stacked.init(params), params)[0]
    single = gradtx.scale_by_muon()
    for i in range(2):
        o = single.update(grads["k"][i], single.init(grads["k"][i]))[0]
        np.testing.assert_allclose(
            v["k"][i], -0.1 * np.sqrt(4 / 3) * np.asarray(o), rtol=1e-5, atol=1e-7
        )


# ---------------------------------------------------------------------- validation

BAD = [
    (gradtx.scale_by_muon, {"beta": 1.0}, r"scale_by_muon: beta must be in \[0, 1\)"),
    (gradtx.scale_by_muon, {"eps": -1.0}, r"scale_by_muon: eps must be a finite number >= 0"),
    (gradtx.scale_by_muon, {"ns_steps": -1}, r"scale_by_muon: ns_steps must be an integer >= 0"),
    (gradtx.scale_by_muon, {"ns_steps": 2.5}, r"ns_steps must be an integer"),
    (
        gradtx.scale_by_muon,
        {"ns_coeffs": (1.0, 2.0)},
        r"ns_coeffs must have shape \(3,\) or \(n, 3\)",
    ),
    (
        gradtx.scale_by_muon,
        {"ns_coeffs": ((1.0, 2.0, 3.0),) * 6},
        r"6 rows of ns_coeffs .* ns_steps=5",
    ),
    (gradtx.scale_by_muon, {"preconditioning": "svd"}, r"preconditioning must be one of"),
    (gradtx.scale_by_muon, {"mu_dtype": jnp.int32}, r"mu_dtype must be None or a floating"),
    (gradtx.scale_by_muon, {"ns_dtype": "int8"}, r"ns_dtype must be None or a floating"),
    (
        functools.partial(gradtx.muon, 0.1),
        {"ns_coeffs": "polar"},
        r"muon: ns_coeffs preset must be one of",
    ),
    (
        functools.partial(gradtx.muon, 0.1),
        {"adjust_lr_fn": "moonshot"},
        r"muon: adjust_lr_fn must be one of",
    ),
    (
        functools.partial(gradtx.muon, 0.1),
        {"adjust_lr_fn": "original", "consistent_rms": 0.2},
        r"give adjust_lr_fn or consistent_rms, not both",
    ),
    (
        functools.partial(gradtx.muon, 0.1),
        {"consistent_rms": 0.0},
        r"consistent_rms must be a finite number > 0",
    ),
    (functools.partial(gradtx.muon, 0.1), {"weight_decay": -1.0}, r"weight_decay"),
    (functools.partial(gradtx.muon, 0.1), {"adam_b1": 1.5}, r"b1"),
    (gradtx.muon, {"learning_rate": float("nan")}, r"muon: learning_rate must be finite"),
]


def _case_id(case):
    factory, kwargs, _ = case
    name = getattr(factory, "func", factory).__name__
    return f"{name}-{'-'.join(f'{k}={v!r}'[:30] for k, v in kwargs.items())}"


@pytest.mark.parametrize("factory, kwargs, message", BAD, ids=[_case_id(c) for c in BAD])
def test_bad_hyperparameters_are_refused(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


@pytest.mark.parametrize(
    "spec, message",
    [
        (None, r"rank >= 2, got 1"),
        ({"v": GD(0, 0)}, r"reduction and output axes must be disjoint"),
        ({"v": None}, r"every leaf needs dimension numbers"),
        ({"v": GD(), "u": GD()}, r"prefix"),
    ],
)
def test_bad_dimension_numbers_are_refused_when_traced(spec, message):
    params = {"v": jnp.ones(3) if spec is None else jnp.ones((2, 2))}
    tx = gradtx.scale_by_muon(weight_dimension_numbers=spec)
    with pytest.raises(ValueError, match=message):
        tx.update(params, tx.init(params))


def test_traced_hyperparameters_pass_the_checks():
    g = jnp.ones((2, 3))

    @jax.jit
    def step(beta, lr):
        tx = gradtx.muon(lr, beta=beta)
        return tx.update(g, tx.init(g), g)[0]

    assert step(0.9, 0.1).shape == (2, 3)


def test_decay_mask_function_and_a_single_matrix_as_optax():
    """A mask function sees Muon's group; a lone matrix leaves AdamW's group empty."""
    rng = np.random.default_rng(5)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.ones(3)}
    by_rows = lambda p: jax.tree.map(lambda x: x.shape[0] == 4, p)  # noqa: E731
    for tree in (params, params["w"]):
        ours = gradtx.muon(0.1, weight_decay=0.5, weight_decay_mask=by_rows)
        theirs = optax.contrib.muon(0.1, weight_decay=0.5, weight_decay_mask=by_rows)
        got = ours.update(tree, ours.init(tree), tree)[0]
        want = theirs.update(tree, theirs.init(tree), tree)[0]
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, want)


def test_ns_dtype_is_refused_on_complex_leaves():
    z = jnp.ones((2, 3), jnp.complex64)
    tx = gradtx.scale_by_muon(ns_dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match="ns_dtype is for real leaves"):
        tx.update(z, tx.init(z))
