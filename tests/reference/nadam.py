"""NAdam: Dozat (2016), Incorporating Nesterov Momentum into Adam, Alg. 2.

Paper symbols: ``eta`` the step size, ``mu_t`` the momentum schedule, ``nu`` the
second-moment decay, ``m, n`` the moments, ``g_hat, m_hat, n_hat, m_bar`` the
corrected and mixed quantities. Returns the trajectory, one float64 array per
leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def momentum_schedule(mu, psi):
    """``t -> mu_t``: Dozat's warming schedule ``mu (1 - 0.5 * 0.96^(t psi))``.

    ``psi = 0.004`` (that is ``0.96^(t/250)``) is the paper's, PyTorch's and
    Keras' ``momentum_decay``; ``psi=None`` is the constant ``mu_t = mu`` (Optax).
    """
    if psi is None:
        return lambda t: mu
    return lambda t: mu * (1 - 0.5 * 0.96 ** (t * psi))


def nadam(
    theta,
    grads,
    eta,
    mu,
    nu,
    epsilon,
    *,
    psi=0.004,
    epsilon_root=0.0,
    lam=0.0,
    mask=None,
    num_steps=None,
):
    """Alg. 2 (Dozat 2016)::

        g_hat <- g_t / (1 - prod_{i=1..t} mu_i)
        m_t   <- mu m_{t-1} + (1 - mu) g_t
        m_hat <- m_t / (1 - prod_{i=1..t+1} mu_i)
        n_t   <- nu n_{t-1} + (1 - nu) g_t^2
        n_hat <- n_t / (1 - nu^t)
        m_bar <- (1 - mu_t) g_hat + mu_{t+1} m_hat
        theta_t <- theta_{t-1} - eta_k m_bar / (sqrt(n_hat + epsilon_root) + epsilon)

    ``m`` decays with the constant ``mu`` (= ``beta_1``), as in PyTorch and
    Keras; ``mu_t`` is :func:`momentum_schedule`. ``epsilon_root = 0`` is the
    paper.

    ``lam > 0`` is NAdamW: Loshchilov & Hutter's (2019, Alg. 2) decoupled decay
    inside the step, ``theta_t <- theta_{t-1} - eta_k (m_bar / (...) + lam
    theta_{t-1})``; ``mask[i]`` False leaves leaf ``i`` undecayed.
    """
    gradients, eta_k = Gradients(grads, num_steps), rate(eta)
    mu_at = momentum_schedule(mu, psi)
    theta = as_float64(theta)
    mask = [True] * len(theta) if mask is None else list(mask)
    m = [np.zeros_like(theta_i) for theta_i in theta]
    n = [np.zeros_like(theta_i) for theta_i in theta]
    trajectory = Trajectory(theta)
    prod_mu = 1.0  # prod_{i=1..t} mu_i
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, theta)
        mu_t, mu_next = mu_at(t), mu_at(t + 1)
        prod_mu = prod_mu * mu_t
        for i in range(len(theta)):
            g_hat = g[i] / (1 - prod_mu)
            m[i] = mu * m[i] + (1 - mu) * g[i]
            m_hat = m[i] / (1 - prod_mu * mu_next)
            n[i] = nu * n[i] + (1 - nu) * g[i] ** 2
            n_hat = n[i] / (1 - nu**t)
            m_bar = (1 - mu_t) * g_hat + mu_next * m_hat
            decay = lam * theta[i] if mask[i] else 0.0
            step = m_bar / (np.sqrt(n_hat + epsilon_root) + epsilon) + decay
            theta[i] = theta[i] - eta_k(k) * step
        trajectory.record(theta)
    return trajectory.stacked()
