"""MADGRAD against its float64 reference (Defazio & Jelassi 2021, Alg. 1) and Optax's contrib.

Every case of a dtype runs in one jitted program (tests/contrib_trajectories.py).
"""

from __future__ import annotations

import jax
import optax
import optax.contrib
import pytest

import gradtx
from tests import contrib_trajectories as H
from tests.reference import madgrad as R

THETA0, GRADS = H.make_data()
EPS = 1e-6
# Optax computes sqrt(k + 1) from its int32 count in float32 even with x64 on, so
# its float64 run carries float32 roundings of lambda_k (measured 1.5e-8 of the
# scale over 120 steps); its float64 bound is the float32 one.
OPTAX_TOL = {**H.OPTAX_TOL, "float64": H.OPTAX_TOL["float32"]}


def schedule(k):
    return 0.02 / (1 + 0.05 * k)


# (id, gradtx, Optax or None, reference keywords or None)
CASES = [
    (
        "default",
        lambda: gradtx.madgrad(0.01),
        lambda: optax.contrib.madgrad(0.01),
        dict(gamma=0.01, c=0.1, epsilon=EPS, gamma_shift=EPS),
    ),
    (
        "schedule, momentum 0.5, L2 decay",
        lambda: gradtx.madgrad(schedule, momentum=0.5, weight_decay=0.05),
        lambda: optax.contrib.madgrad(schedule, momentum=0.5, weight_decay=0.05),
        dict(gamma=schedule, c=0.5, epsilon=EPS, gamma_shift=EPS, decay=0.05),
    ),
    (
        "block, no momentum",
        lambda: gradtx.scale_by_madgrad(0.01, momentum=0.0, eps=1e-3),
        lambda: optax.contrib.scale_by_madgrad(0.01, momentum=0.0, eps=1e-3),
        dict(gamma=0.01, c=1.0, epsilon=1e-3, gamma_shift=1e-3),
    ),
    (
        "paper's lambda (eps_in_lambda=False)",
        lambda: gradtx.madgrad(0.01, eps_in_lambda=False),
        None,
        dict(gamma=0.01, c=0.1, epsilon=EPS),
    ),
    (
        "decoupled decay (weight_decouple=True)",
        lambda: gradtx.madgrad(schedule, weight_decay=0.1, weight_decouple=True),
        None,
        dict(gamma=schedule, c=0.1, epsilon=EPS, gamma_shift=EPS, decoupled_decay=0.1),
    ),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_madgrad_matches_reference_and_optax(dtype):
    ours = [make() for _, make, _, _ in CASES]
    theirs = [make() for _, _, make, _ in CASES if make is not None]
    with jax.enable_x64(dtype == "float64"):
        runs = H.trajectories(ours + theirs, THETA0, GRADS, dtype)
    optax_runs = iter(runs[len(ours) :])
    for (name, _, make_optax, ref), run in zip(CASES, runs, strict=False):
        H.assert_moved(run)
        expected = R.madgrad(THETA0, H.by_step(GRADS), **ref)
        H.assert_close(run, expected, H.REFERENCE_TOL[dtype], f"{name} vs reference")
        if make_optax is not None:
            H.assert_close(run, next(optax_runs), OPTAX_TOL[dtype], f"{name} vs Optax")


def test_eps_zero_and_no_gradient_gives_no_step():
    tx = gradtx.madgrad(0.1, eps=0.0, eps_in_lambda=False)
    w = jax.numpy.ones(3)
    updates, _ = tx.update(jax.numpy.zeros(3), tx.init(w), w)
    assert bool(jax.numpy.all(updates == 0))


@pytest.mark.parametrize(
    "factory, kwargs, message",
    [
        (gradtx.madgrad, dict(learning_rate=float("nan")), "madgrad: learning_rate"),
        (gradtx.madgrad, dict(learning_rate=0.1, momentum=1.0), r"madgrad: momentum .*\[0, 1\)"),
        (gradtx.madgrad, dict(learning_rate=0.1, eps=-1.0), "madgrad: eps"),
        (gradtx.madgrad, dict(learning_rate=0.1, weight_decay=-1.0), "madgrad: weight_decay"),
        (
            gradtx.scale_by_madgrad,
            dict(learning_rate=0.1, momentum=-0.1),
            "by_madgrad: momentum",
        ),
        (
            gradtx.scale_by_madgrad,
            dict(learning_rate=0.1, eps=float("inf")),
            "by_madgrad: eps",
        ),
    ],
)
def test_bad_hyperparameters_are_refused(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


def test_update_without_params_is_refused():
    tx = gradtx.scale_by_madgrad(0.1)
    w = jax.numpy.ones(2)
    with pytest.raises(ValueError, match="scale_by_madgrad: update needs the params"):
        tx.update(w, tx.init(w))
