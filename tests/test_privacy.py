"""DP-SGD (Abadi et al. 2016, Alg. 1): reference, Optax, noise, per-example inputs.

* ``dpsgd`` reproduces the float64 loop of ``tests/reference/privacy.py`` at
  every one of 120 steps on a pytree of three leaves and a batch of six
  examples, fed the standard normal draws of the documented key schedule, in
  float32 and float64 (tolerances as in tests/test_noise.py).
* With the same seed it computes Optax's numbers (``optax.contrib.dpsgd``, with
  momentum and Nesterov too), in one jitted 120-step program per case, and
  ``per_example_global_norm_clip`` matches Optax's on several trees.
* The noise has the paper's scale ``sigma C / B`` (checked on 100,000 draws),
  is reproducible, and is absent with ``noise_multiplier=0`` (the exact
  clipped mean, also with ``l2_norm_clip=inf``, where Optax gives NaN).
* Per-example inputs: a missing or mismatched batch axis, integer gradients and
  bad hyperparameters fail with messages naming them.

The generic contract tests run these methods too, through registry entries that
build a batch of two examples from the params-shaped gradient they feed
(tests/registry.py, ``_two_examples``).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import gradtx
from gradtx.transforms.privacy import DifferentiallyPrivateAggregateState
from tests.reference import privacy as ref

NUM_STEPS = 120
BATCH = 6
RTOL = {"float64": 1e-10, "float32": 1e-5}
LR, CLIP, SIGMA, SEED = 0.05, 1.0, 0.8, 42

SHAPES = {"layer": {"b": (5,), "w": (3, 4)}, "temperature": ()}
TREEDEF = jax.tree.structure(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
LEAF_SHAPES = jax.tree.leaves(SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def _make_data(seed=2016):
    """Per-example gradients whose norms straddle the bound (0.1 to ~4 C)."""
    rng = np.random.default_rng(seed)
    theta0 = [rng.normal(size=s).astype(np.float32).astype(np.float64) for s in LEAF_SHAPES]
    size = sum(int(np.prod(s)) for s in LEAF_SHAPES)
    scales = rng.uniform(0.1, 4.0, size=(NUM_STEPS, BATCH)) / np.sqrt(size)
    grads = [
        (rng.normal(size=(NUM_STEPS, BATCH, *s)) * scales.reshape(NUM_STEPS, BATCH, *[1] * len(s)))
        .astype(np.float32)
        .astype(np.float64)
        for s in LEAF_SHAPES
    ]
    return theta0, grads


THETA0, GRADS = _make_data()
GRADS_BY_STEP = [[g[k] for g in GRADS] for k in range(NUM_STEPS)]


def standard_normals(seed, num_steps, shapes):
    """The draws of the documented schedule: per step, split the key into
    ``1 + (number of leaves)`` keys, the first for the next step, the others
    drawing each leaf's float32 standard normals in ``jax.tree`` order."""
    key, out = jax.random.key(seed), []
    for _ in range(num_steps):
        key, *keys = jax.random.split(key, len(shapes) + 1)
        out.append(
            [
                np.asarray(jax.random.normal(k, s, jnp.float32), np.float64)
                for k, s in zip(keys, shapes, strict=True)
            ]
        )
    return out


def _scan(tx, dtype, theta0=THETA0, grads=GRADS):
    """The params after each of the steps of ``tx`` on the per-example gradients."""
    params = jax.tree.unflatten(TREEDEF, [jnp.asarray(t, dtype) for t in theta0])
    gs = jax.tree.unflatten(TREEDEF, [jnp.asarray(g, dtype) for g in grads])

    def body(carry, g):
        p, state = carry
        updates, state = tx.update(g, state, p)
        p = jax.tree.map(lambda a, u: a + u, p, updates)
        return (p, state), p

    return jax.lax.scan(body, (params, tx.init(params)), gs)[1]


