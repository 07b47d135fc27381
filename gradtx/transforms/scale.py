"""Multiplying updates by a constant, a learning rate or a schedule; and gradients in the
backward pass (:func:`scale_gradient`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from gradtx import _checks, tree
from gradtx.base import Array, EmptyState, GradientTransformation, ScalarOrSchedule, Schedule

ScaleState = EmptyState
"""Optax's name of the state of :func:`scale`: it is stateless, so this is
:class:`~gradtx.EmptyState` (no fields, as Optax's)."""


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


# ---------------------------------------------------------------------- in the backward pass


@jax.custom_vjp
def _identity_scaled_backward(inputs, scale):
    del scale
    return inputs


def _forward(inputs, scale):
    return inputs, scale


def _backward(scale, cotangents):
    scaled = jax.tree.map(lambda c: tree.as_dtype(c * scale, c.dtype), cotangents)
    return scaled, None


_identity_scaled_backward.defvjp(_forward, _backward)


def scale_gradient(inputs: Any, scale: float | Array) -> Any:
    """Returns ``inputs`` unchanged, with the gradient flowing back through it times ``scale``.

    A function on values, not a transformation: inside a model or a loss, the
    forward pass sees ``inputs`` as they are and the backward pass multiplies the
    cotangent that flows into them by ``scale``:

    .. math::
        y = x, \\qquad \\frac{\\partial L}{\\partial x}
            \\leftarrow s \\, \\frac{\\partial L}{\\partial y}

    (``scale = 0`` is ``jax.lax.stop_gradient``, ``1`` is the identity, ``-1``
    flips the gradient as a gradient-reversal layer does). Used to slow down the
    learning of part of a model, e.g. a shared encoder under a second head. The
    cotangents keep their dtype. Same name, arguments and numbers as
    ``optax.scale_gradient``; no gradient flows to ``scale`` itself.

    Args:
      inputs: an array or a pytree of arrays.
      scale: ``s``, a finite real number (may be traced).

    Returns:
      ``inputs``, with the scaled backward pass.

    Raises:
      ValueError: a concrete ``scale`` that is not finite.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> jax.grad(lambda x: jnp.sum(gradtx.scale_gradient(x, 0.5) ** 2))(jnp.array([1.0, 2.0]))
      Array([1., 2.], dtype=float32)
    """
    _checks.finite("scale_gradient", "scale", scale)
    if not isinstance(scale, jax.core.Tracer):
        if float(scale) == 1.0:
            return inputs
        if float(scale) == 0.0:
            return jax.lax.stop_gradient(inputs)
    return _identity_scaled_backward(inputs, scale)
