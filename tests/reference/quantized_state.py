"""Block-wise quantized optimizer state, in float64 numpy, from the papers.

Dettmers, Lewis, Shleifer & Zettlemoyer (2022), 8-bit Optimizers via Block-wise
Quantization: the dynamic tree map (Sec. 2, Fig. 2), block-wise quantization
(Sec. 2.1: ``N_b = max |x|`` over a block, ``q = argmin_j |Q_j - x / N_b|``),
and the 8-bit optimizer step (Sec. 2: dequantize, update in 32 bits,
quantize). Li, Chen & Zhu (2023), Memory Efficient Optimizers with 4-bit
States: the linear map without zero, ``Q_j = (j + 1) / 2^b``, the rank-1
normalisation (``x_ij / min(r_i, c_j)``, ``r_i`` and ``c_j`` the largest
magnitudes of row ``i`` and column ``j``, and for more axes the smallest of the
per-axis maxima), and the 4-bit AdamW built from them (first moment B128/DE,
second moment Rank-1/Linear), and their "DE-0" (Sec. 4.2): the unsigned
dynamic map with its 0 replaced by its smallest positive value, so that no
second moment is stored as 0.

Blocks are ``block_size`` consecutive elements of the flattened array (the last
block shorter). The maps are built in float64 and stored in float32, as a
table of 8-bit codes is. Imports nothing from gradtx.
"""

from __future__ import annotations

import numpy as np


def dynamic_map(signed=True, total_bits=8, max_exponent_bits=7, zero=True):
    """Dettmers' dynamic tree: per decade ``10^{i-E+1}``, the midpoints of ``2^f + 1``
    equally spaced points of ``[0.1, 1]`` (``f`` the fraction bits of that
    decade), mirrored when signed; plus 0 (or, ``zero=False``, Li et al.'s
    DE-0: the smallest positive value once more) and 1."""
    fraction_bits = total_bits - 1 - max_exponent_bits
    values = [0.0, 1.0]
    for i in range(max_exponent_bits):
        count = 2 ** (i + fraction_bits + (0 if signed else 1))
        edges = np.linspace(0.1, 1.0, count + 1)
        means = 10.0 ** (i - max_exponent_bits + 1) * (edges[:-1] + edges[1:]) / 2
        values += list(means) + (list(-means) if signed else [])
    if not zero:
        values[0] = min(v for v in values if v > 0)
    return np.sort(np.asarray(values)).astype(np.float32)


def zero_free_linear_map(total_bits=4):
    """Li et al. (2023), Sec. 4.2: ``Q_j = (j + 1) / 2^b``, ``j = 0 .. 2^b - 1``."""
    return ((np.arange(2**total_bits) + 1) / 2.0**total_bits).astype(np.float32)


