"""Layer-wise trust ratios: LARS and LAMB.

LARS: You, Gitman & Ginsburg (2017), Large Batch Training of Convolutional
Networks, Alg. 1 (symbols ``gamma_t`` the global rate, ``eta`` the trust
coefficient, ``beta`` the weight decay, ``m`` the momentum, ``lambda^l`` the
local rate of layer ``l``). LAMB: You et al. (2020), Large Batch Optimization for
Deep Learning, Alg. 2 (``eta_t``, ``beta_1, beta_2``, ``epsilon``, ``lambda``,
``phi`` the identity). A layer is a leaf. Each returns the trajectory, one float64
array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def _ratio(numerator, denominator):
    """``numerator / denominator``, or 1 where either is 0 (the layer is not rescaled)."""
    if numerator == 0 or denominator == 0:
        return 1.0
    return numerator / denominator


def lars(
    w,
    grads,
    gamma,
    eta,
    beta=0.0,
    m=0.9,
    *,
    epsilon=0.0,
    denominator="paper",
    nesterov=False,
    decay_mask=None,
    ratio_mask=None,
    num_steps=None,
):
    """Alg. 1, for each layer ``l``::

        g^l = grad L(w^l)
        lambda^l = eta ||w^l|| / (||g^l|| + beta ||w^l||)
        v^l <- m v^l + gamma_t lambda^l (g^l + beta w^l)
        w^l <- w^l - v^l

    ``denominator="decayed"`` divides by ``||g^l + beta w^l|| + epsilon`` instead
    (Optax's form; equal to the paper's at ``beta = 0``). ``nesterov`` steps by
    ``gamma_t lambda^l (g^l + beta w^l) + m v^l`` (the look-ahead). ``decay_mask``
    and ``ratio_mask`` (one bool per leaf) turn off the decay or the local rate
    (``lambda^l = 1``) on a layer.
    """
    gradients, gamma_t = Gradients(grads, num_steps), rate(gamma)
    w = as_float64(w)
    n = len(w)
    decay_mask = [True] * n if decay_mask is None else list(decay_mask)
    ratio_mask = [True] * n if ratio_mask is None else list(ratio_mask)
    v = [np.zeros_like(w_l) for w_l in w]
    trajectory = Trajectory(w)
    for k in range(gradients.num_steps):
        g = gradients(k, w)
        for layer in range(n):
            b = beta if decay_mask[layer] else 0.0
            decayed = g[layer] + b * w[layer]
            if not ratio_mask[layer]:
                local = 1.0
            elif denominator == "paper":
                w_norm = np.linalg.norm(w[layer])
                local = eta * _ratio(w_norm, np.linalg.norm(g[layer]) + b * w_norm)
            else:
                norm = np.linalg.norm(decayed)
                local = 1.0 if norm == 0 else eta * _ratio(np.linalg.norm(w[layer]), norm + epsilon)
            step = gamma_t(k) * local * decayed
            v[layer] = m * v[layer] + step
            w[layer] = w[layer] - (step + m * v[layer] if nesterov else v[layer])
        trajectory.record(w)
    return trajectory.stacked()


def lamb(
    x,
    grads,
    eta,
    beta_1,
    beta_2,
    epsilon,
    lam=0.0,
    *,
    epsilon_root=0.0,
    decay_mask=None,
    debias=True,
    decay_outside=False,
    epsilon_in_ratio=False,
    phi_max=None,
    num_steps=None,
):
    """Alg. 2, for each layer ``i``::

        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2
        m_t = m_t / (1 - beta_1^t);  v_t = v_t / (1 - beta_2^t)
        r_t = m_t / (sqrt(v_t) + epsilon)
        x_{t+1} = x_t - eta_t phi(||x_t||) / ||r_t + lambda x_t|| (r_t + lambda x_t)

    with ``phi(z) = z``; the ratio is 1 where either norm is 0. ``epsilon_root``
    is added inside the root (0 in the paper); ``decay_mask`` (one bool per leaf)
    turns off the decay on a layer.

    The PyTorch forms (cybertronai's ``pytorch-lamb``, ``pytorch_optimizer.Lamb``):
    ``debias=False`` skips the two corrections (``r_t = m_t / (sqrt(v_t) +
    epsilon)``); ``debias="step"`` skips them and divides the step by ``1 -
    beta_1^t`` (``pytorch_optimizer``); ``decay_outside`` first sets ``x_t <- (1
    - eta_t lambda) x_t`` and then steps by ``eta_t phi(||x_t||) / ||r_t|| r_t``
    from that ``x_t``; ``epsilon_in_ratio`` divides by ``||.|| + epsilon``;
    ``phi_max`` makes ``phi(z) = min(z, phi_max)``.
    """
    gradients, eta_t, lam_t = Gradients(grads, num_steps), rate(eta), rate(lam)
    x = as_float64(x)
    decay_mask = [True] * len(x) if decay_mask is None else list(decay_mask)
    m = [np.zeros_like(x_i) for x_i in x]
    v = [np.zeros_like(x_i) for x_i in x]
    trajectory = Trajectory(x)
    for k in range(gradients.num_steps):
        t = k + 1
        g = gradients(k, x)
        for i in range(len(x)):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
            v[i] = beta_2 * v[i] + (1 - beta_2) * g[i] ** 2
            if debias is True:
                m_hat = m[i] / (1 - beta_1**t)
                v_hat = v[i] / (1 - beta_2**t)
            else:
                m_hat, v_hat = m[i], v[i]
            r = m_hat / (np.sqrt(v_hat + epsilon_root) + epsilon)
            lam_i = lam_t(k) if decay_mask[i] else 0.0
            if decay_outside:
                x[i] = (1 - eta_t(k) * lam_i) * x[i]
                u = r
            else:
                u = r + lam_i * x[i]
            x_norm = np.linalg.norm(x[i])
            if phi_max is not None:
                x_norm = min(x_norm, phi_max)
            u_norm = np.linalg.norm(u)
            ratio = (
                1.0
                if u_norm == 0
                else _ratio(x_norm, u_norm + (epsilon if epsilon_in_ratio else 0.0))
            )
            step = eta_t(k) / (1 - beta_1**t) if debias == "step" else eta_t(k)
            x[i] = x[i] - step * ratio * u
        trajectory.record(x)
    return trajectory.stacked()
