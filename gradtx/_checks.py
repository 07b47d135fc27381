"""Hyperparameter validation that runs at construction, never on tracers.

Every check is skipped for values that are not concrete: a schedule (a callable),
a JAX tracer (a hyperparameter under ``jit``, ``vmap`` or ``grad``), or anything
that cannot be read as numbers. Those are the caller's responsibility, so that
``inject_hyperparams`` and ``jax.vmap`` over learning rates keep working.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _concrete(value: Any) -> np.ndarray | None:
    """Returns ``value`` as a float numpy array, or None when it is not concrete."""
    if value is None or callable(value) or isinstance(value, jax.core.Tracer):
        return None
    try:
        array = np.asarray(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        return None
    if np.iscomplexobj(array):
        return None
    return array.astype(np.float64)


def _fail(owner: str, name: str, value: Any, expected: str) -> None:
    # A one-element array (numpy or JAX) is shown as its number, not its repr.
    is_array = isinstance(value, (np.ndarray, jax.Array))
    shown = value.item() if is_array and value.size == 1 else value
    raise ValueError(f"{owner}: {name} must be {expected}, got {shown!r}.")


def finite(owner: str, name: str, value: Any) -> None:
    """Raises ValueError when a concrete ``value`` holds NaN or infinity."""
    array = _concrete(value)
    if array is not None and not np.all(np.isfinite(array)):
        _fail(owner, name, value, "finite")


def non_negative(owner: str, name: str, value: Any) -> None:
    """Raises ValueError unless a concrete ``value`` is finite and >= 0."""
    array = _concrete(value)
    if array is not None and not (np.all(np.isfinite(array)) and np.all(array >= 0)):
        _fail(owner, name, value, "a finite number >= 0")


def positive(owner: str, name: str, value: Any) -> None:
    """Raises ValueError unless a concrete ``value`` is finite and > 0."""
    array = _concrete(value)
    if array is not None and not (np.all(np.isfinite(array)) and np.all(array > 0)):
        _fail(owner, name, value, "a finite number > 0")


def in_range(
    owner: str,
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    closed_high: bool = False,
) -> None:
    """Raises ValueError unless a concrete ``value`` lies in [low, high) (or [low, high])."""
    array = _concrete(value)
    if array is None:
        return
    upper_ok = np.all(array <= high) if closed_high else np.all(array < high)
    if not (np.all(np.isfinite(array)) and np.all(array >= low) and upper_ok):
        bracket = "]" if closed_high else ")"
        _fail(owner, name, value, f"in [{low:g}, {high:g}{bracket}")


def learning_rate(owner: str, value: Any) -> None:
    """A learning rate: a schedule, or a finite number (its sign is the user's call)."""
    if value is None:
        _fail(owner, "learning_rate", value, "a finite number or a schedule")
    finite(owner, "learning_rate", value)


def dtype_or_none(owner: str, name: str, value: Any) -> None:
    """Raises ValueError unless ``value`` is None or names a floating dtype."""
    if value is None:
        return
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
        _fail(owner, name, value, "None or a floating-point dtype")


def positive_int(owner: str, name: str, value: Any) -> None:
    """Raises ValueError unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        _fail(owner, name, value, "an integer >= 1")


def axis_name(owner: str, value: Any) -> None:
    """Raises ValueError unless ``value`` is None, a mesh axis name (a string) or a
    non-empty tuple of them (whether the axis exists is known only inside ``shard_map``)."""
    names = (value,) if isinstance(value, str) else value
    ok = value is None or (
        isinstance(names, tuple) and names and all(isinstance(n, str) for n in names)
    )
    if not ok:
        _fail(owner, "axis_name", value, "None, a mesh axis name or a tuple of them")


def is_zero(value: Any) -> bool:
    """True only for a concrete value equal to zero (a tracer or schedule is not)."""
    array = _concrete(value)
    return array is not None and bool(np.all(array == 0))
