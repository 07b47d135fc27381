"""Lookahead (Zhang et al. 2019, Alg. 1) around numpy inner optimizers, and RAdam.

Lookahead's symbols: ``phi`` the slow weights, ``theta`` the fast weights, ``k``
the synchronisation period, ``alpha`` the slow step size, ``A`` the inner
optimizer. The inner optimizers are small numpy objects with
``step(theta, g) -> theta`` and ``reset()``, each a transcription of its
pseudo-code, so that one Lookahead loop serves them all:

* :class:`SGD`: Goodfellow et al. (2016) Alg. 8.1, with heavy-ball momentum
  (Alg. 8.2 with the rate outside the velocity, ``b <- mu b + g``,
  ``theta <- theta - epsilon b``: Optax's and PyTorch's form).
* :class:`Adam`: Goodfellow et al. (2016) Alg. 8.7 / Kingma & Ba (2015) Alg. 1.
* :class:`RMSProp`: Goodfellow et al. (2016) Alg. 8.5 (``delta`` inside the root).
* :class:`RAdam`: Liu et al. (2020), "On the Variance of the Adaptive Learning
  Rate and Beyond", Alg. 2, with the threshold on ``rho_t`` as an argument (the
  paper: 4, Optax and PyTorch: 5) and ``eps`` added to the root (the paper has
  none; Optax and PyTorch add it outside).

Run with ``lookahead(theta, grads, inner, k, alpha)``; :class:`RAdam` alone with
``run(theta, grads, RAdam(...))``. Both return trajectories as in the other
references (one float64 array per leaf, row ``t`` after ``t`` steps).
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


class SGD:
    """Alg. 8.1 (``mu=None``) or momentum with the rate outside the velocity."""

    def __init__(self, epsilon, mu=None):
        self.epsilon_k, self.mu = rate(epsilon), mu
        self.reset()

    def reset(self):
        self.k, self.b = 0, None

    def step(self, theta, g):
        if self.b is None:
            self.b = [np.zeros_like(x) for x in theta]
        epsilon = self.epsilon_k(self.k)
        self.k += 1
        out = []
        for i in range(len(theta)):
            if self.mu is None:
                out.append(theta[i] - epsilon * g[i])
            else:
                self.b[i] = self.mu * self.b[i] + g[i]
                out.append(theta[i] - epsilon * self.b[i])
        return out


class Adam:
    """Alg. 8.7: ``s, r`` the moments, ``rho_1, rho_2`` their decays, ``delta``."""

    def __init__(self, epsilon, rho_1=0.9, rho_2=0.999, delta=1e-8):
        self.epsilon_k, self.rho_1, self.rho_2, self.delta = rate(epsilon), rho_1, rho_2, delta
        self.reset()

    def reset(self):
        self.t, self.s, self.r = 0, None, None

    def step(self, theta, g):
        if self.s is None:
            self.s = [np.zeros_like(x) for x in theta]
            self.r = [np.zeros_like(x) for x in theta]
        epsilon = self.epsilon_k(self.t)
        self.t += 1
        out = []
        for i in range(len(theta)):
            self.s[i] = self.rho_1 * self.s[i] + (1 - self.rho_1) * g[i]
            self.r[i] = self.rho_2 * self.r[i] + (1 - self.rho_2) * g[i] * g[i]
            s_hat = self.s[i] / (1 - self.rho_1**self.t)
            r_hat = self.r[i] / (1 - self.rho_2**self.t)
            out.append(theta[i] - epsilon * s_hat / (np.sqrt(r_hat) + self.delta))
        return out


class RMSProp:
    """Alg. 8.5: ``r <- rho r + (1 - rho) g^2``; ``theta <- theta - epsilon g / sqrt(delta + r)``.

    ``delta`` inside the root, as the book and Optax (gradtx's ``eps_in_sqrt=True``).
    """

    def __init__(self, epsilon, rho=0.9, delta=1e-8):
        self.epsilon_k, self.rho, self.delta = rate(epsilon), rho, delta
        self.reset()

    def reset(self):
        self.k, self.r = 0, None

    def step(self, theta, g):
        if self.r is None:
            self.r = [np.zeros_like(x) for x in theta]
        epsilon = self.epsilon_k(self.k)
        self.k += 1
        out = []
        for i in range(len(theta)):
            self.r[i] = self.rho * self.r[i] + (1 - self.rho) * g[i] * g[i]
            out.append(theta[i] - epsilon * g[i] / np.sqrt(self.delta + self.r[i]))
        return out


class RAdam:
    """Liu et al. (2020), Alg. 2::

        rho_inf = 2 / (1 - beta_2) - 1
        v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2
        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        m_hat_t = m_t / (1 - beta_1^t)
        rho_t = rho_inf - 2 t beta_2^t / (1 - beta_2^t)
        if rho_t >= threshold:          (the paper: rho_t > 4)
            l_t = 1 / (sqrt(v_t / (1 - beta_2^t) + eps_root) + eps)
            r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
            theta_t = theta_{t-1} - alpha_t r_t m_hat_t l_t
        else:
            theta_t = theta_{t-1} - alpha_t m_hat_t       (the momentum fallback)

    ``l_t`` is the paper's ``sqrt((1 - beta_2^t) / v_t)`` with ``eps``/``eps_root``
    added as Optax does (``eps = eps_root = 0`` is the paper).
    """

    def __init__(self, alpha, beta_1=0.9, beta_2=0.999, eps=1e-8, eps_root=0.0, threshold=5.0):
        self.alpha_k, self.beta_1, self.beta_2 = rate(alpha), beta_1, beta_2
        self.eps, self.eps_root, self.threshold = eps, eps_root, threshold
        self.rho_inf = 2 / (1 - beta_2) - 1
        self.reset()

    def reset(self):
        self.t, self.m, self.v = 0, None, None

    def step(self, theta, g):
        if self.m is None:
            self.m = [np.zeros_like(x) for x in theta]
            self.v = [np.zeros_like(x) for x in theta]
        alpha = self.alpha_k(self.t)
        self.t += 1
        t, b1, b2, rho_inf = self.t, self.beta_1, self.beta_2, self.rho_inf
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        out = []
        for i in range(len(theta)):
            self.v[i] = b2 * self.v[i] + (1 - b2) * g[i] ** 2
            self.m[i] = b1 * self.m[i] + (1 - b1) * g[i]
            m_hat = self.m[i] / (1 - b1**t)
            if rho_t >= self.threshold:
                l_t = 1 / (np.sqrt(self.v[i] / (1 - b2**t) + self.eps_root) + self.eps)
                r_t = np.sqrt(
                    (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
                )
                out.append(theta[i] - alpha * r_t * m_hat * l_t)
            else:
                out.append(theta[i] - alpha * m_hat)
        return out


def run(theta, grads, inner, *, num_steps=None):
    """The inner optimizer alone: ``theta <- A(theta, g_k)`` for every step."""
    gradients = Gradients(grads, num_steps)
    theta = as_float64(theta)
    trajectory = Trajectory(theta)
    for n in range(gradients.num_steps):
        theta = inner.step(theta, gradients(n, theta))
        trajectory.record(theta)
    return trajectory.stacked()


def lookahead(theta, grads, inner, k, alpha, *, reset_state=False, num_steps=None):
    """Alg. 1::

        phi_0 = theta_0
        for t = 1, 2, ...:
            theta_{t,0} <- phi_{t-1}
            for i = 1, ..., k:
                theta_{t,i} <- theta_{t,i-1} + A(L, theta_{t,i-1}, d)
            phi_t <- phi_{t-1} + alpha (theta_{t,k} - phi_{t-1})

    run for ``num_steps`` inner steps in all (the last period may be cut short).
    ``reset_state`` re-initialises ``A`` after each slow step.

    Returns:
      ``(fast, slow)``: the weights a training loop holds after each step (the
      fast weights, reset to ``phi_t`` after the k-th step of a period) and the
      slow weights ``phi`` after each step, one float64 array per leaf each.
    """
    gradients = Gradients(grads, num_steps)
    phi = as_float64(theta)
    fast, slow = Trajectory(phi), Trajectory(phi)
    n = 0  # inner steps taken, over all periods
    while n < gradients.num_steps:
        theta = [x.copy() for x in phi]
        for i in range(1, k + 1):
            theta = inner.step(theta, gradients(n, theta))
            n += 1
            if i == k:
                phi = [phi[j] + alpha * (theta[j] - phi[j]) for j in range(len(phi))]
                theta = [x.copy() for x in phi]  # theta_{t+1,0} = phi_t
                if reset_state:
                    inner.reset()
            fast.record(theta)
            slow.record(phi)
            if n == gradients.num_steps:
                break
    return fast.stacked(), slow.stacked()
