"""Racing optimizers on a problem: build, run under one ``lax.scan``, rank, tune.

The engine behind ``gradtx compare`` and ``gradtx search`` (:mod:`gradtx_cli.commands`),
usable from Python too:

* :data:`OPTIMIZERS` names the optimizers a race can use, each with its *kind*,
  which picks the problem's default learning rate (:func:`default_rate`);
* :func:`build` makes one at a learning rate, optionally with weight decay;
* :func:`run_optimizer` runs it for a number of full-batch steps, compiled once
  and timed without the compilation, and measures the run (:class:`Result`);
* :func:`rank` orders the results by final loss, test accuracy, steps to the
  problem's target or wall time, diverged runs last (:func:`diverged_at`);
* :func:`search_hyperparams` tunes the learning rate (and weight decay) by
  :func:`gradtx.random_search`, every trial vmapped in one compiled program.

Every update gets the loss, its gradient and the loss function as the extra
arguments ``value``, ``grad`` and ``value_fn``, so line searches and
quasi-Newton methods race beside first-order methods, which ignore them.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gradtx
from gradtx.base import GradientTransformation, Params
from gradtx.training.curves import StepMetrics, step_metrics
from gradtx.training.search import SearchBorderWarning, SearchResult, random_search
from gradtx_cli import OPTIMIZER_KINDS
from gradtx_cli.problems import Problem

# name -> (factory, kind): each optimizer is gradtx's function of that name; the
# kind picks the problem's default rate; None: the optimizer's line search picks
# the step, so it gets no rate and is never tuned. The names live in gradtx_cli,
# which offers them on the command line before JAX is imported.
OPTIMIZERS: dict[str, tuple[Callable[..., GradientTransformation], str | None]] = {
    name: (getattr(gradtx, name), kind) for name, kind in OPTIMIZER_KINDS.items()
}
_DECOUPLED_DECAY = ("adamw", "adadelta")  # factories with their own ``weight_decay``
RANK_KEYS = ("final_loss", "test_accuracy", "steps_to_target", "wall_time")


class Result(NamedTuple):
    """One optimizer's run on a problem."""

    optimizer: str
    learning_rate: float | None  # None: the optimizer's line search picks each step.
    tuned: bool  # the rate comes from a random search.
    losses: np.ndarray  # (steps + 1,) float64: the loss before each step and after the last.
    metrics: StepMetrics  # (steps,) float64 per field: the learning curves.
    accuracy: float | None  # test accuracy of the final params, where the problem has one.
    steps_to_target: int | None  # the first k with losses[k] <= target; None: never.
    seconds: float  # wall time of the compiled run.
    compile_seconds: float  # wall time of the compilation.


def default_rate(problem: Problem, name: str) -> float | None:
    """The learning rate optimizer ``name`` races at on ``problem`` by default.

    Args:
      problem: the problem; its ``rates`` map optimizer kinds (and names that
        differ from their kind) to rates.
      name: a key of :data:`OPTIMIZERS`.

    Returns:
      The rate, or None for an optimizer whose line search picks the step.

    Examples:
      >>> from gradtx_cli.problems import quadratic
      >>> from gradtx_cli.race import default_rate
      >>> problem = quadratic(condition_number=100.0)
      >>> default_rate(problem, "sgd"), default_rate(problem, "lbfgs")  # 1 / L, line search
      (0.01, None)
    """
    kind = OPTIMIZERS[name][1]
    return None if kind is None else problem.rates.get(name, problem.rates[kind])


