"""ACProp: Zhuang, Ding, Tang, Dvornek, Tatikonda & Duncan (2021), Momentum
Centering and Asynchronous Update for Adaptive Gradient Methods, Alg. 2.

Paper symbols: ``alpha`` the step size, ``beta_1, beta_2`` the decays, ``m`` the
first moment, ``s`` the EMA of the squared prediction error ``(g - m)^2``,
``epsilon`` the constant. Returns the trajectory, one float64 array per leaf,
row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def acprop(
    theta,
    grads,
    alpha,
    beta_1,
    beta_2,
    epsilon,
    epsilon_s,
    *,
    lam=0.0,
    centre_on_new=False,
    momentum_numerator=False,
    num_steps=None,
):
    """Alg. 2, for t = 1, 2, ...: the step divides by ``s_{t-1}``, computed before ``g_t``::

        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        s_hat = s_{t-1} / (1 - beta_2^(t-1))        (1 at t = 1: no s_0 yet)
        theta_t = theta_{t-1} - alpha (g_t / (sqrt(s_hat) + epsilon) + lam theta_{t-1})
        s_t = beta_2 s_{t-1} + (1 - beta_2) (g_t - m_{t-1})^2 + epsilon_s

    The asynchronous rule is the paper's (its abstract: the denominator uses
    information up to step ``t - 1``, the numerator the gradient of step ``t``).
    The prediction error uses ``m_{t-1}``, the momentum before ``g_t`` (Optax's
    code); ``centre_on_new=True`` uses ``m_t`` (Optax's docstring, AdaBelief, the
    authors' code). ``momentum_numerator=True`` divides ``m_t / (1 - beta_1^t)``
    in place of ``g_t`` (the authors' ``momentum_update`` option).
    The bias correction of ``s_{t-1}``, the first step's ``s_hat = 1`` and
    ``lam`` (decoupled decay scaled by ``alpha``) are Optax's choices.
    """
    gradients, alpha_k = Gradients(grads, num_steps), rate(alpha)
    theta = as_float64(theta)
    m = [np.zeros_like(theta_i) for theta_i in theta]
    s = [np.zeros_like(theta_i) for theta_i in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, theta)
        for i in range(len(theta)):
            m_prev = m[i]
            m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
            s_hat = np.ones_like(s[i]) if t == 1 else s[i] / (1 - beta_2 ** (t - 1))
            numerator = m[i] / (1 - beta_1**t) if momentum_numerator else g[i]
            step = numerator / (np.sqrt(s_hat) + epsilon) + lam * theta[i]
            theta[i] = theta[i] - alpha_k(k) * step
            error = g[i] - (m[i] if centre_on_new else m_prev)
            s[i] = beta_2 * s[i] + (1 - beta_2) * error**2 + epsilon_s
        trajectory.record(theta)
    return trajectory.stacked()
