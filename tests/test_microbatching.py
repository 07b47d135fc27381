"""``microbatch`` and ``micro_vmap``: Optax's results, the full batch's gradient, errors.

Every accumulation (sum, mean, running mean, concatenation, a pytree of them, a
hand-made ``Accumulator``), keyword and non-leading batch axes, and an early stop
(``num_real_microbatches``, traced) against ``optax.microbatch`` /
``optax.microbatching.micro_vmap`` in float32 and float64; the gradient of a
microbatched sum of losses against the full batch's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.microbatching import AccumulationType as Ours
from gradtx.microbatching import Accumulator, micro_vmap, reshape_batch_axis

Theirs = optax.microbatching.AccumulationType
TOL = {"float32": dict(rtol=1e-6, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-12)}


def _batch(dtype, size=12, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x": jnp.asarray(rng.normal(size=(size, 3)), dtype),
        "y": jnp.asarray(rng.normal(size=size), dtype),
    }


def _loss_terms(w, batch):
    """Per-example squared errors, their sum, and a per-example pytree."""
    err = batch["x"] @ w - batch["y"]
    return {"per_example": err**2, "total": jnp.sum(err**2), "pair": (err, jnp.max(err))}


def _close(a, b, dtype):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **TOL[dtype]), a, b)


def _ours_and_theirs(kind):
    """(gradtx accumulator spec, Optax's) for the outputs of _loss_terms."""
    ours = {"per_example": Ours.CONCAT, "total": getattr(Ours, kind), "pair": Ours.CONCAT}
    theirs = {"per_example": Theirs.CONCAT, "total": getattr(Theirs, kind), "pair": Theirs.CONCAT}
    return ours, theirs


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["SUM", "MEAN", "RUNNING_MEAN"])
def test_microbatch_matches_optax_for_every_accumulation(kind, dtype):
    with jax.enable_x64(dtype == "float64"):
        w = jnp.asarray([0.5, -1.0, 2.0], dtype)
        batch = _batch(dtype)
        spec_ours, spec_theirs = _ours_and_theirs(kind)
        spec_ours["pair"] = (Ours.CONCAT, getattr(Ours, kind))
        spec_theirs["pair"] = (Theirs.CONCAT, getattr(Theirs, kind))
        ours = jax.jit(gradtx.microbatch(_loss_terms, 1, 4, spec_ours))(w, batch)
        theirs = jax.jit(optax.microbatch(_loss_terms, 1, 4, spec_theirs))(w, batch)
        _close(ours, theirs, dtype)
        full = _loss_terms(w, batch)
        np.testing.assert_allclose(ours["per_example"], full["per_example"], **TOL[dtype])
        scale = {"SUM": 1.0, "MEAN": 1 / 3, "RUNNING_MEAN": 1 / 3}[kind]
        np.testing.assert_allclose(ours["total"], scale * full["total"], **TOL[dtype])


def test_the_gradient_of_a_microbatched_sum_is_the_full_batch_gradient():
    w = jnp.asarray([0.5, -1.0, 2.0])
    batch = _batch(jnp.float32, size=16)

    def loss(w, batch):
        return jnp.sum((batch["x"] @ w - batch["y"]) ** 2)

    full = jax.grad(loss)(w, batch)
    micro = jax.jit(jax.grad(gradtx.microbatch(loss, argnums=1, microbatch_size=4)))(w, batch)
    np.testing.assert_allclose(micro, full, rtol=1e-5)


def test_keyword_batch_arguments_and_another_batch_axis():
    def fun(scale, *, data):
        return jnp.sum(data * scale)  # data: (features, batch)

    data = jnp.arange(24.0).reshape(2, 12)
    ours = gradtx.microbatch(fun, (), 3, argnames="data", in_axes=1)(2.0, data=data)
    theirs = optax.microbatch(fun, (), 3, argnames="data", in_axes=1)(2.0, data=data)
    np.testing.assert_allclose(ours, theirs)
    np.testing.assert_allclose(ours, fun(2.0, data=data))


def test_an_early_stop_runs_only_the_real_microbatches():
    data = jnp.arange(1.0, 13.0)  # 4 microbatches of 3: 1..12 strided

    def run(lib, kinds, n):
        spec = (kinds.SUM, kinds.RUNNING_MEAN, kinds.MEAN)
        return lib(
            lambda x: (jnp.sum(x), jnp.sum(x), jnp.sum(x)), 0, 3, spec, num_real_microbatches=n
        )

    ours = jax.jit(lambda d, n: run(gradtx.microbatch, Ours, n)(d))(data, jnp.int32(2))
    theirs = jax.jit(lambda d, n: run(optax.microbatch, Theirs, n)(d))(data, jnp.int32(2))
    np.testing.assert_allclose(ours, theirs)
    first_two = float(jnp.sum(data[0::4]) + jnp.sum(data[1::4]))  # microbatches 0 and 1
    np.testing.assert_allclose(ours, [first_two, first_two / 2, first_two / 4])


