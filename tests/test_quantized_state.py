"""Block-quantized optimizer state (gradtx/transforms/quantized_state.py, optimizers/low_bit.py).

Against the float64 reference tests/reference/quantized_state.py: the maps, the
block-wise quantizer, and 120 steps of 8-bit AdamW checked step by step (the
reference takes gradtx's stored state at each step and must produce the same
codes, except at ties) and run freely. Then the bound on a quantized moment's
error, the wrappers over other optimizers, jit / vmap / dtypes, checkpoints,
shardings on 8 devices (one subprocess), and validation.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

import gradtx
from gradtx.checkpoint import restore_state
from gradtx.transforms.quantized_state import (
    _nearest,
    _nearest_by_search,
    _pack_4bit,
    _unpack_4bit,
)
from tests.reference import quantized_state as ref

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 120


def _is_quantized(x):
    return isinstance(x, gradtx.QuantizedArray)


def _quantized_leaves(state):
    return [x for x in jax.tree.leaves(state, is_leaf=_is_quantized) if _is_quantized(x)]


def _scan(tx, params, grads):
    """``(params, states)`` after each of the steps, stacked; one jitted scan."""

    @jax.jit
    def run(params, grads):
        def step(carry, g):
            params, state = carry
            updates, state = tx.update(g, state, params)
            params = gradtx.apply_updates(params, updates)
            return (params, state), (params, state)

        return jax.lax.scan(step, (params, tx.init(params)), grads)[1]

    return run(params, grads)


def _gradients(shapes, steps, seed=0):
    """Gaussian gradients with a per-step, per-leaf scale and a few outliers."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        g = rng.standard_normal((steps, *shape)) * rng.uniform(
            0.1, 3.0, (steps,) + (1,) * len(shape)
        )
        g[:, ..., :3] *= 20.0
        out[name] = g.astype(np.float32)
    return out


# ---------------------------------------------------------------------- maps


def test_the_dynamic_maps_are_the_papers_rounded_to_float32():
    for signed, bits, exponent in [(True, 8, 7), (False, 8, 7), (True, 4, 3)]:
        got = gradtx.dynamic_map(signed, bits, exponent)
        want = ref.dynamic_map(signed, bits, exponent)
        assert got.dtype == np.float32 and got.shape == (2**bits,)
        assert np.all(np.diff(got) > 0)
        # gradtx builds the table in float32 as bitsandbytes does (parity test),
        # rounding the grid point, the mean and the scaled mean; the reference in
        # float64, rounded once: they differ by at most 2 float32 ulps.
        assert np.all(np.abs(got - want) <= 2 * np.spacing(np.abs(want))), (signed, bits)
    assert 0.0 in gradtx.dynamic_map(True) and gradtx.dynamic_map(False)[0] == 0.0


def test_the_unsigned_dynamic_map_without_zero_is_li_et_als_de0():
    with_zero, de0 = gradtx.dynamic_map(False), gradtx.dynamic_map(False, zero=False)
    want = ref.dynamic_map(False, zero=False)
    assert de0.shape == (256,) and de0.dtype == np.float32 and 0.0 not in de0
    # The 0 becomes the smallest positive value; every other value stays.
    assert de0[0] == de0[1] == with_zero[1] > 0
    np.testing.assert_array_equal(de0[1:], with_zero[1:])
    assert np.all(np.abs(de0 - want) <= 2 * np.spacing(want))
    with pytest.raises(ValueError, match=r"dynamic_map: zero=False is for an unsigned map"):
        gradtx.dynamic_map(True, zero=False)


def test_the_linear_maps():
    np.testing.assert_array_equal(gradtx.zero_free_linear_map(4), ref.zero_free_linear_map(4))
    assert gradtx.zero_free_linear_map(4)[0] == 1 / 16  # no zero: v is never stored as 0
    signed, unsigned = gradtx.linear_map(True, 8), gradtx.linear_map(False, 8)
    assert signed.size == 255 and 0.0 in signed and signed[0] == -1 and signed[-1] == 1
    np.testing.assert_allclose(np.diff(unsigned), 1 / 255, rtol=1e-5)


# ---------------------------------------------------------------------- block-wise


@pytest.mark.parametrize(
    ("shape", "block_size", "scales_shape"),
    [
        ((8, 512), 256, (8, 2)),
        ((8, 512), 2048, (2,)),
        ((3, 4, 512), 256, (3, 4, 2)),
        ((5000,), 256, (20,)),  # k = 0, the last block padded
        ((7, 10), 256, (1,)),
        ((512, 10), 256, (20,)),
    ],
)
def test_the_block_layout_keeps_the_leading_axes(shape, block_size, scales_shape):
    codes, scales = gradtx.quantize_blockwise(jnp.ones(shape), gradtx.dynamic_map(), block_size)
    assert codes.shape == shape and codes.dtype == jnp.uint8
    assert scales.shape == scales_shape and scales.dtype == jnp.float32


def _tie_free_mismatches(got, want, normalized, code, tol):
    """Positions where two codings differ and ``normalized`` is not within ``tol``
    of the midpoint between the two codes: these would be real disagreements."""
    got, want = np.asarray(got).ravel(), np.asarray(want).ravel()
    code = np.asarray(code, np.float64)
    # Two codes of one value (DE-0's first two) store the same number.
    diff = np.nonzero(code[got] != code[want])[0]
    midpoint = (code[got[diff]] + code[want[diff]]) / 2
    adjacent = np.abs(got[diff].astype(int) - want[diff]) == 1
    near_tie = np.abs(normalized.ravel()[diff] - midpoint) <= tol
    return diff[~(adjacent & near_tie)], diff.size


