"""Learning curves of several runs, drawn side by side to a PNG.

:func:`plot_learning_curves` reads what :mod:`gradtx.training.curves` records
(or any dict of 1-D arrays) and draws one panel per metric, one line per run.
It stays readable with many runs: twenty distinct colours, dash patterns and
marker shapes, a legend beside the panels and no taller than them, and a note
for a run drawn on top of another. matplotlib, an optional dependency, is
imported only when a plot is drawn.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from gradtx.training.curves import METRICS, learning_curves

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
      >>> from gradtx.training.plot import wants_log_scale
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
      >>> from gradtx.training.plot import plot_learning_curves
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
      >>> from gradtx.training.plot import _coinciding_runs
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
