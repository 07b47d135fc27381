"""AdaBelief: Zhuang et al. (2020), AdaBelief Optimizer: Adapting Stepsizes by the
Belief in Observed Gradients, Alg. 2.

Paper symbols: ``alpha`` the step size, ``beta_1, beta_2`` the decays, ``m`` the
first moment, ``s`` the EMA of the squared prediction error ``(g - m)^2``,
``epsilon`` (added to ``s`` each step and to its root). Returns the trajectory,
one float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def adabelief(theta, grads, alpha, beta_1, beta_2, epsilon, *, epsilon_s=None, num_steps=None):
    """Alg. 2, with the projection onto the feasible set the identity::

        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        s_t = beta_2 s_{t-1} + (1 - beta_2) (g_t - m_t)^2 + epsilon
        m_hat_t = m_t / (1 - beta_1^t);  s_hat_t = s_t / (1 - beta_2^t)
        theta_t = theta_{t-1} - alpha m_hat_t / (sqrt(s_hat_t) + epsilon)

    ``epsilon_s`` is the ``epsilon`` added to ``s`` when it differs from the one
    at the root (Optax's ``eps_root``); ``None`` is the paper's single epsilon.
    """
    gradients, alpha_k = Gradients(grads, num_steps), rate(alpha)
    epsilon_s = epsilon if epsilon_s is None else epsilon_s
    theta = as_float64(theta)
    m = [np.zeros_like(theta_i) for theta_i in theta]
    s = [np.zeros_like(theta_i) for theta_i in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, theta)
        for i in range(len(theta)):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
            s[i] = beta_2 * s[i] + (1 - beta_2) * (g[i] - m[i]) ** 2 + epsilon_s
            m_hat = m[i] / (1 - beta_1**t)
            s_hat = s[i] / (1 - beta_2**t)
            theta[i] = theta[i] - alpha_k(k) * m_hat / (np.sqrt(s_hat) + epsilon)
        trajectory.record(theta)
    return trajectory.stacked()
