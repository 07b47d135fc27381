"""DP-SGD: Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar & Zhang (2016),
Deep Learning with Differential Privacy, Alg. 1.

Paper symbols: ``theta`` the parameters, ``eta`` (``eta_t`` at step t) the
learning rate, ``C`` the gradient norm bound, ``sigma`` the noise scale, ``L``
the lot size (the number of examples in a step), ``g_t(x_i)`` the gradient of
example ``i``. The norm of an example's gradient is over all the leaves
together. Returns the trajectory, one float64 array per leaf, row ``t`` after
``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def dpsgd(theta, per_example_grads, eta, C, sigma, noise, *, num_steps=None):
    """Alg. 1, one lot per step::

        g_t(x_i)  = grad of the loss of example i at theta_t        (per example)
        gbar(x_i) = g_t(x_i) / max(1, ||g_t(x_i)||_2 / C)          (clip)
        gtilde    = (1 / L) (sum_i gbar(x_i) + N(0, sigma^2 C^2 I))  (add noise)
        theta     = theta - eta_t gtilde                            (descend)

    Args:
      theta: the initial parameters, a list of arrays.
      per_example_grads: per-example gradients (see ``_common.Gradients``):
        each leaf of shape ``(L, *theta_leaf.shape)``.
      eta: the learning rate, a number or a function of the 0-based step.
      C: the norm bound, > 0.
      sigma: the noise scale, >= 0.
      noise: the standard normal draws: ``noise[k][i]`` of leaf ``i``'s shape
        at step ``k`` (the sample ``N(0, sigma^2 C^2 I)`` is ``sigma C`` times it).
      num_steps: steps to take (needed when ``per_example_grads`` is a function).
    """
    gradients, eta_t = Gradients(per_example_grads, num_steps), rate(eta)
    theta = as_float64(theta)
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        L = g[0].shape[0]
        norms = np.sqrt(sum(np.sum(np.abs(g_i.reshape(L, -1)) ** 2, axis=1) for g_i in g))
        scale = 1.0 / np.maximum(1.0, norms / C)
        for i in range(len(theta)):
            gbar = scale.reshape((L,) + (1,) * (g[i].ndim - 1)) * g[i]
            z = np.asarray(noise[k][i], np.float64)
            gtilde = (gbar.sum(axis=0) + sigma * C * z) / L
            theta[i] = theta[i] - eta_t(k) * gtilde
        trajectory.record(theta)
    return trajectory.stacked()
