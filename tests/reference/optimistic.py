"""Optimistic gradient descent and Optimistic Adam.

Daskalakis, Ilyas, Syrgkanis & Zeng (2018), Training GANs with Optimism: the
optimistic step ``w_{t+1} = w_t - 2 eta g_t + eta g_{t-1}`` and Optimistic Adam
(Alg. 1); Mokhtari, Ozdaglar & Pattathil (2020): OGDA, written with two weights
``alpha, beta``. Returns the trajectory, one float64 array per leaf, row ``t``
after ``t`` steps.

Neither paper says what ``g_0`` is: ``first="repeat"`` takes ``g_0 = g_1`` (the
start ``z_0 = z_1`` of the analyses, Optax's), ``first="zero"`` takes 0.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def ogd(w, grads, eta, alpha=1.0, beta=1.0, *, first="repeat", num_steps=None):
    """``w_{t+1} = w_t - eta_t ((alpha_t + beta_t) g_t - beta_t g_{t-1})``.

    ``alpha = beta = 1``: Daskalakis et al.'s ``w_t - 2 eta g_t + eta g_{t-1}``.
    """
    gradients, eta_k = Gradients(grads, num_steps), rate(eta)
    alpha_k, beta_k = rate(alpha), rate(beta)
    w = as_float64(w)
    previous = None
    trajectory = Trajectory(w)
    for k in range(gradients.num_steps):
        g = gradients(k, w)
        if previous is None:
            previous = [g_i.copy() if first == "repeat" else np.zeros_like(g_i) for g_i in g]
        a, b = alpha_k(k), beta_k(k)
        for i in range(len(w)):
            w[i] = w[i] - eta_k(k) * ((a + b) * g[i] - b * previous[i])
        previous = g
        trajectory.record(w)
    return trajectory.stacked()


def optimistic_adam(
    w, grads, eta, beta_1, beta_2, epsilon, *, optimism=None, first="repeat", num_steps=None
):
    """Alg. 1, with ``r_t = m_hat_t / (sqrt(v_hat_t) + epsilon)``::

        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2
        m_hat_t = m_t / (1 - beta_1^t);  v_hat_t = v_t / (1 - beta_2^t)
        w_t = w_{t-1} - 2 eta r_t + eta r_{t-1}

    written ``w_t = w_{t-1} - (eta r_t + o (r_t - r_{t-1}))`` with the optimism
    ``o`` (``None``: ``o = eta``, Alg. 1). ``r_0`` per ``first`` (module docstring).
    """
    gradients, eta_k = Gradients(grads, num_steps), rate(eta)
    o_k = eta_k if optimism is None else rate(optimism)
    w = as_float64(w)
    m = [np.zeros_like(w_i) for w_i in w]
    v = [np.zeros_like(w_i) for w_i in w]
    r_previous = None
    trajectory = Trajectory(w)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, w)
        r = []
        for i in range(len(w)):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
            v[i] = beta_2 * v[i] + (1 - beta_2) * g[i] ** 2
            m_hat = m[i] / (1 - beta_1**t)
            v_hat = v[i] / (1 - beta_2**t)
            r.append(m_hat / (np.sqrt(v_hat) + epsilon))
        if r_previous is None:
            r_previous = [r_i.copy() if first == "repeat" else np.zeros_like(r_i) for r_i in r]
        for i in range(len(w)):
            w[i] = w[i] - (eta_k(k) * r[i] + o_k(k) * (r[i] - r_previous[i]))
        r_previous = r
        trajectory.record(w)
    return trajectory.stacked()
