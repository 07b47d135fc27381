"""Adan (Xie et al. 2022, Alg. 1): adaptive Nesterov momentum.

Adan estimates Nesterov's look-ahead gradient from the difference of successive
gradients instead of a second gradient evaluation: beside Adam's first moment it
keeps a moving average of ``g_t - g_{t-1}`` and takes the second moment of the
extrapolated gradient ``g_t + (1 - beta_2)(g_t - g_{t-1})``.

Decay convention: the paper writes ``m <- (1 - beta_1) m + beta_1 g``; gradtx,
like Optax and Adam, writes ``m <- b1 m + (1 - b1) g``, so ``b1 = 1 - beta_1``
(the paper's ``beta_1 = 0.02`` is ``b1 = 0.98``), and likewise for ``b2, b3``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import Mask, chain
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByAdanState(NamedTuple):
    """State of :func:`scale_by_adan` (Optax's fields, named as the paper's symbols)."""

    m: Updates  # EMA of g.
    v: Updates  # EMA of g_k - g_{k-1}.
    n: Updates  # EMA of |g_k + (1 - beta_2)(g_k - g_{k-1})|^2, real.
    g: Updates  # g_{k-1}, the previous gradient (zeros before the first step).
    t: Array  # int32 scalar: k, the number of steps taken.


_DIFFERENCE_WEIGHTS = ("b2", "1-b2")


def adan_leaf(g, m, v, n, g_prev, first, b1, b3, eps, eps_root, corrections, b2, weight):
    """One leaf of Alg. 1 with bias-corrected moments; ``first`` is True at k = 1 and
    ``weight`` multiplies the gradient difference in ``n`` and in the output."""
    c = tree.compute_dtype(jnp.promote_types(g.dtype, m.dtype))
    g_c = tree.as_dtype(g, c)
    diff = jnp.where(first, 0, g_c - tree.as_dtype(g_prev, c))
    new_m = tree.moment_leaf(g_c, m, b1, 1)
    new_v = tree.moment_leaf(diff, v, b2, 1)
    new_n = tree.moment_leaf(g_c + weight * diff, n, b3, 2)
    bc1, bc2, bc3 = corrections(c)
    m_hat = tree.as_dtype(new_m, c) / bc1
    v_hat = tree.as_dtype(new_v, c) / bc2
    n_hat = tree.as_dtype(new_n, tree.real_dtype(c)) / bc3
    out = tree.divide_by_root(m_hat + weight * v_hat, tree.sqrt(n_hat + eps_root) + eps)
    return tree.as_dtype(out, g.dtype), new_m, new_v, new_n, tree.as_dtype(g, g_prev.dtype)


def scale_by_adan(
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    difference_weight: str = "b2",
) -> GradientTransformation:
    """Adan's scaling (Xie et al. 2022, Alg. 1, lines 3-6), with bias correction.

    .. math::
        \\begin{aligned}
        m_k &= b_1 m_{k-1} + (1-b_1) g_k, \\quad
        v_k = b_2 v_{k-1} + (1-b_2)(g_k - g_{k-1}), \\\\
        n_k &= b_3 n_{k-1} + (1-b_3) |g_k + b_2 (g_k - g_{k-1})|^2, \\\\
        \\text{out} &= \\frac{\\hat m_k + b_2 \\hat v_k}
            {\\sqrt{\\hat n_k + \\epsilon_{root}} + \\epsilon}
        \\end{aligned}

    with ``x_hat = x / (1 - b^k)`` each moment's bias correction and
    ``g_k - g_{k-1} = 0`` at the first step. Symbols: the paper's ``beta_i`` is
    ``1 - b_i`` (see the module docstring), so its ``(1 - beta_2)`` weight of the
    difference is ``b_2``; ``epsilon`` = ``eps``.

    **Difference from Optax.** Optax 0.2.8 weighs the difference by ``1 - b2``
    (0.08 by default, where the paper and the authors' code have 0.92), a known
    bug (google-deepmind/optax pull request 1715). ``difference_weight="1-b2"``
    reproduces it; the default ``"b2"`` is the paper's.

    Departures from the paper, as Optax and the authors' code: the moments start
    at zero and are bias-corrected, where Alg. 1 starts them at ``m_0 = g_0``,
    ``n_0 = g_0^2`` uncorrected (both give ``m_hat_1 = g_1``); ``eps_root`` is
    added inside the root (0 by default).

    Args:
      b1, b2, b3: ``1 - beta_1, 1 - beta_2, 1 - beta_3``, each in [0, 1).
      eps: >= 0, added outside the root.
      eps_root: >= 0, added inside the root.
      difference_weight: ``"b2"`` (the paper's) or ``"1-b2"`` (Optax 0.2.8's).

    Raises:
      ValueError: a decay outside [0, 1); a negative ``eps`` or ``eps_root``; an
        unknown ``difference_weight``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_adan(eps=0.0)
      >>> tx.update(jnp.array([2.0, -0.5]), tx.init(jnp.zeros(2)))[0]  # sign(g) at k=1
      Array([ 1.0..., -1.0...], dtype=float32)

    References:
      Xie et al. (2022), Adan: Adaptive Nesterov Momentum Algorithm for Faster
      Optimizing Deep Models, Alg. 1.
    """
    owner = "scale_by_adan"
    for name, decay in (("b1", b1), ("b2", b2), ("b3", b3)):
        _checks.in_range(owner, name, decay, 0.0, 1.0)
    _checks.non_negative(owner, "eps", eps)
    _checks.non_negative(owner, "eps_root", eps_root)
    if difference_weight not in _DIFFERENCE_WEIGHTS:
        raise ValueError(
            f"{owner}: difference_weight must be one of {_DIFFERENCE_WEIGHTS}, "
            f"got {difference_weight!r}."
        )
    weight = b2 if difference_weight == "b2" else 1 - b2

    def init_fn(params):
        # Three separate buffers, so that a donated state never holds one twice.
        m, v, g = (tree.zeros_like(params) for _ in range(3))
        return ScaleByAdanState(m, v, tree.zeros_like(params, real=True), g, tree.zero_count())

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.m, updates, owner=owner)
        count = tree.safe_increment(state.t)

        def corrections(dtype):
            return tuple(tree.bias_correction_factor(b, count, dtype) for b in (b1, b2, b3))

        def leaf(g, m, v, n, g_prev):
            first = count == 1
            return adan_leaf(
                g, m, v, n, g_prev, first, b1, b3, eps, eps_root, corrections, b2, weight
            )

        out, m, v, n, g = tree.map_unzip(leaf, 5, updates, state.m, state.v, state.n, state.g)
        return out, ScaleByAdanState(m, v, n, g, count)

    return GradientTransformation(init_fn, update_fn)


def adan(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
    *,
    difference_weight: str = "b2",
) -> GradientTransformation:
    """Adan (Xie et al. 2022, Alg. 1): Adan's scaling, decoupled decay, the step.

    .. math::
        \\theta_{k+1} = \\theta_k - \\eta \\left( \\frac{\\hat m_k + b_2 \\hat v_k}
            {\\sqrt{\\hat n_k + \\epsilon_{root}} + \\epsilon} + \\lambda \\theta_k \\right)

    Composition: ``chain(scale_by_adan(b1, b2, b3, eps, eps_root, difference_weight=...),
    add_decayed_weights(lambda, mask), scale_by_learning_rate(eta))``, as Optax.

    Departure from the paper: the decay is decoupled and added,
    ``theta - eta (u + lambda theta)``, where Alg. 1 (line 7) takes the proximal
    step ``(theta - eta u) / (1 + lambda eta)``; they differ at second order in
    ``lambda eta`` and agree at ``lambda = 0``.

    Args:
      learning_rate: ``eta``, a number or a schedule.
      b1, b2, b3, eps, eps_root, difference_weight: see :func:`scale_by_adan`
        (``eps_root`` 1e-8 here, as Optax; ``difference_weight="1-b2"`` for Optax
        0.2.8's numbers).
      weight_decay: ``lambda`` >= 0, a number or a schedule.
      mask: which leaves are decayed (see :func:`gradtx.add_decayed_weights`).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.adan(0.1, eps_root=0.0, eps=0.0)
      >>> w = jnp.zeros(2)  # the decay block reads the params
      >>> tx.update(jnp.array([2.0, -0.5]), tx.init(w), w)[0]
      Array([-0.1...,  0.1...], dtype=float32)

    References:
      Xie et al. (2022), Adan: Adaptive Nesterov Momentum Algorithm for Faster
      Optimizing Deep Models, Alg. 1.
    """
    _checks.learning_rate("adan", learning_rate)
    return chain(
        scale_by_adan(b1, b2, b3, eps, eps_root, difference_weight=difference_weight),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
