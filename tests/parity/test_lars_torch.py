"""LARS's paper denominator against ``pytorch_optimizer.LARS``: float64, 300 steps.

``pytorch_optimizer`` divides by ``||g|| + beta ||w||`` (You et al. 2017, Alg. 1)
and decays and scales only leaves of rank >= 2; gradtx's ``lars`` with
``trust_ratio_form="paper"`` and both masks set to that rule is the same method.
Its rate multiplies the momentum buffer where gradtx's is inside it: the same
for a constant rate.

With decay, ``beta ||w||`` bounds the local rate; without it the step's norm is
``eta ||w||`` however small the gradient, so near the minimum the runs hop about
it and amplify rounding (1e-5 apart after 300 steps, from 1e-16 per step): the
decay-free form, where both denominators agree, is tested in
tests/test_new_aliases_2.py against the float64 reference instead.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import gradtx

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
from tests.parity import leaves  # noqa: E402  (needs torch)

pytestmark = pytest.mark.parity

STEPS = 300
SHAPES = ((4, 3), (3,), (2, 2, 2))


def _matrices(p):
    return jax.tree.map(lambda x: x.ndim > 1, p)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.01, 0.05])
def test_trajectory_matches_pytorch_optimizer(nesterov, weight_decay):
    rng = np.random.default_rng(3)
    x0 = [rng.normal(size=s) for s in SHAPES]
    curv = [rng.uniform(0.5, 5.0, size=s) for s in SHAPES]
    lr, eta, momentum = 0.1, 0.02, 0.9

    def make_torch(ps):
        return pytorch_optimizer.LARS(
            ps,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            trust_coefficient=eta,
            nesterov=nesterov,
        )

    def make_gradtx():
        return gradtx.lars(
            lr,
            weight_decay,
            _matrices,
            eta,
            trust_ratio_mask=_matrices,
            momentum=momentum,
            nesterov=nesterov,
            trust_ratio_form="paper",
        )

    ones = [np.ones(s) for s in SHAPES]
    with leaves.float64():
        worst, moved = leaves.trajectory_deviation(
            make_gradtx, make_torch, steps=STEPS, start=(x0, curv, ones)
        )
    assert moved > 0.1
    assert worst < 1e-12, worst
