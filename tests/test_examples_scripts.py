"""Every Flax / training / second-order example runs as a user would run it, and does its job.

Each script runs in a subprocess (``sys.executable``, the repository root as the
working directory and on ``PYTHONPATH``), must exit with status 0, and prints its
metric in a fixed format that is parsed here and checked against the bar the
script is meant to clear. The README (its main command, `gradtx compare`) is tested in
tests/test_examples.py.

Run times: every training script runs with ``--quick``: the two plain Flax
scripts 15 epochs instead of 30, ``lr_search.py`` and ``early_stopping.py`` fewer
trials and epochs, or a shorter patience, but the same code path end to end, and
the same accuracy bar (15 epochs of the Flax scripts reach 96-98%).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.repo_python import run_python

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TARGET_ACCURACY = 0.95
NUMBER = r"([-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?)"


def run_example(name: str, *flags: str) -> str:
    """Runs ``examples/<name>`` with ``flags``; its standard output."""
    result = run_python(str(EXAMPLES / name), *flags)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def metric(text: str, label: str) -> float:
    """The number of the line ``<label>: <number>``, which must appear exactly once."""
    found = re.findall(rf"^{re.escape(label)}: {NUMBER}$", text, re.MULTILINE)
    assert len(found) == 1, (label, text)
    return float(found[0])


def test_linen_digits_reaches_95_percent():
    out = run_example("linen_digits.py", "--quick")
    assert last_line(out).startswith("test accuracy: ")
    assert metric(out, "test accuracy") >= TARGET_ACCURACY, out


def test_nnx_digits_reaches_95_percent():
    out = run_example("nnx_digits.py", "--quick")
    assert last_line(out).startswith("test accuracy: ")
    assert metric(out, "test accuracy") >= TARGET_ACCURACY, out
    assert "150 steps of gradtx.adamw" in out  # 15 epochs of 10 minibatches


def test_lr_search_quick_finds_a_rate_that_reaches_95_percent():
    out = run_example("lr_search.py", "--quick")
    assert last_line(out).startswith("test accuracy: ")
    assert metric(out, "test accuracy") >= TARGET_ACCURACY, out
    assert "8 trials of 10 epochs" in out
    best = re.search(rf"^best: learning rate {NUMBER}, weight decay {NUMBER}", out, re.MULTILINE)
    assert best, out
    # The best setting lies in the search space (log-uniform on these ranges).
    assert 1e-4 <= float(best[1]) <= 1e-1 and 1e-5 <= float(best[2]) <= 1.0
    # A trained MLP's validation loss beats chance, log(10) = 2.30, by far.
    assert float(re.search(rf"validation loss {NUMBER}$", out, re.MULTILINE)[1]) < 0.5


def test_early_stopping_quick_reaches_95_percent_with_alg_7_2_and_7_3():
    out = run_example("early_stopping.py", "--quick")
    assert metric(out, "test accuracy (Alg. 7.2)") >= TARGET_ACCURACY, out
    assert metric(out, "test accuracy (Alg. 7.3)") >= TARGET_ACCURACY, out
    assert last_line(out).startswith("test accuracy (Alg. 7.3): ")
    stop = re.search(r"stopped after (\d+) steps; .* at step i\* = (\d+)", out)
    assert stop, out
    stopped, best = int(stop[1]), int(stop[2])
    # --quick: patience 3 evaluations, one per epoch of 1077 // 128 = 8 steps, at most
    # 60 epochs. Alg. 7.1 stops exactly `patience` evaluations after its best one.
    assert 0 < best < stopped <= 60 * 8
    assert stopped - best == 3 * 8 or stopped == 60 * 8, out
    assert f"for {best} steps" in out  # Alg. 7.2 retrains for i* steps


def test_second_order_logreg_matches_scipy():
    out = run_example("second_order_logreg.py")
    assert last_line(out).startswith("max |params - scipy|: ")
    assert metric(out, "max |params - scipy|") <= 1e-5, out
    scipy_loss = float(re.search(rf"^scipy L-BFGS-B: .* loss {NUMBER}", out, re.MULTILINE)[1])
    rows = {
        m[1]: m.groups()[1:]
        for m in re.finditer(
            rf"^(lbfgs|newton|nonlinear_cg) +(\d+) +(.+?) +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}$",
            out,
            re.MULTILINE,
        )
    }
    assert set(rows) == {"lbfgs", "newton", "nonlinear_cg"}, out
    for name, (_, reason, loss, grad_norm, deviation, _) in rows.items():
        assert reason == "|grad| <= tol", (name, out)
        assert float(grad_norm) <= 1e-9, (name, out)
        assert float(deviation) <= 1e-5, (name, out)
        # The loss is flat at its minimum: a 1e-7 error on the params moves it by
        # ~1e-14 (0.5 * 0.14 * 1e-14), below the 15 printed decimals' last digit.
        assert abs(float(loss) - scipy_loss) <= 2e-15, (name, out)
    # Newton converges quadratically: a handful of steps where the others need tens.
    assert int(rows["newton"][0]) < 20 < int(rows["lbfgs"][0])
