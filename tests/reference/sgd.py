"""SGD, momentum and Nesterov momentum: Goodfellow, Bengio & Courville (2016), Alg. 8.1-8.3.

Book symbols: ``theta`` the parameters, ``epsilon`` (``epsilon_k`` at iteration
k) the learning rate, ``alpha`` the momentum, ``v`` the velocity, ``g`` the
gradient estimate. Leaves are indexed by ``i``; every line is element-wise.
Every function returns the trajectory: one float64 array per leaf, row ``t``
holding the parameters after ``t`` steps.
"""

from __future__ import annotations

from ._common import Gradients, Trajectory, as_float64, rate


def sgd(theta, grads, epsilon, *, num_steps=None):
    """Alg. 8.1: ``theta <- theta - epsilon_k g``.

    Args:
      theta: the initial parameters, a list of arrays.
      grads: the gradients (see ``_common.Gradients``).
      epsilon: the learning rate, a number or a function of the 0-based step k.
      num_steps: steps to take (needed when ``grads`` is a function).
    """
    gradients, epsilon_k = Gradients(grads, num_steps), rate(epsilon)
    theta = as_float64(theta)
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        for i in range(len(theta)):
            theta[i] = theta[i] - epsilon_k(k) * g[i]
        trajectory.record(theta)
    return trajectory.stacked()


def momentum(theta, grads, epsilon, alpha, *, learning_rate_in_velocity=True, num_steps=None):
    """Alg. 8.2, heavy-ball momentum, from the initial velocity ``v = 0``.

    ``learning_rate_in_velocity=True`` is the book literally::

        v <- alpha v - epsilon_k g;   theta <- theta + v

    ``False`` is Optax's and PyTorch's form, the rate applied outside a velocity
    ``b`` that sums raw gradients::

        b <- alpha b + g;             theta <- theta - epsilon_k b

    The two coincide for a constant rate (``v = -epsilon b``) and differ as soon
    as ``epsilon_k`` changes.
    """
    gradients, epsilon_k = Gradients(grads, num_steps), rate(epsilon)
    theta = as_float64(theta)
    v = [0.0 * theta_i for theta_i in theta]  # the book's velocity (rate inside)
    b = [0.0 * theta_i for theta_i in theta]  # Optax's / PyTorch's (rate outside)
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        for i in range(len(theta)):
            if learning_rate_in_velocity:
                v[i] = alpha * v[i] - epsilon_k(k) * g[i]
                theta[i] = theta[i] + v[i]
            else:
                b[i] = alpha * b[i] + g[i]
                theta[i] = theta[i] - epsilon_k(k) * b[i]
        trajectory.record(theta)
    return trajectory.stacked()


def nesterov_literal(theta, grads, epsilon, alpha, *, num_steps=None):
    """Alg. 8.3 as printed: the gradient is taken at the interim point.

    ::

        theta~ <- theta + alpha v
        g      <- grad J(theta~)
        v      <- alpha v - epsilon_k g
        theta  <- theta + v

    Returns:
      ``(theta, v)``: the trajectories of the parameters and of the velocity
      (row t of each is its value after t steps), so that a caller can form the
      point ``theta + alpha v`` at which the *next* gradient is evaluated.
    """
    gradients, epsilon_k = Gradients(grads, num_steps), rate(epsilon)
    theta = as_float64(theta)
    v = [0.0 * theta_i for theta_i in theta]
    thetas, velocities = Trajectory(theta), Trajectory(v)
    for k in range(gradients.num_steps):
        theta_tilde = [theta[i] + alpha * v[i] for i in range(len(theta))]
        g = gradients(k, theta_tilde)
        for i in range(len(theta)):
            v[i] = alpha * v[i] - epsilon_k(k) * g[i]
            theta[i] = theta[i] + v[i]
        thetas.record(theta)
        velocities.record(v)
    return thetas.stacked(), velocities.stacked()


def nesterov_reparametrised(
    phi, grads, epsilon, alpha, *, learning_rate_in_velocity=False, num_steps=None
):
    """Alg. 8.3 in the variable ``phi = theta + alpha v`` (Sutskever et al. 2013).

    Substituting ``theta = phi - alpha v`` into Alg. 8.3 gives a method whose
    gradient is taken at the point it holds::

        v   <- alpha v - epsilon_k g(phi)
        phi <- phi + alpha v - epsilon_k g(phi)          (rate inside v: the book)

    or, with ``b`` a velocity of raw gradients and the rate applied outside::

        b   <- alpha b + g(phi)
        phi <- phi - epsilon_k (g(phi) + alpha b)        (Optax/PyTorch)

    Both equal the literal run's ``theta + alpha v`` for a constant rate; with a
    schedule only the first does.
    """
    gradients, epsilon_k = Gradients(grads, num_steps), rate(epsilon)
    phi = as_float64(phi)
    v = [0.0 * phi_i for phi_i in phi]
    b = [0.0 * phi_i for phi_i in phi]
    trajectory = Trajectory(phi)
    for k in range(gradients.num_steps):
        g = gradients(k, phi)
        for i in range(len(phi)):
            if learning_rate_in_velocity:
                v[i] = alpha * v[i] - epsilon_k(k) * g[i]
                phi[i] = phi[i] + alpha * v[i] - epsilon_k(k) * g[i]
            else:
                b[i] = alpha * b[i] + g[i]
                phi[i] = phi[i] - epsilon_k(k) * (g[i] + alpha * b[i])
        trajectory.record(phi)
    return trajectory.stacked()
