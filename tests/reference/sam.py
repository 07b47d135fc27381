"""SAM: Foret, Kleiner, Mobahi & Neyshabur (2021), Sharpness-Aware Minimization, Alg. 1.

Paper symbols: ``w`` the weights, ``rho`` the neighbourhood radius, ``eta`` the
step size, ``epsilon_hat`` the adversarial perturbation (``p = 2``:
``rho g / ||g||_2``). Generalised, as Optax's ``sam``, to a period of ``k``
calls: ``k - 1`` normalized ascent steps of length ``rho`` from ``w``, then
one descent step from ``w`` with the gradient at the last perturbed point.
The descent is heavy-ball SGD (``beta = 0``: the paper's plain SGD).
Returns the trajectory, one float64 array per leaf, row ``t`` after ``t`` calls.
"""

from __future__ import annotations

import numpy as np

from ._common import Trajectory, as_float64


def _global_norm(g):
    return np.sqrt(sum(np.sum(gi**2) for gi in g))


def sam(theta, grad, eta, rho, k, num_steps, *, beta=0.0, opaque=False, ascent_grad=None):
    """Alg. 1 with ``k - 1`` ascent steps per period::

        w_0 = w
        w_{i+1} = w_i + rho g(w_i) / ||g(w_i)||      (i = 0 .. k-2)
        v <- beta v + g(w_{k-1});  w <- w - eta v

    ``grad(k, point)`` is the gradient of call ``k``. In transparent mode each
    call takes one of these steps (the params visit every ``w_i``); with
    ``opaque=True`` each call runs a whole period, the ascent gradients after
    the first coming from ``ascent_grad(point)``.
    """
    w = as_float64(theta)
    v = [np.zeros_like(x) for x in w]
    trajectory = Trajectory(w)
    point = [x.copy() for x in w]
    for call in range(num_steps):
        g = grad(call, point)
        if opaque:
            for _ in range(k - 1):
                norm = _global_norm(g)
                point = [p + rho * gi / norm for p, gi in zip(point, g, strict=True)]
                g = ascent_grad(point)
            i_last = True
        else:
            i_last = call % k == k - 1
        if i_last:
            v = [beta * vi + gi for vi, gi in zip(v, g, strict=True)]
            w = [wi - eta * vi for wi, vi in zip(w, v, strict=True)]
            point = [x.copy() for x in w]
        else:
            norm = _global_norm(g)
            point = [p + rho * gi / norm for p, gi in zip(point, g, strict=True)]
        trajectory.record(point)
    return trajectory.stacked()
