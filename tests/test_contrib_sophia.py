"""Sophia (Liu et al. 2023, Alg. 3) and Hutchinson's estimator against their float64
reference and optax.contrib (same PRNG keys, same numbers)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gradtx
from tests import contrib_harness as H
from tests.reference import sophia as R
from tests.test_optax_parity import TOL, assert_trees_close

KEY = jax.random.PRNGKey(3)


def _obj_fn(loss):
    return {"obj_fn": loss}


# Hutchinson's estimate is exact on the separable loss (a diagonal Hessian:
# u * (H u) = u^2 diag(H) = diag(H)), so the reference takes the exact diagonal.
HYPER = dict(b1=0.9, b2=0.95, eps=1e-6, gamma=0.5, clip_threshold=1.0, update_interval=3)
REF = dict(beta_1=0.9, beta_2=0.95, epsilon=1e-6, gamma=0.5, c=1.0, k=3)
REFERENCE_CASES = [
    ("optax-conventions", dict(), dict(bias_correction=True, refresh_first=False)),
    (
        "paper-conventions",
        dict(bias_correction=False, refresh_hessian_first=True),
        dict(bias_correction=False, refresh_first=True),
    ),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sophia_follows_the_reference(dtype):
    makers = [
        lambda kw=kw: gradtx.sophia(0.02, weight_decay=0.01, **HYPER, **kw)
        for _, kw, _ in REFERENCE_CASES
    ]
    with jax.enable_x64(dtype == "float64"):
        paths = H.reference_paths(makers, jnp.dtype(dtype), [_obj_fn] * len(makers))
    bound = 1e-10 if dtype == "float64" else 2e-5
    for (name, _, conventions), got in zip(REFERENCE_CASES, paths, strict=True):
        reference = R.sophia(
            H.THETA0,
            H.noisy_grad_np,
            H.hessian_diag_np,
            eta=0.02,
            lam=0.01,
            num_steps=H.STEPS,
            **REF,
            **conventions,
        )
        worst = H.deviation(got, reference)
        assert worst <= bound, f"{name} [{dtype}]: {worst:.2e}"


def test_the_conventions_give_different_paths():
    paths = H.reference_paths(
        [
            lambda: gradtx.sophia(0.02, **HYPER),
            lambda: gradtx.sophia(0.02, **HYPER, bias_correction=False),
            lambda: gradtx.sophia(0.02, **HYPER, refresh_hessian_first=True),
        ],
        jnp.float32,
        [_obj_fn] * 3,
    )
    for other in paths[1:]:
        assert H.deviation(other, [np.concatenate([x[:1], x]) for x in paths[0]]) > 1e-3


def _squared_grads():
    """A deterministic, stateless Hessian-diagonal stand-in (``g^2``), for both libraries."""
    return gradtx.stateless(lambda u, p: jax.tree.map(jnp.square, u))


OPTAX_CASES = [
    (
        lambda: gradtx.sophia(
            0.01,
            gamma=0.05,
            update_interval=3,
            hessian_diagonal_fn=gradtx.hutchinson_estimator_diag_hessian(KEY),
        ),
        lambda: optax.contrib.sophia(
            0.01,
            gamma=0.05,
            update_interval=3,
            hessian_diagonal_fn=optax.contrib.hutchinson_estimator_diag_hessian(KEY),
        ),
    ),
    (
        lambda: gradtx.sophia(
            0.02,
            0.9,
            0.95,
            1e-6,
            0.01,
            None,
            0.5,
            0.5,
            1,
            gradtx.hutchinson_estimator_diag_hessian(),
        ),
        lambda: optax.contrib.sophia(
            0.02,
            0.9,
            0.95,
            1e-6,
            0.01,
            None,
            0.5,
            0.5,
            1,
            optax.contrib.hutchinson_estimator_diag_hessian(),
        ),
    ),
    (
        lambda: gradtx.sophia(
            0.01, gamma=0.1, update_interval=2, hessian_diagonal_fn=_squared_grads()
        ),
        lambda: optax.contrib.sophia(
            0.01, gamma=0.1, update_interval=2, hessian_diagonal_fn=_squared_grads()
        ),
    ),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sophia_same_trajectories_as_optax(dtype):
    """120 steps, three configurations (two Hutchinson seeds, a custom estimator), one program."""
    with jax.enable_x64(dtype == "float64"):
        runs = H.optax_paths(OPTAX_CASES, jnp.dtype(dtype), [_obj_fn] * len(OPTAX_CASES))
        for ours, theirs in runs:
            assert jax.tree.leaves(ours)[0].dtype == jnp.dtype(dtype)
            assert_trees_close(ours, theirs, **TOL[dtype])


def test_hutchinson_same_draws_as_optax_and_unbiased():
    """Same key, same probes: the estimates agree on a dense quadratic of three leaves,
    and their mean over many keys approaches the Hessian's diagonal."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=(9, 9))
    hessian = jnp.asarray(a @ a.T, jnp.float32)
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(2), "s": jnp.asarray(0.5)}

    def obj_fn(p):
        x = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(p)])
        return 0.5 * x @ hessian @ x

    ours = gradtx.hutchinson_estimator_diag_hessian(KEY)
    theirs = optax.contrib.hutchinson_estimator_diag_hessian(KEY)

    @jax.jit
    def draws(params):
        s1, s2 = ours.init(params), theirs.init(params)
        estimates = []
        for _ in range(3):
            e1, s1 = ours.update(params, s1, params, obj_fn=obj_fn)
            e2, s2 = theirs.update(params, s2, params, obj_fn=obj_fn)
            estimates.append((e1, e2))
        keys = jax.random.split(KEY, 4000)
        many = jax.vmap(
            lambda k: ours.update(params, ours.init(params)._replace(key=k), params, obj_fn=obj_fn)[
                0
            ]
        )(keys)
        return estimates, jax.tree.map(lambda x: jnp.mean(x, axis=0), many)

    estimates, mean = draws(params)
    for e1, e2 in estimates:
        jax.tree.map(np.testing.assert_array_equal, e1, e2)
    flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(mean)])
    np.testing.assert_allclose(
        flat, np.diag(np.asarray(hessian)), atol=0.15 * float(np.max(np.abs(a @ a.T)))
    )


