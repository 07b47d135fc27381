"""The command line: ``gradtx compare`` races optimizers, ``gradtx search`` tunes one.

``gradtx compare`` runs each optimizer for ``--steps`` full-batch steps on one of
the problems of :mod:`gradtx.app.problems` (optionally after tuning each one's
learning rate by random search, ``--tune K``), and prints a ranked table: the
final training loss, the test accuracy where the problem has one, the steps to
the problem's target loss and the wall time. ``--out DIR`` also writes the
learning curves as a PNG and every number as JSON. ``gradtx search`` runs a
learning-rate (and weight-decay) random search for one optimizer and prints
every trial, the best one, and a warning when the best lies at the border of
its range (widen the range and search again).

Each run is one jitted ``jax.lax.scan``; the wall time excludes compilation.
Bad arguments print one line on stderr and exit with status 2.

    gradtx compare                                 # digits MLP, default optimizers
    gradtx compare --problem quadratic --condition-number 1e4 --tune 16
    gradtx search --problem logreg --optimizer adamw --trials 32 --out results/
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from gradtx.app.problems import PROBLEMS, Problem, make_problem
from gradtx.app.race import (
    OPTIMIZERS,
    Result,
    default_rate,
    rank,
    run_optimizer,
    search_hyperparams,
)
from gradtx.training.curves import StepMetrics, plot_learning_curves
from gradtx.training.search import SearchResult, log_uniform

DESCRIPTION = (
    "Race optimizers on a problem (gradtx compare) or tune one optimizer's learning rate "
    "by random search (gradtx search)."
)
DEFAULT_OPTIMIZERS = "sgd,momentum,nesterov_momentum,adagrad,rmsprop,adam,adamw,nadam,radam,lbfgs"
DEFAULT_STEPS = {"digits": 500, "logreg": 500, "quadratic": 2000, "rosenbrock": 2000}
RATE_SPAN = 30.0  # --tune searches each rate over [rate / RATE_SPAN, rate * RATE_SPAN]
WEIGHT_DECAY_RANGE = (1e-6, 0.1)  # gradtx search's default, on problems with validation data
PLOTTED = ("loss", "grad_norm", "update_norm")  # the learning rate is constant in a race


class UsageError(Exception):
    """A bad command line: one line on stderr, exit status 2.

    ``prog`` names the (sub)command whose parser found the error, if one did.
    """

    def __init__(self, message: str, prog: str = "gradtx"):
        super().__init__(message)
        self.prog = prog


# --------------------------------------------------------------------------- output


def _fmt_rate(result: Result) -> str:
    if result.learning_rate is None:
        return "line search"
    return f"{result.learning_rate:.3g}" + (" (tuned)" if result.tuned else "")


def compare_table(results: Sequence[Result]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The header and the cells of the ranked table (``results`` already ranked)."""
    with_accuracy = any(r.accuracy is not None for r in results)
    header = ("rank", "optimizer", "learning rate", "final loss")
    header += ("test accuracy",) if with_accuracy else ()
    header += ("steps to target", "wall time (ms)")
    rows = []
    for i, r in enumerate(results, 1):
        cells = (str(i), r.optimizer, _fmt_rate(r), f"{r.losses[-1]:.6g}")
        if with_accuracy:
            cells += ("-" if r.accuracy is None else f"{100 * r.accuracy:.1f}%",)
        steps = "-" if r.steps_to_target is None else str(r.steps_to_target)
        rows.append(cells + (steps, f"{1e3 * r.seconds:.1f}"))
    return header, rows