@pytest.mark.parametrize("block_size", [256, 2048])
@pytest.mark.parametrize("signed", [True, False])
def test_quantize_and_dequantize_match_the_reference(block_size, signed):
    rng = np.random.default_rng(block_size + signed)
    code = gradtx.dynamic_map(signed)
    for shape in [(4, 2048), (5000,), (3, 4, 512)]:
        x = (rng.standard_normal(shape) * np.exp(rng.uniform(-8, 4, shape))).astype(np.float32)
        x = x**2 if not signed else x
        codes, scales = gradtx.quantize_blockwise(jnp.asarray(x), code, block_size)
        want, absmax, normalized = ref.quantize_blockwise(x, code, block_size)
        # max is exact in any precision.
        np.testing.assert_array_equal(np.asarray(scales).ravel(), absmax)
        # gradtx divides in float32 (0.5 ulp), the reference in float64: a code
        # may differ only where x / N_b is within 1e-6 of a midpoint (a tie).
        real, differing = _tie_free_mismatches(codes, want, normalized, code, 1e-6)
        assert real.size == 0 and differing <= 2, (shape, differing)
        back = gradtx.dequantize_blockwise(codes, scales, code, block_size)
        expected = ref.dequantize_blockwise(np.asarray(codes), absmax, code, block_size)
        np.testing.assert_allclose(np.asarray(back), expected, rtol=1e-7, atol=0)


_ALL_MAPS = {
    "dynamic8_signed": lambda: gradtx.dynamic_map(True),
    "dynamic8_unsigned": lambda: gradtx.dynamic_map(False),
    "dynamic8_unsigned_no_zero": lambda: gradtx.dynamic_map(False, zero=False),
    "linear8_signed": lambda: gradtx.linear_map(True),
    "linear8_unsigned": lambda: gradtx.linear_map(False),
    "dynamic4": lambda: gradtx.dynamic_map(True, total_bits=4, max_exponent_bits=3),
    "zero_free_linear4": lambda: gradtx.zero_free_linear_map(4),
}


def _float32_neighbours(x, ulps):
    """Every float32 within ``ulps`` steps of each value of ``x`` (through zero as well)."""
    bits = x.astype(np.float32).view(np.int32).astype(np.int64)
    key = np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)[:, None] + np.arange(-ulps, ulps + 1)
    back = np.where(key < 0, (-key) | 0x80000000, key).astype(np.uint32)
    return back.view(np.float32).ravel()


@pytest.mark.parametrize("name", sorted(_ALL_MAPS))
def test_the_table_search_gives_the_binary_searchs_indices(name):
    code = _ALL_MAPS[name]()
    midpoints = (code[:-1].astype(np.float64) + code[1:]) / 2  # the exact midpoints
    rng = np.random.default_rng(len(name))
    magnitudes = 10.0 ** rng.uniform(-12, 0, 10**6)
    tiny = np.finfo(np.float32).tiny
    special = [0.0, -0.0, 1.0, -1.0, tiny, -tiny, tiny / 2, -tiny / 2, 1e-45, -1e-45]
    special += [np.inf, -np.inf, np.nan, -np.nan, 2.0, -2.0, 1e30, -3e38]
    x = np.concatenate(
        [
            _float32_neighbours(midpoints, 8),
            _float32_neighbours(code.astype(np.float64), 2),
            -code,
            magnitudes * rng.choice([-1.0, 1.0], magnitudes.size),
            special,
        ]
    ).astype(np.float32)
    both = jax.jit(lambda x: (_nearest(code, x), _nearest_by_search(jnp.asarray(code), x)))
    fast, search = (np.asarray(a) for a in both(jnp.asarray(x)))
    assert fast.dtype == search.dtype
    np.testing.assert_array_equal(fast, search)


def test_float64_and_traced_maps_keep_the_binary_search():
    code = gradtx.dynamic_map(True)
    x = np.random.default_rng(0).uniform(-1, 1, 1000)
    with jax.enable_x64(True):
        got = _nearest(code, jnp.asarray(x, jnp.float64))
        want = _nearest_by_search(jnp.asarray(code, jnp.float64), jnp.asarray(x, jnp.float64))
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    x32 = jnp.asarray(x, jnp.float32)
    traced = jax.jit(lambda c, x: _nearest(c, x))(jnp.asarray(code), x32)
    np.testing.assert_array_equal(np.asarray(traced), np.asarray(_nearest(code, x32)))


def test_an_all_zero_block_is_stored_and_restored_as_zero():
    x = jnp.concatenate([jnp.zeros(256), jnp.linspace(-1, 1, 256)])
    codes, scales = gradtx.quantize_blockwise(x, gradtx.dynamic_map(), 256)
    assert float(scales[0]) == 0.0
    back = gradtx.dequantize_blockwise(codes, scales, gradtx.dynamic_map(), 256)
    assert bool(jnp.all(back[:256] == 0))


