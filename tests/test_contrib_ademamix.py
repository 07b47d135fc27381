"""AdEMAMix (Pagliardini et al. 2024, Alg. 1) and simplified AdEMAMix (Morwani et
al. 2024): the float64 reference, Optax's ``optax.contrib`` forms, and the two
weight-decay couplings."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gradtx
from tests.contrib_runs import (
    GRADS_BY_STEP,
    THETA0,
    assert_optax_parity,
    deviation,
    gradtx_runs,
)
from tests.reference import ademamix as reference

RTOL = {"float64": 1e-10, "float32": 1e-5}  # tests/test_reference_trajectories.py's


def alpha_warmup(alpha, steps):
    """The paper's alpha scheduler, ``min(k alpha / T, alpha)``, of the 0-based step.

    ``k * (1 / T)``, not ``k / T``: JAX divides an int32 array in float32 even
    with x64 enabled (see tests/test_reference_trajectories.py).
    """
    return lambda k: alpha * jnp.minimum(k * (1.0 / steps), 1.0)


def alpha_warmup_numpy(alpha, steps):
    return lambda k: alpha * min(k / steps, 1.0)


def b3_warmup(b3, b1, steps):
    """The paper's beta_3 scheduler: the half-life goes log-linearly from b1's to b3's."""
    log_b1, log_b3 = float(np.log(b1)), float(np.log(b3))

    def schedule(k):
        frac = jnp.minimum(k * (1.0 / steps), 1.0)
        return jnp.minimum(jnp.exp(log_b1 * log_b3 / ((1 - frac) * log_b3 + frac * log_b1)), b3)

    return schedule


def b3_warmup_numpy(b3, b1, steps):
    log_b1, log_b3 = np.log(b1), np.log(b3)

    def schedule(k):
        frac = min(k / steps, 1.0)
        return min(np.exp(log_b1 * log_b3 / ((1 - frac) * log_b3 + frac * log_b1)), b3)

    return schedule


