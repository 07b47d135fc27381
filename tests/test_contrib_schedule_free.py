"""Schedule-Free (Defazio et al. 2024, Alg. 1): the float64 reference, Optax's
``optax.contrib.schedule_free*`` and the two warmup forms.

The reference runs (120 steps, three leaves) check both sequences: the params
(``y``) and the evaluation point (``x``, :func:`gradtx.schedule_free_eval_params`).
"""

from __future__ import annotations

import jax
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
from tests.reference import schedule_free as reference

RTOL = {"float64": 1e-10, "float32": 1e-5}  # tests/test_reference_trajectories.py's


def reciprocal(eps0):
    return lambda k: eps0 / (1 + 0.05 * k)


EVAL = gradtx.schedule_free_eval_params
WARMUP = reference.warmup

# (id, gradtx factory, reference run on (theta0, grads))
CASES = [
    (
        "sgd",
        lambda: gradtx.schedule_free_sgd(0.05),
        lambda th, g: reference.schedule_free(th, g, WARMUP(0.05, None)),
    ),
    (
        "sgd-warmup-decay-paper",
        lambda: gradtx.schedule_free_sgd(0.05, 20, b1=0.8, weight_decay=0.01),
        lambda th, g: reference.schedule_free(th, g, WARMUP(0.05, 20), 0.8, lam=0.01),
    ),
    (
        "sgd-warmup-optax",
        lambda: gradtx.schedule_free_sgd(0.05, 20, warmup_form="optax"),
        lambda th, g: reference.schedule_free(th, g, WARMUP(0.05, 20), step_lag=1),
    ),
    (
        "adamw-warmup-decay-paper",
        lambda: gradtx.schedule_free_adamw(0.02, 10, b2=0.99, weight_decay=0.01),
        lambda th, g: reference.schedule_free(
            th, g, WARMUP(0.02, 10), adam=True, beta_2=0.99, lam=0.01
        ),
    ),
    (
        "adamw-warmup-optax",
        lambda: gradtx.schedule_free_adamw(0.02, 10, warmup_form="optax"),
        lambda th, g: reference.schedule_free(th, g, WARMUP(0.02, 10), adam=True, step_lag=1),
    ),
    (
        "wrapper-schedule-power-1",
        lambda: gradtx.schedule_free(
            gradtx.sgd(reciprocal(0.1)), reciprocal(0.1), b1=0.5, weight_lr_power=1.0
        ),
        lambda th, g: reference.schedule_free(th, g, reciprocal(0.1), 0.5, r=1.0, step_lag=1),
    ),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_trajectories_match_the_reference(dtype):
    runs = gradtx_runs([(make, EVAL) for _, make, _ in CASES], dtype)
    for (name, _, run_reference), (ys, xs) in zip(CASES, runs, strict=True):
        want_y, want_x = run_reference(THETA0, GRADS_BY_STEP)
        moved = max(float(np.max(np.abs(w[-1] - w[0]))) for w in want_x)
        assert moved > 0.02, name
        for got, want, what in ((ys, want_y, "y"), (xs, want_x, "x")):
            worst = deviation(got, want)
            assert worst <= RTOL[dtype], f"{name} {what} [{dtype}]: {worst:.3e}"


def test_the_two_warmup_forms_differ():
    paper = reference.schedule_free(THETA0, GRADS_BY_STEP, WARMUP(0.05, 20))[0]
    lagged = reference.schedule_free(THETA0, GRADS_BY_STEP, WARMUP(0.05, 20), step_lag=1)[0]
    assert deviation(paper, lagged) > 1e3 * RTOL["float32"]


PAIRS = [
    (
        lambda: gradtx.schedule_free_sgd(0.1),
        lambda: optax.contrib.schedule_free_sgd(0.1),
        1.0,
    ),
    (
        lambda: gradtx.schedule_free_sgd(0.1, 10, 0.8, 1e-2, 1.5, warmup_form="optax"),
        lambda: optax.contrib.schedule_free_sgd(0.1, 10, 0.8, 1e-2, 1.5),
        1.0,
    ),
    (
        lambda: gradtx.schedule_free_adamw(0.05, b1=0.5, b2=0.99, weight_decay=1e-2),
        lambda: optax.contrib.schedule_free_adamw(0.05, b1=0.5, b2=0.99, weight_decay=1e-2),
        1.0,
    ),
    (
        lambda: gradtx.schedule_free_adamw(0.05, 10, weight_decay=1e-2, warmup_form="optax"),
        lambda: optax.contrib.schedule_free_adamw(0.05, 10, weight_decay=1e-2),
        1.0,
    ),
    (
        lambda: gradtx.schedule_free(gradtx.adam(0.05, b1=0.0), 0.05, 0.95, 1.0),
        lambda: optax.contrib.schedule_free(optax.adam(0.05, b1=0.0), 0.05, 0.95, 1.0),
        1.0,
    ),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_optax_contrib_parity(dtype):
    # float64: Optax's warmup schedule returns float32 even under x64
    # (optax.warmup_constant_schedule(0, 0.05, 10)(3) = 0.015000001), which
    # leaves up to 2e-8 on the warmup pairs; 1e-6 is the task's bound.
    tol = {"rtol": 1e-6, "atol": 1e-7} if dtype == "float64" else None
    assert_optax_parity(PAIRS, dtype, tol)


def test_eval_params_agree_with_optaxs_and_find_a_nested_state():
    params = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    tx = gradtx.chain(gradtx.clip(1.0), gradtx.schedule_free_sgd(0.1))
    state = tx.init(params)
    for k in range(3):
        grads = jax.tree.map(lambda p, k=k: p + k, params)
        updates, state = tx.update(grads, state, params)
        params = gradtx.apply_updates(params, updates)
    ours = gradtx.schedule_free_eval_params(state, params)
    theirs = optax.contrib.schedule_free_eval_params(state[1], params)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match="holds no ScheduleFreeState"):
        gradtx.schedule_free_eval_params(gradtx.adam(0.1).init(params), params)


def test_update_needs_the_params():
    tx = gradtx.schedule_free_sgd()
    with pytest.raises(ValueError, match="schedule_free: update needs the params"):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))