@pytest.mark.parametrize("length", [1, 6, 7])
def test_4bit_codes_pack_two_per_byte_and_unpack(length):
    codes = jnp.asarray(np.random.default_rng(length).integers(0, 16, (3, length)), jnp.uint8)
    packed = _pack_4bit(codes)
    assert packed.shape == (3, (length + 1) // 2) and packed.dtype == jnp.uint8
    np.testing.assert_array_equal(_unpack_4bit(packed, length), codes)
    assert int(packed[0, 0]) >> 4 == int(codes[0, 0])  # the first code in the high half


# ---------------------------------------------------------------------- rank-1


def _near_a_midpoint(normalized, code, rtol):
    """Where a normalized value is within ``rtol`` (relative) of a midpoint between two codes."""
    code = np.asarray(code, np.float64)
    midpoints = (code[:-1] + code[1:]) / 2
    gap = np.abs(np.asarray(normalized).reshape(-1, 1) - midpoints[None, :])
    near = np.any(gap <= rtol * np.abs(midpoints)[None, :], axis=1)
    return near.reshape(np.shape(normalized))


_RANK1_MAPS = {
    "zero_free_linear4": lambda: gradtx.zero_free_linear_map(4),
    "dynamic4": lambda: gradtx.dynamic_map(True, total_bits=4, max_exponent_bits=3),
    "dynamic8_unsigned": lambda: gradtx.dynamic_map(False),
}


@pytest.mark.parametrize("name", sorted(_RANK1_MAPS))
@pytest.mark.parametrize("shape", [(64, 96), (3, 40, 24), (1, 7, 50), (300, 2)])
def test_quantize_rank1_gives_the_references_codes_exactly(name, shape):
    """The codes equal the float64 reference's exactly, the per-axis maxima too.

    gradtx divides in float32: the quotient differs from the float64 one by at
    most 2^-24 relative, so a code could differ only for a value within that
    of a midpoint. The few entries within 1e-6 (relative) of one are set to 0
    first (none of them is a row's or column's largest, whose quotient is 1,
    so the maxima do not change), and the test checks that none is left."""
    code = _RANK1_MAPS[name]()
    rng = np.random.default_rng(sum(shape) + len(name))
    x = rng.standard_normal(shape) * np.exp(rng.uniform(-6, 3, shape))
    x = x * np.exp(rng.uniform(-4, 4, shape[:1]))[(...,) + (None,) * (len(shape) - 1)]
    x = (x**2 if code[0] >= 0 else x).astype(np.float32)
    x[0, ...] = 0.0  # an all-zero first row: its entries are normalised to 0
    x[_near_a_midpoint(ref.quantize_rank1(x, code)[2], code, 1e-6)] = 0.0
    want, mus, normalized = ref.quantize_rank1(x, code)
    assert not np.any(_near_a_midpoint(normalized, code, 1e-6))
    codes, scales = gradtx.quantize_rank1(jnp.asarray(x), code)
    assert codes.shape == shape and codes.dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(codes), want)
    assert len(scales) == len(shape)
    for got, mu, n in zip(scales, mus, shape, strict=True):
        assert got.shape == (n,) and got.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(got), mu)  # a max is exact in any precision
    back = gradtx.dequantize_rank1(codes, scales, code)
    np.testing.assert_allclose(np.asarray(back), ref.dequantize_rank1(want, mus, code), rtol=1e-7)
    assert np.all(np.asarray(back)[0] == 0)


def test_quantize_rank1_in_float64_and_its_error_bound():
    """float64 in, float64 scales out; and ``|x - x~| <= h min_a mu_a[j_a]`` (h: the
    map's largest half gap), a bound that is tighter than a block's for every
    entry whose row or column is smaller than its block's largest."""
    code = gradtx.zero_free_linear_map(4)
    rng = np.random.default_rng(3)
    x = rng.exponential(size=(32, 48)) * np.exp(rng.uniform(-5, 5, (32, 1)))
    with jax.enable_x64(True):
        codes, scales = gradtx.quantize_rank1(jnp.asarray(x, jnp.float64), code)
        assert all(s.dtype == jnp.float64 for s in scales)
        back = np.asarray(gradtx.dequantize_rank1(codes, scales, code, jnp.float64))
    normalizer = ref.rank1_normalizer(scales, x.shape)
    assert np.all(np.abs(back - x) <= _half_gap(code) * normalizer * (1 + 1e-12))


def test_quantize_rank1_refuses_a_vector():
    with pytest.raises(ValueError, match=r"quantize_rank1: x must have at least 2 axes"):
        gradtx.quantize_rank1(jnp.ones(8), gradtx.zero_free_linear_map(4))


def test_rank1_fields_choose_the_layout_by_field_and_shape():
    """nu of matrices and 3-axis leaves: one scale vector per axis; vectors, and
    a matrix with one axis of length 1, in blocks; mu always in blocks."""
    tx = gradtx.quantize_state(
        gradtx.adam(1e-3), bits=4, block_size=128, min_size=4, rank1_fields=("nu",)
    )
    params = {
        "w": jnp.ones((16, 256)),
        "t": jnp.ones((2, 8, 32)),
        "v": jnp.ones((512,)),
        "r": jnp.ones((1, 512)),
    }
    state = tx.init(params)[0]
    assert [s.shape for s in state.nu["w"].scales] == [(16,), (256,)]
    assert [s.shape for s in state.nu["t"].scales] == [(2,), (8,), (32,)]
    assert state.nu["v"].scales.shape == (4,)  # 512 / 128
    assert state.nu["r"].scales.shape == (1, 4)
    assert state.mu["w"].scales.shape == (16, 2) and state.mu["t"].scales.shape == (2, 2)
    g = {k: jnp.asarray(np.random.default_rng(0).standard_normal(p.shape), jnp.float32)
         for k, p in params.items()}  # fmt: skip
    _, state = jax.jit(tx.update)(g, tx.init(params))
    want = gradtx.quantize_rank1(0.001 * g["w"] ** 2, gradtx.zero_free_linear_map(4))[0]
    np.testing.assert_array_equal(_unpack_4bit(state[0].nu["w"].codes, 256), want)


# ---------------------------------------------------------------------- 8-bit AdamW


SHAPES = {"a": (8, 512), "b": (5000,), "c": (3,)}
HYPER = dict(learning_rate=1e-2, b1=0.9, b2=0.99, eps=1e-8, weight_decay=1e-2)


def _params(dtype):
    """Numpy params (float64 ones must become JAX arrays under ``jax.enable_x64``)."""
    rng = np.random.default_rng(7)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


