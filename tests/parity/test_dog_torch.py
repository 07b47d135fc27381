"""gradtx's DoG and layer-wise DoG against the authors' PyTorch package
(``dog-optimizer``: ``dog.DoG`` and ``dog.LDoG``): float64 trajectories, 300
steps, four leaves (one param group, so DoG's norms span all of them and LDoG's
are per leaf).

Collected only by ``python -m pytest -m parity tests/parity``. The package's
``reps_rel`` is gradtx's ``init_step=("heuristic", reps_rel)`` for :func:`dog`
and ``reps_rel`` for :func:`scale_by_distance_over_gradients`; its
``init_eta`` is ``init_step=("learning_rate", init_eta)``; its ``lr`` is
``learning_rate``; both add the L2 decay to the gradient (so it enters ``G``)
and ``eps`` to ``G`` under the root. LDoG is the gradtx scaling with
``global_scale=-1`` (descent) and ``param_dtype=None`` (``x_0`` kept in float64).
"""

from __future__ import annotations

import logging

import pytest

import gradtx

torch = pytest.importorskip("torch")
dog = pytest.importorskip("dog")
pytestmark = pytest.mark.parity

from tests.parity.leaves import float64, trajectory_deviation  # noqa: E402 (needs torch)

# The package logs a warning for any lr other than 1.
logging.getLogger(dog.DoG.__module__).setLevel(logging.ERROR)


def _ldog(**kwargs):
    return lambda: gradtx.scale_by_distance_over_gradients(
        param_dtype=None, global_scale=-1.0, **kwargs
    )


CASES = {
    "dog, defaults (reps_rel 1e-6)": (lambda: gradtx.dog(), lambda ps: dog.DoG(ps)),
    "dog, reps_rel 1e-4, L2 decay 0.01": (
        lambda: gradtx.dog(init_step=("heuristic", 1e-4), weight_decay=0.01),
        lambda ps: dog.DoG(ps, reps_rel=1e-4, weight_decay=0.01),
    ),
    "dog, init_eta 1e-3": (
        lambda: gradtx.dog(init_step=("learning_rate", 1e-3)),
        lambda ps: dog.DoG(ps, init_eta=1e-3),
    ),
    "dog, lr 0.5, eps 1e-4": (
        lambda: gradtx.dog(0.5, eps=1e-4),
        lambda ps: dog.DoG(ps, lr=0.5, eps=1e-4),
    ),
    "ldog, defaults": (_ldog(), lambda ps: dog.LDoG(ps)),
    "ldog, reps_rel 1e-4, eps 1e-4": (
        _ldog(reps_rel=1e-4, eps=1e-4),
        lambda ps: dog.LDoG(ps, reps_rel=1e-4, eps=1e-4),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_dog_trajectory_matches_dog_optimizer(name):
    make_gradtx, make_torch = CASES[name]
    with float64():
        worst, moved = trajectory_deviation(make_gradtx, make_torch)
    print(f"{name}: {worst:.3e} (moved {moved:.3g})")
    assert moved > 0.1, f"the run barely moved ({moved})"
    # The same operations in another order: 1e-15 at most.
    assert worst < 1e-12, f"{name}: {worst:.3e}"
