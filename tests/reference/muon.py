"""Muon: Jordan et al. (2024), Muon: an optimizer for hidden layers in neural networks
(kellerjordan.github.io/posts/muon and github.com/KellerJordan/Muon).

Symbols: ``eta`` the learning rate, ``beta`` the momentum decay, ``M`` the
momentum, ``B`` the matrix fed to Newton-Schulz, ``(a, b, c)`` its quintic
coefficients, ``k`` its steps, ``O`` the result, ``lambda`` the decoupled weight
decay. A matrix leaf is ``(fan_in, fan_out)``. Leaves that are not matrices take
AdamW (Loshchilov & Hutter 2019, Alg. 2), the fallback Jordan et al. advise for
biases and gains. Returns the trajectory, one float64 array per leaf, row ``t``
after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate

STANDARD = (3.4445, -4.7750, 2.0315)


def newton_schulz(B, coeffs=STANDARD, steps=5, eps=1e-8):
    """``X_0 = B / (||B||_F + eps)``; ``X <- a X + b (X X^T) X + c (X X^T)^2 X``, k times.

    Run on the wide orientation (``B^T`` when ``B`` is tall, transposed back), so
    ``X X^T`` is the smaller Gram matrix; the polynomial commutes with transposition.
    """
    tall = B.shape[0] > B.shape[1]
    X = B.T if tall else B
    X = X / (np.linalg.norm(X) + eps)
    a, b, c = coeffs
    for _ in range(steps):
        A = X @ X.T
        X = a * X + b * A @ X + c * A @ A @ X
    return X.T if tall else X


def muon(
    theta,
    grads,
    eta,
    beta=0.95,
    lam=0.0,
    *,
    matrix,
    coeffs=STANDARD,
    steps=5,
    eps=1e-8,
    nesterov=True,
    bias_correction=True,
    consistent_rms=None,
    adam_b1=0.9,
    adam_b2=0.999,
    num_steps=None,
):
    """One step for a matrix leaf (``matrix[i]`` True)::

        M_t = beta M_{t-1} + (1 - beta) G_t
        B_t = beta M_t + (1 - beta) G_t            (Nesterov; else B_t = M_t)
        O_t = NS(B_t)
        W_t = W_{t-1} - eta (s O_t + lambda W_{t-1})

    with ``s = sqrt(max(1, fan_out / fan_in))`` (Jordan et al.) or
    ``consistent_rms * sqrt(max(fan_in, fan_out))`` (Liu et al. 2025, Sec. 2.2).
    ``bias_correction=True`` (Optax's form, not the authors') divides the two
    terms of ``B_t`` by ``1 - beta^(t+1)`` and ``1 - beta^t`` (``M_t`` by
    ``1 - beta^t`` without Nesterov). Other leaves: Adam with ``eps`` outside
    the root, Nesterov's form ``b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)``
    when ``nesterov`` (Dozat 2016, as Optax), no decay.
    """
    gradients, eta_k = Gradients(grads, num_steps), rate(eta)
    theta = as_float64(theta)
    M = [np.zeros_like(w) for w in theta]
    V = [np.zeros_like(w) for w in theta]
    trajectory = Trajectory(theta)
    for k in range(gradients.num_steps):
        t = k + 1
        G = gradients(k, theta)
        for i, W in enumerate(theta):
            if matrix[i]:
                M[i] = beta * M[i] + (1 - beta) * G[i]
                if bias_correction and nesterov:
                    B = beta * M[i] / (1 - beta ** (t + 1)) + (1 - beta) * G[i] / (1 - beta**t)
                elif bias_correction:
                    B = M[i] / (1 - beta**t)
                else:
                    B = beta * M[i] + (1 - beta) * G[i] if nesterov else M[i]
                O = newton_schulz(B, coeffs, steps, eps)  # noqa: E741
                fan_in, fan_out = W.shape
                if consistent_rms is None:
                    s = np.sqrt(max(1.0, fan_out / fan_in))
                else:
                    s = consistent_rms * np.sqrt(max(fan_in, fan_out))
                theta[i] = W - eta_k(k) * (s * O + lam * W)
            else:
                M[i] = adam_b1 * M[i] + (1 - adam_b1) * G[i]
                V[i] = adam_b2 * V[i] + (1 - adam_b2) * G[i] ** 2
                if nesterov:
                    m_hat = adam_b1 * M[i] / (1 - adam_b1 ** (t + 1)) + (1 - adam_b1) * G[i] / (
                        1 - adam_b1**t
                    )
                else:
                    m_hat = M[i] / (1 - adam_b1**t)
                v_hat = V[i] / (1 - adam_b2**t)
                theta[i] = W - eta_k(k) * m_hat / (np.sqrt(v_hat) + eps)
        trajectory.record(theta)
    return trajectory.stacked()
