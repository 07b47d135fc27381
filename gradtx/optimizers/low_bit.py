"""AdamW and Lion with quantized moments: 8-bit (Dettmers et al. 2022), 4-bit (Li et al. 2023).

Each is the full-precision optimizer wrapped in :func:`gradtx.quantize_state`:
the math of the step is :func:`gradtx.adamw`'s or :func:`gradtx.lion`'s, run
on the dequantized moments; only what is stored between steps changes.
"""

from __future__ import annotations

from typing import Any

from gradtx.base import GradientTransformation, ScalarOrSchedule
from gradtx.combine import Mask
from gradtx.optimizers.adam import adamw
from gradtx.optimizers.lion import lion
from gradtx.transforms.quantized_state import quantize_state


def adamw_8bit(
    learning_rate: ScalarOrSchedule = 0.001,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any | None = None,
    block_size: int = 256,
    min_size: int = 4096,
    nu_map_has_zero: bool = False,
) -> GradientTransformation:
    """AdamW with its moments stored in 8 bits, block-wise (Dettmers et al. 2022).

    ``quantize_state(adamw(...), bits=8, block_size=block_size, min_size=min_size)``:
    :func:`gradtx.adamw`'s step on ``m`` and ``v`` dequantized from the signed
    :func:`gradtx.dynamic_map` and from the unsigned one without 0
    (``dynamic_map(signed=False, zero=False)``, Li et al.'s DE-0), with one
    absmax per block of ``block_size`` elements, re-quantized after the step
    (see :func:`gradtx.quantize_state`). The state takes 2 bytes per parameter
    plus 8 per block (two float32 scales). Leaves under ``min_size`` elements
    stay float32, as in bitsandbytes' ``AdamW8bit``.

    Note:
      Departure from bitsandbytes' ``AdamW8bit``: its map for ``v`` holds 0,
      and ``nu_map_has_zero=True`` keeps it. On that map a ``v`` under
      ``1.6e-7`` of its block's largest (a rare token's column of an output
      layer, say) is stored as 0 while its ``m`` is not, and the entry's step
      becomes ``m / eps`` instead of about 1. Without 0 the smallest stored
      ``v`` is the map's smallest positive value times the block's largest; Li
      et al. (2023, Sec. 4.2) traced their 4-bit AdamW's instability to this
      zero point. ``benchmarks/README.md`` measures both maps on a character
      language model.

    Args:
      learning_rate: as :func:`gradtx.adamw`.
      b1: as :func:`gradtx.adamw`.
      b2: as :func:`gradtx.adamw`.
      eps: as :func:`gradtx.adamw`.
      eps_root: as :func:`gradtx.adamw`.
      mu_dtype: as :func:`gradtx.adamw` (the dtype ``m`` is dequantized to).
      weight_decay: as :func:`gradtx.adamw`.
      mask: as :func:`gradtx.adamw`.
      nesterov: as :func:`gradtx.adamw`.
      nu_dtype: as :func:`gradtx.adamw`.
      block_size: elements per quantization block.
      min_size: leaves with fewer elements are not quantized.
      nu_map_has_zero: ``True`` stores ``v`` on bitsandbytes' unsigned map,
        which holds 0 (see the note).

    Returns:
      The optimizer.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> params = {"w": jnp.ones((64, 256))}
      >>> tx = gradtx.adamw_8bit(1e-3)
      >>> updates, state = tx.update(params, tx.init(params), params)
      >>> state[0].mu["w"].codes.dtype, state[0].mu["w"].scales.shape
      (dtype('uint8'), (64, 1))

    References:
      Dettmers, Lewis, Shleifer & Zettlemoyer (2022), 8-bit Optimizers via
      Block-wise Quantization, ICLR.
      Li, Chen & Zhu (2023), Memory Efficient Optimizers with 4-bit States,
      NeurIPS, Sec. 4.2 (the zero-point problem; DE-0).
    """
    inner = adamw(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask,
        nesterov=nesterov, nu_dtype=nu_dtype,
    )  # fmt: skip
    return quantize_state(
        inner, bits=8, block_size=block_size, min_size=min_size,
        nonnegative_map_has_zero=nu_map_has_zero,
    )  # fmt: skip


