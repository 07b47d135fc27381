"""LAMB's PyTorch forms against ``pytorch_optimizer.Lamb``: float64, 300 steps.

``pytorch_optimizer.Lamb`` differs from Optax's ``lamb`` (the paper's Alg. 2) in
four places, each a keyword of gradtx's ``lamb``: its moments are not
bias-corrected and its step is divided by ``1 - b1^t`` after the trust ratio
(``bias_correction="step"``); by default it shrinks the weights by ``1 - lr
lambda`` outside the ratio (``weight_decouple=True``; its
``weight_decouple=False`` is the paper's ``r + lambda x`` inside); it adds
``eps`` to the update's norm (``eps_in_trust_ratio=True``); and it clips the
weight norm at 10 (``max_weight_norm=10.0``). One leaf starts with a norm above
10, so the clip is exercised.

The rate is small (5e-3) so that the 300 steps stay on the way down: near the
minimum every LAMB step has length ``lr ||x||`` however small the gradient, the
runs hop about it and amplify rounding (at ``lr = 0.02`` the two runs agree to
1e-15 for 120 steps, then part by 100x per 30 steps, 0.07 apart at step 300).
"""

from __future__ import annotations

import numpy as np
import pytest

import gradtx

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
from tests.parity import leaves  # noqa: E402  (needs torch)

pytestmark = pytest.mark.parity

STEPS = 300
SHAPES = ((4, 3), (3,), (2, 2, 2))
SCALES = (6.0, 1.0, 1.0)  # the matrix starts with ||x|| ~ 20 > 10


@pytest.mark.parametrize("weight_decouple", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_trajectory_matches_pytorch_optimizer(weight_decouple, weight_decay):
    rng = np.random.default_rng(5)
    x0 = [rng.normal(size=s) * k for s, k in zip(SHAPES, SCALES, strict=True)]
    curv = [rng.uniform(0.5, 5.0, size=s) for s in SHAPES]
    lr, b1, b2, eps = 0.005, 0.9, 0.99, 1e-6

    def make_torch(ps):
        return pytorch_optimizer.Lamb(
            ps,
            lr=lr,
            betas=(b1, b2),
            weight_decay=weight_decay,
            weight_decouple=weight_decouple,
            eps=eps,
        )

    def make_gradtx():
        return gradtx.lamb(
            lr,
            b1,
            b2,
            eps,
            weight_decay=weight_decay,
            bias_correction="step",
            weight_decouple=weight_decouple,
            eps_in_trust_ratio=True,
            max_weight_norm=10.0,
        )

    ones = [np.ones(s) for s in SHAPES]
    with leaves.float64():
        worst, moved = leaves.trajectory_deviation(
            make_gradtx, make_torch, steps=STEPS, start=(x0, curv, ones)
        )
    print(f"weight_decouple={weight_decouple} weight_decay={weight_decay}: worst {worst:.3e}")
    assert moved > 0.1
    assert worst < 1e-12, worst
