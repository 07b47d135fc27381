"""D-Adaptation Adam (Defazio & Mishchenko 2023, D-Adapted Adam, Alg. 4)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.optimizers.prodigy import scalar_dtype


class DAdaptAdamWState(NamedTuple):
    """State of :func:`dadapt_adamw` (Optax's fields, in Optax's order)."""

    exp_avg: Updates  # m: EMA of gamma_k d_k g_k, like the params.
    exp_avg_sq: Updates  # v: EMA of |g_k|^2, real.
    grad_sum: Updates  # s: sqrt(b2)-EMA of gamma_k d_k g_k.
    estim_lr: Array  # d_k: the distance estimate, a real scalar.
    numerator_weighted: Array  # r_k: sqrt(b2)-EMA of gamma_k d_k <g_k, s_k / (sqrt(v_k) + eps)>.
    count: Array  # int32 scalar: k.


def dadapt_moments(g, m, v, s, dlr, eps, b1, b2, sb2):
    """One leaf of Alg. 4's accumulation: ``(m, v, s, <g, s_k / (sqrt(v_k) + eps)>, ||s||_1)``.

    The inner product reads ``s`` and ``v`` before this step's update.
    """
    c = tree.compute_dtype(jnp.result_type(g, m))
    real = tree.real_dtype(c)
    g, dlr = g.astype(c), dlr.astype(real)
    weighted = s.astype(c) / (tree.sqrt(v.astype(real)) + eps)
    inner = jnp.sum(jnp.real(jnp.conj(g) * weighted))
    new_m = b1 * m.astype(c) + (1 - b1) * dlr * g
    new_v = b2 * v.astype(real) + (1 - b2) * tree.abs_sq(g)
    new_s = sb2 * s.astype(c) + (1 - sb2) * dlr * g
    l1 = jnp.sum(jnp.abs(new_s))
    return new_m.astype(m.dtype), new_v.astype(v.dtype), new_s.astype(s.dtype), inner, l1


def dadapt_step(m, v, x, dlr, eps, weight_decay, out_dtype):
    """One leaf of Alg. 4's step: ``-m / (sqrt(v) + eps) - wd dlr x``."""
    c = tree.compute_dtype(jnp.result_type(m, x))
    real = tree.real_dtype(c)
    adam = m.astype(c) / (tree.sqrt(v.astype(real)) + eps)
    return (-weight_decay * dlr.astype(real) * x.astype(c) - adam).astype(out_dtype)


