"""gradtx's Shampoo against pytorch_optimizer's ``Shampoo``: whole float64 trajectories.

Collected only by ``python -m pytest -m parity tests/parity``. pytorch_optimizer's
``Shampoo`` is Gupta et al.'s Alg. 1 on whole tensors: ``L_0 = eps I``,
``L += G G^T``, ``R += G^T G``, the step ``L^{-1/4} G R^{-1/4}`` with the roots
taken by an SVD every ``preconditioning_compute_steps`` steps, no blocks and no
grafting. gradtx's ``shampoo`` coincides with it for matrices with ``b1=0``,
``b2=1``, ``grafting=None``, roots every step from step 1 (``matrix_epsilon`` =
``matrix_eps``: ``eps I + sum`` on both sides); its decoupled decay is
``weight_decouple=True``. Its momentum (a blend of the raw gradient with the last
preconditioned step, fed into the statistics) has no counterpart: ``momentum=0``.

Blocks: gradtx's (7, 5) leaf with ``block_size=3`` is cut into 3 x 2 blocks, each
with its own ``L``, ``R``; on the torch side each block is its own parameter (the
loss is separable per entry, so the gradients agree). The vector leaves are left
out: pytorch_optimizer preconditions a vector with a full ``L^{-1/2}``, gradtx
takes the grafted step.
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
BLOCK = 3
RNG = np.random.default_rng(0)
SHAPES = [(7, 5), (4, 3)]
X0 = [RNG.normal(size=s) for s in SHAPES]
CURV = [RNG.uniform(0.1, 10.0, size=s) for s in SHAPES]
TARGET = [RNG.normal(size=s) for s in SHAPES]
QUART = 0.3


def _loss_terms(x, c, t, lib):
    return lib.sum(0.5 * c * (x - t) ** 2 + 0.25 * QUART * x**4)


def _loss(xs):
    return sum(
        _loss_terms(x, jnp.asarray(c), jnp.asarray(t), jnp)
        for x, c, t in zip(xs, CURV, TARGET, strict=True)
    )


def _slices(size):
    return [slice(s, min(s + BLOCK, size)) for s in range(0, size, BLOCK)]


def _torch_blocks():
    """Each leaf cut into its blocks (row by row): (x0, curvature, target) per block."""
    blocks = []
    for x, c, t in zip(X0, CURV, TARGET, strict=True):
        for rows in _slices(x.shape[0]):
            for cols in _slices(x.shape[1]):
                blocks.append(tuple(a[rows, cols].copy() for a in (x, c, t)))
    return blocks


def _torch_leaves(params):
    """The torch blocks put back into the leaves' shapes."""
    out, k = [], 0
    for x in X0:
        leaf = np.zeros_like(x)
        for rows in _slices(x.shape[0]):
            for cols in _slices(x.shape[1]):
                leaf[rows, cols] = params[k].detach().numpy()
                k += 1
        out.append(leaf)
    return out


CASES = {
    "eigh, eps 1e-6": dict(lr=0.05, eps=1e-6, wd=0.0, method="eigh"),
    "eigh, eps 1e-3, decoupled decay": dict(lr=0.1, eps=1e-3, wd=0.05, method="eigh"),
    "coupled newton, eps 1e-6": dict(lr=0.05, eps=1e-6, wd=0.0, method="newton"),
}


def max_deviation(lr, eps, wd, method):
    from pytorch_optimizer import Shampoo

    blocks = _torch_blocks()
    params = [torch.tensor(b[0], dtype=torch.float64, requires_grad=True) for b in blocks]
    opt = Shampoo(
        params, lr=lr, momentum=0.0, weight_decay=wd, weight_decouple=True,
        preconditioning_compute_steps=1, matrix_eps=eps,
    )  # fmt: skip
    tx = gradtx.shampoo(
        lr, BLOCK, b1=0.0, b2=1.0, matrix_epsilon=eps, weight_decay=wd, grafting=None,
        inverse_root_method=method,
    )  # fmt: skip
    with jax.enable_x64(True):
        w = [jnp.asarray(x) for x in X0]
        state = tx.init(w)
        step = jax.jit(lambda w, s: tx.update(jax.grad(_loss)(w), s, w))
        worst = moved = 0.0
        for _ in range(STEPS):
            opt.zero_grad()
            loss = sum(
                _loss_terms(p, torch.tensor(c), torch.tensor(t), torch)
                for p, (_, c, t) in zip(params, blocks, strict=True)
            )
            loss.backward()
            opt.step()
            updates, state = step(w, state)
            w = gradtx.apply_updates(w, updates)
            theirs = _torch_leaves(params)
            for a, b, x0 in zip(w, theirs, X0, strict=True):
                worst = max(worst, float(np.max(np.abs(np.asarray(a) - b))))
                moved = max(moved, float(np.max(np.abs(b - x0))))
    return worst, moved


# Measured largest deviations over 300 steps (printed with -s), params moving up
# to 1.5 and 2.2: eigh against torch's SVD, 1.4e-11 with eps 1e-6 (the first steps'
# L is rank-deficient, eigenvalues eps beside O(1) ones) and 7.0e-13 with eps
# 1e-3; coupled Newton 1.4e-8 (its stopping rule, max |M - I| <= 1e-6).
TOL = {"eigh": 1e-10, "newton": 1e-5}


@pytest.mark.parametrize("name", sorted(CASES))
def test_trajectory_matches_pytorch_optimizer_shampoo(name):
    case = CASES[name]
    worst, moved = max_deviation(**case)
    print(f"{name}: largest deviation {worst:.3g} (params moved up to {moved:.3g})")
    assert moved > 0.1
    assert worst < TOL[case["method"]], worst
