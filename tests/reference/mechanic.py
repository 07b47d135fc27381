"""Mechanic: Cutkosky, Defazio & Mehta (2023), Mechanic: A Learning Rate Tuner, Alg. 1,
around plain SGD, with the four departures Optax makes (and gradtx follows; see
``gradtx.mechanize``): the bettors start at ``s_init``, ``m`` tracks ``|h| + eps``,
``r`` adds ``h`` clipped to the previous ``[-m, m]`` and is clipped at 0 only in the
wealth, and ``Delta_t`` is read back as ``(x_t - x_ref) / (S_t + eps)``.

Paper symbols: ``x_ref`` the start, ``Delta_t`` the sum of the base steps, ``s_t``
the bettors' scales (``S_t`` their sum), ``h_t`` the reward signal, ``m, v, r`` per
bettor, ``W_t`` the wealth. Returns the trajectory, one float64 array per leaf.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64


def _dot(a, b):
    return sum(float(np.sum(a_i * b_i)) for a_i, b_i in zip(a, b, strict=True))


def mechanic_sgd(
    x, grads, lr=0.1, wd=0.01, eps=1e-8, s_init=1e-6, n=6, authors=False, num_steps=None
):
    """Alg. 1 with ``BASE`` = SGD (``u_t = -lr g_t``)::

    g~  = g + wd S_t ||g|| / (||x|| + eps) x;     h = <Delta_t, g~>
    m   = max(beta m, |h| + eps);  v = beta^2 v + h^2;  r = beta r - s clip(h, -m_old, m_old)
    W   = s_init / n m + max(r, 0);  s = W / (sqrt(v) + eps)
    x_{t+1} = x_ref + sum(s) (Delta_t + u_t)

    ``authors=True`` follows the authors' PyTorch code (``mechanic-pytorch``)
    instead: ``s`` starts at 0 and ``m`` at ``1e-6``; ``m = max(beta m, |h|)``;
    ``r = max(0, beta r - s h)`` (the paper's line, no clip of ``h``); the decay
    in ``g~`` reads ``x + u_t`` (the params after the base step) for ``x``.
    """
    gradients = Gradients(grads, num_steps)
    x = as_float64(x)
    x_ref = [x_i.copy() for x_i in x]
    beta = np.array([1 - 0.1**i for i in range(1, n + 1)])
    m, v, r = np.zeros(n), np.zeros(n), np.zeros(n)
    s = np.full(n, s_init)
    if authors:
        m, s = np.full(n, 1e-6), np.zeros(n)
    trajectory = Trajectory(x)
    for t in range(gradients.num_steps):
        g = gradients(t, x)
        big_s = np.sum(s)
        delta = [(x_i - x0_i) / (big_s + eps) for x_i, x0_i in zip(x, x_ref, strict=True)]
        x_d = [x_i - lr * g_i for x_i, g_i in zip(x, g, strict=True)] if authors else x
        scale = wd * big_s * np.sqrt(_dot(g, g)) / (np.sqrt(_dot(x_d, x_d)) + eps)
        h = _dot(delta, [g_i + scale * x_i for g_i, x_i in zip(g, x_d, strict=True)])
        v = beta**2 * v + h**2
        if authors:
            m = np.maximum(beta * m, abs(h))
            r = np.maximum(beta * r - s * h, 0.0)
        else:
            m_old = m
            m = np.maximum(beta * m, abs(h) + eps)
            r = beta * r - s * np.clip(h, -m_old, m_old)
        wealth = s_init / n * m + np.maximum(r, 0)
        s = wealth / (np.sqrt(v) + eps)
        x = [
            x0_i + np.sum(s) * (d_i - lr * g_i)
            for x0_i, d_i, g_i in zip(x_ref, delta, g, strict=True)
        ]
        trajectory.record(x)
    return trajectory.stacked()
