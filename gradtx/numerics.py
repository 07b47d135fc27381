"""Safe arithmetic on arrays, under Optax's names.

Norms whose gradient stays finite where the norm is clipped from below, a counter
increment that saturates instead of wrapping, and the global norm of a tree.
The library's own code uses the helpers of :mod:`gradtx.tree`; these are the
call-compatible functions an Optax user reaches for (``optax.safe_norm``, ...).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree

__all__ = [
    "global_norm",
    "safe_increment",
    "safe_int32_increment",
    "safe_norm",
    "safe_root_mean_squares",
]


def global_norm(updates: Any) -> jax.Array:
    """The Euclidean norm of a whole tree, seen as one flat vector.

    .. math::
        \\|u\\| = \\sqrt{\\textstyle\\sum_{\\ell} \\sum_i |u_{\\ell, i}|^2}

    over every element ``i`` of every leaf ``\\ell`` (``|.|`` the modulus for
    complex leaves). Same value as :func:`gradtx.tree.norm` with its defaults,
    which it calls; ``optax.global_norm`` is the deprecated alias of
    ``optax.tree.norm`` (this one warns of nothing).

    Args:
      updates: a pytree of arrays.

    Returns:
      A real scalar.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.global_norm({"a": jnp.array([3.0]), "b": jnp.array([[4.0]])})
      Array(5., dtype=float32)
    """
    return tree.norm(updates)


def _check_bound(owner: str, name: str, value: Any) -> None:
    """A scalar bound must be a non-negative real; an array of bounds (one per
    norm, broadcast as in Optax) is passed through."""
    if np.ndim(value) == 0:
        _checks.non_negative(owner, name, value)


def safe_norm(
    x: Any,
    min_norm: Any,
    ord: int | float | str | None = None,  # noqa: A002 (numpy's name)
    axis: None | tuple[int, ...] | int = None,
    keepdims: bool = False,
) -> jax.Array:
    """``max(||x||, min_norm)``, with a zero (not NaN) gradient where it is clipped.

    .. math::
        \\operatorname{safe\\_norm}(x) =
        \\begin{cases} \\|x\\|_{\\text{ord}} & \\|x\\|_{\\text{ord}} > m \\\\
        m & \\text{otherwise} \\end{cases}

    with ``m`` = ``min_norm``. ``jnp.maximum(jnp.linalg.norm(x), m)`` has a NaN
    gradient at ``x = 0`` (the norm's derivative there is ``0/0``, and JAX
    differentiates both branches). Here, where the norm is at most ``m``, the
    norm is taken of ones instead of ``x``, so the unused branch is finite and
    the gradient is exactly zero.

    Args:
      x: an array.
      min_norm: the lower bound ``m`` on the result.
      ord: the order of the norm, as ``jnp.linalg.norm``'s ``ord``.
      axis: the axis (or the two axes of a matrix norm) to reduce; ``None``:
        ``jnp.linalg.norm``'s default.
      keepdims: keep the reduced axes with size one.

    Returns:
      The clipped norm, of ``jnp.linalg.norm``'s shape and dtype.

    Raises:
      ValueError: a scalar ``min_norm`` is negative, infinite or NaN.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> gradtx.safe_norm(jnp.array([3.0, 4.0]), 1.0)
      Array(5., dtype=float32)
      >>> jax.grad(gradtx.safe_norm)(jnp.zeros(2), 1.0)
      Array([0., 0.], dtype=float32)
    """
    _check_bound("safe_norm", "min_norm", min_norm)
    x = jnp.asarray(x)
    norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
    clipped = norm <= min_norm
    finite_x = jnp.where(clipped, jnp.ones_like(x), x)
    if not keepdims:
        clipped = jnp.squeeze(clipped, axis=axis)
    return jnp.where(
        clipped, min_norm, jnp.linalg.norm(finite_x, ord=ord, axis=axis, keepdims=keepdims)
    )


def safe_root_mean_squares(x: Any, min_rms: Any) -> jax.Array:
    """``max(rms(x), min_rms)``, with a zero (not NaN) gradient where it is clipped.

    .. math::
        \\operatorname{rms}(x) = \\sqrt{\\tfrac1n \\textstyle\\sum_{i=1}^n |x_i|^2},
        \\qquad \\operatorname{safe\\_rms}(x) =
        \\begin{cases} \\operatorname{rms}(x) & \\operatorname{rms}(x) > m \\\\
        m & \\text{otherwise} \\end{cases}

    over all ``n`` elements of ``x``, ``m`` = ``min_rms``. As in
    :func:`safe_norm`, the clipped branch is evaluated on ones, so the gradient
    at ``x = 0`` is zero instead of NaN.

    Args:
      x: an array (complex allowed: ``|x_i|`` is the modulus).
      min_rms: the lower bound ``m`` on the result.

    Returns:
      A real scalar.

    Raises:
      ValueError: a scalar ``min_rms`` is negative, infinite or NaN.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.safe_root_mean_squares(jnp.array([3.0, 4.0, 0.0, 0.0]), 0.1)
      Array(2.5, dtype=float32)
    """
    _check_bound("safe_root_mean_squares", "min_rms", min_rms)
    x = jnp.asarray(x)
    rms = jnp.sqrt(jnp.mean(tree.abs_sq(x)))
    clipped = rms <= min_rms
    finite_x = jnp.where(clipped, jnp.ones_like(x), x)
    return jnp.where(clipped, min_rms, jnp.sqrt(jnp.mean(tree.abs_sq(finite_x))))


def safe_increment(count: Any) -> Any:
    """``count + 1`` in ``count``'s own dtype, staying at the dtype's maximum.

    .. math::
        \\operatorname{inc}(c) = \\begin{cases} c + 1 & c < c_{\\max} \\\\
        c_{\\max} & \\text{otherwise} \\end{cases}

    where ``c_max`` is the largest value of the dtype (``iinfo.max`` for an
    integer counter, ``finfo.max`` for a floating one), so a long run never
    wraps to a negative count. Unlike :func:`gradtx.tree.safe_increment` (the
    library's int32 step counter), the dtype of ``count`` is kept, as in Optax.

    Args:
      count: an integer or floating-point counter (array or scalar).

    Returns:
      The incremented counter, of ``count``'s dtype.

    Raises:
      ValueError: ``count`` is neither integer nor floating-point.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.safe_increment(jnp.asarray(1, jnp.int32))
      Array(2, dtype=int32)
      >>> gradtx.safe_increment(jnp.asarray(2**31 - 1, jnp.int32))
      Array(2147483647, dtype=int32)
    """
    dtype = jnp.asarray(count).dtype
    if jnp.issubdtype(dtype, jnp.integer):
        top = jnp.iinfo(dtype).max
    elif jnp.issubdtype(dtype, jnp.floating):
        top = jnp.finfo(dtype).max
    else:
        raise ValueError(
            f"safe_increment: count must have an integer or floating-point dtype, got {dtype}."
        )
    top = jnp.asarray(top, dtype)
    return jnp.where(count < top, count + jnp.asarray(1, dtype), top)


safe_int32_increment = safe_increment
"""Optax's older name of :func:`safe_increment` (any dtype, not only int32)."""
