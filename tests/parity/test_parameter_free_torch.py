"""gradtx's parameter-free methods against their PyTorch implementations
(``pytorch_optimizer``): float64 trajectories, 300 steps, the keywords that select
the PyTorch form.

Collected only by ``python -m pytest -m parity tests/parity``. The quadratic has
condition number 100 and three leaves (a matrix, a vector and a scalar). Each case
states the largest parameter deviation it allows, and why where it is not ~1e-12.
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
SHAPES = [(3, 4), (5,), ()]

# pytorch_optimizer's Prodigy keeps r and ||s||_1 in tensors of torch's default
# dtype, whatever the params' dtype: the tests set it to float64 (with float32 there,
# d is a float32 number and the runs part by 1e-6 to 0.2 over 300 steps).
CASES = {
    "prodigy (no bias correction)": (
        lambda: gradtx.prodigy(bias_correction=False),
        lambda ps: pytorch_optimizer.Prodigy(ps),
        1e-10,
    ),
    "prodigy (bias correction, decay, safeguard, lr 0.5)": (
        lambda: gradtx.prodigy(0.5, weight_decay=0.1, safeguard_warmup=True, estim_lr0=1e-3),
        lambda ps: pytorch_optimizer.Prodigy(
            ps, lr=0.5, weight_decay=0.1, safeguard_warmup=True, d0=1e-3, bias_correction=True
        ),
        1e-10,
    ),
    "prodigy (beta3, d_coef)": (
        lambda: gradtx.prodigy(
            betas=(0.8, 0.99), beta3=0.9, estim_lr_coef=0.5, bias_correction=False
        ),
        lambda ps: pytorch_optimizer.Prodigy(ps, betas=(0.8, 0.99), beta3=0.9, d_coef=0.5),
        # beta3 = 0.9 forgets r and s fast, so d jumps at the steps where it grows and
        # rounding in the order of the sums (1e-16) grows to 2.4e-6 over the run.
        1e-5,
    ),
    "prodigy (growth_rate 1.05, d0 1e-3)": (
        lambda: gradtx.prodigy(estim_lr0=1e-3, bias_correction=False, growth_rate=1.05),
        lambda ps: pytorch_optimizer.Prodigy(ps, d0=1e-3, growth_rate=1.05),
        1e-10,
    ),
    "dadapt_adamw (no bias correction)": (
        lambda: gradtx.dadapt_adamw(bias_correction=False),
        lambda ps: pytorch_optimizer.DAdaptAdam(ps),
        1e-10,
    ),
    "dadapt_adamw (L2 decay, growth_rate 1.05)": (
        lambda: gradtx.dadapt_adamw(
            weight_decay=0.1, bias_correction=False, weight_decouple=False, growth_rate=1.05
        ),
        lambda ps: pytorch_optimizer.DAdaptAdam(ps, weight_decay=0.1, growth_rate=1.05),
        1e-10,
    ),
    "dadapt_adamw (L2 decay, lr 0.5)": (
        lambda: gradtx.dadapt_adamw(
            0.5, weight_decay=0.05, bias_correction=False, weight_decouple=False
        ),
        lambda ps: pytorch_optimizer.DAdaptAdam(ps, lr=0.5, weight_decay=0.05),
        1e-10,
    ),
    "dadapt_adamw (bias correction, decoupled decay, lr 0.5, betas)": (
        lambda: gradtx.dadapt_adamw(0.5, betas=(0.8, 0.99), weight_decay=0.1, estim_lr0=1e-3),
        lambda ps: pytorch_optimizer.DAdaptAdam(
            ps,
            lr=0.5,
            betas=(0.8, 0.99),
            weight_decay=0.1,
            weight_decouple=True,
            d0=1e-3,
            bias_correction=True,
        ),
        # With b2 = 0.99, d grows in jumps that amplify the different order of
        # the sums (torch divides by (1 - b1^t) / sqrt(1 - b2^t)): 4.9e-6 over the
        # run (betas alone: 1.7e-5; bias correction alone: 1e-9; the decay alone 1e-14).
        1e-4,
    ),
}


def _problem():
    rng = np.random.default_rng(0)
    x0 = [rng.normal(size=s) for s in SHAPES]
    curv = [
        np.reshape(c, s)
        for c, s in zip(np.split(np.logspace(0, 2, 18), [12, 17]), SHAPES, strict=True)
    ]
    target = [rng.normal(size=s) for s in SHAPES]
    return x0, curv, target


def max_deviation(make_gradtx, make_torch, loss_arg=False) -> float:
    x0, curv, target = _problem()
    ps = [torch.tensor(x.copy(), requires_grad=True, dtype=torch.float64) for x in x0]
    opt = make_torch(ps)
    tx = make_gradtx()
    w = [jnp.asarray(x) for x in x0]
    state = tx.init(w)

    def loss_and_grad(w):
        value = sum(
            0.5 * jnp.sum(c * (x - t) ** 2) for x, c, t in zip(w, curv, target, strict=True)
        )
        return value, [c * (x - t) for x, c, t in zip(w, curv, target, strict=True)]

    step = jax.jit(lambda g, s, w, v: tx.update(g, s, w, value=v))
    worst = 0.0
    for _ in range(STEPS):
        opt.zero_grad()
        loss = sum(
            0.5 * (torch.tensor(c) * (p - torch.tensor(t)) ** 2).sum()
            for p, c, t in zip(ps, curv, target, strict=True)
        )
        loss.backward()
        if loss_arg:
            opt.step(loss=loss.detach())
        else:
            opt.step()
        value, g = loss_and_grad(w)
        updates, state = step(g, state, w, value)
        w = gradtx.apply_updates(w, updates)
        for a, p in zip(w, ps, strict=True):
            worst = max(worst, float(np.max(np.abs(np.asarray(a) - p.detach().numpy()))))
    moved = max(float(np.max(np.abs(np.asarray(a) - x))) for a, x in zip(w, x0, strict=True))
    assert moved > 0.1, f"the run barely moved ({moved})"
    return worst


@pytest.fixture(autouse=True)
def _torch_float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("name", list(CASES))
def test_trajectory_matches_pytorch_optimizer(name):
    make_gradtx, make_torch, tol, *rest = CASES[name]
    with jax.enable_x64(True):
        worst = max_deviation(make_gradtx, make_torch, *rest)
    print(f"{name}: {worst:.3e}")
    assert worst <= tol, f"{name}: {worst:.3e}"
