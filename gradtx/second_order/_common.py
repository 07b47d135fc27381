"""What the second-order blocks share: reading the loss, tree algebra, runtime errors.

These methods need the loss itself, not only its gradient. They read it from the
extra argument ``value_fn`` (a function ``params -> scalar loss``), as
ARCHITECTURE.md lays out, and the line searches also read ``value`` and ``grad``
(the loss and its gradient at ``params``) when the caller has them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array

ValueFn = Callable[[Any], Array]


def require_params(owner: str, params: Any) -> None:
    """Raises ValueError when ``params`` were not passed to ``update``."""
    if params is None:
        raise ValueError(
            f"{owner}: needs the current parameters: call "
            "tx.update(grads, state, params, value_fn=loss_fn)."
        )


def require_value_fn(owner: str, value_fn: Any) -> ValueFn:
    """Returns ``value_fn``, or raises an error that says how to pass it.

    A missing one raises :class:`gradtx._checks.MissingArgumentError`, a
    ``TypeError`` as in Optax that is also a ``ValueError``.
    """
    if value_fn is None:
        raise _checks.MissingArgumentError(
            f"{owner}: needs the loss as a function of the parameters, passed as the "
            "extra argument value_fn: tx.update(grads, state, params, value_fn=loss_fn), "
            "where loss_fn(params) returns a scalar (close over the batch: "
            "value_fn=lambda p: loss(p, batch)). gradtx.minimize passes it for you."
        )
    if not callable(value_fn):
        raise ValueError(
            f"{owner}: value_fn must be a function params -> scalar loss, "
            f"got {type(value_fn).__name__}."
        )
    return value_fn


def refuse_complex(owner: str, params: Any) -> None:
    """Raises ValueError naming the complex leaves of ``params``, if any (and
    TypeError naming the integer or boolean ones, as :func:`gradtx.tree.check_inexact`)."""
    tree.check_inexact(params, owner)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    paths = [jax.tree_util.keystr(p) or "(root)" for p, x in leaves if jnp.iscomplexobj(x)]
    if paths:
        raise ValueError(
            f"{owner}: second-order methods work on real parameters; complex leaves: "
            f"{tree.name_paths(paths)}. Keep the real and imaginary parts as two real leaves."
        )


def tree_dtype(params: Any) -> jnp.dtype:
    """The dtype the arithmetic runs in: the widest leaf dtype, at least float32."""
    leaves = jax.tree.leaves(params)
    if not leaves:
        return jnp.dtype(jnp.float32)
    return tree.compute_dtype(jnp.result_type(*leaves))


def vdot(a: Any, b: Any, axis_name: tree.AxisName | None = None) -> Array:
    """``sum_i Re(conj(a_i) b_i)`` over every element of two trees of the same structure.

    For real trees the plain dot product. For complex ones the real inner
    product of ``C^n`` seen as ``R^{2n}`` (``Re`` of Optax's ``tree.vdot``), the
    one its L-BFGS and line searches use. With ``axis_name`` the trees are this
    device's blocks of trees split over that ``shard_map`` axis: the local sum is
    ``psum``-med, so every device gets the dot product of the whole trees.
    """

    def leaf(x, y):
        if jnp.iscomplexobj(x) or jnp.iscomplexobj(y):
            dtype = tree.real_dtype(tree.compute_dtype(jnp.result_type(x, y)))
            return jnp.sum(jnp.real(jnp.conj(x) * y)).astype(dtype)
        return jnp.sum(
            x.astype(tree.compute_dtype(x.dtype)) * y.astype(tree.compute_dtype(y.dtype))
        )

    products = [leaf(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]
    if not products:
        return jnp.zeros([], jnp.float32)
    dtype = jnp.result_type(*products)
    local = sum((p.astype(dtype) for p in products), jnp.zeros([], dtype))
    return tree.across(jax.lax.psum, axis_name)(local)


def conj(x: Any) -> Any:
    """The complex conjugate of every complex leaf; real leaves as they are."""
    return jax.tree.map(lambda v: jnp.conj(v) if jnp.iscomplexobj(v) else v, x)


def bind_extra_args(owner: str, value_fn: Any, extra_args: dict[str, Any]) -> ValueFn:
    """``value_fn`` with the extra arguments it names bound, as Optax's line searches do.

    Optax passes to ``value_fn(params, **kwargs)`` the extra arguments of
    ``update`` whose names are parameters of ``value_fn`` (the batch, for
    example: ``tx.update(..., value_fn=loss, x=x, y=y)`` for ``loss(params, x,
    y)``). Other extra arguments are left alone (a chain passes every member all
    of them).
    """
    value_fn = require_value_fn(owner, value_fn)
    if not extra_args:
        return value_fn
    try:
        parameters = list(inspect.signature(value_fn).parameters.values())
    except (TypeError, ValueError):  # a builtin or an object without a signature
        return value_fn
    names = {p.name for p in parameters[1:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    bound = {k: v for k, v in extra_args.items() if k in names}
    if not bound:
        return value_fn
    return functools.partial(value_fn, **bound)


def axpy(alpha: Array, x: Any, y: Any) -> Any:
    """``alpha * x + y`` leaf by leaf, in the dtype of ``y``."""
    return jax.tree.map(lambda a, b: (alpha * a + b).astype(b.dtype), x, y)


def scaled(alpha: Array, x: Any) -> Any:
    """``alpha * x`` leaf by leaf, each leaf keeping its dtype."""
    return jax.tree.map(lambda a: (alpha * a).astype(a.dtype), x)


def error_if(failed: Array, message: str, *, compiled: bool = True) -> None:
    """Raises ``message`` when ``failed`` is true, eagerly or from a compiled program.

    A concrete ``failed`` raises ValueError at once. Under ``jit`` (or inside a
    ``lax.while_loop``) the check runs on the device through ``jax.debug.callback``,
    and the call that ran the program raises a ``JaxRuntimeError`` carrying
    ``message``; ``compiled=False`` leaves that callback out (on XLA:CPU it slows
    every kernel of the program), so only eager calls check.
    """
    if not isinstance(failed, jax.core.Tracer):
        if bool(np.any(np.asarray(failed))):
            raise ValueError(message)
        return
    if not compiled:
        return

    def _raise(flag: np.ndarray) -> None:
        if np.any(flag):
            raise ValueError(message)

    jax.debug.callback(_raise, failed)
