"""benchmarks/workloads.py runs end to end: ``--quick`` gives every optimizer a finite loss."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.perf
_BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load_workloads(monkeypatch):
    monkeypatch.syspath_prepend(str(_BENCHMARKS))
    spec = importlib.util.spec_from_file_location("workloads", _BENCHMARKS / "workloads.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "workloads", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_quick_run_reports_a_finite_loss_for_every_optimizer_and_workload(
    monkeypatch, tmp_path, capsys
):
    workloads = _load_workloads(monkeypatch)
    workloads.main(["--quick", "--json", "--out", str(tmp_path)])
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "workloads_quick.json").read_text())
    assert printed == written
    assert (tmp_path / "workloads_quick.png").stat().st_size > 0
    assert set(written["results"]) == {"char_lm", "digits"}
    for name, cells in written["results"].items():
        assert set(cells) == set(workloads.OPTIMIZERS), name
        for optimizer, cell in cells.items():
            assert math.isfinite(cell["final_val_loss_mean"]), (name, optimizer)
            assert len(cell["runs"]) == 3
            assert all(math.isfinite(x) for run in cell["runs"] for x in run["curve"])
            # Wall seconds at every evaluation, increasing; compilation timed apart.
            for run in cell["runs"]:
                assert len(run["curve_seconds"]) == len(run["curve"])
                assert all(
                    0 < a <= b
                    for a, b in zip(run["curve_seconds"], run["curve_seconds"][1:], strict=False)
                )
            assert cell["compile_seconds"] > 0 == cell["runs"][1]["compile_seconds"]
            # The search: the first stage's trials, then the refined stage's.
            stages = [trial["stage"] for trial in cell["search"]["trials"]]
            assert stages == [0] * 2 + [1], (name, optimizer)
            best = min(cell["search"]["trials"], key=lambda trial: trial["final_val_loss"])
            assert {k: best[k] for k in cell["hyperparams"]} == cell["hyperparams"]
            # Steps to AdamW's final loss: the first evaluation of the seed-mean curve
            # at or below it, or None.
            target = cells["adamw"]["final_val_loss_mean"]
            assert cell["reference_loss"] == target
            hits = [
                s
                for s, v in zip(run["curve_steps"], cell["mean_curve"], strict=True)
                if v <= target
            ]
            assert cell["steps_to_reference"] == (hits[0] if hits else None)
        assert cells["adamw"]["steps_to_reference"] is not None  # its own final loss, at worst
    table = (tmp_path / "workloads_quick.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == 2 * len(workloads.OPTIMIZERS)  # a table per workload
    assert all(row.count("|") == rows[0].count("|") for row in rows[:8])


def test_the_large_configuration_is_a_bigger_model_with_bigger_budgets(monkeypatch):
    workloads = _load_workloads(monkeypatch)
    args = workloads.parse_args(["--large", "--workloads", "char_lm"])
    assert args.large and not args.quick
    with pytest.raises(SystemExit):
        workloads.parse_args(["--large", "--quick"])
    large, full = workloads.LARGE, workloads.FULL
    model = lambda c: workloads.CharTransformer(  # noqa: E731
        layers=c.layers, d_model=c.d_model, num_heads=c.num_heads, context=c.context,
        rngs=workloads.nnx.Rngs(0),
    )  # fmt: skip
    count = lambda c: sum(  # noqa: E731
        x.size for x in workloads.jax.tree.leaves(
            workloads.nnx.state(workloads.nnx.eval_shape(lambda: model(c)), workloads.nnx.Param)
        )
    )  # fmt: skip
    assert count(full.char_lm) == 470_784  # the default run's model (benchmarks/README.md)
    assert 10e6 < count(large.char_lm) < 12e6
    for name in ("char_lm", "digits"):
        assert large.steps[name] > full.steps[name]
        assert large.search_steps[name] > full.search_steps[name]
    assert large.trials + large.refine_trials > full.trials + full.refine_trials


def test_train_digits_cnn_is_reusable_with_any_optimizer(monkeypatch):
    workloads = _load_workloads(monkeypatch)
    import gradtx

    config = workloads.DigitsConfig(channels=(4, 8), batch_size=32)
    run = workloads.train_digits_cnn(gradtx.adam(3e-3), steps=40, seed=0, config=config)
    assert run["curve_steps"] == list(range(4, 41, 4))
    assert run["final_val_loss"] == run["curve"][-1] < run["curve"][0]
    assert 0.0 <= run["final_val_accuracy"] <= 1.0


def test_workload_step_time_prints_a_row_per_optimizer(monkeypatch, capsys):
    _load_workloads(monkeypatch)
    spec = importlib.util.spec_from_file_location(
        "workload_step_time", _BENCHMARKS / "workload_step_time.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(
        ["--workload", "digits", "--optimizers", "adamw,shampoo", "--steps", "3", "--warmup", "1"]
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["adamw", "shampoo"]
    assert rows[0].endswith("| 1.00 | 1.00 |")
