"""Gradient accumulation: one inner step per ``every_k`` micro-batches.

:func:`accumulate` is gradtx's form (a transformation); :class:`MultiSteps` is
Optax's class of the same name and signature (a schedule for ``k``, a function
that skips micro-batches), built on the same step. Also here: sums emitted every
``k`` steps (``apply_every``), and the predicates that tell ``MultiSteps`` which
micro-batches to skip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, _tactics, tree
from gradtx.base import Array, GradientTransformation, OptState, Updates
from gradtx.combine import accepts_extra_args, check_members


class AccumulateState(NamedTuple):
    """State of :func:`accumulate` (Optax's ``MultiStepsState`` field names)."""

    mini_step: Array  # int32 scalar in [0, every_k): micro-batches gathered since the last step.
    gradient_step: Array  # int32 scalar: inner steps taken so far (saturating).
    inner_state: OptState  # the inner transformation's state; moves on inner steps only.
    acc_grads: Updates  # mean (or sum) of the gathered gradients, in the accumulator dtype.


class MultiStepsState(NamedTuple):
    """State of :class:`MultiSteps` (Optax's ``MultiStepsState`` fields)."""

    mini_step: Array  # int32 scalar in [0, k): micro-batches gathered since the last step.
    gradient_step: Array  # int32 scalar: inner steps taken so far (saturating).
    inner_opt_state: OptState  # the inner transformation's state; moves on inner steps only.
    acc_grads: Updates  # mean (or sum) of the gathered gradients, in the accumulator dtype.
    skip_state: Any = ()  # what should_skip_update_fn returned last (its monitoring data).


# should_skip_update_fn(updates, gradient_step, params) -> (bool scalar, skip_state)
ShouldSkipUpdateFunction = Callable[[Updates, Array, Any], tuple[Array, Any]]


def _accumulator_zeros(params: Any, dtype: Any | None) -> Any:
    if dtype is not None:
        return tree.zeros_like(params, dtype)
    return jax.tree.map(lambda p: jnp.zeros_like(p, tree.compute_dtype(jnp.result_type(p))), params)


def _gather(g: Array, acc: Array, n: Array, use_grad_mean: bool) -> Array:
    """Adds micro-batch gradient ``g`` to ``acc``, which holds ``n`` of them already."""
    g = g.astype(acc.dtype)
    if use_grad_mean:
        # The running mean (Welford): no sum of k gradients to overflow or round.
        return acc + (g - acc) / (n + 1).astype(tree.real_dtype(acc.dtype))
    return acc + g


def _micro_step(update, every_k, skip, use_grad_mean, updates, state, params, extra_args):
    """One call of gradient accumulation, shared by :func:`accumulate` and :class:`MultiSteps`.

    ``every_k`` is ``k`` (an int, or an int32 array from a schedule); ``skip`` is
    None or a bool scalar: a skipped micro-batch leaves everything as it was.
    ``state`` has ``mini_step``, ``acc_grads`` and the inner state (under either
    name). Returns the update, the inner state, ``mini_step``, whether the inner
    optimizer stepped, and the accumulator.
    """
    n = state.mini_step
    inner_state = state[2]  # inner_state (AccumulateState) or inner_opt_state (MultiStepsState)
    emit = n == every_k - 1
    if skip is not None:
        emit = emit & ~skip

    def gathered(acc_grads):
        return jax.tree.map(lambda g, a: _gather(g, a, n, use_grad_mean), updates, acc_grads)

    def inner_update(averaged, inner_state, params):
        return update(averaged, inner_state, params, **extra_args)

    def step():
        averaged = tree.cast_like(gathered(state.acc_grads), updates)
        return inner_update(averaged, inner_state, params)

    def hold():
        # Zeros shaped like the inner's output, found without running it.
        outputs, _ = jax.eval_shape(inner_update, updates, inner_state, params)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), outputs)
        return zeros, inner_state

    if isinstance(emit, jax.core.Tracer):
        out, new_inner_state = jax.lax.cond(emit, step, hold)
    else:  # eagerly: a Python branch, not a cond compiled at every call
        out, new_inner_state = step() if bool(emit) else hold()
    # The sum is formed again for the state, after the cond has read the old
    # one (_tactics.after): a donated state then takes the new sum in place.
    after = _tactics.after(emit, out)
    acc_grads = jax.tree.map(
        lambda a: jnp.where(after, jnp.zeros_like(a), a), gathered(state.acc_grads)
    )
    mini_step = jnp.where(emit, 0, n + 1)
    if skip is not None:
        acc_grads = jax.tree.map(
            lambda new, old: jnp.where(skip, old, new), acc_grads, state.acc_grads
        )
        mini_step = jnp.where(skip, n, mini_step)
    return out, new_inner_state, mini_step.astype(jnp.int32), emit, acc_grads


