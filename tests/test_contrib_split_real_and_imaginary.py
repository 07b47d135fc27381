"""``split_real_and_imaginary`` against Optax's contrib and the real reference on the parts.

Every case of a dtype runs in one jitted program (tests/contrib_trajectories.py).
The float64 reference is Adam's (tests/reference/adam.py) run on the real leaves
``x, y`` of each complex leaf ``x + iy``, then joined.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gradtx
from tests import contrib_trajectories as H
from tests.reference import adam as R

COMPLEX = (0, 2)  # leaves 0 and 2 are complex, leaf 1 is real
THETA0, GRADS = H.make_data(seed=13, complex_leaves=COMPLEX)


def _split(leaves):
    out = []
    for x in leaves:
        out.extend([x.real, x.imag] if np.iscomplexobj(x) else [x])
    return out


def _join(split_leaves, like):
    it, out = iter(split_leaves), []
    for x in like:
        out.append(next(it) + 1j * next(it) if np.iscomplexobj(x) else next(it))
    return out


def _adam_reference(lr):
    split = R.adam(_split(THETA0), [_split(g) for g in H.by_step(GRADS)], lr, 0.9, 0.999, 1e-8)
    return _join(split, THETA0)


CASES = [
    (
        "adam",
        lambda: gradtx.split_real_and_imaginary(gradtx.adam(0.01)),
        lambda: optax.contrib.split_real_and_imaginary(optax.adam(0.01)),
    ),
    (
        "madgrad (reads the params)",
        lambda: gradtx.split_real_and_imaginary(gradtx.madgrad(0.01)),
        lambda: optax.contrib.split_real_and_imaginary(optax.contrib.madgrad(0.01)),
    ),
    (
        "sign_sgd (odd in each part)",
        lambda: gradtx.split_real_and_imaginary(gradtx.sign_sgd(0.01)),
        lambda: optax.contrib.split_real_and_imaginary(optax.sign_sgd(0.01)),
    ),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_split_matches_reference_and_optax(dtype):
    ours = [make() for _, make, _ in CASES]
    theirs = [make() for _, _, make in CASES]
    with jax.enable_x64(dtype == "float64"):
        runs = H.trajectories(ours + theirs, THETA0, GRADS, dtype)
    complex_dtype = np.complex64 if dtype == "float32" else np.complex128
    for (name, _, _), run, optax_run in zip(CASES, runs, runs[len(ours) :], strict=False):
        H.assert_moved(run)
        assert [x.dtype for x in run] == [complex_dtype, np.dtype(dtype), complex_dtype]
        tol = H.OPTAX_TOL[dtype]
        if name.startswith("madgrad"):  # Optax's lambda_k in float32, see test_contrib_madgrad
            tol = H.OPTAX_TOL["float32"]
        H.assert_close(run, optax_run, tol, f"{name} vs Optax")
    H.assert_close(runs[0], _adam_reference(0.01), H.REFERENCE_TOL[dtype], "adam vs reference")


def test_real_leaves_pass_through_and_state_splits():
    tx = gradtx.split_real_and_imaginary(gradtx.adam(0.1))
    params = {"z": jnp.ones(2, jnp.complex64), "r": jnp.ones(3)}
    state = tx.init(params)
    assert isinstance(state, gradtx.SplitRealAndImaginaryState)
    mu = state.inner_state[0].mu
    assert mu["z"].real.dtype == jnp.float32 and mu["z"].imaginary.shape == (2,)
    g = {"z": jnp.array([1.0 - 2.0j, 0.0]), "r": jnp.array([1.0, -1.0, 0.0])}
    out, _ = tx.update(g, state, params)
    plain, _ = gradtx.adam(0.1).update(g["r"], gradtx.adam(0.1).init(params["r"]))
    np.testing.assert_allclose(out["r"], plain)
    np.testing.assert_allclose(out["z"], [-0.1 + 0.1j, 0.0], rtol=1e-5)


def test_inner_must_be_a_transformation():
    with pytest.raises(TypeError, match="split_real_and_imaginary: inner must be a transformation"):
        gradtx.split_real_and_imaginary(gradtx.adam)
