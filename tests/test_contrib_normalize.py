"""``normalize`` (g / ||g||) against its float64 reference and Optax's contrib.

Every case of a dtype runs in one jitted program (tests/contrib_trajectories.py).
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
from tests.reference import normalize as R

THETA0, GRADS = H.make_data(seed=11)
Z_THETA0, Z_GRADS = H.make_data(seed=12, complex_leaves=(0, 2))


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


def _reference(theta0, grads, lr):
    """The real reference; a complex leaf is its two real parts (``|z|^2 = x^2 + y^2``)."""
    unit = lambda g, theta: R.normalized(g, 1.0, 0.0)  # noqa: E731
    split_grads = [_split(g) for g in H.by_step(grads)]
    return _join(R.transformed_sgd(_split(theta0), split_grads, lr, unit), theta0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normalize_matches_reference_and_optax(dtype):
    ours = gradtx.chain(gradtx.normalize(), gradtx.sgd(0.05))
    theirs = optax.chain(optax.contrib.normalize(), optax.sgd(0.05))
    with jax.enable_x64(dtype == "float64"):
        real = H.trajectories([ours, theirs], THETA0, GRADS, dtype)
        complex_ = H.trajectories([ours, theirs], Z_THETA0, Z_GRADS, dtype)
    for (run, optax_run), (theta0, grads) in (
        (real, (THETA0, GRADS)),
        (complex_, (Z_THETA0, Z_GRADS)),
    ):
        H.assert_moved(run)
        H.assert_close(run, _reference(theta0, grads, 0.05), H.REFERENCE_TOL[dtype], "reference")
        H.assert_close(run, optax_run, H.OPTAX_TOL[dtype], "Optax")


def test_update_has_unit_norm_and_keeps_dtypes():
    tx = gradtx.normalize()
    g = {"a": jnp.array([1.0, -2.0], jnp.bfloat16), "b": jnp.array([3.0 + 4.0j, 0.5])}
    out, state = tx.update(g, tx.init(g))
    assert state == gradtx.NormalizeState()
    assert jax.tree.map(lambda x: x.dtype, out) == jax.tree.map(lambda x: x.dtype, g)
    assert float(gradtx.global_norm(out)) == pytest.approx(1.0, rel=1e-2)


def test_zero_tree_stays_zero():
    """Optax's ``normalize`` returns 0 / 0 = NaN here; gradtx returns zeros."""
    tx = gradtx.normalize()
    g = {"a": jnp.zeros(3), "b": jnp.zeros(())}
    out, _ = tx.update(g, tx.init(g))
    assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(out))
    assert tx.update({}, tx.init({}))[0] == {}