@pytest.fixture(scope="module")
def adamw_runs():
    """gradtx's 8-bit and float32 AdamW, 120 steps, float32 and float64 params: one program."""
    grads = _gradients(SHAPES, STEPS)
    tx8, tx32 = gradtx.adamw_8bit(**HYPER), gradtx.adamw(**HYPER)
    with jax.enable_x64(True):
        g64 = {k: jnp.asarray(v, jnp.float64) for k, v in grads.items()}
        p64 = jax.tree.map(jnp.asarray, _params(np.float64))
        run64 = jax.device_get((*_scan(tx8, p64, g64), tx8.init(p64)))
    g32 = {k: jnp.asarray(v) for k, v in grads.items()}
    p32 = jax.tree.map(jnp.asarray, _params(np.float32))
    run32 = jax.device_get((*_scan(tx8, p32, g32), tx8.init(p32)))
    full = jax.device_get(_scan(tx32, p32, g32)[0])
    return grads, {"float32": run32, "float64": run64}, full


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adamw_8bit_follows_the_reference_step_by_step(adamw_runs, dtype):
    """At every step the reference, given gradtx's stored state and params, makes
    the same codes (except at ties), the same absmax and the same params."""
    grads, runs, _ = adamw_runs
    params_t, states_t, init = runs[dtype]
    signed, unsigned = gradtx.dynamic_map(True), gradtx.dynamic_map(False, zero=False)
    h = HYPER
    # float32: the moments are rounded to float32 before quantizing (~2 ulps
    # relative to N_b), float64: only the float32 code table and products.
    # float64: measured 1.1e-9 (one coordinate of 4096 at one step), set 1e-8.
    param_tol, tie_tol = (2e-6, 1e-6) if dtype == "float32" else (1e-8, 1e-6)
    params0 = _params(getattr(np, dtype))
    ties = 0
    for t in range(1, STEPS + 1):
        before = init if t == 1 else jax.tree.map(lambda x, i=t - 2: x[i], states_t)
        after = jax.tree.map(lambda x, i=t - 1: x[i], states_t)
        for name in ("a", "b"):
            theta = params0[name] if t == 1 else params_t[name][t - 2]
            m_q, v_q = before[0].mu[name], before[0].nu[name]
            theta, m_new, v_new, m_n, v_n = ref.adamw_8bit_step(
                np.asarray(theta, np.float64),
                grads[name][t - 1],
                (m_q.codes, np.asarray(m_q.scales).ravel()),
                (v_q.codes, np.asarray(v_q.scales).ravel()),
                t, h["learning_rate"], h["b1"], h["b2"], h["eps"], h["weight_decay"], 256,
            )  # fmt: skip
            got_m, got_v = after[0].mu[name], after[0].nu[name]
            np.testing.assert_allclose(np.asarray(got_m.scales).ravel(), m_new[1], rtol=1e-6)
            np.testing.assert_allclose(np.asarray(got_v.scales).ravel(), v_new[1], rtol=1e-6)
            for got, want, normalized, code in [
                (got_m.codes, m_new[0], m_n, signed),
                (got_v.codes, v_new[0], v_n, unsigned),
            ]:
                real, differing = _tie_free_mismatches(got, want, normalized, code, tie_tol)
                assert real.size == 0, (dtype, t, name, real[:5])
                ties += differing
            np.testing.assert_allclose(params_t[name][t - 1], theta, rtol=0, atol=param_tol)
        assert not _is_quantized(after[0].mu["c"])  # 3 elements < min_size
    # Ties are rare: 2 moments x 9096 elements x 120 steps.
    assert ties <= 20, ties


def test_adamw_8bit_tracks_the_reference_and_float32_adamw(adamw_runs):
    """Run freely, 8-bit AdamW stays near float32 AdamW and the float64 reference.

    A stored moment is off by at most half a gap of the map times N_b: 0.7% of
    N_b in the top decade, where codes are 0.014 apart, but the decade below
    has codes 0.0028 apart, so an m of 0.05 N_b (a block whose N_b is set by an
    outlier, as here) is off by up to 3% of itself, and v alike. The update of
    a coordinate is then off by a few percent; the errors do not all point one
    way, and the displacement of a row after 1 to 120 steps is asserted within
    10% of its norm (measured: 6%). Step 1 is exact: the step reads the new
    moments before they are stored.
    """
    grads, runs, full = adamw_runs
    params0 = _params(np.float32)
    for name in ("a", "b"):
        moved = full[name] - params0[name]
        got = runs["float32"][0][name] - params0[name]
        relative = np.linalg.norm(got - moved, axis=-1) / np.linalg.norm(moved, axis=-1)
        assert relative.max() < 0.1, (name, relative.max())
        assert np.all(relative[0] < 1e-5), name
        want = ref.adamw_8bit(
            params0[name], grads[name], HYPER["learning_rate"], HYPER["b1"], HYPER["b2"],
            HYPER["eps"], HYPER["weight_decay"], 256,
        )[1:] - params0[name]  # fmt: skip
        relative = np.linalg.norm(got - want, axis=-1) / np.linalg.norm(want, axis=-1)
        assert relative.max() < 0.1, (name, relative.max())


