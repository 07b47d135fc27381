"""The ``gradtx`` command's front door: it reads the command line before JAX is loaded.

Importing any module of the ``gradtx`` package runs ``gradtx/__init__.py``, which
imports JAX: about a second on a warm machine, many more on a cold one. So the
parser lives here, outside that package, with nothing but the standard library:
a bad argument, ``--help`` and ``--version`` are answered at once, and only a
command line that parses imports :mod:`gradtx_cli.commands`, which runs it.

This module is also the one home of the names the parser offers (problems,
optimizers, ranking keys); :mod:`gradtx_cli.commands` reads them from here.

    gradtx compare                                 # digits MLP, default optimizers
    gradtx compare --problem quadratic --condition-number 1e4 --tune 16
    gradtx search --problem logreg --optimizer adamw --trials 32 --out results/
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

PROBLEMS = ("digits", "logreg", "quadratic", "rosenbrock")
WITH_TEST_DATA = ("digits", "logreg")  # the problems with a held-out test accuracy
DEFAULT_STEPS = {"digits": 500, "logreg": 500, "quadratic": 2000, "rosenbrock": 2000}

# name -> kind: the kind picks the problem's default learning rate. None: the
# optimizer's line search picks each step, so it has no rate to tune or search.
OPTIMIZER_KINDS: dict[str, str | None] = {
    "sgd": "gd",
    "momentum": "momentum",
    "nesterov_momentum": "momentum",
    "adagrad": "adagrad",
    "adadelta": "adadelta",
    "rmsprop": "rmsprop",
    "adam": "adam",
    "adamw": "adam",
    "amsgrad": "adam",
    "adamax": "adam",
    "nadam": "adam",
    "radam": "adam",
    "adabound": "adam",
    "ranger": "adam",
    "rprop": "rprop",
    "lbfgs": None,
    "bfgs": None,
    "nonlinear_cg": None,
}
LINE_SEARCH = tuple(name for name, kind in OPTIMIZER_KINDS.items() if kind is None)
SEARCHABLE = tuple(name for name, kind in OPTIMIZER_KINDS.items() if kind is not None)
DEFAULT_OPTIMIZERS = "sgd,momentum,nesterov_momentum,adagrad,rmsprop,adam,adamw,nadam,radam,lbfgs"

RANK_KEYS = ("final-loss", "test-accuracy", "steps-to-target", "wall-time")
RATE_SPAN = 30.0  # --tune searches each rate over [rate / RATE_SPAN, rate * RATE_SPAN]
WEIGHT_DECAY_RANGE = (1e-6, 0.1)  # gradtx search's default, on problems with validation data

DESCRIPTION = (
    "Race optimizers on a problem (gradtx compare) or tune one optimizer's learning rate "
    "by random search (gradtx search). Run gradtx compare --help or gradtx search --help "
    "for their options."
)
_LISTED_LINE_SEARCH = ", ".join(LINE_SEARCH[:-1]) + " and " + LINE_SEARCH[-1]
RANK_HELP = (
    "what ranks the table: final-loss, test-accuracy, steps-to-target or wall-time. "
    f"Default: test-accuracy on {' and '.join(WITH_TEST_DATA)}, which have held-out test "
    "data: the optimizer to pick is the one whose model classifies unseen data best, and "
    "a lower training loss can mean overfitting. Elsewhere steps-to-target: the aim there "
    "is the minimum, and losses below the target differ by rounding, not merit. Ties, and "
    "runs that never reach the target, are ordered by final loss; a run that diverged "
    "ranks last."
)


class UsageError(Exception):
    """A bad command line: one line on stderr, exit status 2.

    ``prog`` names the (sub)command whose parser found the error, if one did.
    """

    def __init__(self, message: str, prog: str = "gradtx"):
        super().__init__(message)
        self.prog = prog


# --------------------------------------------------------------------------- --version


def _installed(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def backend_plugins() -> list[str]:
    """``"distribution version (plugin)"`` for each accelerator backend JAX can load.

    Read from the installed packages, as JAX finds them (the ``jax_plugins``
    entry points, and ``libtpu`` for TPUs), without importing JAX.
    """
    found = []
    for entry in metadata.entry_points(group="jax_plugins"):
        dist = getattr(entry, "dist", None)
        name, version = (dist.name, dist.version) if dist else (entry.value, "unknown version")
        found.append(f"{name} {version} ({entry.name})")
    for tpu in ("libtpu", "libtpu-nightly"):
        if _installed(tpu) != "not installed":
            found.append(f"{tpu} {_installed(tpu)} (TPU)")
    return found


def version_text() -> str:
    """gradtx's, JAX's and the backends' versions, from the installed packages."""
    lines = [
        f"gradtx {_installed('gradtx')}",
        f"jax {_installed('jax')}",
        f"jaxlib {_installed('jaxlib')} (XLA, with the CPU backend)",
    ]
    plugins = backend_plugins()
    lines += plugins or ["no GPU or TPU backend installed: JAX runs on the CPU"]
    if os.environ.get("JAX_PLATFORMS"):
        lines.append(f"JAX_PLATFORMS={os.environ['JAX_PLATFORMS']} limits JAX to those backends")
    return "\n".join(lines)


