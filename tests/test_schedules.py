"""Every schedule against its closed form and, where Optax has it, against Optax.

Each case evaluates a gradtx schedule, jitted and vmapped over an int32 array of
counts, at every step of a dense range from 0, at each boundary and the steps
either side of it, and at large counts up to the int32 maximum; the closed form
(``tests/reference/schedules.py``) is evaluated in float64 at the same Python
ints. Run ``python -m tests.reference.report_schedules`` (or ``python -m
tests.test_schedules``) for the table of the largest deviations (this module
and ``tests/test_plateau.py``).

Tolerances, measured against ``|reference| + scale`` where ``scale`` is the
case's largest value (so ``atol = rtol * scale``: a value that decays to ~0
keeps the absolute error of the arithmetic that produced it):

* float32: ``rtol = 1e-6``. The count and the ratio ``k / T`` are rounded once
  (6e-8 each), then go through one ``cos`` or ``pow`` (a few ulps), and ``pow``
  multiplies the relative error of its exponent by ``|p log(rate)|`` (up to ~3
  in the cases below). Measured: at most 1.9e-7 (exponential growth).
* float64 (``jax.enable_x64``, the same int32 counts): ``rtol = 1e-14``, for
  the same reasons at 1.1e-16 per rounding. Measured: at most 2.9e-16.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.schedules import (
    constant_schedule,
    cosine_decay_schedule,
    cosine_onecycle_schedule,
    cosine_restarts_schedule,
    exponential_decay,
    inverse_time_decay,
    join_schedules,
    linear_decay,
    linear_onecycle_schedule,
    linear_schedule,
    piecewise_constant_schedule,
    piecewise_constant_values,
    piecewise_interpolate_schedule,
    polynomial_schedule,
    sgdr_schedule,
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
    warmup_schedule,
)
from tests.reference import schedules as R

RTOL = {"float32": 1e-6, "float64": 1e-14}
# Optax computes the same closed forms in float32 in another order (``(I - E) w +
# E`` against ``w I + (1 - w) E``, ``I ((1 - a) w + a)`` against ``I (w + (1 -
# w) a)``): a few ulps apart. Measured: at most 1.3e-7.
OPTAX_RTOL = 5e-7
DENSE = range(0, 400)
LARGE = (10**6, 2**24 + 1, 2**31 - 2, 2**31 - 1)
INT32_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Case:
    """A gradtx schedule, its closed form, and Optax's version where there is one."""

    name: str
    make: Callable[[], Callable[[Any], Any]]
    reference: Callable[[int], float]
    optax: Callable[[], Callable[[Any], Any]] | None = None
    boundaries: tuple[int, ...] = ()

    def __str__(self) -> str:
        return self.name

    def counts(self) -> np.ndarray:
        near = [b + d for b in self.boundaries for d in (-1, 0, 1)]
        every = {*DENSE, *LARGE, *(k for k in near if 0 <= k <= INT32_MAX)}
        return np.array(sorted(every), dtype=np.int64)


def _sgdr_cycles():
    return [
        dict(init_value=0.1, peak_value=0.5, warmup_steps=10, decay_steps=100, end_value=0.01),
        dict(init_value=0.05, peak_value=0.3, warmup_steps=5, decay_steps=150),
        dict(init_value=0.3, peak_value=0.3, warmup_steps=0, decay_steps=60, exponent=2.0),
    ]


def _sgdr_reference(k):
    """Each cycle a warmup then a cosine to its end value; the last one runs on."""
    cycles, start = _sgdr_cycles(), 0
    for i, c in enumerate(cycles):
        if k < start + c["decay_steps"] or i == len(cycles) - 1:
            peak, end, warm = c["peak_value"], c.get("end_value", 0.0), c["warmup_steps"]
            length, exponent = c["decay_steps"] - warm, c.get("exponent", 1.0)
            cos = lambda j: R.cosine(j, peak, length, end / peak, exponent)  # noqa: B023
            return R.warmup_then(k - start, c["init_value"], warm, cos)
        start += c["decay_steps"]
    raise AssertionError("unreachable")


