"""``keep_params_nonnegative`` and ``zero_nans`` at their edges.

Their trajectories against Optax are in tests/test_optax_parity.py and
tests/test_catalogue_wrappers.py (with NaNs and infinities in the gradients).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx


def test_params_never_go_negative_and_land_exactly_on_zero():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(np.abs(rng.normal(size=(3, 4))), jnp.float32), "s": jnp.float32(0.1)}
    tx = gradtx.chain(gradtx.sgd(0.3), gradtx.keep_params_nonnegative())
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    zeros = 0
    for k in range(120):
        grads = jax.tree.map(
            lambda p, k=k: jnp.asarray(rng.normal(size=p.shape) + 0.5, p.dtype), params
        )
        updates, state = step(params, state, grads)
        params = gradtx.apply_updates(params, updates)
        assert all(bool(jnp.all(p >= 0)) for p in jax.tree.leaves(params)), k
        zeros += int(jnp.sum(params["w"] == 0))
    assert zeros > 0  # the constraint was active, and its zeros are exact


def test_negative_params_are_set_to_zero_and_complex_ones_refused():
    tx = gradtx.keep_params_nonnegative()
    w = jnp.array([-1.0, 2.0])
    out, _ = tx.update(jnp.array([0.5, -1.0]), tx.init(w), w)
    np.testing.assert_array_equal(gradtx.apply_updates(w, out), [0.0, 1.0])
    with pytest.raises(TypeError, match=r"keep_params_nonnegative: .*complex leaves at \['c'\]"):
        tx.init({"c": jnp.ones(2, jnp.complex64), "r": jnp.ones(2)})
    with pytest.raises(ValueError, match="needs the params"):
        tx.update(jnp.ones(2), tx.init(w))


def test_zero_nans_keeps_infinities_and_flags_complex_nans():
    tx = gradtx.zero_nans()
    g = {"r": jnp.array([np.nan, np.inf, -1.0]), "c": jnp.array([complex(np.nan, 1.0), 1j])}
    out, state = tx.update(g, tx.init(g))
    np.testing.assert_array_equal(out["r"], [0.0, np.inf, -1.0])
    np.testing.assert_array_equal(out["c"], [0.0, 1j])
    assert bool(state.found_nan["r"]) and bool(state.found_nan["c"])
    out, state = tx.update({"r": jnp.ones(3), "c": jnp.ones(2, jnp.complex64)}, state)
    assert not any(bool(f) for f in jax.tree.leaves(state.found_nan))


def test_zero_nans_state_starts_false_with_one_buffer_per_leaf():
    params = {"a": jnp.ones(2), "b": jnp.ones(3), "none": None}
    state = gradtx.zero_nans().init(params)
    assert state.found_nan["none"] is None
    flags = jax.tree.leaves(state.found_nan)
    assert [bool(f) for f in flags] == [False, False]
    assert flags[0] is not flags[1]  # distinct buffers: the state can be donated
