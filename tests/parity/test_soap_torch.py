"""gradtx's SOAP against ``pytorch_optimizer.SOAP`` (the authors' update, in PyTorch).

Collected only with ``-m parity``. 300 float64 steps on four leaves (a square
matrix preconditioned on both sides, a matrix with one side above
``max_precond_dim``, a vector, a 3-d tensor) of a quadratic with noise:
``g = h * w + noise_k``.

``pytorch_optimizer`` runs its QR refresh in float32 whatever the parameters'
dtype: gradtx's ``qr_dtype=jnp.float32``. The two float32 QRs (LAPACK builds)
round differently, so those runs agree to about 1e-6; with the torch module's
float32 cast turned into float64 (``float64_qr``) and gradtx's default
``qr_dtype``, they agree to rounding. The torch code decays the weights after
the step and not on the first call, where gradtx decays ``theta_{t-1}`` on every
call (see :func:`gradtx.soap`): the decay case is compared both ways.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
pytestmark = pytest.mark.parity

STEPS = 300
SHAPES = [(6, 6), (4, 12), (5,), (3, 4, 5)]
# pytorch_optimizer's merge_small_dims is not the authors' (a shape that merges
# into one dimension becomes [1], and it merges vectors too): only shapes on
# which the two agree, (2, 3, 6) -> (6, 6) among them, run with merge_dims.
MERGE_SHAPES = [(6, 6), (4, 12), (3, 4, 5), (2, 3, 6)]
LR = 3e-3

CASES = {
    "defaults, max dim 8, no decay": (
        dict(weight_decay=0.0, max_precond_dim=8),
        dict(weight_decay=0.0, max_precondition_dim=8),
        SHAPES,
    ),
    "b 0.9/0.99, shampoo 0.8, f 3, uncorrected": (
        dict(
            b1=0.9,
            b2=0.99,
            shampoo_beta=0.8,
            eps=1e-6,
            weight_decay=0.0,
            precondition_frequency=3,
            max_precond_dim=8,
            correct_bias=False,
        ),
        dict(
            betas=(0.9, 0.99),
            shampoo_beta=0.8,
            eps=1e-6,
            weight_decay=0.0,
            precondition_frequency=3,
            max_precondition_dim=8,
            correct_bias=False,
        ),
        SHAPES,
    ),
    "merge_dims, max dim 8": (
        dict(weight_decay=0.0, max_precond_dim=8, merge_dims=True),
        dict(weight_decay=0.0, max_precondition_dim=8, merge_dims=True),
        MERGE_SHAPES,
    ),
}


class _Float64QR:
    """The ``torch`` module as pytorch_optimizer's soap.py sees it, with ``float32`` read
    as ``float64`` (its only use there is the cast before ``torch.linalg.qr``)."""

    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


@pytest.fixture
def float64_qr(monkeypatch):
    from pytorch_optimizer.optimizer import soap as torch_soap

    monkeypatch.setattr(torch_soap, "torch", _Float64QR())


def max_deviation(gradtx_kwargs, torch_kwargs, shapes, *, authors_decay=0.0) -> float:
    """Largest ``|w - w_torch|`` over the leaves and the steps.

    ``authors_decay``: run gradtx without decay and multiply the params by
    ``1 - lr * authors_decay`` after each step but the first (the torch order).
    """
    rng = np.random.default_rng(0)
    x0 = [rng.normal(size=s) for s in shapes]
    curvature = [np.exp(rng.uniform(0, 2, size=s)) for s in shapes]
    noise = [[rng.normal(size=s) for s in shapes] for _ in range(STEPS)]
    ps = [torch.tensor(x.copy(), dtype=torch.float64) for x in x0]
    opt = pytorch_optimizer.SOAP(ps, lr=LR, **torch_kwargs)
    tx = gradtx.soap(LR, **gradtx_kwargs)
    w = [jnp.asarray(x) for x in x0]
    state = tx.init(w)
    step = jax.jit(lambda g, s, w: tx.update(g, s, w))
    worst = 0.0
    for k in range(STEPS):
        for p, h, n in zip(ps, curvature, noise[k], strict=True):
            p.grad = torch.tensor(h * p.numpy() + n)
        opt.step()
        grads = [
            jnp.asarray(h * np.asarray(x) + n)
            for x, h, n in zip(w, curvature, noise[k], strict=True)
        ]
        updates, state = step(grads, state, w)
        w = gradtx.apply_updates(w, updates)
        if k > 0 and authors_decay:
            w = [x * (1 - LR * authors_decay) for x in w]
        for x, p in zip(w, ps, strict=True):
            worst = max(worst, float(np.max(np.abs(np.asarray(x) - p.numpy()))))
    return worst


@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_qr_matches_pytorch_optimizer(name):
    gradtx_kwargs, torch_kwargs, shapes = CASES[name]
    with jax.enable_x64(True):
        worst = max_deviation({**gradtx_kwargs, "qr_dtype": jnp.float32}, torch_kwargs, shapes)
    print(f"{name} (QR in float32 both sides): max |w - w_torch| = {worst:.2e}")
    assert worst < 5e-6  # measured 3e-7 to 1e-6: two float32 QRs, ~30 refreshes


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_qr_matches_pytorch_optimizer(name, float64_qr):
    gradtx_kwargs, torch_kwargs, shapes = CASES[name]
    with jax.enable_x64(True):
        worst = max_deviation(gradtx_kwargs, torch_kwargs, shapes)
    print(f"{name} (QR in float64 both sides): max |w - w_torch| = {worst:.2e}")
    assert worst < 1e-12


def test_weight_decay_differs_by_its_order_only(float64_qr):
    torch_kwargs = dict(weight_decay=0.01, max_precondition_dim=8)
    with jax.enable_x64(True):
        ours = max_deviation(dict(weight_decay=0.01, max_precond_dim=8), torch_kwargs, SHAPES)
        emulated = max_deviation(
            dict(weight_decay=0.0, max_precond_dim=8), torch_kwargs, SHAPES, authors_decay=0.01
        )
    print(f"decay 0.01: gradtx's order {ours:.2e}, the torch order emulated {emulated:.2e}")
    assert 1e-6 < ours < 1e-3  # lr * wd = 3e-5 per step, mostly from the first call
    assert emulated < 1e-12
