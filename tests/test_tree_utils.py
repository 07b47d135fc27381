"""Optax's tree utilities in gradtx.tree: the same numbers and dtypes as optax.tree.

Every function is compared with its ``optax.tree`` namesake on trees of several
shapes and dtypes (nested dicts and lists, ``None`` leaves, 0-d leaves, complex,
float32, float64, bfloat16), the reductions also with a float64 numpy sum, and
each is run under ``jit``. Where gradtx departs on purpose (integer trees for
the state builders, order-2 moments of complex leaves, bfloat16 bias
correction, ``set`` on nested matches), the departure has its own test.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx import tree

# Exact where both compute the same expression leaf by leaf; a few ulps where a
# reduction may add in another order (a jitted program fuses differently).
RTOL = {
    "float32": 1e-6,
    "float64": 1e-13,
    "bfloat16": 1e-2,
    "complex64": 1e-6,
}


def _trees(kind: str) -> tuple[Any, Any, Any]:
    """Three trees of one structure (x, y, z), with the leaves of ``kind``."""
    rng = np.random.default_rng({"nested": 0, "scalars": 1, "complex": 2}.get(kind, 3))

    def draw(shape):
        return rng.normal(size=shape)

    def build():
        if kind == "scalars":
            return {"s": draw(()), "t": [draw(()), draw(())]}
        if kind == "complex":
            return {
                "z": draw((2, 3)) + 1j * draw((2, 3)),
                "w": [draw(4) + 1j * draw(4), draw(())],
            }
        return {
            "a": draw((2, 3)),
            "b": [draw(()), (draw(4), None)],
            "c": {"d": draw((3, 1)), "e": None},
        }

    dtype = {"nested": "float32", "scalars": "float32", "complex": "complex64"}.get(kind, kind)

    def cast(t):
        def leaf(x):
            if kind == "complex" and not np.iscomplexobj(x):
                return jnp.asarray(x, jnp.float32)
            return jnp.asarray(x, dtype)

        return jax.tree.map(leaf, t)

    return cast(build()), cast(build()), cast(build())


KINDS = ["nested", "scalars", "complex", "float64", "bfloat16"]


@pytest.fixture(params=KINDS)
def kind(request):
    if request.param == "float64":
        with jax.enable_x64(True):
            yield request.param
    else:
        yield request.param


def _rtol(x: Any) -> float:
    return RTOL.get(str(jnp.asarray(x).dtype), 1e-6)


def assert_same(got: Any, expected: Any, rtol: float | None = None) -> None:
    """Same structure, same dtype and shape per leaf, values close (exact for integers)."""
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        g, e = jnp.asarray(g), jnp.asarray(e)
        assert g.dtype == e.dtype and g.shape == e.shape, (g.dtype, e.dtype, g.shape, e.shape)
        tol = rtol if rtol is not None else _rtol(e)
        np.testing.assert_allclose(
            np.asarray(g, np.float64 if not jnp.iscomplexobj(g) else np.complex128),
            np.asarray(e, np.float64 if not jnp.iscomplexobj(e) else np.complex128),
            rtol=tol,
            atol=tol,
        )


def _flat64(t: Any) -> np.ndarray:
    leaves = [np.asarray(x, np.complex128).ravel() for x in jax.tree.leaves(t)]
    return np.concatenate(leaves) if leaves else np.zeros(0)


# ---------------------------------------------------------------------- the catalogue


def test_every_public_name_of_optax_tree_is_in_gradtx_tree():
    names = {n for n in dir(optax.tree) if not n.startswith("_")}
    missing = sorted(n for n in names if not callable(getattr(tree, n, None)))
    assert not missing, missing


def test_the_signatures_take_optax_s_arguments():
    import inspect

    for name in (n for n in dir(optax.tree) if not n.startswith("_")):
        ours = inspect.signature(getattr(tree, name)).parameters
        theirs = inspect.signature(getattr(optax.tree, name)).parameters
        for (a, pa), (b, pb) in zip(ours.items(), theirs.items(), strict=False):
            assert a == b and pa.kind == pb.kind, (name, a, b)
        extra = list(ours)[len(theirs) :]
        assert all(ours[p].kind == ours[p].KEYWORD_ONLY for p in extra), (name, extra)
        assert len(ours) >= len(theirs), name


# ---------------------------------------------------------------------- arithmetic


UNARY = {
    "conj": lambda m, t: m.conj(t),
    "real": lambda m, t: m.real(t),
    "scale": lambda m, t: m.scale(0.5, t),
    "clip": lambda m, t: m.clip(m.real(t), -0.5, 0.75),
    "clip_low": lambda m, t: m.clip(m.real(t), min_value=0.0),
    "batch_shape": lambda m, t: m.batch_shape(t, (2,)),
    "full_like": lambda m, t: m.full_like(t, 0.25),
    "zeros_like": lambda m, t: m.zeros_like(t),
    "ones_like": lambda m, t: m.ones_like(t),
    "ones_like_dtype": lambda m, t: m.ones_like(m.real(t), jnp.float32),
    "cast": lambda m, t: m.cast(m.real(t), jnp.float32),
}

BINARY = {
    "add": lambda m, x, y, z: m.add(x, y),
    "add3": lambda m, x, y, z: m.add(x, y, z),
    "sub": lambda m, x, y, z: m.sub(x, y),
    "mul": lambda m, x, y, z: m.mul(x, y),
    "div": lambda m, x, y, z: m.div(x, y),
    "add_scale": lambda m, x, y, z: m.add_scale(x, -0.3, y),
    "where": lambda m, x, y, z: m.where(jnp.asarray(True), x, y),
    "cast_like": lambda m, x, y, z: m.cast_like(m.real(x), m.cast(m.real(y), jnp.bfloat16)),
}

REDUCTIONS = {
    "sum": lambda m, t: m.sum(t),
    "sum_associative": lambda m, t: m.sum(t, associative_reduction=True),
    "max": lambda m, t: m.max(m.real(t)),
    "min": lambda m, t: m.min(m.real(t)),
    "norm": lambda m, t: m.norm(t),
    "norm_squared": lambda m, t: m.norm(t, squared=True),
    "norm_1": lambda m, t: m.norm(t, ord=1),
    "norm_inf": lambda m, t: m.norm(t, ord=jnp.inf),
    "norm_inf_str": lambda m, t: m.norm(t, ord="infinity", squared=True),
    "vdot_self": lambda m, t: m.vdot(t, t),
}


def _all_results(m: Any, x: Any, y: Any, z: Any) -> dict[str, Any]:
    """Every function of the three tables above, applied with module ``m``."""
    y_div = jax.tree.map(lambda v: v + 3, y)  # away from zero
    out = {name: fn(m, x) for name, fn in UNARY.items()}
    out |= {name: fn(m, x, y_div if name == "div" else y, z) for name, fn in BINARY.items()}
    out |= {name: fn(m, x) for name, fn in REDUCTIONS.items()}
    return out


def _assert_results_same(got: dict[str, Any], expected: dict[str, Any], reduce_rtol=None) -> None:
    assert sorted(got) == sorted(expected)
    for name in got:
        rtol = reduce_rtol if name in REDUCTIONS else None
        try:
            assert_same(got[name], expected[name], rtol)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from error


def test_every_function_matches_optax_eagerly(kind):
    x, y, z = _trees(kind)
    _assert_results_same(_all_results(tree, x, y, z), _all_results(optax.tree, x, y, z))


def test_every_function_matches_optax_under_jit(kind):
    """One jitted program per kind holds every function of both libraries (with the
    eager test above: jit changes nothing but, in a reduction, the order of adds)."""
    x, y, z = _trees(kind)
    both = jax.jit(lambda x, y, z: (_all_results(tree, x, y, z), _all_results(optax.tree, x, y, z)))
    ours, theirs = both(x, y, z)
    _assert_results_same(ours, theirs)
    assert bool(jax.jit(tree.allclose)(x, x))


def test_vdot_of_two_trees_matches_optax_and_numpy(kind):
    x, y, _ = _trees(kind)
    got = tree.vdot(x, y)
    assert_same(got, optax.tree.vdot(x, y))
    expected = np.vdot(_flat64(x), _flat64(y))
    np.testing.assert_allclose(complex(got), expected, rtol=10 * _rtol(got), atol=_rtol(got))


def test_reductions_match_float64_numpy(kind):
    x, _, _ = _trees(kind)
    flat = _flat64(x)
    tol = dict(rtol=10 * _rtol(tree.sum(x)), atol=_rtol(tree.sum(x)))
    np.testing.assert_allclose(complex(tree.sum(x)), flat.sum(), **tol)
    np.testing.assert_allclose(float(tree.norm(x)), np.linalg.norm(flat), **tol)
    np.testing.assert_allclose(float(tree.norm(x, ord=1)), np.abs(flat).sum(), **tol)
    np.testing.assert_allclose(float(tree.norm(x, ord="inf")), np.abs(flat).max(), **tol)
    np.testing.assert_allclose(float(tree.max(tree.real(x))), flat.real.max(), **tol)
    np.testing.assert_allclose(float(tree.min(tree.real(x))), flat.real.min(), **tol)
    assert tree.size(x) == flat.size == optax.tree.size(x)


def test_allclose_matches_optax(kind):
    x, y, _ = _trees(kind)
    nudged = tree.scale(1 + 1e-7, x)
    for a, b in ((x, x), (x, y), (x, nudged)):
        assert bool(tree.allclose(a, b)) == bool(optax.tree.allclose(a, b))
    assert bool(tree.allclose(x, nudged, rtol=0.0, atol=0.0)) == bool(
        optax.tree.allclose(x, nudged, rtol=0.0, atol=0.0)
    )


def test_dtype_matches_optax_for_every_handler(kind):
    x, _, _ = _trees(kind)
    for handler in ("promote", "highest", "lowest"):
        assert tree.dtype(x, handler) == optax.tree.dtype(x, handler)
    if kind != "complex":  # its leaves are complex64 and float32
        assert tree.dtype(x) == optax.tree.dtype(x)


def test_dtype_of_mixed_and_unorderable_trees():
    mixed = {"a": jnp.zeros(1, jnp.float16), "b": jnp.zeros(1, jnp.bfloat16)}
    assert tree.dtype(mixed, "promote") == optax.tree.dtype(mixed, "promote") == jnp.float32
    with pytest.raises(ValueError, match=r"different dtypes .*\['a'\] \(float16\)"):
        tree.dtype(mixed)
    with pytest.raises(ValueError, match="do not promote one to the other"):
        tree.dtype(mixed, "highest")
    with pytest.raises(ValueError, match="mixed_dtype_handler must be"):
        tree.dtype(mixed, "largest")
    assert tree.dtype({}) == optax.tree.dtype({})


def test_empty_trees_match_optax():
    for name in ("sum", "norm", "norm_1", "vdot_self", "max", "min"):
        np.testing.assert_array_equal(REDUCTIONS[name](tree, {}), REDUCTIONS[name](optax.tree, {}))
    assert tree.size({}) == 0
    assert bool(tree.allclose({}, {}))


def test_norm_rejects_an_unknown_order_and_has_a_finite_gradient_at_zero():
    with pytest.raises(ValueError, match=r"ord must be None, 1, 2 or inf, got 3"):
        tree.norm({"a": jnp.ones(2)}, ord=3)
    grad = jax.grad(lambda t: tree.norm(t))({"a": jnp.zeros(3)})
    np.testing.assert_array_equal(grad["a"], np.zeros(3))


# ---------------------------------------------------------------------- the state builders


def test_zeros_ones_and_full_like_refuse_integer_leaves_on_purpose():
    ints = {"n": jnp.arange(3)}
    # Optax's gives integer arrays; gradtx's build optimizer state, which is inexact.
    assert optax.tree.zeros_like(ints)["n"].dtype == jnp.int32
    for make in (tree.zeros_like, tree.ones_like, lambda t: tree.full_like(t, 2.0)):
        with pytest.raises(TypeError, match=r"\['n'\] \(int32\)"):
            make(ints)


def test_the_renamed_arguments_take_optax_s_keywords():
    x = {"a": jnp.ones(2)}
    assert_same(tree.full_like(x, fill_value=3.0), optax.tree.full_like(x, fill_value=3.0))
    other = {"a": jnp.zeros(2, jnp.bfloat16)}
    assert_same(tree.cast_like(x, other_tree=other), optax.tree.cast_like(x, other_tree=other))
    m = {"a": jnp.array([0.5])}
    assert_same(
        tree.bias_correction(moment=m, decay=0.9, count=jnp.int32(3)),
        optax.tree.bias_correction(moment=m, decay=0.9, count=jnp.int32(3)),
    )


# ---------------------------------------------------------------------- moments


def _moments(kind):
    g, m, _ = _trees(kind)
    m = jax.tree.map(lambda x: jnp.abs(x).astype(tree.real_dtype(x.dtype)), m)
    return g, m


@pytest.mark.parametrize("order", [1, 2, 3])
def test_update_moment_matches_optax_on_real_leaves(order):
    for kind in ("nested", "scalars", "float64"):
        with jax.enable_x64(kind == "float64"):
            g, m = _moments(kind)
            assert_same(
                tree.update_moment(g, m, 0.9, order), optax.tree.update_moment(g, m, 0.9, order)
            )


def test_update_moment_averages_the_squared_magnitude_of_complex_leaves_on_purpose():
    g = {"z": jnp.array([3 + 4j, 1j], jnp.complex64)}
    nu = {"z": jnp.zeros(2, jnp.float32)}
    ours = tree.update_moment(g, nu, 0.5, 2)
    np.testing.assert_allclose(ours["z"], [12.5, 0.5])
    assert ours["z"].dtype == jnp.float32
    # Optax's order-2 moment of a complex leaf is the complex g**2 = -7+24j, -1.
    theirs = optax.tree.update_moment(g, nu, 0.5, 2)
    np.testing.assert_allclose(theirs["z"], [-3.5 + 12j, -0.5])
    # ... and its per-element-norm variant is the quantity gradtx averages.
    assert_same(ours, optax.tree.update_moment_per_elem_norm(g, nu, 0.5, 2))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_update_moment_per_elem_norm_matches_optax(kind, order):
    g, m = _moments(kind)
    # bfloat16: gradtx computes in float32 and rounds once, Optax in bfloat16.
    assert_same(
        tree.update_moment_per_elem_norm(g, m, 0.8, order),
        optax.tree.update_moment_per_elem_norm(g, m, 0.8, order),
        rtol=2e-2 if kind == "bfloat16" else None,
    )


def test_update_infinity_moment_matches_optax(kind):
    g, m = _moments(kind)
    ours = tree.update_infinity_moment(g, m, 0.9, 1e-3)
    if kind == "bfloat16":
        # The same max, computed in float32 and rounded once to the moment's dtype.
        assert_same(ours, optax.tree.update_infinity_moment(g, m, 0.9, 1e-3), rtol=1e-2)
    else:
        assert_same(ours, optax.tree.update_infinity_moment(g, m, 0.9, 1e-3))


def test_none_updates_leave_none_moments_as_optax():
    g = {"a": None, "b": jnp.ones(2)}
    m = {"a": jnp.ones(2), "b": jnp.zeros(2)}
    for name in ("update_moment", "update_moment_per_elem_norm"):
        ours = getattr(tree, name)(g, m, 0.9, 2)
        assert ours["a"] is None
        assert_same(ours, getattr(optax.tree, name)(g, m, 0.9, 2))
    assert tree.update_infinity_moment(g, m, 0.9, 0.0)["a"] is None


def test_bias_correction_keeps_float32_for_bfloat16_moments_on_purpose():
    m = {"a": jnp.array([0.5, -1.0], jnp.bfloat16), "b": jnp.array(0.25)}
    ours = tree.bias_correction(m, 0.9, jnp.int32(4))
    theirs = optax.tree.bias_correction(m, 0.9, jnp.int32(4))
    assert ours["a"].dtype == jnp.float32 and theirs["a"].dtype == jnp.bfloat16
    assert_same(ours["b"], theirs["b"])
    np.testing.assert_allclose(
        np.asarray(ours["a"]), np.asarray(theirs["a"], np.float32), rtol=1e-2
    )


# ---------------------------------------------------------------------- random trees


def test_random_like_and_split_key_like_draw_optax_s_numbers(kind):
    x, _, _ = _trees(kind)
    key = jax.random.key(3)
    keys = tree.split_key_like(key, x)
    np.testing.assert_array_equal(
        jax.random.key_data(jnp.stack(jax.tree.leaves(keys))),
        jax.random.key_data(jnp.stack(jax.tree.leaves(optax.tree.split_key_like(key, x)))),
    )
    samplers = (
        (jax.random.normal,) if kind == "complex" else (jax.random.normal, jax.random.uniform)
    )
    for sampler in samplers:
        assert_same(
            tree.random_like(key, x, sampler), optax.tree.random_like(key, x, sampler), rtol=0
        )
    if kind != "complex":
        assert_same(
            tree.random_like(key, x, dtype=jnp.float32),
            optax.tree.random_like(key, x, dtype=jnp.float32),
            rtol=0,
        )
        jitted = jax.jit(lambda k, t: tree.random_like(k, t))(key, x)
        assert_same(jitted, tree.random_like(key, x), rtol=0)


def test_random_like_takes_a_sampler_without_out_sharding_and_a_raw_key():
    def sampler(key, shape, dtype):
        return jax.random.bernoulli(key, 0.5, shape).astype(dtype)

    raw = jax.random.PRNGKey(1)
    x = {"a": jnp.zeros(5), "b": [jnp.zeros((2, 2))]}
    assert_same(tree.random_like(raw, x, sampler), optax.tree.random_like(raw, x, sampler), rtol=0)


def test_unwrap_random_key_data_matches_optax():
    t = {"k": jax.random.key(0), "raw": jax.random.PRNGKey(1), "x": jnp.ones(2)}
    ours, theirs = tree.unwrap_random_key_data(t), optax.tree.unwrap_random_key_data(t)
    assert ours["k"].dtype == jnp.uint32
    assert_same(ours, theirs, rtol=0)


# ---------------------------------------------------------------------- finding values in a state


class Inner(NamedTuple):
    count: Any
    learning_rate: Any


class Outer(NamedTuple):
    count: Any
    inner: Any
    hyper: Any


def _states() -> list[Any]:
    """States to search: gradtx's and Optax's own, and a hand-made nested one."""
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    hand = Outer(
        jnp.int32(1),
        [Inner(jnp.int32(2), jnp.float32(0.1)), {"learning_rate": jnp.float32(0.2)}],
        {"learning_rate": jnp.float32(0.3), "nested": Inner(jnp.int32(4), None)},
    )
    return [
        gradtx.chain(gradtx.add_noise(0.1, 0.5, key=0), gradtx.adam(0.1)).init(params),
        gradtx.inject_hyperparams(gradtx.adam)(learning_rate=0.1).init(params),
        optax.chain(optax.add_noise(0.1, 0.5, key=0), optax.adam(0.1)).init(params),
        optax.inject_hyperparams(optax.sgd)(learning_rate=lambda c: 1 / (c + 1)).init(params),
        hand,
    ]


def _shown(found):
    return [(jax.tree_util.keystr(p), jax.tree.map(np.asarray, v)) for p, v in found]


def _same_found(ours, theirs):
    a, b = _shown(ours), _shown(theirs)
    assert [p for p, _ in a] == [p for p, _ in b]
    for (_, u), (_, v) in zip(a, b, strict=True):
        jax.tree.map(np.testing.assert_array_equal, u, v)


KEYS = ["count", "learning_rate", "mu", "ScaleByAdamState", "Inner", "hyper", "nested", "absent"]


@pytest.mark.parametrize("index", range(5))
def test_get_all_with_path_matches_optax(index):
    state = _states()[index]
    for key in KEYS:
        _same_found(tree.get_all_with_path(state, key), optax.tree.get_all_with_path(state, key))
        ours = tree.get_all_with_path(state, key)
        assert all(isinstance(p, tuple) for p, _ in ours)


def test_paths_name_the_named_tuple_of_each_field():
    state = _states()[0]
    paths = [p for p, _ in tree.get_all_with_path(state, "count")]
    assert [str(p[-1]) for p in paths] == ["AddNoiseState.count", "ScaleByAdamState.count"]
    assert paths[0][-1] == tree.NamedTupleKey("AddNoiseState", "count")


def test_get_all_with_path_filters_like_optax():
    state = _states()[0]

    def only_adam(path, value):
        return "ScaleByAdamState" in str(path[-1])

    def optax_only_adam(path, value):
        return "ScaleByAdamState" in str(path[-1])

    _same_found(
        tree.get_all_with_path(state, "count", only_adam),
        optax.tree.get_all_with_path(state, "count", optax_only_adam),
    )
    assert len(tree.get_all_with_path(state, "count", only_adam)) == 1


def test_get_matches_optax_and_raises_on_several_matches():
    states = _states()
    assert tree.get(states[0], "mu") is not None
    jax.tree.map(
        np.testing.assert_array_equal, tree.get(states[0], "mu"), optax.tree.get(states[2], "mu")
    )
    assert tree.get(states[0], "absent", default=7) == 7
    with pytest.raises(KeyError, match=r"2 values match 'count'"):
        tree.get(states[0], "count")
    lr = tree.get(states[3], "learning_rate", filtering=lambda p, v: isinstance(v, jax.Array))
    assert float(lr) == float(
        optax.tree.get(states[3], "learning_rate", filtering=lambda p, v: isinstance(v, jax.Array))
    )


def _equal(a, b):
    a, b = tree.unwrap_random_key_data(a), tree.unwrap_random_key_data(b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("index", range(5))
def test_set_replaces_every_match_and_agrees_with_optax_where_it_does(index):
    state = _states()[index]
    for key in ("count", "learning_rate", "mu"):
        matches = tree.get_all_with_path(state, key)
        if not matches:
            with pytest.raises(KeyError, match=f"no value matches '{key}'"):
                tree.set(state, **{key: 0})
            continue
        new = tree.zeros_like(matches[0][1]) if key == "mu" else jnp.zeros_like(matches[0][1])
        ours = tree.set(state, **{key: new})
        found = tree.get_all_with_path(ours, key)
        assert [p for p, _ in found] == [p for p, _ in matches]
        assert all(_equal(v, new) for _, v in found)
        before, after = (jax.tree.leaves(tree.unwrap_random_key_data(t)) for t in (state, ours))
        if len(before) == len(after):  # (a None replaced by an array adds a leaf)
            changed = sum(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))
            assert changed <= len(jax.tree.leaves(new)) * len(matches)
        theirs = optax.tree.set(state, **{key: new})
        if all(_equal(v, new) for _, v in optax.tree.get_all_with_path(theirs, key)):
            assert _equal(ours, theirs)


def test_set_replaces_nested_matches_that_get_finds():
    state = _states()[4]
    new = tree.set(state, count=jnp.int32(0))
    assert [int(v) for _, v in tree.get_all_with_path(new, "count")] == [0, 0, 0]
    # Optax's set does not look inside a list, a plain tuple or a dict without
    # the key (Inner(count=2) sits in a list, Inner(count=4) in such a dict),
    # although its get finds both counts.
    theirs = optax.tree.set(state, count=jnp.int32(0))
    assert [int(v) for _, v in optax.tree.get_all_with_path(theirs, "count")] == [0, 2, 4]
    inject = _states()[1]
    assert [int(v) for _, v in tree.get_all_with_path(tree.set(inject, count=1), "count")] == [1, 1]


def test_set_with_filtering_and_a_whole_named_tuple():
    state = _states()[0]
    only_adam = lambda path, value: "ScaleByAdamState" in str(path[-1])  # noqa: E731
    new = tree.set(state, only_adam, count=jnp.int32(3))
    assert [int(v) for _, v in tree.get_all_with_path(new, "count")] == [0, 3]
    with pytest.raises(KeyError, match="no value that filtering keeps matches 'mu'"):
        tree.set(state, lambda p, v: False, mu=0)
    noise = tree.get(state, "AddNoiseState")
    replaced = tree.set(state, AddNoiseState=noise._replace(count=jnp.int32(5)))
    assert int(replaced[0].count) == 5
    assert _equal(replaced, optax.tree.set(state, AddNoiseState=noise._replace(count=jnp.int32(5))))


def test_map_params_matches_optax_on_gradtx_and_optax_transformations():
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    specs = {"w": "W", "b": "B"}
    for tx in (
        gradtx.adam(0.1),
        gradtx.chain(gradtx.trace(0.9), gradtx.scale_by_rms()),
        gradtx.sgd(0.1),
        optax.adamw(0.1),
    ):
        state = tx.init(params)
        for kwargs in ({}, {"transform_non_params": lambda _: None}):
            ours = tree.map_params(tx, lambda _, s: s, state, specs, **kwargs)
            theirs = optax.tree.map_params(tx, lambda _, s: s, state, specs, **kwargs)
            assert jax.tree.structure(ours) == jax.tree.structure(theirs)
            assert jax.tree.leaves(ours) == jax.tree.leaves(theirs)
        shapes = tree.map_params(tx.init, lambda x: x.shape, state, is_leaf=None)
        assert jax.tree.structure(shapes) == jax.tree.structure(
            optax.tree.map_params(tx.init, lambda x: x.shape, state)
        )


def test_bias_correction_takes_a_python_int_count():
    """Optax's tests call it with ``count=1``, not an array."""
    got = gradtx.tree.bias_correction({"m": jnp.array([0.25], jnp.bfloat16)}, 0.5, 2)
    np.testing.assert_allclose(np.asarray(got["m"]), [0.25 / (1 - 0.5**2)], rtol=1e-6)
