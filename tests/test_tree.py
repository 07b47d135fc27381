"""The shared pytree arithmetic: counters, magnitudes, norms, moments, casts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx import tree


def test_safe_increment_counts_and_saturates_at_int32_max():
    assert tree.safe_increment(jnp.int32(41)) == 42
    top = jnp.iinfo(jnp.int32).max
    saturated = tree.safe_increment(jnp.asarray(top, jnp.int32))
    assert saturated == top and saturated.dtype == jnp.int32


def test_abs_sq_is_the_squared_magnitude_for_complex_leaves():
    z = jnp.array([3 + 4j, -1j], jnp.complex64)
    out = tree.abs_sq(z)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, [25.0, 1.0])
    # z * z would give -7+24j and -1: the wrong quantity for a second moment.
    assert not np.allclose(np.asarray(z * z).real, out)


def test_global_norm_over_mixed_leaves_matches_numpy():
    t = {"a": jnp.arange(6.0).reshape(2, 3), "b": [jnp.array(2.0), jnp.array([1 + 1j])]}
    expected = np.sqrt(np.sum(np.arange(6.0) ** 2) + 4 + 2)
    np.testing.assert_allclose(tree.global_norm(t), expected, rtol=1e-6)


def test_global_norm_of_bfloat16_leaves_is_computed_in_float32():
    big = jnp.full((4096,), 1.0, jnp.bfloat16)
    # 4096 ones summed in bfloat16 would stall at 256 (8 significant bits).
    assert tree.squared_norm(big).dtype == jnp.float32
    assert float(tree.squared_norm(big)) == 4096.0


def test_norms_of_an_empty_tree_are_zero():
    assert float(tree.global_norm({})) == 0.0


def test_update_moment_matches_the_ema_formula():
    g = {"w": jnp.array([1.0, -2.0])}
    m = {"w": jnp.array([0.5, 0.5])}
    out = tree.update_moment(g, m, 0.9, 2)
    np.testing.assert_allclose(out["w"], 0.9 * 0.5 + 0.1 * np.array([1.0, 4.0]), rtol=1e-6)


def test_bias_correction_divides_by_one_minus_decay_to_the_t():
    out = tree.bias_correction({"m": jnp.array([0.19])}, 0.9, jnp.int32(2))
    np.testing.assert_allclose(out["m"], 0.19 / (1 - 0.81), rtol=1e-6)


def test_zeros_like_real_gives_the_real_dtype_and_keeps_none():
    params = {"z": jnp.ones(2, jnp.complex64), "n": None, "h": jnp.ones((), jnp.bfloat16)}
    zeros = tree.zeros_like(params, real=True)
    assert zeros["z"].dtype == jnp.float32
    assert zeros["n"] is None
    assert zeros["h"].dtype == jnp.bfloat16 and zeros["h"].shape == ()


def test_map_unzip_splits_per_leaf_tuples_into_trees():
    a, b = tree.map_unzip(lambda x: (x + 1, x * 2), 2, {"p": jnp.ones(1), "q": None})
    assert a["q"] is None and b["q"] is None
    np.testing.assert_allclose(a["p"], [2.0])
    np.testing.assert_allclose(b["p"], [2.0])
    assert tree.map_unzip(lambda x: (x, x), 2, {}) == ({}, {})


def test_check_structure_names_the_paths_that_differ():
    with pytest.raises(ValueError, match=r"missing from updates: \['b'\].*\['c'\]"):
        tree.check_structure({"a": 1.0, "b": 1.0}, {"a": 1.0, "c": 1.0}, owner="x")
    tree.check_structure({"a": jnp.ones(1)}, {"a": jnp.zeros(1)}, owner="x")


def test_compute_dtype_never_goes_below_float32():
    assert tree.compute_dtype(jnp.bfloat16) == jnp.float32
    assert tree.compute_dtype(jnp.float16) == jnp.float32
    assert tree.compute_dtype(jnp.complex64) == jnp.complex64
    with jax.enable_x64(True):
        assert tree.compute_dtype(jnp.float64) == jnp.float64


def test_a_real_state_dtype_for_a_complex_parameter_is_refused():
    with pytest.raises(ValueError, match="imaginary part of a complex64 parameter"):
        tree.zeros_like({"z": jnp.ones(2, jnp.complex64)}, jnp.bfloat16)
    # Second moments are real by design, so real=True accepts it.
    assert (
        tree.zeros_like({"z": jnp.ones(2, jnp.complex64)}, jnp.bfloat16, real=True)["z"].dtype
        == jnp.bfloat16
    )


def test_divide_by_root_gives_zero_for_a_zero_denominator_whatever_eps_is():
    num, den = jnp.array([0.0, 3.0]), jnp.array([0.0, 2.0])
    np.testing.assert_array_equal(tree.divide_by_root(num, den), [0.0, 1.5])
    traced = jax.jit(tree.divide_by_root)(num, den)
    np.testing.assert_array_equal(traced, [0.0, 1.5])


def test_a_structure_error_on_a_large_tree_names_ten_paths_and_counts_the_rest():
    params = {f"p{i:04d}": jnp.zeros(2) for i in range(300)}
    with pytest.raises(ValueError) as info:
        tree.check_structure(params, {"w": jnp.zeros(2)}, owner="test")
    message = str(info.value)
    assert "['p0009'] and 290 more" in message and "['p0010']" not in message
    assert "in updates but not in the state: ['w']" in message


@pytest.mark.perf
def test_map_unzip_traces_the_leaf_step_once_per_shape_under_jit_and_per_leaf_eagerly():
    shapes = []

    def step(a, b):
        shapes.append(a.shape)
        return a + b, a * b

    tree_ = {"x": jnp.ones(3), "y": jnp.full(3, 2.0, jnp.float32), "z": jnp.ones(4)}
    total, product = jax.jit(lambda t: tree.map_unzip(step, 2, t, t))(tree_)
    assert sorted(shapes) == [(3,), (4,)]
    np.testing.assert_array_equal(product["y"], np.full(3, 4.0))
    shapes.clear()
    tree.map_unzip(step, 2, tree_, tree_)
    assert len(shapes) == 3
