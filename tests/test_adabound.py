"""AdaBound and AMSBound (Luo et al. 2019) against both numpy references.

``tests/reference/adabound.py`` holds the paper's Alg. 2 / 3 and the authors'
released code (github.com/Luolc/AdaBound) as two float64 loops. Each case runs
the jitted optimizer on the four-leaf data of ``tests/test_radam.py`` (same
harness, same tolerances: float64 ``rtol 1e-10``, float32 ``rtol 1e-5``, against
``|reference| + 1``) and compares every step. Optax has no AdaBound: the
references are the only oracles, and the identities below tie the forms to
gradtx's Adam and AMSGrad.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.optimizers.adabound import adabound, amsbound, bounds, scale_by_adabound
from tests.reference import adabound as reference
from tests.test_radam import (
    GRADS,
    GRADS_BY_STEP,
    RTOL,
    THETA0,
    Case,
    cached_trajectories,
    deviation,
    exponential,
    reciprocal,
)


def gradtx_trajectory(case: Case, dtype: str) -> list[np.ndarray]:
    # Every case of this dtype in one jitted program, once per process.
    return cached_trajectories(tuple((c.id, c.make) for c in CASES), dtype)[case.id]


def case_deviation(case: Case, dtype: str) -> float:
    """The largest deviation of gradtx from the reference over the whole run."""
    return deviation(gradtx_trajectory(case, dtype), case.run_reference(THETA0, GRADS_BY_STEP))


def paper_bounds(final_lr, gamma, alpha=None):
    """``eta_l(t), eta_u(t)`` of the paper; with a schedule ``alpha(k)``, scaled by
    ``alpha(t - 1) / alpha(0)`` (gradtx's convention, the code's, for the paper form)."""

    def scale(t):
        return 1.0 if alpha is None else alpha(t - 1) / alpha(0)

    def eta_l(t):
        return final_lr * scale(t) * (1 - 1 / (gamma * t + 1))

    def eta_u(t):
        return final_lr * scale(t) * (1 + 1 / (gamma * t))

    return eta_l, eta_u


@dataclasses.dataclass(frozen=True)
class Clipping:
    """Which bounds must be active at least once in a case's reference run."""

    lower: bool
    upper: bool


CODE, PAPER = "Luolc/AdaBound code", "Luo et al. 2019 Alg. 2"
CODE_AMS, PAPER_AMS = "Luolc/AdaBound code (amsbound)", "Luo et al. 2019 Alg. 3"


def rising(k):
    """A rate rising from 1e-3 towards 1e-2 (a smooth warmup), plain arithmetic in k."""
    return 1e-2 - 9e-3 * 0.95**k


class Ref:
    """A reference run: ``fn(theta0, grads, *args, **kwargs)``, optionally recording
    how often each bound clipped (``stats``)."""

    def __init__(self, fn, *args, **kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self, theta0, grads, stats=None):
        return self.fn(theta0, grads, *self.args, stats=stats, **self.kwargs)


