"""Normalizing and recentring: the numpy references, zeros, overflow, complex leaves.

* ``normalize_by_update_norm``, ``scale_by_param_block_rms``,
  ``scale_by_param_block_norm`` and ``centralize`` (both unit axes), each followed
  by an SGD step, reproduce their float64 numpy references
  (``tests/reference/normalize.py``, from Hazan et al. 2015 Alg. 1, Shazeer &
  Stern 2018 Sec. 8, You et al. 2017 and Yong et al. 2020 Sec. 3.2) at every one
  of 120 steps on a pytree of four leaves (a 4-D filter bank, a vector, a matrix
  and a scalar), in float64 and float32, with minima that are active on some
  leaves and idle on others. Optax's trajectories are in tests/test_optax_parity.py.
* A zero gradient gives zeros and finite derivatives; a float32 gradient whose
  squares overflow is still normalized (Optax: zeros); complex leaves rotate
  with a common phase; ``centralize``'s unit axis is the paper's on both layouts.

Tolerances as in tests/test_reference_trajectories.py: ``max |gradtx - ref| /
(|ref| + 1) <= 1e-10`` in float64 and ``1e-5`` in float32.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from tests.reference import normalize as ref

NUM_STEPS = 120
RTOL = {"float64": 1e-10, "float32": 1e-5}
LR = 0.05

SHAPES = {"conv": (2, 2, 2, 3), "layer": {"b": (5,), "w": (3, 4)}, "temperature": ()}
IS_SHAPE = lambda x: isinstance(x, tuple)  # noqa: E731
TREEDEF = jax.tree.structure(SHAPES, is_leaf=IS_SHAPE)
LEAF_SHAPES = jax.tree.leaves(SHAPES, is_leaf=IS_SHAPE)


def _make_data(seed=2020):
    """Initial parameters and gradients (float32-representable float64).

    Each leaf has its own scales: the parameters' RMS ranges from ~0.05 to ~2, so
    a minimum of 0.5 is active on some leaves and idle on others; the gradients
    have a per-leaf offset, so that centring them changes them.
    """
    rng = np.random.default_rng(seed)
    theta0, grads = [], []
    for i, shape in enumerate(LEAF_SHAPES):
        scale = (0.05, 2.0, 1.0, 0.5)[i]
        offset = 0.3 * rng.normal(size=shape)
        g = offset + rng.normal(size=(NUM_STEPS, *shape)) * (0.3, 2.0, 1.0, 0.5)[i]
        theta0.append((scale * rng.normal(size=shape)).astype(np.float32).astype(np.float64))
        grads.append(g.astype(np.float32).astype(np.float64))
    return theta0, grads


THETA0, GRADS = _make_data()
GRADS_BY_STEP = [[g[k] for g in GRADS] for k in range(NUM_STEPS)]


def _unflatten(leaves):
    return jax.tree.unflatten(TREEDEF, list(leaves))


def _scan(tx, params, gs, lr):
    """``chain(tx, sgd(lr))`` as one ``lax.scan``: the params after every step."""
    full = gradtx.chain(tx, gradtx.sgd(lr))

    def body(carry, g):
        p, state = carry
        updates, state = full.update(g, state, p)
        return (gradtx.apply_updates(p, updates), state), gradtx.apply_updates(p, updates)

    return jax.lax.scan(body, (params, full.init(params)), gs)[1]


def deviation(got, want) -> float:
    """``max |got - want| / (|want| + 1)`` over every leaf, element and step."""
    return max(
        float(np.max(np.abs(g - w) / (np.abs(w) + 1))) for g, w in zip(got, want, strict=True)
    )


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], gradtx.GradientTransformation]
    transform: Callable  # (g leaves, theta leaves) -> leaves, numpy
    # The SGD rate after the block. The parameter scalings multiply the step by
    # RMS(w) or ||w|| (up to ~5 here), which the step feeds back into: a smaller
    # rate keeps the parameters of order 1, the scale the float32 tolerance is
    # stated for.
    lr: float = LR

    def __repr__(self):
        return self.id


CASES = [
    Case(
        "normalize",
        lambda: gradtx.normalize_by_update_norm(),
        lambda g, th: ref.normalized(g, 1.0, 1e-6),
    ),
    Case(
        "normalize-scaled-large-eps",
        lambda: gradtx.normalize_by_update_norm(scale_factor=3.0, eps=2.0),
        lambda g, th: ref.normalized(g, 3.0, 2.0),
    ),
    Case(
        "param_block_rms",
        lambda: gradtx.scale_by_param_block_rms(),
        lambda g, th: ref.param_rms_scaled(g, th, 1e-3),
        lr=0.01,
    ),
    Case(
        "param_block_rms-min-active",
        lambda: gradtx.scale_by_param_block_rms(0.5),
        lambda g, th: ref.param_rms_scaled(g, th, 0.5),
        lr=0.01,
    ),
    Case(
        "param_block_norm",
        lambda: gradtx.scale_by_param_block_norm(),
        lambda g, th: ref.param_norm_scaled(g, th, 1e-3),
        lr=0.01,
    ),
    Case(
        "param_block_norm-min-active",
        lambda: gradtx.scale_by_param_block_norm(1.5),
        lambda g, th: ref.param_norm_scaled(g, th, 1.5),
        lr=0.01,
    ),
    Case("centralize", lambda: gradtx.centralize(), lambda g, th: ref.centralized(g, 0)),
    Case(
        "centralize-output-last",
        lambda: gradtx.centralize(output_axis=-1),
        lambda g, th: ref.centralized(g, -1),
    ),
]


@functools.cache
def _all_trajectories(dtype: str) -> dict[str, list[np.ndarray]]:
    """Every case's trajectory, traced into one jitted function per dtype."""
    with jax.enable_x64(dtype == "float64"):
        params = _unflatten([jnp.asarray(t, dtype) for t in THETA0])
        gs = _unflatten([jnp.asarray(g, dtype) for g in GRADS])
        paths = jax.jit(lambda p, g: [_scan(case.make(), p, g, case.lr) for case in CASES])(
            params, gs
        )
        return {
            case.id: [
                np.concatenate([np.asarray(t, np.float64)[None], np.asarray(p, np.float64)])
                for t, p in zip(THETA0, jax.tree.leaves(path), strict=True)
            ]
            for case, path in zip(CASES, paths, strict=True)
        }


