"""gradtx's Mechanic against the authors' PyTorch package (``mechanic-pytorch``:
``mechanic_pytorch.mechanize``): float64 trajectories, four leaves.

Collected only by ``python -m pytest -m parity tests/parity``. The package's
bettors follow other rules than Optax's (gradtx's default): gradtx's
``tuner_form="authors"`` selects them (scales from 0, ``m_0 = 1e-6``, ``|h|``
unclipped, the reward clipped at 0, the decay read at the params after the base
step), and its ``s_init`` default (1e-8) is passed explicitly. The package's
``betas`` are ``1 - 10^-i`` for ``i = 1..n``, gradtx's ``num_betas=n``; its
``s_decay`` is ``weight_decay``; it reads ``Delta`` back from the params
(``store_delta=False``, its default), as gradtx does.

Mechanic amplifies rounding: its scale compounds, and every step is the scale
times the sum of all base steps. On this problem the package *against itself*,
with the start moved by 1e-15, ends 1.5e-9 (SGD, lr 1e-3) to 1e-3 (SGD, lr
1e-2; Adam, lr 1e-3) apart after 300 steps. So the whole 300-step trajectory is
compared where that growth is small, and the first 60 steps elsewhere: gradtx
and the package agree to 1e-15 over the first 30 steps, and by 6.5e-13 at most
after 60 (over 300 steps those cases part by 1e-5 to 0.5, as chaotic runs do).
"""

from __future__ import annotations

import pytest

import gradtx

torch = pytest.importorskip("torch")
mechanic_pytorch = pytest.importorskip("mechanic_pytorch")
pytestmark = pytest.mark.parity

from tests.parity.leaves import float64, trajectory_deviation  # noqa: E402 (needs torch)


def _ours(base, **kwargs):
    return lambda: gradtx.mechanize(base, s_init=1e-8, tuner_form="authors", **kwargs)


def _theirs(base_class, lr, base_kwargs=None, **kwargs):
    return lambda ps: mechanic_pytorch.mechanize(base_class, **kwargs)(
        ps, lr=lr, **(base_kwargs or {})
    )


CASES = {
    # name: (gradtx factory, torch factory, steps, tolerance)
    "sgd lr 1e-3, defaults (decay 0.01, 6 betas)": (
        _ours(gradtx.sgd(1e-3)),
        _theirs(torch.optim.SGD, 1e-3),
        300,
        # rounding grows as in the package against itself (1.5e-9): 7.7e-9.
        1e-7,
    ),
    "sgd lr 1e-2, defaults": (_ours(gradtx.sgd(1e-2)), _theirs(torch.optim.SGD, 1e-2), 60, 1e-10),
    "sgd lr 1e-3 momentum 0.9, no decay": (
        _ours(gradtx.sgd(1e-3, momentum=0.9), weight_decay=0.0),
        _theirs(torch.optim.SGD, 1e-3, {"momentum": 0.9}, s_decay=0.0),
        60,
        1e-10,
    ),
    "adam lr 1e-2, defaults": (
        _ours(gradtx.adam(1e-2)),
        _theirs(torch.optim.Adam, 1e-2),
        60,
        1e-10,
    ),
    "adam lr 1e-2, decay 0.1, 4 betas": (
        _ours(gradtx.adam(1e-2), weight_decay=0.1, num_betas=4),
        _theirs(torch.optim.Adam, 1e-2, s_decay=0.1, betas=(0.9, 0.99, 0.999, 0.9999)),
        60,
        1e-10,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_mechanic_trajectory_matches_mechanic_pytorch(name):
    make_gradtx, make_torch, steps, tol = CASES[name]
    with float64():
        worst, moved = trajectory_deviation(make_gradtx, make_torch, steps=steps)
    print(f"{name}: {worst:.3e} over {steps} steps (moved {moved:.3g})")
    assert moved > 0.1, f"the run barely moved ({moved})"
    assert worst < tol, f"{name}: {worst:.3e}"


def test_optax_tuner_form_is_not_the_packages():
    with float64():
        worst, _ = trajectory_deviation(
            lambda: gradtx.mechanize(gradtx.sgd(1e-3), s_init=1e-8),
            _theirs(torch.optim.SGD, 1e-3),
            steps=60,
        )
    print(f"tuner_form='optax' against the package: {worst:.3e} over 60 steps")
    assert worst > 1e-3