CASES = [
    Case(
        "adabound-code-defaults",
        "adabound",
        CODE,
        lambda: adabound(),
        Ref(reference.adabound_code, 1e-3),
    ),
    Case(
        "adabound-code-fast-bounds",
        "adabound",
        CODE,
        lambda: adabound(0.01, final_lr=0.1, gamma=0.05),
        Ref(reference.adabound_code, 0.01, final_lr=0.1, gamma=0.05),
    ),
    Case(
        "adabound-code-schedule",
        "adabound",
        CODE,
        lambda: adabound(exponential(0.01), final_lr=0.1, gamma=0.05),
        Ref(reference.adabound_code, exponential(0.01), final_lr=0.1, gamma=0.05),
    ),
    Case(
        "adabound-code-rising-base",
        "adabound",
        CODE,
        lambda: adabound(rising, final_lr=0.05, gamma=0.05, base_learning_rate=0.01),
        Ref(reference.adabound_code, rising, final_lr=0.05, gamma=0.05, base_lr=0.01),
    ),
    Case(
        "adabound-code-b1-zero-large-eps",
        "adabound",
        CODE,
        lambda: adabound(0.01, b1=0.0, b2=0.99, eps=0.1, final_lr=0.02, gamma=0.02),
        Ref(reference.adabound_code, 0.01, (0.0, 0.99), final_lr=0.02, gamma=0.02, eps=0.1),
    ),
    Case(
        "adabound-code-l2",
        "adabound",
        CODE + ", weight_decay",
        lambda: gradtx.chain(
            gradtx.add_decayed_weights(5e-2), adabound(0.01, final_lr=0.1, gamma=0.05)
        ),
        Ref(reference.adabound_code, 0.01, final_lr=0.1, gamma=0.05, weight_decay=5e-2),
    ),
    Case(
        "amsbound-code",
        "amsbound",
        CODE_AMS,
        lambda: amsbound(0.01, final_lr=0.05, gamma=0.05),
        Ref(reference.adabound_code, 0.01, final_lr=0.05, gamma=0.05, amsbound=True),
    ),
    Case(
        "amsbound-code-schedule",
        "amsbound",
        CODE_AMS,
        lambda: amsbound(reciprocal(0.01), final_lr=0.1, gamma=0.01),
        Ref(reference.adabound_code, reciprocal(0.01), final_lr=0.1, gamma=0.01, amsbound=True),
    ),
    Case(
        "adabound-paper-no-eps",
        "adabound(form='paper')",
        PAPER,
        lambda: adabound(0.01, eps=0.0, final_lr=0.1, gamma=0.05, form="paper"),
        Ref(reference.adabound_paper, 0.01, 0.9, 0.999, *paper_bounds(0.1, 0.05)),
    ),
    # The paper's experiments: gamma = 1 - beta_2.
    Case(
        "adabound-paper-gamma-is-1-minus-b2",
        "adabound(form='paper')",
        PAPER,
        lambda: adabound(0.01, b2=0.99, final_lr=0.1, gamma=0.01, form="paper"),
        Ref(reference.adabound_paper, 0.01, 0.9, 0.99, *paper_bounds(0.1, 0.01), delta=1e-8),
    ),
    Case(
        "adabound-paper-schedule",
        "adabound(form='paper')",
        PAPER,
        lambda: adabound(reciprocal(0.02), final_lr=0.1, gamma=0.05, form="paper"),
        Ref(
            reference.adabound_paper,
            reciprocal(0.02),
            0.9,
            0.999,
            *paper_bounds(0.1, 0.05, reciprocal(0.02)),
            delta=1e-8,
        ),
    ),
    Case(
        "amsbound-paper",
        "amsbound(form='paper')",
        PAPER_AMS,
        lambda: amsbound(0.01, final_lr=0.05, gamma=0.05, form="paper"),
        Ref(
            reference.adabound_paper,
            0.01,
            0.9,
            0.999,
            *paper_bounds(0.05, 0.05),
            amsbound=True,
            delta=1e-8,
        ),
    ),
]

# The clipping each case must exercise (else it would test Adam, not AdaBound).
# Defaults (gamma = 1e-3): over 120 steps the upper bound stays >= 0.9, far above
# Adam's rates; only the lower bound (up to 0.012) bites.
CLIPPING = {case.id: Clipping(lower=True, upper=True) for case in CASES}
CLIPPING["adabound-code-defaults"] = Clipping(lower=True, upper=False)

RUNS = [(case, dtype) for case in CASES for dtype in RTOL]


@pytest.mark.parametrize("case, dtype", RUNS, ids=[f"{c.id}-{d}" for c, d in RUNS])
def test_trajectory_matches_reference(case, dtype):
    assert case_deviation(case, dtype) <= RTOL[dtype]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cases_exercise_the_bounds(case):
    """Count the clipped elements in the reference: the data must reach the bounds."""
    stats = {}
    case.run_reference(THETA0, GRADS_BY_STEP, stats=stats)
    want = CLIPPING[case.id]
    assert (stats["lower"] > 0, stats["upper"] > 0) == (want.lower, want.upper), stats


# ---------------------------------------------------------------- identities and limits


def _updates(tx, grads=GRADS[1][:30], dtype=jnp.float64):
    """Every step's update of one leaf for a fixed gradient sequence (x64 on)."""
    state = tx.init(jnp.zeros(grads.shape[1:], dtype))
    out = []
    for g in grads:
        u, state = tx.update(jnp.asarray(g, dtype), state)
        out.append(np.asarray(u))
    return np.stack(out)


