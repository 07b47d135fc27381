"""DoG, layer-wise: Ivgi, Hinder & Carmon (2023), DoG is SGD's Best Friend, Alg. 1
with the norms taken per layer (their Section 3, "LDoG").

Paper symbols: ``x_0`` the start, ``r_eps`` the initial movement, ``rbar_t`` the
largest distance from ``x_0`` so far, ``G_t`` the running sum of squared gradient
norms, ``eta_t`` the step. Returns the trajectory, one float64 array per leaf
(layer), row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64


def ldog(x, grads, r_eps_rel=1e-6, eps=1e-8, scale=1.0):
    """Alg. 1, per layer ``i``::

        rbar_t = max(r_eps, max_{s <= t} ||x_s - x_0||),  r_eps = r_eps_rel (1 + ||x_0||)
        G_t    = sum_{s <= t} ||g_s||^2
        eta_t  = rbar_t / sqrt(G_t + eps)
        x_{t+1} = x_t - eta_t g_t

    ``eps`` (not in the paper, where ``G_t > 0`` is assumed) keeps ``eta_0`` finite
    for a zero first gradient; ``scale`` multiplies the step (1: descent).
    """
    gradients = Gradients(grads)
    x = as_float64(x)
    x_0 = [x_i.copy() for x_i in x]
    rbar = [r_eps_rel * (1 + np.linalg.norm(x_i.ravel())) for x_i in x]
    big_g = [0.0 for _ in x]
    trajectory = Trajectory(x)
    for k in range(gradients.num_steps):
        g = gradients(k, x)
        for i in range(len(x)):
            rbar[i] = max(rbar[i], np.linalg.norm((x[i] - x_0[i]).ravel()))
            big_g[i] = big_g[i] + np.sum(g[i] ** 2)
            eta = rbar[i] / np.sqrt(big_g[i] + eps)
            x[i] = x[i] - scale * eta * g[i]
        trajectory.record(x)
    return trajectory.stacked()
