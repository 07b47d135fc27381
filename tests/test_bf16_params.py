"""Stochastic rounding and Kahan summation of bfloat16 parameters.

Against tests/reference/bf16_params.py bit for bit (the stochastic rounding given
the same random integers, derived from the key as the docstring says), the
rounding's unbiasedness, the exactness of ``apply_updates`` with the returned
step, and the behaviour they exist for: a long run of small AdamW steps that
plain bfloat16 parameters lose.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests.reference import bf16_params as ref

BF16 = jnp.bfloat16


def _f32_bits(x):
    return np.asarray(jnp.asarray(x).astype(jnp.float32)).view(np.uint32)


def _tree(rng, scale=(-2, 2)):
    def bf16(shape):
        mags = 10.0 ** rng.uniform(*scale, size=shape)
        return jnp.asarray(rng.normal(size=shape) * mags, jnp.float32).astype(BF16)

    return {"a": bf16((6, 7)), "b": bf16((5,)), "f": jnp.asarray(rng.normal(size=3), jnp.float32)}


def _updates(rng, params, steps, scale=(-5, 1)):
    def one(x):
        shape = (steps, *x.shape)
        return rng.normal(size=shape) * 10.0 ** rng.uniform(*scale, size=shape)

    return jax.tree.map(lambda x: jnp.asarray(one(x), jnp.float32), params)


@jax.jit
def _trajectory_pair(params, updates):
    """Both blocks fed the same updates, params advanced by apply_updates, one program."""

    def run(tx):
        def step(carry, u):
            p, s = carry
            d, s = tx.update(u, s, p)
            p = gradtx.apply_updates(p, d)
            return (p, s), (p, d)

        (_, state), (ps, ds) = jax.lax.scan(step, (params, tx.init(params)), updates)
        return ps, ds, state

    return run(gradtx.stochastic_rounding(key=7)), run(gradtx.kahan_summation())


def _documented_randoms(seed, params, steps):
    """The random integers per step and leaf, derived as stochastic_rounding's docstring says."""
    key = jax.random.key_data(jax.random.key(seed))
    leaves = jax.tree.leaves(params)
    out = []
    for _ in range(steps):
        key, sub = jax.random.split(key)
        keys = jax.random.split(sub, len(leaves))
        out.append(
            [
                np.asarray(jax.random.bits(k, x.shape, jnp.uint32) >> 16)
                for k, x in zip(keys, leaves, strict=True)
            ]
        )
    return out


@pytest.mark.parametrize(
    "scales", [((-2, 2), (-5, 1)), ((-30, 30), (-35, 35))], ids=["moderate", "wide"]
)
def test_both_blocks_match_the_reference_bit_for_bit(scales):
    steps = 20
    rng = np.random.default_rng(0)
    params = _tree(rng, scales[0])
    updates = _updates(rng, params, steps, scales[1])
    (sr_p, sr_d, _), (k_p, k_d, k_state) = _trajectory_pair(params, updates)
    randoms = _documented_randoms(7, params, steps)
    for i, name in enumerate(["a", "b"]):
        u = np.asarray(updates[name])
        p0 = np.asarray(params[name].astype(jnp.float32))
        want = ref.stochastic_rounding(p0, u, [r[i] for r in randoms])[1:]
        np.testing.assert_array_equal(_f32_bits(sr_p[name]), want.view(np.uint32))
        want_p, want_c = ref.kahan(p0, u)
        np.testing.assert_array_equal(_f32_bits(k_p[name]), want_p[1:].view(np.uint32))
        np.testing.assert_array_equal(
            _f32_bits(k_state.compensation[name]), want_c[-1].view(np.uint32)
        )
        assert sr_p[name].dtype == k_p[name].dtype == BF16
        assert sr_d[name].dtype == k_d[name].dtype == jnp.float32
    # A float32 leaf's update passes through both, and Kahan keeps no buffer for it.
    np.testing.assert_array_equal(sr_d["f"], updates["f"])
    np.testing.assert_array_equal(k_d["f"], updates["f"])
    assert k_state.compensation["f"] is None