def test_gamma_zero_is_adam_with_eps_on_the_uncorrected_root():
    """Bounds [0, inf): the code form is Adam in Kingma & Ba's eps-hat form."""
    with jax.enable_x64(True):
        ours = _updates(adabound(0.01, eps=1e-3, gamma=0.0))
        adam = _updates(gradtx.adam(0.01, eps=1e-3, eps_hat=True))
    np.testing.assert_allclose(ours, adam, rtol=1e-13)


def test_amsbound_gamma_zero_is_amsgrad_with_the_max_of_the_raw_moment():
    """Without eps the code's AMSBound is PyTorch's AMSGrad (max before correction)."""
    with jax.enable_x64(True):
        ours = _updates(amsbound(0.01, eps=0.0, gamma=0.0))
        amsgrad = _updates(gradtx.amsgrad(0.01, eps=0.0, max_before_bias_correction=True))
    np.testing.assert_allclose(ours, amsgrad, rtol=1e-13)


@pytest.mark.parametrize("form", ["code", "paper"])
def test_collapsed_bounds_give_sgd_on_the_first_moment(form):
    """gamma -> inf: both bounds are final_lr from step 1; the step is final_lr m (/ sqrt t)."""
    grads = GRADS[0][:20]
    with jax.enable_x64(True):
        ours = _updates(adabound(0.01, final_lr=0.05, gamma=1e12, form=form), grads)
    m, want = np.zeros(grads.shape[1:]), []
    for t, g in enumerate(grads, start=1):
        m = 0.9 * m + 0.1 * g
        want.append(-0.05 * m / (1.0 if form == "code" else np.sqrt(t)))
    np.testing.assert_allclose(ours, np.stack(want), rtol=1e-10)


def test_a_schedule_moves_the_bounds_with_the_rate():
    """The code's ``final_lr * lr_t / base_lr``: with collapsed bounds the step is
    ``lr_t * (final_lr / lr_0) * m``, so it follows the schedule."""
    grads = GRADS[0][:20]
    with jax.enable_x64(True):
        ours = _updates(adabound(exponential(0.01), final_lr=0.05, gamma=1e12), grads)
    m = np.zeros(grads.shape[1:])
    for k, g in enumerate(grads):
        m = 0.9 * m + 0.1 * g
        np.testing.assert_allclose(ours[k], -0.01 * 0.98**k * (0.05 / 0.01) * m, rtol=1e-10)


def test_paper_and_code_forms_differ():
    grads = GRADS[0][:30]
    with jax.enable_x64(True):
        code = _updates(adabound(0.01, eps=0.0, gamma=0.05), grads)
        paper = _updates(adabound(0.01, eps=0.0, gamma=0.05, form="paper"), grads)
    # Step 1: the code's corrections cancel, -lr sign(g) (Adam's first step, inside
    # the bounds [0.0048, 2.1] for these |g| < 2); the paper's uncorrected moments
    # give the rate lr / sqrt((1 - b2) g^2), which exceeds 2.1 where |g| < 0.15.
    g = grads[0]
    np.testing.assert_allclose(code[0], -0.01 * np.sign(g), rtol=1e-12)
    rate = np.clip(0.01 / np.sqrt(1e-3 * g**2), 0.1 * 0.05 / 1.05, 0.1 * 21)
    assert np.any(rate == 0.1 * 21) and np.any(rate < 0.1 * 21)
    np.testing.assert_allclose(paper[0], -rate * 0.1 * g, rtol=1e-12)
    assert np.all(np.abs(code[-1] - paper[-1]) > 0.1 * np.abs(code[-1]))


def test_bounds_converge_to_final_lr_and_gamma_zero_is_unbounded():
    with jax.enable_x64(True):
        t = jnp.asarray([1, 10, 1000, 10**6, 2**31 - 1], jnp.int32)
        lower, upper = bounds(0.1, 1e-3, t, jnp.float64)
        zero_lower, zero_upper = bounds(0.1, 0.0, t, jnp.float64)
    t = np.asarray(t, np.float64)
    np.testing.assert_allclose(lower, 0.1 * (1 - 1 / (1e-3 * t + 1)), rtol=1e-12)
    np.testing.assert_allclose(upper, 0.1 * (1 + 1 / (1e-3 * t)), rtol=1e-12)
    assert abs(float(lower[-1]) - 0.1) < 1e-6 and abs(float(upper[-1]) - 0.1) < 1e-6
    np.testing.assert_array_equal(zero_lower, 0.0)
    assert np.all(np.isinf(zero_upper))


