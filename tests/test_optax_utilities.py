"""Optax's utility functions under their Optax names, compared with Optax's own.

The numerics (``global_norm``, ``safe_norm``, ``safe_root_mean_squares``,
``safe_increment``), the stateless helpers, ``tree_map_params``,
``per_example_layer_norm_clip``, ``monitor`` / ``measure_with_ema`` (step by step:
Optax's ``monitor`` changes its state's structure after one step, so it cannot run
in the scan of tests/test_optax_parity.py), ``flatten`` and the state aliases.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

DTYPES = [jnp.float32, jnp.bfloat16, jnp.complex64]


def _close(a, b, rtol=1e-6, atol=1e-7):
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(
            np.asarray(x, np.complex128), np.asarray(y, np.complex128), rtol=rtol, atol=atol
        ),
        a,
        b,
    )


def _sample(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        x = x + 1j * rng.normal(size=shape)
    return jnp.asarray(x, dtype)


# ---------------------------------------------------------------- numerics


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_global_norm_is_optaxs(dtype):
    tree = {"a": _sample((3, 4), dtype), "b": [_sample((5,), dtype, 1), _sample((), dtype, 2)]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        theirs = optax.global_norm(tree)
    ours = gradtx.global_norm(tree)
    rtol = 1e-2 if dtype == jnp.bfloat16 else 1e-6
    _close(ours, theirs, rtol=rtol)
    assert ours.dtype == theirs.dtype


def test_global_norm_in_float64():
    with jax.enable_x64(True):
        tree = [_sample((7,), jnp.float64), _sample((2, 2), jnp.float64, 1)]
        expected = np.sqrt(sum(np.sum(np.asarray(x) ** 2) for x in tree))
        np.testing.assert_allclose(gradtx.global_norm(tree), expected, rtol=1e-14)


SAFE_NORM_CASES = [
    (np.array([3.0, 4.0]), 1.0, {}),
    (np.zeros(3), 0.5, {}),
    (np.array([0.1, 0.1]), 1.0, {}),
    (np.arange(6.0).reshape(2, 3) - 2, 0.0, {"ord": 1}),
    (np.arange(6.0).reshape(2, 3) - 2, 2.0, {"axis": 1}),
    (np.arange(6.0).reshape(2, 3) - 2, 1.5, {"axis": 0, "keepdims": True}),
    (np.array([[1.0, 0.0], [0.0, 0.0]]), 0.5, {"axis": 1, "ord": np.inf}),
    (np.arange(12.0).reshape(3, 4) / 7 - 0.6, 0.2, {"ord": "fro"}),
]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("x, min_norm, kwargs", SAFE_NORM_CASES)
def test_safe_norm_values_and_gradients_are_optaxs(x, min_norm, kwargs, dtype):
    with jax.enable_x64(dtype == jnp.float64):
        x = jnp.asarray(x, dtype)
        ours = gradtx.safe_norm(x, min_norm, **kwargs)
        theirs = optax.safe_norm(x, min_norm, **kwargs)
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        _close(ours, theirs)
        grad_ours = jax.grad(lambda v: jnp.sum(gradtx.safe_norm(v, min_norm, **kwargs)))(x)
        grad_theirs = jax.grad(lambda v: jnp.sum(optax.safe_norm(v, min_norm, **kwargs)))(x)
        assert bool(jnp.all(jnp.isfinite(grad_ours)))
        _close(grad_ours, grad_theirs)


def test_safe_norm_gradient_is_zero_where_clipped_where_maximum_gives_nan():
    naive = jax.grad(lambda v: jnp.maximum(jnp.linalg.norm(v), 1.0))(jnp.zeros(3))
    assert bool(jnp.any(jnp.isnan(naive)))
    np.testing.assert_array_equal(jax.grad(gradtx.safe_norm)(jnp.zeros(3), 1.0), np.zeros(3))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64], ids=["float32", "complex64"])
@pytest.mark.parametrize("scale, min_rms", [(1.0, 0.1), (0.01, 0.5), (0.0, 0.3), (2.0, 0.0)])
def test_safe_root_mean_squares_values_and_gradients_are_optaxs(scale, min_rms, dtype):
    x = scale * _sample((4, 3), dtype)
    ours, theirs = (
        gradtx.safe_root_mean_squares(x, min_rms),
        optax.safe_root_mean_squares(x, min_rms),
    )
    _close(ours, theirs)
    expected = max(np.sqrt(np.mean(np.abs(np.asarray(x, np.complex128)) ** 2)), min_rms)
    np.testing.assert_allclose(ours, expected, rtol=1e-6)
    if dtype == jnp.float32:
        grad_ours = jax.grad(gradtx.safe_root_mean_squares)(x, min_rms)
        grad_theirs = jax.grad(optax.safe_root_mean_squares)(x, min_rms)
        assert bool(jnp.all(jnp.isfinite(grad_ours)))
        _close(grad_ours, grad_theirs)


@pytest.mark.parametrize(
    "value, dtype",
    [
        (0, jnp.int32),
        (2**31 - 1, jnp.int32),
        (126, jnp.int8),
        (127, jnp.int8),
        (3.5, jnp.float32),
        (float(np.finfo(np.float16).max), jnp.float16),
        (65535, jnp.uint16),
    ],
)
def test_safe_increment_is_optaxs_and_keeps_the_dtype(value, dtype):
    count = jnp.asarray(value, dtype)
    ours = gradtx.safe_increment(count)
    assert ours.dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(ours, optax.safe_increment(count))
    np.testing.assert_array_equal(
        gradtx.safe_int32_increment(count), optax.safe_int32_increment(count)
    )
    jitted = jax.jit(gradtx.safe_increment)(count)
    np.testing.assert_array_equal(jitted, ours)


def test_safe_increment_saturates_at_the_maximum():
    top = jnp.asarray(np.iinfo(np.int32).max, jnp.int32)
    assert int(gradtx.safe_increment(top)) == np.iinfo(np.int32).max
    assert int(gradtx.safe_increment(top - 1)) == np.iinfo(np.int32).max


# ---------------------------------------------------------------- stateless helpers


def test_init_empty_state_is_optaxs():
    assert gradtx.init_empty_state({"w": jnp.ones(2)}) == gradtx.EmptyState()
    assert gradtx.init_empty_state(None) == tuple(optax.init_empty_state(None))


@pytest.mark.parametrize("with_params", [True, False])
def test_stateless_with_tree_map_is_optaxs(with_params):
    def f(u, p):
        return 2 * u if p is None else u * p + 1

    params = {"a": _sample((3,), jnp.float32), "b": [_sample((2, 2), jnp.float32, 1)]}
    updates = jax.tree.map(lambda x: x + 0.5, params)
    ours_tx, theirs_tx = gradtx.stateless_with_tree_map(f), optax.stateless_with_tree_map(f)
    args = (params,) if with_params else ()
    ours, state = ours_tx.update(updates, ours_tx.init(params), *args)
    theirs, _ = theirs_tx.update(updates, theirs_tx.init(params), *args)
    _close(ours, theirs)
    assert state == gradtx.EmptyState()


def test_stateless_with_tree_map_rejects_a_non_callable():
    with pytest.raises(TypeError, match="stateless_with_tree_map: f must be callable"):
        gradtx.stateless_with_tree_map(1.0)


def test_tree_map_params_is_optaxs():
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    ours_tx, theirs_tx = gradtx.adam(0.1), optax.adam(0.1)
    ours = gradtx.tree_map_params(
        ours_tx, lambda x: x.shape, ours_tx.init(params), transform_non_params=lambda _: None
    )
    theirs = optax.tree_map_params(
        theirs_tx, lambda x: x.shape, theirs_tx.init(params), transform_non_params=lambda _: None
    )
    assert ours[0].mu == theirs[0].mu and ours[0].nu == theirs[0].nu
    assert ours[0].count is None and theirs[0].count is None


# ---------------------------------------------------------------- per-layer DP clipping


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("clip", [0.0, 0.3, 1.0, 5.0, np.inf])
def test_per_example_layer_norm_clip_is_optaxs(clip, uniform):
    grads = {"w": _sample((4, 3, 2), jnp.float32), "b": _sample((4, 5), jnp.float32, 1)}
    ours, ours_counts = gradtx.per_example_layer_norm_clip(grads, clip, uniform)
    theirs, theirs_counts = optax.per_example_layer_norm_clip(grads, clip, uniform)
    _close(ours, theirs, rtol=1e-5, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, ours_counts, theirs_counts)


def test_per_example_layer_norm_clip_with_one_leaf_is_the_global_clip():
    grads = [_sample((6, 4), jnp.float32)]
    ours = gradtx.per_example_layer_norm_clip(grads, 0.7)
    global_ = gradtx.per_example_global_norm_clip(grads, 0.7)
    _close(ours[0], global_[0])
    assert int(ours[1][0]) == int(global_[1])


def test_per_example_layer_norm_clip_bounds_each_example_by_the_global_clip():
    grads = {"w": 10 * _sample((5, 3), jnp.float32), "b": 10 * _sample((5, 7), jnp.float32, 1)}
    for uniform in (True, False):
        # One example at a time: its clipped gradient is the "sum" over a batch of one.
        for i in range(5):
            one = jax.tree.map(lambda g, i=i: g[i : i + 1], grads)
            clipped, _ = gradtx.per_example_layer_norm_clip(one, 2.0, uniform)
            assert float(gradtx.global_norm(clipped)) <= 2.0 * (1 + 1e-6)


# ---------------------------------------------------------------- monitoring


def _measures(lib):
    norm = gradtx.global_norm if lib is gradtx else optax.tree.norm
    return {
        "norm": norm,
        "norm_ema": lib.measure_with_ema(norm, 0.8),
        "max_ema": lib.measure_with_ema(lambda u: jnp.max(u["w"]), 0.5, debias=False),
    }


def test_monitor_measurements_are_optaxs_step_by_step():
    params = {"w": _sample((3,), jnp.float32), "b": _sample((2,), jnp.float32, 1)}
    ours_tx = gradtx.chain(gradtx.monitor(_measures(gradtx)), gradtx.sgd(0.1))
    theirs_tx = optax.chain(optax.monitor(_measures(optax)), optax.sgd(0.1))
    ours_state, theirs_state = ours_tx.init(params), theirs_tx.init(params)
    # Our state keeps one structure (zeros before the first step); Optax's is {}.
    assert set(ours_state[0].measurements) == {"norm", "norm_ema", "max_ema"}
    assert theirs_state[0].measurements == {}
    step = jax.jit(ours_tx.update)
    for k in range(6):
        grads = jax.tree.map(lambda x, k=k: x * (k + 1) - 0.3, params)
        ours, ours_state = step(grads, ours_state, params)
        theirs, theirs_state = theirs_tx.update(grads, theirs_state, params)
        _close(ours, theirs)
        _close(ours_state[0].measurements, theirs_state[0].measurements)


def test_monitor_state_is_stable_under_scan():
    params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    tx = gradtx.monitor(_measures(gradtx))

    def body(state, k):
        _, state = tx.update(jax.tree.map(lambda x: x * k, params), state)
        return state, state.measurements["norm"]

    _, norms = jax.lax.scan(body, tx.init(params), jnp.arange(1.0, 4.0))
    np.testing.assert_allclose(norms, np.sqrt(3.0) * np.arange(1.0, 4.0), rtol=1e-6)


def test_monitor_rejects_bad_measures():
    with pytest.raises(TypeError, match="monitor: measures must be a dict"):
        gradtx.monitor([gradtx.global_norm])
    with pytest.raises(TypeError, match=r"monitor: measures\['x'\] must be a callable"):
        gradtx.monitor({"x": 1.0})
    with pytest.raises(TypeError, match="measure_with_ema: measure must be callable"):
        gradtx.measure_with_ema(1.0, 0.9)


@pytest.mark.parametrize("debias", [True, False])
def test_measure_with_ema_is_optaxs(debias):
    params = {"w": _sample((3,), jnp.float32)}
    ours_tx = gradtx.measure_with_ema(gradtx.global_norm, 0.7, debias)
    theirs_tx = optax.measure_with_ema(optax.tree.norm, 0.7, debias)
    ours_state, theirs_state = ours_tx.init(params), theirs_tx.init(params)
    for k in range(5):
        grads = jax.tree.map(lambda x, k=k: x + k, params)
        ours, ours_state = ours_tx.update(grads, ours_state)
        theirs, theirs_state = theirs_tx.update(grads, theirs_state)
        _close(ours, theirs)


# ---------------------------------------------------------------- flatten, aliases


def test_flatten_reduces_over_the_whole_tree_as_optax():
    params = {"a": _sample((3, 2), jnp.float32), "b": _sample((4,), jnp.float32, 1)}
    grads = jax.tree.map(lambda x: 3 * x, params)
    ours_tx = gradtx.flatten(gradtx.clip_by_leaf_norm(1.0))
    theirs_tx = optax.flatten(optax.clip_by_block_rms(1.0))
    ours, _ = ours_tx.update(grads, ours_tx.init(params), params)
    # One "leaf": clipping it by norm bounds the whole tree's norm.
    np.testing.assert_allclose(gradtx.global_norm(ours), 1.0, rtol=1e-6)
    theirs, _ = theirs_tx.update(grads, theirs_tx.init(params), params)
    ours_rms, _ = gradtx.flatten(gradtx.clip_by_block_rms(1.0)).update(
        grads, gradtx.flatten(gradtx.clip_by_block_rms(1.0)).init(params)
    )
    _close(ours_rms, theirs)


def test_flatten_keeps_each_leafs_dtype_where_optax_promotes():
    params = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(3, jnp.float32)}
    tx = gradtx.flatten(gradtx.sgd(0.1))
    ours, _ = tx.update(params, tx.init(params))
    theirs, _ = optax.flatten(optax.sgd(0.1)).update(
        params, optax.flatten(optax.sgd(0.1)).init(params)
    )
    assert ours["a"].dtype == jnp.bfloat16 and theirs["a"].dtype == jnp.float32
    _close(ours, theirs, rtol=1e-2)


def test_flatten_rejects_a_non_transformation():
    with pytest.raises(TypeError, match="flatten: inner must be a transformation"):
        gradtx.flatten(0.1)


def test_multi_transform_is_partition():
    labels = {"w": "a", "b": "b"}
    params = {"w": jnp.ones(2), "b": jnp.ones(2)}
    transforms = {"a": gradtx.adam(0.1), "b": gradtx.sgd(0.1)}
    tx = gradtx.multi_transform(transforms, labels)
    state = tx.init(params)
    assert isinstance(state, gradtx.MultiTransformState)
    assert gradtx.MultiTransformState is gradtx.PartitionState
    ours, _ = tx.update(params, state)
    expected, _ = gradtx.partition(transforms, labels).update(params, state)
    _close(ours, expected)


@pytest.mark.parametrize(
    "name, factory",
    [
        ("ClipState", lambda: gradtx.clip(1.0)),
        ("ClipByGlobalNormState", lambda: gradtx.clip_by_global_norm(1.0)),
        ("AdaptiveGradClipState", lambda: gradtx.adaptive_grad_clip(0.1)),
        ("NonNegativeParamsState", gradtx.keep_params_nonnegative),
        ("ScaleState", lambda: gradtx.scale(0.1)),
        ("ScaleByTrustRatioState", gradtx.scale_by_trust_ratio),
    ],
)
def test_empty_state_aliases_are_the_blocks_states(name, factory):
    state = factory().init({"w": jnp.ones(2)})
    assert isinstance(state, getattr(gradtx, name))
    assert getattr(gradtx, name)._fields == getattr(optax, name)._fields == ()


def test_type_aliases_are_exported():
    for name in [
        "MaskOrFn",
        "ShouldSkipUpdateFunction",
        "TransformInitFn",
        "TransformUpdateFn",
        "TransformUpdateExtraArgsFn",
    ]:
        assert name in gradtx.__all__ and hasattr(gradtx, name)


# ---------------------------------------------------------------- linear algebra


def _spd(n, seed, spread=10.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.linspace(1.0, spread, n)) @ q.T


@pytest.mark.parametrize("n, seed", [(3, 0), (6, 1), (10, 2)])
def test_power_iteration_finds_numpys_dominant_eigenpair(n, seed):
    a = _spd(n, seed)
    values, vectors = np.linalg.eigh(a)
    with jax.enable_x64(True):
        value, vector = gradtx.power_iteration(
            jnp.asarray(a), num_iters=2000, error_tolerance=1e-12
        )
        np.testing.assert_allclose(value, values[-1], rtol=1e-10)
        np.testing.assert_allclose(abs(np.dot(vector, vectors[:, -1])), 1.0, rtol=1e-8)
    value32, _ = gradtx.power_iteration(jnp.asarray(a, jnp.float32))
    theirs, _ = optax.power_iteration(jnp.asarray(a, jnp.float32))
    np.testing.assert_allclose(value32, theirs, rtol=1e-5)
    np.testing.assert_allclose(value32, values[-1], rtol=1e-3)


def test_power_iteration_on_a_pytree_product():
    a, b = _spd(3, 3), _spd(2, 4, spread=30.0)

    def product(v):
        return {"x": a @ v["x"], "y": b @ v["y"]}

    with jax.enable_x64(True):
        v0 = {"x": jnp.ones(3), "y": jnp.ones(2)}
        value, _ = gradtx.power_iteration(product, v0=v0, num_iters=3000, error_tolerance=1e-12)
        np.testing.assert_allclose(value, 30.0, rtol=1e-9)
    with pytest.raises(ValueError, match="power_iteration: v0 is required"):
        gradtx.power_iteration(product)


@pytest.mark.parametrize("p", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("n, seed", [(4, 0), (8, 1)])
def test_matrix_inverse_pth_root_is_scipys_fractional_power(p, n, seed):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    a = _spd(n, seed)
    with jax.enable_x64(True):
        root, error = gradtx.matrix_inverse_pth_root(
            jnp.asarray(a), p, ridge_epsilon=0.0, error_tolerance=1e-12
        )
        expected = np.real(scipy_linalg.fractional_matrix_power(a, -1.0 / p))
        np.testing.assert_allclose(root, expected, rtol=1e-8, atol=1e-10)
        assert float(error) < 1e-8
    if p in (1, 2, 4, 8):  # the powers Optax computes correctly
        ours, _ = gradtx.matrix_inverse_pth_root(jnp.asarray(a, jnp.float32), p)
        theirs, _ = optax.matrix_inverse_pth_root(jnp.asarray(a, jnp.float32), p)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_matrix_inverse_pth_root_of_a_scalar_and_with_a_ridge():
    root, _ = gradtx.matrix_inverse_pth_root(jnp.array([[16.0]]), 4, ridge_epsilon=0.0)
    np.testing.assert_allclose(root, [[0.5]], rtol=1e-6)
    a = jnp.asarray(_spd(4, 5), jnp.float32)
    ours, _ = gradtx.matrix_inverse_pth_root(a, 2, ridge_epsilon=1e-3)
    theirs, _ = optax.matrix_inverse_pth_root(a, 2, ridge_epsilon=1e-3)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_matrix_inverse_pth_root_validates_p():
    with pytest.raises(ValueError, match="matrix_inverse_pth_root: p must be a positive integer"):
        gradtx.matrix_inverse_pth_root(jnp.eye(2), 0)
    with pytest.raises(ValueError, match="p must be a positive integer, got 1.5"):
        gradtx.matrix_inverse_pth_root(jnp.eye(2), 1.5)


@pytest.mark.parametrize("m, n, seed", [(6, 3, 0), (10, 4, 1), (5, 5, 2)])
def test_nnls_is_scipys_and_optaxs(m, n, seed):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(m, n)), rng.normal(size=m)
    expected, _ = scipy_optimize.nnls(a, b)
    with jax.enable_x64(True):
        x = gradtx.nnls(jnp.asarray(a), jnp.asarray(b), 20000)
        np.testing.assert_allclose(x, expected, atol=1e-8)
    ours = gradtx.nnls(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), 500)
    theirs = optax.nnls(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), 500)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_nnls_with_several_right_hand_sides_and_bad_shapes():
    rng = np.random.default_rng(3)
    a, b = jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.normal(size=(5, 2)))
    both = gradtx.nnls(a, b, 300)
    assert both.shape == (3, 2)
    np.testing.assert_allclose(both[:, 1], gradtx.nnls(a, b[:, 1], 300), rtol=1e-6)
    with pytest.raises(ValueError, match="nnls: A must be"):
        gradtx.nnls(a, jnp.ones(4), 10)


def test_multi_normal_is_optaxs():
    loc, log_scale = jnp.array([0.5, -1.0, 2.0]), jnp.array([0.1, -0.3, 0.0])
    ours, theirs = gradtx.multi_normal(loc, log_scale), optax.multi_normal(loc, log_scale)
    key = jax.random.PRNGKey(7)
    np.testing.assert_allclose(ours.sample((4,), key), theirs.sample((4,), key), rtol=1e-6)
    x = jnp.array([[0.0, 0.0, 0.0], [1.0, -1.0, 2.5]])
    np.testing.assert_allclose(ours.log_prob(x), theirs.log_prob(x), rtol=1e-6)
    assert [np.asarray(v).tolist() for v in ours.params] == [
        np.asarray(v).tolist() for v in theirs.params
    ]
    np.testing.assert_array_equal(ours.log_scale, theirs.log_scale)
