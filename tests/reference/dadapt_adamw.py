"""D-Adaptation Adam: Defazio & Mishchenko (2023), Learning-Rate-Free Learning by
D-Adaptation, Alg. 4 (D-Adapted Adam), with decoupled weight decay.

Paper symbols: ``d_k`` the distance lower bound (``d_0`` given), ``gamma_k`` the
learning rate, ``m, v`` Adam's moments, ``s_k`` the discounted sum of the steps'
gradients, ``r_k`` the weighted numerator, ``A_k = sqrt(v_k) + eps``. Returns the
trajectory, one float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def dadapt_adam(
    x,
    grads,
    lr=1.0,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    d0=1e-6,
    weight_decay=0.0,
    bias_correction=False,
    decoupled=True,
    growth_rate=np.inf,
    num_steps=None,
):
    """Alg. 4, the whole tree as one vector::

        r = sqrt(b2) r + (1 - sqrt(b2)) gamma_k d_k <g_k, s_k / A_k>
        m = b1 m + (1 - b1) gamma_k d_k g_k;   v = b2 v + (1 - b2) g_k^2
        s = sqrt(b2) s + (1 - sqrt(b2)) gamma_k d_k g_k
        d_{k+1} = max(d_k, r / ((1 - sqrt(b2)) ||s||_1))
        x_{k+1} = x_k - m / A_{k+1} - weight_decay gamma_k d_k x_k

    ``bias_correction=True`` multiplies ``gamma_k`` by
    ``sqrt(1 - b2^{k+1}) / (1 - b1^{k+1})`` (Optax's form). ``decoupled=False``
    is L2 regularisation (the authors' code's default): ``g_k <- g_k +
    weight_decay x_k`` first, and no decay in the step. A finite
    ``growth_rate`` caps the estimate: ``d_{k+1} = max(d_k, min(d_hat,
    growth_rate d_k))``.
    """
    gradients = Gradients(grads, num_steps)
    lr = rate(lr)
    sb2 = np.sqrt(b2)
    x = as_float64(x)
    m = [np.zeros_like(x_i) for x_i in x]
    v = [np.zeros_like(x_i) for x_i in x]
    s = [np.zeros_like(x_i) for x_i in x]
    r, d = 0.0, d0
    trajectory = Trajectory(x)
    for k in range(gradients.num_steps):
        g = gradients(k, x)
        if not decoupled:
            g = [g_i + weight_decay * x_i for g_i, x_i in zip(g, x, strict=True)]
        gamma = lr(k)
        if bias_correction:
            gamma *= np.sqrt(1 - b2 ** (k + 1)) / (1 - b1 ** (k + 1))
        inner = sum(np.sum(g[i] * s[i] / (np.sqrt(v[i]) + eps)) for i in range(len(x)))
        r = sb2 * r + (1 - sb2) * gamma * d * inner
        for i in range(len(x)):
            m[i] = b1 * m[i] + (1 - b1) * gamma * d * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            s[i] = sb2 * s[i] + (1 - sb2) * gamma * d * g[i]
        l1 = sum(np.sum(np.abs(s_i)) for s_i in s)
        d_next = max(d, min(r / ((1 - sb2) * l1), growth_rate * d)) if l1 > 0 else d
        lam = weight_decay if decoupled else 0.0
        for i in range(len(x)):
            x[i] = x[i] - m[i] / (np.sqrt(v[i]) + eps) - lam * gamma * d * x[i]
        d = d_next
        trajectory.record(x)
    return trajectory.stacked()