def test_lower_bound_keeps_its_precision_in_float32():
    """``gamma t / (gamma t + 1)``: no cancellation while gamma t is small."""
    lower, _ = bounds(1.0, 1e-6, jnp.asarray([1, 3, 7], jnp.int32), jnp.float32)
    t = np.asarray([1, 3, 7.0])
    np.testing.assert_allclose(lower, 1e-6 * t / (1e-6 * t + 1), rtol=1e-6)


def test_zero_gradients_give_zero_steps_without_eps_or_bounds():
    for kwargs in [dict(eps=0.0), dict(eps=0.0, gamma=0.0), dict(eps=0.0, form="paper")]:
        for make in (adabound, amsbound):
            with jax.enable_x64(True):
                out = _updates(make(0.01, **kwargs), np.zeros((5, 3)))
            np.testing.assert_array_equal(out, 0.0)


def test_amsbound_keeps_the_running_maximum_and_adabound_has_none():
    tx = amsbound(0.01)
    state = tx.init(jnp.zeros(3))
    previous = np.zeros(3)
    for g in GRADS[0][:15, :3]:
        _, state = tx.update(jnp.asarray(g, jnp.float32), state)
        block = state[0]
        assert np.all(np.asarray(block.nu_max) >= previous)
        np.testing.assert_array_equal(block.nu_max, np.maximum(previous, block.nu))
        previous = np.asarray(block.nu_max)
    assert adabound(0.01).init(jnp.zeros(3))[0].nu_max is None


def test_learning_rate_can_be_vmapped():
    """A traced rate also places the bounds (final_lr / lr is traced too)."""
    rates = [0.001, 0.01, 0.1]

    def final(lr):
        tx = adabound(lr, gamma=0.05)
        p, state = jnp.ones(3), tx.init(jnp.ones(3))
        for g in GRADS[1][:10, 0, :3]:
            u, state = tx.update(jnp.asarray(g, jnp.float32), state, p)
            p = gradtx.apply_updates(p, u)
        return p

    batched = jax.vmap(final)(jnp.asarray(rates))
    for i, lr in enumerate(rates):
        np.testing.assert_allclose(batched[i], final(lr), rtol=1e-6)


def test_state_structure_mismatch_names_the_path():
    tx = amsbound(0.01)
    state = tx.init({"a": jnp.zeros(2), "b": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"scale_by_adabound.*\['b'\]"):
        tx.update({"a": jnp.zeros(2)}, state)


# ---------------------------------------------------------------- validation

BAD = [
    (adabound, dict(learning_rate=float("inf")), "learning_rate"),
    (adabound, dict(learning_rate=0.0), "learning_rate"),
    (adabound, dict(learning_rate=-0.01), "learning_rate"),
    (adabound, dict(learning_rate=lambda k: 0.01 * k / 10), "base_learning_rate"),
    (adabound, dict(base_learning_rate=0.0), "base_learning_rate"),
    (adabound, dict(b1=1.0), "b1"),
    (amsbound, dict(b2=1.5), "b2"),
    (adabound, dict(eps=-1e-8), "eps"),
    (adabound, dict(final_lr=0.0), "final_lr"),
    (amsbound, dict(gamma=-1e-3), "gamma"),
    (adabound, dict(form="Paper"), "form"),
    (amsbound, dict(nu_dtype="int8"), "nu_dtype"),
    (scale_by_adabound, dict(base_learning_rate=-1.0), "base_learning_rate"),
]


@pytest.mark.parametrize("factory, kwargs, name", BAD, ids=[f"{f.__name__}-{n}" for f, _, n in BAD])
def test_bad_hyperparameters_are_rejected_at_construction(factory, kwargs, name):
    with pytest.raises(ValueError, match=name):
        factory(**kwargs)


def test_a_rising_from_zero_works_with_an_explicit_base():
    tx = adabound(lambda k: 0.01 * jnp.minimum(k, 10) / 10, base_learning_rate=0.01)
    out, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
    np.testing.assert_array_equal(out, 0.0)  # the rate is 0 at step 0
