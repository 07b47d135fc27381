"""gradtx's AdEMAMix against ``pytorch_optimizer.AdEMAMix``.

Collected only with ``-m parity``. 300 float64 steps on tests/parity/test_torch_optim.py's
quadratic (condition number 100, twelve coordinates). ``pytorch_optimizer``'s
default adds the decay to the gradient (``weight_decouple=False``, gradtx's
``decoupled_weight_decay=False``); ``weight_decouple=True`` is the paper's and
Optax's, gradtx's default. Its ``t_alpha_beta3`` schedulers count steps from 1,
so gradtx is given the same schedules of ``k + 1``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import pytest

import gradtx

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
pytestmark = pytest.mark.parity

from tests.parity.quadratic import max_deviation  # noqa: E402 (needs torch)

T = 50  # t_alpha_beta3


def _alpha(k):
    return jnp.minimum((k + 1) * 5.0 / T, 5.0)


def _beta3(k):
    log_b1, log_b3 = math.log(0.9), math.log(0.999)
    frac = (k + 1) * (1.0 / T)  # not (k + 1) / T: JAX divides int32 in float32
    return jnp.minimum(jnp.exp(log_b1 * log_b3 / ((1 - frac) * log_b3 + frac * log_b1)), 0.999)


CASES = {
    "AdEMAMix (decoupled decay)": (
        lambda: gradtx.ademamix(0.01, b3=0.999, weight_decay=0.1),
        lambda p: pytorch_optimizer.AdEMAMix(
            [p],
            lr=0.01,
            betas=(0.9, 0.999, 0.999),
            weight_decay=0.1,
            weight_decouple=True,
            foreach=False,
        ),
    ),
    "AdEMAMix (L2 decay, pytorch_optimizer's default)": (
        lambda: gradtx.ademamix(0.01, b3=0.999, weight_decay=0.1, decoupled_weight_decay=False),
        lambda p: pytorch_optimizer.AdEMAMix(
            [p], lr=0.01, betas=(0.9, 0.999, 0.999), weight_decay=0.1, foreach=False
        ),
    ),
    "AdEMAMix (alpha and beta3 schedulers)": (
        lambda: gradtx.ademamix(0.01, b3=_beta3, alpha=_alpha),
        lambda p: pytorch_optimizer.AdEMAMix(
            [p], lr=0.01, betas=(0.9, 0.999, 0.999), t_alpha_beta3=T, foreach=False
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_trajectory_matches_pytorch_optimizer(name):
    with jax.enable_x64(True):
        worst = max_deviation(*CASES[name])
    print(f"{name}: max |w - w_torch| = {worst:.2e}")
    assert worst < 1e-9


def test_the_couplings_differ():
    with jax.enable_x64(True):
        worst = max_deviation(
            CASES["AdEMAMix (decoupled decay)"][0],
            CASES["AdEMAMix (L2 decay, pytorch_optimizer's default)"][1],
        )
    assert worst > 1e-4
