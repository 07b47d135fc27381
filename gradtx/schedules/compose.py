"""Schedules made of schedules: joins, warmups, warm restarts (SGDR).

The schedule that starts at a boundary ``b`` sees the count ``k - b``, so every
piece is written as if it started at step 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import jax.numpy as jnp

from gradtx import _checks
from gradtx.base import Array, Schedule
from gradtx.schedules import _steps
from gradtx.schedules.decay import exponential_decay, linear_schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Runs ``schedules[i]`` from ``boundaries[i - 1]`` to ``boundaries[i]``.

    .. math::
        \\text{value}_k = f_i(k - b_i) \\quad \\text{for } b_i \\le k < b_{i+1},
        \\qquad b_0 = 0

    Each schedule after the first sees the steps since its boundary. A count
    before a boundary is never passed to the schedule of that boundary as a
    negative number (it gets 0, and its value is not used), so schedules that
    are undefined for negative counts are safe.

    Args:
      schedules: the schedules, in order (at least one).
      boundaries: ``len(schedules) - 1`` numbers >= 0 (integers, or any numbers
        as in Optax), strictly increasing.

    Raises:
      ValueError: a schedule that is not callable, a wrong number of boundaries,
        or boundaries that are not strictly increasing integers >= 0.

    Examples:
      >>> from gradtx.schedules import constant_schedule, join_schedules, linear_schedule
      >>> schedule = join_schedules(
      ...     [constant_schedule(1.0), linear_schedule(1.0, 0.0, 10)], boundaries=[5])
      >>> [round(float(schedule(k)), 6) for k in (4, 5, 10)]
      [1.0, 1.0, 0.5]
    """
    owner = "join_schedules"
    schedules = list(schedules)
    if not schedules or not all(callable(s) for s in schedules):
        raise ValueError(
            f"{owner}: schedules must be a non-empty list of callables, got {schedules!r}."
        )
    steps = [_steps.step(owner, "a boundary", b) for b in boundaries]
    if len(steps) != len(schedules) - 1:
        raise ValueError(
            f"{owner}: {len(schedules)} schedules need {len(schedules) - 1} boundaries, "
            f"got {len(steps)}: {steps}."
        )
    if any(b >= c for b, c in zip(steps, steps[1:], strict=False)):
        raise ValueError(f"{owner}: boundaries must be strictly increasing, got {steps}.")

    def schedule(count):
        count = jnp.asarray(count)
        out = schedules[0](count)
        for step, piece in zip(steps, schedules[1:], strict=True):
            later = piece(_steps.shift(count, step))
            out = jnp.where(_steps.reached(count, step), later, out)
        return out

    return schedule


def warmup_schedule(schedule: Schedule, warmup_steps: int, init_value: float = 0.0) -> Schedule:
    """A linear warmup from ``init_value`` to ``schedule(0)``, then ``schedule``.

    .. math::
        \\text{value}_k = \\begin{cases}
            (1 - k/W)\\, I + (k/W)\\, f(0) & k < W \\\\ f(k - W) & k \\ge W \\end{cases}

    Small steps at first keep an adaptive method's early, high-variance
    updates in check (Goyal et al. 2017's linear warmup; RAdam is an alternative).
    ``warmup_steps=0`` returns ``schedule`` itself.

    Args:
      schedule: ``f``, any schedule; it starts (at its own step 0) when the
        warmup ends.
      warmup_steps: ``W`` >= 0, the length of the warmup.
      init_value: ``I``, the value at step 0 (finite).

    Raises:
      ValueError: ``schedule`` not callable, ``warmup_steps < 0`` or a non-finite
        ``init_value``.

    Examples:
      >>> from gradtx.schedules import cosine_decay_schedule, warmup_schedule
      >>> schedule = warmup_schedule(cosine_decay_schedule(1.0, 100), warmup_steps=10)
      >>> [round(float(schedule(k)), 6) for k in (0, 5, 10, 60)]
      [0.0, 0.5, 1.0, 0.5]
    """
    owner = "warmup_schedule"
    if not callable(schedule):
        raise ValueError(f"{owner}: schedule must be callable, got {type(schedule).__name__}.")
    steps = _steps.step(owner, "warmup_steps", warmup_steps)
    _checks.finite(owner, "init_value", init_value)
    if steps == 0:
        return schedule

    def warmed_up(count):
        count = jnp.asarray(count)
        peak = schedule(jnp.zeros((), count.dtype))
        ramp = _steps.lerp(init_value, peak, 1 - _steps.fraction(count, 0, steps))
        return jnp.where(_steps.reached(count, steps), schedule(_steps.shift(count, steps)), ramp)

    return warmed_up


