"""The ``gradtx`` commands: ``gradtx compare`` races optimizers, ``gradtx search`` tunes one.

:mod:`gradtx_cli` parses the command line (before JAX is imported) and hands
the arguments to :func:`run`.

``gradtx compare`` runs each optimizer for ``--steps`` full-batch steps on one of
the problems of :mod:`gradtx_cli.problems` (optionally after tuning each one's
learning rate by random search, ``--tune K``), and prints a ranked table: the
final training loss, the test accuracy where the problem has one, the steps to
the problem's target loss and the wall time, ranked by ``--rank-by`` (the
table's caption says which). A run whose loss ends non-finite is marked
diverged, ranked last and named in one warning line. ``--out DIR`` also writes
the learning curves as a PNG and every number as JSON. ``gradtx search`` runs a
learning-rate (and weight-decay) random search for one optimizer and prints
every trial, the best one, and a warning when the best lies at the border of
its range (widen the range and search again).

Each run is one jitted ``jax.lax.scan``; the wall time excludes compilation.
Bad arguments print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from gradtx.training.curves import StepMetrics
from gradtx.training.plot import plot_learning_curves
from gradtx.training.search import SearchResult, log_uniform
from gradtx_cli import DEFAULT_STEPS, RATE_SPAN, WEIGHT_DECAY_RANGE, UsageError, main
from gradtx_cli.problems import Problem, make_problem
from gradtx_cli.race import (
    Result,
    default_rate,
    diverged_at,
    rank,
    run_optimizer,
    search_hyperparams,
)

__all__ = ["main", "run"]

PLOTTED = ("loss", "grad_norm", "update_norm")  # the learning rate is constant in a race


# --------------------------------------------------------------------------- output


def _fmt_rate(result: Result) -> str:
    if result.learning_rate is None:
        return "line search"
    return f"{result.learning_rate:.3g}" + (" (tuned)" if result.tuned else "")


def compare_table(results: Sequence[Result]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The header and the cells of the ranked table (``results`` already ranked).

    A diverged run reads ``diverged`` for its final loss, and ``-`` for its
    test accuracy and steps to target (measured on non-finite weights).
    """
    with_accuracy = any(r.accuracy is not None for r in results)
    header = ("rank", "optimizer", "learning rate", "final loss")
    header += ("test accuracy",) if with_accuracy else ()
    header += ("steps to target", "wall time (ms)")
    rows = []
    for i, r in enumerate(results, 1):
        diverged = diverged_at(r) is not None
        loss = "diverged" if diverged else f"{r.losses[-1]:.6g}"
        cells = (str(i), r.optimizer, _fmt_rate(r), loss)
        if with_accuracy:
            cells += ("-" if r.accuracy is None or diverged else f"{100 * r.accuracy:.1f}%",)
        steps = "-" if r.steps_to_target is None or diverged else str(r.steps_to_target)
        rows.append(cells + (steps, f"{1e3 * r.seconds:.1f}"))
    return header, rows


def divergence_warning(results: Sequence[Result]) -> str | None:
    """One line naming every diverged run and when its loss became non-finite, or None."""
    runs = [(r.optimizer, diverged_at(r)) for r in results]
    named = [f"{name} (after {k} step{'s' * (k != 1)})" for name, k in runs if k is not None]
    if not named:
        return None
    return f"warning: diverged (non-finite loss), ranked last: {', '.join(named)}"


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


def backend() -> str:
    """The platform the runs use, with the device's name where it adds: ``gpu (NVIDIA ...)``."""
    device = jax.devices()[0]
    kind = device.device_kind
    return device.platform if kind.lower() == device.platform else f"{device.platform} ({kind})"


