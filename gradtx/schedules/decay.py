"""Time-based decays: constant, polynomial and linear, exponential, inverse-time, cosine.

Each factory validates its arguments and returns a pure ``count -> value``
function (see :mod:`gradtx.schedules` for the conventions shared by all).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from gradtx import _checks
from gradtx.base import Array, Schedule
from gradtx.schedules import _steps


def constant_schedule(value: float | Array) -> Schedule:
    """The schedule that always returns ``value``.

    Args:
      value: the value, a finite number.

    Raises:
      ValueError: ``value`` is NaN or infinite.

    Examples:
      >>> from gradtx.schedules import constant_schedule
      >>> constant_schedule(0.1)(1000)
      Array(0.1, dtype=float32)
    """
    _checks.finite("constant_schedule", "value", value)

    def schedule(count):
        count = jnp.asarray(count)
        return value * jnp.ones(count.shape, _steps.float_dtype(count))

    return schedule


def polynomial_schedule(
    init_value: float | Array,
    end_value: float | Array,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """A polynomial transition from ``init_value`` to ``end_value``.

    With ``I, E, P, T, B`` the arguments in order and ``k`` the step count:

    .. math::
        w_k = \\left(1 - \\frac{\\min(\\max(k - B, 0), T)}{T}\\right)^{P}, \\qquad
        \\text{value}_k = w_k I + (1 - w_k) E

    so the value is ``I`` until step ``B``, reaches ``E`` at step ``B + T`` and
    stays there. ``P = 1`` is :func:`linear_schedule`.

    Args:
      init_value: ``I``, the value up to ``transition_begin``.
      end_value: ``E``, the value from ``transition_begin + transition_steps`` on.
      power: ``P`` > 0; above 1 the value leaves ``I`` fast and lands on ``E``
        slowly, below 1 the reverse.
      transition_steps: ``T`` > 0, the length of the transition (an integer,
        or any number, as in Optax).
      transition_begin: ``B`` >= 0, the step where it starts.

    Raises:
      ValueError: non-finite values, ``power <= 0``, ``transition_steps <= 0`` or
        ``transition_begin < 0`` (Optax silently returns a constant
        ``init_value`` for ``transition_steps <= 0``; here that is a mistake to
        report: use :func:`constant_schedule`).

    Examples:
      >>> from gradtx.schedules import polynomial_schedule
      >>> schedule = polynomial_schedule(1.0, 0.0, power=2, transition_steps=10)
      >>> [round(float(schedule(k)), 6) for k in (5, 10, 20)]
      [0.25, 0.0, 0.0]
    """
    owner = "polynomial_schedule"
    _checks.finite(owner, "init_value", init_value)
    _checks.finite(owner, "end_value", end_value)
    _checks.positive(owner, "power", power)
    steps = _steps.step(owner, "transition_steps", transition_steps, strict=True)
    begin = _steps.step(owner, "transition_begin", transition_begin)

    def schedule(count):
        weight = (1 - _steps.fraction(jnp.asarray(count), begin, steps)) ** power
        return _steps.lerp(init_value, end_value, weight)

    return schedule


def linear_schedule(
    init_value: float | Array,
    end_value: float | Array,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """A linear transition from ``init_value`` to ``end_value``, then constant.

    This is the book's linear decay (Goodfellow et al. 2016, eq. 8.14) with
    ``epsilon_0 = init_value``, ``epsilon_tau = end_value``, ``tau =
    transition_steps`` and ``k`` the 0-based step count:

    .. math::
        \\epsilon_k = (1 - \\alpha)\\,\\epsilon_0 + \\alpha\\,\\epsilon_\\tau, \\quad
        \\alpha = \\frac{k}{\\tau} \\ (k < \\tau), \\qquad
        \\epsilon_k = \\epsilon_\\tau \\ (k \\ge \\tau).

    ``transition_begin`` delays the start: ``k`` is counted from it.
    :func:`linear_decay` sets ``epsilon_tau`` to 1% of ``epsilon_0``, as the book
    advises. It is also a linear *warmup* when ``end_value > init_value``.

    Args:
      init_value: ``epsilon_0``.
      end_value: ``epsilon_tau``.
      transition_steps: ``tau`` > 0 (an integer, or any number, as in Optax).
      transition_begin: >= 0, the step at which the transition starts.

    Raises:
      ValueError: non-finite values, ``transition_steps <= 0`` or
        ``transition_begin < 0``.

    Examples:
      >>> from gradtx.schedules import linear_schedule
      >>> schedule = linear_schedule(1.0, 0.5, transition_steps=10)
      >>> [round(float(schedule(k)), 6) for k in (0, 4, 10, 99)]
      [1.0, 0.8, 0.5, 0.5]

    References:
      Goodfellow, Bengio & Courville (2016), Deep Learning, Sec. 8.3.1, eq. 8.14.
    """
    owner = "linear_schedule"
    _checks.finite(owner, "init_value", init_value)
    _checks.finite(owner, "end_value", end_value)
    steps = _steps.step(owner, "transition_steps", transition_steps, strict=True)
    begin = _steps.step(owner, "transition_begin", transition_begin)

    def schedule(count):
        alpha = _steps.fraction(jnp.asarray(count), begin, steps)
        return _steps.lerp(init_value, end_value, 1 - alpha)

    return schedule


def linear_decay(
    init_value: float | Array, transition_steps: int, final_fraction: float = 0.01
) -> Schedule:
    """The book's linear decay with its advice: down to 1% of the initial value.

    Goodfellow et al. (2016, Sec. 8.3.1) decay the learning rate linearly until
    iteration ``tau`` (eq. 8.14) and advise setting ``epsilon_tau`` to roughly
    1% of ``epsilon_0``; ``tau`` is usually the number of iterations of a few
    hundred passes over the training set. This is
    ``linear_schedule(init_value, final_fraction * init_value, transition_steps)``.

    Args:
      init_value: ``epsilon_0``, the initial learning rate.
      transition_steps: ``tau`` > 0, the step from which the rate stays at
        ``epsilon_tau``.
      final_fraction: ``epsilon_tau / epsilon_0`` >= 0 (default 0.01, the book's).

    Raises:
      ValueError: as :func:`linear_schedule`, or a negative ``final_fraction``.

    Examples:
      >>> from gradtx.schedules import linear_decay
      >>> schedule = linear_decay(0.1, transition_steps=1000)
      >>> [round(float(schedule(k)), 6) for k in (0, 500, 1000)]
      [0.1, 0.0505, 0.001]

    References:
      Goodfellow, Bengio & Courville (2016), Deep Learning, Sec. 8.3.1, eq. 8.14.
    """
    _checks.finite("linear_decay", "init_value", init_value)
    _checks.non_negative("linear_decay", "final_fraction", final_fraction)
    _steps.step("linear_decay", "transition_steps", transition_steps, strict=True)
    return linear_schedule(init_value, final_fraction * init_value, transition_steps)


def _decay_exponent(count: Any, begin: int, steps: int, staircase: bool) -> tuple[Array, jnp.dtype]:
    """``(count - begin) / steps`` clipped at 0, floored for a staircase."""
    count = jnp.asarray(count)
    dtype = _steps.float_dtype(count)
    if staircase:  # an integer division of the integer count: exact
        return (_steps.shift(count, begin) // steps).astype(dtype), dtype
    return _steps.since(count, begin) / steps, dtype


def exponential_decay(
    init_value: float | Array,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | Array | None = None,
) -> Schedule:
    """Exponential decay: the value is multiplied by ``decay_rate`` every ``transition_steps``.

    .. math::
        p_k = \\frac{\\max(k - B, 0)}{T} \\ (\\text{floored if staircase}), \\qquad
        \\text{value}_k = I \\cdot \\text{decay\\_rate}^{\\,p_k}

    then clipped at ``end_value`` from below when ``decay_rate < 1`` (from above
    when it is > 1). The textbook form ``eta_0 exp(-t / r)`` is ``transition_steps=r``,
    ``decay_rate=exp(-1)``.

    Args:
      init_value: ``I``, the value up to ``transition_begin``.
      transition_steps: ``T`` > 0 (any number, as in Optax), the number of steps per factor of
        ``decay_rate``.
      decay_rate: > 0 (Optax returns a constant ``init_value`` for 0; here 0 is an
        error); below 1 decays, above 1 grows.
      transition_begin: ``B`` >= 0, the step at which the decay starts.
      staircase: decay in whole steps of ``transition_steps`` (a staircase)
        instead of continuously.
      end_value: a bound the value does not cross, or ``None``.

    Raises:
      ValueError: non-finite values, ``decay_rate <= 0``, ``transition_steps <= 0``
        or ``transition_begin < 0``.

    Examples:
      >>> from gradtx.schedules import exponential_decay
      >>> schedule = exponential_decay(1.0, transition_steps=10, decay_rate=0.5, staircase=True)
      >>> [round(float(schedule(k)), 6) for k in (9, 10, 25)]
      [1.0, 0.5, 0.25]
    """
    owner = "exponential_decay"
    _checks.finite(owner, "init_value", init_value)
    _checks.positive(owner, "decay_rate", decay_rate)
    _checks.finite(owner, "end_value", end_value, optional=True)
    steps = _steps.step(owner, "transition_steps", transition_steps, strict=True)
    begin = _steps.step(owner, "transition_begin", transition_begin)

    def schedule(count):
        exponent, dtype = _decay_exponent(count, begin, steps, staircase)
        value = init_value * jnp.asarray(decay_rate, dtype) ** exponent
        if end_value is None:
            return value
        floor, ceiling = jnp.maximum(value, end_value), jnp.minimum(value, end_value)
        return jnp.where(jnp.asarray(decay_rate) < 1, floor, ceiling)

    return schedule


def inverse_time_decay(
    init_value: float | Array,
    transition_steps: int,
    decay_rate: float = 1.0,
    power: float = 1.0,
    transition_begin: int = 0,
    staircase: bool = False,
) -> Schedule:
    """Inverse-time ("reciprocal") decay: ``I / (1 + decay_rate * p)^power``.

    .. math::
        p_k = \\frac{\\max(k - B, 0)}{T} \\ (\\text{floored if staircase}), \\qquad
        \\text{value}_k = \\frac{I}{(1 + \\text{decay\\_rate} \\cdot p_k)^{c}}

    The reciprocal schedule ``eta_0 (1 + t / r)^{-c}`` is
    ``transition_steps=r, power=c`` (``c`` ~ 1); Keras' ``InverseTimeDecay`` is
    ``power=1`` with its ``decay_steps`` as ``transition_steps``. With ``power=1``
    the rate falls as ``1/t``, the slowest decay for which SGD's step sizes
    still sum to infinity while their squares sum to a finite value.

    Args:
      init_value: ``I`` (``eta_0``), the value up to ``transition_begin``.
      transition_steps: ``T`` > 0 (``r``): the value halves (for
        ``decay_rate = power = 1``) after ``T`` steps.
      decay_rate: > 0, multiplies ``p``.
      power: ``c`` > 0.
      transition_begin: ``B`` >= 0, the step at which the decay starts.
      staircase: use whole multiples of ``transition_steps`` for ``p``.

    Raises:
      ValueError: non-finite ``init_value``, ``decay_rate <= 0``, ``power <= 0``,
        ``transition_steps <= 0`` or ``transition_begin < 0``.

    Examples:
      >>> from gradtx.schedules import inverse_time_decay
      >>> schedule = inverse_time_decay(1.0, transition_steps=100)
      >>> [round(float(schedule(k)), 6) for k in (0, 100, 300)]
      [1.0, 0.5, 0.25]
    """
    owner = "inverse_time_decay"
    _checks.finite(owner, "init_value", init_value)
    _checks.positive(owner, "decay_rate", decay_rate)
    _checks.positive(owner, "power", power)
    steps = _steps.step(owner, "transition_steps", transition_steps, strict=True)
    begin = _steps.step(owner, "transition_begin", transition_begin)

    def schedule(count):
        exponent, _ = _decay_exponent(count, begin, steps, staircase)
        return init_value / (1 + decay_rate * exponent) ** power

    return schedule


def cosine_decay_schedule(
    init_value: float | Array,
    decay_steps: int,
    alpha: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Cosine decay from ``init_value`` to ``alpha * init_value`` over ``decay_steps``.

    With ``T = decay_steps`` and ``p`` the exponent:

    .. math::
        w_k = \\left(\\tfrac12\\left(1 + \\cos\\frac{\\pi \\min(k, T)}{T}\\right)\\right)^{p},
        \\qquad \\text{value}_k = I\\,(w_k + (1 - w_k)\\,\\alpha)

    One cycle of SGDR (Loshchilov & Hutter 2017, eq. 5) with ``eta_max = I`` and
    ``eta_min = alpha I``; :func:`cosine_restarts_schedule` repeats it.

    Args:
      init_value: ``I``, the value at step 0.
      decay_steps: ``T`` > 0 (any number, as in Optax); from step ``T`` on the
        value is ``alpha * I``.
      alpha: the final value as a fraction of ``init_value`` (finite).
      exponent: ``p`` > 0, sharpens (> 1) or flattens (< 1) the curve.

    Raises:
      ValueError: non-finite values, ``exponent <= 0`` or ``decay_steps <= 0``.

    Examples:
      >>> from gradtx.schedules import cosine_decay_schedule
      >>> schedule = cosine_decay_schedule(1.0, decay_steps=100, alpha=0.1)
      >>> [round(float(schedule(k)), 6) for k in (0, 50, 100)]
      [1.0, 0.55, 0.1]

    References:
      Loshchilov & Hutter (2017), SGDR: Stochastic Gradient Descent with Warm
      Restarts, eq. 5.
    """
    owner = "cosine_decay_schedule"
    _checks.finite(owner, "init_value", init_value)
    _checks.finite(owner, "alpha", alpha)
    _checks.positive(owner, "exponent", exponent)
    steps = _steps.step(owner, "decay_steps", decay_steps, strict=True)

    def schedule(count):
        fraction = _steps.fraction(jnp.asarray(count), 0, steps)
        weight = (0.5 * (1 + jnp.cos(jnp.pi * fraction))) ** exponent
        return init_value * _steps.lerp(1.0, alpha, weight)

    return schedule