def test_updates_need_params_and_obj_fn():
    p = jnp.ones(2)
    tx = gradtx.sophia(0.1)
    with pytest.raises(ValueError, match="params"):
        tx.update(p, tx.init(p), None, obj_fn=jnp.sum)
    with pytest.raises(ValueError, match="obj_fn"):
        tx.update(p, tx.init(p), p)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"b1": 1.0}, ValueError, r"scale_by_sophia: b1 must be in \[0, 1\)"),
        ({"b2": -0.1}, ValueError, r"scale_by_sophia: b2 must be in \[0, 1\)"),
        ({"eps": -1.0}, ValueError, r"scale_by_sophia: eps must be a finite number >= 0"),
        ({"gamma": 0.0}, ValueError, r"scale_by_sophia: gamma must be a finite number > 0"),
        ({"clip_threshold": 0.0}, ValueError, r"scale_by_sophia: clip_threshold must be"),
        (
            {"update_interval": 0},
            ValueError,
            r"scale_by_sophia: update_interval must be an integer",
        ),
        ({"mu_dtype": "int32"}, ValueError, r"scale_by_sophia: mu_dtype must be None or"),
        ({"bias_correction": 1}, TypeError, r"scale_by_sophia: bias_correction must be True"),
        ({"learning_rate": "fast"}, TypeError, r"sophia: learning_rate must be"),
        ({"weight_decay": -1.0}, ValueError, r"weight_decay must be"),
    ],
)
def test_sophia_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        gradtx.sophia(**{"learning_rate": 0.1, **kwargs})


def test_mu_dtype_holds_the_momentum_and_updates_keep_the_gradient_dtype():
    tx = gradtx.sophia(0.1, mu_dtype=jnp.bfloat16)
    w = {"a": jnp.ones((2, 2)), "b": jnp.ones(3)}
    state = tx.init(w)
    updates, state = tx.update(
        w, state, w, obj_fn=lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p))
    )
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state[0].mu))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state[0].nu))
    assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(updates))
