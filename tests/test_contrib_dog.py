"""Global DoG (Ivgi, Hinder & Carmon 2023, Alg. 1) and DoWG (Khaled, Mishchenko &
Jin 2023, Alg. 1) against their float64 references and Optax's
``optax.contrib.dog`` / ``optax.contrib.dowg``.

Tolerances, measured against ``|x| + 1`` as in tests/test_reference_trajectories.py:
float64 ``RTOL`` (1e-10) against the references and 1e-12 against Optax; float32
1e-6 against Optax, and ``RTOL`` (1e-5) against the float64 references for the
cases that start from a distance of 0.1 or more. From the default starts (DoG:
``r_eps`` ~ 5e-6, DoWG: ``r_eps^2`` = 1e-4) the distance grows geometrically for
many steps, each step's rounding compounding into the next, and float32 ends 4e-3
(DoG) and 2e-5 (DoWG) away from float64; gradtx's and Optax's float32 runs still
agree to 1e-6 there.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gradtx
from tests import parameter_free_harness as H
from tests.reference import dog as ref


def _decay(k):
    return 1.0 / (1 + 0.05 * k)


REFERENCE_CASES = {
    # id: (gradtx factory, reference function)
    "dog": (gradtx.dog, ref.dog, {}, {"heuristic": 1e-6}),
    "dog-distance-schedule": (
        gradtx.dog,
        ref.dog,
        {"learning_rate": _decay, "init_step": ("distance", 0.1), "eps": 1e-6},
        {"lr": _decay, "r_eps": 0.1, "eps": 1e-6},
    ),
    "dog-learning-rate-decay": (
        gradtx.dog,
        ref.dog,
        {"init_step": ("learning_rate", 0.01), "weight_decay": 0.1},
        {"eta_0": 0.01, "wd": 0.1},
    ),
    "dowg": (gradtx.dowg, ref.dowg, {}, {}),
    "dowg-start-schedule-decay": (
        gradtx.dowg,
        ref.dowg,
        {"learning_rate": _decay, "init_estim_sq_dist": 0.01, "eps": 1e-6, "weight_decay": 0.1},
        {"lr": _decay, "r_eps_sq": 0.01, "eps": 1e-6, "wd": 0.1},
    ),
}


@functools.cache
def _references():  # float64 numpy, once per process
    return {
        name: run(H.THETA0, H.NoisyQuadratic().grads, num_steps=H.NUM_STEPS, **kw)
        for name, (_, run, _, kw) in REFERENCE_CASES.items()
    }


@functools.cache
def _ours(dtype):
    makers = [functools.partial(make, **kw) for make, _, kw, _ in REFERENCE_CASES.values()]
    return dict(zip(REFERENCE_CASES, H.reference_runs(makers, dtype), strict=True))


TINY_START = {"dog", "dowg"}  # compared in float64 only (module docstring)
RUNS = [(name, "float64") for name in REFERENCE_CASES] + [
    (name, "float32") for name in REFERENCE_CASES if name not in TINY_START
]


@pytest.mark.parametrize("name, dtype", RUNS)
def test_matches_reference(name, dtype):
    want = _references()[name]
    assert max(float(np.max(np.abs(t[-1] - t[0]))) for t in want) > 0.1, "barely moved"
    worst = H.deviation(_ours(dtype)[name], list(want))
    assert worst <= H.RTOL[dtype], f"{name} [{dtype}]: {worst:.3e}"


def schedule(k):
    return 1.0 / (1 + 0.02 * k)


PARITY = {
    "dog": ("dog", {}),
    "dog-distance-schedule": ("dog", {"learning_rate": schedule, "init_step": ("distance", 0.1)}),
    "dog-learning-rate-decay": (
        "dog",
        {"init_step": ("learning_rate", 0.01), "weight_decay": 0.1, "eps": 1e-6},
    ),
    "dowg": ("dowg", {}),
    "dowg-start-schedule-decay": (
        "dowg",
        {"learning_rate": schedule, "init_estim_sq_dist": 0.01, "eps": 1e-6, "weight_decay": 0.1},
    ),
}


@functools.cache
def _parity(dtype):
    pairs = [
        (
            functools.partial(getattr(gradtx, name), **kw),
            functools.partial(getattr(optax.contrib, name), **kw),
        )
        for name, kw in PARITY.values()
    ]
    return dict(zip(PARITY, H.optax_runs(pairs, dtype), strict=True))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(PARITY))
def test_matches_optax(name, dtype):
    tol = 1e-6 if dtype == "float32" else 1e-12
    ours, theirs = _parity(dtype)[name]
    assert ours["w"].shape[0] == 120
    assert H.max_rel(ours, theirs) <= tol
    moved = max(
        float(np.ptp(np.asarray(t)[[0, -1]], axis=0).max()) for t in [theirs["w"], theirs["b"]]
    )
    assert moved > 0.05


BAD = [
    (gradtx.dog, {"init_step": ("guess", 1.0)}, r"dog: init_step's tag must be"),
    (gradtx.dog, {"init_step": 1e-6}, r"dog: init_step must be a pair"),
    (
        gradtx.dog,
        {"init_step": ("distance", 0.0)},
        r"dog: init_step value must be a finite number > 0",
    ),
    (gradtx.dog, {"eps": -1.0}, r"dog: eps must be a finite number >= 0"),
    (gradtx.dog, {"weight_decay": -1.0}, r"dog: weight_decay must be a finite number >= 0"),
    (gradtx.dog, {"learning_rate": float("inf")}, r"dog: learning_rate must be finite"),
    (
        gradtx.dowg,
        {"init_estim_sq_dist": 0.0},
        r"dowg: init_estim_sq_dist must be a finite number > 0",
    ),
    (gradtx.dowg, {"eps": -1.0}, r"dowg: eps must be a finite number >= 0"),
    (gradtx.dowg, {"eps": 0.0}, r"dowg: with init_estim_sq_dist=None the start is eps"),
    (gradtx.dowg, {"weight_decay": -1.0}, r"dowg: weight_decay must be a finite number >= 0"),
]


@pytest.mark.parametrize("factory, kwargs, message", BAD)
def test_validation(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


@pytest.mark.parametrize("factory", [gradtx.dog, gradtx.dowg])
def test_update_needs_params(factory):
    tx = factory()
    with pytest.raises(ValueError, match="pass them to update"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_learning_rate_init_step_sets_the_first_step_only():
    tx = gradtx.dog(init_step=("learning_rate", 0.25))
    x = jnp.array([1.0, 2.0])
    u, state = tx.update(jnp.array([2.0, -4.0]), tx.init(x), x)
    np.testing.assert_allclose(u, [-0.5, 1.0])
    assert not bool(state[1].is_init_step)
