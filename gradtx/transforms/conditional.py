"""Transformations that apply another one only under a condition: ``apply_if_finite``."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, OptState
from gradtx.combine import accepts_extra_args, check_members


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite` (Optax's field names)."""

    notfinite_count: Array  # int32 scalar: consecutive non-finite gradients (0 after a finite one).
    last_finite: Array  # bool scalar: whether the last gradient was finite.
    total_notfinite: Array  # int32 scalar: non-finite gradients since init, never reset.
    inner_state: OptState  # the inner transformation's state, as of the last finite gradient.


def _finite_leaves(updates: Any) -> tuple[list[Array], list[str]]:
    """Per leaf: whether every element is finite (complex: both parts), and its path."""
    with_paths = jax.tree_util.tree_flatten_with_path(updates)[0]
    flags = [jnp.all(jnp.isfinite(x)) for _, x in with_paths]
    return flags, [jax.tree_util.keystr(path) or "the root" for path, _ in with_paths]


def _too_many(raise_after: int, paths: list[str], consecutive, total, flags) -> None:
    """Raises FloatingPointError when ``consecutive >= raise_after``; runs on the host.

    ``flags`` are :func:`_finite_leaves`'s, one per path. Under ``vmap`` the
    arguments arrive batched: one member over the limit raises, and a leaf is
    named when any member holds a bad element in it.
    """
    consecutive = np.asarray(consecutive)
    if not np.any(consecutive >= raise_after):
        return
    bad = [path for path, flag in zip(paths, flags, strict=True) if not np.all(flag)]
    in_a_row, in_all = int(np.max(consecutive)), int(np.max(np.asarray(total)))
    plural = "s" if in_a_row > 1 else ""
    raise FloatingPointError(
        f"apply_if_finite: {in_a_row} consecutive gradient{plural} held NaN or inf "
        f"(raise_after={raise_after}; {in_all} skipped in all); the last one in: "
        f"{tree.name_paths(bad) or '(no leaf)'}. The updates were skipped and the optimizer "
        f"state is the one after the last finite gradient."
    )


def _check_max_errors(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        _checks._fail("apply_if_finite", "max_consecutive_errors", value, "an integer >= 0 or None")


def apply_if_finite(
    inner: GradientTransformation,
    max_consecutive_errors: int | None = None,
    *,
    raise_after: int | None = None,
) -> GradientTransformation:
    r"""Skips the steps whose gradients hold a NaN or an infinity, as Optax's does.

    When any element of any leaf of the incoming updates is not finite (NaN,
    +-inf, or a complex number with such a part), the step returns zero updates
    and leaves ``inner``'s state as it was, as if the step had not happened; the
    state counts such steps (``notfinite_count`` in a row, ``total_notfinite`` in
    all). A finite gradient is passed to ``inner`` as usual and resets the
    consecutive count. With ``c_t`` the number of non-finite gradients in a row
    up to step ``t`` and ``N`` = ``max_consecutive_errors``:

    .. math::
        \text{out}_t = \begin{cases}
          \text{inner}(g_t) & g_t \text{ finite, or } c_t > N \\
          0 & \text{otherwise.}
        \end{cases}

    The signature and the meaning of ``max_consecutive_errors`` are Optax's:
    ``apply_if_finite(tx, 5)`` skips up to 5 non-finite gradients in a row and
    gives up on the 6th, passing it (and every later one of the run) to
    ``inner``, whose parameters and state then usually become NaN. gradtx adds a
    default, ``None``: skip them all, never give up.

    Note:
      ``raise_after`` is a gradtx extension, keyword-only: where Optax's
      ``max_consecutive_errors`` gives up silently by *applying* the bad update,
      ``raise_after=M`` raises a ``FloatingPointError`` on the ``M``-th
      non-finite gradient in a row, naming the leaves that held one, with the
      state still the one after the last finite gradient. It may be combined with
      ``max_consecutive_errors=N``: it raises when the count reaches ``M``, after
      ``M - N - 1`` bad updates were applied if ``M > N + 1``.

    Args:
      inner: the transformation to protect.
      max_consecutive_errors: ``N``, the number of non-finite gradients in a row
        to skip before giving up and applying them (Optax's meaning), an integer
        >= 0 (``0``: never skip); ``None`` (default): skip them all.
      raise_after: raise once this many consecutive gradients were non-finite
        (``1``: on the first one); ``None`` (default) does not raise. Eagerly
        the error is a ``FloatingPointError``; under ``jit`` it comes from a host
        callback, and JAX raises it as a ``jax.errors.JaxRuntimeError`` (a
        ``RuntimeError``) whose message ends with the same text, when the step is
        run (or its result first awaited). A host callback slows every kernel
        of the step on XLA:CPU, which tells on trees of many small leaves
        (``benchmarks/xla_cpu_limits.py``): there, read ``notfinite_count``
        from the state on the host instead.

    Returns:
      A transformation whose state is :class:`ApplyIfFiniteState` (Optax's fields).

    Raises:
      ValueError: ``max_consecutive_errors`` is not None or an integer >= 0;
        ``raise_after`` is not None or an integer >= 1.
      TypeError: ``inner`` is not a transformation.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> from gradtx.transforms.conditional import apply_if_finite
      >>> tx = apply_if_finite(gradtx.sgd(0.1), 2)
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([1.0, jnp.nan]), state)
      >>> updates, int(state.total_notfinite)
      (Array([0., 0.], dtype=float32), 1)
    """
    check_members("apply_if_finite", (inner,))
    _check_max_errors(max_consecutive_errors)
    if raise_after is not None:
        _checks.positive_int("apply_if_finite", "raise_after", raise_after)
    update = accepts_extra_args(inner.update)

    def init_fn(params):
        # Two distinct zeros: one buffer in two fields could not be donated.
        zero, other_zero = tree.zero_count(), tree.zero_count()
        return ApplyIfFiniteState(zero, jnp.array(True), other_zero, inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        flags, paths = _finite_leaves(updates)
        finite = jnp.all(jnp.stack(flags)) if flags else jnp.array(True)
        consecutive = jnp.where(finite, 0, tree.safe_increment(state.notfinite_count))
        total = jnp.where(finite, state.total_notfinite, tree.safe_increment(state.total_notfinite))
        if raise_after is not None:
            check = functools.partial(_too_many, raise_after, paths)
            if isinstance(consecutive, jax.core.Tracer):
                # Traced: the check must run when the step runs, on the host.
                jax.debug.callback(check, consecutive, total, flags)
            else:
                check(consecutive, total, flags)

        def inner_update(updates, inner_state, params):
            return update(updates, inner_state, params, **extra_args)

        def apply():
            return inner_update(updates, state.inner_state, params)

        def skip():
            # Zeros shaped like the inner's output, found without running it.
            outputs, _ = jax.eval_shape(inner_update, updates, state.inner_state, params)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), outputs)
            return zeros, state.inner_state

        go = finite
        if max_consecutive_errors is not None:
            # Optax's rule: give up once more than N bad gradients came in a row.
            go = finite | (consecutive > max_consecutive_errors)
        if isinstance(go, jax.core.Tracer):
            out, inner_state = jax.lax.cond(go, apply, skip)
        else:  # eagerly: a Python branch, not a cond compiled at every call
            out, inner_state = apply() if bool(go) else skip()
        return out, ApplyIfFiniteState(
            consecutive.astype(jnp.int32), finite, total.astype(jnp.int32), inner_state
        )

    return GradientTransformation(init_fn, update_fn)
