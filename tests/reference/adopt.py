"""ADOPT: Taniguchi et al. (2024), ADOPT: Modified Adam Can Converge with Any beta_2
with the Optimal Rate, Alg. 1 and its clipped update.

Paper symbols: ``alpha`` the step size, ``beta_1, beta_2`` the decays,
``epsilon`` the floor of the root, ``m, v`` the moments, ``c_t`` the clipping
bound. Returns the trajectory, one float64 array per leaf, row ``k`` after ``k``
gradients (the first gradient only sets ``v_0``, so row 1 equals row 0).
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def adopt(
    theta,
    grads,
    alpha,
    beta_1=0.9,
    beta_2=0.9999,
    epsilon=1e-6,
    *,
    clip=lambda t: t**0.25,
    clip_offset=0,
    nesterov=False,
    num_steps=None,
):
    """Alg. 1, with ``g_0`` the first gradient::

        v_0 = g_0^2, m_0 = 0
        for t = 1, 2, ...:
            hat g_t = Clip(g_t / max(sqrt(v_{t-1}), epsilon), c_t)
            m_t     = beta_1 m_{t-1} + (1 - beta_1) hat g_t
            theta_t = theta_{t-1} - alpha m_t
            v_t     = beta_2 v_{t-1} + (1 - beta_2) g_t^2

    ``clip=None`` is Alg. 1 unclipped; ``c_t = clip(t + clip_offset)``:
    ``clip_offset=0`` the paper's ``t``, ``1`` the authors' code's call count.
    ``nesterov`` steps along ``beta_1 m_t + (1 - beta_1) hat g_t`` (Optax's
    option). ``alpha`` may be a function of the 0-based call ``k``.
    """
    gradients, alpha_k = Gradients(grads, num_steps), rate(alpha)
    theta = as_float64(theta)
    m = [np.zeros_like(x) for x in theta]
    v = None
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        if v is None:
            v = [gi**2 for gi in g]
            trajectory.record(theta)
            continue
        t = k
        for i in range(len(theta)):
            hat_g = g[i] / np.maximum(np.sqrt(v[i]), epsilon)
            if clip is not None:
                c = clip(t + clip_offset)
                hat_g = np.clip(hat_g, -c, c)
            m[i] = beta_1 * m[i] + (1 - beta_1) * hat_g
            step = beta_1 * m[i] + (1 - beta_1) * hat_g if nesterov else m[i]
            theta[i] = theta[i] - alpha_k(k) * step
            v[i] = beta_2 * v[i] + (1 - beta_2) * g[i] ** 2
        trajectory.record(theta)
    return trajectory.stacked()