def _join_reference(k):
    if k < 50:
        return 0.2
    if k < 200:
        return R.book_linear_decay(k - 50, 0.2, 0.0, 100)
    return R.exponential(k - 200, 0.05, 10, 0.9)


CASES = (
    Case("constant", lambda: constant_schedule(0.3), lambda k: 0.3),
    Case(
        "linear_schedule (eq. 8.14)",
        lambda: linear_schedule(0.1, 0.003, 250),
        lambda k: R.book_linear_decay(k, 0.1, 0.003, 250),
        lambda: optax.linear_schedule(0.1, 0.003, 250),
        (250,),
    ),
    Case(
        "linear_schedule begin",
        lambda: linear_schedule(0.4, 0.1, 100, transition_begin=50),
        lambda k: R.polynomial(k, 0.4, 0.1, 1, 100, 50),
        lambda: optax.linear_schedule(0.4, 0.1, 100, transition_begin=50),
        (50, 150),
    ),
    Case(
        "linear_decay (1%)",
        lambda: linear_decay(0.1, 250),
        lambda k: R.book_linear_decay(k, 0.1, 0.001, 250),
        lambda: optax.linear_schedule(0.1, 0.001, 250),
        (250,),
    ),
    Case(
        "linear warmup",
        lambda: linear_schedule(0.0, 0.5, 100),
        lambda k: R.linear_warmup(k, 0.0, 0.5, 100),
        lambda: optax.linear_schedule(0.0, 0.5, 100),
        (100,),
    ),
    Case(
        "polynomial power 2",
        lambda: polynomial_schedule(1.0, 0.01, 2.0, 200, transition_begin=30),
        lambda k: R.polynomial(k, 1.0, 0.01, 2.0, 200, 30),
        lambda: optax.polynomial_schedule(1.0, 0.01, 2.0, 200, transition_begin=30),
        (30, 230),
    ),
    Case(
        "polynomial power 0.5",
        lambda: polynomial_schedule(0.2, 0.6, 0.5, 150),
        lambda k: R.polynomial(k, 0.2, 0.6, 0.5, 150),
        None,  # Optax's is NaN under jit from step 150 on: see the test below
        (150,),
    ),
    Case(
        "exponential",
        lambda: exponential_decay(1.0, 50, 0.5),
        lambda k: R.exponential(k, 1.0, 50, 0.5),
        lambda: optax.exponential_decay(1.0, 50, 0.5),
    ),
    Case(
        "exponential staircase, begin, end",
        lambda: exponential_decay(0.8, 40, 0.6, 25, staircase=True, end_value=0.05),
        lambda k: R.exponential(k, 0.8, 40, 0.6, 25, True, 0.05),
        lambda: optax.exponential_decay(0.8, 40, 0.6, 25, staircase=True, end_value=0.05),
        (25, 65, 105, 225),
    ),
    Case(
        "exponential growth, ceiling",
        lambda: exponential_decay(0.01, 30, 2.0, end_value=1.0),
        lambda k: R.exponential(k, 0.01, 30, 2.0, end=1.0),
        lambda: optax.exponential_decay(0.01, 30, 2.0, end_value=1.0),
    ),
    Case(
        "reciprocal",
        lambda: inverse_time_decay(0.5, 40),
        lambda k: R.reciprocal(k, 0.5, 40),
    ),
    Case(
        "reciprocal c=0.5, rate 2, staircase, begin",
        lambda: inverse_time_decay(0.5, 40, 2.0, 0.5, transition_begin=10, staircase=True),
        lambda k: R.reciprocal(k, 0.5, 40, 2.0, 0.5, 10, True),
        boundaries=(10, 50, 90),
    ),
    Case(
        "cosine",
        lambda: cosine_decay_schedule(0.4, 300, alpha=0.05),
        lambda k: R.cosine(k, 0.4, 300, 0.05),
        lambda: optax.cosine_decay_schedule(0.4, 300, alpha=0.05),
        (300,),
    ),
    Case(
        "cosine exponent 2",
        lambda: cosine_decay_schedule(0.4, 200, exponent=2.0),
        lambda k: R.cosine(k, 0.4, 200, 0.0, 2.0),
        lambda: optax.cosine_decay_schedule(0.4, 200, exponent=2.0),
        (200,),
    ),
    Case(
        "piecewise constant (scales)",
        lambda: piecewise_constant_schedule(0.5, {120: 0.5, 50: 0.1, 300: 0.0}),
        lambda k: R.piecewise_scales(k, 0.5, {50: 0.1, 120: 0.5, 300: 0.0}),
        lambda: optax.piecewise_constant_schedule(0.5, {120: 0.5, 50: 0.1, 300: 0.0}),
        (50, 120, 300, INT32_MAX - 1),
    ),
    Case(
        "piecewise constant (values)",
        lambda: piecewise_constant_values(0.3, {40: 0.1, 200: 0.02, INT32_MAX - 1: 7.0}),
        lambda k: R.piecewise_values(k, 0.3, {40: 0.1, 200: 0.02, INT32_MAX - 1: 7.0}),
        boundaries=(40, 200, INT32_MAX - 1),
    ),
    Case(
        "piecewise interpolate linear",
        lambda: piecewise_interpolate_schedule("linear", 0.5, {0: 2.0, 60: 0.5, 200: 0.1}),
        lambda k: R.piecewise_interpolate(k, "linear", 0.5, {0: 2.0, 60: 0.5, 200: 0.1}),
        lambda: optax.piecewise_interpolate_schedule("linear", 0.5, {0: 2.0, 60: 0.5, 200: 0.1}),
        (60, 200),
    ),
    Case(
        "piecewise interpolate cosine",
        lambda: piecewise_interpolate_schedule("cosine", 0.5, {90: 0.1, 250: 3.0}),
        lambda k: R.piecewise_interpolate(k, "cosine", 0.5, {90: 0.1, 250: 3.0}),
        lambda: optax.piecewise_interpolate_schedule("cosine", 0.5, {90: 0.1, 250: 3.0}),
        (90, 250),
    ),
    Case(
        "one-cycle linear",
        lambda: linear_onecycle_schedule(300, 0.8),
        lambda k: R.one_cycle_linear(k, 300, 0.8, 0.3, 0.85, 25.0, 1e4),
        lambda: optax.linear_onecycle_schedule(300, 0.8),
        (90, 255, 300),
    ),
    Case(
        "one-cycle cosine",
        lambda: cosine_onecycle_schedule(300, 0.8, pct_start=0.25, final_div_factor=100.0),
        lambda k: R.one_cycle_cosine(k, 300, 0.8, 0.25, 25.0, 100.0),
        lambda: optax.cosine_onecycle_schedule(300, 0.8, pct_start=0.25, final_div_factor=100.0),
        (75, 300),
    ),
    Case(
        "warmup then constant",
        lambda: warmup_constant_schedule(0.0, 0.2, 30),
        lambda k: R.linear_warmup(k, 0.0, 0.2, 30),
        lambda: optax.warmup_constant_schedule(0.0, 0.2, 30),
        (30,),
    ),
    Case(
        "warmup cosine decay",
        lambda: warmup_cosine_decay_schedule(0.0, 0.6, 40, 340, end_value=0.01, exponent=1.5),
        lambda k: R.warmup_then(k, 0.0, 40, lambda j: R.cosine(j, 0.6, 300, 0.01 / 0.6, 1.5)),
        lambda: optax.warmup_cosine_decay_schedule(0.0, 0.6, 40, 340, 0.01, 1.5),
        (40, 340),
    ),
    Case(
        "warmup exponential decay",
        lambda: warmup_exponential_decay_schedule(0.01, 0.4, 25, 30, 0.7, 10, True, 0.05),
        lambda k: R.warmup_then(
            k, 0.01, 25, lambda j: R.exponential(j, 0.4, 30, 0.7, 10, True, 0.05)
        ),
        lambda: optax.warmup_exponential_decay_schedule(0.01, 0.4, 25, 30, 0.7, 10, True, 0.05),
        (25, 35, 65, 95),
    ),
    Case(
        "warmup before any schedule",
        lambda: warmup_schedule(cosine_decay_schedule(0.5, 200, 0.1), 50, 0.05),
        lambda k: R.warmup_then(k, 0.05, 50, lambda j: R.cosine(j, 0.5, 200, 0.1)),
        lambda: optax.warmup_cosine_decay_schedule(0.05, 0.5, 50, 250, end_value=0.05),
        (50, 250),
    ),
    Case(
        "sgdr (Optax's cycles)",
        lambda: sgdr_schedule(_sgdr_cycles()),
        _sgdr_reference,
        lambda: optax.sgdr_schedule(_sgdr_cycles()),
        (10, 100, 105, 250, 310),
    ),
    Case(
        "sgdr T_mult=1",
        lambda: cosine_restarts_schedule(0.5, 30, alpha=0.1),
        lambda k: R.sgdr(k, 0.5, 30, 1, 0.1),
        boundaries=(30, 60, 90, INT32_MAX - INT32_MAX % 30),
    ),
    Case(
        "sgdr T_mult=2, m_mul",
        lambda: cosine_restarts_schedule(0.5, 20, t_mul=2, m_mul=0.8, alpha=0.02),
        lambda k: R.sgdr(k, 0.5, 20, 2, 0.02, 0.8),
        boundaries=(20, 60, 140, 300, 20 * (2**26 - 1)),
    ),
    Case(
        "join",
        lambda: join_schedules(
            [
                constant_schedule(0.2),
                linear_schedule(0.2, 0.0, 100),
                exponential_decay(0.05, 10, 0.9),
            ],
            [50, 200],
        ),
        _join_reference,
        lambda: optax.join_schedules(
            [
                optax.constant_schedule(0.2),
                optax.linear_schedule(0.2, 0.0, 100),
                optax.exponential_decay(0.05, 10, 0.9),
            ],
            [50, 200],
        ),
        (50, 150, 200),
    ),
)


