"""Mechanic's ``form="authors"`` against the authors' PyTorch code
(``mechanic_pytorch.mechanize``): float64, 300 steps, SGD and Adam as the base.

The authors' code keeps its scalars in tensors of torch's default dtype: the test
sets it to float64. Its betas are passed as gradtx computes them (``1 - 10^-i``),
which differ from the literals ``0.99, ...`` in the last bit.

Mechanic amplifies rounding (see tests/test_contrib_mechanic.py), and the two
codes round differently (torch sets ``x = x_ref + S Delta``; an update is ``x_ref
+ S Delta - x``, added to ``x``). Around SGD on the 12-D quadratic the runs agree
to 1e-13 for 50 steps and then part: 2.8e-5 (no decay) and 1.1e-3 (decay 0.1)
over 300 steps, the size by which gradtx's own run moves when its start is moved
by one ulp (1.7e-5 and 3.3e-3). So the SGD cases compare 50 steps (1.4e-13 at
most). Around Adam the runs stay closer: 1.3e-15 after 50 steps, 7.2e-7 over all
300, where one ulp at the start moves gradtx's own run by 8.4e-6: that case
runs 300 steps with a tolerance of 1e-5.
"""

from __future__ import annotations

import jax
import pytest

import gradtx

torch = pytest.importorskip("torch")
mechanic_pytorch = pytest.importorskip("mechanic_pytorch")
pytestmark = pytest.mark.parity

from tests.parity.quadratic import max_deviation  # noqa: E402  (needs torch)

BETAS = tuple(1 - 0.1**i for i in range(1, 7))


def _sgd(weight_decay):
    return (
        lambda: gradtx.mechanize(gradtx.sgd(0.01), weight_decay=weight_decay, form="authors"),
        lambda p: mechanic_pytorch.mechanize(
            torch.optim.SGD, s_decay=weight_decay, betas=BETAS, s_init=1e-6
        )([p], lr=0.01),
    )


CASES = {
    # name: (gradtx, torch, steps, tolerance)
    "sgd, no decay": (*_sgd(0.0), 50, 1e-12),
    "sgd, decay 0.1": (*_sgd(0.1), 50, 1e-12),
    "adam, decay 0.01, s_init 1e-8": (
        lambda: gradtx.mechanize(gradtx.adam(0.01), s_init=1e-8, form="authors"),
        lambda p: mechanic_pytorch.mechanize(torch.optim.Adam, betas=BETAS, s_init=1e-8)(
            [p], lr=0.01
        ),
        300,
        1e-5,
    ),
}


@pytest.fixture(autouse=True)
def _torch_float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("name", list(CASES))
def test_trajectory_matches_mechanic_pytorch(name):
    make_gradtx, make_torch, steps, tol = CASES[name]
    with jax.enable_x64(True):
        worst = max_deviation(make_gradtx, make_torch, steps)
    print(f"{name}: {worst:.3e} over {steps} steps")
    assert worst <= tol, f"{name}: {worst:.3e}"
