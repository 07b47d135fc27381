"""RAdam: Liu et al. (2020), On the Variance of the Adaptive Learning Rate and Beyond, Alg. 2.

A plain float64 loop over the pseudo-code, with the paper's symbols (``alpha_t``
step size, ``beta_1, beta_2``, ``m, v``, ``m_hat``, ``rho_inf, rho_t``, the
adaptive rate ``l_t`` and the rectification term ``r_t``). Imports numpy only.
"""

from __future__ import annotations

import numpy as np


def radam(
    theta,
    grads,
    alpha,
    beta_1,
    beta_2,
    *,
    threshold=4.0,
    below_threshold="momentum",
    delta=0.0,
    delta_root=0.0,
    delta_on_uncorrected_root=False,
    nesterov=False,
):
    """Alg. 2::

        rho_inf <- 2 / (1 - beta_2) - 1
        for t = 1, 2, ...:
            g_t <- the t-th gradient
            v_t <- beta_2 v_{t-1} + (1 - beta_2) g_t^2
            m_t <- beta_1 m_{t-1} + (1 - beta_1) g_t
            m_hat_t <- m_t / (1 - beta_1^t)
            rho_t <- rho_inf - 2 t beta_2^t / (1 - beta_2^t)
            if rho_t > threshold (4 in the paper):
                l_t <- sqrt((1 - beta_2^t) / v_t)
                r_t <- sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                theta_t <- theta_{t-1} - alpha_t r_t m_hat_t l_t
            else:
                theta_t <- theta_{t-1} - alpha_t m_hat_t

    Beyond the paper, as options: ``below_threshold="skip"`` takes no step in
    the else branch (the authors' code with ``degenerated_to_sgd=False``);
    ``delta, delta_root`` give ``l_t = 1 / (sqrt(v_t / (1 - beta_2^t) + delta_root)
    + delta)`` (Optax), or with ``delta_on_uncorrected_root`` ``l_t =
    sqrt(1 - beta_2^t) / (sqrt(v_t) + delta)`` (PyTorch, the authors' code);
    both are the paper's ``l_t`` for ``delta = delta_root = 0``. ``nesterov``
    replaces ``m_hat_t`` by ``beta_1 m_t / (1 - beta_1^{t+1}) + (1 - beta_1) g_t /
    (1 - beta_1^t)`` (Dozat's NAdam with a constant momentum, Optax's option).

    Args:
      theta: the initial parameters, a list of arrays (one per leaf).
      grads: ``grads[k]`` is the list of leaves of the gradient of step
        ``t = k + 1``.
      alpha: the step size, a number or a function of the 0-based step ``k``.

    Returns:
      The trajectory: one array per leaf, shaped ``(T + 1, *leaf.shape)``, row
      ``t`` the parameters after ``t`` steps.
    """
    alpha_k = alpha if callable(alpha) else (lambda k: alpha)
    theta = [np.array(x, dtype=np.float64) for x in theta]
    m = [np.zeros_like(x) for x in theta]
    v = [np.zeros_like(x) for x in theta]
    trajectory = [[x.copy() for x in theta]]
    rho_inf = 2 / (1 - beta_2) - 1
    for k, g in enumerate(grads):
        t = k + 1
        rho_t = rho_inf - 2 * t * beta_2**t / (1 - beta_2**t)
        for i in range(len(theta)):
            g_i = np.asarray(g[i], dtype=np.float64)
            v[i] = beta_2 * v[i] + (1 - beta_2) * g_i**2
            m[i] = beta_1 * m[i] + (1 - beta_1) * g_i
            if nesterov:
                m_hat = beta_1 * m[i] / (1 - beta_1 ** (t + 1)) + (1 - beta_1) * g_i / (
                    1 - beta_1**t
                )
            else:
                m_hat = m[i] / (1 - beta_1**t)
            if rho_t > threshold:
                if delta_on_uncorrected_root:
                    l_t = np.sqrt(1 - beta_2**t) / (np.sqrt(v[i]) + delta)
                else:
                    l_t = 1 / (np.sqrt(v[i] / (1 - beta_2**t) + delta_root) + delta)
                r_t = np.sqrt(
                    (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
                )
                theta[i] = theta[i] - alpha_k(k) * r_t * m_hat * l_t
            elif below_threshold == "momentum":
                theta[i] = theta[i] - alpha_k(k) * m_hat
        trajectory.append([x.copy() for x in theta])
    return [np.stack(column) for column in zip(*trajectory, strict=True)]


def sma_length(beta_2, t):
    """``rho_t`` in float64, for tests that check where the threshold is crossed."""
    rho_inf = 2 / (1 - beta_2) - 1
    return rho_inf - 2 * t * beta_2**t / (1 - beta_2**t)
