"""Schedules defined by boundaries: piecewise constant, piecewise interpolated, one-cycle.

A boundary ``b`` takes effect *at* step ``b``: the new piece is used from count
``b`` on (as Optax). Boundaries are given as ``{step: number}`` dicts and are
sorted, so their order in the dict does not matter.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from gradtx import _checks
from gradtx.base import Array, Schedule
from gradtx.schedules import _steps


def _start(init_value: Any, count: Array) -> Array:
    return init_value * jnp.ones(count.shape, _steps.float_dtype(count))


def piecewise_constant_schedule(
    init_value: float | Array, boundaries_and_scales: dict[int, float] | None = None
) -> Schedule:
    """A constant that is multiplied by a scale at each boundary.

    .. math::
        \\text{value}_k = I \\prod_{b_i \\le k} s_i

    Args:
      init_value: ``I``, the value before the first boundary.
      boundaries_and_scales: ``{b_i: s_i}``: from step ``b_i`` on the value is
        multiplied by ``s_i`` (finite, >= 0). ``None`` or ``{}``: constant.

    Raises:
      ValueError: a step that is not a number >= 0, or a negative or
        non-finite scale.

    Examples:
      >>> from gradtx.schedules import piecewise_constant_schedule
      >>> schedule = piecewise_constant_schedule(1.0, {100: 0.1, 200: 0.5})
      >>> [round(float(schedule(k)), 6) for k in (99, 100, 250)]
      [1.0, 0.1, 0.05]
    """
    owner = "piecewise_constant_schedule"
    _checks.finite(owner, "init_value", init_value)
    items = _steps.boundaries(owner, "boundaries_and_scales", boundaries_and_scales)
    for step, factor in items:
        _checks.non_negative(owner, f"the scale at step {step}", factor)

    def schedule(count):
        count = jnp.asarray(count)
        value = _start(init_value, count)
        for step, factor in items:
            value = jnp.where(_steps.reached(count, step), value * factor, value)
        return value

    return schedule


def piecewise_constant_values(
    init_value: float | Array, boundaries_and_values: dict[int, float] | None = None
) -> Schedule:
    """A constant that jumps to a given value at each boundary.

    The classic step schedule, a pre-determined ``eta`` for each stretch of
    steps (an epoch, say), written with values rather than the scales of
    :func:`piecewise_constant_schedule`.

    .. math::
        \\text{value}_k = v_j, \\quad j = \\max\\{i : b_i \\le k\\}
        \\qquad (\\text{or } I \\text{ before } b_1)

    Args:
      init_value: ``I``, the value before the first boundary.
      boundaries_and_values: ``{b_i: v_i}``: from step ``b_i`` on (until the next
        boundary) the value is ``v_i`` (finite). ``None`` or ``{}``: constant.

    Raises:
      ValueError: a step that is not a number >= 0, or a non-finite value.

    Examples:
      >>> from gradtx.schedules import piecewise_constant_values
      >>> schedule = piecewise_constant_values(0.1, {10: 0.05, 20: 0.01})
      >>> [round(float(schedule(k)), 6) for k in (9, 10, 1000)]
      [0.1, 0.05, 0.01]
    """
    owner = "piecewise_constant_values"
    _checks.finite(owner, "init_value", init_value)
    items = _steps.boundaries(owner, "boundaries_and_values", boundaries_and_values)
    for step, value in items:
        _checks.finite(owner, f"the value at step {step}", value)

    def schedule(count):
        count = jnp.asarray(count)
        out = _start(init_value, count)
        for step, value in items:
            out = jnp.where(_steps.reached(count, step), value, out)
        return out

    return schedule


_INTERPOLATIONS = ("linear", "cosine")


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: float | Array,
    boundaries_and_scales: dict[int, float] | None = None,
) -> Schedule:
    """Interpolates between the values that the scales of each boundary produce.

    The values at the boundaries are ``v_0 = I`` at step 0 and ``v_i = v_{i-1}
    s_i`` at step ``b_i`` (the running product of the scales, as in
    :func:`piecewise_constant_schedule`); between two boundaries the value moves
    from one to the next, linearly or along a half cosine, and after the last
    boundary it stays at the last value.

    Args:
      interpolate_type: ``"linear"`` or ``"cosine"``.
      init_value: ``I``, the value at step 0.
      boundaries_and_scales: ``{b_i: s_i}`` with scales finite and >= 0.

    Raises:
      ValueError: an unknown ``interpolate_type``, a step that is not an integer
        >= 0, or a negative or non-finite scale.

    Examples:
      >>> from gradtx.schedules import piecewise_interpolate_schedule
      >>> schedule = piecewise_interpolate_schedule("linear", 1.0, {10: 0.5, 20: 0.0})
      >>> [round(float(schedule(k)), 6) for k in (5, 10, 15, 30)]
      [0.75, 0.5, 0.25, 0.0]
    """
    owner = "piecewise_interpolate_schedule"
    if interpolate_type not in _INTERPOLATIONS:
        raise ValueError(
            f"{owner}: interpolate_type must be 'linear' or 'cosine', got {interpolate_type!r}."
        )
    _checks.finite(owner, "init_value", init_value)
    items = _steps.boundaries(owner, "boundaries_and_scales", boundaries_and_scales)
    steps, values = [0], [init_value]
    for step, factor in items:
        _checks.non_negative(owner, f"the scale at step {step}", factor)
        steps.append(step)
        values.append(values[-1] * factor)

    def schedule(count):
        count = jnp.asarray(count)
        out = _start(values[-1], count)
        # From the last piece to the first, so that each count ends up with the
        # piece [b_i, b_{i+1}) that holds it; empty pieces (b_i = b_{i+1}) are skipped.
        for i in reversed(range(len(steps) - 1)):
            begin, end = steps[i], steps[i + 1]
            if end == begin:
                continue
            fraction = _steps.fraction(count, begin, end - begin)
            if interpolate_type == "linear":
                weight = 1 - fraction
            else:
                weight = 0.5 * (1 + jnp.cos(jnp.pi * fraction))
            piece = _steps.lerp(values[i], values[i + 1], weight)
            out = jnp.where(_steps.reached(count, end), out, piece)
        return out

    return schedule


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: float | Array,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """Smith's one-cycle policy with linear pieces.

    Up from ``peak_value / div_factor`` to ``peak_value`` over the first
    ``pct_start`` of the steps, back down to ``peak_value / div_factor`` by
    ``pct_final``, then down to ``peak_value / (div_factor * final_div_factor)``
    at ``transition_steps`` (and constant after). The boundaries are
    ``int(pct * transition_steps)``, as in Optax.

    Args:
      transition_steps: the length of the cycle, > 0 (any number, as in Optax).
      peak_value: the highest value (finite).
      pct_start: the fraction of the cycle spent rising, in [0, 1).
      pct_final: the fraction of the cycle at which the descent to the initial
        value ends, in [0, 1); the boundaries must increase strictly.
      div_factor: the initial value is ``peak_value / div_factor`` (> 0).
      final_div_factor: the final value is ``initial / final_div_factor`` (> 0).

    Raises:
      ValueError: invalid values, or percentages that do not give increasing
        boundaries ``int(pct_start T) < int(pct_final T) < T``.

    Examples:
      >>> from gradtx.schedules import linear_onecycle_schedule
      >>> schedule = linear_onecycle_schedule(100, peak_value=1.0)
      >>> [round(float(schedule(k)), 6) for k in (0, 30, 85)]
      [0.04, 1.0, 0.04]

    References:
      Smith & Topin (2017), Super-Convergence: Very Fast Training of Neural
      Networks Using Large Learning Rates.
    """
    owner = "linear_onecycle_schedule"
    steps = _steps.step(owner, "transition_steps", transition_steps, strict=True)
    _checks.finite(owner, "peak_value", peak_value)
    _checks.in_range(owner, "pct_start", pct_start, 0.0, 1.0)
    _checks.in_range(owner, "pct_final", pct_final, 0.0, 1.0)
    _checks.positive(owner, "div_factor", div_factor)
    _checks.positive(owner, "final_div_factor", final_div_factor)
    up, down = int(pct_start * steps), int(pct_final * steps)
    if not up < down < steps:
        raise ValueError(
            f"{owner}: pct_start and pct_final must give increasing boundaries "
            f"int(pct_start * transition_steps) < int(pct_final * transition_steps) < "
            f"transition_steps, got {up}, {down}, {steps}."
        )
    scales = {up: div_factor, down: 1 / div_factor, steps: 1 / final_div_factor}
    return piecewise_interpolate_schedule("linear", peak_value / div_factor, scales)


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: float | Array,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """Smith's one-cycle policy with half-cosine pieces.

    Up from ``peak_value / div_factor`` to ``peak_value`` over the first
    ``pct_start`` of the steps, then down to ``peak_value / (div_factor *
    final_div_factor)`` at ``transition_steps``, each along a half cosine.

    Args:
      transition_steps: the length of the cycle, > 0 (any number, as in Optax).
      peak_value: the highest value (finite).
      pct_start: the fraction of the cycle spent rising, in [0, 1), with
        ``int(pct_start * transition_steps) < transition_steps``.
      div_factor: the initial value is ``peak_value / div_factor`` (> 0).
      final_div_factor: the final value is ``initial / final_div_factor`` (> 0).

    Raises:
      ValueError: invalid values.

    Examples:
      >>> from gradtx.schedules import cosine_onecycle_schedule
      >>> schedule = cosine_onecycle_schedule(100, peak_value=1.0)
      >>> [round(float(schedule(k)), 6) for k in (0, 30, 100)]
      [0.04, 1.0, 4e-06]

    References:
      Smith & Topin (2017), Super-Convergence: Very Fast Training of Neural
      Networks Using Large Learning Rates.
    """
    owner = "cosine_onecycle_schedule"
    steps = _steps.step(owner, "transition_steps", transition_steps, strict=True)
    _checks.finite(owner, "peak_value", peak_value)
    _checks.in_range(owner, "pct_start", pct_start, 0.0, 1.0)
    _checks.positive(owner, "div_factor", div_factor)
    _checks.positive(owner, "final_div_factor", final_div_factor)
    # Both boundaries rounded down, as Optax's (its linear one keeps the last as given).
    last = int(steps)
    if not int(pct_start * steps) < last:
        raise ValueError(
            f"{owner}: pct_start must give int(pct_start * transition_steps) < "
            f"int(transition_steps), got {int(pct_start * steps)}, {last}."
        )
    scales = {int(pct_start * steps): div_factor, last: 1 / (div_factor * final_div_factor)}
    return piecewise_interpolate_schedule("cosine", peak_value / div_factor, scales)
