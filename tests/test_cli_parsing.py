"""The ``gradtx`` command's front door (:mod:`gradtx_cli`): what it answers before JAX loads.

A bad argument, ``--help`` and ``--version`` are answered from the command line
alone; the subprocess tests check that a fresh Python never imported JAX (nor
numpy, nor the gradtx package) to do it. The in-process tests check the text:
plain help, the versions, the optimizers ``search`` offers, negative ranges.
"""

from __future__ import annotations

import importlib.metadata
import re

import jax
import jaxlib
import pytest

import gradtx_cli
from gradtx_cli import LINE_SEARCH, OPTIMIZER_KINDS, SEARCHABLE, main
from gradtx_cli.problems import make_problem
from gradtx_cli.race import OPTIMIZERS, default_rate
from tests.repo_python import ROOT, run_python

PROBLEM_NAMES_WITHOUT_DATA = ("quadratic", "rosenbrock")  # built without scikit-learn

# Runs main in a fresh interpreter, then prints the heavy modules it imported.
PROBE = (
    "import sys; from gradtx_cli import main; status = main(sys.argv[1:]); "
    "print('imported:', *sorted(m for m in ('jax', 'numpy', 'gradtx') if m in sys.modules)); "
    "sys.exit(status)"
)

ANSWERED_WITHOUT_JAX = {
    "unknown flag": (["compare", "--bogus"], 2),
    "bad value": (["compare", "--steps", "-5"], 2),
    "no command": ([], 2),
    "line search in search": (["search", "--optimizer", "lbfgs"], 2),
    "negative range": (["search", "--lr-range", "-1,1"], 2),
    "no test data to rank by": (
        ["compare", "--problem", "rosenbrock", "--rank-by", "test-accuracy"],
        2,
    ),
    "help": (["--help"], 0),
    "compare help": (["compare", "--help"], 0),
    "version": (["--version"], 0),
}


@pytest.mark.parametrize(
    ("argv", "status"), ANSWERED_WITHOUT_JAX.values(), ids=ANSWERED_WITHOUT_JAX.keys()
)
def test_answered_before_jax_is_imported(argv, status):
    done = run_python("-c", PROBE, *argv, timeout=60)
    assert done.returncode == status, done.stderr
    assert done.stdout.splitlines()[-1] == "imported:"  # none of jax, numpy, gradtx
    if status == 2:
        assert len(done.stderr.splitlines()) == 1 and "error:" in done.stderr


def test_python_m_gradtx_cli_is_the_console_script():
    done = run_python("-m", "gradtx_cli", "compare", "--steps", "0", timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "gradtx compare: error: argument --steps: must be an integer >= 1, got '0'"
    ]


# --------------------------------------------------------------------------- --version


def test_version_names_gradtx_jax_and_the_backend(capsys, monkeypatch):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    assert main(["--version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"gradtx {importlib.metadata.version('gradtx')}"
    assert lines[1] == f"jax {jax.__version__}"  # what the imported module says
    assert lines[2].startswith(f"jaxlib {jaxlib.__version__} ")
    plugins = gradtx_cli.backend_plugins()
    if plugins:
        assert lines[3:] == plugins
    else:  # no accelerator plugin: JAX has nothing but its CPU backend to run on
        assert jax.default_backend() == "cpu"
        assert lines[3:] == ["no GPU or TPU backend installed: JAX runs on the CPU"]


def test_version_says_when_jax_platforms_limits_the_backends(capsys, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "JAX_PLATFORMS=cpu limits JAX to those backends"
    )


# --------------------------------------------------------------------------- search's choices


def test_search_offers_exactly_the_optimizers_with_a_rate(capsys):
    assert set(OPTIMIZERS) == set(OPTIMIZER_KINDS)
    assert set(SEARCHABLE) | set(LINE_SEARCH) == set(OPTIMIZERS)
    assert set(LINE_SEARCH) == {"lbfgs", "bfgs", "nonlinear_cg"}
    for name in PROBLEM_NAMES_WITHOUT_DATA:
        problem = make_problem(name)
        assert all(default_rate(problem, n) is not None for n in SEARCHABLE)
        assert all(default_rate(problem, n) is None for n in LINE_SEARCH)

    assert main(["search", "--help"]) == 0
    help_text = capsys.readouterr().out
    offered = re.search(r"--optimizer \{([\w,]+)\}", help_text)[1].split(",")
    assert offered == list(SEARCHABLE)
    flat = " ".join(help_text.split())
    assert "lbfgs, bfgs and nonlinear_cg are not offered: their line search picks each step" in flat


@pytest.mark.parametrize("name", LINE_SEARCH)
def test_search_refuses_a_line_search_at_once(capsys, name):
    assert main(["search", "--optimizer", name]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"gradtx search: error: argument --optimizer: {name} picks its step by line search, "
        f"so it has no learning rate to search; choose from {', '.join(SEARCHABLE)}"
    ]


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize("argv", [["--help"], ["compare", "--help"], ["search", "--help"]])
def test_help_is_plain_text(capsys, argv):
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: gradtx")
    for markup in ("``", ":func:", ":mod:", ":class:", "**"):
        assert markup not in text


def test_top_help_offers_version_and_compare_help_justifies_the_ranking(capsys):
    assert main(["--help"]) == 0
    assert "--version" in capsys.readouterr().out
    assert main(["compare", "--help"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "--rank-by {final-loss,test-accuracy,steps-to-target,wall-time}" in flat
    assert "Default: test-accuracy on digits and logreg" in flat
    assert "Elsewhere steps-to-target" in flat


RANGE_ERROR = "must be LOW,HIGH with 0 < LOW < HIGH, got '-1,1'"


@pytest.mark.parametrize(
    "argv",
    [["--lr-range", "-1,1"], ["--lr-range=-1,1"], ["--wd-range", "-1,1"]],
    ids=["lr separate", "lr joined", "wd separate"],
)
def test_negative_ranges_get_the_range_check_not_argparse(capsys, argv):
    assert main(["search", *argv]) == 2
    option = argv[0].split("=")[0]
    assert capsys.readouterr().err.splitlines() == [
        f"gradtx search: error: argument {option}: {RANGE_ERROR}"
    ]


def test_negative_numbers_reach_every_option_check(capsys):
    assert main(["compare", "--condition-number", "-1e3"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "gradtx compare: error: argument --condition-number: must be a finite number >= 1, "
        "got '-1e3'"
    ]


def test_the_front_door_knows_which_problems_have_test_data():
    """gradtx_cli names them without building them; the problems themselves agree."""
    with_accuracy = {n for n in gradtx_cli.PROBLEMS if make_problem(n).accuracy is not None}
    assert with_accuracy == set(gradtx_cli.WITH_TEST_DATA)
    assert set(gradtx_cli.DEFAULT_STEPS) == set(gradtx_cli.PROBLEMS)


def test_console_script_entry_point_is_the_front_door():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'gradtx = "gradtx_cli:main"' in pyproject
