"""``gradtx compare`` / ``gradtx search``: tables, files, errors, and numbers checked independently.

Most tests call :func:`gradtx_cli.main` in-process (fast: jax is imported once);
the rest run ``python -m gradtx_cli`` or :mod:`gradtx_cli` in a subprocess, as the
console script runs, to see what a fresh process imports.
The numbers are checked against oracles that share no code with the CLI: plain
gradient descent on the quadratic's Hessian in float64 numpy, scikit-learn's
logistic regression for ``f*``, the Rosenbrock function by hand.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.optimize

from gradtx.training.curves import StepMetrics
from gradtx.training.search import log_uniform, random_search
from gradtx_cli import (
    RATE_SPAN,
    main,
)
from gradtx_cli.problems import logreg, quadratic
from gradtx_cli.race import Result, rank
from tests.repo_python import run_python

ROOT = Path(__file__).resolve().parents[1]

# float32 runs against float64 oracles: 300 contracting steps accumulate a few
# hundred float32 roundings of relative size 6e-8 each.
RTOL_FLOAT32 = 1e-4

QUICK = ("--plain", "--no-progress")


def run(capsys, *argv):
    """``(status, stdout, stderr)`` of ``main(argv)``."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def parse_table(text, first_column="rank"):
    """``(header, rows)`` of the plain-text table in ``text``; rows are lists of cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_column + " "))
    header = [c.strip() for c in lines[start].split(" | ")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append([c.strip() for c in line.split(" | ")])
    return header, rows


def by_optimizer(header, rows):
    return {row[1]: dict(zip(header, row, strict=True)) for row in rows}


def strict_json(path):
    """The JSON file, refusing NaN and infinities (not JSON)."""

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=refuse)


def gradient_descent_losses(problem, rate, steps):
    """``f(x_k)``, k = 0..steps, of ``x_{k+1} = x_k - rate A x_k`` in float64 numpy."""
    with jax.enable_x64(True):
        hessian = np.asarray(jax.hessian(problem.loss)(np.asarray(problem.params, np.float64)))
    x = np.asarray(problem.params, np.float64)
    losses = []
    for _ in range(steps + 1):
        losses.append(0.5 * x @ hessian @ x)
        x = x - rate * hessian @ x
    return np.array(losses), hessian


# --------------------------------------------------------------------------- compare


def test_compare_quadratic_matches_gradient_descent_in_numpy(capsys):
    status, out, err = run(
        capsys, "compare", "--problem", "quadratic", "--optimizers", "sgd,adam,lbfgs",
        "--steps", "300", *QUICK,
    )  # fmt: skip
    assert status == 0, err
    header, rows = parse_table(out)
    assert header == [
        "rank", "optimizer", "learning rate", "final loss", "steps to target", "wall time (ms)"
    ]  # fmt: skip
    assert [row[0] for row in rows] == ["1", "2", "3"]
    table = by_optimizer(header, rows)
    assert set(table) == {"sgd", "adam", "lbfgs"}

    problem = quadratic(1e3, 20, 0)
    losses, hessian = gradient_descent_losses(problem, 1.0 / 1e3, 300)
    largest = np.linalg.eigvalsh(hessian)[-1]
    assert float(table["sgd"]["learning rate"]) == pytest.approx(1.0 / largest, rel=1e-3)
    assert float(table["sgd"]["final loss"]) == pytest.approx(losses[-1], rel=RTOL_FLOAT32)
    reached = np.flatnonzero(losses <= 1e-6 * losses[0])
    expected = str(reached[0]) if reached.size else "-"
    assert table["sgd"]["steps to target"] == expected
    assert f"from loss {losses[0]:.6g}" in out
    assert "ranked by steps to target, then final loss (the default without test data)" in out

    # lbfgs reaches the target within the budget, so it outranks sgd, which does not.
    assert table["lbfgs"]["learning rate"] == "line search"
    assert int(table["lbfgs"]["steps to target"]) < 300
    assert float(table["lbfgs"]["final loss"]) <= 1e-6 * losses[0]
    assert int(table["lbfgs"]["rank"]) < int(table["sgd"]["rank"])


def trial_rates(default, trials, seed):
    """The rates ``--tune`` tries around ``default``: random_search's draws for the seed."""
    space = {"learning_rate": log_uniform(default / RATE_SPAN, default * RATE_SPAN)}
    found = random_search(lambda h: 0.0, space, trials, seed, border_fraction=0.0)
    return [t.hyperparams["learning_rate"] for t in found.trials]


