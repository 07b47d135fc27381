"""What the README promises: the main job (``examples/race.py``), the quick start, the table."""

from __future__ import annotations

import inspect
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gradtx

ROOT = Path(__file__).resolve().parents[1]
RACE = ROOT / "examples" / "race.py"

NAMED_OPTIMIZERS = {
    "sgd",
    "momentum",
    "nesterov_momentum",
    "adagrad",
    "rmsprop",
    "rmsprop_centered",
    "rmsprop_nesterov",
    "adadelta",
    "adam",
    "adamw",
    "amsgrad",
    "adamax",
    "nadam",
}

_TITLE = re.compile(r"^(quadratic|logistic).*: f\* = (\S+), f\(start\) = (\S+)$")


def run_race(*flags):
    """Runs the script as a user would, with the repository importable."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(RACE), *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def parse_tables(text):
    """``{problem: (f*, f(start), {optimizer: cells})}`` from plain or rich output."""
    tables, current = {}, None
    for line in text.splitlines():
        title = _TITLE.match(line.strip())
        if title:
            current = {}
            tables[title[1]] = (float(title[2]), float(title[3]), current)
            continue
        cells = [c.strip() for c in re.split(r"[|│]", line)]
        cells = [c for c in cells if c]
        if current is not None and len(cells) == 5 and cells[0] in NAMED_OPTIMIZERS:
            current[cells[0]] = cells
    return tables


def test_race_quick_prints_every_optimizer_with_a_finite_loss_in_range():
    tables = parse_tables(run_race("--quick", "--steps", "200"))
    assert set(tables) == {"quadratic", "logistic"}
    for problem, (f_star, f_start, rows) in tables.items():
        assert set(rows) == NAMED_OPTIMIZERS, problem
        assert f_star < f_start
        for name, (_, rate, loss, steps, millis) in rows.items():
            loss = float(loss)
            assert math.isfinite(loss), (problem, name)
            # 200 steps of any of them descend, and none can beat the true minimum
            # (float32 rounding of the loss is ~1e-8 here).
            assert f_star - 1e-6 <= loss < f_start, (problem, name, loss)
            assert steps == "-" or 0 <= int(steps) <= 200, (problem, name, steps)
            assert float(millis) >= 0 and rate, (problem, name)
    # The logistic regression's f* is Newton's, in float64; SciPy's L-BFGS-B agrees
    # (tests/test_convergence.py) to ~1e-11 at the default l2 of 1e-3.
    assert abs(tables["logistic"][0] - 0.0598279373) < 1e-9
    assert tables["quadratic"][0] == 0.0


def test_race_plain_table_and_flags():
    out = run_race("--plain", "--problems", "quadratic", "--condition", "10", "--dim", "4")
    tables = parse_tables(out)
    assert set(tables) == {"quadratic"}
    f_star, f_start, rows = tables["quadratic"]
    assert "condition number 10)" in out and "5000 steps" in out
    assert set(rows) == NAMED_OPTIMIZERS
    # Condition number 10 in 4 dimensions is easy: plain gradient descent at 1/L
    # contracts by 1 - 1/10 per step, so it is within 1e-6 long before 5000 steps.
    assert rows["sgd"][1] == "0.1"
    assert int(rows["sgd"][3]) < 300


def test_readme_quick_start_runs_and_fits(capsys):
    """The README's first code block is a working training loop."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert block, "README.md has no python code block"
    namespace = {}
    exec(compile(block[1], "README.md", "exec"), namespace)
    # The data are exactly linear, so 500 Adam steps fit them to float32 noise.
    final = float(namespace["loss"](namespace["params"], namespace["x"], namespace["y"]))
    assert final < 1e-8
    # It prints that loss (a float32, so compare at float32 precision).
    assert float(capsys.readouterr().out) == pytest.approx(final, rel=1e-6)


def test_readme_lists_every_public_function():
    """The table of methods names every public optimizer and block, in backticks."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(\w+)`", readme))
    public = {name for name in gradtx.__all__ if inspect.isfunction(getattr(gradtx, name))}
    assert {"adam", "scale_by_adam", "chain", "apply_updates"} <= public
    assert public - listed == set()
    assert "tree" in listed