def test_the_step_lands_exactly_on_the_rounded_value():
    """``apply_updates(p, d)`` is ``p'`` bit for bit, for magnitudes 1e-30 to 1e30 apart."""
    rng = np.random.default_rng(1)
    n = 20000
    p = jnp.asarray(rng.choice([-1, 1], n) * 10.0 ** rng.uniform(-30, 30, n), jnp.float32)
    p = p.astype(BF16)
    u = jnp.asarray(rng.choice([-1, 1], n) * 10.0 ** rng.uniform(-35, 35, n), jnp.float32)
    p_np = np.asarray(p.astype(jnp.float32))
    for tx in (gradtx.stochastic_rounding(key=3), gradtx.kahan_summation()):
        d, _ = jax.jit(tx.update)(u, tx.init(p), p)
        new_p = gradtx.apply_updates(p, d)
        x = (p_np + np.asarray(u)).astype(np.float32)
        down = x.view(np.uint32) & 0xFFFF0000
        lo, hi = down.view(np.float32), (down.astype(np.uint64) + 0x10000).astype(np.uint32)
        got = _f32_bits(new_p)
        assert np.all((got == lo.view(np.uint32)) | (got == hi)), "not a bfloat16 neighbour of p+u"
        # The step in float32 is new_p - p, which apply_updates adds back exactly.
        back = (p_np + np.asarray(d)).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(ref.round_to_nearest(back)).view(np.uint32), got)


@pytest.mark.parametrize("fraction", [0.5**12, 0.3, 0.5, 0.9])
def test_stochastic_rounding_is_unbiased(fraction):
    """The mean of n roundings of x is x within 5 standard deviations of the mean.

    A rounding of x to its neighbours lo < x < hi has variance (x - lo)(hi - x);
    the mean of n independent ones has standard deviation sqrt((x-lo)(hi-x)/n).
    """
    n = 1 << 18
    spacing = 2.0**-7  # bfloat16's spacing in [1, 2)
    p = jnp.ones(n, BF16)
    u = np.float32(fraction * spacing)
    x = float(np.float32(1) + u)
    tx = gradtx.stochastic_rounding(key=11)
    d, _ = jax.jit(tx.update)(jnp.full(n, u), tx.init(p), p)
    new_p = np.asarray(gradtx.apply_updates(p, d).astype(jnp.float32), np.float64)
    assert set(np.unique(new_p)) <= {1.0, 1.0 + spacing}
    sd = np.sqrt((x - 1.0) * (1.0 + spacing - x) / n)
    assert abs(new_p.mean() - x) <= 5 * sd, (new_p.mean(), x, sd)


def test_a_long_run_of_small_adamw_steps():
    """1000 AdamW steps of ~1e-4 on params ~1: plain bfloat16 loses every one of them.

    The float32 run moves the params by about 0.1. Rounded to nearest, bfloat16
    params (spacing 2^-8 just below 1, 2^-7 above) do not move at all. With
    Kahan summation every entry stays within 2^-7 of the float32 run: the
    compensation holds the part not yet in the param (at most half a spacing,
    2^-9 or 2^-8) and each step rounds it to bfloat16 (at most 2^-9 of it).
    With stochastic rounding each step adds an independent zero-mean error of
    variance at most spacing^2 / 4, so after 1000 steps an entry's error has a
    standard deviation at most sqrt(1000) 2^-7 / 2 ~ 0.025; the mean over the
    256 entries is within 5 of its standard deviations, 5 * 0.025 / 16 ~ 0.008,
    and every entry within 6 (0.15).
    """
    steps, n, lr = 1000, 256, 1e-4
    rng = np.random.default_rng(2)
    p0 = jnp.asarray(1 + 0.1 * rng.uniform(-1, 1, n), jnp.float32).astype(BF16)
    drift = rng.uniform(0.5, 1.5, n) * rng.choice([-1, 1], n)
    grads = jnp.asarray(drift + 0.3 * rng.normal(size=(steps, n)), jnp.float32).astype(BF16)

    def run(tx, params):
        def step(carry, g):
            p, s = carry
            d, s = tx.update(g.astype(p.dtype), s, p)
            return (gradtx.apply_updates(p, d), s), None

        return jax.lax.scan(step, (params, tx.init(params)), grads)[0][0]

    # float32 moments in every run: the differences are the params' rounding alone.
    adamw = gradtx.adamw(lr, weight_decay=0.0, mu_dtype=jnp.float32, nu_dtype=jnp.float32)
    f32, plain, sr, kahan = jax.jit(
        lambda p: (
            run(adamw, p.astype(jnp.float32)),
            run(adamw, p),
            run(gradtx.chain(adamw, gradtx.stochastic_rounding(key=0)), p),
            run(gradtx.chain(adamw, gradtx.kahan_summation()), p),
        )
    )(p0)
    start = np.asarray(p0.astype(jnp.float32), np.float64)
    f32 = np.asarray(f32, np.float64)
    assert np.mean(np.abs(f32 - start)) > 0.05  # the float32 run moves
    np.testing.assert_array_equal(np.asarray(plain.astype(jnp.float32)), start)  # bf16 does not
    kahan_err = np.asarray(kahan.astype(jnp.float32), np.float64) - f32
    assert np.max(np.abs(kahan_err)) <= 2.0**-7, np.max(np.abs(kahan_err))
    sr_err = np.asarray(sr.astype(jnp.float32), np.float64) - f32
    assert abs(np.mean(sr_err)) <= 0.008, np.mean(sr_err)
    assert np.max(np.abs(sr_err)) <= 0.15, np.max(np.abs(sr_err))