def format_plain(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An aligned plain-text table under its title, columns separated by ``|``."""
    cells = [tuple(header), *map(tuple, rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join([title, *lines])


def print_table(title: str, header, rows, plain: bool) -> None:
    """Prints with ``rich`` when it is installed (and not ``plain``), else plain text."""
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        print(format_plain(title, header, rows), end="\n\n", flush=True)
        return
    table = Table()
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i in (1, 2) else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console = Console(width=max(110, Console().width))
    console.print(title, style="bold", highlight=False)
    console.print(table)


def tracked(items: Sequence[str], verb: str, enabled: bool) -> Iterator[str]:
    """Yields ``items`` while a progress bar on stderr follows them.

    The bar is ``rich``'s when it is installed, else ``tqdm``'s, else one
    ``[i/n] verb item`` line per item; ``enabled=False``: no output at all.
    """
    if not enabled:
        yield from items
        return
    try:
        from rich.console import Console
        from rich.progress import Progress
    except ImportError:
        Progress = None
    if Progress is not None:
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(verb, total=len(items))
            for item in items:
                bar.update(task, description=f"{verb} {item}")
                yield item
                bar.advance(task)
        return
    try:
        from tqdm import tqdm
    except ImportError:
        for i, item in enumerate(items, 1):
            print(f"[{i}/{len(items)}] {verb} {item}", file=sys.stderr, flush=True)
            yield item
        return
    with tqdm(items, file=sys.stderr, leave=False) as bar:
        for item in bar:
            bar.set_description(f"{verb} {item}")
            yield item


def _json_number(x: Any) -> float | None:
    """A finite float, or None (JSON has no NaN or infinity)."""
    return float(x) if x is not None and math.isfinite(float(x)) else None


def write_json(path: str, payload: dict) -> None:
    """Writes strict JSON (no NaN), indented."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, allow_nan=False)
        f.write("\n")


def _curve(values: np.ndarray) -> list[float | None]:
    return [_json_number(v) for v in values]


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


def _write_plot(runs: dict[str, StepMetrics], path: str, title: str) -> str | None:
    """The learning-curves PNG; without matplotlib, a warning instead."""
    try:
        return plot_learning_curves(runs, path, metrics=PLOTTED, title=title)
    except ImportError as error:
        print(f"warning: no PNG written: {error}", file=sys.stderr)
        return None


# --------------------------------------------------------------------------- commands


def _make_problem(args: argparse.Namespace) -> Problem:
    try:
        return make_problem(
            args.problem, seed=args.seed, condition_number=args.condition_number, dim=args.dim
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def _race(problem: Problem, name: str, args: argparse.Namespace, notes: list[str]) -> Result:
    """Races ``name`` at its default rate, or with ``--tune`` at the best rate found.

    The search minimises the final training loss after ``--steps`` steps; every
    optimizer gets the same draws (the same seed), each relative to its own
    default rate. The default rate stays when no trial beats it. Border
    warnings and that outcome are appended to ``notes``.
    """
    rate = default_rate(problem, name)
    result = run_optimizer(problem, name, rate, args.steps)
    if not args.tune or rate is None:
        return result
    space = {"learning_rate": log_uniform(rate / RATE_SPAN, rate * RATE_SPAN)}
    found, messages = search_hyperparams(
        problem, name, space, args.tune, args.steps, args.seed, problem.loss
    )
    notes.extend(f"warning: {name}: {m}" for m in messages)
    if not found.best.value < result.losses[-1]:  # also when every trial diverged (NaN)
        notes.append(f"note: {name}: no tuning trial beat the default rate {rate:g}; kept it")
        return result
    best = found.best.hyperparams["learning_rate"]
    return run_optimizer(problem, name, best, args.steps, tuned=True)


def compare_title(problem: Problem, args: argparse.Namespace) -> str:
    """The two title lines of the ranked table."""
    start = float(problem.loss(problem.params))
    optimum = "" if problem.optimum is None else f", f* = {problem.optimum:.8g}"
    tuned = f"; rates tuned by random search, {args.tune} trials each" if args.tune else ""
    return (
        f"{problem.title}: {args.steps} full-batch steps from loss {start:.6g}{optimum}\n"
        f"target loss {problem.target:.6g}{tuned}; wall time excludes compilation"
    )


def compare(args: argparse.Namespace) -> int:
    """``gradtx compare``: races the optimizers and prints the ranked table."""
    problem = _make_problem(args)
    args.steps = args.steps or DEFAULT_STEPS[problem.name]
    results, notes = [], []
    for name in tracked(
        args.optimizers, "tuning and racing" if args.tune else "racing", args.progress
    ):
        results.append(_race(problem, name, args, notes))
    ranked = rank(results)
    title = compare_title(problem, args)
    print_table(title, *compare_table(ranked), args.plain)
    for note in notes:
        print(note, file=sys.stderr)
    if args.out:
        stem = os.path.join(args.out, f"compare-{problem.name}")
        payload = _compare_payload(problem, args, ranked)
        payload["png"] = _write_plot({r.optimizer: r.metrics for r in ranked}, stem + ".png", title)
        write_json(stem + ".json", payload)
        print(f"wrote {stem}.json" + (f" and {payload['png']}" if payload["png"] else ""))
    return 0


def _compare_payload(problem: Problem, args: argparse.Namespace, ranked: Sequence[Result]) -> dict:
    rows = [
        {
            "rank": i,
            "optimizer": r.optimizer,
            "learning_rate": r.learning_rate,
            "tuned": r.tuned,
            "final_loss": _json_number(r.losses[-1]),
            "test_accuracy": r.accuracy,
            "steps_to_target": r.steps_to_target,
            "wall_time_s": r.seconds,
            "compile_time_s": r.compile_seconds,
            "loss": _curve(r.losses),
        }
        for i, r in enumerate(ranked, 1)
    ]
    return {
        "command": "compare",
        "problem": problem.name,
        "title": problem.title,
        "steps": args.steps,
        "seed": args.seed,
        "tune_trials": args.tune,
        "target": problem.target,
        "optimum": problem.optimum,
        "results": rows,
    }


def search_command(args: argparse.Namespace) -> int:
    """``gradtx search``: a random search of one optimizer's rate (and weight decay)."""
    name = args.optimizer
    problem = _make_problem(args)
    rate = default_rate(problem, name)
    if rate is None:
        raise UsageError(
            f"argument --optimizer: {name} picks its step by line search: no rate to search"
        )
    args.steps = args.steps or DEFAULT_STEPS[problem.name]
    space = {"learning_rate": log_uniform(*(args.lr_range or (rate / RATE_SPAN, rate * RATE_SPAN)))}
    decay = args.wd_range
    if decay is None and problem.valid_loss is not None:
        decay = WEIGHT_DECAY_RANGE
    if decay:
        space["weight_decay"] = log_uniform(*decay)
    loss = problem.valid_loss or problem.loss
    measured = "validation loss" if problem.valid_loss else "training loss"
    for _ in tracked([name], f"searching {args.trials} trials of", args.progress):  # one bar
        result, messages = search_hyperparams(
            problem, name, space, args.trials, args.steps, args.seed, loss
        )
    header, rows, best = search_table(result, list(space), measured)
    title = f"{problem.title}: {name}, {args.trials} trials of {args.steps} steps, {measured}"
    print_table(title, header, rows, args.plain)
    print(f"best: {best}")
    for message in messages:
        print(f"warning: {message}", file=sys.stderr)
    if args.out:
        path = os.path.join(args.out, f"search-{problem.name}-{name}.json")
        write_json(path, _search_payload(problem, args, result, space, measured))
        print(f"wrote {path}")
    return 0


def search_table(
    result: SearchResult, names: Sequence[str], measured: str
) -> tuple[tuple[str, ...], list[tuple[str, ...]], str]:
    """``(header, rows, best)`` of a search: trials best first, NaN (diverged) last."""
    order = sorted(result.trials, key=lambda t: (math.isnan(t.value), t.value))
    header = ("rank", *(n.replace("_", " ") for n in names), measured)
    rows = [
        (str(i), *(f"{t.hyperparams[n]:.4g}" for n in names), f"{t.value:.6g}")
        for i, t in enumerate(order, 1)
    ]
    settings = ", ".join(f"{n}={result.best.hyperparams[n]:.4g}" for n in names)
    return header, rows, f"{settings}: {measured} {result.best.value:.6g}"


def _search_payload(
    problem: Problem, args: argparse.Namespace, result: SearchResult, space: dict, measured: str
) -> dict:
    trials = [{"hyperparams": t.hyperparams, "value": _json_number(t.value)} for t in result.trials]
    return {
        "command": "search",
        "problem": problem.name,
        "optimizer": args.optimizer,
        "steps": args.steps,
        "seed": args.seed,
        "objective": measured,
        "space": {n: [d.low, d.high] for n, d in space.items()},
        "trials": trials,
        "best": {"hyperparams": result.best.hyperparams, "value": _json_number(result.best.value)},
        "at_border": list(result.at_border),
    }


# --------------------------------------------------------------------------- arguments


class _Parser(argparse.ArgumentParser):
    """argparse, but an error raises :class:`UsageError` (one line) instead of exiting."""

    def error(self, message: str):
        raise UsageError(message, self.prog)


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
    names = list(OPTIMIZERS) if text == "all" else [n.strip() for n in text.split(",")]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(OPTIMIZERS)} (or 'all')"
        )
    return list(dict.fromkeys(names))


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
        help=f"comma-separated, or 'all' (default {DEFAULT_OPTIMIZERS})",
    )  # fmt: skip
    race.add_argument(
        "--tune", type=_int_at_least(0), default=0, metavar="K",
        help=f"tune each rate first: K random-search trials in [rate/{RATE_SPAN:g}, "
        f"rate*{RATE_SPAN:g}] (default 0: no tuning)",
    )  # fmt: skip
    race.set_defaults(run=compare)
    tune = commands.add_parser(
        "search",
        parents=[common],
        help="random search of a learning rate and weight decay",
        description="Random search of one optimizer's learning rate (and weight decay), "
        "scored by the validation loss (digits, logreg) or the training loss; all trials "
        "train at once (vmap).",
    )
    tune.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adamw")
    tune.add_argument("--trials", type=_int_at_least(1), default=16, help="default: 16")
    tune.add_argument("--lr-range", type=_range, metavar="LOW,HIGH", help="log-uniform")
    tune.add_argument(
        "--wd-range", type=_range, metavar="LOW,HIGH|none",
        help="log-uniform weight decay (default {:g},{:g} on digits and logreg, none "
        "elsewhere)".format(*WEIGHT_DECAY_RANGE),
    )  # fmt: skip
    tune.set_defaults(run=search_command)
    return top


def _fail(prog: str, message: Any, status: int) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``gradtx`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Args:
      argv: the arguments after the program name.

    Returns:
      0 on success; 2 on a bad argument (one line on stderr, no traceback); 1
      when an optional dependency a problem needs is missing; 130 on Ctrl-C.

    Examples:
      >>> from gradtx.app.cli import main
      >>> main(["compare", "--problem", "quadratic", "--optimizers", "sgd,adam", "--steps",
      ...       "50", "--plain", "--no-progress"])  # doctest: +ELLIPSIS
      quadratic, dim 20, condition number 1000: 50 full-batch steps from loss ...
      ...
      0
    """
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    except UsageError as error:
        return _fail(error.prog, error, 2)
    prog = f"gradtx {args.command}"
    try:
        if args.out:
            check_out_dir(args.out)
        return args.run(args)
    except UsageError as error:
        return _fail(prog, error, 2)
    except ImportError as error:
        return _fail(prog, error, 1)
    except KeyboardInterrupt:
        return _fail(prog, "interrupted", 130)
