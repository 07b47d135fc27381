"""Block-wise quantized optimizer state: 8-bit and 4-bit moments.

An optimizer's moments are stored as small integer *codes* into a fixed table
(a *quantization map*, values in ``[-1, 1]``) and one float32 *scale* per block
of consecutive elements, the block's largest magnitude (Dettmers et al. 2022):

.. math::
    N_b = \\max_{i \\in b} |x_i|, \\qquad
    q_i = \\operatorname*{arg\\,min}_j \\left| Q_j - x_i / N_b \\right|, \\qquad
    \\tilde x_i = Q_{q_i} N_b .

Each step the state is dequantized, the wrapped optimizer's update runs in
full precision, and the new state is quantized again (:func:`quantize_state`).
A block's error is then at most half the widest gap of the map times ``N_b``,
and an outlier only coarsens its own block.

Symbols: ``Q`` = ``code`` (the map); ``q`` = the codes; ``N_b`` = ``scales``,
one per block of ``block_size`` elements.

Block layout: the blocks are the ``block_size`` consecutive elements of the
array in row-major order (bitsandbytes' flat layout), and the array is viewed
as ``shape[:k] + (rest,)`` with ``k`` the largest number of leading axes such
that ``rest = prod(shape[k:])`` is a multiple of ``block_size`` (``k = 0``, the
last block zero-padded, when there is none). The codes keep the array's shape
(8-bit) or its shape with the last axis packed two codes per byte (4-bit); the
scales have shape ``shape[:k] + (rest // block_size,)``. A parameter split over
devices along its leading axes therefore splits its codes and scales the same
way (see :func:`gradtx.sharding.state_shardings`).

Rank-1 layout (:func:`quantize_rank1`, the leaves of ``rank1_fields``): the
codes as above, and the scales a tuple of one vector per axis, ``scales[a]`` of
shape ``(shape[a],)``; a parameter split along axis ``a`` splits ``scales[a]``
the same way.

References:
  Dettmers, Lewis, Shleifer & Zettlemoyer (2022), 8-bit Optimizers via
  Block-wise Quantization, ICLR (Sec. 2, dynamic tree quantization; Sec. 2.1,
  block-wise quantization).
  Li, Chen & Zhu (2023), Memory Efficient Optimizers with 4-bit States,
  NeurIPS (Sec. 4, the first moment with block size 128 and a dynamic-exponent
  map; Sec. 5, the second moment with a linear map that excludes zero, and the
  rank-1 normalisation, "Rank-1 Normalization").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, _tactics
from gradtx.base import Array, GradientTransformation
from gradtx.sharding import mirror_indices

# ---------------------------------------------------------------------- maps


def _torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace`` in float32, as its CPU kernel rounds it (one rounding per point).

    The first half counts up from ``start``, the rest down from ``end``; the
    float32 step times the index is added in one rounding (exact in float64).
    """
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float64((end32 - start32) / np.float32(steps - 1))
    i = np.arange(steps)
    from_start = np.float64(start32) + step * i
    from_end = np.float64(end32) - step * (steps - 1 - i)
    return np.where(i < steps // 2, from_start, from_end).astype(np.float32)


def dynamic_map(
    signed: bool = True, total_bits: int = 8, max_exponent_bits: int = 7, *, zero: bool = True
) -> np.ndarray:
    """The dynamic-tree (dynamic-exponent) quantization map of Dettmers et al.

    Level ``i = 0 .. E-1`` (``E = max_exponent_bits``) holds the midpoints of
    ``n_i + 1`` equally spaced points of ``[0.1, 1]`` scaled by
    ``10^{i - E + 1}``, with ``n_i = 2^{i + b - E}`` (signed, ``b`` the bits
    besides the sign, each value also negated) or ``2^{i + b - E + 1}``
    (unsigned); then ``0`` and ``1`` are added. The exponent picks the decade,
    the fraction the position in it, so small magnitudes keep a relative
    precision that a linear map loses. The values are computed in float32 the
    way ``bitsandbytes.functional.create_dynamic_map`` computes them, and equal
    its table bit for bit.

    Args:
      signed: a map of ``[-1, 1]`` (first moments) or of ``[0, 1]`` (second moments).
      total_bits: bits per code: 8 gives 256 values (Dettmers et al. 2022); 4
        with ``max_exponent_bits=3`` gives 16 (the first-moment map of Li et
        al. 2023, "DE").
      max_exponent_bits: ``E``, the number of decades.
      zero: ``False`` (an unsigned map only) replaces the map's 0 by its
        smallest positive value, which then appears twice: Li et al.'s (2023)
        "DE-0", a second-moment map on which no ``v`` is stored as 0.

    Returns:
      The ``2**total_bits`` values, float32, sorted ascending (non-decreasing
      with ``zero=False``).

    Raises:
      ValueError: ``zero=False`` with ``signed=True`` (a first moment may be 0),
        or bit counts that do not give ``2**total_bits`` values.

    Examples:
      >>> from gradtx import dynamic_map
      >>> m = dynamic_map(signed=True)
      >>> print(m.shape, m[0], m[-1])
      (256,) -0.99296874 1.0
      >>> dynamic_map(signed=True, total_bits=4, max_exponent_bits=3)[6:9]
      array([-0.0055, 0.    , 0.0055], dtype=float32)
      >>> print(dynamic_map(signed=False)[:3])
      [0.0000000e+00 3.2500003e-07 7.7499999e-07]
      >>> print(dynamic_map(signed=False, zero=False)[:3])
      [3.2500003e-07 3.2500003e-07 7.7499999e-07]

    References:
      Dettmers, Lewis, Shleifer & Zettlemoyer (2022), Sec. 2 and Fig. 2;
      Dettmers (2015), 8-Bit Approximations for Parallelism in Deep Learning;
      Li, Chen & Zhu (2023), Memory Efficient Optimizers with 4-bit States,
      Sec. 4.2 (the zero-point problem, DE-0).
    """
    if signed and not zero:
        raise ValueError("dynamic_map: zero=False is for an unsigned map (signed=False).")
    non_sign_bits = total_bits - 1
    values: list[np.ndarray] = []
    for i in range(max_exponent_bits):
        exponent = i + non_sign_bits - max_exponent_bits + (0 if signed else 1)
        edges = _torch_linspace(0.1, 1.0, 2**exponent + 1)
        means = (edges[:-1] + edges[1:]) / np.float32(2.0)
        scale = np.float32(10.0 ** (i - max_exponent_bits + 1))
        values.append(scale * means)
        if signed:
            values.append(-scale * means)
    extra = 2 ** (non_sign_bits - max_exponent_bits) - 1
    if extra > 0:  # the codes with no exponent bit set, at the last decade's scale
        edges = _torch_linspace(0.1, 1.0, extra + 1)
        means = (edges[:-1] + edges[1:]) / np.float32(2.0)
        values.append(scale * means)
        if signed:
            values.append(-scale * means)
    table = np.concatenate([*values, np.float32([0.0, 1.0])])
    if table.size != 2**total_bits:
        raise ValueError(
            f"dynamic_map: total_bits={total_bits} and max_exponent_bits={max_exponent_bits} "
            f"give {table.size} values, expected {2**total_bits}."
        )
    table = np.sort(table).astype(np.float32)
    if not zero:  # DE-0: the code that held 0 now holds the smallest positive value
        table[0] = table[1]
    return table


def linear_map(signed: bool = True, total_bits: int = 8) -> np.ndarray:
    """The linear quantization map: equally spaced values of ``[-1, 1]`` or ``[0, 1]``.

    Signed: ``2^b - 1`` values ``-1, ..., 0, ..., 1`` (an odd count, so zero is
    one of them); unsigned: ``2^b`` values ``0, 1/(2^b-1), ..., 1``.

    Args:
      signed: a map of ``[-1, 1]`` or of ``[0, 1]``.
      total_bits: bits per code (at most 8).

    Returns:
      The values, float32, sorted ascending.

    Examples:
      >>> from gradtx import linear_map
      >>> linear_map(signed=True, total_bits=2)
      array([-1.,  0.,  1.], dtype=float32)
    """
    count = 2**total_bits - 1 if signed else 2**total_bits
    return np.linspace(-1.0 if signed else 0.0, 1.0, count).astype(np.float32)


def zero_free_linear_map(total_bits: int = 4) -> np.ndarray:
    """The linear map without zero of Li et al. (2023): ``Q_j = (j + 1) / 2^b``.

    For the second moment ``v`` Adam divides by ``sqrt(v) + eps``: a map holding
    zero rounds every ``v`` below half its first gap to exactly 0, and the
    update of such a coordinate becomes ``m / eps``, a huge step. Without zero
    the smallest stored ``v`` is ``N_b / 2^b`` (Li et al. 2023, Sec. 4.2,
    "zero-point problem").

    Args:
      total_bits: bits per code.

    Returns:
      The ``2**total_bits`` values ``1/2^b, 2/2^b, ..., 1``, float32.

    Examples:
      >>> from gradtx import zero_free_linear_map
      >>> zero_free_linear_map(2)
      array([0.25, 0.5 , 0.75, 1.  ], dtype=float32)

    References:
      Li, Chen & Zhu (2023), Memory Efficient Optimizers with 4-bit States, Sec. 4.2.
    """
    return (np.arange(1, 2**total_bits + 1) / 2.0**total_bits).astype(np.float32)


# ---------------------------------------------------------------------- block-wise


def _layout(shape: tuple[int, ...], block_size: int) -> tuple[int, int]:
    """``(k, n)``: blocks run over ``shape[k:]`` flattened, ``n`` of them per leading index."""
    for k in range(len(shape) - 1, -1, -1):
        rest = math.prod(shape[k:])
        if rest % block_size == 0:
            return k, rest // block_size
    return 0, -(-math.prod(shape) // block_size)


def _nearest_by_search(code: Array, x: Array) -> Array:
    """The index of the value of the sorted ``code`` nearest to ``x``; ties go to the lower.

    As bitsandbytes: the code at or below ``x`` (binary search), moved up one
    when the code above is strictly nearer, the distances taken in ``x``'s
    dtype. This is the rule; :func:`_nearest` computes the same indices faster.
    """
    below = jnp.clip(jnp.searchsorted(code, x, side="right") - 1, 0, code.size - 2)
    above_nearer = jnp.abs(x - code[below + 1]) < jnp.abs(x - code[below])
    return below + above_nearer.astype(below.dtype)


def _rule_np(code: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:func:`_nearest_by_search` in numpy float32 (same roundings), for building tables."""
    below = np.clip(np.searchsorted(code, x, side="right") - 1, 0, code.size - 2)
    return below + (np.abs(x - code[below + 1]) < np.abs(x - code[below]))


def _order_key(x: np.ndarray) -> np.ndarray:
    """float32 -> int64 in the same order (``-0.0`` and ``0.0`` both 0)."""
    bits = x.view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def _from_key(key: np.ndarray) -> np.ndarray:
    bits = np.where(key < 0, (-key) | 0x80000000, key).astype(np.uint32)
    return bits.view(np.float32)


_MAX_MANTISSA_BITS = 12


@functools.lru_cache(maxsize=32)
def _search_tables(code_bytes: bytes) -> tuple[np.ndarray, np.ndarray, int] | None:
    """``(thresholds, first, shift)``: the tables of :func:`_nearest` for a float32 map.

    ``thresholds[j]`` is the smallest float32 ``x`` that the rule
    (:func:`_nearest_by_search`) sends above ``j``. On ``x <= code[-1]`` the rule
    is non-decreasing in ``x`` (between two codes the distance to the upper one
    only shrinks and to the lower one only grows, also after float32 rounding;
    at a code it returns that code), so there it equals
    ``#{j : thresholds[j] <= x}``. Each threshold is found by bisection over the
    float32 values between two consecutive codes, with the rule evaluated in
    numpy float32.

    ``first[b]`` is, for the bucket ``b`` of float32 values sharing the top bits
    ``bits(x) >> shift`` (sign, exponent and ``23 - shift`` mantissa bits), the
    rule's index at the bucket's smallest value (at most ``size - 2``). ``shift``
    is the largest for which no bucket holds two thresholds, so the rule's
    index on a bucket is ``first[b]`` or ``first[b] + 1``; this is checked here.

    A map may repeat a value (``dynamic_map(zero=False)``): the rule never
    returns the first of two equal codes above them, the bisection between
    them ends at once, and the check below still holds. ``None`` (the binary
    search is used) for a map that decreases anywhere, or whose codes are so
    close that no bucket size up to ``23 - _MAX_MANTISSA_BITS`` bits fits;
    none of the module's maps.
    """
    code = np.frombuffer(code_bytes, np.float32)
    n = code.size
    if n < 2 or not np.all(code[1:] >= code[:-1]):
        return None
    lo, hi = _order_key(code[:-1]), _order_key(code[1:])  # rule(lo) = j, rule(hi) = j + 1
    target = np.arange(1, n)
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        up = _rule_np(code, _from_key(mid)) >= target
        hi, lo = np.where(up, mid, hi), np.where(up, lo, mid)
    thresholds = _from_key(hi)
    for mantissa_bits in range(_MAX_MANTISSA_BITS + 1):
        shift = 23 - mantissa_bits
        start = np.arange(2 ** (32 - shift), dtype=np.uint64) << np.uint64(shift)
        end = start + np.uint64((1 << shift) - 1)
        a = start.astype(np.uint32).view(np.float32)
        b = end.astype(np.uint32).view(np.float32)
        with np.errstate(invalid="ignore"):
            smallest, largest = np.fmin(a, b), np.fmax(a, b)
            largest = np.minimum(largest, code[-1])
            finite = np.isfinite(smallest) & np.isfinite(largest)
        first = np.searchsorted(thresholds, np.where(finite, smallest, 0), side="right")
        last = np.searchsorted(thresholds, np.where(finite, largest, 0), side="right")
        first = np.where(
            np.isnan(a) | np.isnan(b), np.where(start >> np.uint64(31), 0, n - 2), first
        )
        if np.all((last - first <= 1) | ~finite):
            return thresholds, np.minimum(first, n - 2).astype(np.uint8), shift
    return None


def _nearest(code: Any, x: Array) -> Array:
    """The index of the value of the sorted ``code`` nearest to ``x``; ties go to the lower.

    The indices of :func:`_nearest_by_search` (bitsandbytes' rule), bit for bit
    on every float32 input (NaN and infinities included). For a float32 ``x``
    and a concrete map of at most 256 values, the binary search (eight passes
    of gathers) is replaced by two lookups (:func:`_search_tables`): the bucket
    of ``x``'s top bits gives a candidate ``c`` with the rule's index ``c`` or
    ``c + 1``, and ``x >= thresholds[c]`` picks between them. Above ``code[-1]``
    (and for NaN) the rule is applied as written, with its last two codes. A
    float64 ``x``, a traced map, or one :func:`_search_tables` has no table
    for, uses the binary search.
    """
    traced = isinstance(code, jax.core.Tracer)
    tables = None
    if not traced and jnp.result_type(x) == jnp.float32 and np.size(code) <= 256:
        code = np.asarray(code, np.float32)
        tables = _search_tables(code.tobytes())
    if tables is None:
        return _nearest_by_search(jnp.asarray(code, jnp.result_type(x)), x)
    thresholds, first, shift = tables
    bucket = jax.lax.shift_right_logical(
        jax.lax.bitcast_convert_type(x, jnp.uint32), np.uint32(shift)
    )
    candidate = jnp.asarray(first)[bucket].astype(jnp.int32)
    index = candidate + (x >= jnp.asarray(thresholds)[candidate]).astype(jnp.int32)
    top, second = code[-1], code[-2]
    beyond = (code.size - 2) + (jnp.abs(x - top) < jnp.abs(x - second)).astype(jnp.int32)
    return jnp.where(x <= top, index, beyond)


def quantize_blockwise(x: Array, code: Any, block_size: int) -> tuple[Array, Array]:
    """Block-wise quantization: ``x`` as codes into ``code`` and one absmax per block.

    Every element is divided by the largest magnitude ``N_b`` of its block and
    rounded to the nearest value of ``code`` (ties to the lower one), in float32
    (float64 for a float64 ``x``), as ``bitsandbytes.functional.quantize_blockwise``
    does on CPU. For the block layout see the module docstring.

    Args:
      x: the array (a real float dtype; bfloat16 and float16 computed in float32).
      code: the map, sorted ascending (e.g. :func:`dynamic_map`), at most 256 values.
      block_size: elements per block.

    Returns:
      ``(codes, scales)``: uint8 indices into ``code`` with the shape of ``x``,
      and ``N_b`` (float32, float64 for a float64 ``x``) of shape
      ``x.shape[:k] + (n_blocks,)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx import dequantize_blockwise, dynamic_map, quantize_blockwise
      >>> x = jnp.array([[0.5, -1.0], [2.0, 0.001]])
      >>> codes, scales = quantize_blockwise(x, dynamic_map(), 2)
      >>> codes, scales.shape
      (Array([[219,   0],
             [255, 138]], dtype=uint8), (2, 1))
      >>> dequantize_blockwise(codes, scales, dynamic_map(), 2)
      Array([[ 5.0078124e-01, -9.9296874e-01],
             [ 2.0000000e+00,  9.8750007e-04]], dtype=float32)

    Note:
      An all-zero block gets ``N_b = 0`` and the code nearest 0. bitsandbytes
      divides 0 by 0 there and stores code 0; both dequantize to zero.
    """
    dtype = jnp.promote_types(jnp.result_type(x), jnp.float32)
    shape = jnp.shape(x)
    k, n_blocks = _layout(shape, block_size)
    rows = jnp.reshape(jnp.asarray(x, dtype), shape[:k] + (-1,))
    length = rows.shape[-1]
    padding = [(0, 0)] * k + [(0, n_blocks * block_size - length)]
    blocks = jnp.reshape(jnp.pad(rows, padding), shape[:k] + (n_blocks, block_size))
    absmax = jnp.max(jnp.abs(blocks), axis=-1)
    safe = jnp.where(absmax == 0, 1.0, absmax)[..., None]
    normed = jnp.where(absmax[..., None] == 0, 0.0, blocks / safe)
    indices = jnp.reshape(_nearest(code, normed), shape[:k] + (-1,))[..., :length]
    return jnp.reshape(indices, shape).astype(jnp.uint8), absmax


def dequantize_blockwise(
    codes: Array, scales: Array, code: Any, block_size: int, dtype: Any = jnp.float32
) -> Array:
    """The inverse of :func:`quantize_blockwise`: ``code[codes] * N_b``, in the scales' dtype.

    Args:
      codes: uint8 indices, the array's shape.
      scales: the per-block ``N_b`` from :func:`quantize_blockwise`.
      code: the map the codes index.
      block_size: elements per block, as quantized.
      dtype: the dtype of the result.

    Returns:
      The array, shape ``codes.shape``, in ``dtype``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx import dequantize_blockwise, zero_free_linear_map
      >>> codes = jnp.array([[0, 15], [7, 3]], jnp.uint8)
      >>> dequantize_blockwise(codes, jnp.array([[2.0], [1.0]]), zero_free_linear_map(4), 2)
      Array([[0.125, 2.   ],
             [0.5  , 0.25 ]], dtype=float32)
    """
    shape = jnp.shape(codes)
    k, _ = _layout(shape, block_size)
    code = jnp.asarray(code, scales.dtype)
    values = jnp.reshape(code[codes.astype(jnp.int32)], shape[:k] + (-1,))
    per_element = jnp.repeat(scales, block_size, axis=-1)[..., : values.shape[-1]]
    return jnp.reshape(values * per_element, shape).astype(dtype)


# ---------------------------------------------------------------------- rank-1


def _rank1_applies(shape: tuple[int, ...]) -> bool:
    """Rank-1 normalisation needs two axes longer than 1; otherwise the scales of
    the one long axis would be the array itself (a float32 copy)."""
    return sum(n > 1 for n in shape) >= 2


def _rank1_normalizer(scales: tuple[Array, ...], shape: tuple[int, ...]) -> Array:
    """``N_j = min_i mu_i[j_i]`` for every index ``j`` of an array of ``shape``."""
    ndim = len(shape)
    per_axis = [
        jnp.reshape(s, (1,) * i + (-1,) + (1,) * (ndim - i - 1)) for i, s in enumerate(scales)
    ]
    return jnp.broadcast_to(functools.reduce(jnp.minimum, per_axis), shape)


def quantize_rank1(x: Array, code: Any) -> tuple[Array, tuple[Array, ...]]:
    """Rank-1 quantization (Li et al. 2023): each entry normalised by the smallest
    of the largest magnitudes of the slices through it, one slice per axis.

    For a matrix, ``r_i = max_j |x_ij|`` (the row's largest magnitude), ``c_j =
    max_i |x_ij|`` (the column's) and the entry is divided by ``min(r_i, c_j)``;
    for ``p`` axes, ``mu_a[k]`` is the largest magnitude among the entries with
    index ``k`` on axis ``a`` and

    .. math::
        N_j = \\min_{a} \\mu_a[j_a], \\qquad
        q_j = \\operatorname*{arg\\,min}_l \\left| Q_l - x_j / N_j \\right|, \\qquad
        \\tilde x_j = Q_{q_j} N_j .

    Since ``|x_j| <= mu_a[j_a]`` for every axis, ``|x_j| / N_j <= 1``. An entry
    keeps a scale set by its own row and column: a large value inflates the
    scale of its row and its column only, where a block scale is inflated for
    every entry of the block. The division and the rounding to the nearest value
    of ``code`` (ties to the lower one) are those of :func:`quantize_blockwise`.

    Args:
      x: the array, at least 2-D (a real float dtype; bfloat16 and float16
        computed in float32).
      code: the map, sorted ascending, at most 256 values.

    Returns:
      ``(codes, scales)``: uint8 indices into ``code`` with the shape of ``x``,
      and the tuple ``(mu_0, ..., mu_{p-1})``, ``mu_a`` of shape
      ``(x.shape[a],)`` (float32, float64 for a float64 ``x``).

    Raises:
      ValueError: ``x`` has fewer than 2 axes.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx import dequantize_rank1, quantize_rank1, zero_free_linear_map
      >>> v = jnp.array([[4.0, 0.02], [0.01, 0.02]])
      >>> codes, (rows, columns) = quantize_rank1(v, zero_free_linear_map(4))
      >>> codes
      Array([[15, 15],
             [ 7, 15]], dtype=uint8)
      >>> rows, columns
      (Array([4.  , 0.02], dtype=float32), Array([4.  , 0.02], dtype=float32))
      >>> dequantize_rank1(codes, (rows, columns), zero_free_linear_map(4))
      Array([[4.  , 0.02],
             [0.01, 0.02]], dtype=float32)

      Block-wise, with one scale (4.0) for the four entries, the smallest
      value of the map, ``4 / 16``, would stand for 0.01 and 0.02.

    Note:
      An entry whose scale is 0 (its row or column all zero) is normalised to
      0 and dequantizes to 0.

    References:
      Li, Chen & Zhu (2023), Memory Efficient Optimizers with 4-bit States,
      NeurIPS, the paragraph "Rank-1 Normalization" (the matrix case and its
      generalisation to tensors of more than two axes).
    """
    if jnp.ndim(x) < 2:
        raise ValueError(f"quantize_rank1: x must have at least 2 axes, got shape {jnp.shape(x)}.")
    dtype = jnp.promote_types(jnp.result_type(x), jnp.float32)
    x = jnp.asarray(x, dtype)
    magnitude = jnp.abs(x)
    axes = range(x.ndim)
    scales = tuple(jnp.max(magnitude, axis=tuple(b for b in axes if b != a)) for a in axes)
    normalizer = _rank1_normalizer(scales, x.shape)
    safe = jnp.where(normalizer == 0, 1.0, normalizer)
    normed = jnp.where(normalizer == 0, 0.0, x / safe)
    return _nearest(code, normed).astype(jnp.uint8), scales


def dequantize_rank1(
    codes: Array, scales: tuple[Array, ...], code: Any, dtype: Any = jnp.float32
) -> Array:
    """The inverse of :func:`quantize_rank1`: ``code[codes] * min_a mu_a[j_a]``.

    Args:
      codes: uint8 indices, the array's shape.
      scales: the per-axis maxima ``(mu_0, ..., mu_{p-1})`` from :func:`quantize_rank1`.
      code: the map the codes index.
      dtype: the dtype of the result.

    Returns:
      The array, shape ``codes.shape``, in ``dtype``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx import dequantize_rank1, zero_free_linear_map
      >>> scales = (jnp.array([1.0, 0.5]), jnp.array([2.0, 0.25]))
      >>> codes = jnp.array([[15, 15], [15, 7]], jnp.uint8)
      >>> dequantize_rank1(codes, scales, zero_free_linear_map(4))
      Array([[1.   , 0.25 ],
             [0.5  , 0.125]], dtype=float32)
    """
    normalizer = _rank1_normalizer(tuple(scales), jnp.shape(codes))
    values = jnp.asarray(code, normalizer.dtype)[codes.astype(jnp.int32)]
    return (values * normalizer).astype(dtype)


def _pack_4bit(codes: Array) -> Array:
    """Two 4-bit codes per byte along the last axis, the first in the high half."""
    odd = codes.shape[-1] % 2
    codes = jnp.pad(codes, [(0, 0)] * (codes.ndim - 1) + [(0, odd)])
    pairs = jnp.reshape(codes, codes.shape[:-1] + (-1, 2))
    return (pairs[..., 0] << 4) | pairs[..., 1]


def _unpack_4bit(packed: Array, length: int) -> Array:
    """The inverse of :func:`_pack_4bit` for a last axis of ``length`` codes."""
    pairs = jnp.stack([packed >> 4, packed & 15], axis=-1)
    return jnp.reshape(pairs, packed.shape[:-1] + (-1,))[..., :length]


# ---------------------------------------------------------------------- the wrapper


class QuantizedArray(NamedTuple):
    """A state leaf held quantized by :func:`quantize_state`.

    Block-wise (:func:`quantize_blockwise`), ``scales`` is one array of the
    blocks' ``N_b``; rank-1 (:func:`quantize_rank1`, the leaves of
    ``rank1_fields``), it is a tuple of one vector per axis of the leaf,
    ``scales[a]`` of shape ``(shape[a],)``, and entry ``j`` is scaled by
    ``min_a scales[a][j_a]``.
    """

    codes: Array  # uint8: the leaf's shape (8-bit), or its last axis packed two per byte (4-bit).
    # float32 (float64 for a float64 leaf). Block-wise: N_b, shape[:k] + (n_blocks,).
    # Rank-1: a tuple, scales[a] of shape (shape[a],), the largest |x| with index i on axis a.
    scales: Array | tuple[Array, ...]


@functools.cache
def _maps(bits: int, nonnegative_map_has_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(signed map, non-negative map): Dettmers et al.'s dynamic maps (8 bits) or Li
    et al.'s 4-bit ones; the non-negative map without 0 unless asked for."""
    zero = nonnegative_map_has_zero
    if bits == 8:
        return dynamic_map(signed=True), dynamic_map(signed=False, zero=zero)
    nonnegative = linear_map(signed=False, total_bits=4) if zero else zero_free_linear_map(4)
    return dynamic_map(signed=True, total_bits=4, max_exponent_bits=3), nonnegative


def _field_names(path: tuple[Any, ...]) -> set[str]:
    return {k.name for k in path if isinstance(k, jax.tree_util.GetAttrKey)}


def _is_quantized(x: Any) -> bool:
    return isinstance(x, QuantizedArray)


def _quantize_leaf_now(
    x: Array, bits: int, map_has_zero: bool, block_size: int, nonnegative: bool, rank1: bool
) -> QuantizedArray:
    """One state leaf quantized: on the non-negative or the signed map of ``bits``
    (:func:`_maps`), rank-1 or block-wise; 4-bit codes packed two per byte."""
    code = _maps(bits, map_has_zero)[1 if nonnegative else 0]
    if rank1:
        codes, scales = quantize_rank1(x, code)
    else:
        codes, scales = quantize_blockwise(x, code, block_size)
    return QuantizedArray(_pack_4bit(codes) if bits == 4 else codes, scales)


def _dequantize_leaf_now(
    q: QuantizedArray, shape: tuple[int, ...], dtype: Any, bits: int, map_has_zero: bool,
    block_size: int, nonnegative: bool, rank1: bool,
) -> Array:  # fmt: skip
    """The inverse of :func:`_quantize_leaf_now`, in ``dtype``."""
    code = _maps(bits, map_has_zero)[1 if nonnegative else 0]
    codes = _unpack_4bit(q.codes, shape[-1]) if bits == 4 else q.codes
    if rank1:
        return dequantize_rank1(codes, q.scales, code, dtype)
    return dequantize_blockwise(codes, q.scales, code, block_size, dtype)


# Called eagerly (``init`` of a Flax ``nnx.Optimizer``, a script, a debugger), a
# leaf is (de)quantized in one compiled program, shared by every wrapper.
_quantize_leaf = _tactics.one_program_when_eager(_quantize_leaf_now, static_argnums=(1, 2, 3, 4, 5))
_dequantize_leaf = _tactics.one_program_when_eager(
    _dequantize_leaf_now, static_argnums=(1, 2, 3, 4, 5, 6, 7)
)


def quantize_state(
    inner: GradientTransformation,
    *,
    bits: int = 8,
    block_size: int = 256,
    min_size: int = 4096,
    nonnegative_fields: Collection[str] = ("nu",),
    rank1_fields: Collection[str] = (),
    nonnegative_map_has_zero: bool = False,
) -> GradientTransformation:
    """Stores the moments of ``inner`` block-wise quantized to 8 or 4 bits.

    ``init`` builds ``inner``'s state and replaces each floating leaf that
    mirrors a parameter (:func:`gradtx.sharding.mirror_indices`, exactly the
    parameter's shape) and has at least ``min_size`` elements by a
    :class:`QuantizedArray`; smaller leaves, counters and everything else stay
    as they are. ``update`` dequantizes, runs ``inner.update`` in the state's
    own dtype, and quantizes the new state:

    .. math::
        s_t = Q\\big(\\text{inner}(g_t, Q^{-1}(s_{t-1}))\\big)

    with :func:`quantize_blockwise` / :func:`dequantize_blockwise`. Maps: with
    ``bits=8`` the signed :func:`dynamic_map` (Dettmers et al. 2022) for
    signed leaves and the unsigned one without 0 (``dynamic_map(signed=False,
    zero=False)``, Li et al.'s DE-0) for non-negative ones; with ``bits=4`` the
    signed 4-bit dynamic-exponent map and :func:`zero_free_linear_map` (Li et
    al. 2023), codes packed two per byte. A non-negative leaf is a second
    moment that the step divides by: a map with 0 stores every entry below
    half its first gap (for 8 bits ``1.6e-7`` of its block's largest) as
    0, and the step of such an entry is then ``m / eps``
    (``nonnegative_map_has_zero=True`` keeps that map, as bitsandbytes does).
    A leaf is non-negative when a field of ``nonnegative_fields`` is on its
    path (the NamedTuple field names of the state: ``nu`` is Adam's,
    AdEMAMix's and SOAP's second moment); this is read from the state's
    structure, never from values.

    A leaf on a path through a field of ``rank1_fields`` is normalised rank-1
    (:func:`quantize_rank1`, Li et al. 2023, "Rank-1 Normalization") instead of block-wise:
    entry ``j`` by ``min_a mu_a[j_a]``, the smallest of the largest magnitudes
    of its row, its column (and of its slices along further axes), with one
    float32 scale per index of each axis. A leaf with fewer than two axes longer
    than 1 (a vector) stays block-wise.

    Args:
      inner: any transformation, e.g. :func:`gradtx.adamw`.
      bits: 8 or 4.
      block_size: elements per block (even; bitsandbytes uses 256 or 2048, Li
        et al. 128).
      min_size: leaves with fewer elements stay in full precision (bitsandbytes
        keeps tensors under 4096 elements in 32 bits).
      nonnegative_fields: state field names whose leaves are >= 0.
      rank1_fields: state field names whose leaves of two or more axes are
        normalised rank-1 (Li et al. put the second moment, ``("nu",)``, there).
      nonnegative_map_has_zero: ``True`` stores non-negative leaves on a map
        holding 0: bitsandbytes' unsigned :func:`dynamic_map` (8 bits), or
        :func:`linear_map` ``(signed=False, total_bits=4)`` (4 bits).

    Returns:
      The wrapped transformation; its state is ``inner``'s with
      :class:`QuantizedArray` in place of the quantized leaves.

    Raises:
      ValueError: ``bits`` not 8 or 4, ``block_size`` not a positive even
        integer, ``min_size`` not an integer >= 0, ``nonnegative_fields`` or
        ``rank1_fields`` a str.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.quantize_state(gradtx.adam(1e-3), min_size=4)
      >>> state = tx.init({"w": jnp.ones((2, 256))})
      >>> state[0].mu["w"].codes.dtype, state[0].mu["w"].scales.shape
      (dtype('uint8'), (2, 1))
      >>> tx = gradtx.quantize_state(gradtx.adam(1e-3), bits=4, min_size=4, rank1_fields=("nu",))
      >>> [s.shape for s in tx.init({"w": jnp.ones((2, 256))})[0].nu["w"].scales]
      [(2,), (256,)]
    """
    owner = "quantize_state"
    if bits not in (4, 8):
        raise ValueError(f"{owner}: bits must be 8 or 4, got {bits!r}.")
    _checks.positive_int(owner, "block_size", block_size)
    if block_size % 2:
        raise ValueError(f"{owner}: block_size must be even, got {block_size!r}.")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise ValueError(f"{owner}: min_size must be an integer >= 0, got {min_size!r}.")
    for name, fields in (
        ("nonnegative_fields", nonnegative_fields),
        ("rank1_fields", rank1_fields),
    ):
        if isinstance(fields, str):
            raise ValueError(f"{owner}: {name} must be a collection of names, not a str.")
    map_has_zero = bool(nonnegative_map_has_zero)
    nonnegative, rank1 = frozenset(nonnegative_fields), frozenset(rank1_fields)

    def is_nonnegative(path: tuple[Any, ...]) -> bool:
        return bool(_field_names(path) & nonnegative)

    def rank1_for(path: tuple[Any, ...], shape: tuple[int, ...]) -> bool:
        return bool(_field_names(path) & rank1) and _rank1_applies(shape)

    def quantize(path: tuple[Any, ...], x: Array) -> QuantizedArray:
        layout = (bits, map_has_zero, block_size, is_nonnegative(path))
        return _quantize_leaf(x, *layout, rank1_for(path, jnp.shape(x)))

    def dequantize(path: tuple[Any, ...], q: QuantizedArray, like: Any) -> Array:
        shape, dtype = tuple(like.shape), jnp.dtype(like.dtype)
        layout = (bits, map_has_zero, block_size, is_nonnegative(path))
        return _dequantize_leaf(q, shape, dtype, *layout, rank1_for(path, shape))

    def init_fn(params):
        state = inner.init(params)
        param_leaves = jax.tree.leaves(params, is_leaf=lambda x: x is None)

        def leaf(path, x, i):
            chosen = (
                i >= 0
                and jnp.shape(x) == jnp.shape(param_leaves[i])
                and jnp.ndim(x) >= 1
                and jnp.size(x) >= min_size
                and jnp.issubdtype(x.dtype, jnp.floating)
            )
            return quantize(path, _tactics.not_folded(x)) if chosen else x

        return jax.tree_util.tree_map_with_path(leaf, state, mirror_indices(state, params))

    def update_fn(updates, state, params=None, **extra_args):
        template = jax.eval_shape(inner.init, updates if params is None else params)

        def restore(path, s, like):
            return dequantize(path, s, like) if _is_quantized(s) else s

        full = jax.tree_util.tree_map_with_path(restore, state, template, is_leaf=_is_quantized)
        updates, full = inner.update(updates, full, params, **extra_args)

        def store(path, s, new):
            return quantize(path, new) if _is_quantized(s) else new

        return updates, jax.tree_util.tree_map_with_path(store, state, full, is_leaf=_is_quantized)

    return GradientTransformation(init_fn, update_fn)
