"""Races every named gradtx optimizer on two convex problems and prints a table.

The problems are the convex ones from the seeds' list of hard cases:

* ``quadratic``: ``f(x) = 0.5 x^T A x`` with ``A = Q diag(lambda) Q^T``, ``lambda``
  log-spaced from 1 to the condition number (``--condition``, default 1e3) and ``Q``
  a random rotation; ``f* = 0``.
* ``logistic``: L2-regularised logistic regression on scikit-learn's bundled breast
  cancer data (standardised features, unpenalised bias); ``f*`` comes from Newton's
  method in float64, so the race needs nothing but numpy, jax and scikit-learn.

Each optimizer runs at its default hyperparameters with one sensible learning rate
per problem (the rates tests/test_convergence.py was tuned with; plain gradient
descent and momentum use ``1 / L`` on the quadratic, ``L`` its largest eigenvalue).
The whole run is one jitted ``jax.lax.scan``; the wall time excludes compilation.

    python examples/race.py                      # both problems, 5000 steps
    python examples/race.py --condition 1e4 --steps 20000 --problems quadratic
    python examples/race.py --quick --plain      # a few seconds, plain-text table
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_breast_cancer

import gradtx

# name -> (factory of the learning rate, rate on the quadratic, rate on the logistic).
# "1/L" is the reciprocal of the quadratic's largest eigenvalue (the condition number).
# AdaDelta's None on the logistic problem is Zeiler's rate-free rule (a rate of 1).
OPTIMIZERS = {
    "sgd": (gradtx.sgd, "1/L", 1.0),
    "momentum": (gradtx.momentum, "1/L", 0.3),
    "nesterov_momentum": (gradtx.nesterov_momentum, "1/L", 0.3),
    "adagrad": (gradtx.adagrad, 0.3, 1.0),
    "rmsprop": (gradtx.rmsprop, 1e-3, 1e-3),
    "rmsprop_centered": (lambda lr: gradtx.rmsprop(lr, centered=True), 1e-3, 1e-3),
    "rmsprop_nesterov": (
        lambda lr: gradtx.rmsprop(lr, momentum=0.9, nesterov=True),
        1e-3,
        1e-3,
    ),
    "adadelta": (gradtx.adadelta, 0.02, None),
    "adam": (gradtx.adam, 0.1, 0.1),
    "adamw": (gradtx.adamw, 0.1, 0.1),
    "amsgrad": (gradtx.amsgrad, 0.3, 1.0),
    "adamax": (gradtx.adamax, 0.3, 1.0),
    "nadam": (gradtx.nadam, 1e-3, 0.01),
}

COLUMNS = ("optimizer", "learning rate", "final loss", "steps to tol", "wall time (ms)")


def _matmul(a, x):
    # Full float32 products, also on GPUs whose default would round to TF32.
    return jnp.matmul(a, x, precision=jax.lax.Precision.HIGHEST)


def quadratic(dim, condition, seed=0):
    """``(loss, x0, f*, L)`` for ``0.5 x^T A x`` with the given condition number."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    a = (q * np.logspace(0.0, math.log10(condition), dim)) @ q.T
    a = jnp.asarray(0.5 * (a + a.T), jnp.float32)
    x0 = jnp.asarray(rng.standard_normal(dim), jnp.float32)
    return (lambda x: 0.5 * _matmul(x, _matmul(a, x))), x0, 0.0, float(condition)


