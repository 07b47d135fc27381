"""AdaMax: Kingma & Ba (2015), Adam: A Method for Stochastic Optimization, Alg. 2.

Paper symbols: ``alpha`` the step size, ``beta_1, beta_2`` the decays, ``m`` the
first moment, ``u`` the exponentially weighted infinity norm. Returns the
trajectory, one float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def adamax(theta, grads, alpha, beta_1, beta_2, epsilon=0.0, *, lam=0.0, mask=None, num_steps=None):
    """Alg. 2::

        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        u_t = max(beta_2 u_{t-1}, |g_t| + epsilon)
        theta_t = theta_{t-1} - (alpha / (1 - beta_1^t)) m_t / u_t

    The paper has no ``epsilon`` (``epsilon = 0``); PyTorch adds it inside the
    maximum, as here, so that an all-zero gradient history gives no 0/0.

    ``lam > 0`` is AdaMaxW: Loshchilov & Hutter's (2019, Alg. 2) decoupled decay
    inside the step, ``theta_t = theta_{t-1} - alpha (m_t / ((1 - beta_1^t) u_t)
    + lam theta_{t-1})``; ``mask[i]`` False leaves leaf ``i`` undecayed.
    """
    gradients, alpha_k = Gradients(grads, num_steps), rate(alpha)
    theta = as_float64(theta)
    mask = [True] * len(theta) if mask is None else list(mask)
    m = [np.zeros_like(theta_i) for theta_i in theta]
    u = [np.zeros_like(theta_i) for theta_i in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, theta)
        for i in range(len(theta)):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
            u[i] = np.maximum(beta_2 * u[i], np.abs(g[i]) + epsilon)
            decay = lam * theta[i] if mask[i] else 0.0
            theta[i] = theta[i] - alpha_k(k) * (m[i] / ((1 - beta_1**t) * u[i]) + decay)
        trajectory.record(theta)
    return trajectory.stacked()