class _Version(argparse.Action):
    """``--version``: prints :func:`version_text` and exits (read only when asked for)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


# --------------------------------------------------------------------------- argument types


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    return parse


def _condition_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 1, got {text!r}")
    return value


def _optimizer_list(text: str) -> list[str]:
    names = list(OPTIMIZER_KINDS) if text == "all" else [n.strip() for n in text.split(",")]
    unknown = [n for n in names if n not in OPTIMIZER_KINDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(OPTIMIZER_KINDS)} (or 'all')"
        )
    return list(dict.fromkeys(names))


def _searchable(name: str) -> str:
    if name in LINE_SEARCH:
        raise argparse.ArgumentTypeError(
            f"{name} picks its step by line search, so it has no learning rate to search; "
            f"choose from {', '.join(SEARCHABLE)}"
        )
    if name not in SEARCHABLE:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer {name!r}; choose from {', '.join(SEARCHABLE)}"
        )
    return name


def _range(text: str) -> tuple[float, ...]:
    """``(low, high)`` from ``"LOW,HIGH"``; ``()`` from ``"none"``."""
    if text == "none":
        return ()
    try:
        low, high = (float(t) for t in text.split(","))
    except ValueError:
        low = high = math.nan
    if not (0 < low < high < math.inf):
        raise argparse.ArgumentTypeError(f"must be LOW,HIGH with 0 < LOW < HIGH, got {text!r}")
    return low, high


_NEGATIVE = re.compile(r"-\.?\d")  # "-1,1", "-1e3", "-.5": a value, never an option


def attach_negative_values(argv: Sequence[str]) -> list[str]:
    """Joins ``--option -1,1`` into ``--option=-1,1``.

    argparse takes a word that starts with ``-`` for an option unless it is a
    plain negative number, so ``--lr-range -1,1`` or ``--condition-number -1e3``
    would fail with "expected one argument" instead of the option's own check.
    No option of ``gradtx`` starts with a dash and a digit.

    Examples:
      >>> from gradtx_cli import attach_negative_values
      >>> attach_negative_values(["search", "--lr-range", "-1,1", "--plain"])
      ['search', '--lr-range=-1,1', '--plain']
    """
    joined: list[str] = []
    for word in argv:
        previous = joined[-1] if joined else ""
        if _NEGATIVE.match(word) and previous.startswith("--") and "=" not in previous:
            joined[-1] = f"{previous}={word}"
        else:
            joined.append(word)
    return joined


def check_out_dir(path: str) -> str:
    """Creates ``path`` if needed and checks that a file can be written in it.

    Raises:
      UsageError: the directory cannot be created or written to.
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(f"argument --out: cannot write to {path!r}: {reason}.") from None
    return path


# --------------------------------------------------------------------------- the parser


class _Parser(argparse.ArgumentParser):
    """argparse, but an error raises :class:`UsageError` (one line) instead of exiting."""

    def error(self, message: str):
        raise UsageError(message, self.prog)


def _common_arguments() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--problem", choices=PROBLEMS, default="digits", help="default: digits")
    defaults = ", ".join(f"{n} {k}" for n, k in DEFAULT_STEPS.items())
    common.add_argument("--steps", type=_int_at_least(1), help=f"per run (default: {defaults})")
    common.add_argument("--seed", type=_int_at_least(0), default=0, help="default: 0")
    common.add_argument(
        "--condition-number", type=_condition_number, default=1e3, help="of quadratic (1000)"
    )
    common.add_argument(
        "--dim", type=_int_at_least(1), help="quadratic (20), rosenbrock (2), digits hidden (64)"
    )
    common.add_argument("--out", metavar="DIR", help="write the results (JSON, PNG) there")
    common.add_argument("--plain", action="store_true", help="plain-text table, not rich")
    common.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    return common


