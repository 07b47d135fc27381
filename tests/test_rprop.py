"""Rprop in its four variants: Igel & Huesken's pseudo-code, Optax, and bad input.

* Reference trajectories: gradtx's ``rprop(variant=...)`` against the literal
  numpy loops of ``tests/reference/rprop.py``, every step of 120, on a 3-leaf
  pytree (a matrix, a vector, a scalar), in float64 (x64 enabled) and float32:
  on recorded gradients and losses (every sign decision exact, both clamps hit),
  and on a real loss (a softmax regression whose gradient depends on the
  weights, with iRprop+ fed its value), with and without gradient noise.
* Optax: its ``scale_by_rprop`` has our iRprop- step sizes, and its output at
  step t is our output at step t-1, or 0 where ``g_t`` disagrees with it (so
  its first step is 0 and ours moves).
* The pieces: the first step, zero gradients, backtracking, the state's dtypes,
  ``value`` handling, chains, and hyperparameters refused at construction.

Tolerances are the reference suite's (tests/test_reference_trajectories.py):
``max |gradtx - reference| / (|reference| + 1)`` at most 1e-10 (float64) and
1e-5 (float32); see that module for why the measure adds 1.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.optimizers.rprop import VARIANTS, ScaleByRpropState, rprop, scale_by_rprop
from tests.reference import rprop as R

STEPS = 120
RTOL = {"float64": 1e-10, "float32": 1e-5}
SHAPES = {"layer": {"b": (3,), "w": (4, 3)}, "scale": ()}
TREEDEF = jax.tree.structure(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
LEAF_SHAPES = jax.tree.leaves(SHAPES, is_leaf=lambda x: isinstance(x, tuple))  # b, w, scale

# Two settings of every hyperparameter: Optax's and PyTorch's defaults, and one
# where both clamps bind within a few steps (they are reached in both the
# recorded and the real-loss runs: see test_the_runs_exercise_every_branch).
HYPER = {
    "defaults": dict(
        learning_rate=0.1, eta_minus=0.5, eta_plus=1.2, min_step_size=1e-6, max_step_size=50.0
    ),
    "clamped": dict(
        learning_rate=0.05, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-3, max_step_size=0.2
    ),
}


def _f32(x):
    """float64 numbers that float32 holds exactly: both runs start from the same ones."""
    return np.asarray(x, np.float64).astype(np.float32).astype(np.float64)


def _make_data(seed: int = 19930328):
    rng = np.random.default_rng(seed)
    n, d, k = 16, 4, 3
    data = {"x": _f32(rng.normal(size=(n, d))), "y": rng.integers(0, k, size=n)}
    w0 = [_f32(0.5 * rng.normal(size=s)) for s in LEAF_SHAPES]
    w0[2] = _f32(1.5)  # the scale starts away from its optimum
    noise = [_f32(0.1 * rng.normal(size=(STEPS, *s))) for s in LEAF_SHAPES]
    # Recorded gradients: a persistent per-coordinate mean (long runs of one sign,
    # so the step sizes reach the upper clamp) plus noise (flips, so they reach
    # the lower one), and some exact zeros (the "= 0" case of the pseudo-code).
    grads = []
    for s in LEAF_SHAPES:
        mean = rng.normal(size=s) * rng.choice([0.0, 2.0], size=s)
        g = mean + rng.normal(size=(STEPS, *s))
        g[rng.random(size=g.shape) < 0.1] = 0.0
        grads.append(_f32(g))
    # Recorded losses: a random walk, so that iRprop+ sees E go up and down.
    values = _f32(5.0 + np.cumsum(rng.normal(size=STEPS)))
    return data, w0, noise, grads, values


DATA, W0, NOISE, GRADS, VALUES = _make_data()
LAMBDA = 0.1  # ridge on the weight matrix


# ---------------------------------------------------------------- the real loss


def loss(params, data):
    """Softmax regression with a learned logit scale, plus ridge and a pull on the scale."""
    w, b, s = params["layer"]["w"], params["layer"]["b"], params["scale"]
    z = s * (data["x"] @ w) + b
    nll = jnp.mean(
        jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, data["y"][:, None], 1)[:, 0]
    )
    return nll + 0.5 * LAMBDA * jnp.sum(w**2) + 0.5 * (s - 1.0) ** 2


def numpy_loss_and_grad(leaves, data=DATA):
    """The same loss and its gradient written out by hand, in float64 (leaves b, w, s)."""
    b, w, s = leaves
    x, y = data["x"], data["y"]
    n = x.shape[0]
    xw = x @ w
    z = s * xw + b
    z_max = z.max(axis=1, keepdims=True)
    log_norm = z_max[:, 0] + np.log(np.exp(z - z_max).sum(axis=1))
    value = np.mean(log_norm - z[np.arange(n), y]) + 0.5 * LAMBDA * np.sum(w**2)
    value += 0.5 * (s - 1.0) ** 2
    dz = np.exp(z - log_norm[:, None])
    dz[np.arange(n), y] -= 1.0
    dz /= n
    grad_w = s * x.T @ dz + LAMBDA * w
    grad_s = np.sum(dz * xw) + (s - 1.0)
    return value, [dz.sum(axis=0), grad_w, np.asarray(grad_s)]


def _unflatten(leaves):
    return jax.tree.unflatten(TREEDEF, list(leaves))


def _as(tree_or_leaves, dtype):
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), tree_or_leaves)


# ---------------------------------------------------------------- running gradtx
# One jitted lax.scan per (variant, kind of run, dtype); the hyperparameters are
# arguments (tracers), so both settings share a compilation.


@functools.cache
def _runner(variant: str, closed_loop: bool, dtype_name: str):
    def run(hyper, params, inputs, data):
        tx = rprop(**hyper, variant=variant)

        def body(carry, step_inputs):
            p, state = carry
            if closed_loop:
                value, grad = jax.value_and_grad(loss)(p, data)
                grad = jax.tree.map(jnp.add, grad, step_inputs)
            else:
                grad, value = step_inputs
            updates, state = tx.update(grad, state, p, value=value)
            p = gradtx.apply_updates(p, updates)
            return (p, state), (p, state[0].step_sizes)

        return jax.lax.scan(body, (params, tx.init(params)), inputs)[1]

    return jax.jit(run)


def run_gradtx(variant, hyper_name, kind, dtype):
    """Params (and step sizes) after each step, as trees of stacked float64 arrays.

    ``kind``: ``"recorded"`` (GRADS and VALUES), ``"loss"`` (the real loss, no
    noise) or ``"noisy loss"`` (the real loss plus NOISE).
    """
    data = {"x": jnp.asarray(DATA["x"], dtype), "y": jnp.asarray(DATA["y"])}
    hyper = {k: jnp.asarray(v, dtype) for k, v in HYPER[hyper_name].items()}
    if kind == "recorded":
        inputs = (_as(_unflatten(GRADS), dtype), jnp.asarray(VALUES, dtype))
    else:
        scale = 1.0 if kind == "noisy loss" else 0.0
        inputs = _as(_unflatten([scale * n for n in NOISE]), dtype)
    params = _as(_unflatten(W0), dtype)
    path, steps = _runner(variant, kind != "recorded", jnp.dtype(dtype).name)(
        hyper, params, inputs, data
    )
    to64 = lambda tree: jax.tree.map(lambda x: np.asarray(x, np.float64), tree)  # noqa: E731
    return to64(path), to64(steps)


def run_reference(variant, hyper_name, kind):
    """The numpy loop's trajectory as a tree of stacked arrays, rows 1..STEPS."""
    h = HYPER[hyper_name]
    if kind == "recorded":
        loss_and_grad = lambda t, w: (VALUES[t], [g[t] for g in GRADS])  # noqa: E731
    else:
        scale = 1.0 if kind == "noisy loss" else 0.0

        def loss_and_grad(t, w):
            value, grad = numpy_loss_and_grad(w)
            return value, [g + scale * n[t] for g, n in zip(grad, NOISE, strict=True)]

    trajectory = R.VARIANTS[variant](
        W0,
        loss_and_grad,
        STEPS,
        h["learning_rate"],
        h["eta_minus"],
        h["eta_plus"],
        h["min_step_size"],
        h["max_step_size"],
    )
    return _unflatten([leaf[1:] for leaf in trajectory])  # row 0 is the start


