"""Gradient clipping, then an SGD step: Pascanu et al. (2013), Brock et al. (2021).

Symbols: ``theta`` the parameters (a list of leaves), ``g`` the gradient,
``epsilon`` the learning rate, ``v`` the clipping threshold. Each ``*_clip``
function maps the gradient leaves (and, for AGC, the parameters) to the clipped
leaves, written from the papers' formulas; :func:`clipped_sgd` runs
``theta <- theta - epsilon_k clip(g)`` (Goodfellow et al. 2016, Alg. 8.1 with the
clipping of Sec. 10.11.1) and returns the trajectory.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def global_norm_clip(g, v):
    """Pascanu, Mikolov & Bengio (2013), Alg. 1::

    g_hat <- dE/dtheta
    if ||g_hat|| >= threshold then g_hat <- threshold / ||g_hat|| * g_hat

    ``||.||`` over every leaf together. (At ``||g|| == v`` both branches agree.)
    """
    norm = np.sqrt(sum(float(np.sum(np.abs(x) ** 2)) for x in g))
    if norm > v:
        return [x * (v / norm) for x in g]
    return [x.copy() for x in g]


def value_clip(g, max_delta):
    """Each element clipped to ``[-max_delta, max_delta]``."""
    return [np.clip(x, -max_delta, max_delta) for x in g]


def leaf_norm_clip(g, v):
    """Pascanu's rule applied to each leaf on its own."""
    return [global_norm_clip([x], v)[0] for x in g]


def block_rms_clip(g, threshold):
    """Each leaf rescaled so that ``sqrt(mean(x^2)) <= threshold``."""
    out = []
    for x in g:
        rms = np.sqrt(np.mean(np.abs(x) ** 2))
        out.append(x * (threshold / rms) if rms > threshold else x.copy())
    return out


def unit_axes(shape):
    """The axes an NFNets unit spans, by rank (Brock et al.'s code): a squeezed
    vector or scalar is one unit, rank 2-3 reduce axis 0, rank 4+ all but the last."""
    if len([d for d in shape if d != 1]) <= 1:
        return tuple(range(len(shape)))
    if len(shape) in (2, 3):
        return (0,)
    return tuple(range(len(shape) - 1))


def agc_clip(g, theta, lam, eps):
    """Brock, De, Smith & Simonyan (2021), eq. 3, for every unit ``i``::

    G_i <- lam * max(||W_i||, eps) / ||G_i|| * G_i   if ||G_i|| / max(||W_i||, eps) > lam
    """
    out = []
    for x, w in zip(g, theta, strict=True):
        axes = unit_axes(x.shape)
        g_norm = np.sqrt(np.sum(np.abs(x) ** 2, axis=axes, keepdims=True))
        w_norm = np.maximum(np.sqrt(np.sum(np.abs(w) ** 2, axis=axes, keepdims=True)), eps)
        ratio = g_norm / w_norm
        factor = np.ones_like(ratio)
        over = ratio > lam
        factor[over] = lam * w_norm[over] / g_norm[over]
        out.append(x * factor)
    return out


def clipped_sgd(theta, grads, epsilon, clip, *, num_steps=None):
    """``theta <- theta - epsilon_k clip(g, theta)``; ``clip(g, theta) -> leaves``.

    Returns ``(trajectory, changed)``: the parameters after every step, and for
    every step the fraction of the gradient's elements that the clipping changed
    (so that a test can check that a run exercised both branches).
    """
    gradients, epsilon_k = Gradients(grads, num_steps), rate(epsilon)
    theta = as_float64(theta)
    trajectory, clipped = Trajectory(theta), []
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        c = clip(g, theta)
        changed = sum(int(np.sum(a != b)) for a, b in zip(g, c, strict=True))
        clipped.append(changed / sum(a.size for a in g))
        for i in range(len(theta)):
            theta[i] = theta[i] - epsilon_k(k) * c[i]
        trajectory.record(theta)
    return trajectory.stacked(), clipped