def test_tune_adam_beats_sgd_and_writes_json_and_png(capsys, tmp_path):
    out_dir = tmp_path / "results"
    status, out, err = run(
        capsys, "compare", "--problem", "quadratic", "--optimizers", "sgd,adam", "--steps",
        "300", "--tune", "8", "--out", str(out_dir), *QUICK,
    )  # fmt: skip
    assert status == 0, err
    assert "rates tuned by random search, 8 trials each" in out
    payload = strict_json(out_dir / "compare-quadratic.json")
    assert payload["command"] == "compare" and payload["steps"] == 300
    assert [r["rank"] for r in payload["results"]] == [1, 2]
    adam, sgd = payload["results"]
    assert (adam["optimizer"], sgd["optimizer"]) == ("adam", "sgd")
    assert adam["final_loss"] < 1e-6 * sgd["final_loss"]
    assert adam["tuned"] and adam["learning_rate"] in trial_rates(0.1, 8, 0)
    for r in (adam, sgd):
        loss = np.array(r["loss"], np.float64)
        assert loss.shape == (301,) and loss[-1] == pytest.approx(r["final_loss"])
        assert np.all(loss[1:] < loss[0])

    # No trial rate beats gradient descent's default 1 / L after 300 steps
    # (float64 numpy), so sgd keeps the default and says so.
    problem = quadratic(1e3, 20, 0)
    default, _ = gradient_descent_losses(problem, 1e-3, 300)
    with np.errstate(over="ignore", invalid="ignore"):
        finals = [gradient_descent_losses(problem, r, 300)[0][-1] for r in trial_rates(1e-3, 8, 0)]
    assert not any(f < default[-1] for f in finals)
    assert not sgd["tuned"] and sgd["learning_rate"] == 1e-3
    assert "note: sgd: no tuning trial beat the default rate 0.001; kept it" in err.splitlines()
    # Below 2 / L gradient descent is monotone on a convex quadratic; the run
    # replays the oracle.
    np.testing.assert_allclose(sgd["loss"], default, rtol=RTOL_FLOAT32, atol=1e-6 * default[0])
    assert np.all(np.diff(default) <= 0)

    png = (out_dir / "compare-quadratic.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 2 * height > 0  # three panels side by side
    assert payload["png"] == str(out_dir / "compare-quadratic.png")


def test_compare_logreg_reaches_the_minimum_scipy_finds(capsys, tmp_path):
    status, out, err = run(
        capsys, "compare", "--problem", "logreg", "--optimizers", "lbfgs,adagrad",
        "--steps", "200", "--out", str(tmp_path), *QUICK,
    )  # fmt: skip
    assert status == 0, err
    payload = strict_json(tmp_path / "compare-logreg.json")

    # f* independently: scipy's L-BFGS-B on the same (float32) loss.
    problem = logreg(seed=0, l2=1e-3)
    value_and_grad = jax.jit(jax.value_and_grad(problem.loss))

    def fun(theta):
        value, grad = value_and_grad({"w": np.float32(theta[:-1]), "b": np.float32(theta[-1])})
        return float(value), np.append(grad["w"], grad["b"]).astype(np.float64)

    found = scipy.optimize.minimize(
        fun, np.zeros(31), jac=True, method="L-BFGS-B", options={"gtol": 1e-8, "ftol": 1e-14}
    )
    assert payload["optimum"] == pytest.approx(found.fun, abs=1e-6)

    results = {r["optimizer"]: r for r in payload["results"]}
    for r in results.values():
        assert r["final_loss"] >= payload["optimum"] - 1e-6  # nothing beats the minimum
        assert 0.9 < r["test_accuracy"] <= 1.0
    assert results["lbfgs"]["final_loss"] <= payload["target"]
    assert results["lbfgs"]["steps_to_target"] is not None
    assert "ranked by test accuracy (the default with test data)" in out
    header, table = parse_table(out)
    assert "test accuracy" in header
    accuracy = by_optimizer(header, table)["lbfgs"]["test accuracy"]
    assert accuracy == f"{100 * results['lbfgs']['test_accuracy']:.1f}%"


def test_compare_digits_learns(capsys):
    status, out, err = run(
        capsys, "compare", "--problem", "digits", "--optimizers", "adam,sgd", "--steps", "100",
        *QUICK,
    )  # fmt: skip
    assert status == 0, err
    header, rows = parse_table(out)
    table = by_optimizer(header, rows)
    start = math.log(10.0)  # ~ the cross-entropy of an untrained 10-class network
    for name in ("adam", "sgd"):
        assert float(table[name]["final loss"]) < 0.2 * start
        assert float(table[name]["test accuracy"].rstrip("%")) > 85.0  # chance: 10%


def test_compare_rosenbrock_start_and_lbfgs(capsys):
    status, out, err = run(
        capsys, "compare", "--problem", "rosenbrock", "--dim", "3", "--optimizers",
        "lbfgs,momentum", "--steps", "200", *QUICK,
    )  # fmt: skip
    assert status == 0, err
    # f(-1.2, 1, -1.2) = 100 (1 - 1.44)^2 + 2.2^2 + 100 (-1.2 - 1)^2 + 0^2 = 508.2
    assert "Rosenbrock, dim 3: 200 full-batch steps from loss 508.2" in out
    table = by_optimizer(*parse_table(out))
    assert table["lbfgs"]["rank"] == "1"
    assert float(table["lbfgs"]["final loss"]) <= 1e-6


def _result(name, final, reached=None, accuracy=None, seconds=0.0):
    """A run with losses ``10, 1, final``."""
    losses = np.array([10.0, 1.0, final])
    metrics = StepMetrics(*(np.zeros(2) for _ in range(4)))
    return Result(name, 0.1, False, losses, metrics, accuracy, reached, seconds, 0.0)


def test_rank_puts_diverged_runs_last_even_past_the_target():
    ranked = rank(
        [
            _result("diverged", math.nan, 1),
            _result("slow", 0.5, None),
            _result("fast", 1e-3, 1),
            _result("faster", 1e-2, 0),
            _result("lower", 1e-4, None),
        ],
        by="steps_to_target",
    )
    assert [r.optimizer for r in ranked] == ["faster", "fast", "lower", "slow", "diverged"]


# Four runs that each key orders differently; "d" diverged (after the best of everything).
RUNS = [
    _result("a", 1e-3, reached=10, accuracy=0.90, seconds=0.5),
    _result("b", 1e-2, reached=None, accuracy=0.95, seconds=0.1),
    _result("c", 1e-4, reached=20, accuracy=0.95, seconds=0.3),
    _result("d", math.inf, reached=5, accuracy=0.99, seconds=0.01),
]
ORDERS = {
    "final_loss": "cabd",
    "test_accuracy": "cbad",  # b and c tie at 95%: the lower final loss first
    "steps_to_target": "acbd",  # b never reached the target
    "wall_time": "bcad",
}


@pytest.mark.parametrize("key", ORDERS)
def test_rank_by_each_key(key):
    assert "".join(r.optimizer for r in rank(RUNS, by=key)) == ORDERS[key]
    assert "".join(r.optimizer for r in rank(RUNS[::-1], by=key)) == ORDERS[key]


def test_rank_refuses_a_key_it_cannot_use():
    with pytest.raises(ValueError, match="by must be one of"):
        rank(RUNS, by="loss")
    with pytest.raises(ValueError, match="needs runs on a problem with test data"):
        rank([_result("a", 1.0), *RUNS], by="test_accuracy")


def _sort_key(column, row):
    """What ``--rank-by column`` sorts a printed row by: the column, then final loss."""
    final = float(row["final loss"])
    if column == "test accuracy":
        return (-float(row[column].rstrip("%")), final)
    if column == "steps to target":
        return (math.inf if row[column] == "-" else int(row[column]), final)
    if column == "wall time (ms)":
        return (float(row[column]),)  # printed rounded: ties unknown
    return (final,)


CAPTIONS = {
    "final-loss": ("final loss", "ranked by final loss"),
    "test-accuracy": ("test accuracy", "ranked by test accuracy, then final loss"),
    "steps-to-target": ("steps to target", "ranked by steps to target, then final loss"),
    "wall-time": ("wall time (ms)", "ranked by wall time, then final loss"),
}


@pytest.mark.parametrize("key", CAPTIONS)
def test_rank_by_orders_the_table_and_says_so_in_its_caption(capsys, key):
    status, out, err = run(
        capsys, "compare", "--problem", "logreg", "--optimizers", "sgd,adam,rprop", "--steps",
        "60", "--rank-by", key, *QUICK,
    )  # fmt: skip
    assert status == 0, err
    column, caption = CAPTIONS[key]
    assert f"\n{caption}; diverged runs last\n" in out
    header, rows = parse_table(out)
    table = [dict(zip(header, row, strict=True)) for row in rows]
    keys = [_sort_key(column, row) for row in table]
    assert keys == sorted(keys)
    assert {row["optimizer"] for row in table} == {"sgd", "adam", "rprop"}


def test_diverged_run_is_marked_ranked_last_and_warned_once(capsys, tmp_path):
    # AdaBound at its default rate leaves the Rosenbrock valley in dim 10.
    status, out, err = run(
        capsys, "compare", "--problem", "rosenbrock", "--dim", "10", "--optimizers",
        "adabound,sgd", "--steps", "600", "--out", str(tmp_path), *QUICK,
    )  # fmt: skip
    assert status == 0, err
    table = by_optimizer(*parse_table(out))
    assert table["adabound"]["rank"] == "2" and table["adabound"]["final loss"] == "diverged"
    assert table["adabound"]["steps to target"] == "-"
    assert math.isfinite(float(table["sgd"]["final loss"]))

    payload = strict_json(tmp_path / "compare-rosenbrock.json")
    adabound = next(r for r in payload["results"] if r["optimizer"] == "adabound")
    first_bad = adabound["loss"].index(None)  # JSON has no NaN: non-finite losses are null
    assert adabound["final_loss"] is None and adabound["diverged_after_steps"] == first_bad
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: diverged (non-finite loss), ranked last: adabound (after {first_bad} steps)"
    ]


