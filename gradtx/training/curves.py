"""Learning curves without leaving jit, and a plot of several runs.

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
:func:`plot_learning_curves` draws several runs to a PNG (matplotlib, an
optional dependency, imported only there).
"""

from __future__ import annotations

import os
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


_TITLES = {
    "loss": "loss",
    "learning_rate": "learning rate",
    "grad_norm": "gradient norm",
    "update_norm": "update norm",
}

_NO_MATPLOTLIB = (
    "plot_learning_curves needs matplotlib, an optional dependency of gradtx: "
    "pip install 'gradtx[examples]' (or pip install matplotlib)."
)


def wants_log_scale(values: np.ndarray) -> bool:
    """Whether a curve reads better on a log axis: non-negative, spanning >= 10x.

    Args:
      values: the values of one curve (or several); NaN and infinities are
        ignored.

    Returns:
      True when no finite value is negative and the largest positive value is
      at least ten times the smallest. Zeros (a loss that hits its minimum
      exactly) are left out of the log axis rather than ruling it out.

    Examples:
      >>> import numpy as np
      >>> from gradtx.training.curves import wants_log_scale
      >>> wants_log_scale(np.array([2.0, 0.1, 0.0])), wants_log_scale(np.array([2.0, 1.0]))
      (True, False)
    """
    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    if finite.size == 0 or finite.min() < 0 or positive.size == 0:
        return False
    return bool(positive.max() >= 10 * positive.min())


# Twenty colours: matplotlib's ten, then ten darker, brighter or paler ones unlike them.
_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#000000", "#393b79", "#637939", "#8c6d31", "#843c39",
    "#7b4173", "#00a087", "#ff1493", "#b15928", "#6baed6",
)  # fmt: skip
# Four dash patterns and ten marker shapes, cycled apart from the colours, so
# that no two of the first twenty runs share a colour and adjacent ones differ
# in every way.
_DASHES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")
_MARKS_PER_CURVE = 8
_GOLDEN = (5**0.5 - 1) / 2  # staggers the marks of run i by frac(i * _GOLDEN) of their gap
# Figure sizes, in inches.
_PANEL = (4.5, 3.6)  # width, height of one panel with a one-line title over the figure
_TALLER_PER_RUN = 0.12  # beyond ten runs, so that crowded panels spread out
_TITLE_LINE = 0.25
_STEP_AXIS = 0.5  # the ticks and label under a panel
_LEGEND_ROW = 0.21  # one legend entry, small font
_LEGEND_COLUMN = 1.5  # at least
_LEGEND_HANDLE = 0.7  # a line sample and the padding around it
_LEGEND_CHARACTER = 0.065  # per character of the longest label
# Lines never further apart than this fraction of a panel's height look like one;
# the legend says which run lies on which.
_COINCIDE_FRACTION = 0.01