@functools.cache
def _reference(case_id: str) -> list[np.ndarray]:
    case = next(c for c in CASES if c.id == case_id)
    return ref.transformed_sgd(THETA0, GRADS_BY_STEP, case.lr, case.transform)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_trajectory_matches_the_numpy_reference(case, dtype):
    got = _all_trajectories(dtype)[case.id]
    want = _reference(case.id)
    assert deviation(got, want) <= RTOL[dtype], case.id
    moved = max(float(np.max(np.abs(w[-1] - w[0]))) for w in want)
    assert moved > 0.1, "the run must go somewhere"


def test_the_minima_are_active_on_some_leaves_and_idle_on_others():
    """Guards the cases above against a vacuous choice of minima."""
    rms = [float(np.sqrt(np.mean(t**2))) for t in THETA0]
    norms = [float(np.sqrt(np.sum(t**2))) for t in THETA0]
    assert min(rms) < 0.5 < max(rms)
    assert min(norms) < 1.5 < max(norms)


# ---------------------------------------------------------------- zeros, overflow, dtypes


def test_a_zero_gradient_gives_zeros_and_finite_derivatives():
    zeros = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    for tx in (
        gradtx.normalize_by_update_norm(),
        gradtx.centralize(),
        gradtx.scale_by_param_block_rms(),
        gradtx.scale_by_param_block_norm(),
    ):
        out, _ = tx.update(zeros, tx.init(zeros), zeros)
        for leaf in jax.tree.leaves(out):
            np.testing.assert_array_equal(leaf, 0.0)

        def total(g, p, tx=tx):
            return sum(jnp.sum(u) for u in jax.tree.leaves(tx.update(g, tx.init(p), p)[0]))

        for d in jax.tree.leaves(jax.grad(total, argnums=(0, 1))(zeros, zeros)):
            assert bool(jnp.all(jnp.isfinite(d)))


def test_zero_params_are_scaled_by_the_minimum():
    params = {"a": jnp.zeros((2, 3)), "b": jnp.full(3, 2.0)}
    grads = {"a": jnp.ones((2, 3)), "b": jnp.ones(3)}
    rms = gradtx.scale_by_param_block_rms(0.25)
    out, _ = rms.update(grads, rms.init(params), params)
    np.testing.assert_allclose(out["a"], 0.25)
    np.testing.assert_allclose(out["b"], 2.0)
    norm = gradtx.scale_by_param_block_norm(0.25)
    out, _ = norm.update(grads, norm.init(params), params)
    np.testing.assert_allclose(out["a"], 0.25)
    np.testing.assert_allclose(out["b"], 2.0 * np.sqrt(3.0), rtol=1e-6)