def dadapt_adamw(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    estim_lr0: Any = 1e-6,
    weight_decay: Any = 0.0,
    *,
    bias_correction: bool = True,
    weight_decouple: bool = True,
    growth_rate: Any = math.inf,
) -> GradientTransformation:
    """D-Adaptation AdamW (Defazio & Mishchenko 2023, Alg. 4): Adam with a learned
    step size.

    D-Adaptation grows a lower bound ``d_k`` on the distance from the start to a
    solution and runs AdamW with step ``gamma_k d_k``. With ``gamma_k`` =
    ``learning_rate(k)`` times ``sqrt(1 - b2^{k+1}) / (1 - b1^{k+1})`` (1 with
    ``bias_correction=False``), ``A_k = \\sqrt{v_k} + \\epsilon`` and ``g_k`` the
    gradient:

    .. math::
        r_{k+1} &= \\sqrt{\\beta_2} r_k + (1-\\sqrt{\\beta_2})\\, \\gamma_k d_k
            \\langle g_k, s_k / A_k \\rangle \\\\
        m_{k+1} &= \\beta_1 m_k + (1-\\beta_1)\\, \\gamma_k d_k g_k, \\quad
        v_{k+1} = \\beta_2 v_k + (1-\\beta_2) |g_k|^2 \\\\
        s_{k+1} &= \\sqrt{\\beta_2} s_k + (1-\\sqrt{\\beta_2})\\, \\gamma_k d_k g_k \\\\
        d_{k+1} &= \\max\\Big(d_k,\\ \\frac{r_{k+1}}{(1-\\sqrt{\\beta_2})
            \\|s_{k+1}\\|_1}\\Big), \\quad
        u_k = -\\frac{m_{k+1}}{\\sqrt{v_{k+1}} + \\epsilon} - \\lambda \\gamma_k d_k x_k

    Args:
      learning_rate: a multiplier of the estimated step (a number or a schedule).
      betas: ``(beta_1, beta_2)``, each in [0, 1).
      eps: ``epsilon`` >= 0, added to the root.
      estim_lr0: ``d_0`` > 0, the initial under-estimate.
      weight_decay: ``lambda`` >= 0, decoupled (AdamW's), scaled by the step.
      bias_correction: gradtx's switch. ``True`` (Optax's, the default) scales the
        step by Adam's bias correction; ``False`` is the default of the authors'
        code and of pytorch_optimizer's ``DAdaptAdam`` (their
        ``bias_correction=True`` is Optax's form).
      weight_decouple: gradtx's switch. ``True`` (Optax's, the default):
        the decay ``- lambda gamma_k d_k x_k`` above, as AdamW. ``False``: L2
        regularisation, ``g_k <- g_k + lambda x_k`` before everything else
        (the inner product, ``m``, ``v`` and ``s``) and no decay in ``u_k``:
        the default of the authors' code (``dadaptation.DAdaptAdam``,
        ``decouple=False``) and of pytorch_optimizer's ``DAdaptAdam``
        (``weight_decouple=False``). Alg. 4 has no decay.
      growth_rate: gradtx's switch, a number >= 1: ``d_{k+1} = max(d_k,
        min(d_hat, growth_rate d_k))``, with ``d_hat`` the estimate above.
        ``inf`` (the default) is Optax's and the paper's (no cap); a finite value
        is the authors' and pytorch_optimizer's ``growth_rate``.

    Returns:
      A complete optimizer (its updates are the steps); its state is
      :class:`DAdaptAdamWState`. ``update`` needs the params.

    Raises:
      ValueError: a hyperparameter out of range; ``update`` without params.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.dadapt_adamw(bias_correction=False, eps=0.0)
      >>> x = jnp.array([1.0, -2.0])
      >>> u, state = tx.update(jnp.array([0.5, -0.5]), tx.init(x), x)
      >>> jnp.round(u / 1e-6, 4)  # (1 - b1) d_0 g / sqrt((1 - b2) g^2)
      Array([-3.16...,  3.16...], dtype=float32)

    Note:
      The inner product of ``r`` weights ``s_k`` by the previous denominator
      ``A_k``, as the authors' code, Optax and PyTorch do. The decay is
      decoupled by default as in Optax (see ``weight_decouple``). Where every
      ``s`` is zero ``d`` is kept (Optax returns NaN; PyTorch skips the step).
      Complex params use ``|g|^2`` and the real part of the inner product.

    References:
      Defazio & Mishchenko (2023), Learning-Rate-Free Learning by D-Adaptation,
      ICML, Alg. 4 (D-Adapted Adam).
    """
    owner = "dadapt_adamw"
    _checks.learning_rate(owner, learning_rate)
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"{owner}: betas must be a pair (beta_1, beta_2), got {betas!r}.")
    b1, b2 = betas
    _checks.in_range(owner, "betas[0]", b1, 0.0, 1.0)
    _checks.in_range(owner, "betas[1]", b2, 0.0, 1.0)
    _checks.non_negative(owner, "eps", eps)
    _checks.positive(owner, "estim_lr0", estim_lr0)
    _checks.non_negative(owner, "weight_decay", weight_decay)
    concrete = _checks.scalar(owner, "growth_rate", growth_rate)
    if concrete is not None and not np.all(concrete >= 1):  # NaN fails too
        raise ValueError(
            f"{owner}: growth_rate must be a number >= 1 (inf: no cap), got {growth_rate!r}."
        )
    sb2 = b2**0.5

    def init_fn(params):
        tree.check_inexact(params, owner)
        dtype = scalar_dtype(params)
        return DAdaptAdamWState(
            exp_avg=tree.zeros_like(params),
            exp_avg_sq=tree.zeros_like(params, real=True),
            grad_sum=tree.zeros_like(params),
            estim_lr=jnp.asarray(estim_lr0, dtype),
            numerator_weighted=jnp.zeros([], dtype),
            count=tree.zero_count(),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{owner}: the decay reads the params: pass them to update.")
        tree.check_structure(state.exp_avg, updates, owner=owner)
        d, count = state.estim_lr, tree.safe_increment(state.count)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        gamma = jnp.asarray(lr, d.dtype)
        if bias_correction:
            t = count.astype(d.dtype)
            gamma = gamma * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        dlr = d * gamma

        def moments(g, m, v, s, x):
            if not weight_decouple:  # L2: the decay joins the gradient
                c = tree.compute_dtype(jnp.result_type(g, x))
                g = g.astype(c) + weight_decay * x.astype(c)
            return dadapt_moments(g, m, v, s, dlr, eps, b1, b2, sb2)

        m, v, s, inner, l1 = tree.map_unzip(
            moments, 5, updates, state.exp_avg, state.exp_avg_sq, state.grad_sum, params
        )
        inner_sum = sum((i.astype(d.dtype) for i in jax.tree.leaves(inner)), jnp.zeros([], d.dtype))
        l1_sum = sum((n.astype(d.dtype) for n in jax.tree.leaves(l1)), jnp.zeros([], d.dtype))
        r = sb2 * state.numerator_weighted + (1 - sb2) * dlr * inner_sum
        d_hat = r / ((1 - sb2) * jnp.where(l1_sum > 0, l1_sum, 1))
        d_hat = jnp.minimum(d_hat, jnp.asarray(growth_rate, d.dtype) * d)
        d_new = jnp.where(l1_sum > 0, jnp.maximum(d, d_hat), d)
        decoupled = weight_decay if weight_decouple else 0.0

        def step(g, m_i, v_i, x):
            return dadapt_step(m_i, v_i, x, dlr, eps, decoupled, g.dtype)

        new_updates = jax.tree.map(step, updates, m, v, params)
        return new_updates, DAdaptAdamWState(m, v, s, d_new, r, count)

    return GradientTransformation(init_fn, update_fn)