def _evaluate(schedule, counts):
    """The schedule at each count, jitted and vmapped over an int32 array."""
    values = jax.jit(jax.vmap(schedule))(jnp.asarray(counts, jnp.int32))
    return np.asarray(values, np.float64), values.dtype


def _reference(case, counts):
    return np.array([case.reference(int(k)) for k in counts], np.float64)


def deviation(got, expected):
    """``max |got - expected| / (|expected| + scale)``, ``scale`` the largest value."""
    scale = np.max(np.abs(expected))
    return float(np.max(np.abs(got - expected) / (np.abs(expected) + scale)))


def run_case(case, dtype):
    """``(gradtx values, reference values, gradtx dtype)`` in float32 or float64."""
    counts = case.counts()
    if dtype == "float64":
        with jax.enable_x64(True):
            got, got_dtype = _evaluate(case.make(), counts)
    else:
        got, got_dtype = _evaluate(case.make(), counts)
    return got, _reference(case, counts), got_dtype


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_closed_form(case, dtype):
    got, expected, got_dtype = run_case(case, dtype)
    assert got_dtype == jnp.dtype(dtype)  # int32 counts, yet float64 under x64
    assert np.all(np.isfinite(got))
    gap = deviation(got, expected)
    assert gap <= RTOL[dtype], f"{case}: {gap:.2e}"