def test_same_key_same_trajectory_other_key_another():
    rng = np.random.default_rng(3)
    params = _tree(rng)
    updates = jax.tree.map(lambda u: u[0], _updates(rng, params, 1, (-3, -3)))

    def step(key):
        tx = gradtx.stochastic_rounding(key)
        state = tx.init(params)
        d1, state = tx.update(updates, state, params)
        d2, state = tx.update(updates, state, params)
        return d1["a"], d2["a"], state.key

    a1, a2, key = step(5)
    b1, b2, _ = step(jax.random.key(5))
    c1, _, _ = step(jax.random.PRNGKey(5))
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    np.testing.assert_array_equal(a1, c1)
    assert not np.array_equal(a1, a2)  # the key advances between steps
    assert not np.array_equal(a1, step(6)[0])
    assert key.dtype == jnp.uint32 and key.shape == (2,)


def test_restored_state_continues_the_same_sequence():
    p = jnp.ones(64, BF16)
    u = jnp.full(64, 1e-3, jnp.float32)
    tx = gradtx.stochastic_rounding(key=1)
    _, state = tx.update(u, tx.init(p), p)
    restored = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), state)
    np.testing.assert_array_equal(tx.update(u, state, p)[0], tx.update(u, restored, p)[0])


@pytest.mark.parametrize("make", [gradtx.kahan_summation, lambda: gradtx.stochastic_rounding(2)])
def test_vmap_over_a_batch_matches_one_at_a_time(make):
    tx = make()
    rng = np.random.default_rng(4)
    p = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32).astype(BF16)
    u = jnp.asarray(1e-3 * rng.normal(size=(3, 8)), jnp.float32)
    states = jax.vmap(tx.init)(p)
    batched, _ = jax.jit(jax.vmap(tx.update))(u, states, p)
    for i in range(3):
        one, _ = tx.update(u[i], tx.init(p[i]), p[i])
        np.testing.assert_array_equal(batched[i], one)


def test_a_float64_update_gives_a_float64_step():
    with jax.enable_x64(True):
        p = jnp.asarray([1.0, -3.0], BF16)
        u = jnp.asarray([1e-2, 1e-3], jnp.float64)
        for tx in (gradtx.stochastic_rounding(0), gradtx.kahan_summation()):
            d, _ = tx.update(u, tx.init(p), p)
            assert d.dtype == jnp.float64
            new = gradtx.apply_updates(p, d)
            np.testing.assert_array_equal(new, (p.astype(jnp.float64) + d).astype(BF16))


BAD_INPUT = [
    (lambda: gradtx.stochastic_rounding(key="a"), r"stochastic_rounding: key must be"),
    (lambda: gradtx.stochastic_rounding(key=jnp.zeros(3, jnp.uint32)), r"key must be"),
    (gradtx.stochastic_rounding, r"stochastic_rounding: update needs the params"),
    (gradtx.kahan_summation, r"kahan_summation: update needs the params"),
]


@pytest.mark.parametrize("make, message", BAD_INPUT)
def test_bad_input(make, message):
    with pytest.raises(ValueError, match=message):
        tx = make()
        p = jnp.ones(2, BF16)
        tx.update(jnp.ones(2), tx.init(p), None)


def test_none_leaves_stay_none_and_take_no_key():
    p = {"a": jnp.ones(4, BF16), "masked": None}
    u = {"a": jnp.full(4, 1e-3, jnp.float32), "masked": None}
    for tx in (gradtx.stochastic_rounding(key=1), gradtx.kahan_summation()):
        d, state = tx.update(u, tx.init(p), p)
        assert d["masked"] is None and d["a"].dtype == jnp.float32
    # The stochastic rounding's keys go to the array leaves only: a None leaf
    # changes none of the random bits.
    u = {"a": jnp.full(64, 2.0**-9, jnp.float32), "masked": None}
    p = {"a": jnp.ones(64, BF16), "masked": None}
    tx = gradtx.stochastic_rounding(key=1)
    with_none, _ = tx.update(u, tx.init(p), p)
    alone, _ = tx.update({"a": u["a"]}, tx.init({"a": p["a"]}), {"a": p["a"]})
    assert 0 < int(jnp.sum(alone["a"] != 0)) < 64
    np.testing.assert_array_equal(with_none["a"], alone["a"])