def warmup_constant_schedule(
    init_value: float | Array, peak_value: float | Array, warmup_steps: int
) -> Schedule:
    """A linear warmup from ``init_value`` to ``peak_value``, then constant.

    Args:
      init_value: the value at step 0.
      peak_value: the value from ``warmup_steps`` on.
      warmup_steps: >= 0. With 0 the schedule is the constant ``peak_value``
        (Optax's returns ``init_value`` forever then).

    Raises:
      ValueError: non-finite values or ``warmup_steps < 0``.

    Examples:
      >>> from gradtx.schedules import warmup_constant_schedule
      >>> schedule = warmup_constant_schedule(0.0, 1.0, warmup_steps=4)
      >>> [round(float(schedule(k)), 6) for k in (1, 4, 100)]
      [0.25, 1.0, 1.0]
    """
    owner = "warmup_constant_schedule"
    steps = _steps.step(owner, "warmup_steps", warmup_steps)
    _checks.finite(owner, "init_value", init_value)
    _checks.finite(owner, "peak_value", peak_value)
    return linear_schedule(init_value if steps else peak_value, peak_value, steps or 1)


def _after_warmup(init_value: Any, peak_value: Any, warmup_steps: int, decay: Schedule) -> Schedule:
    """``decay`` after a linear warmup from ``init_value`` to ``peak_value``."""
    if warmup_steps == 0:
        return decay
    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    return join_schedules([warmup, decay], [warmup_steps])