def deviation(got, expected):
    """``max |got - expected| / (|expected| + 1)`` over every step, leaf and element."""
    gaps = jax.tree.map(lambda a, b: np.max(np.abs(a - b) / (np.abs(b) + 1.0)), got, expected)
    return float(max(jax.tree.leaves(gaps)))


def in_dtype(dtype_name, fn, *args):
    """Runs ``fn(*args, dtype)`` with x64 enabled for float64."""
    if dtype_name == "float64":
        with jax.enable_x64(True):
            return fn(*args, jnp.float64)
    return fn(*args, jnp.float32)


# ---------------------------------------------------------------- reference trajectories

# The real loss without noise is the paper's setting (full-batch gradients), but
# it ends in oscillations of size min_step_size around the optimum, where a
# gradient's sign is decided by differences below float32's resolution: float32
# and float64 then take different (equally right) branches, so that case runs in
# float64 only (measured: float32 leaves float64 by 1.8e-4 after ~50 steps, once
# the step sizes are ~1e-6). With noise the signs are set by the noise, far above
# rounding, and float32 stays within 3e-7 of the reference.
REFERENCE_CASES = [
    (variant, hyper, kind, dtype)
    for variant in VARIANTS
    for hyper, kind, dtypes in [
        ("defaults", "recorded", ("float64", "float32")),
        ("clamped", "recorded", ("float64", "float32")),
        ("defaults", "loss", ("float64",)),
        ("clamped", "noisy loss", ("float64", "float32")),
    ]
    for dtype in dtypes
]


