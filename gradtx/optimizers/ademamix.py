"""AdEMAMix: Adam with a second, slow momentum (Pagliardini et al. 2024, Alg. 1),
and its simplified form (Morwani et al. 2024).

AdEMAMix adds to Adam's bias-corrected fast EMA ``m_1`` a slow EMA ``m_2`` of
the gradients (``beta_3`` close to 1, not bias-corrected, so it fills slowly),
weighted by ``alpha``. The simplified form keeps one momentum, an undamped sum
``m = beta_1 m + g``, and adds ``alpha g`` to it.

Symbols: ``beta_1, beta_2, beta_3`` = ``b1, b2, b3``; ``alpha`` = ``alpha``;
``epsilon`` = ``eps``; ``m_1, m_2, nu`` = ``m1, m2, nu`` (simplified: ``m, n``).
``b3`` and ``alpha`` may be schedules of the 0-based step count (Optax's), for
the paper's warmups of ``alpha`` and ``beta_3``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import Mask, chain
from gradtx.optimizers.adam import check_adam_args
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByAdemamixState(NamedTuple):
    """State of :func:`scale_by_ademamix` (Optax's fields, in Optax's order)."""

    count: Array  # int32 scalar: t, steps taken (bias corrections).
    count_m2: Array  # int32 scalar: steps taken, read by the b3 and alpha schedules.
    m1: Updates  # m_1, the fast EMA of g, in mu_dtype.
    m2: Updates  # m_2, the slow EMA of g, in mu_dtype.
    nu: Updates  # nu, the EMA of |g|^2, real, in nu_dtype.


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    """State of :func:`scale_by_simplified_ademamix` (Optax's fields)."""

    t: Array  # int32 scalar: steps taken.
    m: Updates  # m, the undamped momentum sum of g, like the params.
    n: Updates  # n, the EMA of |g|^2, real, like the params.


def _at(value: Any, count: Array) -> Any:
    """A hyperparameter's value at ``count``: the schedule's, or the constant."""
    return value(count) if callable(value) else value


def _check(owner: str, b1, b2, eps, eps_root, mu_dtype, nu_dtype, alpha, b3=None) -> None:
    check_adam_args(owner, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    _checks.finite(owner, "alpha", alpha, schedule=True)
    if b3 is not None:
        _checks.in_range(owner, "b3", b3, 0.0, 1.0, schedule=True)


def scale_by_ademamix(
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 6.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AdEMAMix's scaling (Pagliardini et al. 2024, Alg. 1).

    .. math::
        m_1 \\leftarrow \\beta_1 m_1 + (1-\\beta_1) g, \\quad
        m_2 \\leftarrow \\beta_3 m_2 + (1-\\beta_3) g, \\quad
        \\nu \\leftarrow \\beta_2 \\nu + (1-\\beta_2) |g|^2, \\quad
        \\text{out} = \\frac{m_1 / (1-\\beta_1^t) + \\alpha\\, m_2}
            {\\sqrt{\\nu / (1-\\beta_2^t) + \\epsilon_{root}} + \\epsilon}

    ``m_2`` is not bias-corrected (the paper's choice). ``b3`` and ``alpha``
    read their schedules at the number of steps taken before this one (0 on the
    first step), as Optax; the paper's schedulers and ``pytorch_optimizer``'s
    count steps from 1 (pass ``lambda k: f(k + 1)`` for theirs).

    Args:
      b1: ``beta_1`` in [0, 1), the fast EMA's decay.
      b2: ``beta_2`` in [0, 1).
      b3: ``beta_3`` in [0, 1), the slow EMA's decay, or a schedule.
      alpha: the slow EMA's weight, or a schedule (default 6.0, Optax's for
        this block; :func:`ademamix` defaults to 5.0, also as Optax).
      eps: ``epsilon`` >= 0, added outside the root.
      eps_root: >= 0, added inside the root.
      mu_dtype: dtype of ``m_1`` and ``m_2``; ``None`` keeps the params'.
      nu_dtype: dtype of ``nu``; ``None`` keeps the params' (real part). Optax
        keeps ``nu`` in ``mu_dtype``.

    Raises:
      ValueError: a decay outside [0, 1), a non-finite ``alpha``, a negative
        ``eps`` or ``eps_root``, or a non-float dtype.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_ademamix(b3=0.5, alpha=2.0)
      >>> out = tx.update(jnp.array([4.0]), tx.init(jnp.zeros(1)))[0]
      >>> round(float(out[0]), 4)  # (1 + alpha (1 - b3)) sign(g)
      2.0

    References:
      Pagliardini, Ablin & Grangier (2024), The AdEMAMix Optimizer: Better,
      Faster, Older, Alg. 1.
    """
    owner = "scale_by_ademamix"
    _check(owner, b1, b2, eps, eps_root, mu_dtype, nu_dtype, alpha, b3)

    def init_fn(params):
        return ScaleByAdemamixState(
            count=tree.zero_count(),
            count_m2=tree.zero_count(),
            m1=tree.zeros_like(params, mu_dtype),
            m2=tree.zeros_like(params, mu_dtype),
            nu=tree.zeros_like(params, nu_dtype, real=True),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.m1, updates, owner=owner)
        b3_t, alpha_t = _at(b3, state.count_m2), _at(alpha, state.count_m2)
        count = tree.safe_increment(state.count)

        def leaf(g, m1, m2, nu):
            dtype = tree.compute_dtype(g.dtype)
            new_m1 = tree.moment_leaf(g, m1, b1, 1)
            new_m2 = tree.moment_leaf(g, m2, b3_t, 1)
            new_nu = tree.moment_leaf(g, nu, b2, 2)
            m1_hat = tree.as_dtype(new_m1, dtype) / tree.bias_correction_factor(b1, count, dtype)
            real = tree.real_dtype(dtype)
            nu_hat = tree.as_dtype(new_nu, real) / tree.bias_correction_factor(b2, count, dtype)
            numerator = m1_hat + alpha_t * tree.as_dtype(new_m2, dtype)
            out = numerator / (jnp.sqrt(nu_hat + eps_root) + eps)
            return tree.as_dtype(out, g.dtype), new_m1, new_m2, new_nu

        out, m1, m2, nu = tree.map_unzip(leaf, 4, updates, state.m1, state.m2, state.nu)
        count_m2 = tree.safe_increment(state.count_m2)
        return out, ScaleByAdemamixState(count, count_m2, m1, m2, nu)

    return GradientTransformation(init_fn, update_fn)


def _with_decay(block, weight_decay, mask, learning_rate, decoupled):
    """``block`` then the decay (decoupled, the paper's) or the decay first (L2)."""
    decay = add_decayed_weights(weight_decay, mask)
    steps = (block, decay) if decoupled else (decay, block)
    return chain(*steps, scale_by_learning_rate(learning_rate))


def ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
    *,
    decoupled_weight_decay: bool = True,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AdEMAMix (Pagliardini et al. 2024, Alg. 1): Adam plus a slow momentum.

    .. math::
        \\theta \\leftarrow \\theta - \\eta \\left( \\frac{\\hat m_1 + \\alpha m_2}
            {\\sqrt{\\hat\\nu} + \\epsilon} + \\lambda \\theta \\right)

    Composition: ``chain(scale_by_ademamix(...), add_decayed_weights(lambda,
    mask), scale_by_learning_rate(eta))``.

    Args:
      learning_rate: ``eta``, a number or a schedule.
      b1, b2, b3, alpha, eps, eps_root, mu_dtype, nu_dtype: see
        :func:`scale_by_ademamix`.
      weight_decay: ``lambda`` >= 0, a number or a schedule.
      mask: which leaves are decayed (see :func:`add_decayed_weights`).
      decoupled_weight_decay: ``True`` (default): the decay is added to the
        scaled step, times the learning rate, as the paper's Alg. 1, Optax and
        ``pytorch_optimizer.AdEMAMix(weight_decouple=True)``. ``False``: the
        decay is added to the gradient before the moments (L2), the default of
        ``pytorch_optimizer.AdEMAMix`` (``weight_decouple=False``).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.ademamix(0.1, b3=0.5, alpha=2.0)
      >>> params = jnp.zeros(1)
      >>> out = tx.update(jnp.array([4.0]), tx.init(params), params)[0]
      >>> round(float(out[0]), 4)
      -0.2

    References:
      Pagliardini, Ablin & Grangier (2024), The AdEMAMix Optimizer: Better,
      Faster, Older, Alg. 1.
    """
    _checks.learning_rate("ademamix", learning_rate)
    block = scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype, nu_dtype=nu_dtype)
    return _with_decay(block, weight_decay, mask, learning_rate, decoupled_weight_decay)


def scale_by_simplified_ademamix(
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> GradientTransformation:
    """Simplified AdEMAMix's scaling (Morwani et al. 2024).

    .. math::
        m \\leftarrow \\beta_1 m + g, \\quad
        n \\leftarrow \\beta_2 n + (1-\\beta_2) |g|^2, \\quad
        \\text{out} = \\frac{m + \\alpha g}{\\sqrt{n / (1-\\beta_2^t) + \\epsilon_{root}}
            + \\epsilon}

    ``m`` is an undamped sum (no ``1 - beta_1``), so it grows to about
    ``g / (1 - beta_1)``; ``alpha`` reads its schedule at the number of steps
    taken before this one, as Optax.

    Args:
      b1: ``beta_1`` in [0, 1).
      b2: ``beta_2`` in [0, 1).
      alpha: the current gradient's weight, or a schedule (0: no extra weight).
      eps: ``epsilon`` >= 0, added outside the root.
      eps_root: >= 0, added inside the root.

    Raises:
      ValueError: a decay outside [0, 1), a non-finite ``alpha``, a negative
        ``eps`` or ``eps_root``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_simplified_ademamix(alpha=1.0)
      >>> out = tx.update(jnp.array([-3.0]), tx.init(jnp.zeros(1)))[0]
      >>> round(float(out[0]), 4)  # (g + alpha g) / |g|
      -2.0

    References:
      Morwani, Shapira, Vyas, Malach, Kakade & Janson (2024), Connections
      between Schedule-Free Optimizers, AdEMAMix, and Accelerated SGD Variants.
    """
    owner = "scale_by_simplified_ademamix"
    _check(owner, b1, b2, eps, eps_root, None, None, alpha)

    def init_fn(params):
        zeros = tree.zeros_like(params)
        return ScaleBySimplifiedAdEMAMixState(
            tree.zero_count(), zeros, tree.zeros_like(params, real=True)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.m, updates, owner=owner)
        alpha_t = _at(alpha, state.t)
        t = tree.safe_increment(state.t)

        def leaf(g, m, n):
            dtype = tree.compute_dtype(g.dtype)
            g_c = tree.as_dtype(g, dtype)
            new_m = b1 * tree.as_dtype(m, dtype) + g_c
            new_n = tree.moment_leaf(g, n, b2, 2)
            real = tree.real_dtype(dtype)
            n_hat = tree.as_dtype(new_n, real) / tree.bias_correction_factor(b2, t, dtype)
            out = (new_m + alpha_t * g_c) / (jnp.sqrt(n_hat + eps_root) + eps)
            return tree.as_dtype(out, g.dtype), tree.as_dtype(new_m, m.dtype), new_n

        out, m, n = tree.map_unzip(leaf, 3, updates, state.m, state.n)
        return out, ScaleBySimplifiedAdEMAMixState(t, m, n)

    return GradientTransformation(init_fn, update_fn)


def simplified_ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
    *,
    decoupled_weight_decay: bool = True,
) -> GradientTransformation:
    """Simplified AdEMAMix (Morwani et al. 2024).

    .. math::
        \\theta \\leftarrow \\theta - \\eta \\left( \\frac{m + \\alpha g}
            {\\sqrt{\\hat n} + \\epsilon} + \\lambda \\theta \\right)

    Composition: ``chain(scale_by_simplified_ademamix(...),
    add_decayed_weights(lambda, mask), scale_by_learning_rate(eta))``.

    Args:
      learning_rate: ``eta``, a number or a schedule.
      b1, b2, alpha, eps, eps_root: see :func:`scale_by_simplified_ademamix`.
      weight_decay: ``lambda`` >= 0, a number or a schedule.
      mask: which leaves are decayed (see :func:`add_decayed_weights`).
      decoupled_weight_decay: ``True`` (default, Optax's): decay added to the
        scaled step; ``False``: added to the gradient first (L2), see
        :func:`ademamix`.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.simplified_ademamix(0.1)
      >>> params = jnp.zeros(1)
      >>> out = tx.update(jnp.array([2.0]), tx.init(params), params)[0]
      >>> round(float(out[0]), 4)  # -eta g / |g|
      -0.1

    References:
      Morwani et al. (2024), Connections between Schedule-Free Optimizers,
      AdEMAMix, and Accelerated SGD Variants.
    """
    _checks.learning_rate("simplified_ademamix", learning_rate)
    block = scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root)
    return _with_decay(block, weight_decay, mask, learning_rate, decoupled_weight_decay)
