"""Sophia: Liu, Li, Hall, Liang & Ma (2023), Sophia: A Scalable Stochastic
Second-order Optimizer for Language Model Pre-training, Alg. 3.

Paper symbols: ``theta`` the params, ``eta_t`` the learning rate, ``beta_1,
beta_2`` the decays, ``k`` the Hessian interval, ``gamma`` the Hessian scale,
``epsilon`` the floor, ``lambda`` the weight decay, ``m`` the momentum, ``h``
the Hessian EMA, ``h_hat`` the estimate. The clip at 1 of Alg. 3 is ``c``
here. Returns the trajectory, one float64 array per leaf, row ``t`` after ``t``
steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Trajectory, as_float64


def sophia(
    theta,
    grad,
    hessian_diag,
    eta,
    beta_1,
    beta_2,
    epsilon,
    lam,
    gamma,
    c,
    k,
    num_steps,
    *,
    bias_correction=False,
    refresh_first=True,
):
    """Alg. 3 (``t`` from 1)::

        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        if t mod k = 1:  h_t = beta_2 h_{t-k} + (1 - beta_2) h_hat_t
        else:            h_t = h_{t-1}
        theta_t = theta_{t-1} - eta lambda theta_{t-1}
        theta_{t+1} = theta_t - eta clip(m_t / max(gamma h_t, epsilon), 1)

    ``grad(t - 1, theta)`` and ``hessian_diag(theta)`` give ``g_t`` and
    ``h_hat_t``. ``bias_correction=True`` uses ``m_t / (1 - beta_1^t)``, and
    ``refresh_first=False`` divides by ``h_{t-1}`` (Optax's conventions).
    """
    theta = as_float64(theta)
    m = [np.zeros_like(x) for x in theta]
    h = [np.zeros_like(x) for x in theta]
    trajectory = Trajectory(theta)
    for t in range(1, num_steps + 1):
        g = grad(t - 1, theta)
        h_old = h
        if t % k == 1 % k:
            h_hat = hessian_diag(theta)
            h = [beta_2 * hi + (1 - beta_2) * e for hi, e in zip(h, h_hat, strict=True)]
        denominators = h if refresh_first else h_old
        for i in range(len(theta)):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
            m_hat = m[i] / (1 - beta_1**t) if bias_correction else m[i]
            step = np.clip(m_hat / np.maximum(gamma * denominators[i], epsilon), -c, c)
            theta[i] = theta[i] - eta * lam * theta[i] - eta * step
        trajectory.record(theta)
    return trajectory.stacked()
