"""gradtx against ``torch.optim``: whole float64 trajectories, PyTorch's conventions.

Collected only by ``python -m pytest -m parity tests/parity`` (the ``parity``
extra installs torch). Each case runs 300 steps of gradtx and of torch side by
side on a quadratic with condition number 100 and several leaves' worth of
coordinates, with the gradtx keywords that select PyTorch's form, and asserts
the largest parameter deviation.
"""

from __future__ import annotations

import jax
import pytest

import gradtx

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity

from tests.parity.quadratic import max_deviation  # noqa: E402 (needs torch)

CASES = {
    "adam": (lambda: gradtx.adam(0.01), lambda p: torch.optim.Adam([p], lr=0.01)),
    "adamw": (
        lambda: gradtx.adamw(0.01, weight_decay=0.1),
        lambda p: torch.optim.AdamW([p], lr=0.01, weight_decay=0.1),
    ),
    "nadam (Dozat schedule)": (
        lambda: gradtx.nadam(0.01),
        lambda p: torch.optim.NAdam([p], lr=0.01, momentum_decay=0.004),
    ),
    "adamax": (lambda: gradtx.adamax(0.01), lambda p: torch.optim.Adamax([p], lr=0.01)),
    "amsgrad (max before correction)": (
        lambda: gradtx.amsgrad(0.01, max_before_bias_correction=True),
        lambda p: torch.optim.Adam([p], lr=0.01, amsgrad=True),
    ),
    "rmsprop (centered, momentum, eps outside)": (
        lambda: gradtx.rmsprop(0.01, decay=0.99, eps_in_sqrt=False, centered=True, momentum=0.9),
        lambda p: torch.optim.RMSprop([p], lr=0.01, alpha=0.99, centered=True, momentum=0.9),
    ),
    "adagrad (r0 = 0, eps outside)": (
        lambda: gradtx.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-10, eps_in_sqrt=False),
        lambda p: torch.optim.Adagrad([p], lr=0.1),
    ),
    "adadelta": (lambda: gradtx.adadelta(1.0), lambda p: torch.optim.Adadelta([p], lr=1.0)),
    "sgd (nesterov)": (
        lambda: gradtx.sgd(0.01, momentum=0.9, nesterov=True),
        lambda p: torch.optim.SGD([p], lr=0.01, momentum=0.9, nesterov=True),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_trajectory_matches_torch(name):
    with jax.enable_x64(True):
        # float64 on both sides; NAdam's momentum-schedule product is accumulated
        # in a different order by torch, which leaves ~1e-10 after 300 steps.
        assert max_deviation(*CASES[name]) < 1e-9
