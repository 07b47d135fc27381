"""AdEMAMix: Pagliardini, Ablin & Grangier (2024), The AdEMAMix Optimizer: Better,
Faster, Older, Alg. 1; and simplified AdEMAMix (Morwani et al. 2024).

Paper symbols: ``eta`` the step size, ``beta_1, beta_2, beta_3`` the decays,
``alpha`` the slow momentum's weight, ``epsilon``, ``lam`` the weight decay,
``m_1, m_2, nu`` the moments. ``eta``, ``alpha`` and ``beta_3`` may be
functions of the 0-based step ``k``. Returns the trajectory, one float64 array
per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def ademamix(
    theta,
    grads,
    eta,
    beta_1=0.9,
    beta_2=0.999,
    beta_3=0.9999,
    alpha=5.0,
    epsilon=1e-8,
    *,
    lam=0.0,
    coupled=False,
    num_steps=None,
):
    """Alg. 1::

        m_1 = beta_1 m_1 + (1 - beta_1) g
        m_2 = beta_3 m_2 + (1 - beta_3) g
        nu  = beta_2 nu + (1 - beta_2) g^2
        theta = theta - eta ((m_1 / (1 - beta_1^t) + alpha m_2)
                             / (sqrt(nu / (1 - beta_2^t)) + epsilon) + lam theta)

    ``coupled=True`` adds ``lam theta`` to ``g`` first instead (L2, the default
    of ``pytorch_optimizer.AdEMAMix``).
    """
    gradients = Gradients(grads, num_steps)
    eta_k, alpha_k, beta_3_k = rate(eta), rate(alpha), rate(beta_3)
    theta = as_float64(theta)
    m_1 = [np.zeros_like(x) for x in theta]
    m_2 = [np.zeros_like(x) for x in theta]
    nu = [np.zeros_like(x) for x in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, theta)
        for i in range(len(theta)):
            g_i = g[i] + lam * theta[i] if coupled else g[i]
            m_1[i] = beta_1 * m_1[i] + (1 - beta_1) * g_i
            m_2[i] = beta_3_k(k) * m_2[i] + (1 - beta_3_k(k)) * g_i
            nu[i] = beta_2 * nu[i] + (1 - beta_2) * g_i**2
            m_hat = m_1[i] / (1 - beta_1**t)
            nu_hat = nu[i] / (1 - beta_2**t)
            step = (m_hat + alpha_k(k) * m_2[i]) / (np.sqrt(nu_hat) + epsilon)
            if not coupled:
                step = step + lam * theta[i]
            theta[i] = theta[i] - eta_k(k) * step
        trajectory.record(theta)
    return trajectory.stacked()


def simplified_ademamix(
    theta, grads, eta, beta_1=0.99, beta_2=0.95, alpha=0.0, epsilon=1e-8, *, lam=0.0, num_steps=None
):
    """Morwani et al. (2024)::

    m = beta_1 m + g
    n = beta_2 n + (1 - beta_2) g^2
    theta = theta - eta ((m + alpha g) / (sqrt(n / (1 - beta_2^t)) + epsilon) + lam theta)
    """
    gradients = Gradients(grads, num_steps)
    eta_k, alpha_k = rate(eta), rate(alpha)
    theta = as_float64(theta)
    m = [np.zeros_like(x) for x in theta]
    n = [np.zeros_like(x) for x in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, theta)
        for i in range(len(theta)):
            m[i] = beta_1 * m[i] + g[i]
            n[i] = beta_2 * n[i] + (1 - beta_2) * g[i] ** 2
            n_hat = n[i] / (1 - beta_2**t)
            step = (m[i] + alpha_k(k) * g[i]) / (np.sqrt(n_hat) + epsilon) + lam * theta[i]
            theta[i] = theta[i] - eta_k(k) * step
        trajectory.record(theta)
    return trajectory.stacked()