# --------------------------------------------------------------------------- search


def test_search_quadratic_table_best_and_border_warning(capsys, tmp_path):
    # Rates far below 1/L: the loss falls with the rate, so the best trial is
    # the largest rate drawn, at the top border of its range.
    status, out, err = run(
        capsys, "search", "--problem", "quadratic", "--optimizer", "sgd", "--trials", "32",
        "--steps", "50", "--lr-range", "1e-7,1e-6", "--out", str(tmp_path), *QUICK,
    )  # fmt: skip
    assert status == 0, err
    header, rows = parse_table(out)
    assert header == ["rank", "learning rate", "training loss"]
    assert len(rows) == 32
    values = [float(row[-1]) for row in rows]
    assert values == sorted(values)
    payload = strict_json(tmp_path / "search-quadratic-sgd.json")
    rates = [t["hyperparams"]["learning_rate"] for t in payload["trials"]]
    assert all(1e-7 <= r <= 1e-6 for r in rates)
    assert payload["best"]["hyperparams"]["learning_rate"] == max(rates)
    assert payload["best"]["value"] == pytest.approx(values[0], rel=1e-5)
    assert f"best: learning_rate={max(rates):.4g}: training loss" in out
    assert payload["at_border"] == ["learning_rate"]
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "learning_rate" in warning[0] and "widen" in warning[0]

    # Each trial's value is f after 50 gradient-descent steps at its rate.
    trial = payload["trials"][0]
    oracle, _ = gradient_descent_losses(
        quadratic(1e3, 20, 0), trial["hyperparams"]["learning_rate"], 50
    )
    assert trial["value"] == pytest.approx(oracle[-1], rel=RTOL_FLOAT32)


