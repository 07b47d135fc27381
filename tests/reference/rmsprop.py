"""RMSProp: Goodfellow, Bengio & Courville (2016), Alg. 8.5 and 8.6; Graves (2013).

Book symbols: ``epsilon`` the global learning rate, ``rho`` the decay rate,
``delta`` the small constant, ``r`` the accumulation variable, ``alpha`` the
momentum and ``v`` the velocity. Centered RMSProp (Graves 2013, eq. 38-41) adds
the running mean of the gradient, written ``g_bar`` here (Graves' ``g_i``; his
``aleph, beth, gimel, daleth`` are ``rho, alpha, epsilon, delta``).
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def _root(x, delta, delta_in_sqrt):
    """``sqrt(delta + x)`` (Alg. 8.5, Graves) or ``sqrt(x) + delta`` (PyTorch, Keras)."""
    return np.sqrt(delta + x) if delta_in_sqrt else np.sqrt(x) + delta


def rmsprop(
    theta,
    grads,
    epsilon,
    rho,
    delta,
    *,
    delta_in_sqrt=True,
    r0=0.0,
    bias_correction=False,
    centered=False,
    alpha=None,
    learning_rate_in_velocity=True,
    num_steps=None,
):
    """Alg. 8.5, optionally centered (Graves) and with heavy-ball momentum::

        r           <- rho r + (1 - rho) g (.) g
        g_bar       <- rho g_bar + (1 - rho) g                   (centered only)
        Delta theta  = -epsilon_k / sqrt(delta + r) (.) g            (Alg. 8.5)
                       -epsilon_k / sqrt(delta + r - g_bar^2) (.) g  (centered)
        theta       <- theta + Delta theta

    With momentum ``alpha`` the step goes through a velocity, the rate inside it
    (Graves eq. 40-41, the book's Alg. 8.6 without the look-ahead)::

        v <- alpha v - epsilon_k d;   theta <- theta + v

    or outside it (PyTorch's ``momentum``)::

        b <- alpha b + d;             theta <- theta - epsilon_k b

    where ``d = g / sqrt(delta + r)`` is the scaled gradient.

    Args:
      theta, grads, num_steps: see ``sgd.sgd``.
      epsilon: the global learning rate (a number or a function of k).
      rho: the decay rate.
      delta: the small constant.
      delta_in_sqrt: ``True`` (Alg. 8.5, Graves): ``sqrt(delta + r)``; ``False``
        (PyTorch): ``sqrt(r) + delta``.
      r0: the initial accumulator (book 0; TensorFlow 1 used 1).
      bias_correction: use ``r / (1 - rho^t)`` (and ``g_bar / (1 - rho^t)``), not
        in the book; Optax's option.
      centered: Graves' centered form.
      alpha: the momentum, ``None`` for none.
      learning_rate_in_velocity: where the rate goes when ``alpha`` is given.
    """
    gradients, epsilon_k = Gradients(grads, num_steps), rate(epsilon)
    theta = as_float64(theta)
    r = [np.full_like(theta_i, r0) for theta_i in theta]
    g_bar = [np.zeros_like(theta_i) for theta_i in theta]
    v = [np.zeros_like(theta_i) for theta_i in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, theta)
        for i in range(len(theta)):
            r[i] = rho * r[i] + (1 - rho) * g[i] * g[i]
            g_bar[i] = rho * g_bar[i] + (1 - rho) * g[i]
            r_hat, g_bar_hat = r[i], g_bar[i]
            if bias_correction:
                r_hat, g_bar_hat = r_hat / (1 - rho**t), g_bar_hat / (1 - rho**t)
            spread = r_hat - g_bar_hat * g_bar_hat if centered else r_hat
            d = g[i] / _root(spread, delta, delta_in_sqrt)
            if alpha is None:
                theta[i] = theta[i] - epsilon_k(k) * d
            elif learning_rate_in_velocity:
                v[i] = alpha * v[i] - epsilon_k(k) * d
                theta[i] = theta[i] + v[i]
            else:
                v[i] = alpha * v[i] + d  # b, the velocity of scaled gradients
                theta[i] = theta[i] - epsilon_k(k) * v[i]
        trajectory.record(theta)
    return trajectory.stacked()


def rmsprop_nesterov(
    theta,
    grads,
    epsilon,
    rho,
    alpha,
    delta=0.0,
    *,
    delta_in_sqrt=True,
    centered=False,
    num_steps=None,
):
    """Alg. 8.6 as printed: RMSProp with Nesterov momentum, the gradient at the interim point::

        theta~ <- theta + alpha v
        g      <- grad J(theta~)
        r      <- rho r + (1 - rho) g (.) g
        v      <- alpha v - epsilon_k / sqrt(r) (.) g
        theta  <- theta + v

    The book's Alg. 8.6 has no ``delta``; ``delta=0`` (the default) is that
    literally, and a positive ``delta`` is placed as in Alg. 8.5
    (``sqrt(delta + r)``) or, with ``delta_in_sqrt=False``, outside the root.
    ``centered`` swaps ``r`` for ``r - g_bar^2`` as in :func:`rmsprop`.

    Returns:
      ``(theta, v)`` trajectories, as ``sgd.nesterov_literal``.
    """
    gradients, epsilon_k = Gradients(grads, num_steps), rate(epsilon)
    theta = as_float64(theta)
    r = [np.zeros_like(theta_i) for theta_i in theta]
    g_bar = [np.zeros_like(theta_i) for theta_i in theta]
    v = [np.zeros_like(theta_i) for theta_i in theta]
    thetas, velocities = Trajectory(theta), Trajectory(v)
    for k in range(gradients.num_steps):
        theta_tilde = [theta[i] + alpha * v[i] for i in range(len(theta))]
        g = gradients(k, theta_tilde)
        for i in range(len(theta)):
            r[i] = rho * r[i] + (1 - rho) * g[i] * g[i]
            g_bar[i] = rho * g_bar[i] + (1 - rho) * g[i]
            spread = r[i] - g_bar[i] * g_bar[i] if centered else r[i]
            v[i] = alpha * v[i] - epsilon_k(k) / _root(spread, delta, delta_in_sqrt) * g[i]
            theta[i] = theta[i] + v[i]
        thetas.record(theta)
        velocities.record(v)
    return thetas.stacked(), velocities.stacked()
