"""Adan: Xie, Zhou, Li, Lin & Yan (2022), Adan: Adaptive Nesterov Momentum
Algorithm for Faster Optimizing Deep Models, Alg. 1.

Symbols (the paper's): ``eta`` the step size, ``beta_1, beta_2, beta_3`` the
weights of the *new* terms (``m_k = (1 - beta_1) m_{k-1} + beta_1 g_k``),
``epsilon``, ``lambda`` the weight decay, ``m, v, n`` the moments. Returns the
trajectory, one float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def adan(
    theta,
    grads,
    eta,
    beta_1,
    beta_2,
    beta_3,
    epsilon,
    lambda_=0.0,
    *,
    epsilon_root=0.0,
    decay_mask=None,
    num_steps=None,
):
    """Alg. 1, lines 3-7, with zero-started, bias-corrected moments::

        m_k = (1 - beta_1) m_{k-1} + beta_1 g_k
        v_k = (1 - beta_2) v_{k-1} + beta_2 (g_k - g_{k-1})
        n_k = (1 - beta_3) n_{k-1} + beta_3 [g_k + (1 - beta_2)(g_k - g_{k-1})]^2
        x_hat = x_k / (1 - (1 - beta)^k) for each moment
        eta_k = eta / (sqrt(n_hat_k + epsilon_root) + epsilon)
        theta_{k+1} = theta_k - eta_k (m_hat_k + (1 - beta_2) v_hat_k) - eta lambda theta_k

    with ``g_k - g_{k-1} = 0`` at ``k = 1``. Departures from Alg. 1, as the
    authors' code: the moments start at 0 and are bias-corrected (Alg. 1 starts
    them at ``m_0 = g_0, n_0 = g_0^2``); the decay is the additive decoupled step
    ``- eta lambda theta_k``, where line 7 divides by ``1 + lambda eta``.
    ``decay_mask`` (one bool per leaf) turns the decay off on a leaf.
    """
    gradients, eta_k, lambda_k = Gradients(grads, num_steps), rate(eta), rate(lambda_)
    theta = as_float64(theta)
    decay_mask = [True] * len(theta) if decay_mask is None else list(decay_mask)
    m = [np.zeros_like(x) for x in theta]
    v = [np.zeros_like(x) for x in theta]
    n = [np.zeros_like(x) for x in theta]
    g_prev = None
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, theta)
        for i in range(len(theta)):
            diff = np.zeros_like(g[i]) if g_prev is None else g[i] - g_prev[i]
            m[i] = (1 - beta_1) * m[i] + beta_1 * g[i]
            v[i] = (1 - beta_2) * v[i] + beta_2 * diff
            n[i] = (1 - beta_3) * n[i] + beta_3 * (g[i] + (1 - beta_2) * diff) ** 2
            m_hat = m[i] / (1 - (1 - beta_1) ** t)
            v_hat = v[i] / (1 - (1 - beta_2) ** t)
            n_hat = n[i] / (1 - (1 - beta_3) ** t)
            step = eta_k(k) / (np.sqrt(n_hat + epsilon_root) + epsilon)
            decay = eta_k(k) * lambda_k(k) * theta[i] if decay_mask[i] else 0.0
            theta[i] = theta[i] - step * (m_hat + (1 - beta_2) * v_hat) - decay
        g_prev = g
        trajectory.record(theta)
    return trajectory.stacked()
