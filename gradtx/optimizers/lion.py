"""Lion: the sign of an interpolated momentum (Chen et al. 2023, Alg. 2).

Symbols: ``beta_1`` (interpolation) = ``b1``; ``beta_2`` (momentum decay) = ``b2``;
``m`` = ``mu``; ``c`` the interpolated update; ``lambda`` = ``weight_decay``;
``eta_t`` = ``learning_rate``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import Mask, chain
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate

_MODES = ("hard", "smooth", "refined")


class ScaleByLionState(NamedTuple):
    """State of :func:`scale_by_lion`."""

    count: Array  # int32 scalar: t.
    mu: Updates  # m: EMA of g with decay beta_2, in mu_dtype.


def _lion_leaf(g, m, b1, b2, mode, smooth_beta):
    """``c = b1 m + (1 - b1) g``, its sign (or a smooth sign), and ``m``'s new value."""
    c_dtype = tree.compute_dtype(jnp.promote_types(g.dtype, m.dtype))
    c = b1 * tree.as_dtype(m, c_dtype) + (1 - b1) * tree.as_dtype(g, c_dtype)
    if mode == "hard":
        out = jnp.sign(c)
    elif mode == "smooth":
        out = jnp.tanh(smooth_beta * c)
    else:  # refined: the identity inside the unit ball, the sign outside it
        out = jnp.where(jnp.abs(c) < 1, c, jnp.sign(c))
    return tree.as_dtype(out, g.dtype), tree.moment_leaf(g, m, b2, 1)


def scale_by_lion(
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any | None = None,
    *,
    mode: str = "hard",
    smooth_beta: float = 1.0,
) -> GradientTransformation:
    """Lion's scaling: the sign of an interpolation of momentum and gradient.

    .. math::
        c = \\beta_1 m + (1 - \\beta_1) g, \\quad
        \\text{out} = \\operatorname{sign}(c), \\quad
        m \\leftarrow \\beta_2 m + (1 - \\beta_2) g

    (Chen et al. 2023, Alg. 2). The output is taken from the momentum *before*
    it absorbs ``g``.
    Every coordinate moves by the same amount, so Lion's learning rate is usually
    3-10x smaller than AdamW's (the paper's advice).

    Args:
      b1: ``beta_1`` in [0, 1], the weight of the momentum in ``c``.
      b2: ``beta_2`` in [0, 1), the decay of the momentum ``m``.
      mu_dtype: dtype of ``m``; ``None`` keeps the params'.
      mode: ``"hard"`` (the paper: ``sign(c)``), ``"smooth"`` (``tanh(smooth_beta
        c)``) or ``"refined"`` (``c`` where ``|c| < 1``, else ``sign(c)``), as
        Optax's ``mode``. A complex ``c`` has ``sign(c) = c / |c|``.
      smooth_beta: > 0, the slope of ``tanh`` at 0 for ``mode="smooth"``.

    Raises:
      ValueError: ``b1`` outside [0, 1]; ``b2`` outside [0, 1); an unknown
        ``mode``; ``smooth_beta`` <= 0; a non-float ``mu_dtype``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_lion()
      >>> tx.update(jnp.array([0.3, -2.0, 0.0]), tx.init(jnp.zeros(3)))[0]
      Array([ 1., -1.,  0.], dtype=float32)
    """
    owner = "scale_by_lion"
    _checks.in_range(owner, "b1", b1, 0.0, 1.0, closed_high=True)
    _checks.in_range(owner, "b2", b2, 0.0, 1.0)
    _checks.dtype_or_none(owner, "mu_dtype", mu_dtype)
    _checks.positive(owner, "smooth_beta", smooth_beta)
    if mode not in _MODES:
        raise ValueError(f"{owner}: mode must be one of {_MODES}, got {mode!r}.")

    def init_fn(params):
        return ScaleByLionState(tree.zero_count(), tree.zeros_like(params, mu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, owner=owner)
        out, mu = tree.map_unzip(
            lambda g, m: _lion_leaf(g, m, b1, b2, mode, smooth_beta), 2, updates, state.mu
        )
        return out, ScaleByLionState(tree.safe_increment(state.count), mu)

    return GradientTransformation(init_fn, update_fn)


def lion(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: Mask | None = None,
) -> GradientTransformation:
    """Lion (Chen et al. 2023, Alg. 2): sign momentum with decoupled weight decay.

    .. math::
        \\theta \\leftarrow \\theta - \\eta_t \\left(
            \\operatorname{sign}(\\beta_1 m + (1-\\beta_1) g) + \\lambda \\theta \\right)

    then ``m <- beta_2 m + (1 - beta_2) g`` (:func:`scale_by_lion`). Composition:
    ``chain(scale_by_lion(b1, b2, mu_dtype), add_decayed_weights(lambda, mask),
    scale_by_learning_rate(eta))``: the decay is multiplied by the learning
    rate, as in the paper's Alg. 2 (and Optax).

    Args:
      learning_rate: ``eta_t``, a number or a schedule.
      b1, b2, mu_dtype: see :func:`scale_by_lion`.
      weight_decay: ``lambda`` >= 0, a number or a schedule (default 1e-3, Optax's).
      mask: which leaves are decayed (see :func:`add_decayed_weights`).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> params = jnp.array([1.0, 1.0])
      >>> tx = gradtx.lion(0.1, weight_decay=0.0)
      >>> tx.update(jnp.array([0.5, -3.0]), tx.init(params), params)[0]
      Array([-0.1,  0.1], dtype=float32)

    References:
      Chen et al. (2023), Symbolic Discovery of Optimization Algorithms, NeurIPS,
      Alg. 2.
    """
    _checks.learning_rate("lion", learning_rate)
    return chain(
        scale_by_lion(b1, b2, mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
