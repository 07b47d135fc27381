"""Exponential moving averages and their bias correction, as blocks of their own."""

from __future__ import annotations

from typing import Any, NamedTuple

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, Updates


class EmaState(NamedTuple):
    """State of :func:`ema`."""

    count: Array  # int32 scalar: t, the number of averaged updates.
    ema: Updates  # The raw (biased) average, shaped like the params.


def ema(
    decay: float, debias: bool = True, accumulator_dtype: Any | None = None
) -> GradientTransformation:
    """Replaces updates by their exponential moving average.

    .. math::
        m_t = \\beta m_{t-1} + (1 - \\beta) g_t, \\qquad
        \\text{out} = m_t / (1 - \\beta^t) \\text{ if debias else } m_t

    Args:
      decay: ``beta`` in [0, 1).
      debias: divide by ``1 - beta^t`` (Kingma & Ba 2015, Sec. 3). The state keeps
        the raw average either way.
      accumulator_dtype: dtype of the stored average; ``None`` keeps the params'.

    Raises:
      ValueError: ``decay`` outside [0, 1) or a non-float ``accumulator_dtype``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.ema(0.9)
      >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]  # debiased: g at t=1, to rounding
      Array([0.99999..., 0.99999...], dtype=float32)
    """
    _checks.in_range("ema", "decay", decay, 0.0, 1.0)
    _checks.dtype_or_none("ema", "accumulator_dtype", accumulator_dtype)

    def init_fn(params):
        return EmaState(tree.zero_count(), tree.zeros_like(params, accumulator_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.ema, updates, owner="ema")
        average = tree.update_moment(updates, state.ema, decay, 1)
        count = tree.safe_increment(state.count)
        out = tree.bias_correction(average, decay, count) if debias else average
        out = tree.cast_like(out, updates)
        return out, EmaState(count, average)

    return GradientTransformation(init_fn, update_fn)


class BiasCorrectionState(NamedTuple):
    """State of :func:`bias_correction`."""

    count: Array  # int32 scalar: t, the number of steps seen.


def bias_correction(decay: float) -> GradientTransformation:
    """Divides updates by ``1 - decay^t``: debiases the EMA that precedes it.

    An average started at zero with decay ``beta`` carries total weight
    ``1 - beta^t`` after ``t`` steps; dividing by it gives an unbiased estimate
    (Kingma & Ba 2015, Sec. 3; Goodfellow et al. 2016, Alg. 8.7). Use it after any
    block whose output is such an average::

        chain(ema(0.9, debias=False), bias_correction(0.9))  ==  ema(0.9)
        chain(trace(0.9), scale(0.1), bias_correction(0.9))  # a debiased EMA of g

    The moment primitives also take it as a flag (``ema(debias=...)``,
    ``scale_by_rms(bias_correction=...)``); this block is for the chains that
    build an average from other pieces.

    Args:
      decay: the ``beta`` of the average being corrected, in [0, 1).

    Raises:
      ValueError: ``decay`` outside [0, 1).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.chain(gradtx.ema(0.5, debias=False), gradtx.bias_correction(0.5))
      >>> tx.update(jnp.full(2, 4.0), tx.init(jnp.zeros(2)))[0]
      Array([4., 4.], dtype=float32)
    """
    _checks.in_range("bias_correction", "decay", decay, 0.0, 1.0)

    def init_fn(params):
        tree.check_inexact(params, "bias_correction")
        return BiasCorrectionState(tree.zero_count())

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        count = tree.safe_increment(state.count)
        out = tree.bias_correction(updates, decay, count)
        out = tree.cast_like(out, updates)
        return out, BiasCorrectionState(count)

    return GradientTransformation(init_fn, update_fn)