def _rows(theta0, path):
    return [
        np.concatenate([np.asarray(t, np.float64)[None], np.asarray(p, np.float64)])
        for t, p in zip(theta0, jax.tree.leaves(path), strict=True)
    ]


def deviation(got, want):
    return max(
        float(np.max(np.abs(g - w) / (np.abs(w) + 1))) for g, w in zip(got, want, strict=True)
    )


# ---------------------------------------------------------------- the paper's algorithm


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_trajectory_matches_the_reference(dtype):
    z = standard_normals(SEED, NUM_STEPS, LEAF_SHAPES)
    want = ref.dpsgd(THETA0, GRADS_BY_STEP, LR, CLIP, SIGMA, z)
    with jax.enable_x64(dtype == "float64"):
        noisy = gradtx.dpsgd(LR, CLIP, SIGMA, SEED)
        quiet = gradtx.dpsgd(LR, CLIP, 0.0, SEED)
        paths = jax.jit(lambda: (_scan(noisy, dtype), _scan(quiet, dtype)))()
    worst = deviation(_rows(THETA0, paths[0]), want)
    assert worst <= RTOL[dtype], f"[{dtype}]: deviation {worst:.3e}"
    quiet_want = ref.dpsgd(THETA0, GRADS_BY_STEP, LR, CLIP, 0.0, z)
    assert deviation(_rows(THETA0, paths[1]), quiet_want) <= RTOL[dtype]
    # Both the noise and the clipping matter: without either the run ends elsewhere.
    assert deviation(quiet_want, want) > 1e3 * RTOL["float32"]
    unclipped = ref.dpsgd(THETA0, GRADS_BY_STEP, LR, 1e9, 0.0, z)
    assert deviation(unclipped, quiet_want) > 1e3 * RTOL["float32"]


# ---------------------------------------------------------------- Optax

OPTAX_TOL = dict(rtol=1e-6, atol=5e-7)  # as tests/test_optax_parity.py, float32


def _optax_dpsgd(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Optax's own seed= path
        return optax.contrib.dpsgd(*args, **kwargs)


OPTAX_CASES = {
    "plain": dict(),
    "momentum": dict(momentum=0.9),
    "nesterov": dict(momentum=0.9, nesterov=True),
    "small_clip": dict(l2_norm_clip=0.05),
    "noiseless": dict(noise_multiplier=0.0),
}


def test_dpsgd_matches_optax_with_the_same_seed():
    """Every case's 120 steps, gradtx's and Optax's, in one jitted program."""
    pairs = {}
    for name, options in OPTAX_CASES.items():
        kwargs = {"learning_rate": LR, "l2_norm_clip": CLIP, "noise_multiplier": SIGMA}
        kwargs |= {"seed": SEED} | options
        pairs[name] = (gradtx.dpsgd(**kwargs), _optax_dpsgd(**kwargs))
    paths = jax.jit(
        lambda: {n: (_scan(a, "float32"), _scan(b, "float32")) for n, (a, b) in pairs.items()}
    )()
    for name, (ours, theirs) in paths.items():
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            np.testing.assert_allclose(a, b, err_msg=name, **OPTAX_TOL)
        moved = max(float(jnp.max(jnp.abs(p[-1] - p[0]))) for p in jax.tree.leaves(ours))
        assert moved > 0.005, name  # (0.009 for the smallest bound)


@pytest.mark.parametrize(
    "key",
    [SEED, jax.random.key(SEED), jax.random.PRNGKey(SEED)],
    ids=["int", "typed-key", "raw-key"],
)
def test_aggregate_draws_optax_s_noise_for_every_kind_of_key(key):
    g = jax.tree.unflatten(TREEDEF, [jnp.asarray(x[0], jnp.float32) for x in GRADS])
    ours = gradtx.differentially_private_aggregate(CLIP, SIGMA, key)
    theirs = optax.contrib.differentially_private_aggregate(CLIP, SIGMA, key=jax.random.key(SEED))
    s1, s2 = ours.init(g), theirs.init(g)
    for _ in range(3):
        (u1, s1), (u2, s2) = ours.update(g, s1), theirs.update(g, s2)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2), strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_allclose(a, b, **OPTAX_TOL)
    np.testing.assert_array_equal(s1.rng_key, jax.random.key_data(s2.rng_key))


