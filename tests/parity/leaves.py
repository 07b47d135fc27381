"""A float64 problem with several leaves, shared by parity files that compare whole
trajectories: a quadratic of condition number 100 over a tall matrix, a wide
matrix, a vector and a scalar (45 coordinates).

Imported only by ``tests/parity`` modules, after their ``importorskip("torch")``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import torch

import gradtx

STEPS = 300
SHAPES = [(6, 4), (3, 5), (5,), ()]


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """JAX's x64 mode and torch's float64 default dtype (some torch code makes its
    scalars in the default dtype), both restored after."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with jax.enable_x64(True):
            yield
    finally:
        torch.set_default_dtype(before)


def problem(seed: int = 0):
    """``(x0, curvature, target)``, each a list of numpy arrays shaped as ``SHAPES``."""
    rng = np.random.default_rng(seed)
    sizes = [int(np.prod(s)) for s in SHAPES]
    curv = np.split(np.logspace(0, 2, sum(sizes)), np.cumsum(sizes)[:-1])
    curv = [np.reshape(rng.permutation(c), s) for c, s in zip(curv, SHAPES, strict=True)]
    x0 = [rng.normal(size=s) for s in SHAPES]
    target = [rng.normal(size=s) for s in SHAPES]
    return x0, curv, target


def gradtx_loss_and_grad(w, curv, target):
    """The loss ``sum c (x - t)^2 / 2`` and its gradient, for gradtx's side."""
    value = sum(0.5 * jnp.sum(c * (x - t) ** 2) for x, c, t in zip(w, curv, target, strict=True))
    return value, [c * (x - t) for x, c, t in zip(w, curv, target, strict=True)]


def torch_loss(ps, curv, target):
    """The same loss for torch's side (its ``backward`` gives the gradient)."""
    return sum(
        0.5 * (torch.tensor(c) * (p - torch.tensor(t))).mul(p - torch.tensor(t)).sum()
        for p, c, t in zip(ps, curv, target, strict=True)
    )


def plain_step(opt, loss):
    del loss
    opt.step()


def trajectory_deviation(
    make_gradtx: Callable,
    make_torch: Callable,
    torch_step: Callable = plain_step,
    steps: int = STEPS,
    start: tuple | None = None,
) -> tuple[float, float]:
    """``(worst, moved)``: the largest ``|w - w_torch|`` over ``steps`` steps run side by
    side (call under x64), and how far gradtx's params moved from the start.

    ``make_torch(ps)`` builds the torch optimizer for the list of float64 leaves
    ``ps``; ``torch_step(opt, loss)`` takes its step after ``loss.backward()``.
    gradtx's ``update`` gets the params and ``value=`` the loss. ``start`` is a
    problem ``(x0, curvature, target)`` of one's own (default :func:`problem`).
    """
    x0, curv, target = problem() if start is None else start
    ps = [torch.tensor(x.copy(), dtype=torch.float64, requires_grad=True) for x in x0]
    opt = make_torch(ps)
    tx = make_gradtx()
    w = [jnp.asarray(x) for x in x0]
    state = tx.init(w)
    step = jax.jit(lambda g, s, w, v: tx.update(g, s, w, value=v))
    worst = 0.0
    for _ in range(steps):
        opt.zero_grad()
        loss = torch_loss(ps, curv, target)
        loss.backward()
        torch_step(opt, loss.detach())
        value, g = gradtx_loss_and_grad(w, curv, target)
        updates, state = step(g, state, w, value)
        w = gradtx.apply_updates(w, updates)
        for a, p in zip(w, ps, strict=True):
            worst = max(worst, float(np.max(np.abs(np.asarray(a) - p.detach().numpy()))))
    moved = max(float(np.max(np.abs(np.asarray(a) - x))) for a, x in zip(w, x0, strict=True))
    return worst, moved