CASES = [
    (
        "ademamix-decoupled",
        lambda: gradtx.ademamix(0.01, b3=0.99, weight_decay=0.05),
        lambda th, g: reference.ademamix(th, g, 0.01, beta_3=0.99, lam=0.05),
    ),
    (
        "ademamix-coupled",
        lambda: gradtx.ademamix(0.01, b3=0.99, weight_decay=0.05, decoupled_weight_decay=False),
        lambda th, g: reference.ademamix(th, g, 0.01, beta_3=0.99, lam=0.05, coupled=True),
    ),
    (
        "ademamix-schedulers",
        lambda: gradtx.ademamix(
            0.01, 0.9, 0.99, b3_warmup(0.999, 0.9, 60), alpha_warmup(8.0, 50), 1e-6
        ),
        lambda th, g: reference.ademamix(
            th,
            g,
            0.01,
            0.9,
            0.99,
            b3_warmup_numpy(0.999, 0.9, 60),
            alpha_warmup_numpy(8.0, 50),
            1e-6,
        ),
    ),
    (
        "simplified",
        lambda: gradtx.simplified_ademamix(0.002, alpha=2.0, weight_decay=0.1),
        lambda th, g: reference.simplified_ademamix(th, g, 0.002, alpha=2.0, lam=0.1),
    ),
    (
        "simplified-alpha-schedule",
        lambda: gradtx.simplified_ademamix(0.002, 0.9, 0.99, alpha_warmup(5.0, 40)),
        lambda th, g: reference.simplified_ademamix(
            th, g, 0.002, 0.9, 0.99, alpha_warmup_numpy(5.0, 40)
        ),
    ),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_trajectories_match_the_reference(dtype):
    runs = gradtx_runs([(make, None) for _, make, _ in CASES], dtype)
    for (name, _, run_reference), (got, _) in zip(CASES, runs, strict=True):
        want = run_reference(THETA0, GRADS_BY_STEP)
        assert max(float(abs(w[-1] - w[0]).max()) for w in want) > 0.02, name
        worst = deviation(got, want)
        assert worst <= RTOL[dtype], f"{name} [{dtype}]: {worst:.3e}"


def test_the_two_decay_couplings_differ():
    decoupled = reference.ademamix(THETA0, GRADS_BY_STEP, 0.01, beta_3=0.99, lam=0.05)
    coupled = reference.ademamix(THETA0, GRADS_BY_STEP, 0.01, beta_3=0.99, lam=0.05, coupled=True)
    assert deviation(decoupled, coupled) > 1e2 * RTOL["float32"]


# Optax forms 1 - b from b rounded to the params' dtype (in float32, 1 - 0.9999
# becomes 1.00002e-4) where gradtx forms it in float64 and then rounds: the
# float32 pairs use decays exact in float32 (dyadic); the float64 run adds
# Optax's defaults. See tests/test_contrib_adopt.py.
B1, B2, B3 = 0.875, 0.998046875, 0.9990234375  # 1 - 2^-3, 1 - 2^-9, 1 - 2^-10
PAIRS = [
    (
        lambda: gradtx.ademamix(0.01, B1, B2, B3, 4.0, weight_decay=0.05),
        lambda: optax.contrib.ademamix(0.01, B1, B2, B3, 4.0, weight_decay=0.05),
        1.0,
    ),
    (
        lambda: gradtx.chain(
            gradtx.scale_by_ademamix(B1, B2, lambda k: B3, lambda k: 0.05 * k, 1e-6, 1e-8),
            gradtx.scale_by_learning_rate(0.01),
        ),
        lambda: optax.chain(
            optax.contrib.scale_by_ademamix(B1, B2, lambda k: B3, lambda k: 0.05 * k, 1e-6, 1e-8),
            optax.scale_by_learning_rate(0.01),
        ),
        1.0,
    ),
    (
        lambda: gradtx.simplified_ademamix(0.002, B1, 0.9375, 2.0, weight_decay=0.1),
        lambda: optax.contrib.simplified_ademamix(0.002, B1, 0.9375, 2.0, weight_decay=0.1),
        1.0,
    ),
    (
        lambda: gradtx.chain(
            gradtx.scale_by_simplified_ademamix(0.75, B2, lambda k: 0.1 * k, 1e-6, 1e-8),
            gradtx.scale_by_learning_rate(0.002),
        ),
        lambda: optax.chain(
            optax.contrib.scale_by_simplified_ademamix(0.75, B2, lambda k: 0.1 * k, 1e-6, 1e-8),
            optax.scale_by_learning_rate(0.002),
        ),
        1.0,
    ),
]
DEFAULTS = [
    (
        lambda: gradtx.ademamix(0.01, weight_decay=0.05),
        lambda: optax.contrib.ademamix(0.01, weight_decay=0.05),
        1.0,
    ),
    (
        lambda: gradtx.simplified_ademamix(0.002, alpha=1.0),
        lambda: optax.contrib.simplified_ademamix(0.002, alpha=1.0),
        1.0,
    ),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_optax_contrib_parity(dtype):
    # float32: atol 1e-6 (test_optax_parity's 5e-7 is a few ulps of its
    # trajectories' scale): 1 - b2^t in float32 is rounded differently by the two
    # (a float power against an integer one), and the simplified form's undamped
    # momentum multiplies each step by 1 / (1 - b1). Measured: 9.6e-7.
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == "float32" else None
    assert_optax_parity(PAIRS + (DEFAULTS if dtype == "float64" else []), dtype, tol)


BAD = [
    (lambda: gradtx.ademamix(float("nan")), r"ademamix: learning_rate must be finite"),
    (lambda: gradtx.ademamix(0.1, b1=1.0), r"scale_by_ademamix: b1 must be in \[0, 1\)"),
    (lambda: gradtx.scale_by_ademamix(b3=1.5), r"scale_by_ademamix: b3 must be in \[0, 1\)"),
    (lambda: gradtx.scale_by_ademamix(alpha=float("inf")), r"scale_by_ademamix: alpha must be"),
    (lambda: gradtx.ademamix(0.1, eps=-1.0), r"scale_by_ademamix: eps must be"),
    (lambda: gradtx.ademamix(0.1, eps_root=-1.0), r"scale_by_ademamix: eps_root must be"),
    (lambda: gradtx.ademamix(0.1, mu_dtype=jnp.int32), r"scale_by_ademamix: mu_dtype must be"),
    (lambda: gradtx.ademamix(0.1, weight_decay=-1.0), r"weight_decay"),
    (
        lambda: gradtx.simplified_ademamix(0.1, b2=-0.5),
        r"scale_by_simplified_ademamix: b2 must be in \[0, 1\)",
    ),
    (
        lambda: gradtx.scale_by_simplified_ademamix(alpha=float("nan")),
        r"scale_by_simplified_ademamix: alpha must be",
    ),
]


@pytest.mark.parametrize("make, message", BAD)
def test_bad_hyperparameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
