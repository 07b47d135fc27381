"""GaLore: Zhao, Zhang, Chen, Wang, Anandkumar & Tian (2024), GaLore:
Memory-Efficient LLM Training by Gradient Low-Rank Projection, Alg. 2.

Paper symbols: ``W`` a weight matrix (``m x n``), ``G`` its gradient, ``r`` the
rank, ``T`` the subspace change frequency, ``alpha`` the scale, ``eta`` the
learning rate, ``P`` the projector, ``R`` the projected gradient, ``M, V``
Adam's moments on ``R``, ``N`` the normalized update. Vectors and scalars take
plain Adam steps. Returns the trajectory, one float64 array per leaf, row ``t``
after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Trajectory, as_float64


def galore_adam(theta, grad, eta, r, T, alpha, beta_1, beta_2, epsilon, num_steps):
    """Alg. 2 (``t`` from 1)::

        if t mod T = 1:  U, S, V^T = SVD(G_t);  P_t = U[:, :r]     (else P_t = P_{t-1})
        R_t = P_t^T G_t
        M_t = beta_1 M_{t-1} + (1 - beta_1) R_t
        V_t = beta_2 V_{t-1} + (1 - beta_2) R_t^2
        M_t <- M_t / (1 - beta_1^t);  V_t <- V_t / (1 - beta_2^t)
        N_t = M_t / (sqrt(V_t) + epsilon)
        W_t = W_{t-1} - eta alpha P_t N_t

    for ``m >= n``. A matrix with ``m < n`` is projected on the right, on the
    leading right singular vectors ``Q = V[:, :r]``: ``R = G Q`` and the step is
    ``alpha N Q^T`` (the same rule applied to ``G^T``). ``r`` is capped at
    ``min(m, n)``. ``grad(t - 1, W)`` gives ``G_t``.
    """
    theta = as_float64(theta)
    projectors = [None] * len(theta)
    shapes = []
    for x in theta:
        if x.ndim == 2:
            rank = min(r, *x.shape)
            shapes.append((rank, x.shape[1]) if x.shape[0] >= x.shape[1] else (x.shape[0], rank))
        else:
            shapes.append(x.shape)
    M = [np.zeros(s) for s in shapes]
    V = [np.zeros(s) for s in shapes]
    trajectory = Trajectory(theta)
    for t in range(1, num_steps + 1):
        G = grad(t - 1, theta)
        for i, g in enumerate(G):
            left = g.ndim == 2 and g.shape[0] >= g.shape[1]
            if g.ndim == 2:
                rank = min(r, *g.shape)
                if t % T == 1 % T:
                    U, _, Vt = np.linalg.svd(g, full_matrices=False)
                    projectors[i] = U[:, :rank] if left else Vt[:rank, :].T
                P = projectors[i]
                R = P.T @ g if left else g @ P
            else:
                R = g
            M[i] = beta_1 * M[i] + (1 - beta_1) * R
            V[i] = beta_2 * V[i] + (1 - beta_2) * R**2
            N = (M[i] / (1 - beta_1**t)) / (np.sqrt(V[i] / (1 - beta_2**t)) + epsilon)
            if g.ndim == 2:
                N = alpha * (P @ N if left else N @ P.T)
            theta[i] = theta[i] - eta * N
        trajectory.record(theta)
    return trajectory.stacked()
