"""signSGD and Signum: Bernstein, Wang, Azizzadenesheli & Anandkumar (2018), Alg. 1, 3.

Paper symbols: ``delta`` the learning rate, ``beta`` the momentum constant,
``m`` the momentum, ``g_tilde`` the stochastic gradient. Returns the
trajectory, one float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def sign_sgd(x, grads, delta, *, num_steps=None):
    """Alg. 1::

    x_{k+1} = x_k - delta_k sign(g_tilde_k)
    """
    gradients, delta_k = Gradients(grads, num_steps), rate(delta)
    x = as_float64(x)
    trajectory = Trajectory(x)
    for k in range(gradients.num_steps):
        g_tilde = gradients(k, x)
        for i in range(len(x)):
            x[i] = x[i] - delta_k(k) * np.sign(g_tilde[i])
        trajectory.record(x)
    return trajectory.stacked()


def signum(x, grads, delta, beta, *, num_steps=None):
    """Alg. 3::

        m_{k+1} = beta m_k + (1 - beta) g_tilde_k
        x_{k+1} = x_k - delta_k sign(m_{k+1})

    with ``m_0 = 0``.
    """
    gradients, delta_k = Gradients(grads, num_steps), rate(delta)
    x = as_float64(x)
    m = [np.zeros_like(x_i) for x_i in x]
    trajectory = Trajectory(x)
    for k in range(gradients.num_steps):
        g_tilde = gradients(k, x)
        for i in range(len(x)):
            m[i] = beta * m[i] + (1 - beta) * g_tilde[i]
            x[i] = x[i] - delta_k(k) * np.sign(m[i])
        trajectory.record(x)
    return trajectory.stacked()
