"""reduce_on_plateau: its state machine, its handling of negative losses, Optax parity.

The jitted transformation (one ``lax.scan`` over the losses) is compared with
the plain float64 state machine of ``tests/reference/plateau.py`` fed the same
losses, on loss curves that flatten out under noise (positive, negative, and
crossing zero), with every option exercised; hand-worked sequences pin the
exact steps of the reductions; and Optax's ``optax.contrib.reduce_on_plateau``
is matched where its rule is the same (``best >= 0``) and shown to fail where
it is not (negative losses).

Tolerances: the scale is a product of ``factor``s, exact in float64 and within
a few float32 roundings of it (``rtol = 1e-6``; float64: ``1e-12``). The
decisions themselves (which step reduces) must be identical: the losses are
rounded to the run's dtype before the reference sees them, and no noisy loss
lands within float32 rounding of a threshold.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.transforms.plateau import ReduceOnPlateauState, has_improved, reduce_on_plateau
from tests.reference import plateau as R

RTOL = {"float32": 1e-6, "float64": 1e-12}
SHAPES = {"layer": {"b": (5,), "w": (3, 4)}, "temperature": ()}


def _params(dtype):
    return jax.tree.map(
        lambda s: jnp.ones(s, dtype), SHAPES, is_leaf=lambda x: isinstance(x, tuple)
    )


def _grads(params):
    """A fixed gradient with a different value per leaf."""
    leaves, treedef = jax.tree.flatten(params)
    return treedef.unflatten([(i + 1.5) * jnp.ones_like(x) for i, x in enumerate(leaves)])


def run(tx, losses, dtype="float32"):
    """Scales after each step and the updates, from a jitted scan over ``losses``."""
    params = _params(dtype)
    grads = _grads(params)

    def body(state, loss):
        updates, state = tx.update(grads, state, params, value=loss)
        return state, (state.scale, updates)

    scan = jax.jit(lambda state, xs: jax.lax.scan(body, state, xs))
    final, (scales, updates) = scan(tx.init(params), jnp.asarray(losses, dtype))
    return final, np.asarray(scales, np.float64), updates, grads


def noisy_curve(seed, num_steps, offset, amplitude=1.0, noise=0.01):
    """A loss that falls fast then flattens under noise: plateaus that trigger reductions."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_steps)
    return offset + amplitude * np.exp(-t / 25) + noise * rng.normal(size=num_steps)


CONFIGS = {
    "halving, positive": (dict(factor=0.5, patience=3), 1.0),
    "cooldown atol min_scale, negative": (
        dict(factor=0.1, patience=5, rtol=0.0, atol=1e-3, cooldown=2, min_scale=1e-3),
        -5.0,
    ),
    "accumulation, negative": (
        dict(factor=0.5, patience=2, rtol=1e-3, atol=1e-4, accumulation_size=3),
        -20.0,
    ),
    "patience 1, crossing zero, rtol=atol=0": (
        dict(factor=0.7, patience=1, rtol=0.0, atol=0.0, cooldown=1, min_scale=0.2),
        -0.5,
    ),
    "Optax defaults, positive": (dict(), 3.0),
}


def _case(name, dtype, num_steps=240, seed=0):
    kwargs, offset = CONFIGS[name]
    losses = noisy_curve(seed, num_steps, offset).astype(dtype)
    _, scales, updates, grads = run(reduce_on_plateau(**kwargs), losses, dtype)
    expected = np.array(R.reduce_on_plateau(losses.astype(np.float64), **_with_defaults(kwargs)))
    return scales, expected, updates, grads


def _with_defaults(kwargs):
    defaults = dict(factor=0.1, patience=10, rtol=1e-4, atol=0.0, cooldown=0)
    defaults.update(accumulation_size=1, min_scale=0.0)
    return {**defaults, **kwargs}


def _changes(scales):
    """Where the scale moves by more than rounding (a reduction that hits min_scale
    exactly moves it by an ulp, or not at all, depending on the dtype)."""
    return np.abs(np.diff(scales)) > 1e-6 * scales[1:]


