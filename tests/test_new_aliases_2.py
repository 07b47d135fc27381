"""LAMB, LARS, Fromage, NovoGrad, Adan, SM3, Adafactor and Polyak's step against
their float64 numpy references (``tests/reference``), step by step.

Each case drives the jitted optimizer (one ``lax.scan``) with ``NUM_STEPS``
recorded random gradients, and for Polyak's step recorded loss values, on a
four-leaf pytree (a rank-3 tensor, a matrix, a vector and a scalar: the shapes
that SM3's cover and Adafactor's factoring treat differently) and compares the
parameters after every step with a plain loop over the paper's pseudo-code.
The cases of one dtype are traced into a few jitted programs.

Tolerances (as ``tests/test_reference_trajectories.py``): float64 ``rtol =
1e-10``, float32 ``rtol = 1e-5``, both against ``|reference| + SCALE`` (``SCALE
= 1``, the scale of the initial parameters): a coordinate crossing zero keeps the
absolute error of the steps that brought it there. float32 runs get the same
numbers as the reference (drawn in float64, rounded to float32 for both).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests import reference as R
from tests.test_reference_trajectories import exponential, reciprocal

NUM_STEPS = 120
RTOL = {"float64": 1e-10, "float32": 1e-5}
SCALE = 1.0

SHAPES = {"conv": (2, 3, 4), "layer": {"b": (5,), "w": (3, 4)}, "temperature": ()}
TREEDEF = jax.tree.structure(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
LEAF_SHAPES = jax.tree.leaves(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
LEAF_SCALES = (1.0, 0.1, 3.0, 1.0)  # conv, b, w, temperature: each its own scale
DECAY_MASK = {"conv": True, "layer": {"b": False, "w": True}, "temperature": True}
RATIO_MASK = {"conv": True, "layer": {"b": False, "w": True}, "temperature": False}
DECAY_LEAVES = jax.tree.leaves(DECAY_MASK)
RATIO_LEAVES = jax.tree.leaves(RATIO_MASK)


def _make_data(seed: int = 20240201):
    """Initial parameters, gradients and losses, float32-representable float64.

    The gradient scale also changes over time (large early, a burst at steps
    60-69), so that the moving averages, maxima and trust ratios are exercised.
    """
    rng = np.random.default_rng(seed)
    k = np.arange(NUM_STEPS)
    in_time = 1 + 3 * np.exp(-k / 10) + 2 * ((k >= 60) & (k < 70))
    theta0, grads = [], []
    for shape, scale in zip(LEAF_SHAPES, LEAF_SCALES, strict=True):
        g = rng.normal(size=(NUM_STEPS, *shape)) * scale
        g = g * in_time.reshape((NUM_STEPS,) + (1,) * len(shape))
        theta0.append(rng.normal(size=shape).astype(np.float32).astype(np.float64))
        grads.append(g.astype(np.float32).astype(np.float64))
    values = rng.uniform(0.2, 2.0, size=NUM_STEPS).astype(np.float32).astype(np.float64)
    return theta0, grads, values


THETA0, GRADS, VALUES = _make_data()
GRADS_BY_STEP = [[g[k] for g in GRADS] for k in range(NUM_STEPS)]


@dataclasses.dataclass(frozen=True)
class Case:
    """A gradtx configuration and the reference run it must reproduce."""

    id: str
    make: Callable[[], gradtx.GradientTransformation]
    run_reference: Callable[[list, list, np.ndarray], list]  # (theta0, grads, values)


TR, NG = R.trust_ratio, R.novograd
UNFACTORED = 10**9  # a min_dim_size_to_factor no leaf reaches

CASES = [
    # LAMB (You et al. 2020, Alg. 2)
    Case(
        "lamb-defaults",
        lambda: gradtx.lamb(0.01),
        lambda th, g, f: TR.lamb(th, g, 0.01, 0.9, 0.999, 1e-6),
    ),
    Case(
        "lamb-decay-mask-schedule-eps-root",
        lambda: gradtx.lamb(reciprocal(0.02), 0.8, 0.99, 1e-4, 1e-8, 0.1, DECAY_MASK),
        lambda th, g, f: TR.lamb(
            th,
            g,
            reciprocal(0.02),
            0.8,
            0.99,
            1e-4,
            0.1,
            epsilon_root=1e-8,
            decay_mask=DECAY_LEAVES,
        ),
    ),
    # LAMB's PyTorch forms: no debiasing (pytorch-lamb); pytorch_optimizer.Lamb's.
    Case(
        "lamb-no-debias-decay-mask",
        lambda: gradtx.lamb(0.01, 0.9, 0.99, 1e-3, 0.0, 0.1, DECAY_MASK, bias_correction=False),
        lambda th, g, f: TR.lamb(
            th, g, 0.01, 0.9, 0.99, 1e-3, 0.1, decay_mask=DECAY_LEAVES, debias=False
        ),
    ),
    Case(
        "lamb-pytorch-optimizer-forms-schedule-clip",
        lambda: gradtx.lamb(
            reciprocal(0.02),
            0.8,
            0.99,
            1e-3,
            0.0,
            0.1,
            DECAY_MASK,
            bias_correction="step",
            weight_decouple=True,
            eps_in_trust_ratio=True,
            max_weight_norm=2.0,
        ),
        lambda th, g, f: TR.lamb(
            th,
            g,
            reciprocal(0.02),
            0.8,
            0.99,
            1e-3,
            0.1,
            decay_mask=DECAY_LEAVES,
            debias="step",
            decay_outside=True,
            epsilon_in_ratio=True,
            phi_max=2.0,
        ),
    ),
    # LARS (You, Gitman & Ginsburg 2017, Alg. 1): without decay the denominators agree.
    Case(
        "lars-paper-no-decay",
        lambda: gradtx.lars(0.1, trust_coefficient=0.01),
        lambda th, g, f: TR.lars(th, g, 0.1, 0.01, 0.0, 0.9),
    ),
    Case(
        "lars-decay-masks-nesterov-schedule",
        lambda: gradtx.lars(
            exponential(0.1), 0.01, DECAY_MASK, 0.02, 1e-3, RATIO_MASK, 0.8, nesterov=True
        ),
        lambda th, g, f: TR.lars(
            th,
            g,
            exponential(0.1),
            0.02,
            0.01,
            0.8,
            epsilon=1e-3,
            denominator="decayed",
            nesterov=True,
            decay_mask=DECAY_LEAVES,
            ratio_mask=RATIO_LEAVES,
        ),
    ),
    Case(
        "lars-paper-denominator-decay-masks-nesterov",
        lambda: gradtx.lars(
            0.1,
            0.05,
            DECAY_MASK,
            0.02,
            trust_ratio_mask=RATIO_MASK,
            momentum=0.8,
            nesterov=True,
            trust_ratio_form="paper",
        ),
        lambda th, g, f: TR.lars(
            th,
            g,
            0.1,
            0.02,
            0.05,
            0.8,
            nesterov=True,
            decay_mask=DECAY_LEAVES,
            ratio_mask=RATIO_LEAVES,
        ),
    ),
    Case(
        "scale_by_trust_ratio-momentum-zero",
        lambda: gradtx.chain(
            gradtx.scale_by_trust_ratio(trust_coefficient=0.05), gradtx.scale_by_learning_rate(0.1)
        ),
        lambda th, g, f: TR.lars(th, g, 0.1, 0.05, 0.0, 0.0),
    ),
    # Fromage (Bernstein et al. 2020, Alg. 1)
    Case(
        "fromage-defaults",
        lambda: gradtx.fromage(0.01),
        lambda th, g, f: R.fromage.fromage(th, g, 0.01, min_norm=1e-6),
    ),
    Case(
        "fromage-paper-schedule",
        lambda: gradtx.fromage(reciprocal(0.05), min_norm=0.0),
        lambda th, g, f: R.fromage.fromage(th, g, reciprocal(0.05)),
    ),
    # NovoGrad (Ginsburg et al. 2019, Alg. 1)
    Case(
        "novograd-paper",
        lambda: gradtx.novograd(0.01, eps=0.0),
        lambda th, g, f: NG.novograd(th, g, 0.01, 0.9, 0.25),
    ),
    Case(
        "novograd-decay-eps-schedule",
        lambda: gradtx.novograd(exponential(0.01), 0.95, 0.5, 1e-3, 1e-4, 0.01),
        lambda th, g, f: NG.novograd(
            th, g, exponential(0.01), 0.95, 0.5, 0.01, epsilon=1e-3, epsilon_root=1e-4
        ),
    ),
    Case(
        "novograd-b1-zero",
        lambda: gradtx.chain(
            gradtx.scale_by_novograd(0.0, 0.9), gradtx.scale_by_learning_rate(0.01)
        ),
        lambda th, g, f: NG.novograd(th, g, 0.01, 0.0, 0.9, epsilon=1e-8),
    ),
    # Adan (Xie et al. 2022, Alg. 1): the paper's beta_i are 1 - b_i.
    Case(
        "adan-defaults",
        lambda: gradtx.adan(0.01),
        lambda th, g, f: R.adan.adan(th, g, 0.01, 0.02, 0.08, 0.01, 1e-8, epsilon_root=1e-8),
    ),
    Case(
        "adan-decay-mask-schedule",
        lambda: gradtx.adan(reciprocal(0.01), 0.9, 0.5, 0.95, 1e-3, 0.0, 0.05, DECAY_MASK),
        lambda th, g, f: R.adan.adan(
            th, g, reciprocal(0.01), 0.1, 0.5, 0.05, 1e-3, 0.05, decay_mask=DECAY_LEAVES
        ),
    ),
    Case(
        "adan-b1-zero",
        lambda: gradtx.chain(gradtx.scale_by_adan(0.0), gradtx.scale_by_learning_rate(0.01)),
        lambda th, g, f: R.adan.adan(th, g, 0.01, 1.0, 0.08, 0.01, 1e-8),
    ),
    # SM3 (Anil et al. 2019, Alg. 2)
    Case(
        "sm3-paper",
        lambda: gradtx.chain(
            gradtx.scale_by_sm3(0.0, 1.0, 0.0), gradtx.scale_by_learning_rate(0.1)
        ),
        lambda th, g, f: R.sm3.sm3(th, g, 0.1),
    ),
    Case(
        "sm3-momentum",
        lambda: gradtx.sm3(0.05),
        lambda th, g, f: R.sm3.sm3(th, g, 0.05, beta_1=0.9, epsilon=1e-8),
    ),
    Case(
        "sm3-averaged-schedule",
        lambda: gradtx.chain(
            gradtx.scale_by_sm3(0.5, 0.9, 1e-6), gradtx.scale_by_learning_rate(reciprocal(0.05))
        ),
        lambda th, g, f: R.sm3.sm3(th, g, reciprocal(0.05), beta_1=0.5, beta_2=0.9, epsilon=1e-6),
    ),
    # Adafactor (Shazeer & Stern 2018, Alg. 4 and 5)
    Case(
        "adafactor-factored",
        lambda: gradtx.adafactor(0.05, min_dim_size_to_factor=2),
        lambda th, g, f: R.adafactor.adafactor(th, g, 0.05, min_size=2),
    ),
    Case(
        "adafactor-absolute-step-unclipped",
        lambda: gradtx.adafactor(
            0.01, 3, 0.6, multiply_by_parameter_scale=False, clipping_threshold=None
        ),
        lambda th, g, f: R.adafactor.adafactor(
            th, g, 0.01, 0.6, min_size=3, relative_step=False, d=None
        ),
    ),
    Case(
        "adafactor-unfactored-momentum-decay-schedule",
        lambda: gradtx.adafactor(
            reciprocal(0.02),
            decay_rate=0.5,
            clipping_threshold=0.5,
            momentum=0.9,
            dtype_momentum=None,
            weight_decay_rate=1e-3,
            eps=1e-20,
            factored=False,
            weight_decay_mask=DECAY_MASK,
        ),
        lambda th, g, f: R.adafactor.adafactor(
            th,
            g,
            reciprocal(0.02),
            0.5,
            eps_1=1e-20,
            d=0.5,
            min_size=UNFACTORED,
            beta_1=0.9,
            weight_decay=1e-3,
            decay_mask=DECAY_LEAVES,
        ),
    ),
    # Polyak's step, SPS_max (Loizou et al. 2021, eq. 5): c = s, gamma_b = s gamma_max.
    Case(
        "polyak_sgd-defaults",
        lambda: gradtx.polyak_sgd(),
        lambda th, g, f: R.polyak.sps_max(th, g, f, 1.0, 1.0),
    ),
    Case(
        "polyak_sgd-scaled-eps-sps-plus",
        lambda: gradtx.polyak_sgd(0.01, 2.0, 0.8, 1e-3, "sps+"),
        lambda th, g, f: R.polyak.sps_max(
            th, g, f, 2.0, 0.02, 0.8, epsilon=5e-4, positive_part=True
        ),
    ),
    Case(
        "polyak_sgd-scaling-schedule-negative-gaps",
        lambda: gradtx.polyak_sgd(1.0, exponential(1.5), 0.5),
        lambda th, g, f: R.polyak.sps_max(
            th, g, f, exponential(1.5), lambda k: exponential(1.5)(k) * 1.0, 0.5
        ),
    ),
]
CASES_BY_ID = {case.id: case for case in CASES}


def _path(tx, params, grads, values):
    def step(carry, inputs):
        p, state = carry
        g, value = inputs
        updates, state = tx.update(g, state, p, value=value)
        p = gradtx.apply_updates(p, updates)
        return (p, state), p

    return jax.lax.scan(step, (params, tx.init(params)), (grads, values))[1]


def trajectories(makes, dtype: str) -> list[list[np.ndarray]]:
    """Each ``make()``'s parameters before and after every step, one float64 array
    per leaf, all traced into one jitted function (one compilation). Call it inside
    ``jax.enable_x64(dtype == "float64")``."""
    params = jax.tree.unflatten(TREEDEF, [jnp.asarray(x, dtype) for x in THETA0])
    stacked = jax.tree.unflatten(TREEDEF, [jnp.asarray(g, dtype) for g in GRADS])
    values = jnp.asarray(VALUES, dtype)
    paths = jax.jit(lambda p, g, f: [_path(make(), p, g, f) for make in makes])(
        params, stacked, values
    )
    return [
        [
            np.concatenate([np.asarray(x0, np.float64)[None], np.asarray(xs, np.float64)])
            for x0, xs in zip(jax.tree.leaves(params), jax.tree.leaves(path), strict=True)
        ]
        for path in paths
    ]


GROUP = 11  # cases per jitted program


@functools.cache
def _group(dtype: str, index: int) -> dict[str, list[np.ndarray]]:
    members = CASES[index * GROUP : (index + 1) * GROUP]
    with jax.enable_x64(dtype == "float64"):
        found = trajectories([case.make for case in members], dtype)
    return {case.id: path for case, path in zip(members, found, strict=True)}


@functools.cache
def reference_trajectory(case_id: str) -> tuple[np.ndarray, ...]:
    return tuple(CASES_BY_ID[case_id].run_reference(THETA0, GRADS_BY_STEP, VALUES))


def deviation(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """``max |got - want| / (|want| + SCALE)`` over every leaf, element and step."""
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape, (g.shape, w.shape)
        worst = max(worst, float(np.max(np.abs(g - w) / (np.abs(w) + SCALE))))
    return worst


RUNS = [(case, dtype) for case in CASES for dtype in RTOL]


@pytest.mark.parametrize("case, dtype", RUNS, ids=[f"{c.id}-{d}" for c, d in RUNS])
def test_trajectory_matches_reference(case, dtype):
    want = list(reference_trajectory(case.id))
    assert all(np.all(np.isfinite(w)) for w in want), "the reference diverged"
    moved = max(float(np.max(np.abs(w[-1] - w[0]))) for w in want)
    assert moved > 0.02, f"{case.id}: the reference barely moved ({moved})"
    got = _group(dtype, CASES.index(case) // GROUP)[case.id]
    worst = deviation(got, want)
    assert worst <= RTOL[dtype], f"{case.id} [{dtype}]: deviation {worst:.3e} > {RTOL[dtype]}"


# ---------------------------------------------------------------- conventions


def test_the_lars_denominators_differ_with_decay_and_agree_without():
    """A test that passes either convention proves nothing: at beta = 0.05 the
    paper's ``||g|| + beta ||w||`` and Optax's ``||g + beta w||`` part by far more
    than the float32 tolerance; at beta = 0 they are the same run."""
    args = (THETA0, GRADS_BY_STEP, 0.1, 0.02)
    paper = TR.lars(*args, 0.05, 0.9)
    decayed = TR.lars(*args, 0.05, 0.9, denominator="decayed")
    assert deviation(paper, decayed) > 1e-3
    assert (
        deviation(TR.lars(*args, 0.0, 0.9), TR.lars(*args, 0.0, 0.9, denominator="decayed")) < 1e-14
    )


def test_each_lamb_switch_changes_the_run():
    """Each of LAMB's PyTorch switches, alone, moves the reference trajectory by
    far more than the float32 tolerance (so the cases above test each form)."""
    args = (THETA0, GRADS_BY_STEP, 0.01, 0.9, 0.99, 1e-3, 0.1)
    optax_form = TR.lamb(*args)
    for switch in (
        {"debias": False},
        {"debias": "step"},
        {"decay_outside": True},
        {"epsilon_in_ratio": True},
        {"phi_max": 2.0},
    ):
        assert deviation(TR.lamb(*args, **switch), optax_form) > 1e-4, switch


def test_lamb_refuses_an_unknown_bias_correction_and_a_bad_cap():
    with pytest.raises(ValueError, match=r"lamb: bias_correction must be True, False or 'step'"):
        gradtx.lamb(0.1, bias_correction="paper")
    with pytest.raises(ValueError, match=r"lamb: bias_correction must be True, False or 'step'"):
        gradtx.lamb(0.1, bias_correction=1)
    with pytest.raises(ValueError, match=r"lamb: max_weight_norm"):
        gradtx.lamb(0.1, max_weight_norm=0.0)
    with pytest.raises(ValueError, match=r"lamb: eps"):
        gradtx.lamb(0.1, eps=-1.0, weight_decouple=True)


def test_lars_refuses_an_unknown_form_and_a_scheduled_decay_in_the_papers():
    with pytest.raises(ValueError, match=r"lars: trust_ratio_form must be 'optax' or 'paper'"):
        gradtx.lars(0.1, trust_ratio_form="torch")
    with pytest.raises(TypeError, match=r"lars: weight_decay"):
        gradtx.lars(0.1, lambda count: 0.1, trust_ratio_form="paper")


# ---------------------------------------------------------------- options and errors


def test_novograd_reads_the_params_only_with_weight_decay():
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([1.0, -2.0, 2.0])}
    tx = gradtx.novograd(0.1)
    tx.update(grads, tx.init(params))  # no params needed
    decayed = gradtx.novograd(0.1, weight_decay=0.01)
    with pytest.raises(ValueError, match="novograd: weight_decay .* call update"):
        decayed.update(grads, decayed.init(params))


def test_novograd_mu_dtype_and_one_real_second_moment_per_leaf():
    params = {"w": jnp.ones((2, 3)), "z": jnp.ones(2, jnp.complex64)}
    tx = gradtx.scale_by_novograd(mu_dtype=jnp.complex64)
    state = tx.init(params)
    assert state.mu["w"].dtype == jnp.complex64
    assert state.nu["w"].shape == () and state.nu["z"].dtype == jnp.float32
    low = gradtx.scale_by_novograd(mu_dtype=jnp.bfloat16)
    updates, state = low.update({"w": jnp.ones((2, 3))}, low.init({"w": jnp.ones((2, 3))}))
    assert state.mu["w"].dtype == jnp.bfloat16 and updates["w"].dtype == jnp.float32


def test_sm3_refuses_complex_params_and_keeps_one_vector_per_axis():
    with pytest.raises(TypeError, match="scale_by_sm3: complex parameters"):
        gradtx.scale_by_sm3().init({"z": jnp.ones(2, jnp.complex64)})
    state = gradtx.scale_by_sm3().init({"t": jnp.ones((2, 3, 4)), "s": jnp.ones(())})
    assert [x.shape for x in state.mu["t"]] == [(2,), (3,), (4,)]
    assert [x.shape for x in state.mu["s"]] == [()]


def test_adafactor_factors_the_two_largest_axes_and_names_a_transposed_gradient():
    tx = gradtx.scale_by_factored_rms(min_dim_size_to_factor=3)
    params = {"t": jnp.ones((4, 2, 3)), "m": jnp.ones((3, 5)), "thin": jnp.ones((2, 9))}
    state = tx.init(params)
    assert state.v_row["t"].shape == (1, 2, 3) and state.v_col["t"].shape == (4, 2, 1)
    assert state.v["t"].shape == (1,) and state.v["thin"].shape == (2, 9)  # 2 < 3: unfactored
    with pytest.raises(ValueError, match=r"\['m'\]: expected a floating array of shape \(3, 5\)"):
        tx.update({**params, "m": jnp.ones((5, 3))}, state)


def test_adafactor_decay_rate_fn_is_kept_static_under_inject_hyperparams():
    decay = lambda step, exponent: 0.5 + 0 * step * exponent  # noqa: E731 - a constant decay
    make = gradtx.inject_hyperparams(gradtx.scale_by_factored_rms, static_args="decay_rate_fn")
    tx = make(decay_rate=0.8, min_dim_size_to_factor=2, decay_rate_fn=decay)
    plain = gradtx.scale_by_factored_rms(0.8, min_dim_size_to_factor=2, decay_rate_fn=decay)
    params = {"w": jnp.ones((2, 3))}
    grads = {"w": jnp.arange(6.0).reshape(2, 3)}
    state, plain_state = tx.init(params), plain.init(params)
    for _ in range(2):
        got, state = tx.update(grads, state, params)
        want, plain_state = plain.update(grads, plain_state, params)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)


def test_polyak_needs_the_loss_as_a_scalar_value():
    tx = gradtx.polyak_sgd()
    params = jnp.ones(2)
    with pytest.raises(ValueError, match="scale_by_polyak: Polyak's step reads the loss"):
        tx.update(jnp.ones(2), tx.init(params), params)
    with pytest.raises(ValueError, match="value must be the loss, a real scalar"):
        tx.update(jnp.ones(2), tx.init(params), params, value=jnp.ones(2))
    # A zero gradient with eps = 0 takes no step (0, not 0/0).
    updates, _ = tx.update(jnp.zeros(2), tx.init(params), params, value=1.0)
    np.testing.assert_array_equal(updates, jnp.zeros(2))


def test_fromage_keeps_the_weight_norm_for_an_orthogonal_gradient():
    """Bernstein et al.'s reason for the 1 / sqrt(1 + eta^2): a step orthogonal to
    the weights would grow their norm by sqrt(1 + eta^2); Fromage cancels it."""
    w = jnp.array([3.0, 0.0, 4.0])
    tx = gradtx.fromage(0.5)
    updates, _ = tx.update(jnp.array([0.0, 7.0, 0.0]), tx.init(w), w)
    np.testing.assert_allclose(jnp.linalg.norm(w + updates), jnp.linalg.norm(w), rtol=1e-6)
