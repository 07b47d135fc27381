"""gradtx.muon against ``torch.optim.Muon``: 300-step trajectories, PyTorch's conventions.

Collected only by ``python -m pytest -m parity tests/parity``. torch's Muon takes
2-D parameters only and stores them ``(out, in)``, so both sides run on two such
matrices (one tall, one wide), gradtx reading them with
``MuonDimensionNumbers(1, 0)``, on a quadratic with a different curvature per
entry. gradtx takes torch's forms: ``bias_correction=False`` (no bias correction
of the Nesterov blend), ``adjust_lr_fn`` (torch's shape scale), ``eps=1e-7``.

torch always runs Newton-Schulz in bfloat16 (``_zeropower_via_newtonschulz``
casts to it), so gradtx runs it with ``ns_dtype=jnp.bfloat16`` too; the rest is
float64 on both sides. gradtx's bfloat16 iteration rounds at torch's points (the
normalised input, ``A``, ``b A + c A^2``, each new ``X``) and is bit-identical to
torch's ``_zeropower_via_newtonschulz`` on the same input. The momenta differ by
float64 rounding (torch's ``lerp``), which flips a bfloat16 rounding now and then:
the first 50 steps agree to 1e-14, and each case's largest deviation, per step
and over the whole trajectory, is printed and bounded below.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity

STEPS = 300
LR = 0.01
SHAPES = [(6, 4), (3, 8)]  # torch's (out, in): a tall and a wide matrix
TORCH_LAYOUT = gradtx.MuonDimensionNumbers(reduction_axis=1, output_axis=0)

CASES = {
    "nesterov, original scale, decay": (
        {"adjust_lr_fn": "original", "weight_decay": 0.1},
        {"adjust_lr_fn": "original", "weight_decay": 0.1, "nesterov": True},
    ),
    "heavy ball, original scale": (
        {"adjust_lr_fn": "original", "nesterov": False},
        {"adjust_lr_fn": "original", "weight_decay": 0.0, "nesterov": False},
    ),
    "nesterov, match_rms_adamw, decay": (
        {"adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.05},
        {"adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.05, "nesterov": True},
    ),
}


def _problem():
    rng = np.random.default_rng(0)
    start = [rng.normal(size=s) for s in SHAPES]
    curvature = [rng.uniform(0.5, 5.0, size=s) for s in SHAPES]
    target = [rng.normal(size=s) for s in SHAPES]
    return start, curvature, target


def trajectories(gradtx_kwargs, torch_kwargs, ns_dtype=jnp.bfloat16, forced=False):
    """Both runs' params after every step, float64 arrays (steps, *shape) per leaf.

    ``forced``: gradtx steps from torch's params every time (its own momentum,
    which then sees the same gradients), so its params after a step are torch's
    previous ones plus its own update: the error of one step, not accumulated.
    """
    start, curvature, target = _problem()
    params = [torch.tensor(x.copy(), dtype=torch.float64, requires_grad=True) for x in start]
    opt = torch.optim.Muon(params, lr=LR, momentum=0.95, eps=1e-7, **torch_kwargs)
    tx = gradtx.muon(
        LR,
        beta=0.95,
        eps=1e-7,
        bias_correction=False,
        ns_dtype=ns_dtype,
        muon_weight_dimension_numbers=[TORCH_LAYOUT] * len(SHAPES),
        **gradtx_kwargs,
    )
    w = [jnp.asarray(x) for x in start]
    state = tx.init(w)

    @jax.jit
    def step(w, state):
        grads = [h * (x - t) for x, h, t in zip(w, curvature, target, strict=True)]
        updates, state = tx.update(grads, state, w)
        return gradtx.apply_updates(w, updates), state

    ours, theirs = [], []
    for _ in range(STEPS):
        if forced:
            w = [jnp.asarray(p.detach().numpy().copy()) for p in params]
        opt.zero_grad()
        loss = sum(
            0.5 * (torch.tensor(h) * (p - torch.tensor(t)) ** 2).sum()
            for p, h, t in zip(params, curvature, target, strict=True)
        )
        loss.backward()
        opt.step()
        w, state = step(w, state)
        ours.append([np.asarray(x) for x in w])
        theirs.append([p.detach().numpy().copy() for p in params])
    return ours, theirs


def max_deviation(ours, theirs):
    return max(
        float(np.max(np.abs(a - b)))
        for step_a, step_b in zip(ours, theirs, strict=True)
        for a, b in zip(step_a, step_b, strict=True)
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_step_matches_torch_muon_with_bfloat16_newton_schulz(name):
    """From the same params and gradients, one step of each agrees to float64 precision.

    Both iterations round to bfloat16 at the same points (measured bit-identical
    on single matrices); the momenta differ by float64 rounding (torch's ``lerp``
    against ``beta m + (1 - beta) g``), which flips a bfloat16 rounding of the
    iteration's input now and then, which moves O by a few bfloat16 ulps (2^-8).
    Measured: 3.7e-7, 1.1e-5 and 1.7e-4 (= 0.017 LR) for the three cases.
    """
    with jax.enable_x64(True):
        ours, theirs = trajectories(*CASES[name], forced=True)
    deviation = max_deviation(ours, theirs)
    print(f"{name}: one step, max |gradtx - torch| = {deviation:.2e} over {STEPS} steps")
    assert deviation < 0.05 * LR


@pytest.mark.parametrize("name", sorted(CASES))
def test_trajectory_follows_torch_muon_with_bfloat16_newton_schulz(name):
    """Whole trajectories: a flipped bfloat16 rounding is never corrected, and near
    the optimum Muon's steps of fixed size (the rate) oscillate, so a trajectory may
    drift from torch's by up to about one step (measured 3.7e-7, 1.1e-5 and 1.0e-2
    for the three cases; the largest after the params have settled)."""
    with jax.enable_x64(True):
        ours, theirs = trajectories(*CASES[name])
    assert ours[-1][0].dtype == np.float64
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(ours[-1], ours[0], strict=True))
    deviation = max_deviation(ours, theirs)
    early = max_deviation(ours[:50], theirs[:50])
    print(f"{name}: max |gradtx - torch| = {deviation:.2e} over {STEPS} steps, "
          f"{early:.2e} over the first 50 (moved {moved:.2f})")  # fmt: skip
    assert moved > 0.5
    assert early < 1e-3 * LR
    assert deviation < 2 * LR


def test_float64_iteration_against_torchs_bfloat16():
    """gradtx's default (the iteration in the momentum's float64) against torch's
    bfloat16 one: they differ by bfloat16's error on every step, large where the
    momentum has singular values below bfloat16's resolution (near the optimum).
    Measured: one step 6.2e-3 (0.62 LR), trajectory 1.1e-2."""
    with jax.enable_x64(True):
        ours, theirs = trajectories(*CASES["nesterov, original scale, decay"], ns_dtype=None)
        forced = max_deviation(*trajectories(*CASES["nesterov, original scale, decay"],
                                             ns_dtype=None, forced=True))  # fmt: skip
    deviation = max_deviation(ours, theirs)
    print(
        f"float64 iteration vs torch's bfloat16: trajectory {deviation:.2e}, one step {forced:.2e}"
    )
    assert forced < LR
    assert deviation < 2 * LR
