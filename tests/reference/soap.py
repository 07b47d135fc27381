"""SOAP: Vyas et al. (2024), SOAP: Improving and Stabilizing Shampoo using Adam, Alg. 3,
with the eigenbasis refresh of the authors' code (github.com/nikhilvyas/SOAP).

Paper symbols: ``eta`` the step size, ``beta_1, beta_2`` Adam's decays,
``beta_s`` (``shampoo_beta``) the decay of the statistics ``L, R`` (one ``GG_i``
per dimension of a tensor), ``Q_i`` their eigenbases, ``f`` the refresh
frequency, ``lam`` the decoupled weight decay. Like the authors' code, ``M`` is
held rotated, ``M' = rot(M)``, and is rotated back and forth around each
refresh; the first gradient only builds ``GG_i`` and ``Q_i = eigh(GG_i)``.
Returns the trajectory, one float64 array per leaf, row ``k`` after ``k``
gradients.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def merge_small_dims(shape, max_dim):
    """The authors' ``merge_dims``: adjacent dimensions joined while the product <= max_dim."""
    new_shape, current = [], 1
    for size in shape:
        if current * size > max_dim:
            if current > 1:
                new_shape.append(current)
                current = size
            else:
                new_shape.append(size)
                current = 1
        else:
            current *= size
    if current > 1 or not new_shape:
        new_shape.append(current)
    return tuple(new_shape)


def project(x, Q, back=False):
    """Contracts the leading axis with ``Q_i`` (``Q_i^T`` back) and moves it last, per axis."""
    for q in Q:
        if q is None:
            x = np.moveaxis(x, 0, -1)
        else:
            x = np.tensordot(x, q, axes=([0], [1 if back else 0]))
    return x


def soap(
    theta,
    grads,
    eta,
    beta_1=0.95,
    beta_2=0.95,
    beta_s=None,
    epsilon=1e-8,
    lam=0.0,
    f=10,
    max_dim=10000,
    *,
    merge_dims=False,
    precondition_1d=False,
    normalize_grads=False,
    correct_bias=True,
    num_steps=None,
):
    """Alg. 3 per leaf ``W`` (``G`` reshaped to the merged shape with ``merge_dims``)::

        k = 0:   GG_i = (1 - beta_s) G G^T_(i);  Q_i = eigh(GG_i), decreasing;
                 theta -= eta lam theta  (gradtx's decay on every call)
        t = k:   G' = rot(G);  M' = beta_1 M' + (1 - beta_1) G'
                 V  = beta_2 V + (1 - beta_2) G'^2
                 N  = rot^-1(M' / (sqrt(V) + epsilon))   [/ (1e-30 + rms(N))]
                 W  = W - eta (c_t N + lam W),  c_t = sqrt(1 - beta_2^t) / (1 - beta_1^t)
                 M = rot^-1(M');  GG_i = beta_s GG_i + (1 - beta_s) G G^T_(i)
                 if t % f == 0, per i: sort Q_i by diag(Q_i^T GG_i Q_i) decreasing,
                     permute V's axis i alike, Q_i = qr(GG_i Q_i)
                 M' = rot(M)

    A dimension above ``max_dim`` has no ``GG_i`` (identity), as does a vector
    without ``precondition_1d`` and a scalar.
    """
    gradients, eta_k = Gradients(grads, num_steps), rate(eta)
    beta_s = beta_2 if beta_s is None else beta_s
    theta = as_float64(theta)
    n = len(theta)
    shapes = [x.shape for x in theta]
    work = [merge_small_dims(s, max_dim) if merge_dims and len(s) > 1 else s for s in shapes]
    M = [np.zeros(w) for w in work]
    V = [np.zeros(w) for w in work]
    GG = []
    for i in range(n):
        one_d_off = len(shapes[i]) == 1 and not precondition_1d
        GG.append([None if one_d_off or d > max_dim else np.zeros((d, d)) for d in work[i]])
    Q = [None] * n
    trajectory = Trajectory(theta)
    t = 0
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        if k > 0:
            t += 1
        for i in range(n):
            G = g[i].reshape(work[i])
            if Q[i] is None:
                accumulate(GG[i], G, beta_s)
                Q[i] = [None if m is None else eigenbasis(m) for m in GG[i]]
                theta[i] = theta[i] - eta_k(k) * lam * theta[i]
                continue
            G_rot = project(G, Q[i])
            M[i] = beta_1 * M[i] + (1 - beta_1) * G_rot
            V[i] = beta_2 * V[i] + (1 - beta_2) * G_rot**2
            N = project(M[i] / (np.sqrt(V[i]) + epsilon), Q[i], back=True)
            if normalize_grads:
                N = N / (1e-30 + np.sqrt(np.mean(N**2)))
            c = np.sqrt(1 - beta_2**t) / (1 - beta_1**t) if correct_bias else 1.0
            theta[i] = theta[i] - eta_k(k) * (c * N.reshape(shapes[i]) + lam * theta[i])
            M_plain = project(M[i], Q[i], back=True)
            accumulate(GG[i], G, beta_s)
            if t % f == 0:
                Q[i], V[i] = power_qr(GG[i], Q[i], V[i])
            M[i] = project(M_plain, Q[i])
        trajectory.record(theta)
    return trajectory.stacked()


def accumulate(GG, G, beta_s):
    """``GG_i = beta_s GG_i + (1 - beta_s) G_(i) G_(i)^T``, in place."""
    for axis, m in enumerate(GG):
        if m is not None:
            others = [a for a in range(G.ndim) if a != axis]
            m *= beta_s
            m += (1 - beta_s) * np.tensordot(G, G, axes=(others, others))


def eigenbasis(m):
    """Eigenvectors of ``m``, by decreasing eigenvalue (the authors' first refresh)."""
    return np.flip(np.linalg.eigh(m + 1e-30 * np.eye(len(m)))[1], axis=1)


def power_qr(GG, Q, V):
    """The authors' later refresh: sort, one power-iteration step, QR."""
    fresh = []
    for axis, (m, q) in enumerate(zip(GG, Q, strict=True)):
        if m is None:
            fresh.append(None)
            continue
        estimate = np.diag(q.T @ m @ q)
        order = np.argsort(-estimate, kind="stable")
        V = np.take(V, order, axis=axis)
        fresh.append(np.linalg.qr(m @ q[:, order])[0])
    return fresh, V
