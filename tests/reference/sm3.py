"""SM3: Anil, Gupta, Koren & Singer (2019), Memory-Efficient Adaptive
Optimization, Alg. 2 (SM3-II).

Symbols: ``eta`` the learning rate, ``S_r`` the sets of the cover, ``mu'(r)``
their accumulators, ``nu'(i)`` the accumulator of coordinate ``i``. The cover of a
leaf of rank >= 2 is its slices along each axis (set ``(a, j)``: the coordinates
whose index on axis ``a`` is ``j``); a vector or a scalar is covered by its single
entries. Returns the trajectory, one float64 array per leaf, row ``t`` after ``t``
steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def _sets(index, ndim):
    """The sets of the cover that hold the coordinate ``index``."""
    if ndim < 2:
        return [("entry", index)]
    return [(axis, index[axis]) for axis in range(ndim)]


def sm3(w, grads, eta, *, beta_1=0.0, beta_2=1.0, epsilon=0.0, num_steps=None):
    """Alg. 2, for each leaf::

        mu'_t(r) = 0 for every r
        for each coordinate i:
            nu'_t(i) = min_{r: S_r contains i} mu'_{t-1}(r) + g_t(i)^2
            w_{t+1}(i) = w_t(i) - eta g_t(i) / sqrt(nu'_t(i))      (0/0 = 0)
            for every r with S_r containing i: mu'_t(r) = max(mu'_t(r), nu'_t(i))

    Extensions, off by default: ``beta_2 < 1`` averages,
    ``nu' = (1 - beta_2) g^2 + beta_2 min mu'``; ``epsilon`` inside the root;
    ``beta_1`` the momentum ``m = beta_1 m + (1 - beta_1) g / sqrt(nu')``, whose
    ``m`` is the step.
    """
    gradients, eta_k = Gradients(grads, num_steps), rate(eta)
    w = as_float64(w)
    mu = [{} for _ in w]  # mu'(r), 0 for a set not seen yet
    m = [np.zeros_like(x) for x in w]
    fresh = 1.0 if beta_2 == 1.0 else 1.0 - beta_2
    trajectory = Trajectory(w)
    for k in range(gradients.num_steps):
        g = gradients(k, w)
        for leaf in range(len(w)):
            new_mu = {}
            step = np.zeros_like(w[leaf])
            for i in np.ndindex(w[leaf].shape):
                sets = _sets(i, w[leaf].ndim)
                nu = fresh * g[leaf][i] ** 2 + beta_2 * min(mu[leaf].get(r, 0.0) for r in sets)
                step[i] = g[leaf][i] / np.sqrt(nu + epsilon) if nu > 0 else 0.0
                for r in sets:
                    new_mu[r] = max(new_mu.get(r, 0.0), nu)
            mu[leaf] = new_mu
            m[leaf] = beta_1 * m[leaf] + (1 - beta_1) * step
            w[leaf] = w[leaf] - eta_k(k) * m[leaf]
        trajectory.record(w)
    return trajectory.stacked()