OPTAX_CASES = [case for case in CASES if case.optax is not None]


def optax_deviation(case):
    counts = case.counts()
    ours, _ = _evaluate(case.make(), counts)
    theirs, _ = _evaluate(case.optax(), counts)
    return deviation(ours, theirs)


@pytest.mark.parametrize("case", OPTAX_CASES, ids=str)
def test_matches_optax(case):
    gap = optax_deviation(case)
    assert gap <= OPTAX_RTOL, f"{case}: {gap:.2e}"


def test_restarts_match_optax_sgdr_cycles():
    """The paper's parametrisation against Optax's list of cycles, over its 5 cycles."""
    cycles = [
        dict(init_value=0.5, peak_value=0.5, warmup_steps=0, decay_steps=20 * 2**i, end_value=0.01)
        for i in range(5)
    ]
    counts = np.arange(20 * (2**5 - 1))
    ours, _ = _evaluate(cosine_restarts_schedule(0.5, 20, t_mul=2, alpha=0.02), counts)
    theirs, _ = _evaluate(optax.sgdr_schedule(cycles), counts)
    assert deviation(ours, theirs) <= OPTAX_RTOL


def test_polynomial_with_a_fractional_power_stays_finite_under_jit():
    """XLA computes ``k / T`` as ``k * (1 / T)``, 1 + 1 ulp at ``k = T``, and
    ``(1 - k / T) ** 0.5`` is then NaN. gradtx clips the fraction; Optax 0.2.8's
    schedule (measured on CPU) returns NaN from step ``T`` on, so it is compared
    only where it is finite."""
    counts = np.arange(300)
    ours, _ = _evaluate(polynomial_schedule(0.2, 0.6, 0.5, 150), counts)
    theirs, _ = _evaluate(optax.polynomial_schedule(0.2, 0.6, 0.5, 150), counts)
    assert np.all(ours[150:] == np.float32(0.6))
    finite = np.isfinite(theirs)
    assert np.all(finite[:150])  # its NaNs, if any, start at the end of the transition
    assert deviation(ours[finite], theirs[finite]) <= OPTAX_RTOL


