"""Wrong types, shapes and dtypes fail early, with a message that names them.

* Hyperparameters: a string, a complex number, a bool, None, an array of another
  shape, or a schedule where the argument takes none, raise at construction
  (``TypeError``; ``ValueError`` for a shape), naming the owner, the argument,
  what was given and what is allowed. Traced scalars still pass
  (tests/test_validation.py, tests/test_inject.py).
* ``update`` compares every gradient leaf's shape and dtype kind with the
  state's; ``apply_updates`` refuses to broadcast.
* Masks and labels that are pytrees with leaves are read as trees, even when
  they are callable (an Equinox module of bools).
* Integer and boolean params are refused at ``init``, naming the leaf.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests.registry import REGISTRY, STRUCTURE_CHECKED, WITH_HYPERPARAMETER, tiny_grads, tiny_params

REAL = r"must be a real number \(a Python, NumPy or JAX scalar, or a 0-d array\)"

WRONG_TYPES = [
    # (factory, kwargs, exception, regex)
    (
        gradtx.adam,
        dict(learning_rate="1e-3"),
        TypeError,
        rf"learning_rate {REAL} or a schedule, got '1e-3' \(str\)",
    ),
    (
        gradtx.adam,
        dict(learning_rate=0.1 + 1j),
        TypeError,
        r"learning_rate .* got \(0\.1\+1j\) \(complex\)",
    ),
    (
        gradtx.sgd,
        dict(learning_rate=jnp.full(3, 0.1)),
        ValueError,
        r"sgd: learning_rate .* got a float32 array of shape \(3,\)",
    ),
    (
        gradtx.adam,
        dict(learning_rate=np.ones((1, 1))),
        ValueError,
        r"got a float64 array of shape \(1, 1\)",
    ),
    (gradtx.adam, dict(learning_rate=0.1, b1=True), TypeError, rf"b1 {REAL}, got True \(bool\)"),
    (gradtx.adam, dict(learning_rate=0.1, eps=None), TypeError, rf"eps {REAL}, got None"),
    (
        gradtx.adam,
        dict(learning_rate=0.1, b2=jnp.complex64(0.9)),
        TypeError,
        r"b2 .* \(complex64\)",
    ),
    (
        gradtx.scale_by_adam,
        dict(b1=lambda count: 0.9),
        TypeError,
        r"b1 .* \(this argument takes no schedule\)",
    ),
    (gradtx.rmsprop, dict(learning_rate=0.1, momentum="0.9"), TypeError, r"momentum .* got '0\.9'"),
    (gradtx.scale, dict(step_size=b"0.1"), TypeError, r"scale: step_size .* got b'0\.1' \(bytes\)"),
    (gradtx.clip, dict(max_delta="1"), TypeError, r"clip: max_delta .* got '1'"),
    (
        gradtx.clip_by_global_norm,
        dict(max_norm=jnp.ones(2)),
        ValueError,
        r"max_norm .* shape \(2,\)",
    ),
    (gradtx.rprop, dict(learning_rate=0.1, eta_minus="0.5"), TypeError, r"eta_minus .* got '0\.5'"),
    (
        gradtx.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=5, increase_factor="2"),
        TypeError,
        r"increase_factor",
    ),
    (
        gradtx.adaptive_grad_clip,
        dict(clipping=0.1, axis=0.5),
        TypeError,
        r"axis must be None, an int or a tuple of ints, got 0\.5",
    ),
    (
        gradtx.add_decayed_weights,
        dict(weight_decay=0.1, mask="w"),
        TypeError,
        r"mask must be .*got 'w' \(str\) at the root",
    ),
    (
        gradtx.adamw,
        dict(learning_rate=0.1, mask={"w": 1.0}),
        TypeError,
        r"mask must be .*got 1\.0 \(float\) at \['w'\]",
    ),
    (gradtx.sgd, dict(learning_rate=0.1, accumulator_dtype=0.5), ValueError, r"accumulator_dtype"),
    # Optax catalogue: axes, masks, names and functions.
    (gradtx.centralize, dict(output_axis=0.5), TypeError, r"output_axis must be an int, got 0\.5"),
    (gradtx.freeze, dict(mask=None), TypeError, r"freeze: mask must be .*got None"),
    (gradtx.freeze, dict(mask={"w": 1.0}), TypeError, r"every mask leaf must be a bool"),
    (
        gradtx.selective_transform,
        dict(optimizer=gradtx.sgd(0.1), freeze_mask=None),
        TypeError,
        r"freeze_mask must be .*got None",
    ),
    (gradtx.snapshot, dict(measure_name=1, measure=jnp.sum), TypeError, r"measure_name must be"),
    (gradtx.snapshot, dict(measure_name="n", measure=1.0), TypeError, r"measure must be callable"),
    (
        gradtx.conditionally_mask,
        dict(inner=gradtx.sgd(0.1), should_transform_fn=True),
        TypeError,
        r"should_transform_fn must be a function of the step count, got bool",
    ),
    (
        gradtx.conditionally_transform,
        dict(inner=0.1, should_transform_fn=lambda step: True),
        TypeError,
        r"argument 0 must be a transformation",
    ),
    (
        gradtx.with_extra_args_support,
        dict(tx="adam"),
        TypeError,
        r"with_extra_args_support: argument 0 must be a transformation",
    ),
    (
        gradtx.inject_stateful_hyperparams,
        dict(inner_factory=0.1),
        TypeError,
        r"inner_factory must be callable",
    ),
    (
        gradtx.exponential_decay,
        dict(init_value="1", transition_steps=10, decay_rate=0.5),
        TypeError,
        r"init_value",
    ),
]


@pytest.mark.parametrize("case", WRONG_TYPES, ids=lambda c: f"{c[0].__name__}-{'-'.join(c[1])}")
def test_a_hyperparameter_of_the_wrong_type_or_shape_raises_at_construction(case):
    factory, kwargs, exception, pattern = case
    with pytest.raises(exception, match=pattern) as info:
        factory(**kwargs)
    assert str(info.value).split(":", 1)[0] in gradtx.__all__, str(info.value)


# The registry entries whose factory is the public function itself (not an example
# wrapper): their hyperparameter is an argument of gradtx's API.
PUBLIC_HYPERPARAMETER = [
    e for e in WITH_HYPERPARAMETER if getattr(gradtx, e.public, None) is e.factory
]
WRONG_VALUES = {
    "str": ("0.5", TypeError),
    "complex": (0.5 + 0.5j, TypeError),
    "bool": (True, TypeError),
    "vector": (np.full(2, 0.5), ValueError),
}


@pytest.mark.parametrize("kind", sorted(WRONG_VALUES))
@pytest.mark.parametrize("entry", PUBLIC_HYPERPARAMETER, ids=str)
def test_every_registered_hyperparameter_is_type_checked(entry, kind):
    value, exception = WRONG_VALUES[kind]
    with pytest.raises(exception, match=rf"{entry.hyperparameter} must be ") as info:
        entry.make(**{entry.hyperparameter: value})
    assert str(info.value).split(":", 1)[0] in gradtx.__all__, str(info.value)


def test_a_traced_hyperparameter_of_the_wrong_shape_raises_when_traced():
    params = jnp.zeros(1)

    @jax.jit
    def step(rate):
        tx = gradtx.sgd(rate)
        return tx.update(jnp.ones(1), tx.init(params))[0]

    assert step(jnp.float32(0.5)).shape == (1,)
    with pytest.raises(ValueError, match=r"a traced float32 array of shape \(3,\)"):
        step(jnp.full(3, 0.5, jnp.float32))


# ---------------------------------------------------------------- leaf shapes and dtypes

WRONG_LEAVES = {
    "column": jnp.zeros((2, 1)),
    "row": jnp.zeros((1, 3)),
    "scalar": jnp.zeros(()),
    "integer": jnp.zeros((2, 3), jnp.int32),
}


@pytest.mark.parametrize("kind", sorted(WRONG_LEAVES))
@pytest.mark.parametrize("entry", STRUCTURE_CHECKED, ids=str)
def test_a_gradient_leaf_of_another_shape_or_dtype_kind_is_named(entry, kind):
    params = tiny_params()
    tx = entry.make()
    state = tx.init(params)
    grads = {**tiny_grads(0), "w": WRONG_LEAVES[kind]}
    with pytest.raises(ValueError) as info:
        tx.update(grads, state, params)
    message = str(info.value)
    assert "['w']" in message and "(2, 3)" in message, (entry.name, message)
    assert str(np.shape(WRONG_LEAVES[kind])) in message, (entry.name, message)


def test_the_leaf_check_runs_at_trace_time_and_names_both_shapes():
    tx = gradtx.adam(0.1)
    state = tx.init({"w": jnp.zeros((3, 2))})
    expected = (
        r"scale_by_adam: .*\['w'\]: expected a floating array of shape \(3, 2\), "
        r"got a floating array of shape \(3, 1\)"
    )
    with pytest.raises(ValueError, match=expected):
        jax.jit(tx.update)({"w": jnp.zeros((3, 1))}, state)


def test_apply_updates_refuses_to_broadcast():
    with pytest.raises(ValueError, match=r"\['w'\] has shape \(1,\), its update \(3,\)"):
        gradtx.apply_updates(
            {"w": jnp.ones(1), "b": jnp.ones(2)}, {"w": jnp.ones(3), "b": jnp.ones(2)}
        )
    out = gradtx.apply_updates({"w": jnp.ones(1), "b": None}, {"w": jnp.ones(1), "b": None})
    assert out["b"] is None and out["w"].shape == (1,)


# ---------------------------------------------------------------- masks as trees


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Linear:
    """An Equinox-style module: a dataclass pytree that is also callable."""

    w: Any
    b: Any

    def __call__(self, x):
        return self.w * x + self.b


def _model():
    return Linear(w=jnp.full(2, 2.0), b=jnp.full(2, 2.0))


def test_a_callable_module_of_bools_is_a_mask_for_masked_adamw_and_decay():
    params, grads = _model(), Linear(w=jnp.ones(2), b=jnp.ones(2))
    mask = Linear(w=True, b=False)
    tx = gradtx.masked(gradtx.sgd(1.0), mask)
    out, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(out.w, -1.0)  # sgd applied
    np.testing.assert_array_equal(out.b, 1.0)  # passed through
    decay = gradtx.add_decayed_weights(0.5, mask=mask)
    out, _ = decay.update(grads, decay.init(params), params)
    np.testing.assert_array_equal(out.w, 2.0)  # 1 + 0.5 * 2
    np.testing.assert_array_equal(out.b, 1.0)
    zeros = Linear(w=jnp.zeros(2), b=jnp.zeros(2))
    for tx in (
        gradtx.adamw(0.1, weight_decay=0.5, mask=mask),
        gradtx.inject_hyperparams(gradtx.adamw)(learning_rate=0.1, weight_decay=0.5, mask=mask),
    ):
        out, _ = tx.update(zeros, tx.init(params), params)
        np.testing.assert_allclose(out.w, -0.1 * 0.5 * 2.0)  # decayed
        np.testing.assert_array_equal(out.b, 0.0)  # not decayed


def test_a_callable_module_of_labels_is_read_as_labels():
    params, grads = _model(), Linear(w=jnp.ones(2), b=jnp.ones(2))
    tx = gradtx.partition(
        {"fast": gradtx.sgd(1.0), "slow": gradtx.sgd(0.1)}, Linear(w="fast", b="slow")
    )
    out, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(out.w, -1.0)
    np.testing.assert_allclose(out.b, -0.1)


def test_a_plain_function_mask_is_still_called():
    params = _model()
    tx = gradtx.masked(gradtx.sgd(1.0), lambda p: Linear(w=False, b=True))
    out, _ = tx.update(params, tx.init(params), params)
    np.testing.assert_array_equal(out.w, 2.0)
    np.testing.assert_array_equal(out.b, -2.0)


# ---------------------------------------------------------------- integer params


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_], ids=["int32", "bool"])
@pytest.mark.parametrize("entry", [e for e in REGISTRY if not e.accepts_integer_params], ids=str)
def test_integer_and_boolean_params_are_refused_at_init_naming_the_leaf(entry, dtype):
    params = {"w": jnp.zeros((2, 3), dtype), "b": jnp.zeros(2)}
    with pytest.raises(TypeError, match=rf"\['w'\] \({jnp.dtype(dtype).name}\)"):
        entry.make().init(params)


def test_masked_out_integer_leaves_are_fine():
    params = {"step": jnp.zeros((), jnp.int32), "w": jnp.ones(2)}
    tx = gradtx.masked(gradtx.sgd(0.1, momentum=0.9), {"step": False, "w": True})
    grads = {"step": np.zeros((), jax.dtypes.float0), "w": jnp.ones(2)}
    out, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(out["w"], -0.1)
