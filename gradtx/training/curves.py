"""Learning curves without leaving jit.

"The learning rate is best chosen by monitoring learning curves that plot the
objective function as a function of time" (Goodfellow et al. 2016, Sec. 8.3.1):
too large a rate shows as violent oscillations, too small as a slow crawl.
Two ways to collect them, both inside compiled code:

* :func:`step_metrics` measures one step (loss, learning rate, gradient norm,
  update norm) as a :class:`StepMetrics`; return it from a ``lax.scan`` body
  and the scan stacks the curves.
* :func:`record_curves` wraps an optimizer and writes the same numbers into
  fixed-size arrays in its state, for training loops that only carry state.

:func:`learning_curves` turns either into numpy arrays, and
:func:`gradtx.training.plot.plot_learning_curves` draws several runs to a PNG.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, OptState, ScalarOrSchedule, Updates
from gradtx.combine import accepts_extra_args
from gradtx.transforms.inject import InjectHyperparamsState

METRICS = ("loss", "learning_rate", "grad_norm", "update_norm")


class StepMetrics(NamedTuple):
    """The measures of one training step; stacked along a leading axis, the curves.

    Each field is a real float scalar per step (NaN where not measured).
    """

    loss: Array  # the loss of the params the gradient was taken at.
    learning_rate: Array  # the learning rate used by the step.
    grad_norm: Array  # ||g||, the global norm of the gradient.
    update_norm: Array  # ||delta theta||, the global norm of the update.


def _metric_dtype(*trees: Any) -> jnp.dtype:
    """The widest real float dtype among the leaves, at least float32."""
    dtype = jnp.dtype(jnp.float32)
    for leaf in jax.tree.leaves(trees):
        leaf_dtype = jnp.result_type(leaf)
        if jnp.issubdtype(leaf_dtype, jnp.inexact):
            dtype = jnp.promote_types(dtype, tree.real_dtype(leaf_dtype))
    return dtype


def step_metrics(
    grads: Updates, updates: Updates, *, loss: Any = None, learning_rate: Any = None
) -> StepMetrics:
    """Measures one step: the loss, the learning rate and the two global norms.

    .. math::
        \\|g\\| = \\sqrt{\\textstyle\\sum_i |g_i|^2}, \\qquad
        \\|\\Delta\\theta\\| = \\sqrt{\\textstyle\\sum_i |\\Delta\\theta_i|^2}

    over every element of every leaf. Pure and branch-free: call it in a
    jitted step and return it (from a ``lax.scan`` body, the scan stacks the
    curves).

    Args:
      grads: the gradient of the step (a pytree).
      updates: the update the optimizer returned for it (a pytree).
      loss: the loss at the params the gradient was taken at; ``None``: NaN.
      learning_rate: the learning rate of the step; ``None``: NaN.

    Returns:
      A :class:`StepMetrics` of scalars in the widest float dtype of the
      inputs, at least float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.training.curves import step_metrics
      >>> m = step_metrics(jnp.array([3.0, 4.0]), jnp.array([-0.3, -0.4]), loss=2.0)
      >>> float(m.loss), float(m.grad_norm), round(float(m.update_norm), 6)
      (2.0, 5.0, 0.5)
    """
    measured, dtype = _measure(grads, updates, loss, learning_rate)
    return StepMetrics(*(jnp.full([], jnp.nan, dtype) if m is None else m for m in measured))


def _measure(
    grads: Updates, updates: Updates, loss: Any, learning_rate: Any
) -> tuple[StepMetrics, jnp.dtype]:
    """The metrics of one step, ``None`` for a loss or a rate not given; and their dtype."""
    dtype = _metric_dtype(grads, updates)
    measured = StepMetrics(
        loss=None if loss is None else jnp.real(jnp.asarray(loss)).astype(dtype),
        learning_rate=None if learning_rate is None else jnp.asarray(learning_rate, dtype),
        grad_norm=tree.global_norm(grads).astype(dtype),
        update_norm=tree.global_norm(updates).astype(dtype),
    )
    return measured, dtype


class RecordCurvesState(NamedTuple):
    """State of :func:`record_curves`; read it with :func:`learning_curves`.

    The state holds no NaN (a finite state is what the optimizer contract and
    ``jax_debug_nans`` expect): a slot not recorded, or a metric not measured
    (no ``value`` passed, no learning rate known), holds 0 and is marked in
    ``measured``; :func:`learning_curves` shows it as NaN.
    """

    count: Array  # int32 scalar: updates so far.
    steps: Array  # int32 (num_steps,): the step recorded in each slot; -1 while empty.
    curves: StepMetrics  # float arrays (num_steps,): the values recorded; 0 elsewhere.
    measured: StepMetrics  # bool arrays (num_steps,): the slot holds a measured value.
    inner_state: OptState  # the wrapped optimizer's state.


def _injected_learning_rate(state: OptState) -> Array | None:
    """The ``learning_rate`` stored by an :func:`inject_hyperparams` inside ``state``."""
    is_injected = lambda x: isinstance(x, InjectHyperparamsState)  # noqa: E731
    for node in jax.tree.leaves(state, is_leaf=is_injected):
        if is_injected(node) and "learning_rate" in node.hyperparams:
            return node.hyperparams["learning_rate"]
    return None


def _write(curves: StepMetrics, point: Any, slot: Array) -> StepMetrics:
    """``curves[slot] = point``, field by field; a slot past the end is dropped."""
    pairs = zip(curves, point, strict=True)
    return StepMetrics(*(c.at[slot].set(jnp.asarray(p, c.dtype), mode="drop") for c, p in pairs))


def record_curves(
    inner: GradientTransformation,
    num_steps: int,
    *,
    every: int = 1,
    learning_rate: ScalarOrSchedule | None = None,
) -> GradientTransformation:
    """Wraps an optimizer to record its learning curves in its state, under jit.

    Each ``update`` runs ``inner`` and, on every ``every``-th step (steps
    ``0, every, 2 every, ...``), writes :func:`step_metrics` of the incoming
    gradient and the outgoing update into slot ``step // every`` of
    ``state.curves``; steps past ``num_steps`` slots are not recorded. The loss
    is the extra argument ``value`` (``tx.update(g, state, params,
    value=loss)``), not measured when absent. The learning rate is ``learning_rate``
    (a number, or a schedule of the step count) when given, otherwise the
    ``learning_rate`` of an :func:`inject_hyperparams` found in ``inner``'s
    state, otherwise not measured. The updates are ``inner``'s, unchanged.

    Args:
      inner: the optimizer to record.
      num_steps: an integer >= 1: the number of slots of each curve.
      every: an integer >= 1: record one step in ``every``.
      learning_rate: ``None``, or the learning rate to record: a finite number
        or a schedule ``count -> value``.

    Returns:
      A transformation with ``inner``'s updates and a
      :class:`RecordCurvesState`; read it with :func:`learning_curves`.

    Raises:
      ValueError: ``num_steps`` or ``every`` is not an integer >= 1, or
        ``learning_rate`` is not finite.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> from gradtx.training.curves import learning_curves, record_curves
      >>> tx = record_curves(gradtx.sgd(0.1), num_steps=3, learning_rate=0.1)
      >>> params = jnp.array([1.0])
      >>> state = tx.init(params)
      >>> for _ in range(2):
      ...     updates, state = tx.update(2 * params, state, params, value=params[0] ** 2)
      ...     params = gradtx.apply_updates(params, updates)
      >>> learning_curves(state)["loss"].round(4)
      array([1.  , 0.64])
    """
    _checks.positive_int("record_curves", "num_steps", num_steps)
    _checks.positive_int("record_curves", "every", every)
    if learning_rate is not None:
        _checks.learning_rate("record_curves", learning_rate)
    inner_update = accepts_extra_args(inner.update)

    def init_fn(params):
        dtype = _metric_dtype(params)
        return RecordCurvesState(
            count=tree.zero_count(),
            steps=jnp.full((num_steps,), -1, jnp.int32),
            # One array per field: a state whose leaves alias cannot be donated.
            curves=StepMetrics(*(jnp.zeros((num_steps,), dtype) for _ in METRICS)),
            measured=StepMetrics(*(jnp.zeros((num_steps,), bool) for _ in METRICS)),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        new_updates, inner_state = inner_update(updates, state.inner_state, params, **extra_args)
        if learning_rate is None:
            rate = _injected_learning_rate(inner_state)
        else:
            rate = learning_rate(state.count) if callable(learning_rate) else learning_rate
        point, _ = _measure(updates, new_updates, extra_args.get("value"), rate)
        slot = jnp.where(state.count % every == 0, state.count // every, num_steps)
        steps = state.steps.at[slot].set(state.count, mode="drop")
        curves = _write(state.curves, [0.0 if p is None else p for p in point], slot)
        measured = _write(state.measured, [p is not None for p in point], slot)
        count = tree.safe_increment(state.count)
        return new_updates, RecordCurvesState(count, steps, curves, measured, inner_state)

    return GradientTransformation(init_fn, update_fn)


def learning_curves(curves: RecordCurvesState | StepMetrics | Mapping[str, Any]) -> dict:
    """The curves of one run as numpy arrays, with the step of each point.

    Args:
      curves: a :class:`RecordCurvesState` (the slots recorded so far, with the
        steps they hold), a :class:`StepMetrics` stacked by ``lax.scan`` (one
        point per step, steps ``0, 1, ...``), or a dict of 1-D arrays named
        after the metrics (and optionally ``step``).

    Returns:
      A dict ``name -> 1-D float64 numpy array``, all of one length: ``step``
      and each metric present.

    Raises:
      ValueError: the arrays are not 1-D or not all of one length (a batch
        of runs from ``vmap``: index one run first).

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.training.curves import StepMetrics, learning_curves
      >>> stacked = StepMetrics(*(jnp.arange(3.0) for _ in range(4)))
      >>> learning_curves(stacked)["step"]
      array([0., 1., 2.])
    """
    if isinstance(curves, RecordCurvesState):
        steps = np.asarray(curves.steps)
        if steps.ndim != 1:
            raise ValueError(
                f"learning_curves: expected the state of one run, got steps of shape {steps.shape}."
            )
        kept = steps >= 0
        out = {
            name: np.where(np.asarray(known)[kept], np.asarray(value, np.float64)[kept], np.nan)
            for name, value, known in zip(METRICS, curves.curves, curves.measured, strict=True)
        }
        out["step"] = steps[kept]
    elif isinstance(curves, StepMetrics):
        out = dict(curves._asdict())
    else:
        out = dict(curves)
    out = {name: np.asarray(value, np.float64) for name, value in out.items()}
    shapes = {value.shape for value in out.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(
            f"learning_curves: expected 1-D curves of one length (one run), got shapes {shapes}."
        )
    out.setdefault("step", np.arange(next(iter(shapes))[0], dtype=np.float64))
    return out