# ---------------------------------------------------------------- counts of every kind


def test_python_ints_arrays_and_floats_give_the_same_values():
    schedule = warmup_cosine_decay_schedule(0.0, 0.6, 40, 340, end_value=0.01)
    counts = np.array([0, 39, 40, 200, 340, 5000])
    batched = np.asarray(schedule(jnp.asarray(counts, jnp.int32)))  # no vmap: element-wise
    vmapped, _ = _evaluate(schedule, counts)
    np.testing.assert_array_equal(batched, vmapped)
    for k, value in zip(counts, batched, strict=True):
        assert np.asarray(schedule(int(k))) == value
        assert np.asarray(schedule(np.int32(k))) == value
        assert np.asarray(schedule(float(k))) == value


def test_boundaries_are_exact_at_counts_float32_cannot_tell_apart():
    # 2**31 - 3 and 2**31 - 2 are the same float32 number (2**31).
    schedule = piecewise_constant_schedule(1.0, {2**31 - 2: 0.5})
    got, _ = _evaluate(schedule, [2**31 - 3, 2**31 - 2])
    np.testing.assert_array_equal(got, [1.0, 0.5])
    ramp = linear_schedule(0.0, 1.0, 4, transition_begin=2**30 + 1)
    got, _ = _evaluate(ramp, [2**30, 2**30 + 1, 2**30 + 2, 2**30 + 3])
    np.testing.assert_array_equal(got, [0.0, 0.0, 0.25, 0.5])


def test_boundary_beyond_int32_is_never_reached():
    schedule = join_schedules([constant_schedule(1.0), constant_schedule(2.0)], [2**40])
    got, _ = _evaluate(schedule, [0, INT32_MAX])
    np.testing.assert_array_equal(got, [1.0, 1.0])
    got, _ = _evaluate(piecewise_constant_schedule(1.0, {2**40: 0.0}), [INT32_MAX])
    np.testing.assert_array_equal(got, [1.0])


def test_join_never_gives_a_later_piece_a_negative_count():
    seen = []

    def spy(count):
        seen.append(count)
        return jnp.sqrt(count.astype(jnp.float32))  # NaN for a negative count

    got, _ = _evaluate(join_schedules([constant_schedule(1.0), spy], [10]), np.arange(15))
    np.testing.assert_allclose(got, [1.0] * 10 + list(np.sqrt(np.arange(5))), rtol=1e-6)
    assert seen  # the piece was traced