def quantize_blockwise(x, code, block_size):
    """``(codes, absmax, normalized)``: ``N_b`` per block, ``x / N_b`` in float64 and the
    index of the nearest code (the lower one on a tie); an all-zero block gives 0/1."""
    flat = np.asarray(x, np.float64).reshape(-1)
    code = np.asarray(code, np.float64)
    n_blocks = -(-flat.size // block_size)
    absmax = np.zeros(n_blocks)
    normalized = np.zeros_like(flat)
    for b in range(n_blocks):
        block = flat[b * block_size : (b + 1) * block_size]
        absmax[b] = np.max(np.abs(block))
        normalized[b * block_size : (b + 1) * block_size] = block / (absmax[b] or 1.0)
    codes = np.argmin(np.abs(normalized[:, None] - code[None, :]), axis=1)
    shape = np.shape(x)
    return codes.reshape(shape), absmax, normalized.reshape(shape)


def dequantize_blockwise(codes, absmax, code, block_size):
    """``Q[q] * N_b``."""
    flat = np.asarray(code, np.float64)[np.asarray(codes).reshape(-1)]
    scales = np.repeat(np.asarray(absmax, np.float64), block_size)[: flat.size]
    return (flat * scales).reshape(np.shape(codes))


def adamw_8bit_step(
    theta, g, m_q, v_q, t, eta, beta_1, beta_2, eps, lam, block_size, nu_map_has_zero=False
):
    """One step of Dettmers et al.'s 8-bit AdamW on one leaf, in float64::

        m = deq(m_q);  v = deq(v_q)
        m = beta_1 m + (1 - beta_1) g;  v = beta_2 v + (1 - beta_2) g^2
        theta = theta - eta (m / (1 - beta_1^t) / (sqrt(v / (1 - beta_2^t)) + eps) + lam theta)
        m_q = quant(m);  v_q = quant(v)

    ``m_q``, ``v_q``: ``(codes, absmax)`` on the signed dynamic map / the
    unsigned one, DE-0 unless ``nu_map_has_zero`` (then Dettmers et al.'s, with 0).
    Returns ``theta, m_q, v_q`` and the normalized values ``m / N_b``, ``v / N_b``.
    """
    signed, unsigned = dynamic_map(True), dynamic_map(False, zero=nu_map_has_zero)
    g = np.asarray(g, np.float64)
    m = beta_1 * dequantize_blockwise(*m_q, signed, block_size) + (1 - beta_1) * g
    v = beta_2 * dequantize_blockwise(*v_q, unsigned, block_size) + (1 - beta_2) * g * g
    m_hat, v_hat = m / (1 - beta_1**t), v / (1 - beta_2**t)
    theta = theta - eta * (m_hat / (np.sqrt(v_hat) + eps) + lam * theta)
    m_codes, m_absmax, m_normalized = quantize_blockwise(m, signed, block_size)
    v_codes, v_absmax, v_normalized = quantize_blockwise(v, unsigned, block_size)
    return theta, (m_codes, m_absmax), (v_codes, v_absmax), m_normalized, v_normalized


def adamw_8bit(theta, grads, eta, beta_1, beta_2, eps, lam, block_size, nu_map_has_zero=False):
    """The 8-bit AdamW trajectory of one leaf, ``grads[k]`` the gradient of step ``k + 1``."""
    theta = np.asarray(theta, np.float64)
    zeros = np.zeros(theta.shape, np.int64), np.zeros(-(-theta.size // block_size))
    m_q, v_q = zeros, zeros
    trajectory = [theta]
    for k, g in enumerate(grads):
        theta, m_q, v_q, _, _ = adamw_8bit_step(
            theta, g, m_q, v_q, k + 1, eta, beta_1, beta_2, eps, lam, block_size, nu_map_has_zero
        )
        trajectory.append(theta)
    return np.stack(trajectory)


def rank1_applies(shape):
    """Rank-1 needs two axes longer than 1; other leaves stay block-wise."""
    return sum(n > 1 for n in shape) >= 2


def rank1_normalizer(mus, shape):
    """``N_j = min_a mu_a[j_a]``: each axis' maxima broadcast along that axis, then the minimum."""
    ndim = len(shape)
    normalizer = np.full(shape, np.inf)
    for a, mu in enumerate(mus):
        along_a = np.reshape(np.asarray(mu, np.float64), [-1 if b == a else 1 for b in range(ndim)])
        normalizer = np.minimum(normalizer, along_a)
    return normalizer


def quantize_rank1(x, code):
    """``(codes, mus, normalized)``: Li et al.'s rank-1 normalisation in float64.

    ``mu_a[k] = max |x_j|`` over the entries with ``j_a = k`` (for a matrix the
    row maxima ``r`` and column maxima ``c``), ``x_j / min_a mu_a[j_a]`` (0 where
    that is 0), then the index of the nearest code (the lower one on a tie)."""
    x = np.asarray(x, np.float64)
    code = np.asarray(code, np.float64)
    axes = range(x.ndim)
    mus = [np.max(np.abs(x), axis=tuple(b for b in axes if b != a)) for a in axes]
    normalizer = rank1_normalizer(mus, x.shape)
    normalized = np.where(normalizer == 0, 0.0, x / np.where(normalizer == 0, 1.0, normalizer))
    codes = np.argmin(np.abs(normalized.reshape(-1, 1) - code[None, :]), axis=1)
    return codes.reshape(x.shape), mus, normalized


def dequantize_rank1(codes, mus, code):
    """``Q[q_j] * min_a mu_a[j_a]``."""
    codes = np.asarray(codes)
    return np.asarray(code, np.float64)[codes] * rank1_normalizer(mus, codes.shape)


def unpack_4bit(packed, length):
    """The 4-bit codes held two to a byte along the last axis, the first code of a
    pair in the high half (``byte = 16 q_{2k} + q_{2k+1}``), the last axis cut to
    ``length`` codes."""
    packed = np.asarray(packed, np.uint8)
    pairs = np.stack([packed >> 4, packed & 15], axis=-1)
    return pairs.reshape(*packed.shape[:-1], -1)[..., :length]


def adamw_4bit_step(theta, g, m_q, v_q, t, eta, beta_1, beta_2, eps, lam, block_size, maps=None):
    """One step of Li et al.'s 4-bit AdamW on one leaf, in float64::

        m = deq(m_q);  v = deq(v_q)
        m = beta_1 m + (1 - beta_1) g;  v = beta_2 v + (1 - beta_2) g^2
        theta = theta - eta (m / (1 - beta_1^t) / (sqrt(v / (1 - beta_2^t)) + eps) + lam theta)
        m_q = quant_B128/DE(m);  v_q = quant_Rank-1/Linear(v)

    ``m_q``: ``(codes, absmax)`` on the signed 4-bit dynamic-exponent map, in
    blocks; ``v_q``: ``(codes, mus)`` on the linear map without zero, rank-1
    (in blocks, ``(codes, absmax)``, when the leaf has fewer than two axes
    longer than 1). ``maps``: ``(signed, linear)``, by default this module's.
    Returns ``theta, m_q, v_q`` and the normalized ``m`` and ``v``.
    """
    signed, linear = maps or (dynamic_map(True, 4, 3), zero_free_linear_map(4))
    rank1 = rank1_applies(np.shape(theta))
    g = np.asarray(g, np.float64)
    v_old = (
        dequantize_rank1(*v_q, linear) if rank1 else dequantize_blockwise(*v_q, linear, block_size)
    )
    m = beta_1 * dequantize_blockwise(*m_q, signed, block_size) + (1 - beta_1) * g
    v = beta_2 * v_old + (1 - beta_2) * g * g
    m_hat, v_hat = m / (1 - beta_1**t), v / (1 - beta_2**t)
    theta = theta - eta * (m_hat / (np.sqrt(v_hat) + eps) + lam * theta)
    m_codes, m_absmax, m_normalized = quantize_blockwise(m, signed, block_size)
    if rank1:
        v_codes, v_scales, v_normalized = quantize_rank1(v, linear)
    else:
        v_codes, v_scales, v_normalized = quantize_blockwise(v, linear, block_size)
    return theta, (m_codes, m_absmax), (v_codes, v_scales), m_normalized, v_normalized


def adamw_4bit(theta, grads, eta, beta_1, beta_2, eps, lam, block_size, maps=None):
    """The 4-bit AdamW trajectory of one leaf, ``grads[k]`` the gradient of step ``k + 1``."""
    theta = np.asarray(theta, np.float64)
    codes = np.zeros(theta.shape, np.int64)
    m_q = codes, np.zeros(-(-theta.size // block_size))
    if rank1_applies(theta.shape):
        v_q = codes, [np.zeros(n) for n in theta.shape]
    else:
        v_q = m_q
    trajectory = [theta]
    for k, g in enumerate(grads):
        theta, m_q, v_q, _, _ = adamw_4bit_step(
            theta, g, m_q, v_q, k + 1, eta, beta_1, beta_2, eps, lam, block_size, maps
        )
        trajectory.append(theta)
    return np.stack(trajectory)
