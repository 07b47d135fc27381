"""D-Adaptation AdamW (Defazio & Mishchenko 2023, Alg. 4) against its float64 reference and
Optax's ``optax.contrib.dadapt_adamw``.

Tolerances, all measured against ``|x| + 1`` as in
tests/test_reference_trajectories.py. float64: ``RTOL`` (1e-10) against the
reference, 1e-12 against Optax. float32 against Optax (the same arithmetic in the
same precision): 1e-6. float32 against the float64 reference: 5e-4, and only from
``d_0 = 1e-3``. The reason is the method, not the code: while ``d`` grows,
``d_{k+1} = r / ((1 - sqrt(b2)) ||s||_1)`` divides a sum of inner products that cancel, so float32
rounding in ``r`` moves ``d`` and every later step; from ``d_0 = 1e-6`` the growth
phase is long and float32 ends 1e-2 away from float64 (gradtx's and Optax's float32
runs agree with each other to 1e-6 there too).
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
from tests.reference import dadapt_adamw as ref


def _decay(k):
    return 0.5 / (1 + 0.05 * k)


def schedule(k):
    return 1.0 / (1 + 0.02 * k)


REFERENCE_CASES = {
    # id: (gradtx kwargs, reference kwargs)
    "default": ({}, {"bias_correction": True}),
    "paper": ({"bias_correction": False}, {}),
    "schedule-decay": (
        {"learning_rate": _decay, "weight_decay": 0.1},
        {"lr": _decay, "weight_decay": 0.1, "bias_correction": True},
    ),
    "d0-1e-3": (
        {"learning_rate": _decay, "estim_lr0": 1e-3},
        {"lr": _decay, "d0": 1e-3, "bias_correction": True},
    ),
    "betas-eps-d0": (
        {"betas": (0.8, 0.99), "estim_lr0": 1e-3, "eps": 1e-4, "bias_correction": False},
        {"b1": 0.8, "b2": 0.99, "d0": 1e-3, "eps": 1e-4},
    ),
    "l2-growth-rate": (  # the authors' code: coupled decay, a cap on d's growth
        {"estim_lr0": 1e-3, "weight_decay": 0.1, "weight_decouple": False, "growth_rate": 1.05},
        {
            "d0": 1e-3,
            "weight_decay": 0.1,
            "decoupled": False,
            "growth_rate": 1.05,
            "bias_correction": True,
        },
    ),
}


@functools.cache
def _references():  # float64 numpy, once per process
    out = {}
    for name, (_, kwargs) in REFERENCE_CASES.items():
        out[name] = ref.dadapt_adam(
            H.THETA0, H.NoisyQuadratic().grads, num_steps=H.NUM_STEPS, **kwargs
        )
    return out


@functools.cache
def _ours(dtype):
    makers = [functools.partial(gradtx.dadapt_adamw, **kw) for kw, _ in REFERENCE_CASES.values()]
    return dict(zip(REFERENCE_CASES, H.reference_runs(makers, dtype), strict=True))


def test_reference_gradients_drive_d_up():
    # Guards against a vacuous comparison: d must grow well past d_0.
    traj = _references()["default"]
    assert max(float(np.max(np.abs(t[-1] - t[0]))) for t in traj) > 0.1


FLOAT32_TOL = 5e-4  # see the module docstring; measured 1.7e-4
RUNS = [(name, "float64") for name in REFERENCE_CASES] + [
    (name, "float32") for name, (kw, _) in REFERENCE_CASES.items() if kw.get("estim_lr0") == 1e-3
]


@pytest.mark.parametrize("name, dtype", RUNS)
def test_matches_reference(name, dtype):
    tol = H.RTOL["float64"] if dtype == "float64" else FLOAT32_TOL
    worst = H.deviation(_ours(dtype)[name], list(_references()[name]))
    assert worst <= tol, f"{name} [{dtype}]: {worst:.3e}"


def test_the_l2_and_growth_switches_each_matter():
    # Guards against a vacuous "l2-growth-rate" case: each switch alone moves the run.
    def run(**kw):
        return list(
            ref.dadapt_adam(
                H.THETA0,
                H.NoisyQuadratic().grads,
                num_steps=H.NUM_STEPS,
                d0=1e-3,
                weight_decay=0.1,
                bias_correction=True,
                **kw,
            )
        )

    optax_form = run()
    assert H.deviation(run(decoupled=False), optax_form) > 1e-3
    assert H.deviation(run(growth_rate=1.05), optax_form) > 1e-3


def test_bias_correction_switch_matters():
    ours = _ours("float64")
    assert H.deviation(ours["default"], ours["paper"]) > 1e-3


PARITY = {
    "default": {},
    "schedule-d0": {"learning_rate": schedule, "estim_lr0": 1e-3},
    "schedule-decay": {"learning_rate": schedule, "weight_decay": 0.1, "estim_lr0": 1e-3},
    "betas-eps": {"learning_rate": 0.3, "betas": (0.8, 0.99), "eps": 1e-5},
}


@functools.cache
def _parity(dtype):
    pairs = [
        (
            functools.partial(gradtx.dadapt_adamw, **kw),
            functools.partial(optax.contrib.dadapt_adamw, **kw),
        )
        for kw in PARITY.values()
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
    ({"betas": (1.0, 0.999)}, r"dadapt_adamw: betas\[0\] must be in \[0, 1\)"),
    ({"betas": (0.9, -0.1)}, r"dadapt_adamw: betas\[1\] must be in \[0, 1\)"),
    ({"betas": 0.9}, r"dadapt_adamw: betas must be a pair"),
    ({"eps": -1.0}, r"dadapt_adamw: eps must be a finite number >= 0"),
    ({"estim_lr0": 0.0}, r"dadapt_adamw: estim_lr0 must be a finite number > 0"),
    ({"weight_decay": -0.1}, r"dadapt_adamw: weight_decay must be a finite number >= 0"),
    ({"learning_rate": float("nan")}, r"dadapt_adamw: learning_rate must be finite"),
    ({"growth_rate": 0.5}, r"dadapt_adamw: growth_rate must be a number >= 1"),
]


@pytest.mark.parametrize("kwargs, message", BAD)
def test_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gradtx.dadapt_adamw(**kwargs)


def test_update_needs_params():
    tx = gradtx.dadapt_adamw()
    with pytest.raises(ValueError, match="dadapt_adamw: .*params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_zero_first_gradient_keeps_d():
    tx = gradtx.dadapt_adamw()
    x = jnp.ones(3)
    u, state = tx.update(jnp.zeros(3), tx.init(x), x)
    assert bool(jnp.all(u == 0)) and float(state.estim_lr) == pytest.approx(1e-6)
