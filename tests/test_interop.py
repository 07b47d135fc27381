"""gradtx and Optax transformations mixed in either direction, and the protocol.

gradtx speaks Optax's ``(init, update)`` protocol structurally, without importing
Optax, so each library's ``chain`` must run the other's members and give the
numbers of an all-Optax or all-gradtx equivalent. Extra arguments (``value``,
``key``, ...) reach the members of ``gradtx.chain`` that declare them.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

STEPS = 100

# Both sides evaluate the same formulas in float32; the few places where the
# order of operations differs (e.g. ``g * rsqrt(r)`` vs ``g / sqrt(r)``) leave
# one-ulp differences. The params are of order 1 (one ulp: 1.2e-7), and a
# coordinate that ends near zero keeps the absolute error it had when it was
# large, so the absolute bound is a few ulps at that scale; measured 1.2e-7.
RTOL, ATOL = 1e-6, 5e-7


def _params():
    rng = np.random.default_rng(11)
    return {
        "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
        "s": jnp.asarray(0.7, jnp.float32),
    }


def _loss(params):
    """A convex, anisotropic quadratic with a coupling term (grads depend on params)."""
    w, b, s = params["w"], params["b"], params["s"]
    scales = jnp.arange(1.0, 13.0).reshape(4, 3) / 6.0
    return 0.5 * jnp.sum(scales * (w - 1.0) ** 2) + jnp.sum((b + 0.5 * s) ** 2) + s**2


def trajectory(tx, params=None, steps=STEPS):
    """Jitted ``steps`` updates of ``tx`` on :func:`_loss`; the params after each."""
    params = _params() if params is None else params

    @jax.jit
    def run(params):
        def body(carry, _):
            p, state = carry
            updates, state = tx.update(jax.grad(_loss)(p), state, p)
            p = optax.apply_updates(p, updates)
            return (p, state), p

        return jax.lax.scan(body, (params, tx.init(params)), None, length=steps)[1]

    return run(params)


def assert_same(got, expected, rtol=RTOL, atol=ATOL):
    for leaf in jax.tree.leaves(got):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol), got, expected)


def schedule(count):
    return 0.05 / (1.0 + 0.03 * count)


# ---------------------------------------------------------------------- mixed chains

MIXED = {
    # optax.chain with gradtx members, against the all-Optax optimizer.
    "optax.chain(gradtx.scale_by_adam, optax.scale_by_learning_rate)": (
        lambda: optax.chain(gradtx.scale_by_adam(), optax.scale_by_learning_rate(0.05)),
        lambda: optax.adam(0.05),
    ),
    "optax.chain(optax.clip_by_global_norm, gradtx.sgd)": (
        lambda: optax.chain(optax.clip_by_global_norm(1.0), gradtx.sgd(schedule, 0.9)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(schedule, 0.9)),
    ),
    "optax.chain(gradtx.add_decayed_weights, optax.scale_by_rms, gradtx.scale_by_lr)": (
        lambda: optax.chain(
            gradtx.add_decayed_weights(0.1),
            optax.scale_by_rms(),
            gradtx.scale_by_learning_rate(0.01),
        ),
        lambda: optax.chain(optax.add_decayed_weights(0.1), optax.rmsprop(0.01)),
    ),
    # gradtx.chain with Optax members, against the all-gradtx optimizer.
    "gradtx.chain(optax.scale_by_adam, gradtx.scale_by_learning_rate)": (
        lambda: gradtx.chain(optax.scale_by_adam(), gradtx.scale_by_learning_rate(schedule)),
        lambda: gradtx.adam(schedule),
    ),
    "gradtx.chain(optax.trace, gradtx.scale_by_learning_rate)": (
        lambda: gradtx.chain(optax.trace(0.9, nesterov=True), gradtx.scale_by_learning_rate(0.02)),
        lambda: gradtx.nesterov_momentum(0.02, 0.9),
    ),
    "gradtx.chain(optax.clip_by_global_norm, gradtx.adagrad)": (
        lambda: gradtx.chain(optax.clip_by_global_norm(0.5), gradtx.adagrad(0.1)),
        lambda: optax.chain(optax.clip_by_global_norm(0.5), optax.adagrad(0.1)),
    ),
    # Nested both ways.
    "gradtx.chain(optax.chain(gradtx.scale_by_rss), optax.scale)": (
        lambda: gradtx.chain(optax.chain(gradtx.scale_by_rss()), optax.scale(-0.1)),
        lambda: gradtx.adagrad(0.1),
    ),
}


@pytest.mark.parametrize("name", list(MIXED))
def test_mixed_chain_matches_single_library(name):
    make_mixed, make_reference = MIXED[name]
    got = trajectory(make_mixed())
    expected = trajectory(make_reference())
    assert_same(got, expected)
    # The run must have gone somewhere for the comparison to mean anything.
    moved = max(float(jnp.max(jnp.abs(p[-1] - p[0]))) for p in jax.tree.leaves(got))
    assert moved > 0.05
    assert float(_loss(jax.tree.map(lambda p: p[-1], got))) < float(_loss(_params()))


def test_mixed_chain_state_holds_each_library_state():
    tx = gradtx.chain(optax.scale_by_adam(), gradtx.scale_by_adam(), optax.scale(-1.0))
    state = tx.init(_params())
    assert isinstance(state, tuple) and len(state) == 3
    assert type(state[0]).__module__.startswith("optax")
    assert isinstance(state[1], gradtx.ScaleByAdamState)
    _, state = jax.jit(tx.update)(jax.grad(_loss)(_params()), state, _params())
    assert int(state[0].count) == 1 and int(state[1].count) == 1

    tx = optax.chain(gradtx.scale_by_adam(), optax.scale_by_adam())
    state = tx.init(_params())
    assert isinstance(state[0], gradtx.ScaleByAdamState)
    _, state = jax.jit(tx.update)(jax.grad(_loss)(_params()), state, _params())
    assert int(state[0].count) == 1 and int(state[1].count) == 1


def test_optax_wrappers_accept_gradtx():
    """Optax's wrappers take any ``(init, update)``: masking and injected
    hyperparameters work with a gradtx factory."""
    params = _params()
    mask = {"w": True, "b": False, "s": True}
    rest = {"w": False, "b": True, "s": False}
    # optax.masked passes the masked-out leaves through unchanged (the raw
    # gradient), so those get plain SGD from a second masked member.
    got = trajectory(
        optax.chain(optax.masked(gradtx.adam(0.05), mask), optax.masked(gradtx.sgd(0.1), rest))
    )
    expected = trajectory(
        optax.chain(optax.masked(optax.adam(0.05), mask), optax.masked(optax.sgd(0.1), rest))
    )
    assert_same(got, expected)
    sgd_only = trajectory(gradtx.sgd(0.1))
    # With this loss, b's gradient depends on s too, so only the first step's b
    # is SGD's alone.
    np.testing.assert_array_equal(got["b"][0], sgd_only["b"][0])

    # inject_hyperparams rebuilds gradtx.adam from array hyperparameters each
    # step (tracers under jit): the construction-time checks must let them pass.
    injected = optax.inject_hyperparams(gradtx.adam)(learning_rate=0.05, b1=0.8)
    # Every injected value is a float32 array, so 1 - b2 is 1 - float32(0.999),
    # 1.3e-5 away from float32(0.001): the reference gets float32 arrays too.
    hyper = {"b1": 0.8, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0}
    reference = gradtx.adam(
        jnp.asarray(0.05, jnp.float32),
        **{k: jnp.asarray(v, jnp.float32) for k, v in hyper.items()},
    )
    assert_same(trajectory(injected), trajectory(reference))
    state = injected.init(params)
    state.hyperparams["learning_rate"] = jnp.asarray(0.0)
    updates, _ = jax.jit(injected.update)(jax.grad(_loss)(params), state, params)
    for leaf in jax.tree.leaves(updates):
        np.testing.assert_array_equal(leaf, 0.0)


def test_optax_apply_updates_on_gradtx_updates():
    params = _params()
    tx = gradtx.adamw(0.1, weight_decay=0.01)
    updates, _ = tx.update(jax.grad(_loss)(params), tx.init(params), params)
    by_optax = optax.apply_updates(params, updates)
    by_gradtx = gradtx.apply_updates(params, updates)
    jax.tree.map(np.testing.assert_array_equal, by_optax, by_gradtx)
    jax.tree.map(lambda p, u, q: np.testing.assert_array_equal(q, p + u), params, updates, by_optax)

    # And Optax updates through gradtx.apply_updates, with low-precision params.
    bf16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    updates, _ = optax.sgd(0.1).update(jax.grad(_loss)(params), optax.sgd(0.1).init(params))
    out = gradtx.apply_updates(bf16, updates)
    ref = optax.apply_updates(bf16, updates)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


# ---------------------------------------------------------------------- extra args


class Recorder:
    """Transformations that remember the extra arguments their ``update`` got."""

    def __init__(self):
        self.calls: dict[str, dict[str, Any]] = {}

    def _init(self, params):
        del params
        return gradtx.EmptyState()

    def any_kwargs(self, name):
        def update(updates, state, params=None, **extra_args):
            self.calls[name] = dict(extra_args)
            return updates, state

        return gradtx.GradientTransformation(self._init, update)

    def only_value(self, name):
        def update(updates, state, params=None, value=None):
            self.calls[name] = {"value": value}
            return updates, state

        return gradtx.GradientTransformation(self._init, update)

    def keyword_only_key(self, name):
        def update(updates, state, params=None, *, key=None, unused_default=3):
            self.calls[name] = {"key": key, "unused_default": unused_default}
            return updates, state

        return gradtx.GradientTransformation(self._init, update)

    def strict_optax(self, name):
        """A plain Optax transformation: ``update`` would raise on any extra arg."""

        def update(updates, state, params=None):
            self.calls[name] = {}
            return jax.tree.map(lambda u: 2 * u, updates), state

        return optax.GradientTransformation(self._init, update)


def test_gradtx_chain_passes_extra_args_to_members_that_take_them():
    rec = Recorder()
    tx = gradtx.chain(
        rec.any_kwargs("all"),
        rec.only_value("value"),
        rec.keyword_only_key("key"),
        rec.strict_optax("strict"),
        optax.scale(0.5),  # another plain optax member
        gradtx.sgd(1.0),  # gradtx members ignore what they do not use
    )
    params = jnp.ones(3)
    key = jax.random.key(0)
    updates, _ = tx.update(jnp.full(3, 2.0), tx.init(params), params, value=1.5, key=key, lr=9)
    # strict doubles, scale halves, sgd(1.0) negates.
    np.testing.assert_array_equal(updates, jnp.full(3, -2.0))
    assert set(rec.calls["all"]) == {"value", "key", "lr"}
    assert rec.calls["all"]["value"] == 1.5 and rec.calls["all"]["lr"] == 9
    assert rec.calls["value"] == {"value": 1.5}
    assert rec.calls["key"]["key"] is key and rec.calls["key"]["unused_default"] == 3
    assert rec.calls["strict"] == {}

    # The member with a declared ``value`` keeps its default when none is given.
    tx.update(jnp.ones(3), tx.init(params), params, key=key)
    assert rec.calls["value"] == {"value": None}
    assert set(rec.calls["all"]) == {"key"}


def test_extra_args_under_jit_and_in_named_chain():
    seen = []

    def init(params):
        return gradtx.EmptyState()

    def update(updates, state, params=None, *, value, key):
        seen.append((value, key))
        noise = jax.random.normal(key, jnp.shape(updates))
        return updates * value + noise, state

    noisy = gradtx.GradientTransformation(init, update)
    tx = gradtx.named_chain(
        ("noisy", noisy), ("clip", optax.clip(10.0)), ("lr", gradtx.scale(-0.1))
    )
    params = jnp.zeros(4)
    step = jax.jit(lambda g, s, v, k: tx.update(g, s, params, value=v, key=k))
    key = jax.random.key(3)
    out, _ = step(jnp.ones(4), tx.init(params), jnp.asarray(2.0), key)
    np.testing.assert_allclose(out, -0.1 * (2.0 + jax.random.normal(key, (4,))), rtol=1e-6)
    assert isinstance(seen[0][0], jax.core.Tracer)  # traced once, as a jit argument
    out2, _ = step(jnp.ones(4), tx.init(params), jnp.asarray(3.0), key)
    np.testing.assert_allclose(out2 - out, jnp.full(4, -0.1), rtol=1e-5)
    assert len(seen) == 1  # no recompilation for a new value


def test_optax_chain_drops_extra_args_for_gradtx_members():
    """Observed with Optax 0.2.x: ``optax.chain`` forwards extra args only to its
    own ``GradientTransformationExtraArgs`` instances, and wraps everything else
    (gradtx members included) in a shim that drops them. gradtx cannot change that
    without importing Optax; wrapping a gradtx member in
    ``optax.GradientTransformationExtraArgs(*tx)`` restores the forwarding."""
    rec = Recorder()
    params = jnp.ones(2)
    plain = optax.chain(rec.any_kwargs("plain"), optax.scale(1.0))
    plain.update(jnp.ones(2), plain.init(params), params, value=1.0)
    assert rec.calls["plain"] == {}

    wrapped = optax.chain(
        optax.GradientTransformationExtraArgs(*rec.any_kwargs("wrapped")), optax.scale(1.0)
    )
    wrapped.update(jnp.ones(2), wrapped.init(params), params, value=1.0)
    assert rec.calls["wrapped"] == {"value": 1.0}

    # And the other way: an Optax chain inside gradtx.chain gets them and passes
    # them on to its own extra-args members.
    inner = optax.chain(optax.GradientTransformationExtraArgs(*rec.any_kwargs("inner")))
    outer = gradtx.chain(inner, gradtx.identity())
    outer.update(jnp.ones(2), outer.init(params), params, value=2.0)
    assert rec.calls["inner"] == {"value": 2.0}


# ---------------------------------------------------------------------- named_chain


def test_named_chain_state_is_keyed_by_name():
    params = _params()
    tx = gradtx.named_chain(
        ("adam", gradtx.scale_by_adam()),
        ("optax_decay", optax.add_decayed_weights(0.01)),
        ("lr", gradtx.scale_by_learning_rate(schedule)),
    )
    state = tx.init(params)
    assert isinstance(state, dict)
    assert list(state) == ["adam", "optax_decay", "lr"]
    assert isinstance(state["adam"], gradtx.ScaleByAdamState)
    assert int(state["lr"].count) == 0

    reference = gradtx.chain(
        gradtx.scale_by_adam(),
        optax.add_decayed_weights(0.01),
        gradtx.scale_by_learning_rate(schedule),
    )
    assert_same(trajectory(tx), trajectory(reference), rtol=0, atol=0)
    _, state = jax.jit(tx.update)(jax.grad(_loss)(params), state, params)
    assert int(state["adam"].count) == 1 and int(state["lr"].count) == 1
    jax.tree.map(
        lambda m, g: np.testing.assert_allclose(m, 0.1 * g, rtol=1e-6),
        state["adam"].mu,
        jax.grad(_loss)(params),
    )

    # Optax's named_chain holds gradtx members the same way.
    theirs = optax.named_chain(("adam", gradtx.scale_by_adam()), ("lr", optax.scale(-0.1)))
    assert isinstance(theirs.init(params)["adam"], gradtx.ScaleByAdamState)


# ---------------------------------------------------------------------- imports


def test_gradtx_imports_no_optax_flax_or_chex():
    code = (
        "import sys, gradtx\n"
        "tx = gradtx.adam(0.1)\n"
        "import jax.numpy as jnp\n"
        "tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'optax', 'flax', 'chex'})\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------- apply_updates


def test_apply_updates_keeps_each_leaf_dtype():
    params = {
        "bf16": jnp.array([1.0, 256.0, -3.0], jnp.bfloat16),
        "f16": jnp.array([0.5, 2.0], jnp.float16),
        "f32": jnp.array([1.0, 2.0], jnp.float32),
        "c64": jnp.array([1 + 1j], jnp.complex64),
        "none": None,
    }
    updates = {
        "bf16": jnp.array([1e-3, 1.0, 0.25], jnp.float32),
        "f16": jnp.array([0.25, -1.0], jnp.float32),
        "f32": jnp.array([0.5, 0.5], jnp.bfloat16),
        "c64": jnp.array([0.5j], jnp.complex64),
        "none": None,
    }
    out = jax.jit(gradtx.apply_updates)(params, updates)
    assert out["none"] is None
    for name in ("bf16", "f16", "f32", "c64"):
        assert out[name].dtype == params[name].dtype, name
    # The sum is taken in float32, then rounded once to bfloat16: 256 + 1 is not
    # representable (8 bits of mantissa) and rounds to even, 256; 1 + 1e-3 rounds to 1.
    np.testing.assert_array_equal(np.asarray(out["bf16"], np.float32), [1.0, 256.0, -2.75])
    np.testing.assert_array_equal(np.asarray(out["f16"], np.float32), [0.75, 1.0])
    np.testing.assert_array_equal(out["f32"], [1.5, 2.5])
    np.testing.assert_array_equal(out["c64"], [1 + 1.5j])

    # A None params leaf stays None whatever the updates hold there.
    out = gradtx.apply_updates({"a": jnp.ones(2), "b": None}, {"a": jnp.ones(2), "b": None})
    assert out["b"] is None and out["a"].dtype == jnp.float32


def test_apply_updates_float64_under_x64():
    with jax.enable_x64(True):
        params = {"a": jnp.array([1.0, 2.0], jnp.float64), "b": jnp.ones(2, jnp.float32)}
        updates = {"a": jnp.array([1e-12, 0.0], jnp.float32), "b": jnp.full(2, 1e-9)}
        out = gradtx.apply_updates(params, updates)
        assert out["a"].dtype == jnp.float64 and out["b"].dtype == jnp.float32
        # The float32 update is promoted, not the float64 param demoted.
        np.testing.assert_array_equal(out["a"], [1.0 + float(np.float32(1e-12)), 2.0])
        np.testing.assert_array_equal(out["b"], [1.0, 1.0])


# ---------------------------------------------------------------------- identity / stateless


def test_identity_and_stateless():
    params = {"a": jnp.arange(3.0), "b": jnp.ones((2, 2))}
    grads = jax.tree.map(lambda p: p * 2 - 1, params)

    ident = gradtx.identity()
    state = ident.init(params)
    assert state == gradtx.EmptyState() and jax.tree.leaves(state) == []
    out, new_state = jax.jit(ident.update)(grads, state, params)
    jax.tree.map(np.testing.assert_array_equal, out, grads)
    assert new_state == gradtx.EmptyState()
    out, _ = ident.update(grads, state, value=1.0, key=jax.random.key(0))  # ignores extras
    jax.tree.map(np.testing.assert_array_equal, out, grads)

    seen = []

    def pull_to_params(updates, params):
        seen.append(params is None)
        if params is None:
            return updates
        return jax.tree.map(lambda u, p: u + 0.5 * p, updates, params)

    tx = gradtx.stateless(pull_to_params)
    assert tx.init(params) == gradtx.EmptyState()
    out, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    jax.tree.map(lambda o, g, p: np.testing.assert_allclose(o, g + 0.5 * p), out, grads, params)
    out, _ = tx.update(grads, tx.init(params), value=3.0)  # no params, extra arg ignored
    jax.tree.map(np.testing.assert_array_equal, out, grads)
    assert seen == [False, True]

    # Both are transformations Optax accepts, and compose in gradtx.chain.
    both = optax.chain(gradtx.identity(), tx, optax.scale(-1.0))
    out, _ = both.update(grads, both.init(params), params)
    jax.tree.map(lambda o, g, p: np.testing.assert_allclose(o, -(g + 0.5 * p)), out, grads, params)
    same = gradtx.chain(gradtx.identity(), gradtx.stateless(pull_to_params), optax.scale(-1.0))
    out2, state = same.update(grads, same.init(params), params, value=1.0)
    jax.tree.map(np.testing.assert_array_equal, out, out2)
    assert state == (gradtx.EmptyState(), gradtx.EmptyState(), optax.ScaleState())
