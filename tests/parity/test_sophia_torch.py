"""gradtx's Sophia against pytorch_optimizer's ``SophiaH``: whole float64 trajectories.

Collected only by ``python -m pytest -m parity tests/parity``. ``SophiaH(lr,
betas, p, eps, weight_decay)`` steps ``p <- p (1 - lr wd) - lr clip(m / max(h, eps),
p)`` with an unbiased momentum and the Hessian average refreshed before the step
(the paper's Alg. 3): gradtx's ``sophia`` with ``gamma=1``, ``clip_threshold=p``,
``bias_correction=False`` and ``refresh_hessian_first=True``. The Hessian diagonal
is the exact one on both sides: the loss is separable, so gradtx's Hutchinson
estimate ``u * (H u)`` equals it, and SophiaH takes it through ``step(hessian=...)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_optimizer")
pytestmark = pytest.mark.parity

STEPS = 300
RNG = np.random.default_rng(0)
SHAPES = [(4, 3), (5,), ()]
X0 = [RNG.normal(size=s) for s in SHAPES]
CURV = [RNG.uniform(0.1, 10.0, size=s) for s in SHAPES]
TARGET = [RNG.normal(size=s) for s in SHAPES]
QUART = 0.3


def _loss(xs, lib):
    return sum(
        lib.sum(0.5 * lib.asarray(c) * (x - lib.asarray(t)) ** 2 + 0.25 * QUART * x**4)
        for x, c, t in zip(xs, CURV, TARGET, strict=True)
    )


CASES = {
    "default-like (k=10)": dict(lr=0.06, betas=(0.96, 0.99), p=0.01, eps=1e-12, wd=0.0, k=10),
    "decay, k=3, clip 1": dict(lr=0.05, betas=(0.9, 0.95), p=1.0, eps=1e-12, wd=0.01, k=3),
    "k=1, clip 0.2": dict(lr=0.1, betas=(0.5, 0.9), p=0.2, eps=1e-6, wd=0.1, k=1),
}


def max_deviation(lr, betas, p, eps, wd, k):
    from pytorch_optimizer import SophiaH

    params = [torch.tensor(x.copy(), dtype=torch.float64, requires_grad=True) for x in X0]
    opt = SophiaH(params, lr=lr, betas=betas, p=p, eps=eps, weight_decay=wd, update_period=k)
    tx = gradtx.sophia(
        lr, betas[0], betas[1], eps, wd, None, 1.0, p, k,
        bias_correction=False, refresh_hessian_first=True,
    )  # fmt: skip
    w = [jnp.asarray(x) for x in X0]
    state = tx.init(w)
    obj_fn = lambda xs: _loss(xs, jnp)  # noqa: E731
    step = jax.jit(lambda g, s, w: tx.update(g, s, w, obj_fn=obj_fn))
    worst = 0.0
    for t in range(STEPS):
        opt.zero_grad()
        _loss(params, torch).backward()
        if t % k == 0:
            with torch.no_grad():
                hessian = [
                    torch.tensor(c) + 3 * QUART * x**2 for x, c in zip(params, CURV, strict=True)
                ]
            opt.step(hessian=hessian)
        else:
            opt.step()
        updates, state = step(jax.grad(obj_fn)(w), state, w)
        w = gradtx.apply_updates(w, updates)
        for a, b in zip(w, params, strict=True):
            worst = max(worst, float(np.max(np.abs(np.asarray(a) - b.detach().numpy()))))
    return worst


@pytest.mark.parametrize("name", sorted(CASES))
def test_sophia_matches_pytorch_optimizer_sophiah(name):
    with jax.enable_x64(True):
        worst = max_deviation(**CASES[name])
    print(f"{name}: largest deviation {worst:.3e}")
    assert worst < 1e-10
