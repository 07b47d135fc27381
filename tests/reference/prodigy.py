"""Prodigy: Mishchenko & Defazio (2024), Prodigy: An Expeditiously Adaptive
Parameter-Free Learner, Alg. 3 (the Adam form of Alg. 1).

Paper symbols: ``x_0`` the start, ``d_k`` the distance estimate (``d_0`` given),
``m, v`` Adam's moments of ``d_k g_k``, ``r_k`` and ``s_k`` the discounted sums
whose ratio estimates the distance, ``gamma_k`` the learning rate. Returns the
trajectory, one float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def prodigy(
    x,
    grads,
    lr=1.0,
    b1=0.9,
    b2=0.999,
    b3=None,
    eps=1e-8,
    d0=1e-6,
    d_coef=1.0,
    weight_decay=0.0,
    safeguard_warmup=False,
    bias_correction=False,
    growth_rate=np.inf,
    num_steps=None,
):
    """Alg. 3, with the whole tree as one vector::

        m  = b1 m + (1 - b1) d_k g_k;     v = b2 v + (1 - b2) d_k^2 g_k^2
        r  = b3 r + gamma_k d_k^2 <g_k, x_0 - x_k>
        s  = b3 s + gamma_k d_k^2 g_k            (safeguard: d_k^2 g_k)
        d_{k+1} = max(d_k, d_coef r / ||s||_1)
        x_{k+1} = x_k - gamma_k d_k (m / (sqrt(v) + d_{k+1} eps) + weight_decay x_k)

    ``b3 = sqrt(b2)`` by default. The paper's ``(1 - b3)`` weights of the new
    terms in ``r`` and ``s`` are dropped: they cancel in ``r / ||s||_1``.
    ``bias_correction=True`` multiplies ``gamma_k`` by
    ``sqrt(1 - b2^{k+1}) / (1 - b1^{k+1})`` (Optax's form; the paper has none).
    The paper writes ``d_k eps``; the authors' code, Optax and PyTorch add
    ``d_{k+1} eps``, as here (``eps`` is too small for the difference to matter
    in training, but not to a 1e-10 comparison).

    A finite ``growth_rate`` is the authors' cap (``prodigyopt``): ``d_max``
    starts at ``d0`` and takes every ``d_hat = d_coef r / ||s||_1``; while ``d``
    is still ``d0`` it first becomes ``max(d0, d_hat)``; then ``d_{k+1} =
    min(d_max, growth_rate d)``. With ``growth_rate = inf`` that is ``max(d,
    d_hat)``.
    """
    gradients = Gradients(grads, num_steps)
    lr = rate(lr)
    b3 = np.sqrt(b2) if b3 is None else b3
    x = as_float64(x)
    x_0 = [x_i.copy() for x_i in x]
    m = [np.zeros_like(x_i) for x_i in x]
    v = [np.zeros_like(x_i) for x_i in x]
    s = [np.zeros_like(x_i) for x_i in x]
    r, d, d_max = 0.0, d0, d0
    trajectory = Trajectory(x)
    for k in range(gradients.num_steps):
        g = gradients(k, x)
        gamma = lr(k)
        if bias_correction:
            gamma *= np.sqrt(1 - b2 ** (k + 1)) / (1 - b1 ** (k + 1))
        inner = sum(np.sum(g_i * (x0_i - x_i)) for g_i, x0_i, x_i in zip(g, x_0, x, strict=True))
        r = b3 * r + gamma * d**2 * inner
        s_weight = d**2 if safeguard_warmup else gamma * d**2
        for i in range(len(x)):
            m[i] = b1 * m[i] + (1 - b1) * d * g[i]
            v[i] = b2 * v[i] + (1 - b2) * d**2 * g[i] ** 2
            s[i] = b3 * s[i] + s_weight * g[i]
        l1 = sum(np.sum(np.abs(s_i)) for s_i in s)
        d_next = d
        if l1 > 0:
            d_hat = d_coef * r / l1
            d_from = max(d, d_hat) if d == d0 else d
            d_max = max(d_max, d_hat)
            d_next = min(d_max, growth_rate * d_from)
        for i in range(len(x)):
            step = m[i] / (np.sqrt(v[i]) + d_next * eps) + weight_decay * x[i]
            x[i] = x[i] - gamma * d * step
        d = d_next
        trajectory.record(x)
    return trajectory.stacked()