def adamw_4bit(
    learning_rate: ScalarOrSchedule = 0.001,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any | None = None,
    block_size: int = 128,
    min_size: int = 4096,
    nu_normalization: str = "rank1",
) -> GradientTransformation:
    """AdamW with its moments stored in 4 bits (Li et al. 2023).

    ``quantize_state(adamw(...), bits=4, block_size=block_size,
    min_size=min_size, rank1_fields=("nu",))``: ``m`` on the signed 4-bit
    dynamic-exponent map with one absmax per block of 128 elements (Li et
    al.'s B128/DE), ``v`` on :func:`gradtx.zero_free_linear_map` (so no ``v``
    is stored as 0) normalised rank-1 (Rank-1/Linear, :func:`gradtx.quantize_rank1`):

    .. math::
        \\tilde v_{ij} = Q_{q_{ij}} \\min(r_i, c_j), \\qquad
        r_i = \\max_j v_{ij}, \\quad c_j = \\max_i v_{ij},

    for a matrix (for more axes the smallest of the per-axis maxima; a vector
    ``v`` stays in blocks of ``block_size``). This is the paper's 4-bit AdamW.
    Two codes per byte: 1 byte per parameter, plus 4 per block of ``m`` and 4
    per row and per column of ``v``. ``nu_normalization="block"`` stores ``v``
    in blocks of ``block_size`` as well (the paper's B128/Linear), 4 bytes per block.

    Args:
      learning_rate: as :func:`gradtx.adamw`.
      b1: as :func:`gradtx.adamw`.
      b2: as :func:`gradtx.adamw`.
      eps: as :func:`gradtx.adamw`.
      eps_root: as :func:`gradtx.adamw`.
      mu_dtype: as :func:`gradtx.adamw`.
      weight_decay: as :func:`gradtx.adamw`.
      mask: as :func:`gradtx.adamw`.
      nesterov: as :func:`gradtx.adamw`.
      nu_dtype: as :func:`gradtx.adamw`.
      block_size: elements per quantization block (Li et al.: 128).
      min_size: leaves with fewer elements are not quantized.
      nu_normalization: ``"rank1"`` (Li et al.) or ``"block"``: how ``v`` is scaled.

    Returns:
      The optimizer.

    Raises:
      ValueError: ``nu_normalization`` is neither ``"rank1"`` nor ``"block"``
        (and as :func:`gradtx.quantize_state` and :func:`gradtx.adamw`).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> nu = gradtx.adamw_4bit(1e-3).init({"w": jnp.ones((64, 96))})[0].nu["w"]
      >>> nu.codes.shape, [s.shape for s in nu.scales]
      ((64, 48), [(64,), (96,)])

    Note:
      Rank-1 is the default because it measured better. Over 1000 steps of an
      MLP (``benchmarks/state_memory.py --parts error``), ``v``'s relative
      error was 0.05 / 0.10 / 0.42 at steps 10 / 100 / 1000, against
      0.30 / 0.34 / 0.72 with blocks of 128. A ``v`` with fewer than two axes
      longer than 1 (a bias, a norm scale of at least ``min_size`` entries) is
      kept in blocks of ``block_size``, since its rank-1 scales would be the
      vector itself. An ``n x m`` ``v`` keeps ``n + m`` float32 scales
      against ``n m / 128`` blocks: fewer when both axes are long (a 512 x
      512 kernel: 1024 against 2048), more for a narrow one (784 x 64: 848
      against 392).

    References:
      Li, Chen & Zhu (2023), Memory Efficient Optimizers with 4-bit States,
      NeurIPS ("4-bit AdamW": B128/DE for the first moment, Rank-1/Linear for
      the second).
    """
    if nu_normalization not in ("rank1", "block"):
        raise ValueError(
            f"adamw_4bit: nu_normalization must be 'rank1' or 'block', got {nu_normalization!r}."
        )
    inner = adamw(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask,
        nesterov=nesterov, nu_dtype=nu_dtype,
    )  # fmt: skip
    rank1_fields = ("nu",) if nu_normalization == "rank1" else ()
    return quantize_state(
        inner, bits=4, block_size=block_size, min_size=min_size, rank1_fields=rank1_fields
    )


def lion_8bit(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: Mask | None = None,
    *,
    block_size: int = 256,
    min_size: int = 4096,
) -> GradientTransformation:
    """Lion with its momentum stored in 8 bits, block-wise (as bitsandbytes' ``Lion8bit``).

    ``quantize_state(lion(...), bits=8, block_size=block_size, min_size=min_size)``:
    :func:`gradtx.lion`'s step on the momentum dequantized from the signed
    :func:`gradtx.dynamic_map`: 1 byte per parameter plus 4 per block.

    Args:
      learning_rate: as :func:`gradtx.lion`.
      b1: as :func:`gradtx.lion`.
      b2: as :func:`gradtx.lion`.
      mu_dtype: as :func:`gradtx.lion`.
      weight_decay: as :func:`gradtx.lion`.
      mask: as :func:`gradtx.lion`.
      block_size: elements per quantization block.
      min_size: leaves with fewer elements are not quantized.

    Returns:
      The optimizer.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.lion_8bit(1e-4)
      >>> tx.init({"w": jnp.ones((64, 64))})[0].mu["w"].codes.dtype
      dtype('uint8')

    References:
      Chen et al. (2023), Symbolic Discovery of Optimization Algorithms, Alg. 2;
      Dettmers, Lewis, Shleifer & Zettlemoyer (2022).
    """
    inner = lion(learning_rate, b1, b2, mu_dtype, weight_decay, mask)
    return quantize_state(inner, bits=8, block_size=block_size, min_size=min_size)
