"""Annealed gradient noise, then an SGD step: Neelakantan et al. (2015), Sec. 2.

``g_t <- g_t + N(0, sigma_t^2)``, ``sigma_t^2 = eta / (1 + t)^gamma``, ``t`` the
0-based step. A numpy loop cannot reproduce JAX's random numbers, so the caller
passes the standard normal draws ``z`` (one list of leaves per step); this
reference checks everything else: the variance schedule, its step count, and
the step.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def noisy_sgd(theta, grads, z, epsilon, eta, gamma, *, num_steps=None):
    """``theta <- theta - epsilon_k (g + sqrt(eta / (1 + t)^gamma) z_t)``."""
    gradients, epsilon_k = Gradients(grads, num_steps), rate(epsilon)
    theta = as_float64(theta)
    trajectory = Trajectory(theta)
    for t in range(gradients.num_steps):
        g = gradients(t, theta)
        sigma = np.sqrt(eta / (1.0 + t) ** gamma)
        for i in range(len(theta)):
            theta[i] = theta[i] - epsilon_k(t) * (g[i] + sigma * np.asarray(z[t][i], np.float64))
        trajectory.record(theta)
    return trajectory.stacked()