def plot_learning_curves(
    runs: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    metrics: tuple[str, ...] = METRICS,
    title: str | None = None,
) -> str:
    """Plots the learning curves of several runs side by side and writes a PNG.

    One panel per metric, one line per run, the step on the x axis and the
    metric on the y axis. A panel whose values are non-negative and span a
    factor of ten or more (a loss falling by decades, a decayed learning rate)
    gets a log scale (:func:`wants_log_scale`; zeros are then not drawn); a
    metric no run measured (all NaN) gets no panel. Uses matplotlib's Agg
    canvas directly: no window, no change to the user's pyplot backend.

    Each run keeps one style in every panel: its own colour (twenty distinct
    ones), a dash pattern and a marker shape, the markers of different runs at
    different steps so that curves drawn on top of each other still show. A
    run whose lines lie on an earlier run's in every panel (never 1% of the
    panel's height apart) is labelled as on that run. The one legend sits
    beside the panels, in as many columns as keep it no taller than them; the
    figure widens to hold them, and grows taller with more than ten runs.

    Args:
      runs: ``run name -> curves``, each anything :func:`learning_curves`
        reads (a :class:`RecordCurvesState`, a stacked :class:`StepMetrics`, a
        dict of arrays).
      path: the PNG file to write.
      metrics: the metrics to draw, in order, from ``loss``,
        ``learning_rate``, ``grad_norm``, ``update_norm``.
      title: a title over the panels; ``None``: no title.

    Returns:
      ``path``, as a string.

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: ``runs`` is empty, a metric name is unknown, or no run
        measured any of ``metrics``.

    Examples:
      >>> import os, tempfile, numpy as np
      >>> from gradtx.training.curves import plot_learning_curves
      >>> runs = {"sgd": {"loss": np.exp(-np.arange(50) / 10)}}
      >>> path = plot_learning_curves(runs, os.path.join(tempfile.mkdtemp(), "curves.png"))
      >>> open(path, "rb").read(4)
      b'\\x89PNG'
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(_NO_MATPLOTLIB) from error
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not runs:
        raise ValueError(
            f"plot_learning_curves: needs at least one run and metrics among {METRICS}, "
            f"got {len(runs)} runs and unknown metrics {unknown}."
        )
    curves = {name: learning_curves(run) for name, run in runs.items()}
    shown = [m for m in metrics if any(_measured(c, m) for c in curves.values())]
    if not shown:
        raise ValueError(f"plot_learning_curves: no run measured any of {metrics}.")
    scales = {m: wants_log_scale(np.concatenate(_drawn(curves, m))) for m in shown}
    on = _coinciding_runs(curves, scales)
    labels = {name: f"{name} (on {on[name]})" if name in on else name for name in curves}
    width, height, columns = _figure_size(len(shown), list(labels.values()), title)
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    styles = {name: _style(i) for i, name in enumerate(curves)}
    panels = np.atleast_1d(figure.subplots(1, len(shown)))
    for axes, metric in zip(panels, shown, strict=True):
        _draw_panel(axes, metric, scales[metric], curves, styles, labels)
    handles = {}
    for axes in panels:
        for line in axes.get_lines():
            handles.setdefault(line.get_label(), line)
    figure.legend(
        list(handles.values()), list(handles), loc="outside right center", fontsize="small",
        ncols=columns, handlelength=3.0,
    )  # fmt: skip
    if title is not None:
        figure.suptitle(title)
    figure.savefig(os.fspath(path), dpi=100)
    return os.fspath(path)


def _figure_size(panels: int, labels: list[str], title: str | None) -> tuple[float, float, int]:
    """``(width, height, legend columns)``: the legend no taller than the panels beside it."""
    title_lines = 0 if title is None else title.count("\n") + 1
    extra_runs = max(0, len(labels) - 10)
    height = _PANEL[1] + _TITLE_LINE * max(0, title_lines - 1) + _TALLER_PER_RUN * extra_runs
    rows = max(1, int((height - _TITLE_LINE * title_lines - _STEP_AXIS) / _LEGEND_ROW))
    columns = -(-len(labels) // rows)
    column = max(_LEGEND_COLUMN, _LEGEND_HANDLE + _LEGEND_CHARACTER * max(map(len, labels)))
    return _PANEL[0] * panels + column * columns, height, columns


def _style(index: int) -> dict[str, Any]:
    """The line style of run ``index``: colour, dashes, marker shape, where the marks start."""
    return {
        "color": _COLORS[index % len(_COLORS)],
        "linestyle": _DASHES[(index + index // len(_COLORS)) % len(_DASHES)],
        "marker": _MARKERS[index % len(_MARKERS)],
        "markersize": 4,
        "stagger": (index * _GOLDEN) % 1.0,  # a fraction of the gap between marks
    }


def _coinciding_runs(
    curves: Mapping[str, Mapping[str, np.ndarray]], scales: Mapping[str, bool]
) -> dict[str, str]:
    """``{run: earlier run}`` for each run whose lines lie on an earlier run's in every panel.

    Two lines coincide when they are drawn at the same steps (NaN, or off a log
    axis, at the same ones) and never further apart than 1% of the panel's
    height, measured on the panel's scale: on a log axis a 10% gap in a loss
    spanning ten decades is as invisible as a 0.4% gap in value.

    Args:
      curves: ``run name -> {metric: 1-D array}``, as :func:`learning_curves` returns.
      scales: ``metric -> whether its panel is on a log scale``, one per panel.

    Returns:
      Each run that coincides with an earlier run (in ``curves``' order) in
      every panel, mapped to the first such run.

    Examples:
      >>> import numpy as np
      >>> from gradtx.training.curves import _coinciding_runs
      >>> loss = np.exp(-np.arange(50.0))  # 22 decades on a log axis
      >>> _coinciding_runs({"a": {"loss": loss}, "b": {"loss": 1.1 * loss},
      ...                   "c": {"loss": 10 * loss}}, {"loss": True})
      {'b': 'a'}
    """
    heights = {}  # metric -> run -> the line's heights on the panel's scale (NaN: not drawn)
    for metric, log in scales.items():
        drawn = {n: c[metric] for n, c in curves.items() if _measured(c, metric)}
        if log:
            with np.errstate(divide="ignore", invalid="ignore"):
                drawn = {n: np.where(v > 0, np.log10(v), np.nan) for n, v in drawn.items()}
        drawn = {n: np.where(np.isfinite(v), v, np.nan) for n, v in drawn.items()}
        values = np.concatenate(list(drawn.values()))
        heights[metric] = (drawn, _COINCIDE_FRACTION * (np.nanmax(values) - np.nanmin(values)))

    def coincide(a: str, b: str) -> bool:
        for drawn, tolerance in heights.values():
            if (a in drawn) != (b in drawn):
                return False
            if a in drawn and not (
                drawn[a].shape == drawn[b].shape
                and np.array_equal(np.isnan(drawn[a]), np.isnan(drawn[b]))
                and np.nanmax(np.abs(drawn[a] - drawn[b]), initial=0.0) <= tolerance
            ):
                return False
        return True

    found: dict[str, str] = {}
    names = list(curves)
    for i, name in enumerate(names):
        match = next((e for e in names[:i] if e not in found and coincide(name, e)), None)
        if match is not None:
            found[name] = match
    return found


def _measured(curve: Mapping[str, np.ndarray], metric: str) -> bool:
    return metric in curve and bool(np.isfinite(curve[metric]).any())


def _drawn(curves: Mapping[str, Mapping[str, np.ndarray]], metric: str) -> list[np.ndarray]:
    return [c[metric] for c in curves.values() if _measured(c, metric)]


def _draw_panel(
    axes: Any,
    metric: str,
    log: bool,
    curves: Mapping[str, dict],
    styles: Mapping[str, dict],
    labels: Mapping[str, str],
) -> None:
    """One metric of every run that measured it on ``axes``, each run in its style."""
    for name, curve in curves.items():
        if _measured(curve, metric):
            style = dict(styles[name])
            gap = max(1, len(curve[metric]) // _MARKS_PER_CURVE)
            first = int(style.pop("stagger") * gap)
            axes.plot(
                curve["step"], curve[metric], label=labels[name], linewidth=1.2,
                markevery=(first, gap), **style,
            )  # fmt: skip
    if log:
        axes.set_yscale("log", nonpositive="mask")
    axes.set_title(_TITLES[metric])
    axes.set_xlabel("step")
    axes.set_ylabel(_TITLES[metric] + (" (log scale)" if log else ""))
    axes.grid(True, alpha=0.3)
