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
    table = (tmp_path / "workloads_quick.md").read_text()
    assert sum(line.startswith("| `") for line in table.splitlines()) == len(workloads.OPTIMIZERS)


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
