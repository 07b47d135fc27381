"""NovoGrad: Ginsburg et al. (2019), Stochastic Gradient Methods with Layer-wise
Adaptive Moments for Training of Deep Networks, Alg. 1.

Symbols: ``lambda_t`` the learning rate, ``beta_1, beta_2`` the decays, ``d`` the
weight decay, ``v^l`` the second moment of layer ``l`` (a scalar: the average of
``||g^l||^2``), ``m^l`` its first moment. A layer is a leaf. Returns the
trajectory, one float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def novograd(
    w, grads, lambda_, beta_1, beta_2, d=0.0, *, epsilon=0.0, epsilon_root=0.0, num_steps=None
):
    """Alg. 1, for each layer ``l``::

        t = 1:  v^l_1 = ||g^l_1||^2;  m^l_1 = g^l_1 / sqrt(v^l_1) + d w^l_1
        t > 1:  v^l_t = beta_2 v^l_{t-1} + (1 - beta_2) ||g^l_t||^2
                m^l_t = beta_1 m^l_{t-1} + (g^l_t / sqrt(v^l_t) + d w^l_t)
        w^l_{t+1} = w^l_t - lambda_t m^l_t

    ``epsilon`` (outside) and ``epsilon_root`` (inside) the root: 0 in the paper.
    """
    gradients, lambda_t = Gradients(grads, num_steps), rate(lambda_)
    w = as_float64(w)
    m = [np.zeros_like(w_l) for w_l in w]
    v = [0.0 for _ in w]
    trajectory = Trajectory(w)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, w)
        for layer in range(len(w)):
            norm_sq = float(np.sum(g[layer] ** 2))
            v[layer] = norm_sq if t == 1 else beta_2 * v[layer] + (1 - beta_2) * norm_sq
            normalized = g[layer] / (np.sqrt(v[layer] + epsilon_root) + epsilon) + d * w[layer]
            m[layer] = normalized if t == 1 else beta_1 * m[layer] + normalized
            w[layer] = w[layer] - lambda_t(k) * m[layer]
        trajectory.record(w)
    return trajectory.stacked()