def test_adamw_8bit_stores_no_v_as_zero_unless_asked():
    """The zero-point problem (Li et al. 2023, Sec. 4.2) and DE-0, against the float64 reference.

    Entry ``[r, 5]`` of each block (a row of 256) has gradient 1e-5 at step 1
    and 0 at step 2, the rest of the row 1: its ``v`` after step 1, 1e-13, is
    1e-10 of the block's largest. On bitsandbytes' map (``nu_map_has_zero``)
    it is stored as 0 while its ``m`` (1e-6, stored as 7.75e-7) is not, so
    step 2 moves it by ``lr * m_hat / eps``, 367 lr; float32 AdamW moves it
    by 0.67 lr.
    DE-0 stores ``v`` as the map's smallest positive value times the block's
    largest (3.25e-7 * 1e-3): the step is then 0.012 lr, never above float32's.
    """
    shape, lr = (16, 256), 1e-3
    g1 = np.ones(shape)
    g1[:, 5] = 1e-5
    g2 = np.ones(shape)
    g2[:, 5] = 0.0
    grads = np.stack([g1, g2]).astype(np.float32)
    theta0 = np.zeros(shape, np.float32)
    h = dict(learning_rate=lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)
    steps = {}
    with jax.enable_x64(True):
        for has_zero in (False, True):
            tx = gradtx.adamw_8bit(**h, nu_map_has_zero=has_zero)
            got = _scan(
                tx, {"w": jnp.asarray(theta0, jnp.float64)}, {"w": jnp.asarray(grads, jnp.float64)}
            )
            got = np.asarray(got[0]["w"])
            want = ref.adamw_8bit(theta0, grads, lr, 0.9, 0.999, 1e-8, 0.0, 256, has_zero)[1:]
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
            steps[has_zero] = -(got[1, :, 5] - got[0, :, 5]) / lr
        full = _scan(
            gradtx.adamw(**h),
            {"w": jnp.asarray(theta0, jnp.float64)},
            {"w": jnp.asarray(grads, jnp.float64)},
        )
        f32_step = -np.asarray(full[0]["w"][1, :, 5] - full[0]["w"][0, :, 5]) / lr
    np.testing.assert_allclose(f32_step, 0.67, rtol=0.01)
    assert np.all(steps[True] > 300), steps[True]  # m / eps
    assert np.all((steps[False] > 0) & (steps[False] < 0.02)), steps[False]


# ---------------------------------------------------------------------- 4-bit AdamW, rank-1


SHAPES4 = {"a": (8, 512), "t": (4, 16, 64), "b": (5000,), "c": (3,)}


def _params4(dtype):
    rng = np.random.default_rng(8)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES4.items()}


@pytest.fixture(scope="module")
def adamw_4bit_runs():
    """gradtx's 4-bit AdamW (v rank-1, the default), 120 steps, float32 and float64 params."""
    grads = _gradients(SHAPES4, STEPS, seed=4)
    tx = gradtx.adamw_4bit(**HYPER)
    with jax.enable_x64(True):
        g64 = {k: jnp.asarray(v, jnp.float64) for k, v in grads.items()}
        p64 = jax.tree.map(jnp.asarray, _params4(np.float64))
        run64 = jax.device_get((*_scan(tx, p64, g64), tx.init(p64)))
    g32 = {k: jnp.asarray(v) for k, v in grads.items()}
    p32 = jax.tree.map(jnp.asarray, _params4(np.float32))
    run32 = jax.device_get((*_scan(tx, p32, g32), tx.init(p32)))
    return grads, {"float32": run32, "float64": run64}


def _maps4():
    return gradtx.dynamic_map(True, 4, 3), gradtx.zero_free_linear_map(4)


def _stored4(q, shape):
    """``(codes, scales)`` of a 4-bit leaf as the reference holds them."""
    codes = ref.unpack_4bit(q.codes, shape[-1])
    if isinstance(q.scales, tuple):
        return codes, [np.asarray(s) for s in q.scales]
    return codes, np.asarray(q.scales).ravel()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adamw_4bit_rank1_follows_the_reference_step_by_step(adamw_4bit_runs, dtype):
    """At every step the float64 reference of Li et al.'s 4-bit AdamW (B128/DE for
    m, Rank-1/Linear for v), given gradtx's stored state and params, makes the
    same codes (except at ties), the same scales and the same params; v of the
    matrix and of the 3-axis leaf is rank-1, of the vector in blocks."""
    grads, runs = adamw_4bit_runs
    params_t, states_t, init = runs[dtype]
    signed, linear = _maps4()
    h = HYPER
    # float32: the moments are rounded to float32 before quantizing; float64:
    # only the float32 code tables and products (as the 8-bit test).
    param_tol = 2e-6 if dtype == "float32" else 1e-8
    params0 = _params4(getattr(np, dtype))
    ties = 0
    for t in range(1, STEPS + 1):
        before = init if t == 1 else jax.tree.map(lambda x, i=t - 2: x[i], states_t)
        after = jax.tree.map(lambda x, i=t - 1: x[i], states_t)
        for name in ("a", "t", "b"):
            shape = SHAPES4[name]
            theta = params0[name] if t == 1 else params_t[name][t - 2]
            theta, m_new, v_new, m_n, v_n = ref.adamw_4bit_step(
                np.asarray(theta, np.float64),
                grads[name][t - 1],
                _stored4(before[0].mu[name], shape),
                _stored4(before[0].nu[name], shape),
                t, h["learning_rate"], h["b1"], h["b2"], h["eps"], h["weight_decay"], 128,
                maps=(signed, linear),
            )  # fmt: skip
            got_m = _stored4(after[0].mu[name], shape)
            got_v = _stored4(after[0].nu[name], shape)
            assert isinstance(got_v[1], list) == (name != "b")
            np.testing.assert_allclose(got_m[1], m_new[1], rtol=1e-6)
            for got, want in zip(
                got_v[1] if name != "b" else [got_v[1]],
                v_new[1] if name != "b" else [v_new[1]],
                strict=True,
            ):
                np.testing.assert_allclose(got, want, rtol=1e-6)
            for got, want, normalized, code in [
                (got_m[0], m_new[0], m_n, signed),
                (got_v[0], v_new[0], v_n, linear),
            ]:
                real, differing = _tie_free_mismatches(got, want, normalized, code, 1e-6)
                assert real.size == 0, (dtype, t, name, real[:5])
                ties += differing
            np.testing.assert_allclose(params_t[name][t - 1], theta, rtol=0, atol=param_tol)
        assert not _is_quantized(after[0].mu["c"])  # 3 elements < min_size
    assert ties <= 20, ties