def _newton_logistic(x, s, l2, tol=1e-12, max_iter=100):
    """The regularised logistic loss's minimum, by damped Newton in float64."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    penalty = np.full(xb.shape[1], l2)
    penalty[-1] = 0.0  # the bias is not penalised

    def loss(theta):
        return np.mean(np.logaddexp(0.0, -s * (xb @ theta))) + 0.5 * penalty @ theta**2

    theta = np.zeros(xb.shape[1])
    for _ in range(max_iter):
        p = 0.5 * (1.0 - np.tanh(0.5 * s * (xb @ theta)))  # sigmoid(-margin)
        grad = xb.T @ (-s * p) / len(s) + penalty * theta
        if np.max(np.abs(grad)) < tol:
            break
        hess = (xb.T * (p * (1 - p))) @ xb / len(s) + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while loss(theta - t * step) > loss(theta) - 0.25 * t * grad @ step and t > 1e-8:
            t *= 0.5
        theta = theta - t * step
    return float(loss(theta))


def logistic(l2):
    """``(loss, params0, f*, None)`` for L2-regularised logistic regression."""
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    s = 2.0 * y - 1.0
    f_star = _newton_logistic(x, s, l2)
    xj, sj = jnp.asarray(x, jnp.float32), jnp.asarray(s, jnp.float32)

    def loss(p):
        margin = sj * (_matmul(xj, p["w"]) + p["b"])
        return jnp.mean(jax.nn.softplus(-margin)) + 0.5 * l2 * jnp.sum(p["w"] ** 2)

    params0 = {"w": jnp.zeros(x.shape[1], jnp.float32), "b": jnp.zeros((), jnp.float32)}
    return loss, params0, f_star, None


def race_one(tx, loss_fn, params0, steps):
    """``(losses, seconds)``: the loss before each step and after the last, timed."""

    def run(params0):
        def step(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = tx.update(grads, state, params)
            return (gradtx.apply_updates(params, updates), state), loss

        (params, _), losses = jax.lax.scan(step, (params0, tx.init(params0)), length=steps)
        return jnp.append(losses, loss_fn(params))

    compiled = jax.jit(run).lower(params0).compile()
    start = time.perf_counter()
    losses = jax.block_until_ready(compiled(params0))
    return np.asarray(losses, np.float64), time.perf_counter() - start


def race(problem, steps, tol):
    """One row per optimizer, fastest to the tolerance first."""
    loss_fn, params0, f_star, lipschitz = problem
    column = 1 if lipschitz is not None else 2
    rows = []
    for name, spec in OPTIMIZERS.items():
        factory, rate = spec[0], spec[column]
        if rate == "1/L":
            rate = 1.0 / lipschitz
        tx = factory() if rate is None else factory(rate)
        losses, seconds = race_one(tx, loss_fn, params0, steps)
        reached = np.flatnonzero(losses - f_star <= tol)
        rows.append(
            {
                "optimizer": name,
                "learning rate": "default" if rate is None else f"{rate:.3g}",
                "final loss": losses[-1],
                "steps to tol": int(reached[0]) if reached.size else None,
                "wall time (ms)": 1e3 * seconds,
            }
        )
    never = steps + 1
    rows.sort(key=lambda r: (r["steps to tol"] or never, r["final loss"]))
    return rows


def _cells(row):
    steps = row["steps to tol"]
    return (
        row["optimizer"],
        row["learning rate"],
        f"{row['final loss']:.8g}",
        "-" if steps is None else str(steps),
        f"{row['wall time (ms)']:.1f}",
    )


def format_plain(title, rows):
    """The table as aligned plain text, one ``|``-separated line per optimizer."""
    cells = [COLUMNS] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join([title, *lines])


def print_table(title, rows, plain):
    """Prints with ``rich`` when it is installed (and not ``plain``), else plain text."""
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        print(format_plain(title, rows), end="\n\n", flush=True)
        return
    table = Table()
    for i, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if i < 2 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*_cells(row))
    console = Console(width=max(100, Console().width))
    console.print(title, style="bold", highlight=False)
    console.print(table)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default="quadratic,logistic", help="comma-separated")
    parser.add_argument("--condition", type=float, default=1e3, help="of the quadratic")
    parser.add_argument("--dim", type=int, default=20, help="of the quadratic")
    parser.add_argument("--l2", type=float, default=1e-3, help="logistic L2 coefficient")
    parser.add_argument("--steps", type=int, help="steps per optimizer (default 5000)")
    parser.add_argument("--tol", type=float, default=1e-6, help="target gap f - f*")
    parser.add_argument("--quick", action="store_true", help="default to 300 steps")
    parser.add_argument("--plain", action="store_true", help="plain text, not rich")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 300 if args.quick else 5000
    problems = args.problems.split(",")
    unknown = set(problems) - {"quadratic", "logistic"}
    if unknown:
        parser.error(f"unknown problem(s) {sorted(unknown)}; choose quadratic, logistic")
    if args.condition < 1 or args.dim < 1 or args.steps < 1 or args.tol <= 0 or args.l2 < 0:
        parser.error("need --condition >= 1, --dim >= 1, --steps >= 1, --tol > 0, --l2 >= 0")
    args.problems = problems
    return args


def main(argv=None):
    args = parse_args(argv)
    for name in args.problems:
        if name == "quadratic":
            problem = quadratic(args.dim, args.condition)
            title = f"quadratic (dim {args.dim}, condition number {args.condition:g})"
        else:
            problem = logistic(args.l2)
            title = f"logistic regression (breast cancer, l2 {args.l2:g})"
        loss_fn, params0, f_star, _ = problem
        title += f": f* = {f_star:.10g}, f(start) = {float(loss_fn(params0)):.8g}\n"
        title += (
            f"{args.steps} steps; steps to tol = first step with f - f* <= {args.tol:g}; "
            "wall time excludes compilation"
        )
        print_table(title, race(problem, args.steps, args.tol), args.plain)


if __name__ == "__main__":
    main()
