"""SAM (Foret et al. 2021, Alg. 1) against its float64 reference and optax.contrib.sam."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gradtx
from tests import contrib_harness as H
from tests.reference import sam as R
from tests.test_optax_parity import TOL, assert_trees_close

RHO = 0.05


def _ascent(rho=RHO):
    return gradtx.chain(gradtx.normalize_by_update_norm(eps=0.0), gradtx.sgd(rho))


def _optax_ascent(rho=RHO):
    return optax.chain(optax.contrib.normalize(), optax.sgd(rho))


def _grad_fn(loss):
    return {"grad_fn": lambda params, i: jax.grad(loss)(params)}


# (id, gradtx maker, reference kwargs, extra args)
REFERENCE_CASES = [
    ("sgd-k2", lambda: gradtx.sam(gradtx.sgd(0.05), _ascent()), dict(eta=0.05, k=2), None),
    (
        "momentum-k3-keep-state",
        lambda: gradtx.sam(gradtx.sgd(0.03, 0.9), _ascent(), 3, reset_state=False),
        dict(eta=0.03, k=3, beta=0.9),
        None,
    ),
    (
        "opaque-k3",
        lambda: gradtx.sam(gradtx.sgd(0.05), _ascent(), 3, opaque_mode=True),
        dict(eta=0.05, k=3, opaque=True),
        _grad_fn,
    ),
]


def _reference(kwargs):
    ascent_grad = H.grad_np if kwargs.get("opaque") else None
    return R.sam(
        H.THETA0, H.noisy_grad_np, rho=RHO, num_steps=H.STEPS, ascent_grad=ascent_grad, **kwargs
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sam_follows_the_reference(dtype):
    with jax.enable_x64(dtype == "float64"):
        paths = H.reference_paths(
            [c[1] for c in REFERENCE_CASES],
            jnp.dtype(dtype),
            [c[3] or H.no_extra for c in REFERENCE_CASES],
        )
    bound = 1e-10 if dtype == "float64" else 2e-5
    for (name, _, kwargs, _), got in zip(REFERENCE_CASES, paths, strict=True):
        worst = H.deviation(got, _reference(kwargs))
        assert worst <= bound, f"{name} [{dtype}]: {worst:.2e}"


OPTAX_CASES = [
    (
        lambda: gradtx.sam(gradtx.sgd(0.05), _ascent()),
        lambda: optax.contrib.sam(optax.sgd(0.05), _optax_ascent()),
        None,
    ),
    (
        lambda: gradtx.sam(gradtx.adam(0.02), _ascent(), 3, reset_state=False),
        lambda: optax.contrib.sam(optax.adam(0.02), _optax_ascent(), 3, reset_state=False),
        None,
    ),
    (
        lambda: gradtx.sam(gradtx.adam(0.02), gradtx.adam(0.01), 4),
        lambda: optax.contrib.sam(optax.adam(0.02), optax.adam(0.01), 4),
        None,
    ),
    (
        lambda: gradtx.sam(gradtx.adam(0.02), _ascent(), 3, opaque_mode=True),
        lambda: optax.contrib.sam(optax.adam(0.02), _optax_ascent(), 3, opaque_mode=True),
        _grad_fn,
    ),
    (
        lambda: gradtx.sam(gradtx.sgd(0.05, 0.9), gradtx.adam(0.01), 2, False, True),
        lambda: optax.contrib.sam(optax.sgd(0.05, 0.9), optax.adam(0.01), 2, False, True),
        _grad_fn,
    ),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sam_same_trajectories_as_optax(dtype):
    """120 calls, five configurations (both modes, stateful inner optimizers), one program."""
    with jax.enable_x64(dtype == "float64"):
        runs = H.optax_paths(
            [c[:2] for c in OPTAX_CASES],
            jnp.dtype(dtype),
            [c[2] or H.no_extra for c in OPTAX_CASES],
        )
        for ours, theirs in runs:
            assert jax.tree.leaves(ours)[0].dtype == jnp.dtype(dtype)
            assert_trees_close(ours, theirs, **TOL[dtype])


def test_sync_period_one_is_the_outer_optimizer():
    """No ascent: SAM(k=1) is ``optimizer`` (Optax's transparent mode steps from the
    previous call's params there instead; see the note in gradtx.sam)."""
    sam_tx = gradtx.sam(gradtx.adam(0.1), _ascent(), 1)
    adam = gradtx.adam(0.1)
    p = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    s1, s2 = sam_tx.init(p), adam.init(p)
    for k in range(5):
        g = jax.tree.map(lambda x, k=k: x * (k + 1.0) + 0.1, p)
        u1, s1 = sam_tx.update(g, s1, p)
        u2, s2 = adam.update(g, s2, p)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), u1, u2)
        p = gradtx.apply_updates(p, u2)


def test_opaque_mode_needs_grad_fn_and_every_mode_needs_params():
    p = jnp.ones(2)
    tx = gradtx.sam(gradtx.sgd(0.1), _ascent(), opaque_mode=True)
    with pytest.raises(ValueError, match="grad_fn"):
        tx.update(p, tx.init(p), p)
    with pytest.raises(ValueError, match="params"):
        tx.update(p, tx.init(p), None, grad_fn=lambda q, i: q)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"sync_period": 0}, ValueError, r"sam: sync_period must be an integer >= 1"),
        ({"sync_period": 1.5}, ValueError, r"sam: sync_period must be an integer >= 1"),
        ({"reset_state": 1}, TypeError, r"sam: reset_state must be True or False"),
        ({"opaque_mode": "yes"}, TypeError, r"sam: opaque_mode must be True or False"),
        ({"batch_axis_name": 3}, TypeError, r"sam: batch_axis_name must be a string or None"),
    ],
)
def test_sam_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        gradtx.sam(gradtx.sgd(0.1), _ascent(), **kwargs)


def test_opaque_mode_averages_the_adversarial_gradients_over_batch_axis_name():
    """Under a mapped axis, each replica's ascent gradients are replaced by their mean,
    so every replica takes the same descent step (as Optax's pmean)."""
    tx = gradtx.sam(gradtx.sgd(0.1), _ascent(), 2, opaque_mode=True, batch_axis_name="batch")
    scales = jnp.array([1.0, 3.0])  # each replica's loss is scale * |w|^2 / 2

    def replica(scale, w):
        grad_fn = lambda params, i: scale * params  # noqa: E731
        out, _ = tx.update(scale * w, tx.init(w), w, grad_fn=grad_fn)
        return out

    w = jnp.array([1.0, -2.0])
    outs = jax.vmap(replica, in_axes=(0, None), axis_name="batch")(scales, w)
    np.testing.assert_allclose(outs[0], outs[1])
    perturbed = w + RHO * w / jnp.linalg.norm(w)  # both replicas' gradients point along w
    np.testing.assert_allclose(outs[0], -0.1 * jnp.mean(scales) * perturbed, rtol=1e-6)