def test_adamw_4bit_rank1_run_freely_tracks_the_reference(adamw_4bit_runs):
    """120 free steps of gradtx's float32 run against the float64 reference run
    from the same start: the same algorithm, differing only by float32
    roundings and the ties they flip, so the displacement of each row agrees
    within 1% of its norm (measured below 1e-5)."""
    grads, runs = adamw_4bit_runs
    params0 = _params4(np.float32)
    h = HYPER
    for name in ("a", "t", "b"):
        want = ref.adamw_4bit(
            params0[name], grads[name], h["learning_rate"], h["b1"], h["b2"], h["eps"],
            h["weight_decay"], 128, maps=_maps4(),
        )[1:] - params0[name]  # fmt: skip
        got = runs["float32"][0][name] - params0[name]
        relative = np.linalg.norm(got - want, axis=-1) / np.linalg.norm(want, axis=-1)
        assert relative.max() < 1e-2, (name, relative.max())


# ---------------------------------------------------------------------- error bound


def _half_gap(code):
    """The largest rounding error of a value of [-1, 1] (or [0, 1]) on ``code``, over N_b."""
    code = np.asarray(code, np.float64)
    low = 0.0 if code[0] >= 0 else -1.0
    return max(np.max(np.diff(code)) / 2, code[0] - low, 1.0 - code[-1])


@pytest.mark.parametrize("bits", [8, 4])
def test_a_quantized_moment_stays_within_its_derived_bound(bits):
    """``e_t = m^q_t - m_t`` obeys ``e_t = beta e_{t-1} + r_t`` with ``|r_t| <= h N_{b,t}``
    (h: :func:`_half_gap` of the map), so ``|e_t| <= h max_s N_{b,s} / (1 - beta)``."""
    b1, b2, block = 0.9, 0.95, 256 if bits == 8 else 128
    tx = gradtx.quantize_state(gradtx.scale_by_adam(b1, b2), bits=bits, block_size=block)
    grads = jnp.asarray(_gradients({"w": (16, 512)}, 200, seed=3)["w"])

    @jax.jit
    def run(grads):
        def step(carry, g):
            state, m, v = carry
            _, state = tx.update({"w": g}, state)
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            return (state, m, v), (state.mu["w"], state.nu["w"], m, v)

        zeros = jnp.zeros((16, 512))
        return jax.lax.scan(step, (tx.init({"w": zeros}), zeros, zeros), grads)[1]

    mu_q, nu_q, m, v = jax.device_get(run(grads))
    signed, nonnegative = (
        (gradtx.dynamic_map(True), gradtx.dynamic_map(False))
        if bits == 8
        else (gradtx.dynamic_map(True, 4, 3), gradtx.zero_free_linear_map(4))
    )
    for q, exact, code, beta in [(mu_q, m, signed, b1), (nu_q, v, nonnegative, b2)]:
        codes = _unpack_4bit(q.codes, 512) if bits == 4 else q.codes
        stored = jax.vmap(lambda c, s, code=code: gradtx.dequantize_blockwise(c, s, code, block))(
            codes, q.scales
        )
        n_max = np.repeat(np.max(q.scales, axis=0), block, axis=-1)  # per element, over time
        bound = _half_gap(code) * n_max / (1 - beta) * (1 + 1e-5)
        error = np.max(np.abs(np.asarray(stored) - exact), axis=0)
        assert np.all(error <= bound), (bits, float(np.max(error / bound)))


# ---------------------------------------------------------------------- other optimizers


WRAPPED = {
    "adam": lambda: gradtx.adam(1e-2),
    "adamw": lambda: gradtx.adamw(1e-2, weight_decay=1e-2),
    "lion": lambda: gradtx.lion(1e-3),
    "ademamix": lambda: gradtx.ademamix(1e-2),
    "soap": lambda: gradtx.soap(1e-2, precondition_frequency=5),
    "muon": lambda: gradtx.muon(1e-2),
}


def test_the_wrapper_works_on_each_optimizer_and_stays_near_it():
    """Each method, 30 steps under jit, quantized and not, in one program: the
    quantized state holds codes and the trajectories stay within 10% of the
    displacement (a loose bound: Lion's sign amplifies a rounding near 0)."""
    shapes = {"w": (64, 64), "v": (4096,), "b": (64,)}
    grads = {k: jnp.asarray(v) for k, v in _gradients(shapes, 30, seed=5).items()}
    params = {k: jnp.ones(s) * 0.1 for k, s in shapes.items()}
    runs = {
        name: (_scan(gradtx.quantize_state(make()), params, grads), _scan(make(), params, grads))
        for name, make in WRAPPED.items()
    }
    for name, ((p_q, s_q), (p_full, _)) in runs.items():
        assert _quantized_leaves(s_q), name
        for leaf in ("w", "v"):
            moved = np.asarray(p_full[leaf][-1] - params[leaf])
            off = np.asarray(p_q[leaf][-1] - p_full[leaf][-1])
            assert np.linalg.norm(off) < 0.1 * np.linalg.norm(moved), (name, leaf)