def test_hyperparameters_may_be_traced():
    """vmap and grad over a schedule's value: the construction checks skip tracers."""
    peaks = jnp.array([0.1, 0.5, 1.0])
    got = jax.vmap(lambda p: warmup_cosine_decay_schedule(0.0, p, 10, 110)(jnp.int32(60)))(peaks)
    np.testing.assert_allclose(got, 0.5 * peaks, rtol=1e-6)
    slope = jax.grad(lambda v: linear_decay(v, 100)(jnp.int32(50)))(0.2)
    np.testing.assert_allclose(slope, 0.505, rtol=1e-6)


def test_a_schedule_drives_an_optimizer_from_step_zero():
    import gradtx

    schedule = linear_decay(0.1, 5)
    tx = gradtx.sgd(learning_rate=schedule)
    params = jnp.zeros(2)

    def body(state, _):
        updates, state = tx.update(jnp.ones(2), state, params)
        return state, updates[0]

    _, steps = jax.jit(lambda s: jax.lax.scan(body, s, None, length=8))(tx.init(params))
    expected = [-R.book_linear_decay(k, 0.1, 0.001, 5) for k in range(8)]
    np.testing.assert_allclose(steps, expected, rtol=1e-6)


# ---------------------------------------------------------------- where gradtx differs from Optax


def test_degenerate_arguments_optax_turns_into_constants_are_errors_here():
    # Optax: a zero-length transition or a zero decay rate is a constant init_value.
    assert optax.linear_schedule(1.0, 0.0, 0)(50) == 1.0
    assert optax.exponential_decay(1.0, 10, 0.0)(50) == 1.0
    with pytest.raises(ValueError, match=r"transition_steps must be a number > 0, got 0"):
        linear_schedule(1.0, 0.0, 0)
    with pytest.raises(ValueError, match=r"decay_rate must be a finite number > 0, got 0.0"):
        exponential_decay(1.0, 10, 0.0)


def test_warmup_of_zero_steps_is_no_warmup():
    # Optax's warmup_constant_schedule with no warmup stays at init_value forever.
    assert float(optax.warmup_constant_schedule(0.0, 0.2, 0)(100)) == 0.0
    assert float(warmup_constant_schedule(0.0, 0.2, 0)(100)) == pytest.approx(0.2)
    inner = cosine_decay_schedule(1.0, 10)
    assert warmup_schedule(inner, 0) is inner
    ours, _ = _evaluate(warmup_cosine_decay_schedule(0.0, 1.0, 0, 10), np.arange(12))
    theirs, _ = _evaluate(optax.warmup_cosine_decay_schedule(0.0, 1.0, 0, 10), np.arange(12))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def test_endpoints_are_exact_under_jit():
    """``w I + (1 - w) E`` lands exactly on I and E (``(I - E) w + E`` may miss I).

    Under jit XLA computes ``k / T`` as ``k * (1 / T)``, which can overshoot 1 at
    ``k = T``; the fraction is clipped, so the end value is exact too, and a
    fractional power of ``1 - k / T`` never sees a negative number (NaN).
    """
    init, end = 0.1, 0.7
    with jax.enable_x64(True):
        for schedule in (
            polynomial_schedule(init, end, 0.5, 150),
            linear_schedule(init, end, 150),
            warmup_cosine_decay_schedule(init, end, 150, 300, end_value=init),
        ):
            values = jax.jit(jax.vmap(schedule))(jnp.array([0, 150, 151], jnp.int32))
            assert values.tolist()[:2] == [init, end] or values.tolist()[1:] == [end, end]
        values = jax.jit(polynomial_schedule(init, end, 0.5, 150))(jnp.array([0, 150]))
        assert values.tolist() == [init, end]
    assert (init - end) * 1.0 + end != init  # what a (I - E) w + E form returns at w = 1


# ---------------------------------------------------------------- validation

