"""SGD with Polyak's step size: Loizou, Vaswani, Laradji & Lacoste-Julien (2021),
Stochastic Polyak Step-size for SGD, eq. 5 (SPS_max).

Symbols: ``f_i(x)`` the loss of the sampled batch (``values[k]``), ``f_i^*`` its
minimum (``f_star``), ``c`` the constant, ``gamma_b`` the bound on the step.
Returns the trajectory, one float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def sps_max(
    x, grads, values, c, gamma_b, f_star=0.0, *, epsilon=0.0, positive_part=False, num_steps=None
):
    """eq. 5::

        gamma_k = min( (f_i(x_k) - f_i^*) / (c ||grad f_i(x_k)||^2), gamma_b )
        x_{k+1} = x_k - gamma_k grad f_i(x_k)

    over the whole tree's gradient. ``epsilon`` is added to ``c ||g||^2`` (0 in the
    paper; the step is 0 where the denominator is 0); ``positive_part`` takes
    ``max(f_i - f_i^*, 0)`` (SPS+, Garrigos et al. 2023). ``c`` and ``gamma_b`` may be
    functions of the step ``k``.
    """
    gradients, c_k, gamma_b_k = Gradients(grads, num_steps), rate(c), rate(gamma_b)
    x = as_float64(x)
    trajectory = Trajectory(x)
    for k in range(gradients.num_steps):
        g = gradients(k, x)
        gap = float(values[k]) - f_star
        if positive_part:
            gap = max(gap, 0.0)
        denominator = c_k(k) * sum(float(np.sum(g_i**2)) for g_i in g) + epsilon
        gamma = 0.0 if denominator == 0 else min(gap / denominator, gamma_b_k(k))
        for i in range(len(x)):
            x[i] = x[i] - gamma * g[i]
        trajectory.record(x)
    return trajectory.stacked()