def test_second_moments_use_the_nonnegative_map_by_field_name():
    params = {"w": jnp.ones((16, 256))}
    g = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((16, 256)), jnp.float32)}
    cases = [
        (("nu",), {}, gradtx.dynamic_map(False, zero=False)),
        (("nu",), {"nonnegative_map_has_zero": True}, gradtx.dynamic_map(False)),
        ((), {}, gradtx.dynamic_map(True)),
    ]
    for fields, options, nu_code in cases:
        tx = gradtx.quantize_state(gradtx.scale_by_adam(), nonnegative_fields=fields, **options)
        _, state = tx.update(g, tx.init(params))
        want = gradtx.quantize_blockwise(0.001 * g["w"] ** 2, nu_code, 256)[0]
        np.testing.assert_array_equal(state.nu["w"].codes, want)
    for has_zero, nu_code in [
        (False, gradtx.zero_free_linear_map(4)),
        (True, gradtx.linear_map(False, 4)),
    ]:
        tx = gradtx.quantize_state(
            gradtx.scale_by_adam(), bits=4, nonnegative_map_has_zero=has_zero
        )
        _, state = tx.update(g, tx.init(params))
        want = gradtx.quantize_blockwise(0.001 * g["w"] ** 2, nu_code, 256)[0]
        np.testing.assert_array_equal(_unpack_4bit(state.nu["w"].codes, 256), want)


class _Moments(NamedTuple):
    mu: dict
    nu: dict


def _nonzero_moments() -> gradtx.GradientTransformation:
    """A block whose ``init`` holds values (Adam's starts at 0): ``mu = p``, ``nu = p^2``."""
    init = lambda p: _Moments(p, jax.tree.map(jnp.square, p))  # noqa: E731
    return gradtx.GradientTransformation(init, lambda u, s, p=None: (u, s))


@pytest.mark.parametrize("bits", [8, 4])
def test_an_eager_init_gives_the_jitted_and_the_op_by_op_numbers(bits):
    """An eager ``init`` quantizes each leaf in one compiled program; it gives the
    same bits as ``jax.jit(init)`` and as running every operation on its own."""
    rng = np.random.default_rng(5)
    params = {
        "matrix": jnp.asarray(rng.standard_normal((48, 100)), jnp.float32),
        "vector": jnp.asarray(rng.standard_normal(5000), jnp.float32),
    }
    tx = gradtx.quantize_state(
        _nonzero_moments(), bits=bits, block_size=128, rank1_fields=("nu",), min_size=64
    )
    eager = tx.init(params)
    with jax.disable_jit():
        op_by_op = tx.init(params)
    for other in (jax.jit(tx.init)(params), op_by_op):
        for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(other), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert isinstance(eager.nu["matrix"].scales, tuple)  # rank-1
    assert _is_quantized(eager.mu["vector"]) and not isinstance(eager.mu["vector"].scales, tuple)


def test_small_integer_and_stacked_leaves_stay_as_they_are():
    params = {"big": jnp.ones((64, 64)), "small": jnp.ones((10,))}
    state = gradtx.adamw_8bit(1e-3).init(params)[0]
    assert _is_quantized(state.mu["big"]) and not _is_quantized(state.mu["small"])
    assert state.count.dtype == jnp.int32


def test_vmap_over_a_batch_of_params_equals_each_alone():
    tx = gradtx.adamw_4bit(1e-2)
    params = jnp.asarray(np.random.default_rng(1).standard_normal((3, 64, 64)), jnp.float32)
    grads = params[::-1] * 0.5
    state = jax.vmap(tx.init)({"w": params})
    updates, state = jax.jit(jax.vmap(tx.update))({"w": grads}, state, {"w": params})
    for i in range(3):
        u, s = tx.update({"w": grads[i]}, tx.init({"w": params[i]}), {"w": params[i]})
        np.testing.assert_array_equal(state[0].nu["w"].codes[i], s[0].nu["w"].codes)
        np.testing.assert_allclose(updates["w"][i], u["w"], rtol=1e-6)


def test_bfloat16_params_keep_bfloat16_updates_and_track_float32():
    """bfloat16 params round each step's sum by up to 2^-8 of |w|: that rounding,
    not the state's, is the difference from the float32 run, so 8-bit AdamW's
    bfloat16 run stays as close to its float32 run as AdamW's (within 1.5x)."""
    params = {"w": jnp.asarray(np.random.default_rng(2).standard_normal((64, 64)))}
    grads = {"w": jnp.asarray(_gradients({"w": (64, 64)}, 10, seed=6)["w"])}
    params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    off, quantized = {}, {}
    for name, tx in [("8bit", gradtx.adamw_8bit(1e-2)), ("32bit", gradtx.adamw(1e-2))]:
        p16, s16 = _scan(tx, params16, grads)
        p32, _ = _scan(tx, params, grads)
        assert p16["w"].dtype == jnp.bfloat16
        off[name] = np.max(np.abs(np.asarray(p16["w"][-1].astype(jnp.float32) - p32["w"][-1])))
        quantized[name] = len(_quantized_leaves(s16))
    assert quantized == {"8bit": 2, "32bit": 0}
    assert off["8bit"] <= 1.5 * off["32bit"], off


# ---------------------------------------------------------------------- checkpoints


def test_the_state_round_trips_through_a_checkpoint_bit_for_bit():
    params = {"w": jnp.ones((32, 256)) * 0.5, "b": jnp.ones((8,))}
    grads = {k: jnp.asarray(v) for k, v in _gradients({"w": (32, 256), "b": (8,)}, 6).items()}
    for tx in (gradtx.adamw_8bit(1e-2), gradtx.adamw_4bit(1e-2), gradtx.lion_8bit(1e-3)):
        step = jax.jit(lambda p, s, g, tx=tx: tx.update(g, s, p))
        state = tx.init(params)
        for i in range(3):
            _, state = step(params, state, jax.tree.map(lambda x, i=i: x[i], grads))
        template = tx.init(params)
        data = serialization.to_bytes(state)
        for restored in (
            serialization.from_bytes(template, data),
            restore_state(template, serialization.msgpack_restore(data)),
        ):
            for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
                assert a.dtype == b.dtype and np.asarray(a).tobytes() == np.asarray(b).tobytes()
            g = jax.tree.map(lambda x: x[3], grads)
            want, got = step(params, state, g), step(params, restored, g)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


