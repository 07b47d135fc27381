"""Rescaled and recentred gradients, then an SGD step: NGD, Adafactor's and LARS's
parameter scales, gradient centralization.

Symbols: ``theta`` the parameters (a list of leaves), ``g`` the gradient,
``epsilon`` the learning rate. Each function below maps the gradient leaves (and
the parameters where the rule reads them) to the transformed leaves, written from
the papers' formulas; :func:`transformed_sgd` runs
``theta <- theta - epsilon_k T(g, theta)`` (Goodfellow et al. 2016, Alg. 8.1) and
returns the trajectory.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def normalized(g, s, eps):
    """Hazan, Levy & Shalev-Shwartz (2015), Alg. 1 (NGD): ``g_hat = g / ||g||``,
    the norm over every leaf together; scaled by ``s``, with ``eps`` added to the norm::

        g <- s g / (||g|| + eps)
    """
    norm = np.sqrt(sum(float(np.sum(np.abs(x) ** 2)) for x in g))
    return [x * (s / (norm + eps)) for x in g]


def param_rms_scaled(g, theta, eps_2):
    """Shazeer & Stern (2018), Sec. 8: the relative step ``max(eps_2, RMS(X))`` of
    each parameter block ``X`` (a leaf), ``RMS(X) = sqrt(mean X^2)``, times its gradient."""
    out = []
    for x, w in zip(g, theta, strict=True):
        rms = np.sqrt(np.mean(np.abs(w) ** 2))
        out.append(x * max(eps_2, rms))
    return out


def param_norm_scaled(g, theta, eps):
    """You, Gitman & Ginsburg (2017), the numerator of LARS's local rate: ``||w||`` of
    each leaf (all its elements), at least ``eps``, times its gradient."""
    out = []
    for x, w in zip(g, theta, strict=True):
        norm = np.sqrt(np.sum(np.abs(w) ** 2))
        out.append(x * max(eps, norm))
    return out


def centralized(g, output_axis=0):
    """Yong et al. (2020), Sec. 3.2: for each output unit ``i`` (index ``i`` on
    ``output_axis``) of a leaf of rank >= 2, its fan-in gradient minus its mean::

        Phi_GC(grad w_i) = grad w_i - (1 / M) sum_j grad w_ij

    Leaves of rank 0 and 1 are returned as they are. Written as a loop over units.
    """
    out = []
    for x in g:
        if x.ndim <= 1:
            out.append(x.copy())
            continue
        units = np.moveaxis(x, output_axis, 0)
        centred = np.stack([unit - np.mean(unit) for unit in units])
        out.append(np.moveaxis(centred, 0, output_axis))
    return out


def transformed_sgd(theta, grads, epsilon, transform, *, num_steps=None):
    """``theta <- theta - epsilon_k T(g, theta)``, ``transform(g, theta) -> leaves``."""
    gradients, epsilon_k = Gradients(grads, num_steps), rate(epsilon)
    theta = as_float64(theta)
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        step = transform(gradients(k, theta), theta)
        for i in range(len(theta)):
            theta[i] = theta[i] - epsilon_k(k) * step[i]
        trajectory.record(theta)
    return trajectory.stacked()