BAD = [
    (polynomial_schedule, dict(init_value=1.0, end_value=0.0, power=2, transition_steps=-5),
     r"polynomial_schedule: transition_steps must be a number > 0, got -5"),
    (polynomial_schedule, dict(init_value=1.0, end_value=0.0, power=0.0, transition_steps=5),
     r"power must be a finite number > 0, got 0.0"),
    (polynomial_schedule, dict(init_value=float("nan"), end_value=0.0, power=1, transition_steps=5),
     r"init_value must be finite, got nan"),
    (linear_schedule, dict(init_value=1.0, end_value=0.0, transition_steps=10, transition_begin=-1),
     r"transition_begin must be a number >= 0, got -1"),
    (linear_schedule, dict(init_value=1.0, end_value=0.0, transition_steps=np.nan),
     r"transition_steps must be a number > 0, got nan"),
    (linear_decay, dict(init_value=0.1, transition_steps=100, final_fraction=-0.01),
     r"linear_decay: final_fraction must be a finite number >= 0, got -0.01"),
    (linear_decay, dict(init_value=0.1, transition_steps=0),
     r"linear_decay: transition_steps must be a number > 0, got 0"),
    (exponential_decay, dict(init_value=1.0, transition_steps=10, decay_rate=-0.5),
     r"exponential_decay: decay_rate must be a finite number > 0, got -0.5"),
    (exponential_decay, dict(init_value=1.0, transition_steps=-10, decay_rate=0.5),
     r"transition_steps must be a number > 0, got -10"),
    (exponential_decay, dict(init_value=1.0, transition_steps=10, decay_rate=0.5, end_value=np.inf),
     r"end_value must be finite, got inf"),
    (inverse_time_decay, dict(init_value=1.0, transition_steps=10, decay_rate=0.0),
     r"inverse_time_decay: decay_rate must be a finite number > 0, got 0.0"),
    (inverse_time_decay, dict(init_value=1.0, transition_steps=10, power=-1.0),
     r"inverse_time_decay: power must be a finite number > 0, got -1.0"),
    (cosine_decay_schedule, dict(init_value=1.0, decay_steps=0),
     r"cosine_decay_schedule: decay_steps must be a number > 0, got 0"),
    (cosine_decay_schedule, dict(init_value=1.0, decay_steps=10, exponent=0.0),
     r"exponent must be a finite number > 0, got 0.0"),
    (piecewise_constant_schedule, dict(init_value=1.0, boundaries_and_scales={10: -0.1}),
     r"the scale at step 10 must be a finite number >= 0, got -0.1"),
    (piecewise_constant_schedule, dict(init_value=1.0, boundaries_and_scales={-10: 0.1}),
     r"a step of boundaries_and_scales must be a number >= 0, got -10"),
    (piecewise_constant_schedule, dict(init_value=1.0, boundaries_and_scales=[(10, 0.1)]),
     r"boundaries_and_scales must be a dict \{step: number\}, got list"),
    (piecewise_constant_values, dict(init_value=1.0, boundaries_and_values={10: np.nan}),
     r"the value at step 10 must be finite, got nan"),
    (piecewise_interpolate_schedule, dict(interpolate_type="cubic", init_value=1.0),
     r"interpolate_type must be 'linear' or 'cosine', got 'cubic'"),
    (linear_onecycle_schedule, dict(transition_steps=100, peak_value=1.0, pct_start=0.9),
     r"increasing boundaries .* got 90, 85, 100"),
    (linear_onecycle_schedule, dict(transition_steps=100, peak_value=1.0, div_factor=0.0),
     r"div_factor must be a finite number > 0, got 0.0"),
    (cosine_onecycle_schedule, dict(transition_steps=100, peak_value=1.0, pct_start=1.0),
     r"pct_start must be in \[0, 1\), got 1.0"),
    (join_schedules, dict(schedules=[constant_schedule(1.0)] * 3, boundaries=[10]),
     r"3 schedules need 2 boundaries, got 1: \[10\]"),
    (join_schedules, dict(schedules=[constant_schedule(1.0)] * 3, boundaries=[20, 10]),
     r"boundaries must be strictly increasing, got \[20, 10\]"),
    (join_schedules, dict(schedules=[constant_schedule(1.0)] * 2, boundaries=[-1]),
     r"a boundary must be a number >= 0, got -1"),
    (join_schedules, dict(schedules=[1.0, 2.0], boundaries=[5]),
     r"schedules must be a non-empty list of callables"),
    (warmup_schedule, dict(schedule=0.1, warmup_steps=10),
     r"warmup_schedule: schedule must be callable, got float"),
    (warmup_schedule, dict(schedule=constant_schedule(1.0), warmup_steps=-3),
     r"warmup_steps must be a number >= 0, got -3"),
    (warmup_constant_schedule, dict(init_value=0.0, peak_value=1.0, warmup_steps=-1),
     r"warmup_steps must be a number >= 0, got -1"),
    (warmup_cosine_decay_schedule,
     dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=10),
     r"decay_steps must be a number > 10, got 10"),
    (warmup_exponential_decay_schedule,
     dict(init_value=0.0, peak_value=1.0, warmup_steps=10, transition_steps=10, decay_rate=0.0),
     r"decay_rate must be a finite number > 0, got 0.0"),
    (sgdr_schedule, dict(cosine_kwargs=[]), r"at least one cycle"),
    (sgdr_schedule,
     dict(cosine_kwargs=[dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=3)]),
     r"decay_steps must be a number > 5, got 3"),
    (cosine_restarts_schedule, dict(init_value=1.0, decay_steps=10, t_mul=1.5),
     r"t_mul must be an integer >= 1, got 1.5"),
    (cosine_restarts_schedule, dict(init_value=1.0, decay_steps=0),
     r"decay_steps must be an integer >= 1, got 0"),
    (cosine_restarts_schedule, dict(init_value=1.0, decay_steps=10, m_mul=-0.5),
     r"m_mul must be a finite number >= 0, got -0.5"),
    (constant_schedule, dict(value=float("inf")),
     r"constant_schedule: value must be finite, got inf"),
]  # fmt: skip