def deviation(got, expected):
    return float(np.max(np.abs(got - expected) / np.abs(expected)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_the_state_machine(name, dtype):
    if dtype == "float64":
        with jax.enable_x64(True):
            scales, expected, updates, grads = _case(name, dtype)
    else:
        scales, expected, updates, grads = _case(name, dtype)
    assert len(set(expected)) >= 3, "the curve should cause at least two reductions"
    np.testing.assert_array_equal(_changes(scales), _changes(expected))
    assert deviation(scales, expected) <= RTOL[dtype]
    # Every update is the gradient times the scale in force after that step.
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        want = expected.reshape((-1,) + (1,) * g.ndim) * np.asarray(g, np.float64)
        np.testing.assert_allclose(np.asarray(u, np.float64), want, rtol=RTOL[dtype])


# ---------------------------------------------------------------- worked by hand


def _scales(losses, **kwargs):
    return run(reduce_on_plateau(**kwargs), np.asarray(losses, np.float32))[1].tolist()


def test_reductions_happen_at_exactly_the_expected_steps():
    losses = [5, 4, 3, 3, 3, 3, 3, 3, 3, 3]
    # Steps 0-2 improve; 3 and 4 do not: the 2nd non-improvement (step 4) halves.
    assert _scales(losses, factor=0.5, patience=2) == [
        1,
        1,
        1,
        1,
        0.5,
        0.5,
        0.25,
        0.25,
        0.125,
        0.125,
    ]


def test_cooldown_holds_the_count_after_a_reduction():
    losses = [5, 4, 3, 3, 3, 3, 3, 3, 3, 3]
    # Step 4 reduces; step 5 is the cooldown; steps 6 and 7 count, 7 reduces; 8 cools.
    got = _scales(losses, factor=0.5, patience=2, cooldown=1)
    assert got == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]


def test_min_scale_is_a_floor():
    got = _scales([1.0] * 6, factor=0.5, patience=1, min_scale=0.3)
    np.testing.assert_allclose(got, [1, 0.5, 0.3, 0.3, 0.3, 0.3], rtol=1e-7)


def test_accumulation_evaluates_the_mean_every_few_steps():
    # Means: (4 + 2) / 2 = 3 (first, improves), then 3, 3: each a reduction.
    assert _scales([4, 2, 3, 3, 3, 3], factor=0.5, patience=1, accumulation_size=2) == [
        1, 1, 1, 0.5, 0.5, 0.25
    ]  # fmt: skip


def test_thresholds_are_relative_and_absolute():
    # From best = 100: 99.95 is not an improvement with rtol=1e-3 (margin 0.1),
    # 99.85 is; with atol=0.2 added, it takes < 99.7.
    assert _scales([100, 99.95], factor=0.5, patience=1, rtol=1e-3) == [1, 0.5]
    assert _scales([100, 99.85], factor=0.5, patience=1, rtol=1e-3) == [1, 1]
    assert _scales([100, 99.75], factor=0.5, patience=1, rtol=1e-3, atol=0.2) == [1, 0.5]
    assert _scales([100, 99.65], factor=0.5, patience=1, rtol=1e-3, atol=0.2) == [1, 1]
    # rtol = atol = 0: any decrease counts.
    assert _scales([1.0, 0.9999], factor=0.5, patience=1, rtol=0.0) == [1, 1]


def test_nan_and_inf_losses_are_not_improvements():
    nan, inf = float("nan"), float("inf")
    assert _scales([1.0, nan, nan, inf, inf], factor=0.5, patience=2) == [1, 1, 0.5, 0.5, 0.25]
    assert _scales([nan, inf, 2.0], factor=0.5, patience=2) == [1, 0.5, 0.5]


def test_improvement_rule_on_both_signs():
    rule = lambda v, best: bool(has_improved(jnp.float32(v), jnp.float32(best), 1e-2, 0.0))
    assert rule(0.98, 1.0) and not rule(0.995, 1.0)
    assert rule(-1.02, -1.0) and not rule(-1.005, -1.0) and not rule(-0.99, -1.0)
    assert rule(5.0, float("inf")) and not rule(float("inf"), float("inf"))


# ---------------------------------------------------------------- negative losses


def _optax_run(losses, **kwargs):
    tx = optax.contrib.reduce_on_plateau(**kwargs)
    final, scales, _, _ = run(tx, losses)
    return final, scales


def test_optax_never_reduces_on_a_flat_negative_loss():
    losses = np.full(30, -10.0, np.float32)
    final, theirs = _optax_run(losses, factor=0.5, patience=3)
    assert np.all(theirs == 1.0)  # every step counts as an improvement
    ours = _scales(losses, factor=0.5, patience=3)
    assert [k for k in range(1, 30) if ours[k] < ours[k - 1]] == [3, 6, 9, 12, 15, 18, 21, 24, 27]
    # The same curve shifted up to +10 is reduced by both, at the same steps.
    _, theirs_positive = _optax_run(-losses, factor=0.5, patience=3)
    np.testing.assert_array_equal(theirs_positive, ours)


def test_optax_takes_a_worsening_negative_loss_for_progress():
    losses = (-10.0 + 1e-4 * np.arange(40)).astype(np.float32)  # slowly getting worse
    final, theirs = _optax_run(losses, factor=0.5, patience=3)
    assert np.all(theirs == 1.0)
    assert float(final.best_value) == pytest.approx(losses[-1])  # the "best" is the worst
    ours_final, ours, _, _ = run(reduce_on_plateau(factor=0.5, patience=3), losses)
    assert float(ours_final.best_value) == losses[0]
    assert ours[-1] == 0.5 ** (39 // 3)


def test_improving_negative_loss_is_never_reduced():
    losses = (-10.0 - 0.1 * np.arange(40)).astype(np.float32)
    assert set(_scales(losses, factor=0.5, patience=2)) == {1.0}


# ---------------------------------------------------------------- Optax parity


OPTAX_CONFIGS = {
    "halving": (dict(factor=0.5, patience=3), 1.0),
    "defaults": (dict(), 3.0),
    "cooldown atol min_scale": (
        dict(factor=0.1, patience=5, rtol=0.0, atol=1e-3, cooldown=2, min_scale=1e-3),
        0.5,
    ),
    "accumulation": (
        dict(factor=0.5, patience=2, rtol=1e-3, atol=1e-4, accumulation_size=3),
        2.0,
    ),
}


def optax_parity(name):
    """Scales, updates and final states of gradtx and Optax on the same positive losses."""
    kwargs, offset = OPTAX_CONFIGS[name]
    losses = noisy_curve(1, 240, offset).astype(np.float32)
    ours = run(reduce_on_plateau(**kwargs), losses)
    theirs = run(optax.contrib.reduce_on_plateau(**kwargs), losses)
    return ours, theirs


@pytest.mark.parametrize("name", list(OPTAX_CONFIGS))
def test_matches_optax_on_positive_losses(name):
    (final, ours, ours_updates, _), (theirs_final, theirs, theirs_updates, _) = optax_parity(name)
    assert len(set(ours)) >= 3
    np.testing.assert_array_equal(ours, theirs)
    jax.tree.map(np.testing.assert_array_equal, ours_updates, theirs_updates)
    assert float(final.best_value) == float(theirs_final.best_value)


# ---------------------------------------------------------------- protocol


def test_missing_value_is_a_clear_error():
    tx = reduce_on_plateau()
    params = jnp.ones(3)
    with pytest.raises(ValueError, match=r"extra argument `value`.*value=loss"):
        tx.update(params, tx.init(params), params)
    chained = gradtx.chain(gradtx.scale(2.0), reduce_on_plateau())
    with pytest.raises(ValueError, match=r"reduce_on_plateau: the loss is missing"):
        chained.update(params, chained.init(params), params)
    with pytest.raises(ValueError, match=r"value must be a scalar loss, got .* shape \(3,\)"):
        tx.update(params, tx.init(params), params, value=jnp.ones(3))


def test_in_a_chain_it_scales_the_step():
    params = _params("float32")
    adam = gradtx.adam(0.1)
    tx = gradtx.chain(adam, reduce_on_plateau(factor=0.5, patience=1))

    @jax.jit
    def both(state, adam_state, loss):
        updates, state = tx.update(_grads(params), state, params, value=loss)
        plain, adam_state = adam.update(_grads(params), adam_state, params)
        return updates, plain, state, adam_state

    state, adam_state = tx.init(params), adam.init(params)
    for loss in [1.0, 1.0, 1.0]:
        updates, plain, state, adam_state = both(state, adam_state, loss)
    assert float(state[1].scale) == 0.25
    jax.tree.map(lambda u, p: np.testing.assert_allclose(u, 0.25 * p, rtol=1e-7), updates, plain)


def test_jitted_step_compiles_once():
    tx = reduce_on_plateau(factor=0.5, patience=1)
    params = _params("float32")
    traces = []

    def update(s, v):
        traces.append(None)  # once per trace, not per call
        return tx.update(_grads(params), s, params, value=v)

    step = jax.jit(update)
    state = tx.init(params)
    for loss in [1.0, 2.0, 3.0]:
        _, state = step(state, jnp.float32(loss))
    assert len(traces) == 1
    assert float(state.scale) == 0.25


def test_inside_optax_chain_when_wrapped_and_in_a_flax_optimizer():
    from flax import nnx

    # optax.chain hands extra args only to its own ExtraArgs type (see gradtx.combine).
    tx = optax.chain(
        optax.sgd(0.1), optax.GradientTransformationExtraArgs(*reduce_on_plateau(0.5, 1))
    )
    params = jnp.ones(2)
    state = tx.init(params)
    for loss in [1.0, 1.0]:
        updates, state = jax.jit(lambda s, v: tx.update(params, s, params, value=v))(state, loss)
    np.testing.assert_allclose(updates, [-0.05, -0.05], rtol=1e-6)

    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(
        model, gradtx.chain(gradtx.sgd(0.1), reduce_on_plateau(0.5, 1)), wrt=nnx.Param
    )
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))
    loss_fn = lambda m: jnp.mean((m(x) - y) ** 2)
    for _ in range(3):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads, value=jnp.float32(1.0))  # a flat validation loss
    assert float(optimizer.opt_state[1].scale[...]) == 0.25


