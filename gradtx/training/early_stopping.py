"""Early stopping (Goodfellow et al. 2016, Alg. 7.1-7.3) as pure, jit-friendly functions.

Alg. 7.1 is a state machine fed one validation value every ``n`` training
steps: :func:`early_stopping` returns its ``init`` / ``update`` pair, whose
state (:class:`EarlyStoppingState`) holds the best value ``v``, the best step
``i*``, a copy of the best parameters ``theta*``, the patience counter ``j`` and
the stop flag. It has no Python control flow on values, so it runs eagerly, under
``jit``, ``vmap`` and inside ``lax.scan``. :func:`run_early_stopping` is the
algorithm's whole loop around the user's step and evaluation functions.

The two ways of using the data the book gives next reuse the result:
:func:`retrain_for_best_steps` (Alg. 7.2: train afresh on all the data for
``i*`` steps) and :func:`continue_until_target` (Alg. 7.3: keep training on all
the data until the validation loss falls to the training loss recorded when
early stopping stopped).

Throughout, a *carry* is whatever the user's training step transforms (the
params, or a tuple ``(params, opt_state, key)``): ``step_fn(carry) -> carry``
runs one training step and ``eval_fn(carry) -> scalar`` measures a loss. Both
must be JAX-traceable, since the loops are ``lax`` loops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, Params
from gradtx.transforms.plateau import has_improved

Carry = TypeVar("Carry")
StepFn = Callable[[Any], Any]
"""``step_fn(carry) -> carry``: one training step."""
EvalFn = Callable[[Any], Array]
"""``eval_fn(carry) -> scalar``: a loss measured on the carry (validation or training)."""

_INT32_MAX = int(jnp.iinfo(jnp.int32).max)


class EarlyStoppingState(NamedTuple):
    """State of the early-stopping machine of :func:`early_stopping` (Alg. 7.1).

    The float fields are real scalars in the params' widest float dtype (at
    least float32); the counters are int32 scalars.
    """

    step: Array  # i: training steps so far, ``eval_every`` per evaluation.
    best_value: Array  # v: the lowest validation value so far; +inf before the first.
    best_step: Array  # i*: the step at which ``best_value`` was reached; 0 before.
    best_params: Params  # theta*: a copy of the params at step i*, the initial ones before.
    patience_count: Array  # j: evaluations in a row without improvement.
    should_stop: Array  # bool scalar, j >= p; from then on ``update`` changes nothing.


class EarlyStopping(NamedTuple):
    """The pure pair of functions of :func:`early_stopping`.

    Attributes:
      init: ``init(params) -> EarlyStoppingState``.
      update: ``update(state, value, params) -> EarlyStoppingState``: one
        evaluation of the validation ``value`` of ``params``.
    """

    init: Callable[[Params], EarlyStoppingState]
    update: Callable[[EarlyStoppingState, Any, Params], EarlyStoppingState]


def _value_dtype(params: Params) -> jnp.dtype:
    """The widest real float dtype among the params, at least float32."""
    dtype = jnp.dtype(jnp.float32)
    for leaf in jax.tree.leaves(params):
        leaf_dtype = jnp.result_type(leaf)
        if jnp.issubdtype(leaf_dtype, jnp.inexact):
            dtype = jnp.promote_types(dtype, tree.real_dtype(leaf_dtype))
    return dtype


def _add_steps(step: Array, n: int) -> Array:
    """``step + n`` for an int32 counter, saturating at the int32 maximum."""
    return jnp.where(step <= _INT32_MAX - n, step + n, _INT32_MAX).astype(jnp.int32)


def _copy(params: Params) -> Params:
    # A state leaf that aliases a params buffer breaks when the params are donated.
    return jax.tree.map(lambda x: jnp.array(x, copy=True), params)


def evaluate_early_stopping(
    state: EarlyStoppingState,
    value: Array,
    params: Params,
    *,
    patience: int,
    eval_every: int,
    rtol: Any,
    atol: Any,
) -> EarlyStoppingState:
    """One pass of the body of Alg. 7.1's loop, after the ``n`` training steps.

    ``i <- i + n``; if ``v' < v`` (less the margin): ``j <- 0``, ``theta* <-
    theta``, ``i* <- i``, ``v <- v'``; else ``j <- j + 1``; stop when ``j >= p``.
    A state that has stopped is returned unchanged.

    Args:
      state: the state before this evaluation.
      value: ``v'``, the validation value of ``params`` (a scalar).
      params: ``theta``, the params after the ``n`` training steps.
      patience, eval_every, rtol, atol: see :func:`early_stopping`.

    Returns:
      The state after the evaluation.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.training.early_stopping import early_stopping, evaluate_early_stopping
      >>> state = early_stopping(patience=1).init(jnp.zeros(1))
      >>> state = evaluate_early_stopping(
      ...     state, 2.0, jnp.ones(1), patience=1, eval_every=5, rtol=0.0, atol=0.0)
      >>> int(state.best_step), float(state.best_value)
      (5, 2.0)
    """
    value = jnp.asarray(value).astype(state.best_value.dtype)
    step = _add_steps(state.step, eval_every)
    improved = has_improved(value, state.best_value, rtol, atol)
    count = jnp.where(improved, 0, tree.safe_increment(state.patience_count))
    evaluated = EarlyStoppingState(
        step=step,
        best_value=jnp.where(improved, value, state.best_value),
        best_step=jnp.where(improved, step, state.best_step).astype(jnp.int32),
        best_params=jax.tree.map(
            lambda new, old: jnp.where(improved, new, old).astype(old.dtype),
            params,
            state.best_params,
        ),
        patience_count=count.astype(jnp.int32),
        should_stop=count >= patience,
    )
    return jax.tree.map(lambda old, new: jnp.where(state.should_stop, old, new), state, evaluated)


def early_stopping(
    patience: int, *, eval_every: int = 1, rtol: float = 0.0, atol: float = 0.0
) -> EarlyStopping:
    """Early stopping, Alg. 7.1, as a pure state machine: ``(init, update)``.

    Train, and every ``n = eval_every`` steps call ``update(state, v', theta)``
    with the validation value ``v'`` of the current params ``theta``. The state
    follows the algorithm's variables: ``step`` is ``i``, ``best_value`` ``v``,
    ``best_step`` ``i*``, ``best_params`` ``theta*``, ``patience_count`` ``j``:

    .. math::
        i \\leftarrow i + n; \\quad
        \\text{if } v' < v - (\\text{rtol}\\,|v| + \\text{atol}):\\;
        j \\leftarrow 0,\\ \\theta^* \\leftarrow \\theta,\\ i^* \\leftarrow i,\\
        v \\leftarrow v' \\quad \\text{else } j \\leftarrow j + 1

    and ``should_stop`` becomes True when ``j >= p``: the book's loop ends; the
    best params are ``state.best_params`` and the best number of steps
    ``state.best_step``. Later calls leave the state unchanged, so a
    ``lax.scan`` of fixed length may run past the stopping point (freeze the
    training too with ``jnp.where(state.should_stop, old, new)``). A NaN value
    never improves. ``update`` is pure and branch-free: it runs under ``jit``,
    ``vmap`` (a batch of runs) and ``lax.scan``.

    Args:
      patience: ``p``, an integer >= 1: the number of evaluations in a row
        without improvement after which training stops.
      eval_every: ``n``, an integer >= 1: the training steps between two
        evaluations; ``step`` and ``best_step`` count training steps.
      rtol: >= 0, the improvement required relative to ``|v|``.
      atol: >= 0, the improvement required in absolute terms (Keras'
        ``min_delta``). With ``rtol = atol = 0`` (default), any decrease counts,
        as in the book. The rule is :func:`reduce_on_plateau`'s.

    Returns:
      An :class:`EarlyStopping` pair; ``init(params)`` copies the params as the
      first ``theta*``, and reads the value dtype from them (their widest float
      dtype, at least float32).

    Raises:
      ValueError: ``patience`` or ``eval_every`` is not an integer >= 1, or
        ``rtol`` or ``atol`` is negative or not finite.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.training.early_stopping import early_stopping
      >>> stopper = early_stopping(patience=2, eval_every=10)
      >>> state = stopper.init(jnp.zeros(1))
      >>> for k, loss in enumerate([5.0, 3.0, 4.0, 2.0, 2.5, 2.1, 1.0]):
      ...     state = stopper.update(state, loss, jnp.full(1, k))
      >>> bool(state.should_stop), int(state.step), int(state.best_step)
      (True, 60, 40)
      >>> state.best_params  # the params of the evaluation at step 40
      Array([3.], dtype=float32)

    References:
      Goodfellow, Bengio & Courville 2016, *Deep Learning*, Sec. 7.8, Alg. 7.1.
    """
    owner = "early_stopping"
    _checks.positive_int(owner, "patience", patience)
    _checks.positive_int(owner, "eval_every", eval_every)
    _checks.non_negative(owner, "rtol", rtol)
    _checks.non_negative(owner, "atol", atol)
    rule = dict(patience=patience, eval_every=eval_every, rtol=rtol, atol=atol)

    def init(params: Params) -> EarlyStoppingState:
        dtype = _value_dtype(params)
        return EarlyStoppingState(
            step=tree.zero_count(),
            best_value=jnp.full([], jnp.inf, dtype),
            best_step=tree.zero_count(),
            best_params=_copy(params),
            patience_count=tree.zero_count(),
            should_stop=jnp.zeros([], bool),
        )

    def update(state: EarlyStoppingState, value: Any, params: Params) -> EarlyStoppingState:
        value = jnp.asarray(value)
        if value.shape != ():
            raise ValueError(
                f"{owner}: value must be a scalar validation loss, got shape {value.shape}."
            )
        return evaluate_early_stopping(state, value, params, **rule)

    return EarlyStopping(init, update)


def _run_steps(step_fn: StepFn, carry: Carry, num_steps: Any) -> Carry:
    return jax.lax.fori_loop(0, num_steps, lambda _, c: step_fn(c), carry)


def run_early_stopping(
    step_fn: StepFn,
    eval_fn: EvalFn,
    carry: Carry,
    *,
    patience: int,
    eval_every: int = 1,
    max_steps: int | None = None,
    rtol: float = 0.0,
    atol: float = 0.0,
) -> tuple[Carry, EarlyStoppingState]:
    """Runs Alg. 7.1 to the end: train, evaluate every ``n`` steps, stop on patience.

    A ``lax.while_loop`` of: ``eval_every`` calls of ``step_fn``, then one
    :func:`early_stopping` update with ``eval_fn(carry)``; it ends when the
    patience runs out (or after ``max_steps`` training steps). The whole carry
    is what is copied as ``theta*``.

    Args:
      step_fn: ``step_fn(carry) -> carry``, one training step on the training
        data (the book's subtrain set), JAX-traceable.
      eval_fn: ``eval_fn(carry) -> scalar``, the validation loss, JAX-traceable.
      carry: the initial training state ``theta_o`` (any pytree of arrays).
      patience, eval_every, rtol, atol: see :func:`early_stopping`.
      max_steps: ``None`` (default: until the patience runs out, as in the
        book), or an integer >= 1: stop after the first evaluation at or past
        this many training steps.

    Returns:
      ``(carry, state)``: the carry at the stopping point (``theta`` of the book,
      which Alg. 7.3 continues from) and the final :class:`EarlyStoppingState`,
      with the best carry ``theta*`` in ``state.best_params`` and ``i*`` in
      ``state.best_step``.

    Raises:
      ValueError: a hyperparameter out of range (see :func:`early_stopping`), or
        ``max_steps`` not an integer >= 1.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.training.early_stopping import run_early_stopping
      >>> step = lambda x: x + 1.0           # training moves x up by one
      >>> valid = lambda x: (x - 3.0) ** 2    # the validation loss is lowest at 3
      >>> carry, state = run_early_stopping(step, valid, jnp.zeros(()), patience=2)
      >>> int(state.best_step), float(state.best_params), float(carry)
      (3, 3.0, 5.0)

    References:
      Goodfellow, Bengio & Courville 2016, *Deep Learning*, Sec. 7.8, Alg. 7.1.
    """
    stopper = early_stopping(patience, eval_every=eval_every, rtol=rtol, atol=atol)
    if max_steps is not None:
        _checks.positive_int("run_early_stopping", "max_steps", max_steps)
    limit = _INT32_MAX if max_steps is None else max_steps

    def going(loop):
        _, state = loop
        return jnp.logical_and(~state.should_stop, state.step < limit)

    def body(loop):
        carry, state = loop
        carry = _run_steps(step_fn, carry, eval_every)
        return carry, stopper.update(state, eval_fn(carry), carry)

    return jax.lax.while_loop(going, body, (carry, stopper.init(carry)))


def retrain_for_best_steps(step_fn: StepFn, carry: Carry, best_step: Any) -> Carry:
    """Alg. 7.2: from fresh params, train on all the data for ``i*`` steps.

    Early stopping on a split of the training set finds the best number of
    steps ``i*`` (``state.best_step`` of :func:`run_early_stopping`); the model
    is then initialised again and trained on the whole training set for that
    many steps. The book notes a choice here: the same number of *steps*
    (this function), or the same number of *passes* over the data, which on
    the larger set means ``i* * len(train) / len(subtrain)`` steps; pass that
    product to follow the second reading.

    Args:
      step_fn: ``step_fn(carry) -> carry``, one training step on all the
        training data, JAX-traceable.
      carry: the freshly initialised training state.
      best_step: ``i*``, an integer >= 0 (a Python int or an int array, traced
        or not).

    Returns:
      The carry after ``best_step`` calls of ``step_fn``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.training.early_stopping import retrain_for_best_steps
      >>> float(retrain_for_best_steps(lambda x: x + 2.0, jnp.zeros(()), 4))
      8.0

    References:
      Goodfellow, Bengio & Courville 2016, *Deep Learning*, Sec. 7.8, Alg. 7.2.
    """
    return _run_steps(step_fn, carry, jnp.asarray(best_step, jnp.int32))


class ContinueResult(NamedTuple):
    """What :func:`continue_until_target` returns."""

    carry: Any  # the training state when the loop ended.
    steps: Array  # int32 scalar: the training steps run.
    value: Array  # the last validation value, eval_fn(carry).
    reached: Array  # bool scalar: value <= target (False on NaN or at max_steps).


def continue_until_target(
    step_fn: StepFn,
    eval_fn: EvalFn,
    carry: Carry,
    target: Any,
    *,
    eval_every: int = 1,
    max_steps: int | None = None,
) -> ContinueResult:
    """Alg. 7.3: keep training on all the data until the validation loss <= target.

    After early stopping on a split, ``epsilon`` is the training (subtrain)
    loss at the stopping point; training then continues from the stopping
    point on the whole training set, ``n`` steps at a time, while the
    validation loss exceeds it:

    .. math::
        \\textbf{while } J(\\theta; X^{(valid)}) > \\epsilon:
        \\text{ train on } X^{(train)} \\text{ for } n \\text{ steps}

    The book warns that the target may never be reached; ``max_steps`` bounds
    the loop, and a NaN validation loss ends it, both with ``reached=False``.

    Args:
      step_fn: ``step_fn(carry) -> carry``, one training step on all the
        training data, JAX-traceable.
      eval_fn: ``eval_fn(carry) -> scalar``, the validation loss, JAX-traceable.
      carry: the training state at the stopping point of early stopping.
      target: ``epsilon``, the training loss recorded at the stopping point.
      eval_every: ``n``, an integer >= 1: the training steps between two checks.
      max_steps: ``None`` (default: no bound) or an integer >= 1: no new block
        of ``n`` steps starts once this many have run.

    Returns:
      A :class:`ContinueResult` ``(carry, steps, value, reached)``.

    Raises:
      ValueError: ``eval_every`` or ``max_steps`` is not an integer >= 1.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.training.early_stopping import continue_until_target
      >>> step = lambda x: 0.5 * x            # the validation loss below halves per step
      >>> out = continue_until_target(step, lambda x: x, jnp.asarray(8.0), target=1.5)
      >>> int(out.steps), float(out.value), bool(out.reached)
      (3, 1.0, True)

    References:
      Goodfellow, Bengio & Courville 2016, *Deep Learning*, Sec. 7.8, Alg. 7.3.
    """
    owner = "continue_until_target"
    _checks.positive_int(owner, "eval_every", eval_every)
    if max_steps is not None:
        _checks.positive_int(owner, "max_steps", max_steps)
    limit = _INT32_MAX if max_steps is None else max_steps

    def going(loop):
        _, steps, value = loop
        return jnp.logical_and(value > target, steps < limit)

    def body(loop):
        carry, steps, _ = loop
        carry = _run_steps(step_fn, carry, eval_every)
        return carry, _add_steps(steps, eval_every), jnp.asarray(eval_fn(carry))

    first = (carry, tree.zero_count(), jnp.asarray(eval_fn(carry)))
    carry, steps, value = jax.lax.while_loop(going, body, first)
    return ContinueResult(carry, steps, value, value <= target)
