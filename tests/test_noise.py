"""Annealed gradient noise: reference, Optax, reproducibility, statistics, dtypes.

* ``chain(add_noise(eta, gamma, key), sgd)`` reproduces the float64 loop of
  ``tests/reference/noise.py`` (Neelakantan et al. 2015, Sec. 2) at every one of
  120 steps on a pytree of three leaves, fed the standard normal draws of the
  documented key schedule (tolerances as in tests/test_reference_trajectories.py).
* It adds the same numbers as ``optax.add_noise`` for float32 and complex64
  gradients; in float64 it deliberately adds the float32 run's noise.
* The noise is reproducible (same key, same noise; jit or not; a restored state
  continues the sequence) and has the variance ``eta / (1 + t)^gamma`` of the
  paper, checked statistically on 100,000 draws per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import gradtx
from gradtx.transforms.noise import AddNoiseState, add_noise
from tests.reference import noise as ref

NUM_STEPS = 120
RTOL = {"float64": 1e-10, "float32": 1e-5}
ETA, GAMMA, LR, SEED = 0.3, 0.55, 0.05, 42

SHAPES = {"layer": {"b": (5,), "w": (3, 4)}, "temperature": ()}
TREEDEF = jax.tree.structure(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
LEAF_SHAPES = jax.tree.leaves(SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def _make_data(seed=2015):
    rng = np.random.default_rng(seed)
    theta0 = [rng.normal(size=s).astype(np.float32).astype(np.float64) for s in LEAF_SHAPES]
    grads = [
        rng.normal(size=(NUM_STEPS, *s)).astype(np.float32).astype(np.float64) for s in LEAF_SHAPES
    ]
    return theta0, grads


THETA0, GRADS = _make_data()
GRADS_BY_STEP = [[g[k] for g in GRADS] for k in range(NUM_STEPS)]


def standard_normals(seed, num_steps, shapes):
    """The draws of the documented schedule: per step, split the key into the next
    key and a sample key, split that into one key per leaf (``jax.tree`` order),
    and draw float32 standard normals."""
    key, out = jax.random.key(seed), []
    for _ in range(num_steps):
        key, sample = jax.random.split(key)
        keys = jax.random.split(sample, len(shapes))
        out.append(
            [
                np.asarray(jax.random.normal(k, s, jnp.float32), np.float64)
                for k, s in zip(keys, shapes, strict=True)
            ]
        )
    return out


def trajectory(tx, dtype, theta0=THETA0, grads=GRADS):
    with jax.enable_x64(dtype == "float64"):
        full = gradtx.chain(tx, gradtx.sgd(LR))
        params = jax.tree.unflatten(TREEDEF, [jnp.asarray(t, dtype) for t in theta0])
        gs = jax.tree.unflatten(TREEDEF, [jnp.asarray(g, dtype) for g in grads])

        @jax.jit
        def run(params, gs):
            def body(carry, g):
                p, state = carry
                updates, state = full.update(g, state, p)
                p = gradtx.apply_updates(p, updates)
                return (p, state), p

            return jax.lax.scan(body, (params, full.init(params)), gs)[1]

        path = jax.tree.leaves(run(params, gs))
        return [
            np.concatenate([np.asarray(t, np.float64)[None], np.asarray(p, np.float64)])
            for t, p in zip(theta0, path, strict=True)
        ]


def deviation(got, want):
    return max(
        float(np.max(np.abs(g - w) / (np.abs(w) + 1))) for g, w in zip(got, want, strict=True)
    )


def reference_run():
    z = standard_normals(SEED, NUM_STEPS, LEAF_SHAPES)
    return ref.noisy_sgd(THETA0, GRADS_BY_STEP, z, LR, ETA, GAMMA)


def case_deviation(dtype):
    return deviation(trajectory(add_noise(ETA, GAMMA, key=SEED), dtype), reference_run())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_trajectory_matches_reference(dtype):
    want = reference_run()
    worst = deviation(trajectory(add_noise(ETA, GAMMA, key=SEED), dtype), want)
    assert worst <= RTOL[dtype], f"[{dtype}]: deviation {worst:.3e}"
    # The noise mattered: without it the run ends elsewhere.
    quiet = ref.noisy_sgd(
        THETA0, GRADS_BY_STEP, standard_normals(SEED, NUM_STEPS, LEAF_SHAPES), LR, 0.0, GAMMA
    )
    assert deviation(quiet, want) > 1e3 * RTOL["float32"]


# ---------------------------------------------------------------- Optax

OPTAX_TOL = dict(rtol=1e-6, atol=5e-7)  # as tests/test_optax_parity.py, float32


@pytest.mark.parametrize(
    "key",
    [SEED, jax.random.key(SEED), jax.random.PRNGKey(SEED)],
    ids=["int", "typed-key", "raw-key"],
)
def test_same_noise_as_optax_in_float32(key):
    ours = trajectory(add_noise(ETA, GAMMA, key), "float32")
    theirs = trajectory(optax.add_noise(ETA, GAMMA, key=jax.random.key(SEED)), "float32")
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, **OPTAX_TOL)


def test_seed_keyword_and_complex64_leaves_match_optax():
    g = {
        "c": jnp.zeros((4, 3), jnp.complex64),
        "r": jnp.zeros(5, jnp.float32),
        "s": jnp.zeros((), jnp.complex64),
    }
    ours, theirs = add_noise(1.0, 0.55, seed=7), optax.add_noise(1.0, 0.55, key=7)
    s1, s2 = ours.init(g), theirs.init(g)
    step1, step2 = jax.jit(ours.update), jax.jit(theirs.update)
    for _ in range(5):
        (u1, s1), (u2, s2) = step1(g, s1), step2(g, s2)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2), strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_float64_adds_the_float32_noise_where_optax_draws_anew():
    """The documented difference: one key, the same noise in every precision."""
    g = {"w": jnp.zeros((50,))}
    f32, _ = add_noise(1.0, 0.5, key=3).update(g, add_noise(1.0, 0.5, key=3).init(g))
    with jax.enable_x64(True):
        g64 = {"w": jnp.zeros((50,), jnp.float64)}
        tx, theirs = add_noise(1.0, 0.5, key=3), optax.add_noise(1.0, 0.5, key=3)
        f64, _ = tx.update(g64, tx.init(g64))
        optax64, _ = theirs.update(g64, theirs.init(g64))
        assert f64["w"].dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(f64["w"]), np.asarray(f32["w"]), rtol=1e-6)
        assert np.max(np.abs(np.asarray(optax64["w"]) - np.asarray(f32["w"]))) > 0.1


# ---------------------------------------------------------------- reproducibility


def _noise_sequence(tx, g, steps, state=None, jit=True):
    state = tx.init(g) if state is None else state
    update = jax.jit(tx.update) if jit else tx.update
    out = []
    for _ in range(steps):
        u, state = update(g, state)
        out.append(u)
    return out, state


def test_same_key_same_noise_jit_or_not_and_a_restored_state_continues():
    g = {"a": jnp.zeros((3, 2)), "b": jnp.zeros(4)}
    tx = add_noise(0.5, 0.55, key=11)
    jitted, _ = _noise_sequence(tx, g, 6)
    eager, _ = _noise_sequence(add_noise(0.5, 0.55, key=11), g, 6, jit=False)
    # The same draws; XLA may fuse ``g + sigma z`` into one rounding under jit (an
    # ulp, 1.2e-7 here), never more.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=3e-7, atol=1e-7), jitted, eager)
    # Stop after 3 steps, write the state out as numpy arrays, read it back, go on.
    first, state = _noise_sequence(tx, g, 3)
    saved = jax.tree.map(np.asarray, state)
    restored = jax.tree.map(jnp.asarray, saved)
    assert isinstance(restored, AddNoiseState) and restored.rng_key.dtype == jnp.uint32
    rest, _ = _noise_sequence(tx, g, 3, state=restored)
    jax.tree.map(np.testing.assert_array_equal, first + rest, jitted)
    # Another key, other noise; every step and every leaf draws afresh.
    other, _ = _noise_sequence(add_noise(0.5, 0.55, key=12), g, 6)
    assert not np.allclose(other[0]["a"], jitted[0]["a"])
    assert not np.allclose(jitted[0]["a"], jitted[1]["a"])
    assert not np.allclose(jitted[0]["a"].ravel()[:4], jitted[0]["b"])


# ---------------------------------------------------------------- statistics

N = 100_000
# The sample variance of N normal draws has relative standard error sqrt(2/N) =
# 0.45%; the bound 3% is ~6.7 standard errors (a false alarm ~1e-11), and far
# below what a wrong schedule gives (the variance at t=1 is 0.68 of t=0's).
VARIANCE_RTOL = 0.03


@pytest.mark.parametrize("t", [0, 1, 9, 99, 9999])
def test_the_variance_follows_eta_over_one_plus_t_to_the_gamma(t):
    eta, gamma = 0.5, 0.55
    tx = add_noise(eta, gamma, key=t + 5)
    state = tx.init(None)._replace(count=jnp.asarray(t, jnp.int32))
    g = {"x": jnp.zeros(N), "y": jnp.zeros(N)}
    (noise, _), (later, _) = (lambda out: (out, tx.update(g, out[1])))(tx.update(g, state))
    x, y = np.asarray(noise["x"], np.float64), np.asarray(noise["y"], np.float64)
    want = eta / (1 + t) ** gamma
    np.testing.assert_allclose(x.var(), want, rtol=VARIANCE_RTOL)
    np.testing.assert_allclose(y.var(), want, rtol=VARIANCE_RTOL)
    assert abs(x.mean()) < 5 * np.sqrt(want / N)
    # Gaussian (Kolmogorov-Smirnov) and independent across leaves and steps.
    assert stats.kstest(x / np.sqrt(want), "norm").pvalue > 1e-4
    assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(N)
    assert abs(np.corrcoef(x, np.asarray(later["x"]))[0, 1]) < 5 / np.sqrt(N)
    np.testing.assert_allclose(
        np.asarray(later["x"]).var(), eta / (2 + t) ** gamma, rtol=VARIANCE_RTOL
    )


def test_complex_noise_is_circular_with_variance_sigma_squared():
    tx = add_noise(0.8, 0.55, key=1)
    noise, _ = tx.update(jnp.zeros(N, jnp.complex64), tx.init(None))
    assert noise.dtype == jnp.complex64
    re, im = np.asarray(noise.real, np.float64), np.asarray(noise.imag, np.float64)
    np.testing.assert_allclose(np.mean(re**2 + im**2), 0.8, rtol=VARIANCE_RTOL)
    np.testing.assert_allclose(re.var(), 0.4, rtol=VARIANCE_RTOL)
    np.testing.assert_allclose(im.var(), 0.4, rtol=VARIANCE_RTOL)
    assert abs(np.corrcoef(re, im)[0, 1]) < 5 / np.sqrt(N)


# ---------------------------------------------------------------- dtypes and trees


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_gradients_get_the_float32_noise_rounded_once(dtype):
    g16 = {"w": jnp.asarray(np.linspace(-2, 2, 12).reshape(3, 4), dtype)}
    g32 = jax.tree.map(lambda x: x.astype(jnp.float32), g16)
    tx = add_noise(0.3, 0.55, key=9)
    out16, _ = _noise_sequence(tx, g16, 3)
    out32, _ = _noise_sequence(tx, g32, 3)
    for a, b in zip(out16, out32, strict=True):
        assert a["w"].dtype == dtype
        np.testing.assert_array_equal(a["w"], b["w"].astype(dtype))


def test_none_leaves_empty_trees_and_extra_args():
    tx = add_noise(0.3, 0.55, key=0)
    out, state = tx.update({"a": None, "b": jnp.zeros(3)}, tx.init(None))
    assert out["a"] is None and bool(jnp.all(out["b"] != 0))
    assert tx.update({}, tx.init({}))[0] == {}
    with_extra, _ = tx.update(jnp.zeros(3), tx.init(None), None, key=jax.random.key(5), value=1.0)
    plain, _ = tx.update(jnp.zeros(3), tx.init(None))
    np.testing.assert_array_equal(with_extra, plain)  # the key in the state rules


def test_vmap_over_eta_equals_separate_runs():
    g = {"w": jnp.ones((2, 3))}
    etas = jnp.asarray([0.0, 0.1, 1.0])
    batched = jax.vmap(
        lambda e: add_noise(e, 0.55, key=4).update(g, add_noise(e, 0.55, key=4).init(g))[0]
    )(etas)
    for i, e in enumerate([0.0, 0.1, 1.0]):
        tx = add_noise(e, 0.55, key=4)
        np.testing.assert_allclose(batched["w"][i], tx.update(g, tx.init(g))[0]["w"], rtol=1e-6)
    np.testing.assert_array_equal(batched["w"][0], g["w"])  # eta = 0: no noise


BAD = [
    (dict(eta=-0.1, gamma=0.55, key=0), r"add_noise: eta must be a finite number >= 0, got -0\.1"),
    (dict(eta=np.nan, gamma=0.55, key=0), r"eta must be .*got nan"),
    (dict(eta=0.1, gamma=-1.0, key=0), r"gamma must be a finite number >= 0, got -1\.0"),
    (dict(eta=0.1, gamma=0.55), r"key must be an int seed or a PRNG key .*got None"),
    (dict(eta=0.1, gamma=0.55, key=0, seed=1), r"pass key or seed, not both"),
    (dict(eta=0.1, gamma=0.55, key=1.5), r"key must be an int seed or a PRNG key, got 1\.5"),
    (dict(eta=0.1, gamma=0.55, key=jax.random.split(jax.random.key(0), 3)), r"a single PRNG key"),
]


@pytest.mark.parametrize("kwargs, message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_arguments_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        add_noise(**kwargs)