def test_search_marks_diverged_trials_and_counts_them_once(capsys, tmp_path):
    # Gradient descent on the quadratic diverges at rates above 2 / L = 0.002.
    status, out, err = run(
        capsys, "search", "--problem", "quadratic", "--optimizer", "sgd", "--trials", "8",
        "--steps", "30", "--lr-range", "1e-4,1", "--out", str(tmp_path), *QUICK,
    )  # fmt: skip
    assert status == 0, err
    payload = strict_json(tmp_path / "search-quadratic-sgd.json")
    diverged = [t for t in payload["trials"] if t["value"] is None]
    assert 0 < len(diverged) < 8
    assert all(t["hyperparams"]["learning_rate"] > 2e-3 for t in diverged)
    _, rows = parse_table(out)
    marked = [row for row in rows if row[-1] == "diverged"]
    assert rows[-len(diverged) :] == marked  # last, and only those
    assert sorted(float(row[1]) for row in marked) == pytest.approx(
        sorted(t["hyperparams"]["learning_rate"] for t in diverged), rel=1e-3
    )
    warnings = [line for line in err.splitlines() if "diverged" in line]
    assert warnings == [
        f"warning: {len(diverged)} of 8 trials diverged (non-finite training loss); they rank last"
    ]


def test_search_logreg_searches_weight_decay_on_validation_loss(capsys, tmp_path):
    status, out, err = run(
        capsys, "search", "--problem", "logreg", "--optimizer", "adam", "--trials", "8",
        "--steps", "100", "--out", str(tmp_path), *QUICK,
    )  # fmt: skip
    assert status == 0, err
    header, rows = parse_table(out)
    assert header == ["rank", "learning rate", "weight decay", "validation loss"]
    payload = strict_json(tmp_path / "search-logreg-adam.json")
    assert payload["space"] == {"learning_rate": [0.1 / 30, 0.1 * 30], "weight_decay": [1e-6, 0.1]}
    for trial in payload["trials"]:
        assert 1e-6 <= trial["hyperparams"]["weight_decay"] <= 0.1
        assert trial["value"] is None or 0.0 < trial["value"] < math.log(2.0) + 1.0
    finite = [t["value"] for t in payload["trials"] if t["value"] is not None]
    assert payload["best"]["value"] == min(finite)

    status, out, _ = run(
        capsys, "search", "--problem", "logreg", "--optimizer", "adam", "--trials", "2",
        "--steps", "10", "--wd-range", "none", *QUICK,
    )  # fmt: skip
    assert status == 0
    assert parse_table(out)[0] == ["rank", "learning rate", "validation loss"]


