"""gradtx's ADOPT against ``pytorch_optimizer.ADOPT`` (its authors' update, in PyTorch).

Collected only with ``-m parity``. 300 float64 steps on tests/parity/test_torch_optim.py's
quadratic (condition number 100, twelve coordinates). ``pytorch_optimizer`` counts
the clipping bound's ``t`` from the first call (the authors' code), which is
gradtx's ``clip_form="authors"``; the default ``"paper"`` (Optax's) must differ.
"""

from __future__ import annotations

import jax
import pytest

import gradtx

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
pytestmark = pytest.mark.parity

from tests.parity.quadratic import max_deviation  # noqa: E402 (needs torch)

CASES = {
    "ADOPT (clipped, authors' count)": (
        lambda: gradtx.adopt(0.01, clip_form="authors"),
        lambda p: pytorch_optimizer.ADOPT([p], lr=0.01, foreach=False),
    ),
    "ADOPT (clipped, authors' count, b2 = 0.99)": (
        lambda: gradtx.adopt(0.02, 0.8, 0.99, 1e-6, clip_form="authors"),
        lambda p: pytorch_optimizer.ADOPT([p], lr=0.02, betas=(0.8, 0.99), foreach=False),
    ),
    # On this problem |g_t / sqrt(v_{t-1})| stays below t^{1/4}: a tighter bound
    # makes the clipping (and its count) matter.
    "ADOPT (clip 0.1 t, authors' count)": (
        lambda: gradtx.adopt(0.01, clip_value_fn=lambda t: 0.1 * t, clip_form="authors"),
        lambda p: pytorch_optimizer.ADOPT(
            [p], lr=0.01, clip_lambda=lambda t: 0.1 * t, foreach=False
        ),
    ),
    "ADOPT (unclipped)": (
        lambda: gradtx.adopt(0.01, use_clipping=False),
        lambda p: pytorch_optimizer.ADOPT([p], lr=0.01, clip_lambda=None, foreach=False),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_trajectory_matches_pytorch_optimizer(name):
    with jax.enable_x64(True):
        worst = max_deviation(*CASES[name])
    print(f"{name}: max |w - w_torch| = {worst:.2e}")
    assert worst < 1e-9


def test_the_paper_count_is_not_pytorch_optimizers():
    with jax.enable_x64(True):
        worst = max_deviation(
            lambda: gradtx.adopt(0.01, clip_value_fn=lambda t: 0.1 * t),
            CASES["ADOPT (clip 0.1 t, authors' count)"][1],
        )
    assert worst > 1e-6
