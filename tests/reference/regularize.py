"""Penalties: L1 / elastic net by subgradient and by proximal steps (ISTA), and
decoupled weight decay (Loshchilov & Hutter 2019, Alg. 1 SGDW and Alg. 2 AdamW).

Symbols: ``theta`` the parameters, ``g`` the gradient, ``epsilon`` the learning
rate; for the penalties the seeds' ``lambda`` (strength) and ``alpha`` (the
elastic-net mix, the weight of ``||w||_2^2``); for Loshchilov & Hutter ``alpha``
the Adam step size, ``eta_t`` the schedule multiplier, ``lambda`` the decay.
Every function returns the trajectory: one float64 array per leaf, row ``t``
the parameters after ``t`` steps. ``masks`` (one bool per leaf, default all
True) says which leaves are penalised.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def _all(theta, masks):
    return [True] * len(theta) if masks is None else list(masks)


def soft_threshold(v, t):
    """``sign(v) max(|v| - t, 0)``: the proximal map of ``t |.|`` (element-wise)."""
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def elastic_net_sgd(theta, grads, epsilon, lam, alpha, *, masks=None, num_steps=None):
    """SGD on ``J + lam (alpha ||w||^2 + (1 - alpha) ||w||_1)`` by subgradient::

    g <- g + lam (2 alpha theta + (1 - alpha) sign(theta));  theta <- theta - epsilon_k g

    (``alpha = 0``: the L1 penalty, Goodfellow et al. 2016, eq. 7.20.)
    """
    gradients, epsilon_k, lam_k = Gradients(grads, num_steps), rate(epsilon), rate(lam)
    theta = as_float64(theta)
    masks = _all(theta, masks)
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        for i in range(len(theta)):
            penalty = lam_k(k) * (2 * alpha * theta[i] + (1 - alpha) * np.sign(theta[i]))
            step = g[i] + (penalty if masks[i] else 0.0)
            theta[i] = theta[i] - epsilon_k(k) * step
        trajectory.record(theta)
    return trajectory.stacked()


def proximal_gradient(theta, grads, epsilon, lam, alpha, *, masks=None, num_steps=None):
    """ISTA for the elastic net (``alpha = 0``: the lasso)::

    v     <- theta - epsilon_k g
    theta <- soft_threshold(v, epsilon_k lam (1 - alpha)) / (1 + 2 epsilon_k lam alpha)

    the proximal map of ``epsilon_k lam (alpha ||w||^2 + (1 - alpha) ||w||_1)``.
    """
    gradients, epsilon_k, lam_k = Gradients(grads, num_steps), rate(epsilon), rate(lam)
    theta = as_float64(theta)
    masks = _all(theta, masks)
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        e, lam_now = epsilon_k(k), lam_k(k)
        for i in range(len(theta)):
            v = theta[i] - e * g[i]
            if masks[i]:
                v = soft_threshold(v, e * lam_now * (1 - alpha)) / (1 + 2 * e * lam_now * alpha)
            theta[i] = v
        trajectory.record(theta)
    return trajectory.stacked()


def sgdw(theta, grads, alpha, beta1, lam, eta, *, masks=None, num_steps=None):
    """Loshchilov & Hutter (2019), Alg. 1 (SGD with decoupled weight decay)::

    eta_t <- SetScheduleMultiplier(t)
    m_t   <- beta1 m_{t-1} + eta_t alpha g_t
    theta <- theta - m_t - eta_t lambda theta

    ``eta`` a number or a function of the 0-based step; ``masks`` the decayed leaves.
    """
    gradients, eta_t = Gradients(grads, num_steps), rate(eta)
    theta = as_float64(theta)
    masks = _all(theta, masks)
    m = [0.0 * x for x in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        for i in range(len(theta)):
            m[i] = beta1 * m[i] + eta_t(k) * alpha * g[i]
            decay = eta_t(k) * lam * theta[i] if masks[i] else 0.0
            theta[i] = theta[i] - m[i] - decay
        trajectory.record(theta)
    return trajectory.stacked()


def adamw(theta, grads, alpha, beta1, beta2, eps, lam, eta, *, masks=None, num_steps=None):
    """Loshchilov & Hutter (2019), Alg. 2 (Adam with decoupled weight decay)::

    m_t <- beta1 m + (1 - beta1) g;  v_t <- beta2 v + (1 - beta2) g^2
    m_hat <- m_t / (1 - beta1^t);    v_hat <- v_t / (1 - beta2^t)
    theta <- theta - eta_t (alpha m_hat / (sqrt(v_hat) + eps) + lambda theta)
    """
    gradients, eta_t = Gradients(grads, num_steps), rate(eta)
    theta = as_float64(theta)
    masks = _all(theta, masks)
    m = [0.0 * x for x in theta]
    v = [0.0 * x for x in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, theta)
        for i in range(len(theta)):
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] ** 2
            m_hat = m[i] / (1 - beta1**t)
            v_hat = v[i] / (1 - beta2**t)
            decay = lam * theta[i] if masks[i] else 0.0
            theta[i] = theta[i] - eta_t(k) * (alpha * m_hat / (np.sqrt(v_hat) + eps) + decay)
        trajectory.record(theta)
    return trajectory.stacked()


def sgd_decay_per_step(theta, grads, epsilon, lam, *, num_steps=None):
    """``theta <- theta - epsilon_k g - lambda theta``: decay not scaled by the rate."""
    gradients, epsilon_k = Gradients(grads, num_steps), rate(epsilon)
    theta = as_float64(theta)
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        for i in range(len(theta)):
            theta[i] = theta[i] - epsilon_k(k) * g[i] - lam * theta[i]
        trajectory.record(theta)
    return trajectory.stacked()