@functools.cache
def reference_deviation(variant, hyper, kind, dtype):
    path, _ = in_dtype(dtype, run_gradtx, variant, hyper, kind)
    return deviation(path, run_reference(variant, hyper, kind))


@pytest.mark.parametrize(
    "variant, hyper, kind, dtype", REFERENCE_CASES, ids=lambda x: str(x).replace(" ", "_")
)
def test_matches_igel_huesken_pseudo_code_at_every_step(variant, hyper, kind, dtype):
    assert reference_deviation(variant, hyper, kind, dtype) <= RTOL[dtype]


def test_numpy_gradient_of_the_real_loss_is_jaxs():
    """The closed-loop references use the hand-written gradient: it must be the loss's."""
    with jax.enable_x64(True):
        params = _as(_unflatten(W0), jnp.float64)
        data = {"x": jnp.asarray(DATA["x"]), "y": jnp.asarray(DATA["y"])}
        value, grad = jax.jit(jax.value_and_grad(loss))(params, data)
        np_value, np_grad = numpy_loss_and_grad(W0)
        np.testing.assert_allclose(float(value), np_value, rtol=1e-13)
        for a, b in zip(jax.tree.leaves(grad), np_grad, strict=True):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-14)


def test_the_runs_exercise_every_branch():
    """Guards against vacuous passes: the variants differ, the clamps bind, losses fall."""
    with jax.enable_x64(True):
        for kind, hyper in [("recorded", "clamped"), ("noisy loss", "clamped")]:
            paths = {v: run_gradtx(v, hyper, kind, jnp.float64) for v in VARIANTS}
            # Every pair of variants parts: backtracking happened (rprop+ vs rprop-),
            # iRprop+ both backtracked (vs irprop-) and declined to (vs rprop+).
            for a in VARIANTS:
                for b in VARIANTS:
                    if a < b:
                        gap = deviation(paths[a][0], paths[b][0])
                        assert gap > 1e-3, (kind, a, b, gap)
            steps = np.concatenate([x.ravel() for x in jax.tree.leaves(paths["irprop-"][1])])
            assert steps.max() == pytest.approx(HYPER[hyper]["max_step_size"], rel=1e-12), kind
            assert steps.min() == pytest.approx(HYPER[hyper]["min_step_size"], rel=1e-12), kind
        # On the real loss (no noise) every variant descends a long way.
        data = {"x": jnp.asarray(DATA["x"]), "y": jnp.asarray(DATA["y"])}
        start = float(loss(_as(_unflatten(W0), jnp.float64), data))
        for variant in VARIANTS:
            path, _ = run_gradtx(variant, "defaults", "loss", jnp.float64)
            end = float(loss(jax.tree.map(lambda x: x[-1], path), data))
            assert end < start - 0.3, (variant, start, end)


