"""Fromage: Bernstein, Vahdat, Yue & Liu (2020), On the distance between two
neural networks and the stability of learning, Alg. 1.

Symbols: ``eta`` the learning rate, ``W_l`` the weights of layer ``l`` (a leaf),
``g_l`` its gradient. Returns the trajectory, one float64 array per leaf, row
``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def fromage(W, grads, eta, *, min_norm=0.0, num_steps=None):
    """Alg. 1, for each layer ``l``::

        W_l <- (W_l - eta ||W_l|| / ||g_l|| g_l) / sqrt(1 + eta^2)

    The norms are floored at ``min_norm`` (0 in the paper); where either is 0 the
    gradient is not rescaled (``||W_l|| / ||g_l||`` is taken as 1).
    """
    gradients, eta_k = Gradients(grads, num_steps), rate(eta)
    W = as_float64(W)
    trajectory = Trajectory(W)
    for k in range(gradients.num_steps):
        g = gradients(k, W)
        for layer in range(len(W)):
            w_norm = max(np.linalg.norm(W[layer]), min_norm)
            g_norm = max(np.linalg.norm(g[layer]), min_norm)
            ratio = 1.0 if w_norm == 0 or g_norm == 0 else w_norm / g_norm
            W[layer] = (W[layer] - eta_k(k) * ratio * g[layer]) / np.sqrt(1 + eta_k(k) ** 2)
        trajectory.record(W)
    return trajectory.stacked()
