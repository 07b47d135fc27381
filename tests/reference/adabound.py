"""AdaBound and AMSBound: Luo, Xiong, Liu & Sun (2019), Adaptive Gradient Methods
with Dynamic Bound of Learning Rate, Alg. 2 and 3, and the authors' released code
(github.com/Luolc/AdaBound, ``adabound/adabound.py``, ``AdaBound.step``).

Two plain float64 loops, because the paper and the code are different
algorithms: :func:`adabound_paper` (paper symbols ``alpha, beta_1, beta_2, m_t,
v_t, V_t, eta_l, eta_u, eta_hat_t, eta_t``) and :func:`adabound_code` (the code's
names ``lr, exp_avg, exp_avg_sq, max_exp_avg_sq, step_size, final_lr``).
Imports numpy only.

Both may record how often each bound was active (``stats``), so that a test can
show its data exercises the clipping rather than running plain Adam.
"""

from __future__ import annotations

import numpy as np


def _count(stats, lower_active, upper_active):
    if stats is not None:
        stats["lower"] = stats.get("lower", 0) + int(np.sum(lower_active))
        stats["upper"] = stats.get("upper", 0) + int(np.sum(upper_active))


def adabound_paper(
    theta, grads, alpha, beta_1, beta_2, eta_l, eta_u, *, amsbound=False, delta=0.0, stats=None
):
    """Alg. 2 (AdaBound) and, with ``amsbound``, Alg. 3 (AMSBound)::

        m_0 = 0, v_0 = 0 (, v_hat_0 = 0)
        for t = 1 to T:
            g_t = grad f_t(x_t)
            m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
            v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2
            [AMSBound: v_hat_t = max(v_hat_{t-1}, v_t), V_t = diag(v_hat_t)]
            eta_hat_t = Clip(alpha / sqrt(V_t), eta_l(t), eta_u(t))
            eta_t = eta_hat_t / sqrt(t)
            x_{t+1} = Pi_F(x_t - eta_t (.) m_t)

    with a constant ``beta_1t = beta_1`` (the paper's experiments), ``F = R^d``
    (the projection is the identity), and ``delta`` added to the root
    (``alpha / (sqrt(V_t) + delta)``; the paper has ``delta = 0``).

    Args:
      theta: the initial parameters, a list of arrays (one per leaf).
      grads: ``grads[k]`` is the list of leaves of the gradient of step ``t = k + 1``.
      alpha: the step size, a number or a function of the 0-based step ``k``.
      eta_l, eta_u: the bound functions of ``t`` (1-based).
      amsbound: Alg. 3.
      delta: >= 0, added to the root.
      stats: a dict that receives the number of elements clipped by each bound.

    Returns:
      One array per leaf, shaped ``(T + 1, *leaf.shape)``: row ``t`` after ``t`` steps.
    """
    alpha_k = alpha if callable(alpha) else (lambda k: alpha)
    x = [np.array(leaf, dtype=np.float64) for leaf in theta]
    m = [np.zeros_like(leaf) for leaf in x]
    v = [np.zeros_like(leaf) for leaf in x]
    v_hat = [np.zeros_like(leaf) for leaf in x]
    trajectory = [[leaf.copy() for leaf in x]]
    for k, g in enumerate(grads):
        t = k + 1
        for i in range(len(x)):
            g_t = np.asarray(g[i], dtype=np.float64)
            m[i] = beta_1 * m[i] + (1 - beta_1) * g_t
            v[i] = beta_2 * v[i] + (1 - beta_2) * g_t**2
            if amsbound:
                v_hat[i] = np.maximum(v_hat[i], v[i])
                V_t = v_hat[i]
            else:
                V_t = v[i]
            raw = alpha_k(k) / (np.sqrt(V_t) + delta)
            _count(stats, raw < eta_l(t), raw > eta_u(t))
            eta_hat_t = np.clip(raw, eta_l(t), eta_u(t))
            eta_t = eta_hat_t / np.sqrt(t)
            x[i] = x[i] - eta_t * m[i]
        trajectory.append([leaf.copy() for leaf in x])
    return [np.stack(column) for column in zip(*trajectory, strict=True)]


def adabound_code(
    theta,
    grads,
    lr,
    betas=(0.9, 0.999),
    final_lr=0.1,
    gamma=1e-3,
    eps=1e-8,
    weight_decay=0.0,
    amsbound=False,
    *,
    base_lr=None,
    stats=None,
):
    """``AdaBound.step`` of the authors' code, for one parameter group::

        state['step'] += 1
        if weight_decay != 0: grad = grad + weight_decay * p
        exp_avg = beta1 exp_avg + (1 - beta1) grad
        exp_avg_sq = beta2 exp_avg_sq + (1 - beta2) grad * grad
        if amsbound:
            max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)
            denom = sqrt(max_exp_avg_sq) + eps
        else:
            denom = sqrt(exp_avg_sq) + eps
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = lr * sqrt(bias_correction2) / bias_correction1
        final_lr = final_lr * lr / base_lr   # "a workaround to apply lr decay"
        lower_bound = final_lr * (1 - 1 / (gamma * step + 1))
        upper_bound = final_lr * (1 + 1 / (gamma * step))
        p = p - clamp(step_size / denom, lower_bound, upper_bound) * exp_avg

    ``base_lr`` is the learning rate the optimizer was built with (a scheduler
    then changes ``lr``); here ``lr`` may be a function of the 0-based step
    ``k`` (the rate a per-step scheduler sets), and ``base_lr`` defaults to
    ``lr(0)``. ``gamma = 0`` (which the code would divide by) gives
    ``upper_bound = inf``.

    Returns:
      One array per leaf, shaped ``(T + 1, *leaf.shape)``: row ``t`` after ``t`` steps.
    """
    lr_k = lr if callable(lr) else (lambda k: lr)
    base_lr = lr_k(0) if base_lr is None else base_lr
    beta1, beta2 = betas
    p = [np.array(leaf, dtype=np.float64) for leaf in theta]
    exp_avg = [np.zeros_like(leaf) for leaf in p]
    exp_avg_sq = [np.zeros_like(leaf) for leaf in p]
    max_exp_avg_sq = [np.zeros_like(leaf) for leaf in p]
    trajectory = [[leaf.copy() for leaf in p]]
    for k, g in enumerate(grads):
        step = k + 1
        group_lr = lr_k(k)
        for i in range(len(p)):
            grad = np.asarray(g[i], dtype=np.float64)
            if weight_decay != 0:
                grad = grad + weight_decay * p[i]
            exp_avg[i] = beta1 * exp_avg[i] + (1 - beta1) * grad
            exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (1 - beta2) * grad * grad
            if amsbound:
                max_exp_avg_sq[i] = np.maximum(max_exp_avg_sq[i], exp_avg_sq[i])
                denom = np.sqrt(max_exp_avg_sq[i]) + eps
            else:
                denom = np.sqrt(exp_avg_sq[i]) + eps
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = group_lr * np.sqrt(bias_correction2) / bias_correction1
            scaled_final_lr = final_lr * group_lr / base_lr
            lower_bound = scaled_final_lr * (1 - 1 / (gamma * step + 1))
            upper_bound = scaled_final_lr * (1 + 1 / (gamma * step)) if gamma > 0 else np.inf
            raw = step_size / denom
            _count(stats, raw < lower_bound, raw > upper_bound)
            p[i] = p[i] - np.clip(raw, lower_bound, upper_bound) * exp_avg[i]
        trajectory.append([leaf.copy() for leaf in p])
    return [np.stack(column) for column in zip(*trajectory, strict=True)]