def test_an_overflowing_gradient_is_still_normalized_where_optax_gives_zeros():
    huge = {"a": jnp.full(4, 1e30, jnp.float32), "b": jnp.array([0.0, -1e30], jnp.float32)}
    tx = gradtx.normalize_by_update_norm()
    out, _ = tx.update(huge, tx.init(huge))
    np.testing.assert_allclose(out["a"], 1 / np.sqrt(5), rtol=1e-6)
    np.testing.assert_allclose(out["b"], [0.0, -1 / np.sqrt(5)], rtol=1e-6)
    theirs = optax.normalize_by_update_norm()
    optax_out, _ = theirs.update(huge, theirs.init(huge))
    np.testing.assert_array_equal(optax_out["a"], 0.0)  # 1e30 / inf


def test_low_precision_updates_keep_their_dtype_and_are_computed_in_float32():
    g = {"a": jnp.asarray([[1.0, 2.0, 4.0], [3.0, 5.0, 9.0]], jnp.bfloat16)}
    p = {"a": jnp.ones((2, 3), jnp.bfloat16)}
    for tx in (
        gradtx.normalize_by_update_norm(),
        gradtx.centralize(),
        gradtx.scale_by_param_block_rms(),
        gradtx.scale_by_param_block_norm(),
    ):
        out, _ = tx.update(g, tx.init(p), p)
        assert out["a"].dtype == jnp.bfloat16
    out, _ = gradtx.centralize().update(g, gradtx.centralize().init(p))
    want = [[-4 / 3, -1 / 3, 5 / 3], [-8 / 3, -2 / 3, 10 / 3]]  # rows' means 7/3 and 17/3
    np.testing.assert_allclose(np.asarray(out["a"], np.float32), want, rtol=1e-2)


def test_complex_leaves_rotate_with_a_common_phase():
    rng = np.random.default_rng(0)
    g = {"a": jnp.asarray(rng.normal(size=(2, 3)) + 1j * rng.normal(size=(2, 3)), jnp.complex64)}
    p = {"a": jnp.asarray(rng.normal(size=(2, 3)) + 1j * rng.normal(size=(2, 3)), jnp.complex64)}
    phase = np.exp(0.7j).astype(np.complex64)
    turn = lambda t: jax.tree.map(lambda x: x * phase, t)  # noqa: E731
    for tx in (
        gradtx.normalize_by_update_norm(),
        gradtx.centralize(),
        gradtx.scale_by_param_block_rms(),
        gradtx.scale_by_param_block_norm(),
    ):
        plain, _ = tx.update(g, tx.init(p), p)
        turned, _ = tx.update(turn(g), tx.init(p), turn(p))
        np.testing.assert_allclose(turned["a"], plain["a"] * phase, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- centralize's axes


def test_centralize_leaves_scalars_and_vectors_alone():
    tx = gradtx.centralize()
    g = {"s": jnp.float32(3.0), "v": jnp.arange(4.0)}
    out, _ = tx.update(g, tx.init(g))
    np.testing.assert_array_equal(out["s"], 3.0)
    np.testing.assert_array_equal(out["v"], jnp.arange(4.0))


def test_centralize_units_follow_the_output_axis_of_each_layout():
    """The default centres PyTorch's ``(out, in, h, w)`` per output unit (Optax's
    ``centralize``); ``output_axis=-1`` does so for Flax's ``(h, w, in, out)``."""
    rng = np.random.default_rng(1)
    torch_layout = jnp.asarray(rng.normal(size=(4, 3, 2, 2)), jnp.float32)
    flax_layout = jnp.transpose(torch_layout, (2, 3, 1, 0))
    default = gradtx.centralize()
    last = gradtx.centralize(output_axis=-1)
    out_torch, _ = default.update(torch_layout, default.init(torch_layout))
    out_flax, _ = last.update(flax_layout, last.init(flax_layout))
    np.testing.assert_allclose(jnp.transpose(out_torch, (2, 3, 1, 0)), out_flax, atol=1e-6)
    np.testing.assert_allclose(jnp.mean(out_flax, axis=(0, 1, 2)), 0.0, atol=1e-6)
    theirs, _ = optax.centralize().update(torch_layout, optax.centralize().init(torch_layout))
    np.testing.assert_allclose(out_torch, theirs, atol=1e-7)
