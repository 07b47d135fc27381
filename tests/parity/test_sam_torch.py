"""gradtx's SAM against ``pytorch_optimizer.SAM`` (Foret et al.'s two-step form):
float64 trajectories, 300 SAM steps (600 gradients), four leaves.

Collected only by ``python -m pytest -m parity tests/parity``. One torch step
(``step(closure)``: the ascent ``w + rho g / (||g|| + 1e-12)``, the gradient
there, back to ``w`` and the base optimizer's step) is two calls of gradtx's
:func:`sam` in its default transparent mode with ``sync_period=2``, its
adversarial optimizer ``chain(normalize_by_update_norm(eps=1e-12), sgd(rho))``
(the package's ``perturb_eps``), and its outer optimizer the torch base
optimizer's gradtx twin (or one call in opaque mode, which asks ``grad_fn``
for the gradient at the ascent). The params are compared after each descent.

pytorch_optimizer computes the ascent's norm in float32 whatever the params'
dtype (``get_global_gradient_norm`` returns a float32 tensor), so each ascent
is rounded to ~6e-8 relative, and the runs part by 1e-10 to 1e-7: the cases
state their bound. A second test swaps that function for a float64 one (the
same sum of squares, in the params' dtype), and then every case agrees to
1e-14: the float32 norm is the whole difference. ``adaptive=True`` (ASAM, the
ascent ``rho w^2 g / ||w g||``) has no gradtx adversarial optimizer; the last
case builds it in a few lines to check that :func:`sam` hands the adversarial
optimizer the right params.
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
pytestmark = pytest.mark.parity

from tests.parity.leaves import (  # noqa: E402 (needs torch)
    STEPS,
    float64,
    gradtx_loss_and_grad,
    problem,
    torch_loss,
)


def _ascent(rho):
    return gradtx.chain(gradtx.normalize_by_update_norm(eps=1e-12), gradtx.sgd(rho))


def _adaptive_ascent(rho):
    """ASAM's ascent as a descent step: ``-rho w^2 g / (||w g|| + 1e-12)``."""

    def update(updates, state, params=None, **extra_args):
        del extra_args
        norm = jnp.sqrt(sum(jnp.sum((p * g) ** 2) for p, g in zip(params, updates, strict=True)))
        out = [-rho * p * p * g / (norm + 1e-12) for p, g in zip(params, updates, strict=True)]
        return out, state

    return gradtx.GradientTransformation(lambda params: gradtx.EmptyState(), update)


def _torch(base, rho, adaptive=False, **kwargs):
    return lambda ps: pytorch_optimizer.SAM(
        ps, base, rho=rho, adaptive=adaptive, foreach=False, **kwargs
    )


CASES = {
    # name: (gradtx factory, torch factory, tolerance)
    "sgd lr 5e-3, rho 0.05": (
        lambda: gradtx.sam(gradtx.sgd(5e-3), _ascent(0.05)),
        _torch(torch.optim.SGD, 0.05, lr=5e-3),
        1e-8,  # 6.1e-10
    ),
    "sgd lr 5e-3 momentum 0.9, rho 0.05": (
        lambda: gradtx.sam(gradtx.sgd(5e-3, momentum=0.9), _ascent(0.05)),
        _torch(torch.optim.SGD, 0.05, lr=5e-3, momentum=0.9),
        1e-6,  # 7.5e-8: the momentum carries the rounded ascents along
    ),
    "sgd lr 5e-3, rho 0.05, opaque mode": (
        lambda: gradtx.sam(gradtx.sgd(5e-3), _ascent(0.05), opaque_mode=True),
        _torch(torch.optim.SGD, 0.05, lr=5e-3),
        1e-8,
    ),
    "adam lr 1e-2, rho 0.1": (
        lambda: gradtx.sam(gradtx.adam(1e-2), _ascent(0.1)),
        _torch(torch.optim.Adam, 0.1, lr=1e-2),
        1e-8,  # 5.0e-10
    ),
    "adaptive (ASAM), sgd lr 5e-3, rho 0.05": (
        lambda: gradtx.sam(gradtx.sgd(5e-3), _adaptive_ascent(0.05)),
        _torch(torch.optim.SGD, 0.05, adaptive=True, lr=5e-3),
        1e-8,  # 1.1e-9
    ),
}


def max_deviation(make_gradtx, make_torch) -> tuple[float, float]:
    x0, curv, target = problem()
    ps = [torch.tensor(x.copy(), dtype=torch.float64, requires_grad=True) for x in x0]
    opt = make_torch(ps)
    tx = make_gradtx()
    w = [jnp.asarray(x) for x in x0]
    state = tx.init(w)
    opaque = isinstance(state, gradtx.SAMState) and state.cache is None

    def grad_fn(params, i):
        del i
        return gradtx_loss_and_grad(params, curv, target)[1]

    if opaque:  # one call runs the ascent and the descent, asking grad_fn
        step = jax.jit(lambda g, s, w: tx.update(g, s, w, grad_fn=grad_fn))
    else:
        step = jax.jit(lambda g, s, w: tx.update(g, s, w))

    def closure():
        opt.zero_grad()
        loss = torch_loss(ps, curv, target)
        loss.backward()
        return loss

    worst = 0.0
    for _ in range(STEPS):
        closure()
        opt.step(closure)
        for _ in range(1 if opaque else 2):  # the ascent, then the descent from the start
            _, g = gradtx_loss_and_grad(w, curv, target)
            updates, state = step(g, state, w)
            w = gradtx.apply_updates(w, updates)
        for a, p in zip(w, ps, strict=True):
            worst = max(worst, float(np.max(np.abs(np.asarray(a) - p.detach().numpy()))))
    moved = max(float(np.max(np.abs(np.asarray(a) - x))) for a, x in zip(w, x0, strict=True))
    return worst, moved


@pytest.mark.parametrize("name", list(CASES))
def test_sam_trajectory_matches_pytorch_optimizer(name):
    make_gradtx, make_torch, tol = CASES[name]
    with float64():
        worst, moved = max_deviation(make_gradtx, make_torch)
    print(f"{name}: {worst:.3e} (moved {moved:.3g})")
    assert moved > 0.1, f"the run barely moved ({moved})"
    assert worst < tol, f"{name}: {worst:.3e}"


def _norm_in_float64(param_groups, device=None, *, weight_adaptive=False):
    """``get_global_gradient_norm`` (the squared norm of the, for ASAM ``|w|``-weighted,
    gradients) summed in the params' dtype."""
    del device
    total = 0.0
    for group in param_groups:
        adaptive = weight_adaptive and group.get("adaptive", False)
        for p in group["params"]:
            if p.grad is not None:
                g = p.grad * p.abs() if adaptive else p.grad
                total = total + (g * g).sum()
    return torch.as_tensor(total).reshape(1)


@pytest.mark.parametrize("name", list(CASES))
def test_sam_matches_pytorch_optimizer_with_a_float64_norm(name, monkeypatch):
    sam_module = importlib.import_module(pytorch_optimizer.SAM.__module__)
    monkeypatch.setattr(sam_module, "get_global_gradient_norm", _norm_in_float64)
    make_gradtx, make_torch, _ = CASES[name]
    with float64():
        worst, _ = max_deviation(make_gradtx, make_torch)
    print(f"{name}, float64 norm: {worst:.3e}")
    assert worst < 1e-12, f"{name}: {worst:.3e}"
