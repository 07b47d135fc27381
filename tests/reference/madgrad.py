"""MADGRAD: Defazio & Jelassi (2021), A Momentumized, Adaptive, Dual Averaged
Gradient Method for Stochastic Optimization, Alg. 1.

Paper symbols: ``gamma_k`` the step size, ``c_{k+1}`` the momentum weight of the
dual-averaging iterate ``z`` (the implementations' ``momentum`` is ``1 - c``),
``lambda_k`` the weight of gradient ``k``, ``s`` and ``nu`` the weighted sums of
gradients and squared gradients, ``x_0`` the starting point. Returns the
trajectory, one float64 array per leaf, row ``k`` after ``k`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def madgrad(
    x, grads, gamma, c, epsilon, *, gamma_shift=0.0, decay=0.0, decoupled_decay=0.0, num_steps=None
):
    """Alg. 1, for k = 0, 1, ...::

        lambda_k = gamma_k sqrt(k + 1)
        s_{k+1} = s_k + lambda_k g_k
        nu_{k+1} = nu_k + lambda_k g_k (.) g_k
        z_{k+1} = x_0 - s_{k+1} / (nu_{k+1}^{1/3} + epsilon)
        x_{k+1} = (1 - c_{k+1}) x_k + c_{k+1} z_{k+1}

    ``gamma_shift = epsilon`` is the implementations' ``lambda_k = (gamma_k +
    epsilon) sqrt(k + 1)`` (the paper has ``gamma_shift = 0``). ``decay`` adds
    ``decay x_k`` to ``g_k`` (L2, as the authors' code); ``decoupled_decay``
    then subtracts ``(gamma_k + gamma_shift) decoupled_decay x_k`` from
    ``x_{k+1}`` (pytorch_optimizer's ``weight_decouple``).
    """
    gradients, gamma_k = Gradients(grads, num_steps), rate(gamma)
    x = as_float64(x)
    x_0 = [x_i.copy() for x_i in x]
    s = [np.zeros_like(x_i) for x_i in x]
    nu = [np.zeros_like(x_i) for x_i in x]
    trajectory = Trajectory(x)
    for k in range(gradients.num_steps):
        g = gradients(k, x)
        step_size = gamma_k(k) + gamma_shift
        lam = step_size * np.sqrt(k + 1)
        for i in range(len(x)):
            g_i = g[i] + decay * x[i]
            s[i] = s[i] + lam * g_i
            nu[i] = nu[i] + lam * g_i * g_i
            z = x_0[i] - s[i] / (np.cbrt(nu[i]) + epsilon)
            x_next = (1 - c) * x[i] + c * z
            x[i] = x_next - step_size * decoupled_decay * x[i]
        trajectory.record(x)
    return trajectory.stacked()
