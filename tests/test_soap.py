"""SOAP (Vyas et al. 2024, Alg. 3): trajectories against the float64 reference,
the first call, the state's layout and sharding, and the validation rows.

The leaves are chosen so that every statistic is of full rank after the first
gradient: an eigenbasis of a rank-deficient ``L`` is arbitrary in its null
space (LAPACK builds may differ there), and SOAP's diagonal ``V`` depends on it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.sharding import state_shardings
from tests.reference import soap as reference

STEPS = 120
SHAPES = {
    "sq": (6, 6),  # both sides preconditioned
    "wide": (4, 12),  # the 12 side above max_precond_dim=8: identity there
    "vec": (5,),  # Adam (or, with precondition_1d and max_precond_dim=4, Adam too)
    "pair": (2,),  # a vector whose statistic, with precondition_1d, has a unique basis
    "cube": (3, 4, 5),  # one statistic per dimension
    "conv": (2, 3, 6),  # merge_dims with max_precond_dim=8 makes it (6, 6)
}
NAMES = sorted(SHAPES)
_RNG = np.random.default_rng(7)
THETA0 = [_RNG.standard_normal(SHAPES[k]).astype(np.float32).astype(np.float64) for k in NAMES]
GRADS = [
    [_RNG.standard_normal(SHAPES[k]).astype(np.float32).astype(np.float64) for k in NAMES]
    for _ in range(STEPS)
]


def decaying(eta0):
    return lambda k: eta0 / (1 + 0.02 * k)


CASES = [
    (
        "defaults-with-small-max-dim",
        lambda: gradtx.soap(0.01, max_precond_dim=8, precondition_frequency=5),
        lambda th, g: reference.soap(th, g, 0.01, lam=0.01, f=5, max_dim=8),
    ),
    (
        "1d-normalized-uncorrected-schedule",
        lambda: gradtx.soap(
            decaying(0.01),
            0.9,
            0.99,
            0.8,
            1e-6,
            0.0,
            3,
            4,
            precondition_1d=True,
            normalize_grads=True,
            correct_bias=False,
        ),
        lambda th, g: reference.soap(
            th,
            g,
            decaying(0.01),
            0.9,
            0.99,
            0.8,
            1e-6,
            0.0,
            3,
            4,
            precondition_1d=True,
            normalize_grads=True,
            correct_bias=False,
        ),
    ),
    (
        "merge-dims-b1-zero",
        lambda: gradtx.soap(
            0.005,
            b1=0.0,
            weight_decay=0.1,
            max_precond_dim=8,
            merge_dims=True,
            precondition_frequency=1,
        ),
        lambda th, g: reference.soap(th, g, 0.005, 0.0, lam=0.1, f=1, max_dim=8, merge_dims=True),
    ),
]
RTOL = {"float64": 1e-12, "float32": 1e-5}  # measured: 7e-16 and 7e-7 (relative to max |theta|)


def _runs(dtype):
    with jax.enable_x64(dtype == "float64"):
        params = {k: jnp.asarray(t, dtype) for k, t in zip(NAMES, THETA0, strict=True)}
        grads = {
            k: jnp.asarray(np.stack([g[i] for g in GRADS]), dtype) for i, k in enumerate(NAMES)
        }

        def run(tx, p, gs):
            def step(carry, g):
                p, state = carry
                u, state = tx.update(g, state, p)
                p = gradtx.apply_updates(p, u)
                return (p, state), p

            return jax.lax.scan(step, (p, tx.init(p)), gs)[1]

        txs = [make() for _, make, _ in CASES]
        out = jax.jit(lambda p, gs: [run(tx, p, gs) for tx in txs])(params, grads)
        for traj in out:
            assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree.leaves(traj))
        return [[np.asarray(traj[k], np.float64) for k in NAMES] for traj in out]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_trajectories_match_the_reference(dtype):
    for (name, _, run_reference), got in zip(CASES, _runs(dtype), strict=True):
        want = run_reference(THETA0, GRADS)
        for k, w, x in zip(NAMES, want, got, strict=True):
            assert float(np.abs(w[-1] - w[0]).max()) > 0.05, (name, k)  # it moved
            scale = float(np.abs(w).max())
            err = float(np.abs(w[1:] - x).max()) / scale
            assert err < RTOL[dtype], (name, k, err)


def test_the_first_call_only_builds_the_bases():
    tx = gradtx.scale_by_soap(max_precond_dim=8)
    params = {"w": jnp.zeros((3, 3)), "b": jnp.zeros(2)}
    g = {"w": jnp.diag(jnp.array([3.0, 2.0, 1.0])), "b": jnp.array([1.0, 2.0])}
    out, state = tx.update(g, tx.init(params))
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(out))
    assert all(bool(jnp.all(m == 0)) for m in jax.tree.leaves((state.mu, state.nu)))
    assert state.stats["b"] == (None,)
    L, R = state.stats["w"]
    assert jnp.allclose(L, 0.05 * jnp.diag(jnp.array([9.0, 4.0, 1.0])))
    # eigenvectors by decreasing eigenvalue: the identity, up to signs
    assert jnp.allclose(jnp.abs(state.bases["w"][0]), jnp.eye(3))


def test_power_qr_refresh_keeps_the_bases_orthonormal():
    tx = gradtx.scale_by_soap(precondition_frequency=2)
    p = jnp.zeros((4, 5))
    state = tx.init(p)
    rng = np.random.default_rng(0)
    update = jax.jit(tx.update)
    for _ in range(7):
        _, state = update(jnp.asarray(rng.standard_normal((4, 5)), jnp.float32), state)
    for q in state.bases:
        assert jnp.allclose(q.T @ q, jnp.eye(q.shape[0]), atol=1e-5)


def test_merged_shape_is_the_authors():
    merged = gradtx.optimizers.soap.merged_shape
    assert merged((64, 3, 3, 3), 10000) == (1728,)
    assert merged((2, 3, 6), 8) == (6, 6)
    assert merged((20000, 3), 10000) == (20000, 3)
    assert merged((1, 1), 10) == (1,)


def test_state_shardings_split_the_statistics_by_rows_as_their_dimension():
    # w split along axis 0: L's rows are split the same way, R (of the whole axis 1) is not.
    P = jax.sharding.PartitionSpec
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    params = {"w": jnp.zeros((4, 4)), "b": jnp.zeros(3)}
    shardings = jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, P("data")), params)
    tx = gradtx.soap(1e-3)
    out = state_shardings(tx, params, shardings)[0]
    assert out.mu["w"].spec == P("data") and out.nu["b"].spec == P("data")
    assert out.stats["w"][0].spec == out.bases["w"][0].spec == P("data", None)
    assert out.stats["w"][1].spec == out.bases["w"][1].spec == P(None, None)
    placed = jax.device_put(params, shardings)
    state = tx.init(placed)[0]
    assert state.stats["w"][0].sharding.spec == P("data", None)


def test_complex_params_are_refused():
    with pytest.raises(TypeError, match="scale_by_soap: complex parameters"):
        gradtx.soap().init(jnp.zeros((2, 2), jnp.complex64))


BAD = [
    (lambda: gradtx.soap(float("nan")), r"soap: learning_rate must be finite"),
    (lambda: gradtx.soap(weight_decay=-1.0), r"soap: weight_decay must be a finite number >= 0"),
    (lambda: gradtx.soap(b1=1.0), r"scale_by_soap: b1 must be in \[0, 1\)"),
    (lambda: gradtx.scale_by_soap(b2=-0.1), r"scale_by_soap: b2 must be in \[0, 1\)"),
    (lambda: gradtx.soap(shampoo_beta=1.5), r"scale_by_soap: shampoo_beta must be in \[0, 1\)"),
    (lambda: gradtx.soap(eps=-1e-8), r"scale_by_soap: eps must be a finite number >= 0"),
    (
        lambda: gradtx.soap(precondition_frequency=0),
        r"scale_by_soap: precondition_frequency must be an integer >= 1",
    ),
    (
        lambda: gradtx.scale_by_soap(max_precond_dim=2.5),
        r"scale_by_soap: max_precond_dim must be an integer >= 1",
    ),
    (lambda: gradtx.soap(qr_dtype=jnp.int32), r"scale_by_soap: qr_dtype must be None or"),
]


@pytest.mark.parametrize("make, message", BAD)
def test_bad_hyperparameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_qr_dtype_float32_rounds_the_refresh_of_float64_params():
    # pytorch_optimizer's (and the authors') QR in float32: off the float64
    # reference by float32 rounding, where the default qr_dtype matches it.
    theta = [THETA0[NAMES.index("sq")]]
    grads = [[g[NAMES.index("sq")]] for g in GRADS[:30]]
    want = reference.soap(theta, grads, 0.01, f=2)[0][-1]
    with jax.enable_x64(True):
        for qr_dtype, low, high in ((None, 0.0, 1e-12), (jnp.float32, 1e-12, 1e-5)):
            tx = gradtx.soap(0.01, weight_decay=0.0, precondition_frequency=2, qr_dtype=qr_dtype)
            p = jnp.asarray(theta[0])
            state, update = tx.init(p), jax.jit(tx.update)
            for g in grads:
                u, state = update(jnp.asarray(g[0]), state, p)
                p = p + u
            err = float(np.abs(np.asarray(p) - want).max())
            assert low <= err < high, (qr_dtype, err)