def accumulate(
    inner: GradientTransformation,
    every_k: int,
    use_grad_mean: bool = True,
    *,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    """Gradient accumulation: ``inner`` steps once per ``every_k`` gradients.

    The gradients of ``every_k`` consecutive micro-batches are averaged; the
    ``every_k``-th call feeds the average to ``inner`` and returns its update. The
    calls in between return zero updates and leave ``inner``'s state alone, so
    ``inner`` sees exactly the sequence of averaged gradients, as if trained on
    batches ``every_k`` times larger. The trajectory is Optax's ``MultiSteps`` with
    ``every_k_schedule=every_k`` (and ``accumulator_dtype`` set as below).
    :func:`has_updated` says whether a call was an inner step. To drop the
    micro-batches whose gradient holds NaN or inf (Optax's
    ``should_skip_update_fn=skip_not_finite``), wrap the whole:
    ``apply_if_finite(accumulate(inner, k))``.

    Note:
      Optax accumulates in float32 by default, which drops the imaginary part of
      complex gradients and the extra digits of float64 ones; gradtx's default
      accumulates each leaf in its gradient's dtype, widened to at least float32
      (bfloat16 and float16 gradients are averaged in float32). The in-between
      steps do not run ``inner`` at all (a ``lax.cond``). On one device the new
      sum is written over the old one after the cond has read it, so a donated
      step holds one params-sized buffer (the cond's output) where Optax's
      ``MultiSteps`` holds three (``python benchmarks/every_method.py``).

    Args:
      inner: the transformation that steps on the averaged gradient.
      every_k: the number of gradients per inner step, an integer >= 1.
      use_grad_mean: average the gradients (default); ``False`` sums them.
      accumulator_dtype: dtype of the accumulated gradients; ``None`` (default)
        uses each leaf's dtype, at least float32.

    Returns:
      A transformation whose state is :class:`AccumulateState`.

    Raises:
      ValueError: ``every_k`` is not an integer >= 1; ``accumulator_dtype`` is not
        a floating dtype (or is real for complex params); the updates' tree differs
        from the params'.
      TypeError: ``inner`` is not a transformation.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> from gradtx.transforms.accumulate import accumulate, has_updated
      >>> tx = accumulate(gradtx.sgd(0.1), every_k=2)
      >>> state = tx.init(jnp.zeros(1))
      >>> updates, state = tx.update(jnp.array([1.0]), state)
      >>> updates, bool(has_updated(state))
      (Array([0.], dtype=float32), False)
      >>> updates, state = tx.update(jnp.array([3.0]), state)
      >>> updates, bool(has_updated(state))  # -0.1 * mean(1, 3)
      (Array([-0.2], dtype=float32), True)
    """
    check_members("accumulate", (inner,))
    _checks.positive_int("accumulate", "every_k", every_k)
    _checks.dtype_or_none("accumulate", "accumulator_dtype", accumulator_dtype)
    update = accepts_extra_args(inner.update)

    def init_fn(params):
        return AccumulateState(
            tree.zero_count(),
            tree.zero_count(),
            inner.init(params),
            _accumulator_zeros(params, accumulator_dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        tree.check_structure(state.acc_grads, updates, owner="accumulate")
        out, inner_state, mini_step, emit, acc_grads = _micro_step(
            update, every_k, None, use_grad_mean, updates, state, params, extra_args
        )
        gradient_step = jnp.where(
            emit, tree.safe_increment(state.gradient_step), state.gradient_step
        )
        return out, AccumulateState(mini_step, gradient_step, inner_state, acc_grads)

    return GradientTransformation(init_fn, update_fn)


def has_updated(state: Any) -> Array:
    """Whether the step that produced ``state`` was an inner step of :func:`accumulate`.

    True right after the ``every_k``-th gradient of a group, False in between.
    ``state`` is the state of :func:`accumulate` or :class:`MultiSteps`, or any
    state holding exactly one of them (a chain around it, for example).

    Args:
      state: an :class:`AccumulateState` or :class:`MultiStepsState`, or a pytree
        that holds exactly one.

    Returns:
      A bool scalar (batched under ``vmap``).

    Raises:
      ValueError: ``state`` holds no accumulation state, or several.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> from gradtx.transforms.accumulate import accumulate, has_updated
      >>> tx = gradtx.chain(accumulate(gradtx.adam(0.1), every_k=3))
      >>> bool(has_updated(tx.init(jnp.zeros(2))))
      False
    """
    is_acc = lambda x: isinstance(x, (AccumulateState, MultiStepsState))
    found = [x for x in jax.tree.leaves(state, is_leaf=is_acc) if is_acc(x)]
    if len(found) != 1:
        raise ValueError(
            f"has_updated: expected a state holding exactly one AccumulateState "
            f"(from accumulate) or MultiStepsState (from MultiSteps), found {len(found)}."
        )
    return jnp.logical_and(found[0].mini_step == 0, found[0].gradient_step > 0)


# ---------------------------------------------------------------------- apply_every


class ApplyEvery(NamedTuple):
    """State of :func:`apply_every` (Optax's class name and fields)."""

    count: Array  # int32 scalar in [0, k): gradients summed into grad_acc since the last emission.
    grad_acc: Updates  # the sum of those gradients (the last group's after an emission).


def apply_every(k: int = 1) -> GradientTransformation:
    """Sums the updates of ``k`` consecutive steps and emits the sum on the ``k``-th.

    With ``n`` the step count,

    .. math::
        a_n = g_n + [n \\bmod k \\ne 0] \\, a_{n-1}, \\qquad
        u_n = [n \\bmod k = k - 1] \\, a_n

    the steps in between return zeros. Unlike :func:`accumulate`, which wraps an
    optimizer and runs it once per group, ``apply_every`` is a block: what comes
    before it in a chain still runs (and moves its state) on every step, on the
    single gradients. Same name, arguments, state and trajectory as
    ``optax.apply_every`` for finite gradients.

    Note:
      Optax forms ``a_n`` as ``(n mod k != 0) * a_{n-1} + g_n`` and ``u_n`` as a
      product too, so an ``inf`` or NaN gradient, once summed, turns every later
      sum into NaN (``0 * inf``) and every in-between update into NaN. gradtx
      selects instead of multiplying: the group that holds the bad gradient emits
      it, and the next group starts from zero. The sum is kept in the gradient's
      dtype, at least float32, and the update returned in the gradient's dtype.

    Args:
      k: the number of steps per emission, an integer >= 1 (``1``: every step).

    Returns:
      A transformation whose state is :class:`ApplyEvery`.

    Raises:
      ValueError: ``k`` is not an integer >= 1; the updates' tree differs from the
        params'.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.apply_every(2)
      >>> state = tx.init(jnp.zeros(1))
      >>> first, state = tx.update(jnp.array([1.0]), state)
      >>> second, state = tx.update(jnp.array([3.0]), state)
      >>> first, second, int(state.count)
      (Array([0.], dtype=float32), Array([4.], dtype=float32), 0)
    """
    _checks.positive_int("apply_every", "k", k)

    def init_fn(params):
        tree.check_inexact(params, "apply_every")
        return ApplyEvery(tree.zero_count(), _accumulator_zeros(params, None))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.grad_acc, updates, owner="apply_every")
        n = state.count % k
        emit = n == k - 1

        def leaf(g, acc):
            total = jnp.where(n != 0, acc, jnp.zeros_like(acc)) + g.astype(acc.dtype)
            return total, jnp.where(emit, total, jnp.zeros_like(total)).astype(g.dtype)

        grad_acc, out = tree.map_unzip(leaf, 2, updates, state.grad_acc)
        return out, ApplyEvery(((n + 1) % k).astype(jnp.int32), grad_acc)

    return GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------- when to skip a gradient
# Optax's ``should_skip_update_fn`` protocol of ``MultiSteps``:
# ``fn(updates, gradient_step, params) -> (should_skip, info)``.


def skip_not_finite(updates: Updates, gradient_step: Any, params: Any) -> tuple[Array, Any]:
    """Whether ``updates`` hold a NaN or an infinity, and how many such elements.

    A predicate of Optax's ``should_skip_update_fn`` protocol (for
    ``optax.MultiSteps``): ``gradient_step`` and ``params`` are ignored. A complex
    element counts when either part is not finite. Same name, arguments and
    results as ``optax.skip_not_finite``, except that the count is an int32 even
    for an empty tree (Optax: a float32 0).

    Args:
      updates: the gradients (a pytree).
      gradient_step: the inner step count (unused).
      params: the parameters (unused).

    Returns:
      ``(should_skip, {"should_skip": should_skip, "num_not_finite": n})``: a bool
      scalar, and the int32 number of elements that are NaN or infinite.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> skip, info = gradtx.skip_not_finite({"a": jnp.array([1.0, jnp.inf, jnp.nan])}, 0, None)
      >>> bool(skip), int(info["num_not_finite"])
      (True, 2)
    """
    del gradient_step, params
    counts = [jnp.sum(~jnp.isfinite(x), dtype=jnp.int32) for x in jax.tree.leaves(updates)]
    num_not_finite = sum(counts, jnp.zeros([], jnp.int32))
    should_skip = num_not_finite > 0
    return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


def skip_large_updates(
    updates: Updates, gradient_step: Any, params: Any, max_squared_norm: float | Array
) -> tuple[Array, Any]:
    """Whether the squared global norm of ``updates`` reaches ``max_squared_norm``.

    .. math::
        \\text{skip} = \\neg\\left(\\textstyle\\sum_i |g_i|^2 < \\text{max\\_squared\\_norm}\\right)

    which is also True when the norm is NaN or infinite. A predicate of Optax's
    ``should_skip_update_fn`` protocol, bound with
    ``functools.partial(skip_large_updates, max_squared_norm=...)``;
    ``gradient_step`` and ``params`` are ignored. Same name, arguments and results
    as ``optax.skip_large_updates``, except that complex elements count as
    ``|g|^2`` (Optax: ``g**2``, a complex number that no bound compares with) and
    the sum is formed in at least float32.

    Args:
      updates: the gradients (a pytree).
      gradient_step: the inner step count (unused).
      params: the parameters (unused).
      max_squared_norm: the bound, a number >= 0 (``inf``: skip only non-finite
        norms); traced values are not checked.

    Returns:
      ``(should_skip, {"should_skip": should_skip, "norm_squared": s})``.

    Raises:
      ValueError: a concrete ``max_squared_norm`` that is negative or NaN.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> skip, info = gradtx.skip_large_updates(jnp.array([3.0, 4.0]), 0, None, 20.0)
      >>> bool(skip), float(info["norm_squared"])
      (True, 25.0)
    """
    del gradient_step, params
    bound = _checks.scalar("skip_large_updates", "max_squared_norm", max_squared_norm)
    if bound is not None and (np.isnan(bound) or bound < 0):
        _checks._fail(
            "skip_large_updates", "max_squared_norm", max_squared_norm, "a number >= 0 (or inf)"
        )
    norm_squared = tree.squared_norm(updates)
    should_skip = jnp.logical_not(norm_squared < max_squared_norm)
    return should_skip, {"should_skip": should_skip, "norm_squared": norm_squared}


def _never_skip(updates: Any, gradient_step: Array, params: Any) -> tuple[Array, Any]:
    del updates, gradient_step, params
    return jnp.asarray(False), ()


class MultiSteps:
    r"""Optax's ``MultiSteps``: gradient accumulation with a schedule for ``k``.

    The same accumulation as :func:`accumulate`, behind Optax's class and
    signature: the number of micro-batches per inner step is
    ``k_t = every_k_schedule(t)``, with ``t`` the number of inner steps taken
    (``state.gradient_step``), so the effective batch may grow during training.
    With ``n`` micro-batch gradients ``g_1..g_n`` gathered since the last inner
    step (``n = k_t`` on the call that completes the group):

    .. math::
        \bar g = \frac{1}{n} \sum_{i=1}^{n} g_i, \qquad
        \text{out} = \begin{cases}
          \text{opt}(\bar g) & n = k_t \\
          0 & n < k_t
        \end{cases}

    (the sum instead of the mean with ``use_grad_mean=False``). A micro-batch for
    which ``should_skip_update_fn(updates, gradient_step, params)`` returns True
    is dropped: zeros are returned and nothing but ``skip_state`` changes, as if
    the call had not happened. Use it through :meth:`gradient_transformation`
    (or its :meth:`init` and :meth:`update`); :meth:`has_updated` tells whether a
    call was an inner step.

    Note:
      Optax's ``accumulator_dtype`` defaults to float32, which drops the
      imaginary part of complex gradients and the extra digits of float64 ones;
      here ``None`` (the default) accumulates each leaf in its gradient's dtype,
      widened to at least float32 (as :func:`accumulate`). For float32,
      bfloat16 and float16 gradients the two agree. A schedule value is rounded
      to the nearest integer and taken as at least 1.

    Args:
      opt: the transformation that steps on the averaged gradient.
      every_k_schedule: ``k``: an integer >= 1, or a schedule ``t -> k_t`` of
        the number of inner steps ``t`` taken so far.
      use_grad_mean: average the gradients (default); ``False`` sums them.
      should_skip_update_fn: None, or a function ``(updates, gradient_step,
        params) -> (skip, skip_state)`` with ``skip`` a bool scalar (Optax's
        ``skip_not_finite`` and ``skip_large_updates`` are such functions);
        ``skip_state`` is kept in the state for monitoring.
      accumulator_dtype: dtype of the accumulated gradients; ``None`` (default)
        uses each leaf's dtype, at least float32 (see the note).

    Raises:
      ValueError: ``every_k_schedule`` is neither an integer >= 1 nor callable;
        ``should_skip_update_fn`` is neither None nor callable;
        ``accumulator_dtype`` is not a floating dtype; at ``update``, the
        updates' tree differs from the params', or ``should_skip_update_fn``
        returned something other than a bool scalar.
      TypeError: ``opt`` is not a transformation.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> ms = gradtx.MultiSteps(gradtx.sgd(0.1), every_k_schedule=2)
      >>> tx = ms.gradient_transformation()
      >>> state = tx.init(jnp.zeros(1))
      >>> _, state = tx.update(jnp.array([1.0]), state)
      >>> updates, state = tx.update(jnp.array([3.0]), state)
      >>> updates, bool(ms.has_updated(state))  # -0.1 * mean(1, 3)
      (Array([-0.2], dtype=float32), True)

    References:
      Optax's ``MultiSteps`` (its signature and state); the accumulation is
      :func:`accumulate`'s.
    """

    def __init__(
        self,
        opt: GradientTransformation,
        every_k_schedule: int | Callable[[Array], Any],
        use_grad_mean: bool = True,
        should_skip_update_fn: ShouldSkipUpdateFunction | None = None,
        accumulator_dtype: Any | None = None,
    ):
        owner = "MultiSteps"
        check_members(owner, (opt,))
        if not callable(every_k_schedule):
            _checks.positive_int(owner, "every_k_schedule", every_k_schedule)
        if should_skip_update_fn is not None and not callable(should_skip_update_fn):
            _checks._fail(owner, "should_skip_update_fn", should_skip_update_fn, "None or callable")
        _checks.dtype_or_none(owner, "accumulator_dtype", accumulator_dtype)
        self._opt = opt
        self._update = accepts_extra_args(opt.update)
        self._every_k_schedule = every_k_schedule
        self._use_grad_mean = use_grad_mean
        self._should_skip = should_skip_update_fn or _never_skip
        self._accumulator_dtype = accumulator_dtype

    @property
    def inner_opt(self) -> GradientTransformation:
        """The wrapped transformation."""
        return self._opt

    def _every_k(self, gradient_step: Array) -> Any:
        if not callable(self._every_k_schedule):
            return self._every_k_schedule
        k = jnp.round(jnp.asarray(self._every_k_schedule(gradient_step)))
        return jnp.maximum(k, 1).astype(jnp.int32)

    def init(self, params: Any) -> MultiStepsState:
        """The state before the first micro-batch."""
        step = tree.zero_count()
        _, skip_state = self._should_skip(tree.zeros_like(params), step, params)
        return MultiStepsState(
            tree.zero_count(),
            step,
            self._opt.init(params),
            _accumulator_zeros(params, self._accumulator_dtype),
            skip_state,
        )

    def update(
        self, updates: Updates, state: MultiStepsState, params: Any = None, **extra_args: Any
    ) -> tuple[Updates, MultiStepsState]:
        """Gathers one micro-batch's ``updates``; steps ``opt`` on the last of a group."""
        tree.check_structure(state.acc_grads, updates, owner="MultiSteps")
        skip, skip_state = self._should_skip(updates, state.gradient_step, params)
        skip = jnp.asarray(skip)
        if skip.dtype != jnp.bool_ or skip.shape != ():
            raise ValueError(
                "MultiSteps: should_skip_update_fn must return (a bool scalar, skip_state); "
                f"its first output has dtype {skip.dtype} and shape {skip.shape}."
            )
        every_k = self._every_k(state.gradient_step)
        out, inner_state, mini_step, emit, acc_grads = _micro_step(
            self._update, every_k, skip, self._use_grad_mean, updates, state, params, extra_args
        )
        gradient_step = jnp.where(
            emit, tree.safe_increment(state.gradient_step), state.gradient_step
        )
        return out, MultiStepsState(mini_step, gradient_step, inner_state, acc_grads, skip_state)

    def has_updated(self, state: Any) -> Array:
        """Whether the call that produced ``state`` was an inner step (see :func:`has_updated`)."""
        return has_updated(state)

    def gradient_transformation(self) -> GradientTransformation:
        """This accumulation as a transformation: ``GradientTransformation(init, update)``."""
        return GradientTransformation(self.init, self.update)
