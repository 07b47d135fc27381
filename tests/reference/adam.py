"""Adam and AdamW.

Adam: Goodfellow, Bengio & Courville (2016), Alg. 8.7 (symbols ``epsilon`` step
size, ``rho_1, rho_2`` decay rates, ``delta`` constant, ``s, r`` first and
second moments, ``t`` the time step); Kingma & Ba (2015), Alg. 1 and the
"eps-hat" form at the end of their Sec. 2 (``alpha, beta_1, beta_2, m, v``).
AdamW: Loshchilov & Hutter (2019), Alg. 2 (``alpha, eta_t, lambda``).
Each returns the trajectory, one float64 array per leaf, row ``t`` after ``t``
steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def adam(theta, grads, epsilon, rho_1, rho_2, delta, *, delta_root=0.0, num_steps=None):
    """Alg. 8.7::

        t <- t + 1
        s <- rho_1 s + (1 - rho_1) g
        r <- rho_2 r + (1 - rho_2) g (.) g
        s_hat <- s / (1 - rho_1^t)
        r_hat <- r / (1 - rho_2^t)
        Delta theta = -epsilon_k s_hat / (sqrt(r_hat + delta_root) + delta)
        theta <- theta + Delta theta

    ``delta_root = 0`` is the book and the paper; the seeds' transcription reads
    ``sqrt(r_hat + delta)``, which is ``delta = 0, delta_root = delta``.
    """
    gradients, epsilon_k = Gradients(grads, num_steps), rate(epsilon)
    theta = as_float64(theta)
    s = [np.zeros_like(theta_i) for theta_i in theta]
    r = [np.zeros_like(theta_i) for theta_i in theta]
    trajectory = Trajectory(theta)
    t = 0
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        t = t + 1
        for i in range(len(theta)):
            s[i] = rho_1 * s[i] + (1 - rho_1) * g[i]
            r[i] = rho_2 * r[i] + (1 - rho_2) * g[i] * g[i]
            s_hat = s[i] / (1 - rho_1**t)
            r_hat = r[i] / (1 - rho_2**t)
            delta_theta = -epsilon_k(k) * s_hat / (np.sqrt(r_hat + delta_root) + delta)
            theta[i] = theta[i] + delta_theta
        trajectory.record(theta)
    return trajectory.stacked()


def adam_eps_hat(theta, grads, alpha, beta_1, beta_2, eps_hat, *, num_steps=None):
    """Kingma & Ba (2015), end of Sec. 2: the bias corrections folded into the step size::

        m <- beta_1 m + (1 - beta_1) g
        v <- beta_2 v + (1 - beta_2) g^2
        alpha_t = alpha sqrt(1 - beta_2^t) / (1 - beta_1^t)
        theta <- theta - alpha_t m / (sqrt(v) + eps_hat)

    TensorFlow's and Keras' form: ``eps_hat`` meets the *uncorrected* root.
    """
    gradients, alpha_k = Gradients(grads, num_steps), rate(alpha)
    theta = as_float64(theta)
    m = [np.zeros_like(theta_i) for theta_i in theta]
    v = [np.zeros_like(theta_i) for theta_i in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, theta)
        alpha_t = alpha_k(k) * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        for i in range(len(theta)):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
            v[i] = beta_2 * v[i] + (1 - beta_2) * g[i] ** 2
            theta[i] = theta[i] - alpha_t * m[i] / (np.sqrt(v[i]) + eps_hat)
        trajectory.record(theta)
    return trajectory.stacked()


def adamw(theta, grads, alpha, beta_1, beta_2, epsilon, lam, *, eta=1.0, mask=None, num_steps=None):
    """Loshchilov & Hutter (2019), Alg. 2 (AdamW, without their optional L2 term)::

        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2
        m_hat_t = m_t / (1 - beta_1^t);  v_hat_t = v_t / (1 - beta_2^t)
        eta_t = SetScheduleMultiplier(t)
        theta_t = theta_{t-1} - eta_t (alpha m_hat_t / (sqrt(v_hat_t) + epsilon)
                                       + lambda theta_{t-1})

    Optax's and PyTorch's ``adamw(lr, weight_decay=lambda)`` multiply the decay by
    the learning rate: that is this algorithm with ``alpha = 1`` and
    ``eta_t = lr_t``. The paper's own choice, a fixed ``alpha`` and ``eta_t = 1``,
    decays by ``lambda`` per step whatever the rate.

    ``mask[i]`` False leaves leaf ``i`` undecayed (biases, as the seeds advise).
    """
    gradients, eta_k = Gradients(grads, num_steps), rate(eta)
    theta = as_float64(theta)
    mask = [True] * len(theta) if mask is None else list(mask)
    m = [np.zeros_like(theta_i) for theta_i in theta]
    v = [np.zeros_like(theta_i) for theta_i in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, theta)
        eta_t = eta_k(k)
        for i in range(len(theta)):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
            v[i] = beta_2 * v[i] + (1 - beta_2) * g[i] ** 2
            m_hat = m[i] / (1 - beta_1**t)
            v_hat = v[i] / (1 - beta_2**t)
            decay = lam * theta[i] if mask[i] else 0.0
            theta[i] = theta[i] - eta_t * (alpha * m_hat / (np.sqrt(v_hat) + epsilon) + decay)
        trajectory.record(theta)
    return trajectory.stacked()
