"""MoMo and MoMo-Adam (Schaipp et al. 2023, Alg. 1 and 2) against their float64
references and Optax's ``optax.contrib.momo`` / ``optax.contrib.momo_adam``.

The loss is passed as ``value`` (both problems have a true loss). Tolerances,
measured against ``|x| + 1`` as in tests/test_reference_trajectories.py: float64
``RTOL`` (1e-10) against the references and 1e-12 against Optax; float32 1e-6
against Optax and 5e-5 against the float64 references: the model's gap
``fbar_k + <d_k, x_k> - gamma_k - f_*`` cancels terms of the loss's size, each
rounded in float32, and the Polyak step divides that gap (measured: 1.3e-5).
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
from tests.reference import momo as ref


def _decay(k):
    return 0.5 / (1 + 0.05 * k)


# The noisy quadratic's loss goes below 0 (its linear noise term): f_* = -5 bounds it.
REFERENCE_CASES = {
    # id: (gradtx factory, gradtx kwargs, reference, reference kwargs)
    "momo": (gradtx.momo, {"lower_bound": -5.0}, ref.momo, {"f_star": -5.0}),
    "momo-schedule-decay-beta": (
        gradtx.momo,
        {"learning_rate": _decay, "beta": 0.5, "lower_bound": -5.0, "weight_decay": 0.1},
        ref.momo,
        {"lr": _decay, "beta": 0.5, "f_star": -5.0, "wd": 0.1},
    ),
    "momo-schedule-decay-authors": (
        gradtx.momo,
        {
            "learning_rate": _decay,
            "lower_bound": -5.0,
            "weight_decay": 0.1,
            "decay_form": "authors",
        },
        ref.momo,
        {"lr": _decay, "f_star": -5.0, "wd": 0.1, "proximal": True},
    ),
    "momo-star": (
        gradtx.momo,
        {"lower_bound": -5.0, "adapt_lower_bound": True},
        ref.momo,
        {"f_star": -5.0, "adapt": True},
    ),
    "momo_adam": (
        gradtx.momo_adam,
        {"learning_rate": 0.1, "lower_bound": -5.0},
        ref.momo_adam,
        {"lr": 0.1, "f_star": -5.0},
    ),
    "momo_adam-betas-decay-star": (
        gradtx.momo_adam,
        {
            "learning_rate": _decay,
            "b1": 0.8,
            "b2": 0.99,
            "eps": 1e-6,
            "lower_bound": -5.0,
            "weight_decay": 0.1,
            "adapt_lower_bound": True,
        },
        ref.momo_adam,
        {
            "lr": _decay,
            "b1": 0.8,
            "b2": 0.99,
            "eps": 1e-6,
            "f_star": -5.0,
            "wd": 0.1,
            "adapt": True,
        },
    ),  # fmt: skip
    "momo_adam-decay-star-authors": (
        gradtx.momo_adam,
        {
            "learning_rate": 0.1,
            "lower_bound": -5.0,
            "weight_decay": 0.1,
            "adapt_lower_bound": True,
            "decay_form": "authors",
        },
        ref.momo_adam,
        {"lr": 0.1, "f_star": -5.0, "wd": 0.1, "adapt": True, "proximal": True},
    ),  # fmt: skip
}


FLOAT32_TOL = 5e-5  # see the module docstring


@functools.cache
def _references():  # float64 numpy, once per process
    return {
        name: run(H.THETA0, H.NoisyQuadratic(), H.NUM_STEPS, **kw)
        for name, (_, _, run, kw) in REFERENCE_CASES.items()
    }


@functools.cache
def _ours(dtype):
    makers = [functools.partial(make, **kw) for make, kw, _, _ in REFERENCE_CASES.values()]
    return dict(zip(REFERENCE_CASES, H.reference_runs(makers, dtype), strict=True))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(REFERENCE_CASES))
def test_matches_reference(name, dtype):
    want = _references()[name]
    assert max(float(np.max(np.abs(t[-1] - t[0]))) for t in want) > 0.1, "barely moved"
    worst = H.deviation(_ours(dtype)[name], list(want))
    tol = H.RTOL["float64"] if dtype == "float64" else FLOAT32_TOL
    assert worst <= tol, f"{name} [{dtype}]: {worst:.3e}"


def schedule(k):
    return 1.0 / (1 + 0.02 * k)


PARITY = {
    "momo": ("momo", {}),
    "momo-schedule-decay-beta": (
        "momo",
        {"learning_rate": schedule, "beta": 0.5, "weight_decay": 0.1, "lower_bound": 0.2},
    ),
    "momo-star": ("momo", {"adapt_lower_bound": True}),
    "momo_adam": ("momo_adam", {"learning_rate": 0.1}),
    "momo_adam-star-decay": (
        "momo_adam",
        {
            "learning_rate": schedule,
            "b1": 0.8,
            "b2": 0.99,
            "weight_decay": 0.1,
            "adapt_lower_bound": True,
        },
    ),  # fmt: skip
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
    assert float(np.ptp(np.asarray(theirs["w"])[[0, -1]], axis=0).max()) > 0.05


BAD = [
    (gradtx.momo, {"beta": 1.0}, r"momo: beta must be in \[0, 1\)"),
    (gradtx.momo, {"weight_decay": -1.0}, r"momo: weight_decay must be a finite number >= 0"),
    (gradtx.momo, {"lower_bound": float("nan")}, r"momo: lower_bound must be finite"),
    (gradtx.momo, {"learning_rate": float("inf")}, r"momo: learning_rate must be finite"),
    (gradtx.momo_adam, {"b1": -0.1}, r"momo_adam: b1 must be in \[0, 1\)"),
    (gradtx.momo_adam, {"b2": 1.0}, r"momo_adam: b2 must be in \[0, 1\)"),
    (gradtx.momo_adam, {"eps": -1.0}, r"momo_adam: eps must be a finite number >= 0"),
    (gradtx.momo, {"decay_form": "paper"}, r"momo: decay_form must be 'optax' or 'authors'"),
    (gradtx.momo_adam, {"decay_form": None}, r"momo_adam: decay_form must be 'optax' or 'authors'"),
]


@pytest.mark.parametrize("factory, kwargs, message", BAD)
def test_validation(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


@pytest.mark.parametrize("factory", [gradtx.momo, gradtx.momo_adam])
def test_update_needs_the_loss_and_the_params(factory):
    tx = factory()
    x = jnp.ones(2)
    with pytest.raises(ValueError, match="value=loss"):
        tx.update(x, tx.init(x), x)
    with pytest.raises(ValueError, match="params"):
        tx.update(x, tx.init(x), value=1.0)
