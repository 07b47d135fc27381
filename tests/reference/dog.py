"""DoG: Ivgi, Hinder & Carmon (2023), DoG is SGD's Best Friend, Alg. 1, with the
norms taken per layer (their Section 3, "LDoG") or over the whole tree; and DoWG:
Khaled, Mishchenko & Jin (2023), DoWG Unleashed, Alg. 1.

Paper symbols: ``x_0`` the start, ``r_eps`` the initial movement, ``rbar_t`` the
largest distance from ``x_0`` so far, ``G_t`` the running sum of squared gradient
norms, ``eta_t`` the step. Returns the trajectory, one float64 array per leaf
(layer), row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


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


def _norm(leaves):
    return np.sqrt(sum(np.sum(v**2) for v in leaves))


def dog(x, grads, lr=1.0, r_eps=None, eta_0=None, heuristic=None, eps=1e-8, wd=0.0, num_steps=None):
    """Alg. 1 with the norms over the whole tree (global DoG)::

        g_t     = grad_t + wd x_t                       (the decay enters the gradient)
        rbar_t  = max(rbar_{t-1}, ||x_t - x_0||),   rbar_{-1} = r_eps
        G_t     = G_{t-1} + ||g_t||^2
        eta_t   = rbar_t / sqrt(G_t + eps)          (eta_0 given instead, if it is)
        x_{t+1} = x_t - lr_t eta_t g_t

    ``heuristic=a`` sets ``r_eps = a (1 + ||x_0||)``; ``eta_0`` starts the distance at 0.
    """
    gradients = Gradients(grads, num_steps)
    lr = rate(lr)
    x = as_float64(x)
    x_0 = [x_i.copy() for x_i in x]
    if heuristic is not None:
        r_eps = heuristic * (1 + _norm(x_0))
    rbar = 0.0 if eta_0 is not None else r_eps
    big_g = 0.0
    trajectory = Trajectory(x)
    for t in range(gradients.num_steps):
        g = [g_i + wd * x_i for g_i, x_i in zip(gradients(t, x), x, strict=True)]
        rbar = max(rbar, _norm([x_i - x0_i for x_i, x0_i in zip(x, x_0, strict=True)]))
        big_g = big_g + _norm(g) ** 2
        eta = eta_0 if (t == 0 and eta_0 is not None) else rbar / np.sqrt(big_g + eps)
        x = [x_i - lr(t) * eta * g_i for x_i, g_i in zip(x, g, strict=True)]
        trajectory.record(x)
    return trajectory.stacked()


def dowg(x, grads, lr=1.0, r_eps_sq=None, eps=1e-4, wd=0.0, num_steps=None):
    """Khaled, Mishchenko & Jin (2023), DoWG Unleashed, Alg. 1::

        g_t     = grad_t + wd x_t
        rbar_t  = max(rbar_{t-1}, ||x_t - x_0||),   rbar_{-1}^2 = r_eps_sq (eps if None)
        v_t     = v_{t-1} + rbar_t^2 ||g_t||^2
        eta_t   = rbar_t^2 / (sqrt(v_t) + eps)
        x_{t+1} = x_t - lr_t eta_t g_t

    ``eps`` (not in the paper) keeps ``eta_t`` finite for a zero first gradient.
    """
    gradients = Gradients(grads, num_steps)
    lr = rate(lr)
    x = as_float64(x)
    x_0 = [x_i.copy() for x_i in x]
    rbar_sq = eps if r_eps_sq is None else r_eps_sq
    v = 0.0
    trajectory = Trajectory(x)
    for t in range(gradients.num_steps):
        g = [g_i + wd * x_i for g_i, x_i in zip(gradients(t, x), x, strict=True)]
        rbar_sq = max(rbar_sq, _norm([x_i - x0_i for x_i, x0_i in zip(x, x_0, strict=True)]) ** 2)
        v = v + rbar_sq * _norm(g) ** 2
        eta = rbar_sq / (np.sqrt(v) + eps)
        x = [x_i - lr(t) * eta * g_i for x_i, g_i in zip(x, g, strict=True)]
        trajectory.record(x)
    return trajectory.stacked()
