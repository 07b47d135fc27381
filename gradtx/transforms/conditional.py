"""Transformations that apply another one only under a condition: ``apply_if_finite``,
``conditionally_transform`` and ``conditionally_mask``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, GradientTransformationExtraArgs, OptState
from gradtx.combine import accepts_extra_args, accepts_named_kwargs, check_members


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


# ---------------------------------------------------------------------- a condition on the step


class ConditionFn(Protocol):
    """The type of ``should_transform_fn`` (Optax's ``optax.transforms.ConditionFn``).

    Called as ``c(step, **extra_args)`` with the step count (an int32 scalar) and,
    where it names them, the extra arguments of ``update``; returns a boolean
    scalar: whether :func:`conditionally_transform` runs the inner transformation
    at this step (or :func:`conditionally_mask` lets its updates through).
    """

    def __call__(self, step: Array, **extra_args: Any) -> Array: ...


class ConditionallyTransformState(NamedTuple):
    """State of :func:`conditionally_transform` (Optax's fields, in Optax's order)."""

    inner_state: OptState  # the inner transformation's state; moves only on the steps it runs.
    step: Array  # int32 scalar: calls of update so far (saturating), fed to the condition.


class ConditionallyMaskState(NamedTuple):
    """State of :func:`conditionally_mask` (Optax's fields, in Optax's order)."""

    step: Array  # int32 scalar: calls of update so far (saturating), fed to the condition.
    inner_state: OptState  # the inner transformation's state; moves only on the steps it runs.


def _on_condition(owner, inner, should_transform_fn, forward_extra_args, otherwise, state_type):
    """The wrapper of :func:`conditionally_transform` and :func:`conditionally_mask`.

    ``otherwise(updates, like)`` gives the updates of a step the condition turns
    down, ``like`` the shapes and dtypes of the inner's output.
    """
    check_members(owner, (inner,))
    if not callable(should_transform_fn):
        raise TypeError(
            f"{owner}: should_transform_fn must be a function of the step count, "
            f"got {type(should_transform_fn).__name__}."
        )
    update = accepts_extra_args(inner.update)
    condition = accepts_named_kwargs(should_transform_fn, 1)

    def init_fn(params):
        return state_type(inner_state=inner.init(params), step=tree.zero_count())

    def update_fn(updates, state, params=None, **extra_args):
        run = jnp.asarray(condition(state.step, **(extra_args if forward_extra_args else {})))
        integral = run.dtype == jnp.bool_ or jnp.issubdtype(run.dtype, jnp.integer)
        if run.shape != () or not integral:
            raise ValueError(
                f"{owner}: should_transform_fn must return a bool (or integer) scalar, got a "
                f"{run.dtype} array of shape {run.shape}."
            )
        run = run != 0  # an integer is true where nonzero, as in lax.cond

        def inner_update(updates, inner_state, params):
            return update(updates, inner_state, params, **extra_args)

        def apply():
            return inner_update(updates, state.inner_state, params)

        def skip():
            outputs, _ = jax.eval_shape(inner_update, updates, state.inner_state, params)
            return otherwise(updates, outputs), state.inner_state

        if isinstance(run, jax.core.Tracer):
            out, inner_state = jax.lax.cond(run, apply, skip)
        else:  # eagerly: a Python branch, not a cond compiled at every call
            out, inner_state = apply() if bool(run) else skip()
        return out, state_type(inner_state=inner_state, step=tree.safe_increment(state.step))

    return GradientTransformationExtraArgs(init_fn, update_fn)


def conditionally_transform(
    inner: GradientTransformation,
    should_transform_fn: Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformationExtraArgs:
    """Runs ``inner`` only on the steps where a condition holds; passes the updates through
    unchanged on the others.

    With ``k`` the number of earlier calls of ``update`` (0 on the first) and
    ``c`` the ``should_transform_fn``:

    .. math::
        (u, s) \\leftarrow \\begin{cases} \\operatorname{inner}(u, s) & c(k) \\\\
            (u, s) & \\text{otherwise} \\end{cases}

    so ``inner``'s state only moves on the steps it runs (a warm-up that leaves
    the first steps' gradients alone, a block applied every other step). Same
    name, arguments, state and trajectory as ``optax.conditionally_transform``.
    To return zeros on the other steps, use :func:`conditionally_mask`.

    Args:
      inner: the transformation to run on some steps.
      should_transform_fn: ``c(k, **extra_args) -> bool``, a function of the step
        count (an int32 scalar) returning a bool scalar (or an integer, true where
        nonzero); it may be traced.
      forward_extra_args: also pass ``update``'s extra arguments to
        ``should_transform_fn`` (those it names, all of them when it takes
        ``**kwargs``), e.g. to decide on the loss ``value``.

    Returns:
      A :class:`GradientTransformationExtraArgs` whose state is
      :class:`ConditionallyTransformState`.

    Raises:
      TypeError: ``inner`` is not a transformation, or ``should_transform_fn`` is
        not callable.
      ValueError: ``should_transform_fn`` returns something other than a bool or
        integer scalar.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.conditionally_transform(gradtx.scale(10.0), lambda step: step >= 1)
      >>> state = tx.init(jnp.zeros(1))
      >>> first, state = tx.update(jnp.ones(1), state)
      >>> second, state = tx.update(jnp.ones(1), state)
      >>> first, second
      (Array([1.], dtype=float32), Array([10.], dtype=float32))
    """
    return _on_condition(
        "conditionally_transform",
        inner,
        should_transform_fn,
        forward_extra_args,
        lambda updates, like: tree.cast_like(updates, like),
        ConditionallyTransformState,
    )


def conditionally_mask(
    inner: GradientTransformation,
    should_transform_fn: Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformationExtraArgs:
    """Runs ``inner`` only on the steps where a condition holds; returns zeros on the others.

    With ``k`` the number of earlier calls of ``update`` and ``c`` the
    ``should_transform_fn``:

    .. math::
        (u, s) \\leftarrow \\begin{cases} \\operatorname{inner}(u, s) & c(k) \\\\
            (0, s) & \\text{otherwise} \\end{cases}

    so the parameters stand still and ``inner``'s state is kept on the steps the
    condition turns down. Same name, arguments, state and trajectory as
    ``optax.conditionally_mask``; :func:`conditionally_transform` passes the
    updates through instead.

    Args:
      inner: the transformation to run on some steps.
      should_transform_fn: ``c(k, **extra_args) -> bool``, a function of the step
        count (an int32 scalar) returning a bool scalar (or an integer, true where
        nonzero); it may be traced.
      forward_extra_args: also pass ``update``'s extra arguments to
        ``should_transform_fn`` (those it names, all with ``**kwargs``).

    Returns:
      A :class:`GradientTransformationExtraArgs` whose state is
      :class:`ConditionallyMaskState`.

    Raises:
      TypeError: ``inner`` is not a transformation, or ``should_transform_fn`` is
        not callable.
      ValueError: ``should_transform_fn`` returns something other than a bool or
        integer scalar.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.conditionally_mask(gradtx.sgd(0.1), lambda step: step % 2 == 0)
      >>> state = tx.init(jnp.zeros(1))
      >>> first, state = tx.update(jnp.ones(1), state)
      >>> second, state = tx.update(jnp.ones(1), state)
      >>> first, second
      (Array([-0.1], dtype=float32), Array([0.], dtype=float32))
    """
    return _on_condition(
        "conditionally_mask",
        inner,
        should_transform_fn,
        forward_extra_args,
        lambda updates, like: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), like),
        ConditionallyMaskState,
    )
