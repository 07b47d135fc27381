"""Step counts for schedules: exact integer arithmetic first, floats last.

A schedule receives the optimizer's step count, an int32 array (or a Python int,
or a float count from user code). Its lengths and boundaries are integers, or,
as Optax accepts them, any number (``transition_steps=2.5``): :func:`step`
returns an integral one as an ``int`` and keeps the integer arithmetic below;
a fractional one stays a ``float`` (a boundary ``b`` is reached by an integer
count at ``ceil(b)``, and ``count - b`` is ``count - ceil(b)`` plus the
fraction, so the integer part stays exact). Two rules keep every schedule exact:

* Differences and comparisons with the boundaries the user gave (``count -
  transition_begin``, ``count >= boundary``) are done on the *integer* count, so
  they are exact up to the int32 limit; only the bounded result is converted.
* The conversion goes to the default float of the session (float32, or float64
  under ``jax.enable_x64``), never to the float32 that ``int32 / int`` gives
  in JAX whatever the x64 flag, so float64 sessions get float64 schedules.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import Array


def integer(owner: str, name: str, value: Any, minimum: int = 0) -> int:
    """Returns ``value`` as a Python int, or raises ValueError unless it is one >= minimum.

    Integral floats (``100.0``) are accepted; ``2.5``, booleans, NaN and tracers
    are not: a boundary has to be known when the schedule is built.
    """
    number = None
    if not isinstance(value, (bool, np.bool_)) and not isinstance(value, jax.core.Tracer):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            array = None
        if array is not None and array.shape == () and np.issubdtype(array.dtype, np.number):
            if np.issubdtype(array.dtype, np.integer):
                number = int(array)
            elif np.isrealobj(array) and np.isfinite(array) and float(array).is_integer():
                number = int(array)
    if number is None or number < minimum:
        shown = (
            value.item()
            if isinstance(value, (np.ndarray, jax.Array)) and value.size == 1
            else value
        )
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {shown!r}.")
    return number


def step(owner: str, name: str, value: Any, minimum: float = 0, *, strict: bool = False) -> Any:
    """A length or a boundary: an ``int`` when integral, else a ``float``, >= ``minimum``.

    ``strict`` asks for ``> minimum`` (a length: ``> 0``). Booleans, NaN,
    infinities and tracers are refused: a boundary has to be known when the
    schedule is built.
    """
    number = None
    if not isinstance(value, (bool, np.bool_)) and not isinstance(value, jax.core.Tracer):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            array = None
        if array is not None and array.shape == () and np.issubdtype(array.dtype, np.number):
            if np.issubdtype(array.dtype, np.integer):
                number = int(array)
            elif np.isrealobj(array) and np.isfinite(array):
                number = int(array) if float(array).is_integer() else float(array)
    if number is None or number < minimum or (strict and number == minimum):
        shown = (
            value.item()
            if isinstance(value, (np.ndarray, jax.Array)) and value.size == 1
            else value
        )
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"{owner}: {name} must be a number {bound}, got {shown!r}.")
    return number


def boundaries(owner: str, name: str, mapping: Any) -> list[tuple[Any, Any]]:
    """The ``{step: number}`` items of ``mapping`` sorted by step (None: no items)."""
    if mapping is None:
        return []
    if not hasattr(mapping, "items"):
        raise ValueError(
            f"{owner}: {name} must be a dict {{step: number}}, got {type(mapping).__name__}."
        )
    items = [(step(owner, f"a step of {name}", key), number) for key, number in mapping.items()]
    steps = [step for step, _ in items]
    if len(set(steps)) != len(steps):
        raise ValueError(f"{owner}: {name} has the same step twice: {sorted(steps)}.")
    return sorted(items, key=lambda item: item[0])


def float_dtype(count: Array) -> jnp.dtype:
    """The dtype a schedule computes in: the session's default float, or wider."""
    default = jnp.asarray(0.0).dtype  # float32, or float64 under enable_x64
    if jnp.issubdtype(count.dtype, jnp.floating):
        return jnp.promote_types(count.dtype, default)
    return default


def is_integer(count: Array) -> bool:
    return jnp.issubdtype(count.dtype, jnp.integer)


def _beyond(count: Array, step: int) -> bool:
    """True when no count of this integer dtype can reach ``step``."""
    return is_integer(count) and step > int(jnp.iinfo(count.dtype).max)


def reached(count: Array, step: Any) -> Array:
    """``count >= step``, element-wise, exact for integer counts."""
    if isinstance(step, float):
        if is_integer(count):
            return reached(count, math.ceil(step))
        return count >= step
    if _beyond(count, step):
        return jnp.zeros(count.shape, bool)
    return count >= step


def shift(count: Array, step: Any) -> Array:
    """``max(count - step, 0)`` in the count's own dtype (exact for integers).

    A fractional ``step`` gives a float: for an integer count, the exact integer
    ``max(count - ceil(step), 0)`` plus ``ceil(step) - step`` once reached.
    """
    if isinstance(step, float):
        if not is_integer(count):
            return jnp.maximum(count - step, 0)
        whole = math.ceil(step)
        elapsed = shift(count, whole).astype(float_dtype(count))
        return jnp.where(reached(count, whole), elapsed + (whole - step), 0)
    if _beyond(count, step):
        return jnp.zeros_like(count)
    if is_integer(count):
        return jnp.maximum(count, step) - step  # never below the dtype's minimum
    return jnp.maximum(count - step, 0)


def since(count: Array, begin: Any = 0, length: Any | None = None) -> Array:
    """``clip(count - begin, 0, length)`` as a float of :func:`float_dtype`.

    The clipping happens on the integer count, so a huge count still gives
    exactly ``length``.
    """
    elapsed = shift(count, begin)
    if isinstance(length, float):
        return jnp.minimum(elapsed.astype(float_dtype(count)), length)
    if length is not None:
        if is_integer(count):
            length = min(length, int(jnp.iinfo(count.dtype).max))
        elapsed = jnp.minimum(elapsed, length)
    return elapsed.astype(float_dtype(count))


def fraction(count: Array, begin: Any, length: Any) -> Array:
    """How far ``count`` is through ``[begin, begin + length]``, in [0, 1].

    Clipped after the division too: under ``jit`` XLA turns ``x / length`` into
    ``x * (1 / length)``, which can overshoot 1 by an ulp at ``x = length``
    (and ``(1 - 1.0000001) ** 0.5`` is NaN).
    """
    # A Python float divisor: an int past int32 (``decay_steps=10**10``) would not fit
    # the weakly typed integer JAX makes of it.
    return jnp.minimum(since(count, begin, length) / float(length), 1)


def lerp(start: Any, end: Any, weight: Array) -> Array:
    """``weight * start + (1 - weight) * end``: exactly ``start`` at 1, ``end`` at 0."""
    return weight * start + (1 - weight) * end
