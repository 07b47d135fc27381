"""AMSGrad: Reddi, Kale & Kumar (2018), On the Convergence of Adam and Beyond, Alg. 2.

Paper symbols: ``alpha`` the step size, ``beta_1, beta_2`` the decays, ``m, v``
the moments, ``v_hat`` the running maximum. The paper applies no bias
correction; the frameworks do, and disagree on what the maximum is taken of.
Each function returns the trajectory, one float64 array per leaf, row ``t``
after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def amsgrad(
    theta,
    grads,
    alpha,
    beta_1,
    beta_2,
    epsilon,
    *,
    epsilon_root=0.0,
    maximum_of="corrected",
    num_steps=None,
):
    """AMSGrad with Adam's bias corrections.

    ``maximum_of="corrected"`` (Optax): the maximum of the corrected moment::

        v_hat_max <- max(v_hat_max, v / (1 - beta_2^t))
        theta <- theta - alpha_k m/(1 - beta_1^t) / (sqrt(v_hat_max + epsilon_root) + epsilon)

    ``maximum_of="raw"`` (PyTorch): the maximum of the raw ``v``, corrected after::

        v_max <- max(v_max, v)
        theta <- theta - alpha_k m/(1 - beta_1^t) / (sqrt(v_max) / sqrt(1 - beta_2^t) + epsilon)

    (``epsilon_root`` is not part of PyTorch's form and must be 0 with "raw".)
    """
    if maximum_of not in ("corrected", "raw"):
        raise ValueError(f"maximum_of must be 'corrected' or 'raw', got {maximum_of!r}")
    if maximum_of == "raw" and epsilon_root != 0:
        raise ValueError("PyTorch's form has no epsilon_root")
    gradients, alpha_k = Gradients(grads, num_steps), rate(alpha)
    theta = as_float64(theta)
    m = [np.zeros_like(theta_i) for theta_i in theta]
    v = [np.zeros_like(theta_i) for theta_i in theta]
    v_max = [np.zeros_like(theta_i) for theta_i in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, theta)
        for i in range(len(theta)):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
            v[i] = beta_2 * v[i] + (1 - beta_2) * g[i] ** 2
            m_hat = m[i] / (1 - beta_1**t)
            if maximum_of == "corrected":
                v_max[i] = np.maximum(v_max[i], v[i] / (1 - beta_2**t))
                denominator = np.sqrt(v_max[i] + epsilon_root) + epsilon
            else:
                v_max[i] = np.maximum(v_max[i], v[i])
                denominator = np.sqrt(v_max[i]) / np.sqrt(1 - beta_2**t) + epsilon
            theta[i] = theta[i] - alpha_k(k) * m_hat / denominator
        trajectory.record(theta)
    return trajectory.stacked()


def amsgrad_reddi(theta, grads, alpha, beta_1, beta_2, epsilon=0.0, *, num_steps=None):
    """Reddi et al. (2018), Alg. 2 with constant ``beta_1t = beta_1``, no bias correction::

        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2
        v_hat_t = max(v_hat_{t-1}, v_t)
        theta_{t+1} = theta_t - alpha_t m_t / sqrt(v_hat_t)

    The paper has no ``epsilon``; a positive one is added outside the root.
    """
    gradients, alpha_k = Gradients(grads, num_steps), rate(alpha)
    theta = as_float64(theta)
    m = [np.zeros_like(theta_i) for theta_i in theta]
    v = [np.zeros_like(theta_i) for theta_i in theta]
    v_hat = [np.zeros_like(theta_i) for theta_i in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        g = gradients(k, theta)
        for i in range(len(theta)):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
            v[i] = beta_2 * v[i] + (1 - beta_2) * g[i] ** 2
            v_hat[i] = np.maximum(v_hat[i], v[i])
            theta[i] = theta[i] - alpha_k(k) * m[i] / (np.sqrt(v_hat[i]) + epsilon)
        trajectory.record(theta)
    return trajectory.stacked()