# --------------------------------------------------------------------------- errors


def _unwritable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return str(blocker / "out")


BAD = {
    "unknown optimizer": ["compare", "--optimizers", "sgd,adamm"],
    "unknown problem": ["compare", "--problem", "mnist"],
    "negative steps": ["compare", "--steps", "-5"],
    "zero steps": ["search", "--steps", "0"],
    "fractional steps": ["compare", "--steps", "2.5"],
    "negative tune": ["compare", "--tune", "-1"],
    "condition number < 1": ["compare", "--condition-number", "0.5"],
    "rosenbrock dim 1": ["compare", "--problem", "rosenbrock", "--dim", "1"],
    "line search in search": ["search", "--optimizer", "lbfgs"],
    "empty range": ["search", "--lr-range", "1,0.1"],
    "unknown command": ["frobnicate"],
    "no command": [],
    "unknown flag": ["compare", "--bogus"],
}


@pytest.mark.parametrize("argv", BAD.values(), ids=BAD.keys())
def test_bad_arguments_one_line_exit_2(capsys, argv):
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("gradtx")
    assert "error:" in err and "Traceback" not in err


def test_unwritable_out_fails_before_running(capsys, tmp_path):
    status, out, err = run(
        capsys, "compare", "--problem", "quadratic", "--out", _unwritable(tmp_path), *QUICK
    )
    assert status == 2 and out == ""
    assert err.startswith("gradtx compare: error: argument --out: cannot write to")
    assert len(err.splitlines()) == 1


def test_missing_scikit_learn_is_one_clear_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now fails
    status, out, err = run(capsys, "compare", "--problem", "digits", *QUICK)
    assert status == 1 and out == ""
    assert len(err.splitlines()) == 1 and "scikit-learn" in err and "pip install" in err


def test_help_exits_0(capsys):
    status, out, _ = run(capsys, "compare", "--help")
    assert status == 0
    assert "--optimizers" in out and "--tune" in out


# --------------------------------------------------------------------------- progress


def test_plain_progress_without_rich_or_tqdm(capsys, monkeypatch):
    for module in ("rich", "rich.console", "rich.progress", "rich.table", "tqdm"):
        monkeypatch.setitem(sys.modules, module, None)
    status, out, err = run(
        capsys, "compare", "--problem", "quadratic", "--optimizers", "sgd,adam", "--steps", "20"
    )
    assert status == 0
    assert err.splitlines() == ["[1/2] racing sgd", "[2/2] racing adam"]
    assert parse_table(out)[0][0] == "rank"  # no rich: the plain table


# --------------------------------------------------------------------------- console script


def python_m(*argv):
    return run_python("-m", "gradtx_cli", *argv, timeout=300)


def test_console_script_rich_table():
    done = python_m(
        "compare", "--problem", "rosenbrock", "--optimizers", "lbfgs,adam", "--steps", "100"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stdout.splitlines() if "lbfgs" in line or "adam" in line]
    assert len(lines) == 2 and "lbfgs" in lines[0]  # lbfgs ranks first


def test_console_script_bad_argument():
    done = python_m("compare", "--steps", "-1")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "gradtx compare: error: argument --steps: must be an integer >= 1, got '-1'"
    ]
