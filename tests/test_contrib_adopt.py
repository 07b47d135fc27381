"""ADOPT (Taniguchi et al. 2024, Alg. 1): the float64 reference, Optax's
``optax.contrib.adopt`` / ``scale_by_adopt``, and the two clipping counts."""

from __future__ import annotations

import jax.numpy as jnp
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
from tests.reference import adopt as reference

RTOL = {"float64": 1e-10, "float32": 1e-5}  # tests/test_reference_trajectories.py's


def reciprocal(eps0):
    return lambda k: eps0 / (1 + 0.05 * k)


CASES = [
    (
        "clipped-paper",
        lambda: gradtx.adopt(0.02),
        lambda th, g: reference.adopt(th, g, 0.02),
    ),
    (
        "clipped-authors",
        lambda: gradtx.adopt(0.02, b2=0.99, clip_form="authors"),
        lambda th, g: reference.adopt(th, g, 0.02, beta_2=0.99, clip_offset=1),
    ),
    (
        "unclipped-b1-zero",
        lambda: gradtx.adopt(0.01, b1=0.0, b2=0.9, use_clipping=False),
        lambda th, g: reference.adopt(th, g, 0.01, 0.0, 0.9, clip=None),
    ),
    (
        "nesterov-schedule-custom-clip",
        lambda: gradtx.adopt(
            reciprocal(0.03), 0.8, 0.999, 1e-3, nesterov=True, clip_value_fn=lambda t: 0.5 + 0.1 * t
        ),
        lambda th, g: reference.adopt(
            th, g, reciprocal(0.03), 0.8, 0.999, 1e-3, nesterov=True, clip=lambda t: 0.5 + 0.1 * t
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


def test_the_two_clipping_counts_differ():
    paper = reference.adopt(THETA0, GRADS_BY_STEP, 0.02)
    authors = reference.adopt(THETA0, GRADS_BY_STEP, 0.02, clip_offset=1)
    assert deviation(paper, authors) > 1e2 * RTOL["float32"]


# Optax's scale_by_adopt forms 1 - b2 from b2 rounded to the params' dtype: in
# float32, 1 - float32(0.9999) = 1.00002e-4, 1.7e-4 away from 1e-4 (gradtx forms
# 1 - b2 in float64, then rounds), which drifts the float32 runs ~1e-5 apart over
# 120 steps. Decays exact in float32 (dyadic) take that away: the float32 pairs
# use them; the float64 run adds the defaults.
B1, B2 = 0.875, 0.998046875  # 1 - 2^-3, 1 - 2^-9
PAIRS = [
    (lambda: gradtx.adopt(0.02, B1, B2), lambda: optax.contrib.adopt(0.02, B1, B2), 1.0),
    (
        lambda: gradtx.adopt(0.02, 0.75, B2, 1e-4, nesterov=True),
        lambda: optax.contrib.adopt(0.02, 0.75, B2, 1e-4, nesterov=True),
        1.0,
    ),
    (
        lambda: gradtx.adopt(0.01, B1, 0.9375, use_clipping=False),
        lambda: optax.contrib.adopt(0.01, B1, 0.9375, use_clipping=False),
        1.0,
    ),
    (
        lambda: gradtx.chain(
            gradtx.scale_by_adopt(B1, B2, clip_value_fn=lambda t: 0.3 + t**0.5),
            gradtx.scale_by_learning_rate(0.02),
        ),
        lambda: optax.chain(
            optax.contrib.scale_by_adopt(B1, B2, clip_value_fn=lambda t: 0.3 + t**0.5),
            optax.scale_by_learning_rate(0.02),
        ),
        1.0,
    ),
]
DEFAULTS = [
    (lambda: gradtx.adopt(0.02), lambda: optax.contrib.adopt(0.02), 1.0),
    (
        lambda: gradtx.adopt(0.02, nesterov=True, use_clipping=False),
        lambda: optax.contrib.adopt(0.02, nesterov=True, use_clipping=False),
        1.0,
    ),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_optax_contrib_parity(dtype):
    assert_optax_parity(PAIRS + (DEFAULTS if dtype == "float64" else []), dtype)


def test_the_first_call_only_sets_v():
    tx = gradtx.adopt(0.1)
    state = tx.init(jnp.zeros(2))
    updates, state = tx.update(jnp.array([3.0, -4.0]), state)
    assert bool(jnp.all(updates == 0))
    assert jnp.allclose(state[0].nu, jnp.array([9.0, 16.0]))


BAD = [
    (lambda: gradtx.adopt(float("inf")), r"adopt: learning_rate must be finite"),
    (lambda: gradtx.scale_by_adopt(b1=1.0), r"scale_by_adopt: b1 must be in \[0, 1\)"),
    (lambda: gradtx.adopt(0.1, b2=-0.1), r"scale_by_adopt: b2 must be in \[0, 1\)"),
    (lambda: gradtx.adopt(0.1, eps=-1e-6), r"scale_by_adopt: eps must be"),
    (lambda: gradtx.adopt(0.1, mu_dtype=jnp.int8), r"scale_by_adopt: mu_dtype must be"),
    (lambda: gradtx.adopt(0.1, clip_form="torch"), r"clip_form must be 'paper' or 'authors'"),
    (lambda: gradtx.scale_by_adopt(clip_value_fn=2.0), r"clip_value_fn must be a function"),
]


@pytest.mark.parametrize("make, message", BAD)
def test_bad_hyperparameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_inject_hyperparams_with_clip_value_fn_static():
    # clip_value_fn is a function of the step, not a schedule: as with Optax's
    # inject_hyperparams, it is named in static_args.
    injected = gradtx.inject_hyperparams(gradtx.adopt, static_args="clip_value_fn")(0.1)
    plain = gradtx.adopt(0.1)
    params = jnp.zeros(3)
    s1, s2 = injected.init(params), plain.init(params)
    for g in (jnp.array([1.0, -2.0, 0.5]), jnp.array([3.0, 0.1, -0.5])):
        u1, s1 = injected.update(g, s1)
        u2, s2 = plain.update(g, s2)
        assert jnp.allclose(u1, u2, rtol=1e-6)
    assert float(jnp.max(jnp.abs(u1))) > 0