@pytest.mark.parametrize(
    "factory, kwargs, message", BAD, ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(BAD)]
)
def test_bad_arguments_are_rejected_at_construction(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


def test_integral_floats_are_accepted_as_steps():
    np.testing.assert_allclose(linear_schedule(1.0, 0.0, 10.0)(5), 0.5)
    np.testing.assert_allclose(linear_schedule(1.0, 0.0, np.int64(10))(5), 0.5)
    with pytest.raises(ValueError, match=re.escape("got True")):
        linear_schedule(1.0, 0.0, True)


# ---------------------------------------------------------------- the report


def report() -> None:
    """Prints the largest deviations: schedules, then reduce_on_plateau."""
    from tests import test_plateau

    header = ["method", "reference", "max deviation f64", "f32", "vs Optax f32"]
    rows = []
    for case in CASES:
        f64 = deviation(*run_case(case, "float64")[:2])
        f32 = deviation(*run_case(case, "float32")[:2])
        vs = f"{optax_deviation(case):.1e}" if case.optax is not None else "n/a"
        rows.append([case.name, "closed form", f"{f64:.1e}", f"{f32:.1e}", vs])
    rows.extend(test_plateau.report_rows())
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for line in [header, ["-" * w for w in widths], *rows]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")


if __name__ == "__main__":
    report()


@pytest.mark.parametrize(
    "make, expected",
    [
        # 1000 * (1 + cos(pi / 10)) / 2 at a tenth of the way
        (lambda: gradtx.schedules.cosine_decay_schedule(1000.0, decay_steps=10**10), 975.52826),
        (lambda: gradtx.schedules.linear_schedule(1000.0, 0.0, transition_steps=10**10), 900.0),
        (
            lambda: gradtx.schedules.polynomial_schedule(1000.0, 0.0, 1, transition_steps=10**10),
            900.0,
        ),
    ],
)
def test_lengths_beyond_int32_under_jit(make, expected):
    """Optax's giant-int test: a length past int32's range, an int32 count."""
    np.testing.assert_allclose(jax.jit(make())(10**9), expected, rtol=1e-6)