def rank_order(problem: Problem, chosen: str | None) -> tuple[str, str]:
    """``(key for rank, caption)``: ``--rank-by``'s choice, or the problem's default.

    The default is the test accuracy where the problem has test data, else the
    steps to the target loss; the caption says which and why it was picked.
    """
    if chosen is None:
        if problem.accuracy is not None:
            return "test_accuracy", "ranked by test accuracy (the default with test data)"
        return "steps_to_target", (
            "ranked by steps to target, then final loss (the default without test data)"
        )
    if chosen == "test-accuracy" and problem.accuracy is None:  # gradtx_cli checks it first
        raise UsageError(f"argument --rank-by: the {problem.name} problem has no test data")
    key = chosen.replace("-", "_")
    then = "" if key == "final_loss" else ", then final loss"
    return key, f"ranked by {chosen.replace('-', ' ')}{then}"


def compare_title(problem: Problem, args: argparse.Namespace, ranking: str) -> str:
    """The three caption lines of the ranked table; ``ranking`` is the last one's start."""
    start = float(problem.loss(problem.params))
    optimum = "" if problem.optimum is None else f", f* = {problem.optimum:.8g}"
    tuned = f"; rates tuned by random search, {args.tune} trials each" if args.tune else ""
    return (
        f"{problem.title}: {args.steps} full-batch steps from loss {start:.6g}{optimum}\n"
        f"target loss {problem.target:.6g}{tuned}; wall time on {backend()}, "
        f"excluding compilation\n{ranking}; diverged runs last"
    )


def compare(args: argparse.Namespace) -> int:
    """``gradtx compare``: races the optimizers and prints the ranked table."""
    problem = _make_problem(args)
    key, ranking = rank_order(problem, args.rank_by)
    args.steps = args.steps or DEFAULT_STEPS[problem.name]
    results, notes = [], []
    for name in tracked(
        args.optimizers, "tuning and racing" if args.tune else "racing", args.progress
    ):
        results.append(_race(problem, name, args, notes))
    ranked = rank(results, key)
    title = compare_title(problem, args, ranking)
    print_table(title, *compare_table(ranked), args.plain)
    warning = divergence_warning(ranked)
    for note in notes + ([warning] if warning else []):
        print(note, file=sys.stderr)
    if args.out:
        stem = os.path.join(args.out, f"compare-{problem.name}")
        payload = _compare_payload(problem, args, ranked, key)
        payload["png"] = _write_plot({r.optimizer: r.metrics for r in ranked}, stem + ".png", title)
        write_json(stem + ".json", payload)
        print(f"wrote {stem}.json" + (f" and {payload['png']}" if payload["png"] else ""))
    return 0


def _compare_payload(
    problem: Problem, args: argparse.Namespace, ranked: Sequence[Result], rank_by: str
) -> dict:
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
            "diverged_after_steps": diverged_at(r),
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
        "rank_by": rank_by,
        "backend": backend(),
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
    diverged = sum(math.isnan(t.value) for t in result.trials)
    if diverged:
        print(
            f"warning: {diverged} of {args.trials} trials diverged (non-finite {measured}); "
            "they rank last",
            file=sys.stderr,
        )
    if args.out:
        path = os.path.join(args.out, f"search-{problem.name}-{name}.json")
        write_json(path, _search_payload(problem, args, result, space, measured))
        print(f"wrote {path}")
    return 0


def _fmt_value(value: float) -> str:
    return "diverged" if math.isnan(value) else f"{value:.6g}"


def search_table(
    result: SearchResult, names: Sequence[str], measured: str
) -> tuple[tuple[str, ...], list[tuple[str, ...]], str]:
    """``(header, rows, best)`` of a search: trials best first, NaN (diverged) last."""
    order = sorted(result.trials, key=lambda t: (math.isnan(t.value), t.value))
    header = ("rank", *(n.replace("_", " ") for n in names), measured)
    rows = [
        (str(i), *(f"{t.hyperparams[n]:.4g}" for n in names), _fmt_value(t.value))
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


COMMANDS = {"compare": compare, "search": search_command}


def run(args: argparse.Namespace) -> int:
    """Runs the command that :func:`gradtx_cli.parser` parsed; returns the exit status.

    Raises:
      UsageError: an argument the parser could not check alone (a problem's
        dimension, ``--rank-by test-accuracy`` without test data).
      ImportError: an optional dependency a problem needs is missing.
    """
    return COMMANDS[args.command](args)
