"""Shampoo: Gupta, Koren & Singer (2018), Shampoo: Preconditioned Stochastic Tensor
Optimization, Alg. 1, in the blocked and grafted form of Anil et al. (2020) and
Shi et al. (2023).

Symbols: ``eta`` the learning rate, ``G`` a block of the gradient, ``L``, ``R`` its
row and column statistics, ``epsilon`` added to them before the inverse ``p``-th
root, ``D`` the grafted method's step. A leaf of rank >= 2 is viewed as a matrix
(last axis the columns); its rows and columns are cut into consecutive slices of
``block_size`` (the last one shorter). Roots by eigendecomposition. Returns the
trajectory, one float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def inverse_root(a, p):
    """``a^{-1/p}`` of a symmetric positive definite matrix, from its eigenvalues."""
    w, v = np.linalg.eigh(a)
    return (v * w ** (-1.0 / p)) @ v.T


def _slices(size, block_size):
    return [slice(s, min(s + block_size, size)) for s in range(0, size, block_size)]


def shampoo(
    w,
    grads,
    eta,
    *,
    block_size,
    beta_1=0.0,
    beta_2=1.0,
    epsilon=1e-6,
    weight_decay=0.0,
    grafting=None,
    graft_beta_2=0.999,
    graft_epsilon=1e-8,
    p=4,
    frequency=1,
    start=1,
    num_steps=None,
):
    """Alg. 1 per block, with grafting, momentum and decoupled decay::

    for t = 1, 2, ...:
        D = grafted step of g   (AdaGrad: v += g^2, D = g / (sqrt v + eps_g);
                                 Adam: v = b v + (1-b) g^2, D = g / (sqrt(v/(1-b^t)) + eps_g);
                                 SGD or none: D = g)
        for each block G of a matrix leaf (and its slice D_b of D):
            L = beta_2 L + (1 - beta_2) G G^T      (L + G G^T if beta_2 = 1)
            R = beta_2 R + (1 - beta_2) G^T G
            if t >= start and (t - start) % frequency == 0:
                L_root, R_root = (L + eps I)^(-1/p), (R + eps I)^(-1/p)
            P = L_root G R_root
            u_b = P ||D_b|| / ||P||    (P itself without grafting)
            (u = D before step start)
        u = D for a vector or a scalar
        m = beta_1 m + u
        w = w - eta (m + weight_decay w)
    """
    gradients, eta_k = Gradients(grads, num_steps), rate(eta)
    w = as_float64(w)
    m = [np.zeros_like(x) for x in w]
    v = [np.zeros_like(x) for x in w]
    stats = {}  # (leaf, row block, column block) -> [L, R, L_root, R_root]
    fresh = 1.0 if beta_2 == 1.0 else 1.0 - beta_2
    trajectory = Trajectory(w)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, w)
        for leaf in range(len(w)):
            gl = g[leaf]
            if grafting == "adagrad":
                v[leaf] = v[leaf] + gl**2
                d = gl / (np.sqrt(v[leaf]) + graft_epsilon)
            elif grafting == "adam":
                v[leaf] = graft_beta_2 * v[leaf] + (1 - graft_beta_2) * gl**2
                d = gl / (np.sqrt(v[leaf] / (1 - graft_beta_2**t)) + graft_epsilon)
            else:
                d = gl
            u = d
            if gl.ndim >= 2:
                shape = (int(np.prod(gl.shape[:-1])), gl.shape[-1])
                G_all, D_all = gl.reshape(shape), d.reshape(shape)
                U = np.zeros(shape)
                for i, rows in enumerate(_slices(shape[0], block_size)):
                    for j, cols in enumerate(_slices(shape[1], block_size)):
                        G, D = G_all[rows, cols], D_all[rows, cols]
                        key = (leaf, i, j)
                        if key not in stats:
                            nr, nc = G.shape
                            stats[key] = [np.zeros((nr, nr)), np.zeros((nc, nc)), None, None]
                        s = stats[key]
                        s[0] = beta_2 * s[0] + fresh * G @ G.T
                        s[1] = beta_2 * s[1] + fresh * G.T @ G
                        if t >= start and (t - start) % frequency == 0:
                            s[2] = inverse_root(s[0] + epsilon * np.eye(len(s[0])), p)
                            s[3] = inverse_root(s[1] + epsilon * np.eye(len(s[1])), p)
                        if t < start:
                            U[rows, cols] = D
                            continue
                        P = s[2] @ G @ s[3]
                        if grafting is None:
                            U[rows, cols] = P
                        else:
                            norm_p = np.linalg.norm(P)
                            U[rows, cols] = P * np.linalg.norm(D) / norm_p if norm_p > 0 else 0.0
                u = U.reshape(gl.shape)
            m[leaf] = beta_1 * m[leaf] + u
            w[leaf] = w[leaf] - eta_k(k) * (m[leaf] + weight_decay * w[leaf])
        trajectory.record(w)
    return trajectory.stacked()
