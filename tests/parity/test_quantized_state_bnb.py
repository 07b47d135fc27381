"""gradtx's block-wise quantization against bitsandbytes' on CPU.

Collected only by ``python -m pytest -m parity tests/parity`` (the ``parity``
extra installs bitsandbytes and torch). The maps must equal
``bitsandbytes.functional.create_dynamic_map`` bit for bit; the per-block
absmax and the dequantized values bit for bit. The codes agree wherever
bitsandbytes' CPU kernel returns the nearest code; it does not always
(``quantize_cpu``: a table-driven binary search whose buckets are coarser than
the map's gaps near zero, then a distance check against the next code only),
returning a code up to a few places away, mostly for values under 1e-4 of
their block's absmax. gradtx's code is the nearest at every element, so where
the two differ gradtx's is strictly nearer. gradtx's blocks are bitsandbytes'
(the ``block_size`` consecutive elements of the flattened array) for every shape.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

bnb = pytest.importorskip("bitsandbytes")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity

F = bnb.functional


@pytest.mark.parametrize("signed", [True, False])
def test_the_8bit_dynamic_map_is_bitsandbytes_bit_for_bit(signed):
    theirs = F.create_dynamic_map(signed=signed).numpy()
    ours = gradtx.dynamic_map(signed=signed)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


def test_the_4bit_dynamic_map_is_bitsandbytes_values():
    # bitsandbytes pads a map of fewer than 256 values with zeros.
    theirs = np.unique(F.create_dynamic_map(signed=True, max_exponent_bits=3, total_bits=4).numpy())
    ours = gradtx.dynamic_map(signed=True, total_bits=4, max_exponent_bits=3)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("block_size", [256, 2048])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("shape", [(16384,), (8, 4096), (4, 3, 2048), (5000,), (7, 1000)])
def test_blockwise_quantization_is_bitsandbytes(shape, signed, block_size):
    rng = np.random.default_rng(sum(shape) + block_size + signed)
    x = (rng.standard_normal(shape) * np.exp(rng.uniform(-6, 3, shape))).astype(np.float32)
    x = x if signed else x**2
    code = gradtx.dynamic_map(signed)
    codes, scales = gradtx.quantize_blockwise(jnp.asarray(x), code, block_size)
    q, state = F.quantize_blockwise(
        torch.from_numpy(x.copy()), code=torch.from_numpy(code.copy()), blocksize=block_size
    )
    theirs, absmax = q.numpy(), state.absmax.numpy()
    ours = np.asarray(codes)
    np.testing.assert_array_equal(
        np.asarray(scales).ravel().view(np.uint32), absmax.view(np.uint32)
    )

    normalized = (x.ravel() / np.repeat(absmax, block_size)[: x.size]).astype(np.float32)
    ours_off = np.abs(normalized - code[ours.ravel()])
    theirs_off = np.abs(normalized - code[theirs.ravel()])
    # gradtx: the nearest code everywhere (ties to the lower, as bitsandbytes' check).
    nearest = np.abs(normalized[:, None] - code[None, :]).min(axis=1)
    np.testing.assert_array_equal(ours_off, nearest)
    differ = ours.ravel() != theirs.ravel()
    assert np.all(ours_off[differ] < theirs_off[differ])

    # Dequantizing bitsandbytes' own codes gives its values bit for bit.
    back = gradtx.dequantize_blockwise(jnp.asarray(theirs), scales, code, block_size)
    want = F.dequantize_blockwise(q, state).numpy()
    np.testing.assert_array_equal(np.asarray(back).view(np.uint32), want.view(np.uint32))
