"""Schedule-Free SGD and AdamW: Defazio et al. (2024), The Road Less Scheduled, Alg. 1.

Paper symbols: ``beta`` the interpolation weight, ``gamma_t`` the learning rate
of step ``t`` (1-based), ``lam`` the weight decay, ``x, y, z`` the three
sequences, ``c_{t+1}`` the averaging weight. The loop keeps ``x`` and ``z``
explicitly (the optimizers keep ``y`` and ``z`` and recover ``x``). Returns the
``y`` and ``x`` trajectories, one float64 array per leaf each, row ``t`` after
``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64


def warmup(peak, warmup_steps):
    """``gamma_t = peak * min(1, t / warmup_steps)`` for the 1-based step ``t``."""
    if warmup_steps is None:
        return lambda t: peak
    return lambda t: peak * min(1.0, t / warmup_steps)


def schedule_free(
    theta,
    grads,
    gamma,
    beta=0.9,
    *,
    adam=False,
    beta_2=0.999,
    epsilon=1e-8,
    lam=0.0,
    r=2.0,
    step_lag=0,
    num_steps=None,
):
    """Alg. 1, with ``gamma(t)`` the rate of the 1-based step ``t``::

        y_t     = (1 - beta) z_t + beta x_t
        d_t     = g_t + lam y_t                                    (SGD)
        v_t     = beta_2 v_{t-1} + (1 - beta_2) g_t^2              (AdamW)
        d_t     = g_t / (sqrt(v_t / (1 - beta_2^t)) + epsilon) + lam y_t
        z_{t+1} = z_t - gamma_{t - step_lag} d_t
        c_{t+1} = gammax_t^r / sum_{i<=t} gammax_i^r,  gammax_t = max_{i<=t} gamma_i
        x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}

    ``step_lag = 0`` is the paper's (and the ``schedulefree`` package's): the
    step and the weight read the same ``gamma_t``. ``step_lag = 1`` is Optax
    0.2.8's, whose base optimizer reads ``gamma_{t-1}`` (``gamma_0`` is the
    schedule at 0). The package's AdamW bias correction is the one written here
    (on ``v``), not the paper's ``sqrt(1 - beta_2^t)`` in the rate.
    """
    gradients = Gradients(grads, num_steps)
    z = as_float64(theta)
    x = [zi.copy() for zi in z]
    v = [np.zeros_like(zi) for zi in z]
    y = [zi.copy() for zi in z]
    ys, xs = Trajectory(y), Trajectory(x)
    weight_sum, gamma_max = 0.0, 0.0
    for k in range(gradients.num_steps):
        t = k + 1
        y = [(1 - beta) * zi + beta * xi for zi, xi in zip(z, x, strict=True)]
        g = gradients(k, y)
        gamma_max = max(gamma_max, gamma(t))
        weight = gamma_max**r
        weight_sum += weight
        c = weight / weight_sum if weight_sum else 0.0
        for i in range(len(z)):
            if adam:
                v[i] = beta_2 * v[i] + (1 - beta_2) * g[i] ** 2
                d = g[i] / (np.sqrt(v[i] / (1 - beta_2**t)) + epsilon)
            else:
                d = g[i]
            d = d + lam * y[i]
            z[i] = z[i] - gamma(t - step_lag) * d
            x[i] = (1 - c) * x[i] + c * z[i]
        y = [(1 - beta) * zi + beta * xi for zi, xi in zip(z, x, strict=True)]
        ys.record(y)
        xs.record(x)
    return ys.stacked(), xs.stacked()
