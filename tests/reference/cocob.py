"""COCOB-Backprop: Orabona & Tommasi (2017), Training Deep Networks without Learning
Rates Through Coin Betting, Alg. 2.

Paper symbols, per coordinate ``i``: ``w_1`` the initial weights, ``L`` the largest
observed gradient magnitude, ``G`` the sum of magnitudes, ``Reward`` the wealth
won, ``theta`` the sum of the negative gradients. Returns the trajectory, one
float64 array per leaf, row ``t`` after ``t`` steps.
"""

from __future__ import annotations

import numpy as np

from ._common import Gradients, Trajectory, as_float64, rate


def cocob_backprop(x, grads, alpha=100.0, L0=1e-8, lr=1.0, wd=0.0, num_steps=None):
    """Alg. 2, with the negative gradient ``c = -(lr_t (grad_t + wd w_t))``::

        L      = max(L, |c|);   G = G + |c|
        Reward = max(Reward + (w_t - w_1) c, 0)
        theta  = theta + c
        w_{t+1} = w_1 + theta / (L max(G + L, alpha L)) (L + Reward)

    ``L0`` is ``L_0`` (the paper's 0 divides by zero for a zero first gradient; the
    authors' code starts at 1e-8). ``lr`` and ``wd`` are Optax's composition: they
    scale and decay the gradient fed to the bets.
    """
    gradients = Gradients(grads, num_steps)
    lr = rate(lr)
    w = as_float64(x)
    w_1 = [w_i.copy() for w_i in w]
    big_l = [np.full_like(w_i, L0) for w_i in w]
    big_g = [np.zeros_like(w_i) for w_i in w]
    reward = [np.zeros_like(w_i) for w_i in w]
    theta = [np.zeros_like(w_i) for w_i in w]
    trajectory = Trajectory(w)
    for t in range(gradients.num_steps):
        grad = gradients(t, w)
        for i in range(len(w)):
            c = -lr(t) * (grad[i] + wd * w[i])
            big_l[i] = np.maximum(big_l[i], np.abs(c))
            big_g[i] = big_g[i] + np.abs(c)
            reward[i] = np.maximum(reward[i] + (w[i] - w_1[i]) * c, 0)
            theta[i] = theta[i] + c
            bet = theta[i] / (big_l[i] * np.maximum(big_g[i] + big_l[i], alpha * big_l[i]))
            w[i] = w_1[i] + bet * (big_l[i] + reward[i])
        trajectory.record(w)
    return trajectory.stacked()
