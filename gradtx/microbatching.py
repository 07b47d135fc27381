"""Microbatching: evaluate a function of a batch a few examples at a time, and combine.

:func:`microbatch` (``gradtx.microbatch``) turns ``f(batch)`` into a function that
splits the batch into ``n`` microbatches, evaluates ``f`` on each in turn (a
``lax.fori_loop``: one microbatch's activations in memory at a time) and
combines the results, by sum, mean, running mean or concatenation
(:class:`AccumulationType`, or a hand-made :class:`Accumulator`).
:func:`micro_vmap` is ``jax.vmap`` evaluated that way. Names, arguments and
results are Optax's (``optax.microbatching``).

**Which examples form a microbatch.** A batch of ``B = n m`` examples is read as
``m`` rows of ``n`` (:func:`reshape_batch_axis`): microbatch ``i`` holds the
examples ``i, i + n, i + 2n, ...``, not a contiguous block. A batch sharded over
devices along its batch axis then gives every device a share of every
microbatch, so all devices work on each one. Sums and means do not depend on
the grouping; ``CONCAT`` puts the results back in the batch's order.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gradtx import _checks


@dataclasses.dataclass(frozen=True)
class Accumulator:
    """How the results of the microbatches are combined (Optax's fields).

    With ``x_0, ..., x_{n-1}`` the results of the ``n`` microbatches, the result of
    the microbatched function is::

        carry = init(shape_and_dtype_of(x_0))
        for i in range(n):
            carry = update(carry, x_i, i)
        result = finalize(carry)

    Attributes:
      init: ``init(like) -> carry``, from a ``jax.ShapeDtypeStruct`` (or array)
        of one microbatch's result.
      update: ``update(carry, x_i, i) -> carry``.
      finalize: ``finalize(carry) -> result``.
      aggregate: ``aggregate(xs) -> result`` from the results of one
        vectorised evaluation stacked on axis 0: how :func:`micro_vmap` reduces the
        examples inside a microbatch.
    """

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any], Any]
    finalize: Callable[[Any], Any]
    aggregate: Callable[[Any], Any]


class AccumulationType(enum.Enum):
    """The usual ways to combine microbatch results (Optax's names)."""

    MEAN = enum.auto()
    """The mean of the results over the ``n`` microbatches (floating results only)."""
    SUM = enum.auto()
    """The sum of the results."""
    RUNNING_MEAN = enum.auto()
    """The mean over the microbatches actually run (``num_real_microbatches``)."""
    CONCAT = enum.auto()
    """The results concatenated along axis 0, in the batch's order."""


def _floating(owner: str, like: Any) -> None:
    if not jnp.issubdtype(like.dtype, jnp.inexact):
        raise ValueError(
            f"{owner}: MEAN and RUNNING_MEAN need floating-point results, got {like.dtype}."
        )


def _zeros(like: Any) -> jax.Array:
    return jnp.zeros(like.shape, like.dtype)


def _leafwise(init, update, finalize, aggregate) -> Accumulator:
    """An :class:`Accumulator` applying the per-array functions to every leaf of a result."""
    return Accumulator(
        lambda like: jax.tree.map(init, like),
        lambda carry, x, i: jax.tree.map(lambda c, v: update(c, v, i), carry, x),
        lambda carry: jax.tree.map(finalize, carry),
        lambda xs: jax.tree.map(aggregate, xs),
    )


def _sum() -> Accumulator:
    return _leafwise(_zeros, lambda c, x, i: c + x, lambda c: c, lambda xs: jnp.sum(xs, 0))


def _mean(n: int) -> Accumulator:
    def init(like):
        _floating("microbatch", like)
        return _zeros(like)

    return _leafwise(init, lambda c, x, i: c + x, lambda c: c / n, lambda xs: jnp.mean(xs, 0))


def _running_mean() -> Accumulator:
    def init(like):
        _floating("microbatch", like)
        return _zeros(like)

    def update(mean, x, i):
        # The mean of i + 1 results from the mean of the first i (Welford).
        return mean + (x - mean) / (i + 1).astype(mean.dtype)

    return _leafwise(init, update, lambda c: c, lambda xs: jnp.mean(xs, 0))


def _concat(n: int) -> Accumulator:
    def init(like):
        return jnp.zeros((n, *like.shape), like.dtype)

    def finalize(stacked):
        # Row i holds microbatch i: examples i, i + n, ...; back to the batch's order.
        return jnp.swapaxes(stacked, 0, 1).reshape(-1, *stacked.shape[2:])

    return _leafwise(init, lambda c, x, i: c.at[i].set(x), finalize, lambda xs: xs)


_FIELDS = ("init", "update", "finalize", "aggregate")


def _is_spec(x: Any) -> bool:
    """An accumulator spec: an enum member (gradtx's or Optax's ``AccumulationType``) or
    an object with the four functions of :class:`Accumulator` (Optax's included)."""
    return isinstance(x, enum.Enum) or all(callable(getattr(x, f, None)) for f in _FIELDS)


def _accumulator(spec: Any, n: int) -> Accumulator:
    """One :class:`Accumulator` for a pytree (a prefix of the result's) of specs."""

    def one(kind):
        if isinstance(kind, enum.Enum) and kind.name in AccumulationType.__members__:
            kind = AccumulationType[kind.name]  # Optax's enum reads as gradtx's
        elif not isinstance(kind, enum.Enum) and _is_spec(kind):
            return kind
        if kind is AccumulationType.SUM:
            return _sum()
        if kind is AccumulationType.MEAN:
            return _mean(n)
        if kind is AccumulationType.RUNNING_MEAN:
            return _running_mean()
        if kind is AccumulationType.CONCAT:
            return _concat(n)
        raise ValueError(
            f"microbatch: every accumulator must be an AccumulationType or an Accumulator, "
            f"got {kind!r}."
        )

    is_spec = _is_spec
    parts = jax.tree.map(one, spec, is_leaf=is_spec)
    return Accumulator(
        lambda like: jax.tree.map(lambda a, x: a.init(x), parts, like, is_leaf=is_spec),
        lambda carry, x, i: jax.tree.map(
            lambda a, c, v: a.update(c, v, i), parts, carry, x, is_leaf=is_spec
        ),
        lambda carry: jax.tree.map(lambda a, c: a.finalize(c), parts, carry, is_leaf=is_spec),
        lambda xs: jax.tree.map(lambda a, v: a.aggregate(v), parts, xs, is_leaf=is_spec),
    )


def reshape_batch_axis(tree: Any, microbatch_size: int, axis: int = 0) -> Any:
    """Splits the batch axis of every leaf into ``(num_microbatches, microbatch_size)``.

    Element ``[i, j]`` of the new pair of axes is example ``i + j n`` of the batch
    (``n`` microbatches): microbatch ``i`` takes every ``n``-th example from ``i``
    on (column-major order, as Optax's), so a batch sharded along ``axis`` keeps a
    share on every device in each microbatch.

    Args:
      tree: a pytree of arrays, each with the batch axis at ``axis``.
      microbatch_size: ``m``, the examples per microbatch; it must divide the
        batch size.
      axis: the batch axis.

    Returns:
      The tree with each leaf's batch axis replaced by the two axes ``(n, m)``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.microbatching.reshape_batch_axis(jnp.arange(6), 2)
      Array([[0, 3],
             [1, 4],
             [2, 5]], dtype=int32)
    """

    def leaf(x):
        at = axis % x.ndim
        rows = x.reshape(*x.shape[:at], microbatch_size, -1, *x.shape[at + 1 :])
        return jnp.swapaxes(rows, at, at + 1)

    return jax.tree.map(leaf, tree)


def _as_tuple(value: Any, kind: type) -> tuple:
    return (value,) if isinstance(value, kind) else tuple(value)


def microbatch(
    fun: Callable[..., Any],
    argnums: int | Sequence[int],
    microbatch_size: int | None,
    accumulator: Any = AccumulationType.SUM,
    *,
    argnames: str | Sequence[str] = (),
    in_axes: int | Sequence[int] = 0,
    num_real_microbatches: int | jax.Array | None = None,
) -> Callable[..., Any]:
    """``fun`` evaluated on a batch one microbatch at a time, the results combined.

    The batch arguments (``argnums`` and ``argnames``, batch axis ``in_axes``) are
    split into ``n = B / microbatch_size`` microbatches (see
    :func:`reshape_batch_axis` for which examples each holds); ``fun`` runs on each
    in a ``lax.fori_loop``, with the other arguments as they are, and the results
    are combined by ``accumulator``:

    .. math::
        F(x) = \\operatorname{finalize}\\Big(\\text{fold}_{i=0}^{n-1}\\,
            \\operatorname{update}(\\cdot, f(x^{(i)}), i)\\Big)

    e.g. ``SUM``: :math:`\\sum_i f(x^{(i)})`. For a loss that is a sum over
    examples, ``jax.grad`` of it with ``SUM`` is the full batch's gradient, at the
    memory of one microbatch. Same name, arguments and results as
    ``optax.microbatch`` (up to the order of floating-point sums).

    Args:
      fun: the function to evaluate.
      argnums: the positions of the arguments with a batch axis.
      microbatch_size: the examples per microbatch (it must divide the batch
        size); ``None`` returns ``fun`` itself.
      accumulator: an :class:`AccumulationType` or :class:`Accumulator`, or a
        pytree of them that is a prefix of ``fun``'s result (one per part).
        Optax's ``AccumulationType`` members and ``Accumulator`` objects work too.
      argnames: the names of keyword arguments with a batch axis.
      in_axes: the batch axis of each batch argument (``argnums`` then
        ``argnames``), or one int for all.
      num_real_microbatches: run only the first this many microbatches (may be
        traced: a smaller last batch padded to the full size, without a
        recompilation); ``None`` runs all ``n``.

    Returns:
      A function with ``fun``'s arguments.

    Raises:
      ValueError: ``microbatch_size`` is not an integer >= 1; when called, the
        batch arguments have batch axes of different sizes, or one that
        ``microbatch_size`` does not divide; ``MEAN``/``RUNNING_MEAN`` of a
        non-floating result.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> kinds = gradtx.microbatching.AccumulationType
      >>> f = lambda x: (x + 1, jnp.sum(3 * x))
      >>> gradtx.microbatch(f, 0, 2, (kinds.CONCAT, kinds.SUM))(jnp.arange(4.0))
      (Array([1., 2., 3., 4.], dtype=float32), Array(18., dtype=float32))
    """
    if microbatch_size is None:
        return fun
    _checks.positive_int("microbatch", "microbatch_size", microbatch_size)
    argnums, argnames = _as_tuple(argnums, int), _as_tuple(argnames, str)
    axes = (in_axes,) * (len(argnums) + len(argnames)) if isinstance(in_axes, int) else in_axes
    axes = tuple(axes)
    if len(axes) != len(argnums) + len(argnames):
        raise ValueError(
            f"microbatch: in_axes has {len(axes)} entries for "
            f"{len(argnums) + len(argnames)} batch arguments (argnums, then argnames)."
        )

    def microbatched(*args, **kwargs):
        batch = [args[i] for i in argnums] + [kwargs[name] for name in argnames]
        sizes = {
            x.shape[ax % x.ndim]
            for part, ax in zip(batch, axes, strict=True)
            for x in jax.tree.leaves(part)
        }
        if len(sizes) != 1:
            raise ValueError(f"microbatch: the batch axes must have one size, got {sorted(sizes)}.")
        (batch_size,) = sizes
        if batch_size % microbatch_size:
            raise ValueError(
                f"microbatch: microbatch_size={microbatch_size} must divide the batch size "
                f"{batch_size}."
            )
        n = batch_size // microbatch_size
        split = [
            reshape_batch_axis(part, microbatch_size, ax)
            for part, ax in zip(batch, axes, strict=True)
        ]

        def on_microbatch(i):
            parts = [
                jax.tree.map(lambda a, ax=ax: jnp.take(a, i, axis=ax % (a.ndim - 1)), part)
                for part, ax in zip(split, axes, strict=True)
            ]
            positional, named = list(args), dict(kwargs)
            for i_arg, part in zip(argnums, parts, strict=False):
                positional[i_arg] = part
            for name, part in zip(argnames, parts[len(argnums) :], strict=True):
                named[name] = part
            return fun(*positional, **named)

        combine = _accumulator(accumulator, n)
        carry = combine.init(jax.eval_shape(on_microbatch, 0))
        steps = n if num_real_microbatches is None else num_real_microbatches
        body = lambda i, carry: combine.update(carry, on_microbatch(i), i)  # noqa: E731
        return combine.finalize(jax.lax.fori_loop(0, steps, body, carry))

    return microbatched


def micro_vmap(
    fun: Callable[..., Any],
    in_axes: int | Sequence[int | None] = 0,
    out_axes: Any = 0,
    *,
    microbatch_size: int | None = None,
    vmap_fn: Callable[..., Any] = jax.vmap,
    accumulator: Any = AccumulationType.CONCAT,
    num_real_microbatches: int | jax.Array | None = None,
) -> Callable[..., Any]:
    """``jax.vmap(fun)``, evaluated ``microbatch_size`` examples at a time.

    Each microbatch is vectorised with ``vmap_fn``; its per-example results are
    reduced with the accumulator's ``aggregate`` (``CONCAT`` keeps them: the
    result is ``jax.vmap(fun)``'s), and the microbatches combined as in
    :func:`microbatch`. ``SUM`` or ``MEAN`` reduce over the examples without ever
    holding all their results. Same name, arguments and results as
    ``optax.microbatching.micro_vmap``.

    Args:
      fun: the function of one example.
      in_axes: the mapped axis of each positional argument (``None``: not
        mapped), or one int for all; keyword arguments are mapped on axis 0.
      out_axes: where the examples' axis goes in each result, an int (as
        ``jax.vmap``'s); other than 0 only with ``accumulator=CONCAT``, since the
        other accumulators reduce that axis away. (Optax supports 0 only.)
      microbatch_size: the examples per microbatch; ``None``: all at once.
      vmap_fn: a function with ``jax.vmap``'s signature that vectorises a microbatch.
      accumulator: how results are reduced (see :func:`microbatch`).
      num_real_microbatches: as :func:`microbatch`.

    Returns:
      The vectorised function.

    Raises:
      ValueError: ``out_axes`` is not an int, or not 0 with another accumulator
        than ``CONCAT``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.microbatching.micro_vmap(lambda x: x**2, microbatch_size=2)(jnp.arange(6))
      Array([ 0,  1,  4,  9, 16, 25], dtype=int32)
    """
    concat = getattr(accumulator, "name", None) == "CONCAT"
    if not isinstance(out_axes, int) or (out_axes != 0 and not concat):
        raise ValueError(
            "micro_vmap: out_axes must be an int, and 0 unless accumulator=CONCAT (the "
            f"other accumulators reduce the examples' axis away); got {out_axes!r}."
        )
    axes = (in_axes,) if isinstance(in_axes, int) else tuple(in_axes)

    def vectorised(*args, kwargs):
        outputs = vmap_fn(fun, axes, 0)(*args, **kwargs)
        return _accumulator(accumulator, 1).aggregate(outputs)

    mapped = [i for i, ax in enumerate(axes) if ax is not None]
    run = microbatch(
        vectorised,
        argnums=tuple(mapped),
        argnames="kwargs",
        microbatch_size=microbatch_size,
        accumulator=accumulator,
        in_axes=tuple(axes[i] for i in mapped) + (0,),
        num_real_microbatches=num_real_microbatches,
    )
    if out_axes == 0:
        return lambda *args, **kwargs: run(*args, kwargs=kwargs)
    return lambda *args, **kwargs: jax.tree.map(
        lambda x: jnp.moveaxis(x, 0, out_axes), run(*args, kwargs=kwargs)
    )


__all__ = ["AccumulationType", "Accumulator", "micro_vmap", "microbatch", "reshape_batch_axis"]