def test_vmap_over_factor():
    losses = jnp.asarray([3.0, 2.0, 2.0, 2.0, 2.0], jnp.float32)
    params = jnp.ones(2)

    def final_scale(factor):
        tx = reduce_on_plateau(factor=factor, patience=1)

        def body(state, loss):
            return tx.update(params, state, params, value=loss)[1], None

        return jax.lax.scan(body, tx.init(params), losses)[0].scale

    got = jax.jit(jax.vmap(final_scale))(jnp.array([0.5, 0.1]))
    np.testing.assert_allclose(got, [0.5**3, 0.1**3], rtol=1e-6)


@pytest.mark.parametrize(
    "params, value_dtype",
    [
        ({"w": jnp.ones(3, jnp.bfloat16), "s": jnp.ones((), jnp.float16)}, jnp.float32),
        ({"z": jnp.ones(2, jnp.complex64), "w": jnp.ones(2)}, jnp.float32),
        ({"w": None, "b": jnp.ones(2)}, jnp.float32),
        ({}, jnp.float32),
    ],
    ids=["low precision", "complex", "None leaf", "empty"],
)
def test_dtypes_and_structure_are_stable(params, value_dtype):
    tx = reduce_on_plateau(factor=0.5, patience=1)
    state = tx.init(params)
    assert isinstance(state, ReduceOnPlateauState)
    step = jax.jit(lambda u, s, v: tx.update(u, s, params, value=v))
    updates, new_state = step(params, state, 1.0)
    updates, new_state = step(params, new_state, 1.0)
    assert float(new_state.scale) == 0.5
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for new, old in zip(jax.tree.leaves(new_state), jax.tree.leaves(state), strict=True):
        assert new.dtype == old.dtype and new.shape == old.shape == ()
    assert state.best_value.dtype == value_dtype
    jax.tree.map(lambda u, p: u.dtype == p.dtype or pytest.fail(f"{u.dtype}"), updates, params)


