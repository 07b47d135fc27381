"""``inject_hyperparams``: the plain optimizer's numbers, with its hyperparameters in the state.

Trajectory cases run ``STEPS`` steps of ``factory(**kwargs)`` and of
``inject_hyperparams(factory)(**kwargs)`` in one jitted ``lax.scan`` each, from
the same start on the same noisy quadratic (the gradient depends on the params,
so a difference compounds), on a tree of several shapes with a scalar leaf,
nesting and a ``None`` leaf, and compare the params after every step.

Tolerances, as ``|injected - plain| <= tol * (|plain| + 1)`` (the params are of
order 1):

* float64: ``1e-12``. The injected values are float64, like the Python floats
  of the plain run; measured: 0.
* float32: ``2e-5``. The plain optimizer computes ``1 - b2`` on Python floats
  (in double, then rounded to float32) but its bias correction ``1 - b2**t``
  from ``float32(b2)``; for ``b2 = 0.999`` the two disagree by 1.3e-5, so the
  plain Adam's first step is ``0.9999934 * sign(g)`` instead of ``sign(g)`` and
  its steps stay off by up to ~6.5e-6 relative. The injected optimizer does both
  in float32, where they cancel (its first step is ``sign(g)``, see
  ``test_injected_float32_adam_first_step_is_exact``). Measured: 9.3e-6
  (Adam family), at most 3e-7 for the others.
* Against Optax's ``inject_hyperparams``, which also computes in the stored
  float32 values: float32 ``1e-6`` (``atol 1e-7``), float64 ``1e-12``.

``python -m tests.test_inject`` prints the table of the largest deviations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.transforms.inject import inject_hyperparams

STEPS = 120
TOL = {"float32": 2e-5, "float64": 1e-12}  # vs the plain optimizer (module docstring)
PARITY_RTOL = {"float32": 1e-6, "float64": 1e-12}  # vs Optax's inject_hyperparams
PARITY_ATOL = {"float32": 1e-7, "float64": 1e-13}
SHAPES = {"w": (5, 3), "b": (7,), "s": (), "n": (4, 2)}
MASK = {"w": True, "b": False, "s": True, "nest": [None, True]}


def _nest(leaves: dict) -> dict:
    """The test tree: nesting, a scalar leaf and a ``None`` leaf."""
    return {"w": leaves["w"], "b": leaves["b"], "s": leaves["s"], "nest": [None, leaves["n"]]}


def _problem():
    rng = np.random.default_rng(11)
    return {
        "p0": {k: rng.normal(size=s) for k, s in SHAPES.items()},
        "curv": {k: rng.uniform(0.3, 2.0, size=s) for k, s in SHAPES.items()},
        "target": {k: rng.normal(size=s) for k, s in SHAPES.items()},
        "noise": {k: 0.5 * rng.normal(size=(STEPS, *s)) for k, s in SHAPES.items()},
    }


PROBLEM = _problem()


def _data(dtype: str):
    """The problem in ``dtype`` (call inside the x64 context for float64)."""
    return {
        name: _nest({k: jnp.asarray(v[k], dtype) for k in SHAPES}) for name, v in PROBLEM.items()
    }


def _gradient(p, curv, target, noise):
    c = gradtx.tree.compute_dtype(p.dtype)
    return (curv.astype(c) * (p.astype(c) - target.astype(c)) + noise.astype(c)).astype(p.dtype)


def _path(tx, data, p0=None, state=None, noise=None):
    """Params after every step, and the final state (params are passed to update)."""
    p0 = data["p0"] if p0 is None else p0
    noise = data["noise"] if noise is None else noise

    def body(carry, noise_k):
        p, s = carry
        g = jax.tree.map(_gradient, p, data["curv"], data["target"], noise_k)
        u, s = tx.update(g, s, p)
        p = gradtx.apply_updates(p, u)
        return (p, s), (p, getattr(s, "hyperparams", ()))

    (_, final), (path, logged) = jax.lax.scan(
        body, (p0, tx.init(p0) if state is None else state), noise
    )
    return path, final, logged


def run_both(factory, kwargs, dtype):
    """(plain trajectory, injected trajectory, injected logged hyperparams), jitted."""
    data = _data(dtype)

    @jax.jit
    def both(d):
        plain = _path(factory(**kwargs), d)[0]
        injected, _, logged = _path(inject_hyperparams(factory)(**kwargs), d)
        return plain, injected, logged

    return both(data)


def deviation(a, b) -> float:
    """``max |a - b| / (|b| + 1)`` over every step and element."""
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - y) / (1 + np.abs(y))))
        for x, y in zip(
            jax.tree.leaves(a), [np.asarray(y, np.float64) for y in jax.tree.leaves(b)], strict=True
        )
    )


def assert_same(got, expected, dtype, rtol=None, atol=None):
    """Every leaf within ``TOL[dtype] * (|expected| + 1)`` unless told otherwise."""
    rtol = TOL[dtype] if rtol is None else rtol
    atol = TOL[dtype] if atol is None else atol
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_allclose(
            np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol
        )


def schedule(count):
    """``0.05 / (1 + k / 20)``, written so that it stays float64 under x64."""
    return 0.05 / (1 + 0.05 * count)


CASES: dict[str, tuple[Callable[..., gradtx.GradientTransformation], dict[str, Any]]] = {
    "sgd": (gradtx.sgd, {"learning_rate": 0.05}),
    "sgd_nesterov_schedule": (
        gradtx.sgd,
        {"learning_rate": schedule, "momentum": 0.9, "nesterov": True},
    ),
    "adam": (gradtx.adam, {"learning_rate": 0.05}),
    "adam_schedule": (gradtx.adam, {"learning_rate": schedule, "b1": 0.8, "eps_root": 1e-8}),
    "adamw_mask": (gradtx.adamw, {"learning_rate": 0.05, "weight_decay": 0.1, "mask": MASK}),
    "rmsprop_centered_momentum": (
        gradtx.rmsprop,
        {"learning_rate": 0.01, "centered": True, "momentum": 0.9},
    ),
    "adagrad": (gradtx.adagrad, {"learning_rate": 0.1}),
    "adadelta_schedule": (gradtx.adadelta, {"learning_rate": schedule, "weight_decay": 0.01}),
    "amsgrad": (gradtx.amsgrad, {"learning_rate": 0.05}),
    "adamax": (gradtx.adamax, {"learning_rate": 0.05}),
    "nadam": (gradtx.nadam, {"learning_rate": 0.05}),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_same_trajectory_as_the_plain_optimizer(name, dtype):
    factory, kwargs = CASES[name]
    with jax.enable_x64(dtype == "float64"):
        plain, injected, logged = run_both(factory, kwargs, dtype)
        assert_same(injected, plain, dtype)
        # Every hyperparameter is stored in the params' dtype (float32 or float64).
        assert {v.dtype.name for v in logged.values()} == {dtype}
        if callable(kwargs["learning_rate"]):
            # The value used at step k is logged: schedule(k).
            expected = schedule(np.arange(STEPS, dtype=np.float64))
            np.testing.assert_allclose(logged["learning_rate"], expected, rtol=PARITY_RTOL[dtype])
        else:
            expected = np.full(STEPS, kwargs["learning_rate"], dtype)
            np.testing.assert_array_equal(logged["learning_rate"], expected)


def test_injected_float32_adam_first_step_is_exact():
    # Step 1 of Adam is g / (|g| + eps) exactly: the bias corrections cancel the
    # (1 - b) factors. In float32 the injected optimizer has both in float32 and
    # gets it to an ulp or two; the plain one rounds 1 - b2 from a double and is 6.6e-6
    # off (the float32 tolerance of the trajectory tests, module docstring). If
    # gradtx.tree ever computes 1 - b in the moment's dtype, the last assertion
    # fails: then the plain run is exact too and TOL["float32"] can shrink.
    g = jnp.array([0.5, -2.0, 1e-3, 7.0])
    exact = np.asarray(g, np.float64) / (np.abs(np.asarray(g, np.float64)) + 1e-8)
    injected = inject_hyperparams(gradtx.adam)(learning_rate=-1.0)
    plain = gradtx.adam(-1.0)
    got = jax.jit(injected.update)(g, injected.init(g))[0]
    off = jax.jit(plain.update)(g, plain.init(g))[0]
    np.testing.assert_allclose(got, exact, rtol=2**-22)  # two float32 ulps
    assert 5e-6 < np.max(np.abs(np.asarray(off, np.float64) - exact)) < 1e-5


# ---------------------------------------------------------------- reading and writing


def test_the_state_holds_every_numeric_argument_and_nothing_else():
    tx = inject_hyperparams(gradtx.adamw)(
        learning_rate=0.1, weight_decay=0.01, mask=MASK, mu_dtype=jnp.bfloat16, nesterov=True
    )
    state = tx.init(_data("float32")["p0"])
    assert sorted(state.hyperparams) == [
        "b1",
        "b2",
        "eps",
        "eps_root",
        "learning_rate",
        "weight_decay",
    ]
    assert float(state.hyperparams["weight_decay"]) == np.float32(0.01)
    # mu_dtype (a dtype class, callable but no schedule) reached the factory as is.
    assert all(m.dtype == jnp.bfloat16 for m in jax.tree.leaves(state.inner_state[0].mu))


def test_overwriting_a_value_between_steps_is_the_plain_optimizer_with_that_value():
    data = _data("float32")
    first, second = (
        jax.tree.map(lambda n: n[:60], data["noise"]),
        jax.tree.map(lambda n: n[60:], data["noise"]),
    )

    @jax.jit
    def run(d):
        tx = inject_hyperparams(gradtx.adam)(learning_rate=0.05)
        path1, state, _ = _path(tx, d, noise=first)
        hyper = {**state.hyperparams, "learning_rate": jnp.float32(0.01), "b1": jnp.float32(0.5)}
        path2, final, _ = _path(
            tx,
            d,
            p0=jax.tree.map(lambda x: x[-1], path1),
            state=state._replace(hyperparams=hyper),
            noise=second,
        )
        # The plain optimizer: 60 steps of adam(0.05), then adam(0.01, b1=0.5) from
        # the same state (the inner state of an injected adam is a plain adam state).
        plain = gradtx.adam(0.05)
        plain1, pstate, _ = _path(plain, d, noise=first)
        plain2, _, _ = _path(
            gradtx.adam(0.01, b1=0.5),
            d,
            p0=jax.tree.map(lambda x: x[-1], plain1),
            state=pstate,
            noise=second,
        )
        return (path1, path2, final.hyperparams), (plain1, plain2)

    (path1, path2, hyper), (plain1, plain2) = run(data)
    assert_same(path1, plain1, "float32")
    assert_same(path2, plain2, "float32")
    assert float(hyper["learning_rate"]) == np.float32(0.01)
    assert float(hyper["b1"]) == np.float32(0.5)


def test_a_scheduled_decay_is_logged_and_a_constant_schedule_is_the_constant():
    data = _data("float32")

    def b1_schedule(k):  # rises from 0.5 to 0.9
        return 0.5 + 0.4 * (1 - 0.9**k)

    @jax.jit
    def run(d):
        constant = _path(inject_hyperparams(gradtx.adam)(0.05, b1=lambda k: 0.9), d)[0]
        plain = _path(gradtx.adam(0.05), d)[0]
        logged = _path(inject_hyperparams(gradtx.adam)(0.05, b1=b1_schedule), d)[2]
        return constant, plain, logged

    constant, plain, logged = run(data)
    assert_same(constant, plain, "float32")
    np.testing.assert_allclose(logged["b1"], b1_schedule(np.arange(STEPS)), rtol=1e-6)


def test_jit_compiles_once_even_after_the_user_writes_a_value():
    data = _data("float32")
    tx = inject_hyperparams(gradtx.rmsprop)(learning_rate=0.01, momentum=0.9)
    traces = []

    @jax.jit
    def step(p, s, g):
        traces.append(1)
        u, s = tx.update(g, s, p)
        return gradtx.apply_updates(p, u), s

    p, s = data["p0"], tx.init(data["p0"])
    structure, dtypes = jax.tree.structure(s), [x.dtype for x in jax.tree.leaves(s)]
    for k in range(4):
        if k == 2:  # an array of the stored dtype keeps the compiled program
            s = s._replace(hyperparams={**s.hyperparams, "learning_rate": jnp.float32(0.001)})
        g = jax.tree.map(lambda n, k=k: n[k], data["noise"])
        p, s = step(p, s, g)
        assert jax.tree.structure(s) == structure
        assert [x.dtype for x in jax.tree.leaves(s)] == dtypes
    assert len(traces) == 1


# ---------------------------------------------------------------- vmap


def test_vmap_over_a_batch_of_states_with_different_learning_rates():
    data = _data("float32")
    lrs = (0.01, 0.05, 0.2)
    tx = inject_hyperparams(gradtx.adam)(learning_rate=0.05)
    state = tx.init(data["p0"])
    states = [
        state._replace(hyperparams={**state.hyperparams, "learning_rate": jnp.float32(lr)})
        for lr in lrs
    ]
    batch = jax.tree.map(lambda *x: jnp.stack(x), *states)

    @jax.jit
    def run(d, batch):
        # One program trains the three rates; in_axes: params shared at the start.
        lanes = jax.vmap(lambda s: _path(tx, d, state=s)[0])(batch)
        plain = [_path(gradtx.adam(lr), d)[0] for lr in lrs]
        return lanes, plain

    lanes, plain = run(data, batch)
    for i in range(len(lrs)):
        assert_same(jax.tree.map(lambda x, i=i: x[i], lanes), plain[i], "float32")
    # The lanes differ: the batch really carried three rates.
    assert not np.allclose(jax.tree.leaves(lanes)[0][0], jax.tree.leaves(lanes)[0][2])


def test_vmap_over_learning_rates_passed_to_the_factory():
    data = _data("float32")
    lrs = jnp.array([0.01, 0.05, 0.2])

    @jax.jit
    def run(d, lrs):
        def lane(lr):
            tx = inject_hyperparams(gradtx.sgd)(learning_rate=lr, momentum=0.9)
            path, final, _ = _path(tx, d)
            return path, final.hyperparams["learning_rate"]

        lanes, stored = jax.vmap(lane)(lrs)
        plain = [_path(gradtx.sgd(lr, 0.9), d)[0] for lr in (0.01, 0.05, 0.2)]
        return lanes, stored, plain

    lanes, stored, plain = run(data, lrs)
    np.testing.assert_array_equal(stored, lrs)
    for i in range(3):
        assert_same(jax.tree.map(lambda x, i=i: x[i], lanes), plain[i], "float32")


# ---------------------------------------------------------------- dtypes


def _zero_then_steps(tx, params, steps=3):
    grads = jax.tree.map(lambda p: jnp.asarray([0.5, -1.0, 0.0], p.dtype), params)
    state = tx.init(params)
    out = []
    for _ in range(steps):
        u, state = tx.update(grads, state, params)
        out.append(u)
    return out, state


def test_bfloat16_params_keep_float32_hyperparameters_where_optax_divides_by_zero():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    # Optax stores b2 = 0.999 in bfloat16, where it is 1.0: 1 - b2**t = 0.
    theirs, tstate = _zero_then_steps(
        optax.inject_hyperparams(optax.adam)(learning_rate=1e-3), params
    )
    assert float(tstate.hyperparams["b2"]) == 1.0
    assert not np.all(np.isfinite(np.asarray(theirs[-1]["w"], np.float32)))
    ours, state = _zero_then_steps(inject_hyperparams(gradtx.adam)(learning_rate=1e-3), params)
    assert state.hyperparams["b2"].dtype == jnp.float32
    assert float(state.hyperparams["b2"]) == np.float32(0.999)
    plain, _ = _zero_then_steps(gradtx.adam(1e-3), params)
    for u, p in zip(ours, plain, strict=True):
        assert u["w"].dtype == jnp.bfloat16
        assert np.all(np.isfinite(np.asarray(u["w"], np.float32)))
        # Within a bfloat16 rounding of the plain bfloat16 run (the injected rate is
        # applied in float32; the plain Python float is rounded to bfloat16 first).
        np.testing.assert_allclose(
            np.asarray(u["w"], np.float32), np.asarray(p["w"], np.float32), rtol=2**-7
        )
    np.testing.assert_allclose(np.asarray(ours[0]["w"], np.float32), [-1e-3, 1e-3, 0.0], rtol=2**-7)


def test_storage_dtype_follows_the_widest_params_and_hyperparam_dtype():
    with jax.enable_x64(True):
        tx = inject_hyperparams(gradtx.adam)(learning_rate=0.1)
        mixed = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(2, jnp.float64)}
        assert tx.init(mixed).hyperparams["b2"].dtype == jnp.float64
        assert tx.init({"a": jnp.ones(2, jnp.float32)}).hyperparams["b2"].dtype == jnp.float32
        assert tx.init({"z": jnp.ones(2, jnp.complex128)}).hyperparams["b2"].dtype == jnp.float64
        wide = inject_hyperparams(gradtx.adam, hyperparam_dtype=jnp.float64)(learning_rate=0.1)
        state = wide.init({"a": jnp.ones(2, jnp.float32)})
        assert state.hyperparams["learning_rate"].dtype == jnp.float64
        updates, state = jax.jit(wide.update)({"a": jnp.ones(2, jnp.float32)}, state)
        assert updates["a"].dtype == jnp.float32
        assert state.hyperparams["learning_rate"].dtype == jnp.float64
    assert tx.init({}).hyperparams["b2"].dtype == jnp.float32


# ---------------------------------------------------------------- the static rule


def _scaled_trace(decay: float = 0.5, flip=None, period: int = 2):
    """A test factory that branches on ``decay`` in Python and takes a non-schedule callable."""
    if decay > 0:
        inner = gradtx.trace(decay)
    else:
        inner = gradtx.identity()
    if flip is None:
        return inner
    return gradtx.chain(
        inner, gradtx.stateless(lambda u, p: jax.tree.map(flip, u)), gradtx.scale(float(period))
    )


def test_static_rules():
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([1.0, -2.0, 3.0])}
    # A float the factory branches on stays static; an int stays static; a callable
    # named in static_args is passed as is, not called with the step count.
    tx = inject_hyperparams(_scaled_trace, static_args="flip")(0.5, flip=jnp.negative, period=3)
    state = tx.init(params)
    assert state.hyperparams == {}
    updates, _ = jax.jit(tx.update)(grads, state)
    np.testing.assert_allclose(updates["w"], -3.0 * grads["w"])
    # adadelta's weight_decay is injected whatever its value: 0.0 builds the same
    # chain (and state tree) as 0.1, as the plain adadelta does.
    zero = inject_hyperparams(gradtx.adadelta)(learning_rate=0.1)
    assert float(zero.init(params).hyperparams["weight_decay"]) == 0.0
    assert jax.tree.structure(zero.init(params).inner_state) == jax.tree.structure(
        gradtx.adadelta(0.1).init(params)
    )
    jax.jit(zero.update)(grads, zero.init(params), params)
    decayed = inject_hyperparams(gradtx.adadelta)(learning_rate=0.1, weight_decay=0.1)
    assert float(decayed.init(params).hyperparams["weight_decay"]) == np.float32(0.1)
    # A mask function is a mask, not a schedule.
    masked = inject_hyperparams(gradtx.adamw)(0.1, weight_decay=0.5, mask=lambda p: {"w": False})
    assert "mask" not in masked.init(params).hyperparams
    u, _ = masked.update({"w": jnp.zeros(3)}, masked.init(params), params)
    np.testing.assert_array_equal(u["w"], 0.0)


def test_a_schedule_the_factory_cannot_trace_is_refused():
    with pytest.raises(ValueError, match="decay cannot be scheduled"):
        inject_hyperparams(_scaled_trace)(decay=lambda k: 0.5)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("factory", "kwargs", "match"),
    [
        (gradtx.adam, {"learning_rate": 0.1, "b2": 1.5}, "b2 must be in"),
        (gradtx.adam, {"learning_rate": float("nan")}, "learning_rate must be finite"),
        (gradtx.adam, {"learning_rate": lambda k: jnp.nan + k}, "learning_rate must be finite"),
        (gradtx.sgd, {"learning_rate": 0.1, "momentum": -0.5}, "momentum must be in"),
        (gradtx.rmsprop, {"learning_rate": 0.1, "eps": -1.0}, "eps must be"),
    ],
)
def test_bad_concrete_values_fail_at_construction(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        inject_hyperparams(factory)(**kwargs)


def test_injected_values_are_not_checked_under_jit_but_are_eagerly():
    params = {"w": jnp.ones(3)}
    tx = inject_hyperparams(gradtx.adam)(learning_rate=0.1)
    state = tx.init(params)
    jax.jit(tx.update)(params, state)  # tracers: the checks skip them
    bad = state._replace(hyperparams={**state.hyperparams, "b2": jnp.float32(1.5)})
    with pytest.raises(ValueError, match="b2 must be in"):
        tx.update(params, bad)  # rebuilt eagerly with the concrete value
    missing = state._replace(hyperparams={k: v for k, v in state.hyperparams.items() if k != "b1"})
    with pytest.raises(ValueError, match="state.hyperparams must hold exactly"):
        tx.update(params, missing)


def test_bad_wrapper_arguments():
    with pytest.raises(ValueError, match=r"static_args names \['lr'\]"):
        inject_hyperparams(gradtx.adam, static_args=("lr",))
    with pytest.raises(ValueError, match="hyperparam_dtype must be"):
        inject_hyperparams(gradtx.adam, hyperparam_dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match="hyperparam_dtype must be"):
        inject_hyperparams(gradtx.adam, hyperparam_dtype=jnp.int32)
    with pytest.raises(TypeError, match="inner_factory must be callable"):
        inject_hyperparams(gradtx.adam(0.1))


# ---------------------------------------------------------------- extra args and Optax


def _times_value(factor: float = 1.0):
    def init_fn(params):
        del params
        return gradtx.EmptyState()

    def update_fn(updates, state, params=None, *, value):
        return jax.tree.map(lambda u: u * factor * value, updates), state

    return gradtx.GradientTransformation(init_fn, update_fn)


def test_extra_args_reach_the_inner_update_and_unknown_ones_are_dropped():
    grads = {"w": jnp.array([1.0, -2.0])}
    tx = inject_hyperparams(_times_value)(factor=2.0)
    assert sorted(tx.init(grads).hyperparams) == ["factor"]
    updates, _ = tx.update(grads, tx.init(grads), value=3.0, unknown="ignored")
    np.testing.assert_array_equal(updates["w"], [6.0, -12.0])
    # An Optax factory: its plain update takes no extra arguments.
    otx = inject_hyperparams(optax.adam)(learning_rate=0.1)
    updates, _ = otx.update(grads, otx.init(grads), value=3.0)
    np.testing.assert_allclose(updates["w"], [-0.1, 0.1], rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("name", "ours", "theirs", "kwargs"),
    [
        ("adam", gradtx.adam, optax.adam, {"learning_rate": 0.05}),
        ("adam_schedule", gradtx.adam, optax.adam, {"learning_rate": schedule, "b1": 0.8}),
        (
            "sgd_nesterov",
            gradtx.sgd,
            optax.sgd,
            {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
        ),
    ],
)
def test_same_trajectory_and_hyperparams_as_optax(name, ours, theirs, kwargs, dtype):
    with jax.enable_x64(dtype == "float64"):
        data = _data(dtype)

        @jax.jit
        def run(d):
            a = _path(inject_hyperparams(ours)(**kwargs), d)
            b = _path(optax.inject_hyperparams(theirs)(**kwargs), d)
            return a[0], a[2], b[0], b[2]

        path, logged, opath, ologged = run(data)
        assert_same(path, opath, dtype, PARITY_RTOL[dtype], PARITY_ATOL[dtype])
        assert sorted(logged) == sorted(ologged)
        jax.tree.map(
            lambda x, y: np.testing.assert_allclose(x, y, rtol=PARITY_RTOL[dtype]), logged, ologged
        )


def test_flax_nnx_optimizer_steps_like_the_plain_one():
    # nnx.Optimizer calls init on Variable-wrapped params and update on plain arrays.
    from flax import nnx

    def train(tx):
        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)

        @nnx.jit
        def step(model, optimizer):
            loss, grads = nnx.value_and_grad(lambda m: jnp.sum((m(x) - 0.5) ** 2))(model)
            optimizer.update(model, grads)
            return loss

        losses = [float(step(model, optimizer)) for _ in range(5)]
        return losses, nnx.state(model, nnx.Param)

    losses, params = train(inject_hyperparams(gradtx.adam)(learning_rate=0.05))
    plain_losses, plain_params = train(gradtx.adam(0.05))
    assert losses[-1] < losses[0]
    # float32 bound; for inject_hyperparams see the module docstring.
    np.testing.assert_allclose(losses, plain_losses, rtol=2e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5), params, plain_params
    )


# ---------------------------------------------------------------- report


def report() -> str:
    """Markdown table: the largest deviation of the injected optimizer from the plain one."""
    rows = []
    for name, (factory, kwargs) in sorted(CASES.items()):
        plain, injected, _ = run_both(factory, kwargs, "float32")
        dev32 = deviation(injected, plain)
        with jax.enable_x64(True):
            plain, injected, _ = run_both(factory, kwargs, "float64")
            dev64 = deviation(injected, plain)
        rows.append(f"| inject_hyperparams({name}) | plain {name} | {dev64:.1e} | {dev32:.1e} |")
    header = "| method | reference | max deviation f64 | f32 |\n|---|---|---|---|"
    return "\n".join([header, *rows])


if __name__ == "__main__":
    print(f"{STEPS} jitted steps, every step compared.")
    print("deviation = max |injected - plain| / (|plain| + 1).\n")
    print(report())