# ---------------------------------------------------------------------- 8 devices

SHARDED_SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import gradtx
from gradtx.sharding import state_shardings, zero1_state_shardings

mesh = Mesh(np.array(jax.devices()), ("data",))
params = {"w": jnp.ones((64, 512)), "v": jnp.ones((16384,)), "m": jnp.ones((16, 2048))}
specs = {"w": P("data", None), "v": P("data"), "m": P(None, "data")}
shard = {k: NamedSharding(mesh, s) for k, s in specs.items()}
rng = np.random.default_rng(0)
grads = {k: jnp.asarray(rng.standard_normal(p.shape), jnp.float32) for k, p in params.items()}
report = {}
for name, tx in [("8bit", gradtx.adamw_8bit(1e-2)), ("4bit", gradtx.adamw_4bit(1e-2))]:
    out = state_shardings(tx, params, shard)
    adam = out[0]
    report[name] = {
        k: [str(adam.mu[k].codes.spec), str(adam.mu[k].scales.spec), str(adam.nu[k].codes.spec)]
        for k in params
    }
    placed = jax.device_put(params, shard)
    step = jax.jit(lambda g, s, p, tx=tx: tx.update(g, s, p), out_shardings=(shard, out))
    state = jax.jit(tx.init, out_shardings=out)(placed)
    updates, state = step(jax.device_put(grads, shard), state, placed)
    u_plain, s_plain = tx.update(grads, tx.init(params), params)
    pairs = zip(jax.tree.leaves(state), jax.tree.leaves(s_plain))
    same_codes = all(bool(jnp.array_equal(a, b)) for a, b in pairs)
    close = max(float(jnp.max(jnp.abs(updates[k] - u_plain[k]))) for k in params)
    report[name + "_run"] = [same_codes, close, state[0].mu["w"].codes.sharding.spec == specs["w"]]
    zero = zero1_state_shardings(tx, params, mesh, "data")[0]
    report[name + "_zero1"] = {
        k: [str(zero.mu[k].codes.spec), str(zero.mu[k].scales.spec)] for k in params
    }
    def scale_specs(q):
        rank1 = isinstance(q.scales, tuple)
        return [str(s.spec) for s in q.scales] if rank1 else str(q.scales.spec)

    report[name + "_nu_scales"] = {k: scale_specs(adam.nu[k]) for k in params}
    report[name + "_zero1_nu_scales"] = {k: scale_specs(zero.nu[k]) for k in params}
print(json.dumps(report))
"""


def test_quantized_state_shards_like_its_parameter_on_8_devices():
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # w (64, 512): blocks of 256 along the rows, scales (64, 2); v (16384,): k = 0,
    # 64 blocks; m (16, 2048) split on its last axis: scales (16, 8), blocks split.
    rows, flat, columns = "P('data', None)", "P('data',)", "P(None, 'data')"
    assert report["8bit"] == {"w": [rows] * 3, "v": [flat] * 3, "m": [columns] * 3}
    # 4-bit: codes of m are (16, 1024), still divisible by 8; blocks of 128.
    assert report["4bit"] == report["8bit"]
    for name in ("8bit", "4bit"):
        same_codes, close, placed = report[name + "_run"]
        assert same_codes and close < 1e-6 and placed, report[name + "_run"]
        # ZeRO-1 splits the first axis divisible by 8: the rows of w and m.
        assert report[name + "_zero1"] == {
            "w": [rows, rows],
            "v": [flat, flat],
            "m": [rows, rows],
        }, report[name + "_zero1"]
    # 4-bit v is rank-1 on the matrices: the row scales split as the param's axis
    # 0, the column scales as its axis 1; the vector's v stays in blocks.
    whole, split = "P(None,)", "P('data',)"
    assert report["4bit_nu_scales"] == {"w": [split, whole], "v": flat, "m": [whole, split]}
    assert report["4bit_zero1_nu_scales"] == {"w": [split, whole], "v": flat, "m": [split, whole]}
    assert report["8bit_nu_scales"] == {"w": rows, "v": flat, "m": columns}


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 2}, r"quantize_state: bits must be 8 or 4, got 2"),
        ({"bits": 16}, r"bits must be 8 or 4"),
        ({"block_size": 0}, r"quantize_state: block_size must be an integer >= 1, got 0"),
        ({"block_size": -256}, r"block_size must be an integer >= 1"),
        ({"block_size": 2.5}, r"block_size must be an integer >= 1"),
        ({"block_size": 255}, r"quantize_state: block_size must be even, got 255"),
        ({"min_size": -1}, r"quantize_state: min_size must be an integer >= 0, got -1"),
        ({"min_size": 1.5}, r"min_size must be an integer >= 0"),
        ({"nonnegative_fields": "nu"}, r"nonnegative_fields must be a collection of names"),
        ({"rank1_fields": "nu"}, r"quantize_state: rank1_fields must be a collection of names"),
    ],
)
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gradtx.quantize_state(gradtx.adam(1e-3), **kwargs)


def test_adamw_4bit_checks_nu_normalization():
    for bad in ("rank-1", "", None, "Block"):
        with pytest.raises(ValueError, match=r"adamw_4bit: nu_normalization must be 'rank1' or"):
            gradtx.adamw_4bit(1e-3, nu_normalization=bad)


@pytest.mark.parametrize("factory", [gradtx.adamw_8bit, gradtx.adamw_4bit, gradtx.lion_8bit])
def test_the_named_optimizers_check_their_options(factory):
    with pytest.raises(ValueError, match=r"block_size must be an integer >= 1"):
        factory(1e-3, block_size=0)
    with pytest.raises(ValueError, match=r"learning_rate"):
        factory(float("nan"))
