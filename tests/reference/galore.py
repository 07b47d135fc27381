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


def _side(shape, projection_type):
    """``"left"`` (``R = P^T G``), ``"right"`` (``R = G Q``) or ``"full"`` (``P^T G Q``).

    ``"std"``: the paper's rule (left for a wide matrix, Alg. 2's ``m <= n``;
    its transpose, right, for a tall one; right for a square one, as the authors'
    code). ``"reverse_std"``: the opposite sides (left when ``m >= n``).
    """
    tall = shape[0] >= shape[1]
    if projection_type == "std":
        return "right" if tall else "left"
    if projection_type == "reverse_std":
        return "left" if tall else "right"
    return projection_type


def galore_adam(
    theta,
    grad,
    eta,
    r,
    T,
    alpha,
    beta_1,
    beta_2,
    epsilon,
    num_steps,
    projection_type="reverse_std",
    weight_decay=0.0,
    decay_after_step=False,
):
    """Alg. 2 (``t`` from 1)::

        if t mod T = 1:  U, S, V^T = SVD(G_t);  P_t = U[:, :r]     (else P_t = P_{t-1})
        R_t = P_t^T G_t
        M_t = beta_1 M_{t-1} + (1 - beta_1) R_t
        V_t = beta_2 V_{t-1} + (1 - beta_2) R_t^2
        M_t <- M_t / (1 - beta_1^t);  V_t <- V_t / (1 - beta_2^t)
        N_t = M_t / (sqrt(V_t) + epsilon)
        W_t = W_{t-1} - eta alpha P_t N_t

    (the moments are kept across a refresh). That is the ``"left"`` side. On the
    ``"right"`` one, ``Q = V[:, :r]`` (the leading right singular vectors),
    ``R = G Q`` and the step is ``alpha N Q^T`` (the rule applied to ``G^T``); on
    ``"full"``, ``R = P^T G Q`` and the step is ``alpha P N Q^T``. Which side a
    matrix takes: ``projection_type`` (see :func:`_side`). ``r`` is capped at
    ``min(m, n)``. ``grad(t - 1, W)`` gives ``G_t``.

    Weight decay ``lambda`` (not in Alg. 2), on every leaf: Optax's
    ``W_t = W_{t-1} - eta (alpha P_t N_t + lambda W_{t-1})``, or with
    ``decay_after_step`` the authors' code's ``W_t = (W_{t-1} - eta alpha P_t N_t)
    (1 - eta lambda)``.
    """
    theta = as_float64(theta)
    sides = [_side(x.shape, projection_type) if x.ndim == 2 else None for x in theta]
    shapes = []
    for x, side in zip(theta, sides, strict=True):
        if side is None:
            shapes.append(x.shape)
            continue
        rank = min(r, *x.shape)
        m, n = x.shape
        shapes.append({"left": (rank, n), "right": (m, rank), "full": (rank, rank)}[side])
    P = [None] * len(theta)  # left factors
    Q = [None] * len(theta)  # right factors
    M = [np.zeros(s) for s in shapes]
    V = [np.zeros(s) for s in shapes]
    trajectory = Trajectory(theta)
    for t in range(1, num_steps + 1):
        G = grad(t - 1, theta)
        for i, (g, side) in enumerate(zip(G, sides, strict=True)):
            if side is not None:
                rank = min(r, *g.shape)
                if t % T == 1 % T:
                    U, _, Vt = np.linalg.svd(g, full_matrices=False)
                    P[i], Q[i] = U[:, :rank], Vt[:rank, :].T
                if side == "left":
                    R = P[i].T @ g
                elif side == "right":
                    R = g @ Q[i]
                else:
                    R = P[i].T @ g @ Q[i]
            else:
                R = g
            M[i] = beta_1 * M[i] + (1 - beta_1) * R
            V[i] = beta_2 * V[i] + (1 - beta_2) * R**2
            N = (M[i] / (1 - beta_1**t)) / (np.sqrt(V[i] / (1 - beta_2**t)) + epsilon)
            if side == "left":
                N = alpha * P[i] @ N
            elif side == "right":
                N = alpha * N @ Q[i].T
            elif side == "full":
                N = alpha * P[i] @ N @ Q[i].T
            if decay_after_step:
                theta[i] = (theta[i] - eta * N) * (1 - eta * weight_decay)
            else:
                theta[i] = theta[i] - eta * (N + weight_decay * theta[i])
        trajectory.record(theta)
    return trajectory.stacked()
