"""Yogi: Zaheer, Reddi, Sachan, Kale & Kumar (2018), Adaptive Methods for Nonconvex
Optimization, Alg. 2.

Paper symbols: ``eta_t`` the learning rate, ``beta_1, beta_2`` the decays,
``epsilon``, ``m, v`` the moments, ``x`` the parameters. Returns the trajectory,
one float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def yogi(x, grads, eta, beta_1, beta_2, epsilon, *, m_0=0.0, v_0=0.0, debias=False, num_steps=None):
    """Alg. 2::

        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        v_t = v_{t-1} - (1 - beta_2) sign(v_{t-1} - g_t^2) g_t^2
        x_{t+1} = x_t - eta_t m_t / (sqrt(v_t) + epsilon)

    as printed: ``m_0 = v_0 = 0``, no bias correction. Other starts ``m_0, v_0``
    may be given, and ``debias=True`` divides the moments by ``1 - beta^t``
    before the step, as Adam does: Optax's ``yogi`` is ``m_0 = v_0 = 1e-6,
    debias=True``.
    """
    gradients, eta_k = Gradients(grads, num_steps), rate(eta)
    x = as_float64(x)
    m = [np.full_like(x_i, m_0) for x_i in x]
    v = [np.full_like(x_i, v_0) for x_i in x]
    trajectory = Trajectory(x)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, x)
        for i in range(len(x)):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
            v[i] = v[i] - (1 - beta_2) * np.sign(v[i] - g[i] ** 2) * g[i] ** 2
            m_hat, v_hat = m[i], v[i]
            if debias:
                m_hat, v_hat = m[i] / (1 - beta_1**t), v[i] / (1 - beta_2**t)
            x[i] = x[i] - eta_k(k) * m_hat / (np.sqrt(v_hat) + epsilon)
        trajectory.record(x)
    return trajectory.stacked()
