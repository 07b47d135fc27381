"""AdaGrad: Goodfellow, Bengio & Courville (2016), Alg. 8.4; Duchi, Hazan & Singer (2011).

Book symbols: ``epsilon`` the global learning rate, ``delta`` the small
constant, ``r`` the gradient accumulation variable. Returns the trajectory, one
float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def adagrad(theta, grads, epsilon, delta=1e-7, *, delta_in_sqrt=False, r0=0.0, num_steps=None):
    """Alg. 8.4::

        r          <- r + g (.) g
        Delta theta = -epsilon_k / (delta + sqrt(r)) (.) g     (the book)
        theta      <- theta + Delta theta

    Args:
      theta, grads, num_steps: see ``sgd.sgd``.
      epsilon: the global learning rate (a number or a function of k).
      delta: the small constant (book: about 1e-7).
      delta_in_sqrt: ``False`` is the book, ``delta + sqrt(r)``; ``True`` is
        Optax's ``sqrt(r + delta)``.
      r0: the initial accumulator; the book initialises ``r = 0``, Optax to 0.1.
    """
    gradients, epsilon_k = Gradients(grads, num_steps), rate(epsilon)
    theta = as_float64(theta)
    r = [np.full_like(theta_i, r0) for theta_i in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        for i in range(len(theta)):
            r[i] = r[i] + g[i] * g[i]
            if delta_in_sqrt:
                delta_theta = -epsilon_k(k) / np.sqrt(r[i] + delta) * g[i]
            else:
                delta_theta = -epsilon_k(k) / (delta + np.sqrt(r[i])) * g[i]
            theta[i] = theta[i] + delta_theta
        trajectory.record(theta)
    return trajectory.stacked()
