"""Multiplying updates by a constant, a learning rate or a schedule."""

from __future__ import annotations

from typing import NamedTuple

import jax

from gradtx import _checks, tree
from gradtx.base import Array, EmptyState, GradientTransformation, ScalarOrSchedule, Schedule


def _times(updates, factor):
    return jax.tree.map(lambda u: tree.as_dtype(u * factor, u.dtype), updates)


def scale(step_size: float | Array) -> GradientTransformation:
    """Multiplies every update by a constant: ``u <- step_size * u``.

    Args:
      step_size: a finite number (it may be negative or a tracer).

    Raises:
      ValueError: ``step_size`` is NaN or infinite.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale(-0.5)
      >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
      Array([-0.5, -0.5], dtype=float32)
    """
    _checks.finite("scale", "step_size", step_size)

    def init_fn(params):
        tree.check_inexact(params)
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return _times(updates, step_size), state

    return GradientTransformation(init_fn, update_fn)


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`."""

    count: Array  # int32 scalar: steps taken so far (k in Goodfellow Alg. 8.1).


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiplies updates by ``step_size_fn(k)``, ``k`` the 0-based step count.

    Args:
      step_size_fn: a function from the int32 step count to a scalar.

    Raises:
      TypeError: ``step_size_fn`` is not callable.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_schedule(lambda k: 1.0 / (1 + k))
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.ones(2), state)
      >>> u, state = tx.update(jnp.ones(2), state)
      >>> u
      Array([0.5, 0.5], dtype=float32)
    """
    if not callable(step_size_fn):
        raise TypeError(
            f"scale_by_schedule: step_size_fn must be callable, got {type(step_size_fn).__name__}."
        )

    def init_fn(params):
        tree.check_inexact(params)
        return ScaleByScheduleState(count=tree.zero_count())

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        factor = step_size_fn(state.count)
        return _times(updates, factor), ScaleByScheduleState(tree.safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    """The step: ``u <- -epsilon_k * u`` (Goodfellow et al. 2016, Alg. 8.1).

    Args:
      learning_rate: ``epsilon``, a number or a schedule ``k -> epsilon_k``.
      flip_sign: negate, so that the chain descends (the default). ``False``
        scales without negating (for ascent, or when a later block flips).

    Raises:
      ValueError: ``learning_rate`` is NaN or infinite.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_learning_rate(0.1)
      >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
      Array([-0.1, -0.1], dtype=float32)
    """
    _checks.learning_rate("scale_by_learning_rate", learning_rate)
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)