def build(name: str, learning_rate: Any = None, weight_decay: Any = None) -> GradientTransformation:
    """The optimizer ``name`` at a learning rate, with optional weight decay.

    Args:
      name: a key of :data:`OPTIMIZERS`.
      learning_rate: a number or a traced scalar; ``None``: the factory's
        default (for a line search, a unit first trial step).
      weight_decay: ``None``: the factory's default. Otherwise ``lambda``: the
        factory's own decoupled ``weight_decay`` where it has one (``adamw``,
        ``adadelta``), else a coupled L2 term ``g + lambda w`` ahead of it.

    Returns:
      The transformation.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx_cli.race import build
      >>> tx = build("sgd", 0.5, weight_decay=1.0)  # g + w, then -0.5 (g + w)
      >>> tx.update(jnp.array([1.0]), tx.init(jnp.array([2.0])), jnp.array([2.0]))[0]
      Array([-1.5], dtype=float32)
    """
    factory = OPTIMIZERS[name][0]
    kwargs = {} if learning_rate is None else {"learning_rate": learning_rate}
    if weight_decay is None:
        return factory(**kwargs)
    if name in _DECOUPLED_DECAY:
        return factory(**kwargs, weight_decay=weight_decay)
    return gradtx.chain(gradtx.add_decayed_weights(weight_decay), factory(**kwargs))


def trajectory(
    tx: GradientTransformation, loss: Callable[[Params], Any], params: Params, steps: int, rate: Any
) -> tuple[Params, StepMetrics]:
    """``steps`` full-batch updates of ``tx`` on ``loss``, as one ``lax.scan``.

    Traceable (jit, vmap). Each update gets ``value``, ``grad`` and ``value_fn``
    as extra arguments.

    Args:
      tx: the optimizer.
      loss: the loss, ``params -> scalar``.
      params: the start.
      steps: the number of updates, an integer >= 1.
      rate: the learning rate recorded in the curves (``None``: NaN).

    Returns:
      ``(final params, curves)``: the curves a :class:`StepMetrics` of arrays
      ``(steps,)``, the loss at step ``k`` taken before the ``k``-th update.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> from gradtx_cli.race import trajectory
      >>> final, curves = trajectory(gradtx.sgd(0.25), lambda x: x @ x, jnp.ones(2), 2, 0.25)
      >>> final, curves.loss  # x <- x - 0.25 (2 x) = x / 2
      (Array([0.25, 0.25], dtype=float32), Array([2. , 0.5], dtype=float32))
    """
    value_and_grad = jax.value_and_grad(loss)

    def step(carry, _):
        params, state = carry
        value, grads = value_and_grad(params)
        updates, state = tx.update(grads, state, params, value=value, grad=grads, value_fn=loss)
        metrics = step_metrics(grads, updates, loss=value, learning_rate=rate)
        return (gradtx.apply_updates(params, updates), state), metrics

    (params, _), metrics = jax.lax.scan(step, (params, tx.init(params)), length=steps)
    return params, metrics


def run_optimizer(
    problem: Problem, name: str, learning_rate: float | None, steps: int, *, tuned: bool = False
) -> Result:
    """Runs optimizer ``name`` on ``problem``: compiles, times the run, measures it.

    Args:
      problem: the problem.
      name: a key of :data:`OPTIMIZERS`.
      learning_rate: the rate; ``None`` for the factory's default.
      steps: the number of updates, an integer >= 1.
      tuned: recorded in the result: the rate came from a search.

    Returns:
      The :class:`Result`; ``seconds`` excludes compilation.

    Examples:
      >>> from gradtx_cli.problems import rosenbrock
      >>> from gradtx_cli.race import run_optimizer
      >>> result = run_optimizer(rosenbrock(), "lbfgs", None, steps=60)
      >>> result.losses[0], result.losses[-1] < 1e-6, result.steps_to_target < 60
      (np.float64(24.2...), np.True_, True)
    """

    tx = build(name, learning_rate)

    def run(params):
        final, metrics = trajectory(tx, problem.loss, params, steps, learning_rate)
        accuracy = jnp.nan if problem.accuracy is None else problem.accuracy(final)
        return jnp.append(metrics.loss, problem.loss(final)), metrics, accuracy

    start = time.perf_counter()
    compiled = jax.jit(run).lower(problem.params).compile()
    compiled_at = time.perf_counter()
    losses, metrics, accuracy = jax.block_until_ready(compiled(problem.params))
    seconds = time.perf_counter() - compiled_at
    losses = np.asarray(losses, np.float64)
    reached = np.flatnonzero(losses <= problem.target)
    return Result(
        optimizer=name,
        learning_rate=learning_rate,
        tuned=tuned,
        losses=losses,
        metrics=StepMetrics(*(np.asarray(m, np.float64) for m in metrics)),
        accuracy=None if problem.accuracy is None else float(accuracy),
        steps_to_target=int(reached[0]) if reached.size else None,
        seconds=seconds,
        compile_seconds=compiled_at - start,
    )