BAD = [
    (lambda: gradtx.schedule_free(gradtx.sgd(0.1), 0.1, b1=0.0), r"schedule_free: b1 must be"),
    (lambda: gradtx.schedule_free(gradtx.sgd(0.1), 0.1, b1=1.5), r"schedule_free: b1 must be"),
    (lambda: gradtx.schedule_free(gradtx.sgd(0.1), float("nan")), r"learning_rate must be finite"),
    (
        lambda: gradtx.schedule_free(gradtx.sgd(0.1), 0.1, weight_lr_power=float("inf")),
        r"weight_lr_power must be finite",
    ),
    (
        lambda: gradtx.schedule_free(gradtx.sgd(0.1), 0.1, state_dtype=jnp.int32),
        r"state_dtype must be None or a floating",
    ),
    (lambda: gradtx.schedule_free_sgd(warmup_steps=0), r"schedule_free_sgd: warmup_steps must be"),
    (lambda: gradtx.schedule_free_sgd(weight_decay=-1.0), r"schedule_free_sgd: weight_decay"),
    (
        lambda: gradtx.schedule_free_sgd(warmup_steps=3, warmup_form="torch"),
        r"warmup_form must be 'paper' or 'optax'",
    ),
    (lambda: gradtx.schedule_free_adamw(b2=1.0), r"b2|decay"),
    (lambda: gradtx.schedule_free_adamw(eps=-1.0), r"eps must be"),
    (lambda: gradtx.schedule_free_adamw(warmup_steps=2.5), r"warmup_steps must be an integer"),
]


@pytest.mark.parametrize("make, message", BAD)
def test_bad_hyperparameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