def test_a_hand_made_accumulator_and_reshape_batch_axis():
    maximum = Accumulator(
        init=lambda like: jnp.full(like.shape, -jnp.inf, like.dtype),
        update=lambda carry, x, i: jnp.maximum(carry, x),
        finalize=lambda carry: carry,
        aggregate=lambda xs: jnp.max(xs, axis=0),
    )
    data = jnp.asarray([3.0, 9.0, 1.0, 4.0, 7.0, 2.0])
    assert float(gradtx.microbatch(jnp.max, 0, 2, maximum)(data)) == 9.0
    tree = {"a": jnp.arange(12).reshape(2, 6), "b": jnp.arange(6)}
    ours = reshape_batch_axis(tree, 3, axis=-1)  # the last axis of each leaf
    np.testing.assert_array_equal(
        ours["a"], optax.microbatching.reshape_batch_axis(tree["a"], 3, axis=1)
    )
    np.testing.assert_array_equal(
        ours["b"], optax.microbatching.reshape_batch_axis(tree["b"], 3, axis=0)
    )
    np.testing.assert_array_equal(ours["b"], [[0, 2, 4], [1, 3, 5]])  # microbatch i: i, i + 2, ...


@pytest.mark.parametrize("kind", ["CONCAT", "SUM", "MEAN"])
def test_micro_vmap_matches_optax_and_vmap(kind):
    def fun(x, w):
        return {"sq": (x @ w) ** 2, "lin": x * 2.0}

    x = _batch(jnp.float32)["x"]
    w = jnp.asarray([1.0, 0.5, -0.25])
    ours = micro_vmap(fun, (0, None), microbatch_size=4, accumulator=getattr(Ours, kind))(x, w)
    theirs = optax.microbatching.micro_vmap(
        fun, (0, None), microbatch_size=4, accumulator=getattr(Theirs, kind)
    )(x, w)
    _close(ours, theirs, "float32")
    mapped = jax.vmap(fun, (0, None))(x, w)
    reduce = {"CONCAT": lambda a: a, "SUM": lambda a: a.sum(0), "MEAN": lambda a: a.mean(0)}[kind]
    _close(ours, jax.tree.map(reduce, mapped), "float32")


def test_microbatch_size_none_is_the_function_itself():
    assert gradtx.microbatch(jnp.sum, 0, None) is jnp.sum


def test_errors_name_the_problem():
    f = gradtx.microbatch(lambda x, y: jnp.sum(x) + jnp.sum(y), (0, 1), 2)
    with pytest.raises(ValueError, match=r"the batch axes must have one size, got \[4, 6\]"):
        f(jnp.ones(4), jnp.ones(6))
    with pytest.raises(ValueError, match=r"microbatch_size=2 must divide the batch size 5"):
        f(jnp.ones(5), jnp.ones(5))
    mean = gradtx.microbatch(jnp.sum, 0, 2, Ours.MEAN)
    with pytest.raises(ValueError, match="MEAN and RUNNING_MEAN need floating-point results"):
        mean(jnp.arange(4))
    with pytest.raises(ValueError, match="every accumulator must be an AccumulationType"):
        gradtx.microbatch(jnp.sum, 0, 2, "sum")(jnp.ones(4))
    with pytest.raises(ValueError, match="in_axes has 1 entries for 2 batch arguments"):
        gradtx.microbatch(jnp.sum, (0, 1), 2, in_axes=(0,))
    with pytest.raises(ValueError, match="out_axes must be an int, and 0 unless accumulator"):
        micro_vmap(jnp.sum, out_axes=1, accumulator=Ours.SUM)
    with pytest.raises(ValueError, match="out_axes must be an int"):
        micro_vmap(jnp.sum, out_axes=(0,))


def test_micro_vmap_puts_the_examples_axis_where_out_axes_says():
    def fun(x):
        return {"outer": jnp.outer(x, x[:2]), "twice": 2 * x}

    data = jnp.arange(24.0).reshape(6, 4)
    for out_axes in (1, -1):
        got = micro_vmap(fun, out_axes=out_axes, microbatch_size=2)(data)
        expected = jax.vmap(fun, out_axes=out_axes)(data)
        for key in expected:
            assert got[key].shape == expected[key].shape, (out_axes, key)
            np.testing.assert_array_equal(got[key], expected[key])


def test_optax_accumulation_types_and_accumulators_are_accepted():
    data = jnp.arange(1.0, 7.0)
    spec = (Theirs.SUM, Theirs.CONCAT)
    ours = gradtx.microbatch(lambda x: (jnp.sum(x), x * 2), 0, 2, spec)(data)
    np.testing.assert_allclose(ours[0], 21.0)
    np.testing.assert_allclose(ours[1], data * 2)
    theirs = optax.microbatching.Accumulator(
        init=jnp.zeros_like,
        update=lambda carry, x, i: carry + x,
        finalize=lambda carry: -carry,
        aggregate=lambda xs: xs.sum(0),
    )
    np.testing.assert_allclose(gradtx.microbatch(jnp.sum, 0, 3, theirs)(data), -21.0)