# ---------------------------------------------------------------- Optax


def _optax_and_ours(dtype):
    """Both blocks (uphill outputs) on the recorded gradients, at default settings."""
    lr = HYPER["defaults"]["learning_rate"]
    grads = _as(_unflatten(GRADS), dtype)
    params = _as(_unflatten(W0), dtype)

    @jax.jit
    def both(grads):
        def scan(tx, step_sizes):
            def body(state, g):
                out, state = tx.update(g, state, params)
                return state, (out, step_sizes(state))

            return jax.lax.scan(body, tx.init(params), grads)[1]

        return (
            scan(scale_by_rprop(lr), lambda s: s.step_sizes),
            scan(optax.scale_by_rprop(lr), lambda s: s.step_sizes),
        )

    return both(grads), grads


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_optax_is_irprop_minus_one_step_late(dtype):
    """Optax's output at step t is ours at t-1, withheld where g_t disagrees with it.

    The step sizes are the same at every step: the two differ only in when (and
    whether) a step is taken. Given recorded gradients (which do not depend on
    the weights) this relation is exact; on a real loss the paths part.
    """

    def check(dtype_):
        ((ours, our_steps), (theirs, their_steps)), grads = _optax_and_ours(dtype_)
        for o, t, os_, ts, g in zip(
            *map(jax.tree.leaves, (ours, theirs, our_steps, their_steps, grads)), strict=True
        ):
            o, t, g = np.asarray(o), np.asarray(t), np.asarray(g)
            np.testing.assert_array_equal(np.asarray(os_), np.asarray(ts))
            np.testing.assert_array_equal(t[0], 0.0)  # Optax: no step at first
            lr = HYPER["defaults"]["learning_rate"]
            np.testing.assert_allclose(o[0], lr * np.sign(g[0]), rtol=1e-7)  # ours moves
            flipped = g[1:] * o[:-1] < 0
            # Bit for bit: both multiply the same step sizes by the same factors.
            np.testing.assert_array_equal(t[1:], np.where(flipped, 0.0, o[:-1]))
            assert flipped.any() and (o[:-1] != 0).sum() > (t[1:] != 0).sum() > 0

    in_dtype(dtype, check)


def test_optax_rprop_does_not_move_on_the_first_step_and_ours_descends():
    params = _as(_unflatten(W0), jnp.float32)
    data = {"x": jnp.asarray(DATA["x"], jnp.float32), "y": jnp.asarray(DATA["y"])}

    @jax.jit
    def first_steps():
        value, grads = jax.value_and_grad(loss)(params, data)
        ours = {}
        for variant in VARIANTS:
            tx = rprop(0.1, variant=variant)
            updates, _ = tx.update(grads, tx.init(params), params, value=value)
            ours[variant] = (updates, loss(gradtx.apply_updates(params, updates), data))
        theirs = optax.rprop(0.1)
        return grads, value, ours, theirs.update(grads, theirs.init(params), params)[0]

    grads, before, ours, theirs = first_steps()
    expected = jax.tree.map(lambda g: -0.1 * jnp.sign(g), grads)
    for updates, after in ours.values():
        jax.tree.map(lambda u, e: np.testing.assert_allclose(u, e, rtol=1e-7), updates, expected)
        assert float(after) < float(before) - 0.05
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(theirs))


