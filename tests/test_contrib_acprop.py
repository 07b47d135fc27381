"""ACProp against its float64 reference (Zhuang et al. 2021, Alg. 2) and Optax's contrib.

Every case of a dtype runs in one jitted program (tests/contrib_trajectories.py).
"""

from __future__ import annotations

import jax
import optax
import optax.contrib
import pytest

import gradtx
from tests import contrib_trajectories as H
from tests.reference import acprop as R

THETA0, GRADS = H.make_data(seed=7)


def schedule(k):
    return 0.02 / (1 + 0.05 * k)


# (id, gradtx, Optax or None, reference keywords)
CASES = [
    (
        "default",
        lambda: gradtx.acprop(0.01),
        lambda: optax.contrib.acprop(0.01),
        dict(alpha=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-16, epsilon_s=1e-16),
    ),
    (
        "schedule, b1 0.5, b2 0.99, decay",
        lambda: gradtx.acprop(schedule, 0.5, 0.99, 1e-8, 1e-10, weight_decay=0.05),
        lambda: optax.contrib.acprop(schedule, 0.5, 0.99, 1e-8, 1e-10, weight_decay=0.05),
        dict(alpha=schedule, beta_1=0.5, beta_2=0.99, epsilon=1e-8, epsilon_s=1e-10, lam=0.05),
    ),
    (
        "block, b1 0",
        lambda: gradtx.chain(gradtx.scale_by_acprop(b1=0.0), gradtx.scale(-0.01)),
        lambda: optax.chain(optax.contrib.scale_by_acprop(b1=0.0), optax.scale(-0.01)),
        dict(alpha=0.01, beta_1=0.0, beta_2=0.999, epsilon=1e-16, epsilon_s=1e-16),
    ),
    (
        "centred on m_t (centre_on_new_momentum=True)",
        lambda: gradtx.acprop(0.01, centre_on_new_momentum=True),
        None,
        dict(
            alpha=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-16, epsilon_s=1e-16, centre_on_new=True
        ),
    ),
    (
        "the authors' momentum_update (momentum_numerator=True), decay",
        lambda: gradtx.acprop(
            0.01, weight_decay=0.01, centre_on_new_momentum=True, momentum_numerator=True
        ),
        None,
        dict(
            alpha=0.01,
            beta_1=0.9,
            beta_2=0.999,
            epsilon=1e-16,
            epsilon_s=1e-16,
            lam=0.01,
            centre_on_new=True,
            momentum_numerator=True,
        ),
    ),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_acprop_matches_reference_and_optax(dtype):
    ours = [make() for _, make, _, _ in CASES]
    theirs = [make() for _, _, make, _ in CASES if make is not None]
    with jax.enable_x64(dtype == "float64"):
        runs = H.trajectories(ours + theirs, THETA0, GRADS, dtype)
    optax_runs = iter(runs[len(ours) :])
    for (name, _, make_optax, ref), run in zip(CASES, runs, strict=False):
        H.assert_moved(run)
        expected = R.acprop(THETA0, H.by_step(GRADS), **ref)
        H.assert_close(run, expected, H.REFERENCE_TOL[dtype], f"{name} vs reference")
        if make_optax is not None:
            H.assert_close(run, next(optax_runs), H.OPTAX_TOL[dtype], f"{name} vs Optax")


def test_centring_choice_changes_the_trajectory():
    runs = H.trajectories(
        [gradtx.acprop(0.01), gradtx.acprop(0.01, centre_on_new_momentum=True)],
        THETA0,
        GRADS,
        "float32",
    )
    assert max(abs(a[-1] - b[-1]).max() for a, b in zip(*runs, strict=True)) > 1e-3


@pytest.mark.parametrize(
    "factory, kwargs, error, message",
    [
        (gradtx.acprop, dict(learning_rate=float("nan")), ValueError, "acprop: learning_rate"),
        (gradtx.scale_by_acprop, dict(b1=1.0), ValueError, r"scale_by_acprop: b1 .*\[0, 1\)"),
        (gradtx.scale_by_acprop, dict(b2=-0.1), ValueError, "scale_by_acprop: b2"),
        (gradtx.scale_by_acprop, dict(eps=-1.0), ValueError, "scale_by_acprop: eps"),
        (gradtx.scale_by_acprop, dict(eps_root=-1.0), ValueError, "scale_by_acprop: eps_root"),
        (
            gradtx.scale_by_acprop,
            dict(centre_on_new_momentum=1),
            TypeError,
            "centre_on_new_momentum must be a bool",
        ),
        (
            gradtx.scale_by_acprop,
            dict(momentum_numerator="yes"),
            TypeError,
            "momentum_numerator must be a bool",
        ),
        (
            gradtx.acprop,
            dict(learning_rate=0.1, weight_decay=-1.0),
            ValueError,
            "add_decayed_weights: weight_decay",
        ),
    ],
)
def test_bad_hyperparameters_are_refused(factory, kwargs, error, message):
    with pytest.raises(error, match=message):
        factory(**kwargs)
