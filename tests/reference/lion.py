"""Lion: Chen et al. (2023), Symbolic Discovery of Optimization Algorithms, Alg. 2.

Paper symbols: ``eta_t`` the learning rate, ``beta_1, beta_2`` the interpolation
and momentum decays, ``lambda`` the weight decay, ``m`` the momentum, ``c`` the
interpolated update. Returns the trajectory, one float64 array per leaf, row
``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def _sign_of(c, mode, smooth_beta):
    """``sign(c)``, or the smooth variants Optax offers (``tanh`` / clipped identity)."""
    if mode == "hard":
        return np.sign(c)
    if mode == "smooth":
        return np.tanh(smooth_beta * c)
    return np.where(np.abs(c) < 1, c, np.sign(c))


def lion(
    theta,
    grads,
    eta,
    beta_1,
    beta_2,
    lam=0.0,
    *,
    mask=None,
    mode="hard",
    smooth_beta=1.0,
    num_steps=None,
):
    """Alg. 2::

        c_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        theta_t = theta_{t-1} - eta_t (sign(c_t) + lambda theta_{t-1})
        m_t = beta_2 m_{t-1} + (1 - beta_2) g_t

    ``mask[i]`` False leaves leaf ``i`` undecayed. ``mode`` other than "hard"
    replaces ``sign`` (not in the paper; Optax's options).
    """
    gradients, eta_k = Gradients(grads, num_steps), rate(eta)
    lam_k = rate(lam)
    theta = as_float64(theta)
    mask = [True] * len(theta) if mask is None else list(mask)
    m = [np.zeros_like(theta_i) for theta_i in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        for i in range(len(theta)):
            c = beta_1 * m[i] + (1 - beta_1) * g[i]
            decay = lam_k(k) * theta[i] if mask[i] else 0.0
            theta[i] = theta[i] - eta_k(k) * (_sign_of(c, mode, smooth_beta) + decay)
            m[i] = beta_2 * m[i] + (1 - beta_2) * g[i]
        trajectory.record(theta)
    return trajectory.stacked()