def _trees():
    rng = np.random.default_rng(5)
    return [
        {"a": rng.normal(size=(4, 2, 3)), "b": [rng.normal(size=(4,)), None]},
        [rng.normal(size=(3, 7))],
        rng.normal(size=(5, 2)) * 10,
        {"s": np.zeros((2, 3)), "t": np.ones((2,))},  # a zero example: kept as is
    ]


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize("clip", [0.0, 0.3, 1.5, np.inf])
def test_per_example_global_norm_clip_matches_optax_and_numpy(index, clip):
    grads = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), _trees()[index])
    (ours, n_ours), (theirs, n_theirs) = (
        gradtx.per_example_global_norm_clip(grads, clip),
        optax.per_example_global_norm_clip(grads, clip),
    )
    assert int(n_ours) == int(n_theirs) and n_ours.dtype == jnp.int32
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # float64 numpy: g_i / max(1, ||g_i|| / C), summed over the examples.
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(_trees()[index])]
    b = leaves[0].shape[0]
    norms = np.sqrt(sum((x.reshape(b, -1) ** 2).sum(1) for x in leaves))
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.nan_to_num(np.minimum(clip / norms, 1.0), nan=1.0)
    assert int(n_ours) == int((factor < 1).sum())
    for got, x in zip(jax.tree.leaves(ours), leaves, strict=True):
        np.testing.assert_allclose(got, np.tensordot(factor, x, 1), rtol=1e-5, atol=1e-6)


def test_per_example_global_norm_clip_takes_integer_gradients_as_optax():
    grads = [jnp.array([[0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]])]
    ours, n = gradtx.per_example_global_norm_clip(grads, 1.25)
    theirs, m = optax.per_example_global_norm_clip(grads, 1.25)
    assert ours[0].dtype == theirs[0].dtype == jnp.float32 and int(n) == int(m) == 3
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-6)


# ---------------------------------------------------------------- the noise


def _one_step(tx, g):
    return tx.update(g, tx.init(g))[0]


def test_noise_has_the_papers_scale():
    """Zero gradients: the update is N(0, sigma^2 C^2) / B, elementwise."""
    sigma, clip, b = 1.3, 0.7, 4
    g = {"w": jnp.zeros((b, 100_000)), "v": jnp.zeros((b, 10))}
    u = _one_step(gradtx.differentially_private_aggregate(clip, sigma, key=1), g)
    z = np.asarray(u["w"], np.float64) * b / (sigma * clip)
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(z.std() - 1) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-4
    # Complex leaves: circular, E|n|^2 = sigma^2 C^2 (each part half of it).
    gc = {"z": jnp.zeros((b, 100_000), jnp.complex64)}
    uc = np.asarray(_one_step(gradtx.differentially_private_aggregate(clip, sigma, key=2), gc)["z"])
    zc = uc * b / (sigma * clip)
    assert abs(np.mean(np.abs(zc) ** 2) - 1) < 0.02
    assert abs(np.var(zc.real) - 0.5) < 0.01 and abs(np.var(zc.imag) - 0.5) < 0.01


