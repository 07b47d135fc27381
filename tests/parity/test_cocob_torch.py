"""gradtx's COCOB-Backprop against its author's PyTorch code (``parameterfree.COCOB``,
Orabona's package on PyPI): float64 trajectories, 300 steps, four leaves.

Collected only by ``python -m pytest -m parity tests/parity``. Both keep ``L``
at ``eps`` to start and add the decay to the gradient, so Optax's defaults
(gradtx's) are the package's; ``learning_rate`` (a gradient multiplier, Optax's
extra) stays 1.
"""

from __future__ import annotations

import pytest

import gradtx

torch = pytest.importorskip("torch")
parameterfree = pytest.importorskip("parameterfree")
pytestmark = pytest.mark.parity

from tests.parity.leaves import float64, trajectory_deviation  # noqa: E402 (needs torch)

CASES = {
    "defaults (alpha 100, eps 1e-8)": (
        lambda: gradtx.cocob(),
        lambda ps: parameterfree.COCOB(ps),
    ),
    "alpha 10, L2 decay 0.01": (
        lambda: gradtx.cocob(alpha=10.0, weight_decay=0.01),
        lambda ps: parameterfree.COCOB(ps, alpha=10, weight_decay=0.01),
    ),
    "alpha 1, eps 1e-4": (
        lambda: gradtx.cocob(alpha=1.0, eps=1e-4),
        lambda ps: parameterfree.COCOB(ps, alpha=1, eps=1e-4),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_cocob_trajectory_matches_parameterfree(name):
    make_gradtx, make_torch = CASES[name]
    with float64():
        worst, moved = trajectory_deviation(make_gradtx, make_torch)
    print(f"{name}: {worst:.3e} (moved {moved:.3g})")
    assert moved > 0.1, f"the run barely moved ({moved})"
    # The same operations in another order: 1.6e-15 at most.
    assert worst < 1e-12, f"{name}: {worst:.3e}"
