"""Lion, signSGD/Signum, AdaBelief, Yogi, NAdamW, AdaMaxW, noisy SGD and the
optimistic methods reproduce their independent numpy references, step by step.

The harness, data and tolerances are ``tests/test_reference_trajectories.py``'s:
each case drives the jitted optimizer (one ``lax.scan`` per case, the cases of a
group compiled together) with the same 120 recorded random gradients on a
three-leaf pytree, and compares the parameters after every step with a float64
loop written from the paper's pseudo-code (``tests/reference``): float64 within
``rtol = 1e-10``, float32 within ``1e-5``, both against ``|reference| + 1``.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

import gradtx
from tests import reference as R
from tests.reference import noise as noise_reference
from tests.test_noise import standard_normals
from tests.test_reference_trajectories import (
    DECAY_MASK,
    GRADS_BY_STEP,
    NUM_STEPS,
    RTOL,
    SHAPES,
    THETA0,
    Case,
    deviation,
    exponential,
    gradtx_trajectories,
    reciprocal,
)

MASK = jax.tree.leaves(DECAY_MASK)  # per leaf, in jax.tree order: b, w, temperature
LEAF_SHAPES = [np.shape(t) for t in THETA0]
NOISE_SEED = 7
Z = standard_normals(NOISE_SEED, NUM_STEPS, LEAF_SHAPES)

CHEN, BERNSTEIN = "Chen et al. 2023 Alg. 2", "Bernstein et al. 2018"
ZHUANG, ZAHEER = "Zhuang et al. 2020 Alg. 2", "Zaheer et al. 2018 Alg. 2"
DOZAT_LH = "Dozat 2016 Alg. 2 + Loshchilov & Hutter 2019"
KB_LH = "Kingma & Ba 2015 Alg. 2 + Loshchilov & Hutter 2019"
NEELAKANTAN = "Neelakantan et al. 2015 Sec. 2"
OGD, OADAM = "optimistic GD (Daskalakis 2018; Mokhtari 2020)", "Daskalakis et al. 2018 Alg. 1"


def _then_rate(block, learning_rate):
    return gradtx.chain(block, gradtx.scale_by_learning_rate(learning_rate))


def _times(factor, schedule):
    return lambda k: factor * schedule(k)


CASES = [
    # Lion
    Case(
        "lion-defaults",
        "lion",
        CHEN,
        lambda: gradtx.lion(0.01),
        lambda th, g: R.lion.lion(th, g, 0.01, 0.9, 0.99, 1e-3),
    ),
    Case(
        "lion-schedules-mask",
        "lion",
        CHEN,
        lambda: gradtx.lion(
            reciprocal(0.02), b1=0.5, b2=0.9, weight_decay=exponential(0.2), mask=DECAY_MASK
        ),
        lambda th, g: R.lion.lion(th, g, reciprocal(0.02), 0.5, 0.9, exponential(0.2), mask=MASK),
    ),
    Case(
        "lion-b1-zero-is-sign-sgd",
        "lion",
        CHEN,
        lambda: gradtx.lion(0.01, b1=0.0, weight_decay=0.0),
        lambda th, g: R.sign.sign_sgd(th, g, 0.01),
    ),
    Case(
        "scale_by_lion-smooth",
        "scale_by_lion",
        CHEN + ", tanh",
        lambda: _then_rate(gradtx.scale_by_lion(mode="smooth", smooth_beta=2.0), 0.01),
        lambda th, g: R.lion.lion(th, g, 0.01, 0.9, 0.99, mode="smooth", smooth_beta=2.0),
    ),
    Case(
        "scale_by_lion-refined",
        "scale_by_lion",
        CHEN + ", refined",
        lambda: _then_rate(gradtx.scale_by_lion(0.8, 0.95, mode="refined"), 0.01),
        lambda th, g: R.lion.lion(th, g, 0.01, 0.8, 0.95, mode="refined"),
    ),
    # signSGD and Signum
    Case(
        "sign_sgd",
        "sign_sgd",
        BERNSTEIN + " Alg. 1",
        lambda: gradtx.sign_sgd(0.01),
        lambda th, g: R.sign.sign_sgd(th, g, 0.01),
    ),
    Case(
        "sign_sgd-schedule",
        "sign_sgd",
        BERNSTEIN + " Alg. 1",
        lambda: gradtx.sign_sgd(exponential(0.02)),
        lambda th, g: R.sign.sign_sgd(th, g, exponential(0.02)),
    ),
    Case(
        "signum",
        "signum",
        BERNSTEIN + " Alg. 3",
        lambda: gradtx.signum(0.01),
        lambda th, g: R.sign.signum(th, g, 0.01, 0.9),
    ),
    Case(
        "signum-schedule-beta",
        "signum",
        BERNSTEIN + " Alg. 3",
        lambda: gradtx.signum(reciprocal(0.02), beta=0.5),
        lambda th, g: R.sign.signum(th, g, reciprocal(0.02), 0.5),
    ),
    # AdaBelief
    Case(
        "adabelief-defaults",
        "adabelief",
        ZHUANG,
        lambda: gradtx.adabelief(0.01),
        lambda th, g: R.adabelief.adabelief(th, g, 0.01, 0.9, 0.999, 1e-16),
    ),
    Case(
        "adabelief-schedule-args",
        "adabelief",
        ZHUANG + ", eps inside != outside",
        lambda: gradtx.adabelief(reciprocal(0.02), b1=0.5, b2=0.99, eps=1e-6, eps_root=1e-8),
        lambda th, g: R.adabelief.adabelief(
            th, g, reciprocal(0.02), 0.5, 0.99, 1e-6, epsilon_s=1e-8
        ),
    ),
    # Yogi
    Case(
        "yogi-defaults",
        "yogi",
        ZAHEER + ", v_0 = 1e-6, bias correction",
        lambda: gradtx.yogi(0.01),
        lambda th, g: R.yogi.yogi(th, g, 0.01, 0.9, 0.999, 1e-3, v_0=1e-6, debias=True),
    ),
    Case(
        "yogi-optax-start",
        "yogi",
        ZAHEER + ", m_0 = v_0 = 1e-6, bias correction",
        lambda: gradtx.yogi(0.01, initial_mu_value=1e-6),
        lambda th, g: R.yogi.yogi(th, g, 0.01, 0.9, 0.999, 1e-3, m_0=1e-6, v_0=1e-6, debias=True),
    ),
    Case(
        "yogi-paper",
        "yogi",
        ZAHEER,
        lambda: gradtx.yogi(0.01, bias_correction=False, initial_accumulator_value=0.0),
        lambda th, g: R.yogi.yogi(th, g, 0.01, 0.9, 0.999, 1e-3),
    ),
    Case(
        "yogi-schedule-args",
        "yogi",
        ZAHEER + ", v_0 = 1e-6, bias correction",
        lambda: gradtx.yogi(reciprocal(0.02), b1=0.5, b2=0.9, eps=1e-4),
        lambda th, g: R.yogi.yogi(th, g, reciprocal(0.02), 0.5, 0.9, 1e-4, v_0=1e-6, debias=True),
    ),
    # NAdamW and AdaMaxW
    Case(
        "nadamw-defaults",
        "nadamw",
        DOZAT_LH,
        lambda: gradtx.nadamw(0.01, weight_decay=0.1),
        lambda th, g: R.nadam.nadam(th, g, 0.01, 0.9, 0.999, 1e-8, lam=0.1),
    ),
    Case(
        "nadamw-constant-momentum-schedule-mask",
        "nadamw(momentum_decay=None)",
        DOZAT_LH + ", constant mu_t",
        lambda: gradtx.nadamw(
            reciprocal(0.02), weight_decay=0.5, mask=DECAY_MASK, momentum_decay=None
        ),
        lambda th, g: R.nadam.nadam(
            th, g, reciprocal(0.02), 0.9, 0.999, 1e-8, psi=None, lam=0.5, mask=MASK
        ),
    ),
    Case(
        "adamaxw-defaults",
        "adamaxw",
        KB_LH,
        lambda: gradtx.adamaxw(0.01, weight_decay=0.1),
        lambda th, g: R.adamax.adamax(th, g, 0.01, 0.9, 0.999, 1e-8, lam=0.1),
    ),
    Case(
        "adamaxw-schedule-mask",
        "adamaxw",
        KB_LH,
        lambda: gradtx.adamaxw(
            reciprocal(0.02), b1=0.5, b2=0.9, eps=1e-3, weight_decay=0.5, mask=DECAY_MASK
        ),
        lambda th, g: R.adamax.adamax(th, g, reciprocal(0.02), 0.5, 0.9, 1e-3, lam=0.5, mask=MASK),
    ),
    # Noisy SGD: the reference is fed the standard normals of add_noise's key schedule.
    Case(
        "noisy_sgd",
        "noisy_sgd",
        NEELAKANTAN,
        lambda: gradtx.noisy_sgd(0.05, eta=0.3, key=NOISE_SEED),
        lambda th, g: noise_reference.noisy_sgd(th, g, Z, 0.05, 0.3, 0.55),
    ),
    Case(
        "noisy_sgd-schedule-seed",
        "noisy_sgd",
        NEELAKANTAN,
        lambda: gradtx.noisy_sgd(reciprocal(0.05), 1.0, 0.3, seed=NOISE_SEED),
        lambda th, g: noise_reference.noisy_sgd(th, g, Z, reciprocal(0.05), 1.0, 0.3),
    ),
    # Optimistic gradient descent and Optimistic Adam
    Case(
        "optimistic_gradient_descent",
        "optimistic_gradient_descent",
        OGD,
        lambda: gradtx.optimistic_gradient_descent(0.01),
        lambda th, g: R.optimistic.ogd(th, g, 0.01),
    ),
    Case(
        "optimistic_gradient_descent-schedules",
        "optimistic_gradient_descent",
        OGD,
        lambda: gradtx.optimistic_gradient_descent(
            reciprocal(0.02), alpha=exponential(0.5), beta=2.0
        ),
        lambda th, g: R.optimistic.ogd(th, g, reciprocal(0.02), exponential(0.5), 2.0),
    ),
    Case(
        "optimistic_adam_v2-paper",
        "optimistic_adam_v2",
        OADAM,
        lambda: gradtx.optimistic_adam_v2(0.01, nesterov=False),
        lambda th, g: R.optimistic.optimistic_adam(th, g, 0.01, 0.9, 0.999, 1e-8),
    ),
    Case(
        "optimistic_adam_v2-schedule-args",
        "optimistic_adam_v2",
        OADAM,
        lambda: gradtx.optimistic_adam_v2(
            reciprocal(0.02), alpha=0.5, beta=2.0, b1=0.5, b2=0.99, eps=1e-6, nesterov=False
        ),
        lambda th, g: R.optimistic.optimistic_adam(
            th,
            g,
            _times(0.5, reciprocal(0.02)),
            0.5,
            0.99,
            1e-6,
            optimism=_times(2.0, reciprocal(0.02)),
        ),
    ),
    Case(
        "optimistic_adam-paper",
        "optimistic_adam",
        OADAM,
        lambda: gradtx.optimistic_adam(0.01, nesterov=False),
        lambda th, g: R.optimistic.optimistic_adam(th, g, 0.01, 0.9, 0.999, 1e-8),
    ),
    Case(
        "optimistic_adam-schedule-optimism",
        "optimistic_adam",
        OADAM,
        lambda: gradtx.optimistic_adam(reciprocal(0.02), 0.005, b2=0.99, nesterov=False),
        lambda th, g: R.optimistic.optimistic_adam(
            th, g, reciprocal(0.02), 0.9, 0.99, 1e-8, optimism=0.005
        ),
    ),
]
CASES_BY_ID = {case.id: case for case in CASES}
assert len(CASES_BY_ID) == len(CASES)

RUNS = [(case, dtype) for case in CASES for dtype in case.dtypes]
GROUP = 9  # cases compiled together in one jitted program (per dtype)


@functools.cache
def _group_trajectories(dtype: str, index: int):
    members = [case for case, d in RUNS if d == dtype][index * GROUP : (index + 1) * GROUP]
    return gradtx_trajectories(members, dtype)


@functools.cache
def reference_trajectory(case_id: str):
    return tuple(CASES_BY_ID[case_id].run_reference(THETA0, GRADS_BY_STEP))


@pytest.mark.parametrize("case, dtype", RUNS, ids=[f"{c.id}-{d}" for c, d in RUNS])
def test_trajectory_matches_reference(case, dtype):
    want = list(reference_trajectory(case.id))
    ids = [c.id for c, d in RUNS if d == dtype]
    got = _group_trajectories(dtype, ids.index(case.id) // GROUP)[case.id]
    assert np.all(np.isfinite(np.concatenate([w.ravel() for w in want])))
    moved = max(float(np.max(np.abs(w[-1] - w[0]))) for w in want)
    assert moved > 0.02, f"{case.id}: the reference barely moved ({moved})"
    worst = deviation(got, want)
    assert worst <= RTOL[dtype], f"{case.id} [{dtype}]: deviation {worst:.3e} > {RTOL[dtype]}"


def test_every_new_optimizer_has_a_reference_case():
    named = {
        "lion", "scale_by_lion", "sign_sgd", "signum", "adabelief", "yogi", "nadamw",
        "adamaxw", "noisy_sgd", "optimistic_gradient_descent", "optimistic_adam_v2",
        "optimistic_adam",
    }  # fmt: skip
    covered = {case.optimizer.split("(")[0] for case in CASES}
    assert named <= covered, named - covered
    assert len(SHAPES) >= 2 and len(THETA0) == 3  # several leaves, one of them a scalar


# Each pair of conventions a case picks between must be far apart at these
# settings, or matching one of them proves nothing (as in the trajectory file).
DISTINCT = [
    (
        "Yogi as printed vs v_0 = 1e-6 and bias correction",
        lambda th, g: R.yogi.yogi(th, g, 0.01, 0.9, 0.999, 1e-3),
        lambda th, g: R.yogi.yogi(th, g, 0.01, 0.9, 0.999, 1e-3, v_0=1e-6, debias=True),
    ),
    (
        "optimistic first step: g_0 = g_1 vs g_0 = 0",
        lambda th, g: R.optimistic.ogd(th, g, 0.01),
        lambda th, g: R.optimistic.ogd(th, g, 0.01, first="zero"),
    ),
    (
        "Optimistic Adam: r_0 = r_1 vs r_0 = 0",
        lambda th, g: R.optimistic.optimistic_adam(th, g, 0.01, 0.9, 0.999, 1e-8),
        lambda th, g: R.optimistic.optimistic_adam(th, g, 0.01, 0.9, 0.999, 1e-8, first="zero"),
    ),
    (
        "Lion vs signSGD",
        lambda th, g: R.lion.lion(th, g, 0.01, 0.9, 0.99),
        lambda th, g: R.sign.sign_sgd(th, g, 0.01),
    ),
    (
        "AdaBelief vs Adam",
        lambda th, g: R.adabelief.adabelief(th, g, 0.01, 0.9, 0.999, 1e-16),
        lambda th, g: R.adam.adam(th, g, 0.01, 0.9, 0.999, 1e-16),
    ),
    (
        "NAdamW vs NAdam",
        lambda th, g: R.nadam.nadam(th, g, 0.01, 0.9, 0.999, 1e-8, lam=0.1),
        lambda th, g: R.nadam.nadam(th, g, 0.01, 0.9, 0.999, 1e-8),
    ),
    (
        "noisy SGD vs SGD",
        lambda th, g: noise_reference.noisy_sgd(th, g, Z, 0.05, 0.3, 0.55),
        lambda th, g: R.sgd.sgd(th, g, 0.05),
    ),
]


@pytest.mark.parametrize("name, first, second", DISTINCT, ids=[d[0] for d in DISTINCT])
def test_the_conventions_compared_are_far_apart(name, first, second):
    gap = deviation(first(THETA0, GRADS_BY_STEP), second(THETA0, GRADS_BY_STEP))
    assert gap > 100 * RTOL["float32"], f"{name}: only {gap:.2e} apart"