def test_noise_is_reproducible_and_fresh_at_every_step_and_leaf():
    g = jax.tree.unflatten(TREEDEF, [jnp.zeros((3, *s)) for s in LEAF_SHAPES])
    tx = gradtx.differentially_private_aggregate(CLIP, SIGMA, key=11)
    state, eager = tx.init(g), []
    for _ in range(4):
        u, state = tx.update(g, state)
        eager.append(u)
    step, state, jitted = jax.jit(tx.update), tx.init(g), []
    for _ in range(2):
        u, state = step(g, state)
        jitted.append(u)
    # Write the state out as numpy, read it back, go on.
    restored = jax.tree.map(jnp.asarray, jax.tree.map(np.asarray, state))
    assert isinstance(restored, DifferentiallyPrivateAggregateState)
    assert restored.rng_key.dtype == jnp.uint32
    for _ in range(2):
        u, restored = step(g, restored)
        jitted.append(u)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=3e-7, atol=1e-7), jitted, eager)
    w = [np.asarray(u["layer"]["w"]) for u in eager]
    assert not np.allclose(w[0], w[1])
    assert not np.allclose(w[0].ravel()[:5], np.asarray(eager[0]["layer"]["b"]))
    other = _one_step(gradtx.differentially_private_aggregate(CLIP, SIGMA, key=12), g)
    assert not np.allclose(other["layer"]["w"], w[0])


def test_float64_adds_the_float32_noise_and_bfloat16_keeps_its_dtype():
    g32 = {"w": jnp.zeros((2, 50))}
    f32 = _one_step(gradtx.differentially_private_aggregate(1.0, 1.0, key=3), g32)
    with jax.enable_x64(True):
        f64 = _one_step(
            gradtx.differentially_private_aggregate(1.0, 1.0, key=3),
            {"w": jnp.zeros((2, 50), jnp.float64)},
        )
        assert f64["w"].dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(f64["w"]), np.asarray(f32["w"]), rtol=1e-6)
    bf = _one_step(
        gradtx.differentially_private_aggregate(1.0, 1.0, key=3),
        {"w": jnp.zeros((2, 50), jnp.bfloat16)},
    )
    assert bf["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(bf["w"], np.float32), f32["w"], rtol=1e-2, atol=1e-3)


# ---------------------------------------------------------------- the noiseless path


def test_noise_multiplier_zero_gives_the_exact_clipped_mean():
    grads = {"a": jnp.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]]), "b": jnp.array([0.0, 0.0, 2.0])}
    u = _one_step(gradtx.differentially_private_aggregate(1.0, 0.0, key=0), grads)
    # Norms 5, 0.5 and 2: factors 0.2, 1, 0.5.
    np.testing.assert_allclose(u["a"], np.array([0.6 + 0.3, 0.8 + 0.4]) / 3, rtol=1e-6)
    np.testing.assert_allclose(u["b"], 1.0 / 3, rtol=1e-6)
    with pytest.warns(UserWarning):  # Optax's key=None path
        theirs = optax.contrib.differentially_private_aggregate(1.0, 0.0)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), u, _one_step(theirs, grads)
    )


def test_no_clipping_and_no_noise_is_the_plain_mean_where_optax_gives_nan():
    grads = {"a": jnp.array([[3.0, 4.0], [1.0, -2.0]])}
    u = _one_step(gradtx.differentially_private_aggregate(jnp.inf, 0.0, key=0), grads)
    np.testing.assert_array_equal(u["a"], [2.0, 1.0])
    theirs = _one_step(optax.contrib.differentially_private_aggregate(jnp.inf, 0.0, key=0), grads)
    assert bool(jnp.all(jnp.isnan(theirs["a"])))


def test_dpsgd_is_sgd_on_the_privatized_gradient():
    g = jax.tree.unflatten(TREEDEF, [jnp.asarray(x[0], jnp.float32) for x in GRADS])
    for momentum, nesterov in ((None, False), (0.9, False), (0.9, True)):
        tx = gradtx.dpsgd(0.1, CLIP, SIGMA, 3, momentum, nesterov)
        composed = gradtx.chain(
            gradtx.differentially_private_aggregate(CLIP, SIGMA, key=3),
            gradtx.sgd(0.1, momentum, nesterov),
        )
        params = jax.tree.map(lambda x: x[0], g)
        s1, s2 = tx.init(params), composed.init(params)
        for _ in range(3):
            (u1, s1), (u2, s2) = tx.update(g, s1), composed.update(g, s2)
            jax.tree.map(np.testing.assert_array_equal, u1, u2)


