"""Shampoo (gradtx.shampoo, scale_by_shampoo): the float64 reference of
tests/reference/shampoo.py, blocking, state placement, and bad input.

Shampoo is not in Optax (0.2.8), so there is no Optax parity; the PyTorch parity
lives in tests/parity/test_shampoo_torch.py. Every case of a dtype runs in one
jitted program (a ``lax.scan`` per case, side by side).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.optimizers.shampoo import _from_blocks, _to_blocks
from tests.reference import shampoo as reference

_RNG = np.random.default_rng(20181024)
# A (7, 5) matrix cut by block_size 3 into 3 x 2 blocks (the last row and column of
# blocks shorter), a (2, 4) one into 1 x 2, a rank-3 leaf seen as a (6, 2) matrix,
# and a vector (the grafted step only).
THETA0 = [
    _RNG.normal(size=(7, 5)),
    _RNG.normal(size=(2, 4)),
    _RNG.normal(size=(2, 3, 2)),
    _RNG.normal(size=4),
]
BLOCK = 3
STEPS = 120
GRADS = [0.5 + _RNG.normal(size=(STEPS, *np.shape(t))) for t in THETA0]  # a drift: the path moves
GRADS_BY_STEP = [[g[k] for g in GRADS] for k in range(STEPS)]
LR = 0.02

# name: (gradtx kwargs, reference kwargs); block_size and learning rate shared.
CASES = {
    "Alg. 1 (no graft, no momentum)": (
        {"b1": 0.0, "grafting": None},
        {"beta_1": 0.0, "grafting": None},
    ),
    "adagrad graft, momentum (defaults)": ({}, {"beta_1": 0.9, "grafting": "adagrad"}),
    "adam graft, EMA stats, decay": (
        {"b2": 0.95, "grafting": "adam", "weight_decay": 0.1, "graft_b2": 0.99},
        {
            "beta_1": 0.9,
            "beta_2": 0.95,
            "grafting": "adam",
            "weight_decay": 0.1,
            "graft_beta_2": 0.99,
        },
    ),
    "sgd graft, every 3 steps from step 5, root 2": (
        {
            "grafting": "sgd",
            "precondition_frequency": 3,
            "start_preconditioning_step": 5,
            "exponent_override": 2,
            "matrix_epsilon": 1e-3,
        },
        {"beta_1": 0.9, "grafting": "sgd", "frequency": 3, "start": 5, "p": 2, "epsilon": 1e-3},
    ),
    "newton roots, adagrad graft": (
        {"inverse_root_method": "newton"},
        {"beta_1": 0.9, "grafting": "adagrad"},
    ),
}


def _scan(tx, params, grads):
    def body(carry, g):
        p, state = carry
        updates, state = tx.update(g, state, p)
        p = gradtx.apply_updates(p, updates)
        return (p, state), p

    return jax.lax.scan(body, (params, tx.init(params)), grads)[1]


@functools.cache
def _runs(dtype):
    with jax.enable_x64(dtype == "float64"):
        params = [jnp.asarray(t, dtype) for t in THETA0]
        grads = [jnp.asarray(g, dtype) for g in GRADS]
        txs = [gradtx.shampoo(LR, BLOCK, **kw) for kw, _ in CASES.values()]
        runs = jax.jit(lambda p, g: [_scan(tx, p, g) for tx in txs])(params, grads)
        return [[np.asarray(leaf, np.float64) for leaf in run] for run in runs]


@functools.cache
def _reference(name):
    _, ref_kwargs = CASES[name]
    return reference.shampoo(THETA0, GRADS_BY_STEP, LR, block_size=BLOCK, **ref_kwargs)


# Measured largest deviations over 120 steps (the params travel 0.14 to 13):
# float64, eigh: 5e-14; float64, coupled Newton: 2.2e-7 (its stopping rule,
# max |M - I| <= 1e-6, leaves that much error in the roots); float32: 5e-5 where
# the params travel ~10 (Adam grafting, momentum 0.9 summing ten steps' rounding),
# 1.4e-6 on the ungrafted path without momentum (~0.1).
TOL = {"float32": (1e-5, 1e-4), "float64": (0.0, 1e-11), "newton float64": (0.0, 1e-6)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_trajectory_matches_float64_reference(dtype):
    for name, got in zip(CASES, _runs(dtype), strict=True):
        want = _reference(name)
        rtol, atol = TOL["newton float64" if dtype == "float64" and "newton" in name else dtype]
        for have, expected in zip(got, want, strict=True):
            assert np.max(np.abs(expected[-1] - expected[0])) > 0.1, name
            np.testing.assert_allclose(have, expected[1:], rtol=rtol, atol=atol, err_msg=name)


def test_the_cases_compared_are_far_apart():
    """Grafting, the schedule of the roots and the root method each change the path."""
    runs = dict(zip(CASES, _runs("float64"), strict=True))
    names = list(CASES)
    for a, b in zip(names, names[1:], strict=False):
        if "newton" in b:
            continue
        gap = max(np.max(np.abs(x - y)) for x, y in zip(runs[a], runs[b], strict=True))
        assert gap > 0.01, (a, b, gap)


def test_blocks_round_trip_and_padding_is_zero():
    g = jnp.arange(35.0).reshape(7, 5)
    blocks = _to_blocks(g, 3)
    assert blocks.shape == (6, 3, 3)  # 3 x 2 blocks, row by row
    np.testing.assert_array_equal(blocks[1, :, :2], g[:3, 3:])
    assert float(blocks[5, 1:].sum()) == 0.0 and float(blocks[1::2, :, 2].sum()) == 0.0
    np.testing.assert_array_equal(_from_blocks(blocks, 7, 5, 3), g)


def test_state_shapes_per_leaf():
    params = {"w": jnp.zeros((7, 5)), "b": jnp.zeros(4), "s": jnp.zeros(())}
    state = gradtx.scale_by_shampoo(3).init(params)
    left, right, left_root, right_root = state.preconditioners["w"]
    assert left.shape == left_root.shape == right.shape == right_root.shape == (6, 3, 3)
    assert state.preconditioners["b"] == () and state.preconditioners["s"] == ()
    assert state.mu["w"].shape == state.nu["w"].shape == (7, 5)
    big = gradtx.scale_by_shampoo().init(params).preconditioners["w"]
    assert big[0].shape == (1, 7, 7) and big[1].shape == (1, 5, 5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU lowering only")
def test_cpu_roots_call_lapack_on_one_block_at_a_time():
    # jaxlib 0.10's batched CPU eigh blocks a thread of XLA's pool while the others
    # decompose its matrices: several such calls at once can deadlock the pool.
    params = {"w": jnp.zeros((7, 5)), "v": jnp.zeros((2, 4))}
    tx = gradtx.scale_by_shampoo(3)
    hlo = jax.jit(tx.update).lower(params, tx.init(params)).compile().as_text()
    calls = [line for line in hlo.splitlines() if "lapack_ssyevd" in line]
    assert calls
    for line in calls:  # the operand is one (n, n) matrix, not a stack of them
        result = line.split("=", 1)[1].strip()
        assert result.startswith("(f32[3,3]") or result.startswith("(f32[2,2]"), line


def test_bfloat16_params_keep_float32_statistics():
    params = {"w": jnp.ones((4, 3), jnp.bfloat16)}
    tx = gradtx.shampoo(0.1, 2)
    state = tx.init(params)
    assert state[0].preconditioners["w"][0].dtype == jnp.float32
    updates, _ = tx.update(params, state, params)
    assert updates["w"].dtype == jnp.bfloat16


def test_complex_params_are_refused():
    with pytest.raises(TypeError, match="scale_by_shampoo: complex parameters"):
        gradtx.scale_by_shampoo().init({"w": jnp.ones((2, 2), jnp.complex64)})


# ---------------------------------------------------------------------- validation

_S = gradtx.scale_by_shampoo
_N = functools.partial(gradtx.shampoo, 0.1)
BAD = [
    (_S, {"block_size": 0}, r"scale_by_shampoo: block_size must be"),
    (_S, {"block_size": 2.5}, r"scale_by_shampoo: block_size must be"),
    (_S, {"b1": 1.0}, r"scale_by_shampoo: b1 must be in \[0, 1\)"),
    (_S, {"b2": 0.0}, r"scale_by_shampoo: b2 must be in \(0, 1\]"),
    (_S, {"b2": 1.5}, r"scale_by_shampoo: b2 must be in \(0, 1\]"),
    (_S, {"matrix_epsilon": 0.0}, r"scale_by_shampoo: matrix_epsilon must be"),
    (_S, {"grafting": "lion"}, r"scale_by_shampoo: grafting must be one of"),
    (_S, {"graft_b2": 1.0}, r"scale_by_shampoo: graft_b2 must be in \[0, 1\)"),
    (_S, {"graft_eps": -1.0}, r"scale_by_shampoo: graft_eps must be"),
    (_S, {"inverse_root_method": "svd"}, r"inverse_root_method must be one of"),
    (_S, {"exponent_override": 0}, r"scale_by_shampoo: exponent_override must be"),
    (_S, {"precondition_frequency": 0}, r"precondition_frequency must be"),
    (_S, {"start_preconditioning_step": 0}, r"start_preconditioning_step must be"),
    (_N, {"weight_decay": -1.0}, r"shampoo: weight_decay must be"),
    (gradtx.shampoo, {"learning_rate": float("nan")}, r"shampoo: learning_rate must be finite"),
]


def _case_id(case):
    factory, kwargs, _ = case
    name = getattr(factory, "func", factory).__name__
    return f"{name}-{'-'.join(f'{k}={v!r}'[:30] for k, v in kwargs.items())}"


@pytest.mark.parametrize("factory, kwargs, message", BAD, ids=[_case_id(c) for c in BAD])
def test_bad_hyperparameters_are_refused(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


def test_traced_hyperparameters_pass_the_checks():
    g = jnp.ones((2, 3))

    @jax.jit
    def step(b1, b2, lr):
        tx = gradtx.shampoo(lr, 2, b1=b1, b2=b2)
        return tx.update(g, tx.init(g), g)[0]

    assert step(0.9, 0.99, 0.1).shape == (2, 3)
