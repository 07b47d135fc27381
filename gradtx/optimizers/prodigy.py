"""Prodigy: Adam whose step size estimates the distance to the solution
(Mishchenko & Defazio 2024, Alg. 3, the Adam form of Alg. 1)."""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates


class ProdigyState(NamedTuple):
    """State of :func:`prodigy` (Optax's fields, in Optax's order)."""

    exp_avg: Updates  # m: EMA of d_k g_k, like the params.
    exp_avg_sq: Updates  # v: EMA of d_k^2 |g_k|^2, real.
    grad_sum: Updates  # s: beta3-discounted sum of lr_k d_k^2 g_k / d_0.
    params0: Updates  # x_0: a copy of the initial params.
    estim_lr: Array  # d_k: the distance estimate, a real scalar.
    numerator_weighted: Array  # r_k: beta3-discounted sum of lr_k d_k^2 <g_k, x_0 - x_k> / d_0.
    count: Array  # int32 scalar: k.


class ProdigyGrowthState(NamedTuple):
    """State of :func:`prodigy` with a finite ``growth_rate``: Optax's state and
    the running maximum of the estimates, which the cap needs."""

    prodigy: ProdigyState  # Optax's fields.
    estim_lr_max: Array  # d_max: max(d_0, every d_hat so far), a real scalar.


def scalar_dtype(params: Any) -> jnp.dtype:
    """The dtype of a tree-wide scalar: the widest real compute dtype of the leaves."""
    dtypes = [
        tree.real_dtype(tree.compute_dtype(jnp.result_type(x))) for x in jax.tree.leaves(params)
    ]
    return jnp.result_type(*dtypes) if dtypes else jnp.dtype(jnp.float32)


def prodigy_moments(g, x, x0, m, v, s, d, s_weight, d0, b1, b2, b3):
    """One leaf of Alg. 3's accumulation: ``(m, v, s, <g, x_0 - x>, ||s||_1)``.

    With ``dg = d g``: ``m <- b1 m + (1 - b1) dg``, ``v <- b2 v + (1 - b2)
    |dg|^2``, ``s <- b3 s + s_weight dg / d_0``, in at least float32.
    """
    c = tree.compute_dtype(jnp.result_type(g, x))
    g = g.astype(c)
    dg = d.astype(tree.real_dtype(c)) * g
    new_m = b1 * m.astype(c) + (1 - b1) * dg
    new_v = b2 * v.astype(tree.real_dtype(c)) + (1 - b2) * tree.abs_sq(dg)
    new_s = b3 * s.astype(c) + s_weight.astype(tree.real_dtype(c)) * dg / d0
    inner = jnp.sum(jnp.real(jnp.conj(g) * (x0.astype(c) - x.astype(c))))
    l1 = jnp.sum(jnp.abs(new_s))
    return new_m.astype(m.dtype), new_v.astype(v.dtype), new_s.astype(s.dtype), inner, l1


def prodigy_step(m, v, x, dlr, d_new, eps, weight_decay, out_dtype):
    """One leaf of Alg. 3's step: ``-dlr m / (sqrt(v) + d_{k+1} eps) - wd dlr x``."""
    c = tree.compute_dtype(jnp.result_type(m, x))
    r = tree.real_dtype(c)
    dlr, d_new = dlr.astype(r), d_new.astype(r)
    adam = m.astype(c) / (tree.sqrt(v.astype(r)) + d_new * eps)
    return (-weight_decay * dlr * x.astype(c) - dlr * adam).astype(out_dtype)


def prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[Any, Any] = (0.9, 0.999),
    beta3: Any | None = None,
    eps: Any = 1e-8,
    estim_lr0: Any = 1e-6,
    estim_lr_coef: Any = 1.0,
    weight_decay: Any = 0.0,
    safeguard_warmup: bool = False,
    *,
    bias_correction: bool = True,
    growth_rate: Any = math.inf,
) -> GradientTransformation:
    """Prodigy (Mishchenko & Defazio 2024, Alg. 3): AdamW with a learned step size.

    Prodigy estimates ``d``, the distance from the start ``x_0`` to a solution,
    from the correlation of the gradients with the distance travelled, and runs
    AdamW with step ``lr_k d_k``. With ``d_0`` = ``estim_lr0``, ``c`` =
    ``estim_lr_coef``, ``gamma_k`` = ``learning_rate(k)`` times the bias
    correction ``sqrt(1 - b2^{k+1}) / (1 - b1^{k+1})`` (1 with
    ``bias_correction=False``) and ``g_k`` the gradient at ``x_k``:

    .. math::
        m_{k+1} &= \\beta_1 m_k + (1-\\beta_1)\\, d_k g_k, \\quad
        v_{k+1} = \\beta_2 v_k + (1-\\beta_2)\\, d_k^2 |g_k|^2 \\\\
        r_{k+1} &= \\beta_3 r_k + \\gamma_k \\frac{d_k^2}{d_0}
            \\langle g_k, x_0 - x_k \\rangle, \\quad
        s_{k+1} = \\beta_3 s_k + \\gamma_k \\frac{d_k^2}{d_0} g_k \\\\
        d_{k+1} &= \\max\\Big(d_k,\\ c\\, \\frac{r_{k+1}}{\\|s_{k+1}\\|_1}\\Big) \\\\
        u_k &= -\\gamma_k d_k \\Big(\\frac{m_{k+1}}{\\sqrt{v_{k+1}} + d_{k+1}
            \\epsilon} + \\lambda x_k\\Big)

    ``safeguard_warmup=True`` drops ``lr_k`` and the bias correction from the
    increment of ``s`` (it adds ``d_k^2 g_k / d_0``), which keeps ``d`` from
    growing too early under a learning-rate warm-up.

    Args:
      learning_rate: a multiplier of the estimated step (a number or a schedule;
        1 with a decaying schedule is the recommended use).
      betas: ``(beta_1, beta_2)``, each in [0, 1).
      beta3: ``beta_3`` in [0, 1), the decay of ``r`` and ``s``; ``None``:
        ``sqrt(beta_2)`` (the paper's).
      eps: ``epsilon`` >= 0, multiplied by ``d_{k+1}``.
      estim_lr0: ``d_0`` > 0, the initial under-estimate of the distance.
      estim_lr_coef: ``c`` > 0, multiplies each estimate of ``d``.
      weight_decay: ``lambda`` >= 0, AdamW's decoupled decay, scaled by the step.
      safeguard_warmup: see above.
      bias_correction: gradtx's switch. ``True`` (Optax's, the default) multiplies
        the step by Adam's bias correction ``sqrt(1 - b2^t) / (1 - b1^t)``;
        ``False`` is the paper's Alg. 3 and the default of the authors' code and
        of pytorch_optimizer's ``Prodigy`` (their ``bias_correction=True`` is
        Optax's form).
      growth_rate: gradtx's switch, a number >= 1: a cap on the growth of ``d``
        per step. ``inf`` (the default) is Optax's and the paper's rule above (no
        cap). A finite value is the authors' code (``prodigyopt``) and
        pytorch_optimizer's ``growth_rate``: with ``d_max`` the largest of ``d_0``
        and every ``c r_{k+1} / ||s_{k+1}||_1`` so far, ``d_{k+1} = min(d_max,
        growth_rate d_k)``, except that the first estimate above ``d_0`` is
        taken whole. The state is then ``ProdigyGrowthState`` (in
        ``gradtx.optimizers.prodigy``): Optax's state and ``d_max``.

    Returns:
      A complete optimizer (its updates are the steps); its state is
      :class:`ProdigyState`. ``update`` needs the params.

    Raises:
      ValueError: a hyperparameter out of range; ``update`` without params.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.prodigy()
      >>> x = jnp.array([1.0, -2.0])
      >>> u, state = tx.update(jnp.array([0.5, 0.5]), tx.init(x), x)
      >>> jnp.round(u / 1e-6, 4)  # the first step is -d_0 per coordinate
      Array([-1., -1.], dtype=float32)

    Note:
      The paper adds ``d_k epsilon`` to the root; Optax, the authors' code and
      pytorch_optimizer add ``d_{k+1} epsilon``, as here. The paper's ``(1 -
      beta_3)`` factors in ``r`` and ``s`` cancel in their ratio; the code's
      ``1 / d_0`` does too, and is kept for Optax's state values. Where every
      ``s`` is zero (a zero gradient at the start) ``d`` is kept (Optax divides
      0 by 0 and returns NaN; the authors' code skips the step). Complex
      params use ``|g|^2`` and the real
      part of ``<g, x_0 - x>``. ``d`` is kept in the widest real dtype of the
      params (at least float32; Optax takes the narrowest).

    References:
      Mishchenko & Defazio (2024), Prodigy: An Expeditiously Adaptive
      Parameter-Free Learner, ICML, Alg. 3 (the Adam form of Alg. 1).
    """
    owner = "prodigy"
    _checks.learning_rate(owner, learning_rate)
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"{owner}: betas must be a pair (beta_1, beta_2), got {betas!r}.")
    b1, b2 = betas
    _checks.in_range(owner, "betas[0]", b1, 0.0, 1.0)
    _checks.in_range(owner, "betas[1]", b2, 0.0, 1.0)
    _checks.in_range(owner, "beta3", beta3, 0.0, 1.0, optional=True)
    _checks.non_negative(owner, "eps", eps)
    _checks.positive(owner, "estim_lr0", estim_lr0)
    _checks.positive(owner, "estim_lr_coef", estim_lr_coef)
    _checks.non_negative(owner, "weight_decay", weight_decay)
    b3 = b2**0.5 if beta3 is None else beta3
    concrete = _checks.scalar(owner, "growth_rate", growth_rate)
    if concrete is not None and not np.all(concrete >= 1):  # NaN fails too
        raise ValueError(
            f"{owner}: growth_rate must be a number >= 1 (inf: no cap), got {growth_rate!r}."
        )
    capped = not (isinstance(growth_rate, numbers.Real) and math.isinf(growth_rate))

    def init_prodigy(params):
        tree.check_inexact(params, owner)
        dtype = scalar_dtype(params)
        return ProdigyState(
            exp_avg=tree.zeros_like(params),
            exp_avg_sq=tree.zeros_like(params, real=True),
            grad_sum=tree.zeros_like(params),
            params0=jax.tree.map(lambda x: jnp.array(x, copy=True), params),
            estim_lr=jnp.asarray(estim_lr0, dtype),
            numerator_weighted=jnp.zeros([], dtype),
            count=tree.zero_count(),
        )

    def next_estimate(d, d_hat, d_max, estimated):
        """``(d_{k+1}, d_max)``: Optax's ``max(d, d_hat)``, or the authors' capped rule."""
        if d_max is None:
            return jnp.where(estimated, jnp.maximum(d, d_hat), d), None
        first = d == jnp.asarray(estim_lr0, d.dtype)  # the first estimate is taken whole
        d_from = jnp.where(first, jnp.maximum(d, d_hat), d)
        new_max = jnp.maximum(d_max, d_hat)
        d_new = jnp.minimum(new_max, d_from * jnp.asarray(growth_rate, d.dtype))
        return jnp.where(estimated, d_new, d), jnp.where(estimated, new_max, d_max)

    def update_prodigy(updates, state, params, d_max):
        if params is None:
            raise ValueError(f"{owner}: x_0 - x is measured from the params: pass them to update.")
        tree.check_structure(state.params0, updates, owner=owner)
        d, count = state.estim_lr, tree.safe_increment(state.count)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        gamma = jnp.asarray(lr, d.dtype)
        if bias_correction:
            t = count.astype(d.dtype)
            gamma = gamma * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        dlr = gamma * d
        s_weight = d if safeguard_warmup else dlr

        def moments(g, x, x0, m, v, s):
            return prodigy_moments(g, x, x0, m, v, s, d, s_weight, estim_lr0, b1, b2, b3)

        m, v, s, inner, l1 = tree.map_unzip(
            moments, 5, updates, params, state.params0, state.exp_avg, state.exp_avg_sq,
            state.grad_sum,
        )  # fmt: skip
        inner_sum = sum((i.astype(d.dtype) for i in jax.tree.leaves(inner)), jnp.zeros([], d.dtype))
        l1_sum = sum((n.astype(d.dtype) for n in jax.tree.leaves(l1)), jnp.zeros([], d.dtype))
        r = b3 * state.numerator_weighted + (d / estim_lr0) * dlr * inner_sum
        d_hat = estim_lr_coef * r / jnp.where(l1_sum > 0, l1_sum, 1)
        d_new, d_max = next_estimate(d, d_hat, d_max, l1_sum > 0)

        def step(g, m_i, v_i, x):
            return prodigy_step(m_i, v_i, x, dlr, d_new, eps, weight_decay, g.dtype)

        new_updates = jax.tree.map(step, updates, m, v, params)
        return new_updates, ProdigyState(m, v, s, state.params0, d_new, r, count), d_max

    if not capped:

        def update_fn(updates, state, params=None, **extra_args):
            del extra_args
            new_updates, new_state, _ = update_prodigy(updates, state, params, None)
            return new_updates, new_state

        return GradientTransformation(init_prodigy, update_fn)

    def init_capped(params):
        inner = init_prodigy(params)  # d_max: a buffer of its own (donation)
        return ProdigyGrowthState(inner, jnp.asarray(estim_lr0, inner.estim_lr.dtype))

    def update_capped(updates, state, params=None, **extra_args):
        del extra_args
        new_updates, inner, d_max = update_prodigy(
            updates, state.prodigy, params, state.estim_lr_max
        )
        return new_updates, ProdigyGrowthState(inner, d_max)

    return GradientTransformation(init_capped, update_capped)