def parser() -> argparse.ArgumentParser:
    """The ``gradtx`` argument parser, with the ``compare`` and ``search`` subcommands."""
    top = _Parser(prog="gradtx", description=DESCRIPTION)
    top.add_argument(
        "--version", action=_Version, help="print the versions of gradtx, JAX and its backends"
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="{compare,search}")
    common = _common_arguments()
    race = commands.add_parser(
        "compare",
        parents=[common],
        help="race optimizers on a problem",
        description="Races optimizers on a problem and prints a ranked table: final loss, "
        "test accuracy (digits, logreg), steps to the target loss, wall time.",
    )
    race.add_argument(
        "--optimizers", type=_optimizer_list, default=_optimizer_list(DEFAULT_OPTIMIZERS),
        help=f"comma-separated, or 'all' (default: {DEFAULT_OPTIMIZERS.replace(',', ', ')})",
    )  # fmt: skip
    race.add_argument("--rank-by", choices=RANK_KEYS, help=RANK_HELP)
    race.add_argument(
        "--tune", type=_int_at_least(0), default=0, metavar="K",
        help=f"tune each rate first: K random-search trials in [rate/{RATE_SPAN:g}, "
        f"rate*{RATE_SPAN:g}], scored by the final training loss (default 0: no tuning; "
        f"{_LISTED_LINE_SEARCH} have no rate and run as they are)",
    )  # fmt: skip
    tune = commands.add_parser(
        "search",
        parents=[common],
        help="random search of a learning rate and weight decay",
        description="Random search of one optimizer's learning rate (and weight decay), "
        "scored by the validation loss (digits, logreg) or the training loss; all trials "
        f"train at once (vmap). {_LISTED_LINE_SEARCH} are not offered: their line search "
        "picks each step, so they have no learning rate to search.",
    )
    tune.add_argument(
        "--optimizer", type=_searchable, default="adamw", metavar="{" + ",".join(SEARCHABLE) + "}",
        help=f"default: adamw ({_LISTED_LINE_SEARCH} have no rate to search)",
    )  # fmt: skip
    tune.add_argument("--trials", type=_int_at_least(1), default=16, help="default: 16")
    tune.add_argument("--lr-range", type=_range, metavar="LOW,HIGH", help="log-uniform")
    tune.add_argument(
        "--wd-range", type=_range, metavar="LOW,HIGH|none",
        help="log-uniform weight decay (default {:g},{:g} on digits and logreg, none "
        "elsewhere)".format(*WEIGHT_DECAY_RANGE),
    )  # fmt: skip
    return top


def _check_test_data(problem: str) -> None:
    if problem not in WITH_TEST_DATA:
        raise UsageError(f"argument --rank-by: the {problem} problem has no test data")


def _fail(prog: str, message: Any, status: int) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``gradtx`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    The arguments are parsed, and ``--out`` checked, before JAX is imported.

    Args:
      argv: the arguments after the program name.

    Returns:
      0 on success; 2 on a bad argument (one line on stderr, no traceback); 1
      when a dependency (JAX, or an optional one a problem needs) is missing;
      130 on Ctrl-C.

    Examples:
      >>> from gradtx_cli import main
      >>> main(["compare", "--problem", "quadratic", "--optimizers", "sgd,adam", "--steps",
      ...       "50", "--plain", "--no-progress"])  # doctest: +ELLIPSIS
      quadratic, dim 20, condition number 1000: 50 full-batch steps from loss ...
      ...
      0
    """
    words = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser().parse_args(attach_negative_values(words))
    except SystemExit as exit_:  # --help, --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except UsageError as error:
        return _fail(error.prog, error, 2)
    prog = f"gradtx {args.command}"
    try:
        if args.command == "compare" and args.rank_by == "test-accuracy":
            _check_test_data(args.problem)
        if args.out:
            check_out_dir(args.out)
        from gradtx_cli.commands import run  # imports JAX

        return run(args)
    except UsageError as error:
        return _fail(prog, error, 2)
    except ImportError as error:
        return _fail(prog, error, 1)
    except KeyboardInterrupt:
        return _fail(prog, "interrupted", 130)