def test_float64_params_keep_float64_state():
    with jax.enable_x64(True):
        tx = reduce_on_plateau()
        state = tx.init({"w": jnp.ones(2, jnp.float64), "h": jnp.ones(2, jnp.float32)})
        assert state.best_value.dtype == jnp.float64 and state.scale.dtype == jnp.float64


# ---------------------------------------------------------------- validation

BAD = [
    (dict(factor=0.0), r"reduce_on_plateau: factor must be in \(0, 1\), got 0.0"),
    (dict(factor=1.0), r"factor must be in \(0, 1\), got 1.0"),
    (dict(factor=float("nan")), r"factor must be finite, got nan"),
    (dict(patience=0), r"patience must be an integer >= 1, got 0"),
    (dict(patience=2.5), r"patience must be an integer >= 1, got 2.5"),
    (dict(patience=True), r"patience must be an integer >= 1, got True"),
    (dict(rtol=-1e-4), r"rtol must be a finite number >= 0, got -0.0001"),
    (dict(atol=float("inf")), r"atol must be a finite number >= 0, got inf"),
    (dict(cooldown=-1), r"cooldown must be an integer >= 0, got -1"),
    (dict(accumulation_size=0), r"accumulation_size must be an integer >= 1, got 0"),
    (dict(min_scale=1.5), r"min_scale must be in \[0, 1\], got 1.5"),
    (dict(min_scale=-0.1), r"min_scale must be in \[0, 1\], got -0.1"),
]


@pytest.mark.parametrize("kwargs, message", BAD, ids=[str(k) for k, _ in BAD])
def test_bad_arguments_are_rejected_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        reduce_on_plateau(**kwargs)


def test_optax_refuses_rtol_and_atol_both_zero_gradtx_means_strict_decrease():
    with pytest.raises(ValueError):
        optax.contrib.reduce_on_plateau(rtol=0.0, atol=0.0)
    assert _scales([1.0, 1.0, 0.5], factor=0.5, patience=1, rtol=0.0, atol=0.0) == [1, 0.5, 0.5]


# ---------------------------------------------------------------- the report


def report_rows() -> list[list[str]]:
    """Rows for ``python -m tests.test_schedules``: the state machine, then Optax."""
    rows = []
    for name in CONFIGS:
        f32 = deviation(*_case(name, "float32")[:2])
        with jax.enable_x64(True):
            f64 = deviation(*_case(name, "float64")[:2])
        row = [f"reduce_on_plateau: {name}", "state machine", f"{f64:.1e}", f"{f32:.1e}", "n/a"]
        rows.append(row)
    for name in OPTAX_CONFIGS:
        ours, theirs = optax_parity(name)
        rows.append([f"reduce_on_plateau: {name}", "Optax (positive loss)", "", "", ""])
        rows[-1][-1] = f"{deviation(ours[1], theirs[1]):.1e}"
    return rows