def test_on_a_real_loss_optax_and_ours_part():
    """The lag is not a relabelling: with weight-dependent gradients the paths differ."""
    params = _as(_unflatten(W0), jnp.float32)
    data = {"x": jnp.asarray(DATA["x"], jnp.float32), "y": jnp.asarray(DATA["y"])}

    def path(tx):
        def body(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p, data), s, p)
            return (gradtx.apply_updates(p, u), s), loss(p, data)

        return jax.lax.scan(body, (params, tx.init(params)), None, length=30)[1]

    ours, theirs = jax.jit(lambda: (path(rprop(0.1)), path(optax.rprop(0.1))))()
    assert float(theirs[1]) == float(theirs[0])  # Optax's first update was 0
    assert float(ours[1]) < float(ours[0])
    assert float(jnp.max(jnp.abs(ours - theirs))) > 1e-2


# ---------------------------------------------------------------- the pieces


def _steps(tx, grads, params=None, values=None):
    state = tx.init(params if params is not None else jnp.zeros(np.shape(grads[0])))
    outputs = []
    for k, g in enumerate(grads):
        extra = {} if values is None else {"value": values[k]}
        out, state = tx.update(jnp.asarray(g), state, params, **extra)
        outputs.append(np.asarray(out))
    return outputs, state


@pytest.mark.parametrize("variant", VARIANTS)
def test_sign_flip_rules_on_hand_made_gradients(variant):
    """One coordinate per case: keep, flip, flip after a zero, zero after a flip."""
    g = [[1.0, 1.0, 0.0, 2.0], [3.0, -1.0, 1.0, -1.0], [1.0, -2.0, -1.0, 0.0]]
    values = [1.0, 2.0, 0.5]  # E went up at step 2 (iRprop+ backtracks there)
    out, state = _steps(scale_by_rprop(0.1, variant=variant), g, values=values)
    np.testing.assert_allclose(out[0], [0.1, 0.1, 0.0, 0.1], rtol=1e-6)
    np.testing.assert_allclose(out[1][0], 0.12, rtol=1e-6)  # kept its sign: grown
    np.testing.assert_allclose(out[1][2], 0.1, rtol=1e-6)  # after a zero: Delta_0 again
    flip = {"rprop-": -0.05, "irprop-": 0.0, "rprop+": -0.1, "irprop+": -0.1}[variant]
    np.testing.assert_allclose(out[1][[1, 3]], flip, rtol=1e-6)  # flipped at step 2
    np.testing.assert_allclose(out[2][0], 0.144, rtol=1e-6)
    flip = {"rprop-": -0.05, "irprop-": 0.0, "rprop+": -0.1, "irprop+": 0.0}[variant]
    np.testing.assert_allclose(out[2][2], flip, rtol=1e-6)  # flipped at step 3, E fell
    if variant == "rprop-":  # the stored sign was kept: -2 agrees with -1, grows
        np.testing.assert_allclose(out[2][1], -0.06, rtol=1e-6)
    else:  # the stored sign was zeroed: the shrunk size, unchanged
        np.testing.assert_allclose(out[2][1], -0.05, rtol=1e-6)
    np.testing.assert_allclose(out[2][3], 0.0)  # zero gradient: no step
    np.testing.assert_allclose(
        state.step_sizes, [0.144, 0.05 if variant != "rprop-" else 0.06, 0.05, 0.05], rtol=1e-6
    )


def test_rprop_plus_undoes_exactly_the_previous_step():
    tx = rprop(0.3, variant="rprop+")
    g = [np.array([1.0, -2.0]), np.array([1.0, -2.0]), np.array([-1.0, 2.0])]
    out, state = _steps(tx, g)
    np.testing.assert_array_equal(out[2], -out[1])  # bit for bit
    np.testing.assert_array_equal(np.asarray(state[0].prev_sign), [0, 0])


