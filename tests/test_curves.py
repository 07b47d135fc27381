"""Learning curves: what record_curves writes under jit equals what is measured outside.

The oracle runs the same optimizer eagerly, step by step, and measures the loss
and the two norms with numpy in float64 from the gradient and the update it
sees. The jitted runs (``record_curves`` inside one ``lax.scan``, or
``step_metrics`` returned from the scan body) must give the same numbers; they
are float32 reductions compared with float64 ones, hence ``rtol = 1e-5``. The
plot (:mod:`gradtx.training.plot`) is checked as a file: a PNG signature, and
the image width that says how many panels were drawn; and, at twenty runs, as
the figure it saves: colours, dashes, markers, labels and the legend's size.
"""

from __future__ import annotations

import itertools
import struct
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.training.curves import (
    RecordCurvesState,
    StepMetrics,
    learning_curves,
    record_curves,
    step_metrics,
)
from gradtx.training.plot import plot_learning_curves, wants_log_scale

RTOL = 1e-5
TARGET = {"w": jnp.asarray([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.asarray([0.25, -1.0, 2.0])}


def _loss(params):
    return sum(jnp.sum((params[k] - TARGET[k]) ** 2) for k in TARGET)


def _params():
    return jax.tree.map(jnp.zeros_like, TARGET)


def _schedule(count):
    return 0.1 / (1.0 + 0.5 * count)


def _norm(tree):
    return float(np.sqrt(sum(np.sum(np.abs(np.asarray(x, np.float64)) ** 2) for x in tree)))


def _measured_outside(tx, num_steps):
    """Each step's loss, learning rate, gradient norm and update norm, eagerly."""
    params, state, rows = _params(), tx.init(_params()), []
    for step in range(num_steps):
        loss, grads = jax.value_and_grad(_loss)(params)
        updates, state = tx.update(grads, state, params)
        rows.append(
            (
                float(loss),
                _schedule(step),
                _norm(jax.tree.leaves(grads)),
                _norm(jax.tree.leaves(updates)),
            )
        )
        params = gradtx.apply_updates(params, updates)
    return np.asarray(rows).T


def _recorded(tx, num_steps):
    """The final state of ``tx`` after ``num_steps`` steps in one jitted scan."""

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(_loss)(params)
        updates, state = tx.update(grads, state, params, value=loss)
        return (gradtx.apply_updates(params, updates), state), None

    run = jax.jit(lambda c: jax.lax.scan(step, c, None, length=num_steps)[0])
    return run((_params(), tx.init(_params())))


def _inner():
    return gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=_schedule, momentum=0.9)


@pytest.mark.parametrize("source", ["injected", "argument"])
def test_recorded_under_jit_equals_measured_outside(source):
    if source == "injected":  # read from the inject_hyperparams state
        tx = record_curves(_inner(), num_steps=12)
    else:
        tx = record_curves(gradtx.sgd(_schedule, 0.9), num_steps=12, learning_rate=_schedule)
    (params, state) = _recorded(tx, 12)
    curves = learning_curves(state)
    expected = _measured_outside(gradtx.sgd(_schedule, 0.9), 12)
    for row, name in enumerate(("loss", "learning_rate", "grad_norm", "update_norm")):
        np.testing.assert_allclose(curves[name], expected[row], rtol=RTOL, err_msg=name)
    np.testing.assert_array_equal(curves["step"], np.arange(12))
    assert curves["loss"][-1] < 0.1 * curves["loss"][0]  # it trained


def test_the_updates_are_the_inner_optimizers_bit_for_bit():
    # Eager, op by op: a jitted comparison would compare two compiled programs,
    # which XLA may fuse differently (1 ulp).
    plain, wrapped = gradtx.adam(0.05), record_curves(gradtx.adam(0.05), num_steps=3)
    params = _params()
    plain_state, state = plain.init(params), wrapped.init(params)
    for _ in range(5):
        grads = jax.grad(_loss)(params)
        expected, plain_state = plain.update(grads, plain_state, params)
        updates, state = wrapped.update(grads, state, params, value=1.0)
        jax.tree.map(np.testing.assert_array_equal, updates, expected)
        params = gradtx.apply_updates(params, updates)
    jax.tree.map(np.testing.assert_array_equal, state.inner_state, plain_state)
    assert int(state.count) == 5


def test_every_and_a_full_buffer_drop_the_steps_between_and_after():
    (_, state) = _recorded(record_curves(_inner(), num_steps=4, every=3), 20)
    curves = learning_curves(state)
    np.testing.assert_array_equal(curves["step"], [0, 3, 6, 9])  # 12, 15, 18: no slot left
    expected = _measured_outside(gradtx.sgd(_schedule, 0.9), 10)
    np.testing.assert_allclose(curves["loss"], expected[0][[0, 3, 6, 9]], rtol=RTOL)


def test_a_short_run_keeps_only_the_recorded_slots_and_a_missing_loss_is_nan():
    tx = record_curves(gradtx.sgd(0.1), num_steps=10)
    state = tx.init(_params())
    for _ in range(3):
        _, state = tx.update(jax.grad(_loss)(_params()), state)  # no value=, no rate
    curves = learning_curves(state)
    assert curves["step"].tolist() == [0, 1, 2]
    assert np.isnan(curves["loss"]).all() and np.isnan(curves["learning_rate"]).all()
    assert (np.asarray(state.steps)[3:] == -1).all()
    assert not np.asarray(state.measured.loss).any()
    assert np.asarray(state.measured.grad_norm).tolist() == [True] * 3 + [False] * 7
    np.testing.assert_allclose(curves["grad_norm"], _norm(jax.tree.leaves(TARGET)) * 2, rtol=RTOL)


def test_step_metrics_returned_from_a_scan_equal_the_recorded_curves():
    tx = _inner()

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(_loss)(params)
        updates, state = tx.update(grads, state, params)
        rate = state.hyperparams["learning_rate"]
        metrics = step_metrics(grads, updates, loss=loss, learning_rate=rate)
        return (gradtx.apply_updates(params, updates), state), metrics

    run = jax.jit(lambda c: jax.lax.scan(step, c, None, length=9)[1])
    stacked = run((_params(), tx.init(_params())))
    assert isinstance(stacked, StepMetrics) and stacked.loss.shape == (9,)
    (_, state) = _recorded(record_curves(_inner(), num_steps=9), 9)
    from_scan, recorded = learning_curves(stacked), learning_curves(state)
    for name in recorded:
        np.testing.assert_allclose(from_scan[name], recorded[name], rtol=RTOL, err_msg=name)


def test_step_metrics_numbers_and_complex_leaves():
    grads = {"a": jnp.asarray([3.0, 0.0]), "z": jnp.asarray([4.0j])}
    m = step_metrics(grads, {"a": jnp.zeros(2), "z": jnp.asarray([1.0 + 1.0j])}, loss=2.5)
    assert float(m.grad_norm) == 5.0 and float(m.loss) == 2.5
    np.testing.assert_allclose(float(m.update_norm), np.sqrt(2.0), rtol=RTOL)
    assert np.isnan(float(m.learning_rate))
    with jax.enable_x64(True):
        m = step_metrics(jnp.ones(2, jnp.float64), jnp.ones(2, jnp.float64), loss=1.0)
        assert m.grad_norm.dtype == m.loss.dtype == jnp.float64
    assert step_metrics(jnp.ones(2, jnp.bfloat16), jnp.ones(2, jnp.bfloat16)).loss.dtype == (
        jnp.float32
    )


def test_vmap_over_learning_rates_records_one_curve_per_run():
    def train(lr):
        tx = record_curves(gradtx.sgd(lr), num_steps=5, learning_rate=lr)
        return _recorded(tx, 5)[1]

    states = jax.vmap(train)(jnp.asarray([0.01, 0.1]))
    assert states.curves.loss.shape == (2, 5)
    with pytest.raises(ValueError, match="one run"):
        learning_curves(states)
    for r, lr in enumerate([0.01, 0.1]):
        one = learning_curves(jax.tree.map(lambda x, r=r: x[r], states))
        np.testing.assert_allclose(one["learning_rate"], lr, rtol=RTOL)
        np.testing.assert_allclose(one["loss"], _measured_outside(gradtx.sgd(lr), 5)[0], rtol=RTOL)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(num_steps=0), "num_steps must be an integer >= 1, got 0"),
        (dict(num_steps=3.0), "num_steps must be an integer >= 1"),
        (dict(num_steps=3, every=0), "every must be an integer >= 1"),
        (dict(num_steps=3, learning_rate=float("inf")), "learning_rate must be finite"),
    ],
)
def test_bad_hyperparameters_fail_at_construction(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        record_curves(gradtx.sgd(0.1), **kwargs)


# ---------------------------------------------------------------- the plot


def _png_size(path):
    """(width, height) from the IHDR chunk, after checking the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_a_png_with_one_panel_per_measured_metric(tmp_path):
    (_, recorded) = _recorded(record_curves(_inner(), num_steps=30), 30)
    as_dict = {"loss": np.exp(-np.arange(40) / 8.0), "step": np.arange(40) * 2.0}
    runs = {"recorded": recorded, "a dict": as_dict}
    path = plot_learning_curves(runs, tmp_path / "curves.png", title="sgd")
    assert path == str(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
    # 4 panels of 450 x 360 and a legend column of 150
    assert _png_size(tmp_path / "curves.png") == (1950, 360)
    only_loss = plot_learning_curves({"a dict": as_dict}, tmp_path / "loss.png")
    assert _png_size(tmp_path / "loss.png") == (600, 360)  # the other metrics are absent
    assert only_loss.endswith("loss.png")


def _saved_figure(monkeypatch, runs, path, **kwargs):
    """The figure :func:`plot_learning_curves` draws, kept as it is saved."""
    from matplotlib.figure import Figure

    saved = []
    savefig = Figure.savefig

    def keep(figure, *args, **kw):
        saved.append(figure)
        return savefig(figure, *args, **kw)

    monkeypatch.setattr(Figure, "savefig", keep)
    plot_learning_curves(runs, path, **kwargs)
    return saved[0]


def test_plot_stays_readable_at_twenty_runs(tmp_path, monkeypatch):
    steps = np.arange(200.0)
    runs = {
        f"run_{i}": {"loss": np.exp(-steps / (20 + 5 * i)), "grad_norm": np.full(200, 1 + i / 10)}
        for i in range(19)
    }
    # A twentieth run on top of run_3 in both panels (its loss 0.1% higher).
    runs["copy"] = {"loss": 1.001 * runs["run_3"]["loss"], "grad_norm": runs["run_3"]["grad_norm"]}
    title = "a title\nof three\nlines"
    figure = _saved_figure(monkeypatch, runs, tmp_path / "twenty.png", title=title)
    panels = figure.axes
    assert [a.get_ylabel() for a in panels] == ["loss (log scale)", "gradient norm"]

    lines = panels[0].get_lines()
    assert len(lines) == 20
    assert len({line.get_color() for line in lines}) == 20
    assert len({line.get_linestyle() for line in lines}) == 4
    for a, b in itertools.pairwise(lines):  # neighbours differ in every way
        assert a.get_linestyle() != b.get_linestyle() and a.get_marker() != b.get_marker()
    # The copy's marks sit at other steps than run_3's, so both show.
    by_name = {line.get_label().split(" ")[0]: line for line in lines}
    assert by_name["copy"].get_markevery()[0] != by_name["run_3"].get_markevery()[0]

    legend = figure.legends[0]
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels == [f"run_{i}" for i in range(19)] + ["copy (on run_3)"]
    renderer = figure.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    for axes in panels:
        panel = axes.get_window_extent(renderer)
        assert box.height <= panel.height  # sized to the panels
        assert box.x0 >= panel.x1  # beside them, not over them


def test_log_scale_where_it_helps():
    assert wants_log_scale(np.exp(-np.arange(50) / 5.0))  # falls by decades
    assert not wants_log_scale(np.linspace(1.0, 2.0, 5))  # less than 10x
    assert not wants_log_scale(np.asarray([-1.0, 5.0, 100.0]))  # not all positive
    assert wants_log_scale(np.asarray([np.nan, 0.01, 1.0, np.inf]))  # non-finite ignored
    assert not wants_log_scale(np.asarray([np.nan]))
    assert wants_log_scale(np.asarray([1.0, 0.0, 0.05]))  # a zero is left off the log axis
    assert not wants_log_scale(np.zeros(3))


def test_plot_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown metrics"):
        plot_learning_curves({"r": {"loss": np.ones(3)}}, tmp_path / "x.png", metrics=("acc",))
    with pytest.raises(ValueError, match="at least one run"):
        plot_learning_curves({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no run measured"):
        plot_learning_curves({"r": {"loss": np.full(3, np.nan)}}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    with pytest.raises(ImportError, match=r"needs matplotlib.*pip install 'gradtx\[examples\]'"):
        plot_learning_curves({"r": {"loss": np.ones(3)}}, tmp_path / "x.png")


def test_state_is_a_record_curves_state_of_fixed_shapes():
    tx = record_curves(gradtx.adam(0.1), num_steps=6)
    state = tx.init({"w": jnp.zeros((2, 2), jnp.bfloat16)})
    assert isinstance(state, RecordCurvesState)
    assert all(x.shape == (6,) and x.dtype == jnp.float32 for x in state.curves)
    # No NaN in the state (contract, jax_debug_nans): empty slots are 0, unmarked.
    assert all((np.asarray(x) == 0).all() for x in state.curves)
    assert all(x.dtype == bool and not np.asarray(x).any() for x in state.measured)
    assert state.steps.dtype == jnp.int32 and (np.asarray(state.steps) == -1).all()
