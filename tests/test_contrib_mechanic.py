"""Mechanic (Cutkosky, Defazio & Mehta 2023, Alg. 1, with Optax's departures) against
its float64 reference and Optax's ``optax.contrib.mechanize``.

Mechanic amplifies rounding: its scale is a ratio of running sums of ``h``, which
is an inner product of the summed steps with the gradient, and every step is that
scale times the whole sum. Optax's own float32 runs end 2e-4 to 4e-2 away from its
float64 runs on tests/test_optax_parity.py's problem. So float32 is compared with
Optax only (1e-6, both wrapping the *same* base optimizer object, since one ulp of
difference in a base step grows to ~1e-5), and float64 with the reference (``RTOL``,
1e-10) and with Optax (1e-12), each side wrapping its own library's base optimizer.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gradtx
from tests import parameter_free_harness as H
from tests.reference import mechanic as ref

REFERENCE_CASES = {
    # id: (gradtx kwargs, reference kwargs), all around SGD
    "sgd": ({}, {"lr": 0.1}),
    "sgd-decay-s_init-betas": (
        {"weight_decay": 0.1, "s_init": 1e-4, "num_betas": 3},
        {"lr": 0.1, "wd": 0.1, "s_init": 1e-4, "n": 3},
    ),
    "sgd-decay-authors": (
        {"weight_decay": 0.1, "s_init": 1e-4, "tuner_form": "authors"},
        {"lr": 0.1, "wd": 0.1, "s_init": 1e-4, "authors": True},
    ),
}


@functools.cache
def _references():  # float64 numpy, once per process
    return {
        name: ref.mechanic_sgd(H.THETA0, H.NoisyQuadratic().grads, num_steps=H.NUM_STEPS, **kw)
        for name, (_, kw) in REFERENCE_CASES.items()
    }


@pytest.mark.parametrize("name", list(REFERENCE_CASES))
def test_matches_reference_float64(name):
    makers = [
        functools.partial(gradtx.mechanize, gradtx.sgd(0.1), **kw)
        for kw, _ in REFERENCE_CASES.values()
    ]
    ours = dict(zip(REFERENCE_CASES, H.reference_runs(makers, "float64"), strict=True))
    want = _references()[name]
    assert max(float(np.max(np.abs(t[-1] - t[0]))) for t in want) > 0.1, "barely moved"
    worst = H.deviation(ours[name], list(want))
    assert worst <= H.RTOL["float64"], f"{name}: {worst:.3e}"


PARITY = {
    "sgd": ((gradtx.sgd, optax.sgd, 0.1), {}),
    "adam-decay-s_init-betas": (
        (gradtx.adam, optax.adam, 0.05),
        {"weight_decay": 0.1, "s_init": 1e-4, "num_betas": 3},
    ),
    "adam-eps": ((gradtx.adam, optax.adam, 0.05), {"eps": 1e-6}),
}


def _mechanized(wrap, base, lr, kw):
    return wrap(base(lr), **kw)


@functools.cache
def _parity(dtype):
    pairs = []
    for (ours_base, optax_base, lr), kw in PARITY.values():
        # float32: the same (Optax) base on both sides; float64: each its own.
        base = optax_base if dtype == "float32" else ours_base
        pairs.append(
            (
                functools.partial(_mechanized, gradtx.mechanize, base, lr, kw),
                functools.partial(_mechanized, optax.contrib.mechanize, optax_base, lr, kw),
            )
        )
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
    ({"weight_decay": -1.0}, r"mechanize: weight_decay must be a finite number >= 0"),
    ({"eps": 0.0}, r"mechanize: eps must be a finite number > 0"),
    ({"s_init": 0.0}, r"mechanize: s_init must be a finite number > 0"),
    ({"num_betas": 0}, r"mechanize: num_betas must be an integer >= 1"),
    ({"num_betas": 2.0}, r"mechanize: num_betas must be an integer >= 1"),
    ({"tuner_form": "paper"}, r"mechanize: tuner_form must be 'optax' or 'authors'"),
]


@pytest.mark.parametrize("kwargs, message", BAD)
def test_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gradtx.mechanize(gradtx.sgd(0.1), **kwargs)


def test_update_needs_params():
    tx = gradtx.mechanize(gradtx.sgd(0.1))
    with pytest.raises(ValueError, match="pass them to update"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


@pytest.mark.parametrize("tuner_form", ["optax", "authors"])
def test_the_rate_derivative_is_finite_where_h_is_zero(tuner_form):
    # With the params held fixed, Delta and h stay 0, so v = h^2 = 0: the
    # authors' decay reads x + u, which carries the rate into h, and a root
    # with derivative inf at 0 made d/dlr NaN.
    x = jnp.array([1.0, -2.0, 0.5])

    def total(lr):
        tx = gradtx.mechanize(gradtx.sgd(lr), tuner_form=tuner_form)
        state, out = tx.init(x), 0.0
        for _ in range(2):
            u, state = tx.update(jnp.array([0.3, -0.1, 0.2]), state, x)
            out = out + jnp.sum(u)
        return out

    assert bool(jnp.isfinite(jax.grad(total)(0.1)))