def test_irprop_plus_backtracks_only_when_the_loss_went_up():
    tx = rprop(0.3, variant="irprop+")
    g = [np.array([1.0]), np.array([-1.0])]
    up, _ = _steps(tx, g, values=[1.0, 1.5])
    down, _ = _steps(tx, g, values=[1.0, 0.5])
    same, _ = _steps(tx, g, values=[1.0, 1.0])  # not an increase: no revert
    np.testing.assert_array_equal(up[1], -up[0])
    np.testing.assert_array_equal(down[1], [0.0])
    np.testing.assert_array_equal(same[1], [0.0])


def test_irprop_plus_needs_the_value_and_says_how_to_pass_it():
    tx = rprop(0.1, variant="irprop+")
    state = tx.init(jnp.zeros(2))
    with pytest.raises(ValueError, match=re.escape("tx.update(grads, state, params, value=loss)")):
        tx.update(jnp.ones(2), state, None)
    with pytest.raises(ValueError, match="value must be the loss, a real scalar"):
        tx.update(jnp.ones(2), state, None, value=jnp.ones(3))
    # The other variants ignore it, as any extra argument.
    for variant in ("irprop-", "rprop-", "rprop+"):
        tx = rprop(0.1, variant=variant)
        state = tx.init(jnp.zeros(2))
        with_value = tx.update(jnp.ones(2), state, value=3.0)
        np.testing.assert_array_equal(with_value[0], tx.update(jnp.ones(2), state)[0])


def test_value_reaches_the_block_through_chains():
    params = jnp.zeros(2)
    g = [jnp.array([1.0, 1.0]), jnp.array([-1.0, 1.0])]
    plain = rprop(0.1, variant="irprop+")
    wrapped = gradtx.named_chain(("rprop", plain), ("identity", gradtx.identity()))
    via_optax = optax.chain(
        optax.GradientTransformationExtraArgs(*scale_by_rprop(0.1, variant="irprop+")),
        optax.scale(-1.0),
    )
    expected, _ = _steps(plain, g, params, values=[1.0, 2.0])
    for tx in (wrapped, via_optax):
        got, _ = _steps(tx, g, params, values=[1.0, 2.0])
        np.testing.assert_array_equal(np.stack(got), np.stack(expected))


def test_zero_and_nan_gradients_leave_the_step_sizes_alone():
    tx = scale_by_rprop(0.1)
    state = tx.init(jnp.zeros(3))
    out, state = tx.update(jnp.array([1.0, 0.0, jnp.nan]), state)
    assert out[0] == np.float32(0.1) and out[1] == 0.0 and bool(jnp.isnan(out[2]))
    np.testing.assert_array_equal(state.prev_sign, [1, 0, 0])  # NaN is not stored
    out, state = tx.update(jnp.array([1.0, 0.0, 1.0]), state)
    np.testing.assert_allclose(out, [0.12, 0.0, 0.1], rtol=1e-6)


