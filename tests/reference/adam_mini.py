"""Adam-mini: Zhang et al. (2024), Adam-mini: Use Fewer Learning Rates To Gain More, Alg. 1.

Paper symbols: ``eta`` the learning rate, ``beta_1, beta_2`` the decays,
``epsilon``, ``lambda`` the (decoupled) weight decay, ``m`` the first moment per
entry, ``v_b`` one second moment per block ``b``. The partition is given here
as labels: ``blocks[i]`` is an integer array of leaf ``i``'s shape naming each
entry's block, so the loop needs no notion of heads, rows or axes. Returns the
trajectory, one float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def adam_mini(
    theta,
    grads,
    blocks,
    eta,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-8,
    *,
    lam=0.0,
    decay=None,
    num_steps=None,
):
    """Alg. 1, per step ``t`` and leaf::

        theta <- theta - eta * lam * theta            (decoupled decay, where decay[i])
        m <- beta_1 m + (1 - beta_1) g
        for each block b:  v_b <- beta_2 v_b + (1 - beta_2) mean_{j in b} g_j^2
        theta <- theta - eta * (m / (1 - beta_1^t)) / (sqrt(v_b / (1 - beta_2^t)) + epsilon)

    with ``v_b`` broadcast to the entries of block ``b``. The decay uses the
    parameters before the step, as the authors' code (``p.mul_(1 - lr * wd)``
    before ``p.add_(-update)``); both terms use ``theta_{t-1}`` here.
    """
    gradients, eta_k = Gradients(grads, num_steps), rate(eta)
    theta = as_float64(theta)
    decay = [True] * len(theta) if decay is None else list(decay)
    labels = [np.asarray(b).reshape(-1) for b in blocks]
    m = [np.zeros_like(x) for x in theta]
    v = [np.zeros(int(lab.max()) + 1) for lab in labels]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, theta)
        for i in range(len(theta)):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
            sq = np.asarray(g[i], np.float64).reshape(-1) ** 2
            counts = np.bincount(labels[i], minlength=v[i].size)
            means = np.bincount(labels[i], weights=sq, minlength=v[i].size) / counts
            v[i] = beta_2 * v[i] + (1 - beta_2) * means
            v_entry = v[i][labels[i]].reshape(theta[i].shape)
            step = (m[i] / (1 - beta_1**t)) / (np.sqrt(v_entry / (1 - beta_2**t)) + epsilon)
            shrink = lam * theta[i] if decay[i] else 0.0
            theta[i] = theta[i] - eta_k(k) * (step + shrink)
        trajectory.record(theta)
    return trajectory.stacked()