def diverged_at(result: Result) -> int | None:
    """The first ``k`` with a non-finite ``losses[k]`` when the run ended non-finite, else None."""
    if math.isfinite(float(result.losses[-1])):
        return None
    return int(np.flatnonzero(~np.isfinite(result.losses))[0])


def rank(results: Sequence[Result], by: str) -> list[Result]:
    """Orders results best first by one measure; diverged runs last.

    Ties, and runs that never reached the target when ranking by steps to it,
    are ordered by final loss. A run whose final loss is NaN or infinite ranks
    after every finite one, whatever it measured on its way (it may have passed
    the target, and its test accuracy is that of NaN weights).

    Args:
      results: the runs.
      by: ``"final_loss"``, ``"test_accuracy"`` (highest first),
        ``"steps_to_target"`` or ``"wall_time"``.

    Returns:
      The runs, best first; diverged runs keep their given order.

    Raises:
      ValueError: an unknown ``by``, or ``"test_accuracy"`` for a run without one.
    """
    if by not in RANK_KEYS:
        raise ValueError(f"rank: by must be one of {', '.join(RANK_KEYS)}, got {by!r}.")
    if by == "test_accuracy" and any(r.accuracy is None for r in results):
        raise ValueError("rank: by 'test_accuracy' needs runs on a problem with test data.")

    def key(r: Result) -> tuple[float, ...]:
        final = float(r.losses[-1])
        if not math.isfinite(final):
            return (1.0,)
        measure = {
            "final_loss": final,
            "test_accuracy": -r.accuracy if r.accuracy is not None else 0.0,
            "steps_to_target": math.inf if r.steps_to_target is None else r.steps_to_target,
            "wall_time": r.seconds,
        }[by]
        return (0.0, measure, final)

    return sorted(results, key=key)


def search_hyperparams(
    problem: Problem,
    name: str,
    space: Mapping[str, Any],
    num_trials: int,
    steps: int,
    seed: int,
    objective: Callable[[Params], Any],
) -> tuple[SearchResult, list[str]]:
    """Random search of ``learning_rate`` (and ``weight_decay``), trials vmapped.

    Each trial runs ``steps`` updates of :func:`build` at its setting and is
    scored by ``objective`` at the final params; a diverged run scores NaN,
    which ranks last. :func:`gradtx.random_search` runs every trial at once
    (``batched=True``, one compiled program).

    Args:
      problem: the problem.
      name: a key of :data:`OPTIMIZERS` whose kind is not None.
      space: ``{"learning_rate": dim}``, optionally with ``"weight_decay"``.
      num_trials: an integer >= 1.
      steps: the updates per trial, an integer >= 1.
      seed: the search's PRNG seed.
      objective: the score to minimise, ``params -> scalar`` (a training or a
        validation loss).

    Returns:
      ``(search result, border messages)``: the messages of the
      :class:`~gradtx.training.search.SearchBorderWarning` s, returned rather
      than issued, for the caller to print.
    """

    def score(hyperparams):
        rate = hyperparams["learning_rate"]
        tx = build(name, rate, hyperparams.get("weight_decay"))
        final, _ = trajectory(tx, problem.loss, problem.params, steps, rate)
        value = objective(final)
        return jnp.where(jnp.isfinite(value), value, jnp.nan)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SearchBorderWarning)
        result = random_search(score, dict(space), num_trials, seed, batched=True)
    border = [w for w in caught if issubclass(w.category, SearchBorderWarning)]
    for other in (w for w in caught if w not in border):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    return result, [str(w.message) for w in border]