def test_state_dtypes():
    params = {"w": jnp.ones((2, 2), jnp.bfloat16), "b": jnp.ones(2)}
    state = scale_by_rprop(0.1).init(params)
    assert isinstance(state, ScaleByRpropState)
    assert (
        state.step_sizes["w"].dtype == jnp.bfloat16 and state.step_sizes["b"].dtype == jnp.float32
    )
    assert all(s.dtype == jnp.int8 for s in jax.tree.leaves(state.prev_sign))
    assert state.prev_value.dtype == jnp.float32 and state.prev_value.shape == ()
    exact = scale_by_rprop(0.1, step_size_dtype=jnp.float32)
    state = exact.init(params)
    assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(state.step_sizes))
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(3):
        out, state = exact.update(grads, state)
    assert out["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(state.step_sizes["w"], 0.1 * 1.2**2, rtol=1e-6)  # not bf16-rounded
    with jax.enable_x64(True):
        state = scale_by_rprop(0.1).init({"w": jnp.ones(2, jnp.float64)})
        assert state.step_sizes["w"].dtype == jnp.float64 and state.prev_value.dtype == jnp.float64


def test_complex_leaves_are_refused_at_init_naming_the_leaf():
    params = {"a": jnp.ones(2), "z": jnp.ones(2, jnp.complex64)}
    with pytest.raises(ValueError, match=r"complex leaves: \['z'\].*two real leaves"):
        rprop(0.1).init(params)


def test_traced_hyperparameters_are_not_checked_and_vmap_works():
    @jax.jit
    def first_update(lr):  # out of range, but a tracer: the caller's responsibility
        tx = rprop(lr, max_step_size=1.0)
        return tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]

    np.testing.assert_allclose(first_update(jnp.float32(2.0)), [-2.0, -2.0])
    rates = jnp.array([0.01, 0.1, 0.3])
    batched = jax.vmap(first_update)(rates)
    np.testing.assert_allclose(batched, -rates[:, None] * jnp.ones((3, 2)), rtol=1e-7)


def _message(name, shown, expected):
    return rf"{name} must be {expected}, got {re.escape(shown)}"


BAD = [
    (dict(eta_minus=0.0), _message("eta_minus", "0.0", r"in \(0, 1\)")),
    (dict(eta_minus=1.0), _message("eta_minus", "1.0", r"in \(0, 1\)")),
    (dict(eta_minus=-0.5), _message("eta_minus", "-0.5", r"in \(0, 1\)")),
    (dict(eta_plus=1.0), _message("eta_plus", "1.0", "a finite number > 1")),
    (dict(eta_plus=0.5), _message("eta_plus", "0.5", "a finite number > 1")),
    (dict(eta_plus=float("inf")), _message("eta_plus", "inf", "a finite number > 1")),
    (dict(min_step_size=-1e-6), _message("min_step_size", "-1e-06", "a finite number >= 0")),
    (dict(max_step_size=-1.0), _message("max_step_size", "-1.0", "a finite number > 0")),
    (
        dict(min_step_size=1.0, max_step_size=0.5, learning_rate=0.7),
        _message("min_step_size", "1.0", "<= max_step_size = 0.5"),
    ),
    (dict(learning_rate=-0.1), _message("learning_rate", "-0.1", "a finite number > 0")),
    (dict(learning_rate=0.0), _message("learning_rate", "0.0", "a finite number > 0")),
    (dict(learning_rate=float("nan")), _message("learning_rate", "nan", "a finite number > 0")),
    (dict(learning_rate=60.0), _message("learning_rate", "60.0", "<= max_step_size = 50.0")),
    (dict(learning_rate=1e-7), _message("learning_rate", "1e-07", ">= min_step_size = 1e-06")),
    (dict(learning_rate=lambda k: 0.1), "a schedule"),
    (dict(variant="irprop"), r"variant must be one of 'irprop-', 'rprop-', 'rprop\+', 'irprop\+'"),
    (dict(variant="iRprop-"), r"variant must be one of .*got 'iRprop-'"),
    (dict(step_size_dtype=jnp.int32), "step_size_dtype must be None or a floating"),
    (dict(step_size_dtype=jnp.complex64), "step_size_dtype must be None or a real floating"),
]


@pytest.mark.parametrize("factory", [rprop, scale_by_rprop], ids=["rprop", "scale_by_rprop"])
@pytest.mark.parametrize(
    "kwargs, pattern",
    BAD,
    ids=[",".join(f"{k}={getattr(v, '__name__', v)}" for k, v in kw.items()) for kw, _ in BAD],
)
def test_bad_hyperparameters_are_refused_at_construction(factory, kwargs, pattern):
    kwargs = {"learning_rate": 0.1, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        factory(**kwargs)
