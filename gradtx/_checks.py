"""Hyperparameter validation that runs at construction, never on traced values.

Two kinds of check, in that order:

* **Type and shape** (:func:`scalar`): a float hyperparameter must be a real
  scalar (a Python ``int`` or ``float``, a NumPy or JAX scalar, a 0-d array),
  or, where the argument accepts one, a schedule (a callable ``count -> value``).
  A string, a complex number, a boolean, ``None`` or an array of another shape
  raises ``TypeError`` (``ValueError`` for a shape), naming the owner, the
  argument, what was given and what is allowed. A JAX tracer (a hyperparameter
  under ``jit``, ``vmap`` or ``grad``) is checked too, from its static shape
  and dtype only, which costs nothing at run time.
* **Range** (:func:`finite`, :func:`positive`, :func:`in_range`, ...): every
  range check does the type check first, then compares concrete values. A
  tracer or a schedule has no value yet: its range is the caller's
  responsibility, so that ``inject_hyperparams`` and ``jax.vmap`` over learning
  rates keep working.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_REAL = "a real number (a Python, NumPy or JAX scalar, or a 0-d array)"


class MissingArgumentError(TypeError, ValueError):
    """A required extra argument of ``update`` (``value``, ``value_fn``) was not given.

    A ``TypeError``, as Python raises for a missing argument and Optax's
    ``update`` (which takes it as a required keyword) does; also a
    ``ValueError``, the type gradtx raised for it before, so that both
    ``except`` clauses keep catching it.
    """


def _describe(value: Any) -> str:
    """What was given, for an error message: the value and its type, or an array's shape."""
    if isinstance(value, jax.core.Tracer):
        return f"a traced {value.dtype} array of shape {tuple(value.shape)}"
    shape = getattr(value, "shape", None)
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        if shape != ():
            return f"a {value.dtype} array of shape {tuple(shape)}"
        return f"{value.item()!r} ({value.dtype})"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def scalar(
    owner: str, name: str, value: Any, *, schedule: bool = False, optional: bool = False
) -> np.ndarray | None:
    """Checks that ``value`` is a real scalar hyperparameter; returns it concrete.

    Args:
      owner: the public function that takes the argument (starts the message).
      name: the argument's name.
      value: what the user passed.
      schedule: a callable (a schedule ``count -> value``) is allowed.
      optional: ``None`` is allowed (the argument's "off" value).

    Returns:
      The value as a 0-d float64 NumPy array, or ``None`` for a schedule, a tracer
      or an allowed ``None`` (nothing concrete to compare yet).

    Raises:
      TypeError: ``value`` is not a real number (a string, a complex number, a
        boolean, ``None``, an object), or is a callable where no schedule is
        allowed.
      ValueError: ``value`` is an array of a shape other than ``()``.
    """
    allowed = _REAL + (" or a schedule" if schedule else "") + (" or None" if optional else "")
    if value is None:
        if optional:
            return None
        raise TypeError(f"{owner}: {name} must be {allowed}, got None.")
    if callable(value) and not isinstance(value, (np.ndarray, np.generic, jax.Array)):
        if schedule:
            return None
        raise TypeError(
            f"{owner}: {name} must be {allowed} (this argument takes no schedule), "
            f"got {_describe(value)}."
        )
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{owner}: {name} must be {allowed}, got {_describe(value)}.")
    if isinstance(value, (int, float)):  # Python numbers (np.float64 included)
        return np.asarray(value, np.float64)
    dtype = getattr(value, "dtype", None)
    if dtype is None or not isinstance(value, (np.ndarray, np.generic, jax.Array)):
        raise TypeError(f"{owner}: {name} must be {allowed}, got {_describe(value)}.")
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{owner}: {name} must be {allowed}, got {_describe(value)}.")
    if np.shape(value) != ():
        raise ValueError(f"{owner}: {name} must be {allowed}, got {_describe(value)}.")
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return np.asarray(value, np.float64)
    except jax.errors.ConcretizationTypeError:  # an abstract value that is not a Tracer
        return None


def _concrete(value: Any) -> np.ndarray | None:
    """Returns ``value`` as a float numpy array, or None when it is not concrete.

    No type check: call :func:`scalar` (or a range check) on the value first.
    """
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


def finite(
    owner: str, name: str, value: Any, *, schedule: bool = False, optional: bool = False
) -> None:
    """Raises unless ``value`` is a real scalar (see :func:`scalar`), finite when concrete."""
    array = scalar(owner, name, value, schedule=schedule, optional=optional)
    if array is not None and not np.all(np.isfinite(array)):
        _fail(owner, name, value, "finite")


def non_negative(
    owner: str, name: str, value: Any, *, schedule: bool = False, optional: bool = False
) -> None:
    """Raises unless ``value`` is a real scalar, finite and >= 0 when concrete."""
    array = scalar(owner, name, value, schedule=schedule, optional=optional)
    if array is not None and not (np.all(np.isfinite(array)) and np.all(array >= 0)):
        _fail(owner, name, value, "a finite number >= 0")


def positive(
    owner: str, name: str, value: Any, *, schedule: bool = False, optional: bool = False
) -> None:
    """Raises unless ``value`` is a real scalar, finite and > 0 when concrete."""
    array = scalar(owner, name, value, schedule=schedule, optional=optional)
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
    schedule: bool = False,
    optional: bool = False,
) -> None:
    """Raises unless ``value`` is a real scalar in [low, high) (or [low, high]) when concrete."""
    array = scalar(owner, name, value, schedule=schedule, optional=optional)
    if array is None:
        return
    upper_ok = np.all(array <= high) if closed_high else np.all(array < high)
    if not (np.all(np.isfinite(array)) and np.all(array >= low) and upper_ok):
        bracket = "]" if closed_high else ")"
        _fail(owner, name, value, f"in [{low:g}, {high:g}{bracket}")


def learning_rate(owner: str, value: Any) -> None:
    """A learning rate: a schedule, or a finite number (its sign is the user's call)."""
    finite(owner, "learning_rate", value, schedule=True)


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
