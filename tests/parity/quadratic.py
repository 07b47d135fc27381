"""The float64 problem several parity files share: a 12-D quadratic, condition 100.

Imported only by ``tests/parity`` modules, after their ``importorskip("torch")``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

import gradtx

STEPS = 300


def max_deviation(make_gradtx, make_torch, steps: int = STEPS) -> float:
    """The largest ``|w - w_torch|`` over ``steps`` steps side by side (call under x64).

    ``make_torch(p)`` builds the torch optimizer for the one float64 tensor ``p``;
    both minimise ``x^T H x / 2`` with ``H = diag(logspace(0, 2, 12))`` from the
    same start, gradtx through one jitted step.
    """
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=12)
    hessian = np.diag(np.logspace(0, 2, 12))
    p = torch.tensor(x0.copy(), requires_grad=True, dtype=torch.float64)
    opt = make_torch(p)
    tx = make_gradtx()
    w = jnp.asarray(x0)
    state = tx.init(w)
    step = jax.jit(lambda g, s, w: tx.update(g, s, w))
    worst = 0.0
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * p @ torch.tensor(hessian) @ p).backward()
        opt.step()
        updates, state = step(jnp.asarray(hessian @ np.asarray(w)), state, w)
        w = gradtx.apply_updates(w, updates)
        worst = max(worst, float(np.max(np.abs(np.asarray(w) - p.detach().numpy()))))
    return worst
