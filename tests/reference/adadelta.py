"""AdaDelta: Zeiler (2012), ADADELTA: an adaptive learning rate method, Alg. 1.

Paper symbols: ``rho`` the decay, ``epsilon`` the constant, ``E_g2`` for
``E[g^2]``, ``E_dx2`` for ``E[Delta x^2]``, ``x`` the parameters. Returns the
trajectory, one float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def adadelta(x, grads, rho, epsilon, *, eta=1.0, weight_decay=0.0, num_steps=None):
    """Alg. 1 (Zeiler 2012), with ``RMS[y] = sqrt(E[y^2] + epsilon)``::

        E[g^2]_t       = rho E[g^2]_{t-1} + (1 - rho) g_t^2
        Delta x_t      = -RMS[Delta x]_{t-1} / RMS[g]_t * g_t
        E[Delta x^2]_t = rho E[Delta x^2]_{t-1} + (1 - rho) Delta x_t^2
        x_{t+1}        = x_t + eta_t Delta x_t

    The paper has no rate (``eta = 1``). ``eta`` multiplies the step only, the
    accumulated ``Delta x`` stays the paper's (as PyTorch's ``lr``).
    ``weight_decay`` adds coupled L2, ``g_t <- g_t + weight_decay * x_t``
    (Goodfellow et al. eq. 7.5), before anything else.
    """
    gradients, eta_t = Gradients(grads, num_steps), rate(eta)
    x = as_float64(x)
    E_g2 = [np.zeros_like(x_i) for x_i in x]  # the paper's E[g^2]
    E_dx2 = [np.zeros_like(x_i) for x_i in x]  # the paper's E[Delta x^2]
    trajectory = Trajectory(x)
    for k in range(gradients.num_steps):
        g = gradients(k, x)
        for i in range(len(x)):
            g_t = g[i] + weight_decay * x[i]
            E_g2[i] = rho * E_g2[i] + (1 - rho) * g_t**2
            delta_x = -np.sqrt(E_dx2[i] + epsilon) / np.sqrt(E_g2[i] + epsilon) * g_t
            E_dx2[i] = rho * E_dx2[i] + (1 - rho) * delta_x**2
            x[i] = x[i] + eta_t(k) * delta_x
        trajectory.record(x)
    return trajectory.stacked()