def warmup_cosine_decay_schedule(
    init_value: float | Array,
    peak_value: float | Array,
    warmup_steps: int,
    decay_steps: int,
    end_value: float | Array = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """A linear warmup to ``peak_value``, then a cosine decay to ``end_value``.

    The warmup takes ``warmup_steps``; the cosine (see
    :func:`cosine_decay_schedule`) takes the rest of
    ``decay_steps``, which *includes* the warmup (as in Optax), and the value is
    ``end_value`` from step ``decay_steps`` on:

    .. math::
        w_k = \\left(\\tfrac12\\left(1 + \\cos\\frac{\\pi \\min(k - W, D - W)}{D - W}
        \\right)\\right)^{p}, \\qquad \\text{value}_k = w_k P + (1 - w_k) E \\quad (k \\ge W)

    Args:
      init_value: the value at step 0.
      peak_value: ``P``, the value at the end of the warmup.
      warmup_steps: ``W`` >= 0.
      decay_steps: ``D`` > ``W``, the total length, warmup included.
      end_value: ``E``, the final value.
      exponent: ``p`` > 0 (see :func:`cosine_decay_schedule`).

    Raises:
      ValueError: non-finite values, ``exponent <= 0``, ``warmup_steps < 0`` or
        ``decay_steps <= warmup_steps``.

    Examples:
      >>> from gradtx.schedules import warmup_cosine_decay_schedule
      >>> schedule = warmup_cosine_decay_schedule(0.0, 1.0, 10, 110, end_value=0.1)
      >>> [round(float(schedule(k)), 6) for k in (5, 10, 60, 110)]
      [0.5, 1.0, 0.55, 0.1]
    """
    owner = "warmup_cosine_decay_schedule"
    for name, value in (("init_value", init_value), ("peak_value", peak_value)):
        _checks.finite(owner, name, value)
    _checks.finite(owner, "end_value", end_value)
    _checks.positive(owner, "exponent", exponent)
    warmup = _steps.step(owner, "warmup_steps", warmup_steps)
    total = _steps.step(owner, "decay_steps", decay_steps, warmup, strict=True)
    length = total - warmup

    def cosine(count):
        fraction = _steps.fraction(jnp.asarray(count), 0, length)
        weight = (0.5 * (1 + jnp.cos(jnp.pi * fraction))) ** exponent
        return _steps.lerp(peak_value, end_value, weight)

    return _after_warmup(init_value, peak_value, warmup, cosine)


def warmup_exponential_decay_schedule(
    init_value: float | Array,
    peak_value: float | Array,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | Array | None = None,
) -> Schedule:
    """A linear warmup to ``peak_value``, then :func:`exponential_decay`.

    The decay starts from ``peak_value`` at step ``warmup_steps`` and counts its
    steps from there (its ``transition_begin`` is relative to the warmup's end).

    Args:
      init_value: the value at step 0.
      peak_value: the value at the end of the warmup.
      warmup_steps: >= 0.
      transition_steps, decay_rate, transition_begin, staircase, end_value: see
        :func:`exponential_decay`.

    Raises:
      ValueError: as :func:`exponential_decay`, or
        ``warmup_steps < 0``.

    Examples:
      >>> from gradtx.schedules import warmup_exponential_decay_schedule
      >>> schedule = warmup_exponential_decay_schedule(0.0, 1.0, 10, 10, 0.5)
      >>> [round(float(schedule(k)), 6) for k in (5, 10, 20)]
      [0.5, 1.0, 0.5]
    """
    owner = "warmup_exponential_decay_schedule"
    warmup = _steps.step(owner, "warmup_steps", warmup_steps)
    _checks.finite(owner, "init_value", init_value)
    decay = exponential_decay(
        peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value
    )
    return _after_warmup(init_value, peak_value, warmup, decay)


def sgdr_schedule(cosine_kwargs: Iterable[dict[str, Any]]) -> Schedule:
    """SGD with warm restarts, one cycle per dict (Optax's form).

    Each dict holds the arguments of one
    :func:`warmup_cosine_decay_schedule` cycle; a cycle starts
    when the previous one's ``decay_steps`` are over. For the paper's
    parametrisation (a first period that grows by ``T_mult`` at each restart,
    without end) see :func:`cosine_restarts_schedule`.

    Args:
      cosine_kwargs: the cycles, at least one; each a dict of
        ``warmup_cosine_decay_schedule`` arguments.

    Raises:
      ValueError: no cycle, or a cycle whose arguments are invalid.

    Examples:
      >>> from gradtx.schedules import sgdr_schedule
      >>> cycle = dict(init_value=1.0, peak_value=1.0, warmup_steps=0, decay_steps=10)
      >>> schedule = sgdr_schedule([cycle, cycle])
      >>> [round(float(schedule(k)), 6) for k in (5, 10, 15)]
      [0.5, 1.0, 0.5]

    References:
      Loshchilov & Hutter (2017), SGDR: Stochastic Gradient Descent with Warm
      Restarts.
    """
    cycles = [dict(kwargs) for kwargs in cosine_kwargs]
    if not cycles:
        raise ValueError("sgdr_schedule: cosine_kwargs must hold at least one cycle.")
    schedules = [warmup_cosine_decay_schedule(**kwargs) for kwargs in cycles]
    lengths = [_steps.step("sgdr_schedule", "decay_steps", c["decay_steps"]) for c in cycles]
    ends = list(itertools.accumulate(lengths))
    return join_schedules(schedules, ends[:-1])


_MAX_START = 2**63 - 1  # cycle starts beyond any integer count a schedule can see


def cosine_restarts_schedule(
    init_value: float | Array,
    decay_steps: int,
    t_mul: int = 1,
    m_mul: float = 1.0,
    alpha: float = 0.0,
) -> Schedule:
    """SGDR: cosine annealing restarted forever, periods growing by ``t_mul``.

    Loshchilov & Hutter (2017, eq. 5), with ``eta_max = init_value``,
    ``eta_min = alpha * init_value``, ``T_0 = decay_steps``, ``T_mult = t_mul``.
    Cycle ``i`` lasts ``T_i = T_0 T_mult^i`` steps; within it, after
    ``T_cur`` steps,

    .. math::
        w = m^{i} \\cdot \\tfrac12\\left(1 + \\cos\\frac{\\pi T_{cur}}{T_i}\\right),
        \\qquad \\text{value} = I\\,(w + (1 - w)\\,\\alpha)

    where ``m = m_mul`` lowers each restart's peak, keeping the floor
    ``alpha * I`` (TensorFlow's ``CosineDecayRestarts`` convention). The cycle
    of a count is found by exact integer arithmetic, so restarts land on the
    right step at any count.

    Args:
      init_value: ``eta_max``, the value at step 0.
      decay_steps: ``T_0`` >= 1, the length of the first cycle.
      t_mul: ``T_mult``, an integer >= 1 (the paper uses 1 and 2; PyTorch also
        requires an integer).
      m_mul: >= 0, the factor on the amplitude at each restart (1: every cycle
        starts at ``init_value``).
      alpha: the floor ``eta_min`` as a fraction of ``init_value`` (finite).

    Raises:
      ValueError: non-finite values, ``decay_steps < 1``, ``t_mul < 1`` or not an
        integer, or a negative ``m_mul``.

    Examples:
      >>> from gradtx.schedules import cosine_restarts_schedule
      >>> schedule = cosine_restarts_schedule(1.0, decay_steps=10, t_mul=2)
      >>> [round(float(schedule(k)), 6) for k in (5, 10, 20, 30)]
      [0.5, 1.0, 0.5, 1.0]

    References:
      Loshchilov & Hutter (2017), SGDR: Stochastic Gradient Descent with Warm
      Restarts, eq. 5.
    """
    owner = "cosine_restarts_schedule"
    _checks.finite(owner, "init_value", init_value)
    _checks.finite(owner, "alpha", alpha)
    _checks.non_negative(owner, "m_mul", m_mul)
    period = _steps.integer(owner, "decay_steps", decay_steps, 1)
    growth = _steps.integer(owner, "t_mul", t_mul, 1)
    starts, lengths = [0], [period]  # a few dozen cycles cover every int64 count
    while growth > 1 and starts[-1] + lengths[-1] <= _MAX_START:
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * growth)

    def schedule(count):
        count = _steps.shift(jnp.asarray(count), 0)  # a negative count is step 0
        dtype = _steps.float_dtype(count)
        if growth == 1:
            cycle = count // period
            elapsed = count - cycle * period
            length = jnp.asarray(period, dtype)
        else:
            top = int(jnp.iinfo(count.dtype).max) if _steps.is_integer(count) else _MAX_START
            table = jnp.asarray([s for s in starts if s <= top], count.dtype)
            cycle = jnp.searchsorted(table, count, side="right") - 1
            elapsed = count - table[cycle]
            length = jnp.asarray(lengths[: table.shape[0]], dtype)[cycle]
        fraction = jnp.minimum(elapsed.astype(dtype) / length, 1)
        weight = m_mul ** cycle.astype(dtype) * 0.5 * (1 + jnp.cos(jnp.pi * fraction))
        return init_value * _steps.lerp(1.0, alpha, weight)

    return schedule
