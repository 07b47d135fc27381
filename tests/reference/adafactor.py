"""Adafactor: Shazeer & Stern (2018), Adafactor: Adaptive Learning Rates with
Sublinear Memory Cost, Alg. 4 (factored) and 5 (not factored), with update
clipping (Sec. 6) and the relative step size (Sec. 8).

Symbols: ``rho_t`` the relative step size, ``beta_2t = 1 - t^(-c)`` the decay,
``eps_1`` (added to ``G^2``), ``eps_2`` (the floor of the parameter scale),
``d`` the clipping threshold, ``R, C`` the row and column sums, ``V`` the full
average. A matrix is factored over its two largest axes (the others, if any, are
a batch). Returns the trajectory, one float64 array per leaf, row ``t`` after
``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def _rms(x):
    return np.sqrt(np.mean(x**2))


def _axes(shape, min_size):
    """``(second largest, largest)`` axis, or None when not factored."""
    if len(shape) < 2:
        return None
    order = np.argsort(shape)
    return None if shape[order[-2]] < min_size else (int(order[-2]), int(order[-1]))


def adafactor(
    X,
    grads,
    rho,
    c=0.8,
    *,
    eps_1=1e-30,
    eps_2=1e-3,
    d=1.0,
    min_size=1,
    relative_step=True,
    beta_1=None,
    weight_decay=None,
    decay_mask=None,
    num_steps=None,
):
    """Alg. 4 / 5 for each leaf, at step ``t``::

        beta_2t = 1 - t^(-c)
        factored (n rows along the second largest axis, m columns along the largest):
            R_t = beta_2t R_{t-1} + (1 - beta_2t) (G_t^2 + eps_1) 1_m
            C_t = beta_2t C_{t-1} + (1 - beta_2t) 1_n^T (G_t^2 + eps_1)
            V_t = R_t C_t / (1_n^T R_t)
        otherwise:
            V_t = beta_2t V_{t-1} + (1 - beta_2t) (G_t^2 + eps_1)
        U_t = G_t / sqrt(V_t)
        U_t = U_t / max(1, RMS(U_t) / d)                 (no clipping: d = None)
        alpha_t = max(eps_2, RMS(X_{t-1})) rho_t          (relative_step=False: rho_t)
        X_t = X_{t-1} - alpha_t U_t

    Options beyond the paper's algorithms, as Optax composes them: ``beta_1``, a
    momentum ``M = beta_1 M + (1 - beta_1) alpha_t U_t`` that replaces
    ``alpha_t U_t``; ``weight_decay``, adding ``weight_decay X_{t-1}`` to the step
    (not multiplied by ``rho_t``) on the leaves of ``decay_mask``.
    """
    gradients, rho_t = Gradients(grads, num_steps), rate(rho)
    X = as_float64(X)
    decay_mask = [True] * len(X) if decay_mask is None else list(decay_mask)
    R = [None] * len(X)
    C = [None] * len(X)
    V = [np.zeros_like(x) for x in X]
    M = [np.zeros_like(x) for x in X]
    trajectory = Trajectory(X)
    for k in range(gradients.num_steps):
        t = k + 1
        beta_2t = 1 - t ** (-c)
        G = gradients(k, X)
        for i in range(len(X)):
            sq = G[i] ** 2 + eps_1
            axes = _axes(X[i].shape, min_size)
            if axes is not None:
                # The columns (m of them) run along the largest axis: R sums over it.
                n_axis, m_axis = axes
                if R[i] is None:
                    R[i] = np.zeros_like(np.sum(sq, axis=m_axis, keepdims=True))
                    C[i] = np.zeros_like(np.sum(sq, axis=n_axis, keepdims=True))
                R[i] = beta_2t * R[i] + (1 - beta_2t) * np.sum(sq, axis=m_axis, keepdims=True)
                C[i] = beta_2t * C[i] + (1 - beta_2t) * np.sum(sq, axis=n_axis, keepdims=True)
                V_hat = R[i] * C[i] / np.sum(R[i], axis=n_axis, keepdims=True)
            else:
                V[i] = beta_2t * V[i] + (1 - beta_2t) * sq
                V_hat = V[i]
            U = G[i] / np.sqrt(V_hat)
            if d is not None:
                U = U / max(1.0, _rms(U) / d)
            alpha = (max(eps_2, _rms(X[i])) if relative_step else 1.0) * rho_t(k)
            step = alpha * U
            if beta_1 is not None:
                M[i] = beta_1 * M[i] + (1 - beta_1) * step
                step = M[i]
            if weight_decay is not None and decay_mask[i]:
                step = step + weight_decay * X[i]
            X[i] = X[i] - step
        trajectory.record(X)
    return trajectory.stacked()