# ---------------------------------------------------------------- bad input


def test_gradients_without_a_common_batch_axis_are_refused_naming_the_shapes():
    tx = gradtx.differentially_private_aggregate(1.0, 1.0, key=0)
    params = {"a": jnp.zeros(2), "b": jnp.zeros(())}
    state = tx.init(params)
    for grads in (
        {"a": jnp.zeros((3, 2)), "b": jnp.zeros((4,))},
        {"a": jnp.zeros((3, 2)), "b": 1.0},
    ):
        with pytest.raises(
            ValueError, match=r"same leading batch axis; got leaf shapes \[\(3, 2\)"
        ):
            tx.update(grads, state)
    with pytest.raises(ValueError, match="per_example_global_norm_clip: expects per-example"):
        gradtx.per_example_global_norm_clip([jnp.zeros(3), jnp.zeros(4)], 1.0)
    with pytest.raises(ValueError, match=r"\['a'\] \(int32, examples of shape \(2,\)\)"):
        tx.update({"a": jnp.zeros((3, 2), jnp.int32), "b": jnp.zeros(3)}, state)
    with pytest.raises(TypeError, match=r"differentially_private_aggregate: .*\['a'\]"):
        tx.init({"a": jnp.zeros(2, jnp.int32)})


def test_an_empty_tree_passes_through():
    tx = gradtx.dpsgd(0.1, 1.0, 1.0, 0)
    updates, _ = tx.update({}, tx.init({}))
    assert updates == {}
    assert gradtx.per_example_global_norm_clip({}, 1.0)[0] == {}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(l2_norm_clip=-1.0, noise_multiplier=1.0, key=0), r"l2_norm_clip must be .*got -1\.0"),
        (dict(l2_norm_clip=float("nan"), noise_multiplier=1.0, key=0), r"l2_norm_clip .*got nan"),
        (
            dict(l2_norm_clip=1.0, noise_multiplier=-0.5, key=0),
            r"noise_multiplier must be .*got -0\.5",
        ),
        (dict(l2_norm_clip=1.0, noise_multiplier=np.inf, key=0), r"noise_multiplier .*got inf"),
        (dict(l2_norm_clip=1.0, noise_multiplier=1.0), r"key must be an int seed or a PRNG key"),
        (dict(l2_norm_clip=1.0, noise_multiplier=1.0, key=0, seed=0), "pass key or seed, not both"),
        (dict(l2_norm_clip=1.0, noise_multiplier=1.0, key="k"), r"key must be .*got 'k'"),
        (
            dict(l2_norm_clip=1.0, noise_multiplier=1.0, key=jax.random.split(jax.random.key(0))),
            r"a single PRNG key, got shape \(2,\)",
        ),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=rf"differentially_private_aggregate: .*{message}"):
        gradtx.differentially_private_aggregate(**kwargs)


def test_seed_keyword_is_the_int_key_and_traced_hyperparameters_pass():
    g = {"w": jnp.asarray(GRADS[1][0], jnp.float32)}
    by_seed = _one_step(gradtx.differentially_private_aggregate(CLIP, SIGMA, seed=5), g)
    by_key = _one_step(gradtx.differentially_private_aggregate(CLIP, SIGMA, key=5), g)
    jax.tree.map(np.testing.assert_array_equal, by_seed, by_key)

    @jax.jit
    def traced(clip, sigma, lr):
        return _one_step(gradtx.dpsgd(lr, clip, sigma, 5), g)

    eager = _one_step(gradtx.dpsgd(0.1, CLIP, SIGMA, 5), g)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        traced(jnp.float32(CLIP), jnp.float32(SIGMA), jnp.float32(0.1)),
        eager,
    )
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1\.0"):
        gradtx.dpsgd(0.1, 1.0, 1.0, 0, momentum=1.0)
