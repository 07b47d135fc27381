"""COCOB-Backprop (Orabona & Tommasi 2017, Alg. 2) against its float64 reference and
Optax's ``optax.contrib.cocob`` / ``optax.contrib.scale_by_cocob``.

Tolerances, measured against ``|x| + 1`` as in tests/test_reference_trajectories.py:
float64 ``RTOL`` (1e-10) against the reference and 1e-12 against Optax; float32
``RTOL`` (1e-5) against the reference and 1e-6 against Optax.
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
from tests.reference import cocob as ref


def _decay(k):
    return 1.0 / (1 + 0.05 * k)


REFERENCE_CASES = {
    # id: (gradtx factory, gradtx kwargs, reference kwargs)
    "scale_by_cocob": (gradtx.scale_by_cocob, {}, {}),
    "cocob-alpha-eps": (gradtx.cocob, {"alpha": 10.0, "eps": 1e-3}, {"alpha": 10.0, "L0": 1e-3}),
    "cocob-schedule-decay": (
        gradtx.cocob,
        {"learning_rate": _decay, "weight_decay": 0.1},
        {"lr": _decay, "wd": 0.1},
    ),
}


@functools.cache
def _references():  # float64 numpy, once per process
    return {
        name: ref.cocob_backprop(H.THETA0, H.NoisyQuadratic().grads, num_steps=H.NUM_STEPS, **kw)
        for name, (_, _, kw) in REFERENCE_CASES.items()
    }


@functools.cache
def _ours(dtype):
    makers = [functools.partial(make, **kw) for make, kw, _ in REFERENCE_CASES.values()]
    return dict(zip(REFERENCE_CASES, H.reference_runs(makers, dtype), strict=True))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(REFERENCE_CASES))
def test_matches_reference(name, dtype):
    want = _references()[name]
    assert max(float(np.max(np.abs(t[-1] - t[0]))) for t in want) > 0.1, "barely moved"
    worst = H.deviation(_ours(dtype)[name], list(want))
    assert worst <= H.RTOL[dtype], f"{name} [{dtype}]: {worst:.3e}"


def schedule(k):
    return 1.0 / (1 + 0.02 * k)


PARITY = {
    "scale_by_cocob": ("scale_by_cocob", {}),
    "cocob": ("cocob", {}),
    "cocob-alpha-eps": ("cocob", {"alpha": 10.0, "eps": 1e-3}),
    "cocob-schedule-decay": ("cocob", {"learning_rate": schedule, "weight_decay": 0.1}),
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
    (gradtx.scale_by_cocob, {"alpha": 0.0}, r"scale_by_cocob: alpha must be a finite number > 0"),
    (gradtx.scale_by_cocob, {"eps": 0.0}, r"scale_by_cocob: eps must be a finite number > 0"),
    (gradtx.cocob, {"alpha": -1.0}, r"scale_by_cocob: alpha must be a finite number > 0"),
    (gradtx.cocob, {"weight_decay": -1.0}, r"weight_decay must be"),
    (gradtx.cocob, {"learning_rate": float("nan")}, r"cocob: learning_rate must be finite"),
]


@pytest.mark.parametrize("factory, kwargs, message", BAD)
def test_validation(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


def test_update_needs_params():
    tx = gradtx.scale_by_cocob()
    with pytest.raises(ValueError, match="pass them to update"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
