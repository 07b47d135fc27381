"""A fuzz test of bad input over the registry (hypothesis).

Random wrong hyperparameters, gradient shapes, gradient dtypes, gradient trees
and states go to every kind of registered transformation. Each case must either
work (a finite update of the params' shapes) or raise ``TypeError`` /
``ValueError`` from gradtx itself, with a message that starts with the public
function that complained: never an error from inside JAX, never a silent
broadcast. ``CASES`` counts the cases tried per class of bad input.
"""

from __future__ import annotations

import collections
import traceback

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradtx
from tests.registry import STRUCTURE_CHECKED, WITH_HYPERPARAMETER, tiny_grads, tiny_params

CASES: collections.Counter[str] = collections.Counter()
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
PUBLIC_HYPERPARAMETER = [
    e for e in WITH_HYPERPARAMETER if getattr(gradtx, e.public, None) is e.factory
]


def _from_gradtx(error: Exception) -> bool:
    """The error was raised by gradtx's own code, not inside JAX or NumPy."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and "/gradtx/" in frames[-1].filename.replace("\\", "/")


def _assert_clear(error: Exception, *names: str) -> None:
    message = str(error)
    assert isinstance(error, (TypeError, ValueError)), repr(error)
    assert _from_gradtx(error), f"raised outside gradtx: {error!r}"
    assert message.split(":", 1)[0] in gradtx.__all__, message
    for name in names:
        assert name in message, (name, message)


def _assert_works(tx, grads, state, params):
    updates, _ = tx.update(grads, state, params)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
        assert u.shape == p.shape
        assert bool(jnp.all(jnp.isfinite(u)))


_WRONG_HYPERPARAMETERS = st.one_of(
    st.text(max_size=5),
    st.complex_numbers(allow_nan=False, allow_infinity=False).filter(lambda z: z.imag != 0),
    st.booleans(),
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=2), st.floats(0.0, 1.0), max_size=2),
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=2, max_side=3),
        elements=st.floats(0, 0.5, width=32),
    ),
    st.just(object()),
)


@FUZZ
@given(entry=st.sampled_from(PUBLIC_HYPERPARAMETER), value=_WRONG_HYPERPARAMETERS)
def test_wrong_hyperparameters(entry, value):
    CASES["hyperparameter: wrong type or shape"] += 1
    with pytest.raises((TypeError, ValueError)) as info:
        entry.make(**{entry.hyperparameter: value})
    _assert_clear(info.value, entry.hyperparameter)


_SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)


@FUZZ
@given(entry=st.sampled_from(STRUCTURE_CHECKED), shape=_SHAPES)
def test_gradient_shapes(entry, shape):
    CASES["gradient: leaf of a random shape"] += 1
    params = tiny_params()
    tx = entry.make()
    state = tx.init(params)
    grads = {**tiny_grads(0), "w": jnp.full(shape, 0.5, jnp.float32)}
    if shape == params["w"].shape:
        _assert_works(tx, grads, state, params)
        return
    with pytest.raises((TypeError, ValueError)) as info:
        tx.update(grads, state, params)
    _assert_clear(info.value, "['w']")


@FUZZ
@given(
    entry=st.sampled_from(STRUCTURE_CHECKED),
    dtype=st.sampled_from(["int8", "int32", "uint8", "bool"]),
)
def test_gradient_dtypes(entry, dtype):
    CASES["gradient: integer or boolean leaf"] += 1
    params = tiny_params()
    tx = entry.make()
    grads = {**tiny_grads(0), "w": jnp.ones((2, 3), dtype)}
    with pytest.raises((TypeError, ValueError)) as info:
        tx.update(grads, tx.init(params), params)
    _assert_clear(info.value, "['w']")


@FUZZ
@given(
    entry=st.sampled_from(STRUCTURE_CHECKED),
    keys=st.sets(st.sampled_from(["w", "b", "c", "w2"]), min_size=1).filter(
        lambda k: k != {"w", "b"}
    ),
)
def test_gradient_trees(entry, keys):
    CASES["gradient: another tree"] += 1
    params = tiny_params()
    tx = entry.make()
    shapes = {"w": (2, 3), "b": (2,), "c": (1,), "w2": (2, 3)}
    grads = {k: jnp.full(shapes[k], 0.5, jnp.float32) for k in keys}
    with pytest.raises((TypeError, ValueError)) as info:
        tx.update(grads, tx.init(params), params)
    _assert_clear(info.value)


@FUZZ
@given(entry=st.sampled_from(STRUCTURE_CHECKED), shape=_SHAPES)
def test_states_built_for_other_params(entry, shape):
    """A state with per-leaf arrays of another shape is refused; a state without
    per-leaf arrays (a penalty's, a step count) is valid for any params."""
    CASES["state: built from params of another shape"] += 1
    params = tiny_params()
    tx = entry.make()
    state = tx.init({**params, "w": jnp.full(shape, 0.5, jnp.float32)})
    try:
        _assert_works(tx, tiny_grads(0), state, params)
    except (TypeError, ValueError) as error:
        assert shape != params["w"].shape, error
        _assert_clear(error, "['w']")


@pytest.mark.parametrize("name", ["scale_by_distance_over_gradients", "galore", "scale_by_galore"])
@pytest.mark.parametrize("shape", [(3, 2), (2,), (1, 2)], ids=str)
def test_a_state_for_params_of_other_shapes_is_named(name, shape):
    """Cases the fuzzing above once found: the error names the leaf, from gradtx."""
    entry = next(e for e in STRUCTURE_CHECKED if e.name == name)
    tx = entry.make()
    state = tx.init({**tiny_params(), "w": jnp.full(shape, 0.5, jnp.float32)})
    with pytest.raises(ValueError) as info:
        tx.update(tiny_grads(0), state, tiny_params())
    _assert_clear(info.value, "['w']")
