"""MoMo and MoMo-Adam: Schaipp, Ohana, Eickenberg, Defazio & Gower (2023), MoMo:
Momentum Models for Adaptive Learning Rates, Alg. 1 and Alg. 2, with MoMo*'s online
lower bound (Sec. 5) and weight decay as ``x <- x - alpha lambda / (1 + alpha
lambda) x`` beside the step (Optax's), or, with ``proximal=True``, the authors'
code's ``x <- (x - tau d) / (1 + alpha lambda)``.

Paper symbols: ``d_k`` the momentum, ``fbar_k`` the averaged loss, ``gamma_k`` the
averaged ``<g_i, x_i>``, ``h_k = fbar_k + <d_k, x_k> - gamma_k`` the model's value
at ``x_k``, ``f_*`` the lower bound, ``tau_k`` the step. ``oracle`` is called as
``oracle(x) -> (f(x), grad f(x))`` once per step. Returns the trajectory, one
float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Trajectory, as_float64, rate


def _dot(a, b):
    return sum(float(np.sum(a_i * b_i)) for a_i, b_i in zip(a, b, strict=True))


def momo(x, oracle, num_steps, lr=1.0, beta=0.9, f_star=0.0, wd=0.0, adapt=False, proximal=False):
    """Alg. 1 (``rho = 0`` at the first step, so ``d_0 = g_0``)::

    d_k = rho d_{k-1} + (1 - rho) g_k;   fbar_k, gamma_k likewise with f_k, <g_k, x_k>
    c   = 1 + alpha_k wd
    tau = min(alpha_k, (c (fbar_k - f_* - gamma_k) + <d_k, x_k>)_+ / ||d_k||^2)
    x  <- x - alpha_k wd / c x - tau d_k       (proximal: x <- (x - tau d_k) / c)
    MoMo*: before, if c (fbar - gamma) + <d, x> < c f_*: f_* = max(that / (2c), lb);
           after,  f_* = max(fbar + <d, x> - gamma - tau ||d||^2 / 2, lb)
    """
    lr = rate(lr)
    x = as_float64(x)
    d = [np.zeros_like(x_i) for x_i in x]
    fbar = gamma = 0.0
    lb = f_star
    trajectory = Trajectory(x)
    for k in range(num_steps):
        f, g = oracle([x_i.copy() for x_i in x])
        rho = 0.0 if k == 0 else beta
        d = [rho * d_i + (1 - rho) * g_i for d_i, g_i in zip(d, g, strict=True)]
        fbar = rho * fbar + (1 - rho) * f
        gamma = rho * gamma + (1 - rho) * _dot(g, x)
        alpha = lr(k)
        c = 1 + alpha * wd
        d_x, d_sq = _dot(d, x), _dot(d, d)
        if adapt:
            cap = c * (fbar - gamma) + d_x
            if cap < c * lb:
                lb = max(cap / (2 * c), f_star)
        tau = min(alpha, max(c * (fbar - lb - gamma) + d_x, 0.0) / d_sq)
        if proximal:
            x = [(x_i - tau * d_i) / c for x_i, d_i in zip(x, d, strict=True)]
        else:
            x = [x_i - alpha * wd / c * x_i - tau * d_i for x_i, d_i in zip(x, d, strict=True)]
        if adapt:
            lb = max(fbar + d_x - gamma - tau * d_sq / 2, f_star)
        trajectory.record(x)
    return trajectory.stacked()


def momo_adam(
    x,
    oracle,
    num_steps,
    lr=1e-2,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    f_star=0.0,
    wd=0.0,
    adapt=False,
    proximal=False,
):
    """Alg. 2, with ``rho_k = 1 - b1^{k+1}`` and ``D = eps + sqrt(v / (1 - b2^{k+1}))``::

    d_k = b1 d + (1 - b1) g;  v_k = b2 v + (1 - b2) g^2;  fbar, gamma with b1
    tau = min(alpha_k / rho_k,
              (c (fbar - rho_k f_* - gamma) + <d, x>)_+ / <d, d / D>)
    x  <- x - alpha_k wd / c x - tau d / D     (proximal: x <- (x - tau d / D) / c)
    MoMo*: as in momo, with rho_k c in place of c, and the estimate divided by rho_k.
    """
    lr = rate(lr)
    x = as_float64(x)
    d = [np.zeros_like(x_i) for x_i in x]
    v = [np.zeros_like(x_i) for x_i in x]
    fbar = gamma = 0.0
    lb = f_star
    trajectory = Trajectory(x)
    for k in range(num_steps):
        f, g = oracle([x_i.copy() for x_i in x])
        d = [b1 * d_i + (1 - b1) * g_i for d_i, g_i in zip(d, g, strict=True)]
        v = [b2 * v_i + (1 - b2) * g_i**2 for v_i, g_i in zip(v, g, strict=True)]
        fbar = b1 * fbar + (1 - b1) * f
        gamma = b1 * gamma + (1 - b1) * _dot(g, x)
        rho = 1 - b1 ** (k + 1)
        big_d = [eps + np.sqrt(v_i / (1 - b2 ** (k + 1))) for v_i in v]
        alpha = lr(k)
        c = 1 + alpha * wd
        d_x = _dot(d, x)
        d_sq = _dot(d, [d_i / D_i for d_i, D_i in zip(d, big_d, strict=True)])
        if adapt:
            cap = c * (fbar - gamma) + d_x
            if cap < rho * c * lb:
                lb = max(cap / (2 * rho * c), f_star)
        tau = min(alpha / rho, max(c * (fbar - rho * lb - gamma) + d_x, 0.0) / d_sq)
        if proximal:
            x = [(x_i - tau * d_i / D_i) / c for x_i, d_i, D_i in zip(x, d, big_d, strict=True)]
        else:
            x = [
                x_i - alpha * wd / c * x_i - tau * d_i / D_i
                for x_i, d_i, D_i in zip(x, d, big_d, strict=True)
            ]
        if adapt:
            lb = max((fbar + d_x - gamma - tau * d_sq / 2) / rho, f_star)
        trajectory.record(x)
    return trajectory.stacked()
