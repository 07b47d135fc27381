"""Random hyperparameter search, one trial at a time or a vmapped batch at once.

The usual advice (Bergstra & Bengio 2012; the cs231n notes): prefer random search to a
grid; search rates and regularisation strengths on a log scale; be wary of a
best value on the border of its range, the optimum may lie beyond; and stage the
search from coarse to fine. Each piece is one function here:

* a *search space* is a dict ``name -> dimension``, built with
  :func:`log_uniform`, :func:`uniform`, :func:`integer` and :func:`choice`;
* :func:`random_search` samples every trial from one PRNG key, evaluates them
  (a Python loop over any objective, or ``batched=True``: ``jax.vmap`` of a JAX
  objective, such as one that trains with :func:`gradtx.inject_hyperparams`, in
  one compiled program), returns a :class:`SearchResult`, and issues a
  :class:`SearchBorderWarning` for a best value near the border of its range;
* :func:`refine` narrows each dimension around the best trials.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks


class SearchBorderWarning(UserWarning):
    """The best value of a dimension lies near the border of its range: widen it."""


def _bounds(owner: str, low: Any, high: Any, *, strict: bool) -> None:
    _checks.finite(owner, "low", low)
    _checks.finite(owner, "high", high)
    if high < low or (strict and high == low):
        relation = ">" if strict else ">="
        raise ValueError(f"{owner}: high must be {relation} low, got low={low!r}, high={high!r}.")


@dataclasses.dataclass(frozen=True)
class Uniform:
    """Real values spread evenly over ``[low, high]``; see :func:`uniform`."""

    low: float
    high: float

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        return jax.random.uniform(key, (num,), minval=self.low, maxval=self.high)

    def position(self, value: float) -> float:
        return (value - self.low) / (self.high - self.low)

    def narrow(self, values: Sequence[float], margin: float) -> Uniform:
        low, high = _padded_hull(values, margin, self.low, self.high)
        return Uniform(low, high)


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """Positive values whose logarithm is uniform on ``[log low, log high]``."""

    low: float
    high: float

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        bounds = math.log(self.low), math.log(self.high)
        logs = jax.random.uniform(key, (num,), minval=bounds[0], maxval=bounds[1])
        # exp(log(high)) may round one ulp past high.
        return jnp.clip(jnp.exp(logs), self.low, self.high)

    def position(self, value: float) -> float:
        return math.log(value / self.low) / math.log(self.high / self.low)

    def narrow(self, values: Sequence[float], margin: float) -> LogUniform:
        logs = [math.log(v) for v in values]
        low, high = _padded_hull(logs, margin, math.log(self.low), math.log(self.high))
        return LogUniform(max(self.low, math.exp(low)), min(self.high, math.exp(high)))


@dataclasses.dataclass(frozen=True)
class Integer:
    """Integers drawn evenly from ``low, low + 1, ..., high`` (both included)."""

    low: int
    high: int

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        return jax.random.randint(key, (num,), self.low, self.high + 1)

    def position(self, value: int) -> float:
        return 0.5 if self.high == self.low else (value - self.low) / (self.high - self.low)

    def narrow(self, values: Sequence[int], margin: float) -> Integer:
        pad = math.ceil(margin * (self.high - self.low))
        return Integer(max(self.low, min(values) - pad), min(self.high, max(values) + pad))


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a fixed tuple of options, each as likely; see :func:`choice`."""

    options: tuple[Any, ...]

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        return jax.random.randint(key, (num,), 0, len(self.options))

    def position(self, value: Any) -> None:
        del value  # Options have no order, hence no border.

    def narrow(self, values: Sequence[Any], margin: float) -> Choice:
        del margin
        return Choice(tuple(o for o in self.options if any(o == v for v in values)))


Dimension: TypeAlias = Uniform | LogUniform | Integer | Choice
"""A dimension: ``sample(key, num)`` draws, ``position(value)`` in [0, 1] (None when
unordered) for the border check, ``narrow(values, margin)`` for :func:`refine`."""
Space: TypeAlias = Mapping[str, Dimension]
"""A search space: hyperparameter name -> dimension."""


def _padded_hull(values: Sequence[float], margin: float, low: float, high: float):
    """``[min - pad, max + pad]`` with ``pad = margin * (high - low)``, inside ``[low, high]``."""
    pad = margin * (high - low)
    return max(low, min(values) - pad), min(high, max(values) + pad)


def uniform(low: float, high: float) -> Uniform:
    """A real dimension, uniform on ``[low, high]``: for momenta, dropout rates.

    Args:
      low: the smallest value, finite.
      high: the largest value, finite and > ``low``.

    Returns:
      The dimension, for a search space.

    Raises:
      ValueError: a bound is not finite, or ``high <= low``.

    Examples:
      >>> from gradtx.training.search import uniform
      >>> uniform(0.5, 0.99)
      Uniform(low=0.5, high=0.99)
    """
    _bounds("uniform", low, high, strict=True)
    return Uniform(float(low), float(high))


def log_uniform(low: float, high: float) -> LogUniform:
    """A positive dimension whose logarithm is uniform: learning rates, decay strengths.

    Each decade of ``[low, high]`` gets as many samples: with ``[1e-4, 1]``,
    ``1e-4..1e-3`` is drawn as often as ``0.1..1``. Adding 0.01 to a rate of
    0.001 changes the training a lot, and to a rate of 10 hardly at all, so
    rates are searched on this scale (cs231n).

    Args:
      low: the smallest value, > 0.
      high: the largest value, finite and > ``low``.

    Returns:
      The dimension, for a search space.

    Raises:
      ValueError: ``low <= 0``, a bound is not finite, or ``high <= low``.

    Examples:
      >>> from gradtx.training.search import log_uniform
      >>> log_uniform(1e-4, 1.0)
      LogUniform(low=0.0001, high=1.0)

    References:
      Bergstra & Bengio 2012, *Random Search for Hyper-Parameter Optimization*, JMLR 13.
    """
    _checks.positive("log_uniform", "low", low)
    _bounds("log_uniform", low, high, strict=True)
    return LogUniform(float(low), float(high))


def integer(low: int, high: int) -> Integer:
    """An integer dimension, uniform on ``{low, ..., high}`` (both included).

    Args:
      low: the smallest value, an integer.
      high: the largest value, an integer >= ``low``.

    Returns:
      The dimension, for a search space.

    Raises:
      ValueError: a bound is not an integer, or ``high < low``.

    Examples:
      >>> from gradtx.training.search import integer
      >>> integer(1, 4)
      Integer(low=1, high=4)
    """
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"integer: {name} must be an integer, got {value!r}.")
        if not -(2**31) < value < 2**31 - 1:
            raise ValueError(f"integer: {name} must fit in int32, got {value!r}.")
    _bounds("integer", low, high, strict=False)
    return Integer(int(low), int(high))


def choice(options: Sequence[Any]) -> Choice:
    """A dimension that picks one of ``options``, each as likely.

    Any Python values work with the sequential search (optimizer names, layer
    sizes); the batched search needs numbers.

    Args:
      options: a non-empty sequence of options.

    Returns:
      The dimension, for a search space.

    Raises:
      ValueError: ``options`` is empty or is a string.

    Examples:
      >>> from gradtx.training.search import choice
      >>> choice(["adam", "sgd"])
      Choice(options=('adam', 'sgd'))
    """
    if isinstance(options, (str, bytes)) or len(options) == 0:
        raise ValueError(f"choice: options must be a non-empty sequence, got {options!r}.")
    return Choice(tuple(options))


class Trial(NamedTuple):
    """One evaluated setting of the hyperparameters."""

    hyperparams: dict[str, Any]  # name -> Python float, int or the chosen option.
    value: float  # the objective's value; NaN ranks last.


class SearchResult(NamedTuple):
    """What :func:`random_search` returns."""

    trials: tuple[Trial, ...]  # every trial, in the order sampled.
    best: Trial  # the trial with the lowest value (highest with ``maximize``).
    at_border: tuple[str, ...]  # the dimensions whose best value is near a border.
    maximize: bool  # whether larger values were better.


def _sample(space: Space, num: int, key: jax.Array) -> dict[str, np.ndarray]:
    """``num`` draws per dimension, one subkey per dimension in the space's order."""
    keys = jax.random.split(key, len(space))
    pairs = zip(space.items(), keys, strict=True)
    return {name: np.asarray(dim.sample(k, num)) for (name, dim), k in pairs}


def _python_value(dim: Dimension, drawn: np.generic) -> Any:
    if isinstance(dim, Choice):
        return dim.options[int(drawn)]
    if isinstance(dim, Integer):
        return int(drawn)
    # A float32 draw may sit one ulp outside bounds that float32 cannot represent.
    return min(max(float(drawn), dim.low), dim.high)


def _batch_column(name: str, dim: Dimension, drawn: np.ndarray) -> jax.Array:
    """The values of one dimension as an array, for the vmapped objective."""
    if not isinstance(dim, Choice):
        return jnp.asarray(drawn)
    try:
        options = jnp.asarray(dim.options)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"random_search: batched=True needs numeric options, but choice {name!r} holds "
            f"{dim.options!r}; run the search sequentially (batched=False)."
        ) from error
    return options[drawn]


def _evaluate_batched(objective, columns: dict[str, jax.Array], batch_size: int) -> np.ndarray:
    """``vmap(objective)`` over the trials, ``batch_size`` at a time, one compiled program."""
    run = jax.jit(jax.vmap(objective))
    num = len(next(iter(columns.values())))
    values = []
    for start in range(0, num, batch_size):
        stop = min(start + batch_size, num)
        # Pad the last batch with copies of its last trial: same shape, no recompilation.
        rows = np.minimum(np.arange(start, start + batch_size), stop - 1)
        out = np.asarray(run({name: column[rows] for name, column in columns.items()}))
        if out.shape != (batch_size,):
            raise ValueError(
                "random_search: a batched objective must return one scalar per trial, got "
                f"an output of shape {out.shape[1:]} per trial."
            )
        values.append(out[: stop - start])
    return np.concatenate(values).astype(np.float64)


def _rank_keys(values: np.ndarray, maximize: bool) -> np.ndarray:
    """Smaller is better; NaN ranks last."""
    keys = -values if maximize else values.copy()
    keys[np.isnan(keys)] = np.inf
    return keys


def _border_dimensions(space: Space, best: Trial, fraction: float) -> tuple[str, ...]:
    found = []
    for name, dim in space.items():
        position = dim.position(best.hyperparams[name])
        if position is not None and (position < fraction or position > 1 - fraction):
            found.append(name)
    return tuple(found)


def _warn_border(space: Space, best: Trial, names: tuple[str, ...], fraction: float) -> None:
    for name in names:
        dim = space[name]
        scale = " (log scale)" if isinstance(dim, LogUniform) else ""
        side = "lowest" if dim.position(best.hyperparams[name]) < 0.5 else "highest"
        warnings.warn(
            f"random_search: the best {name}={best.hyperparams[name]!r} lies in the {side} "
            f"{fraction:.0%} of its range [{dim.low!r}, {dim.high!r}]{scale}; a better value "
            "may lie outside it: widen the range.",
            SearchBorderWarning,
            stacklevel=3,
        )


def random_search(
    objective: Callable[[dict[str, Any]], Any],
    space: Space,
    num_trials: int,
    key: jax.Array | int,
    *,
    batched: bool = False,
    batch_size: int | None = None,
    maximize: bool = False,
    border_fraction: float = 0.1,
) -> SearchResult:
    """Random search: evaluate ``num_trials`` random settings and keep the best.

    Every trial's hyperparameters are drawn at once from ``key`` (one subkey per
    dimension), so a sequential and a batched search with the same key try the
    same settings. Then:

    * ``batched=False``: ``objective(hyperparams)`` is called once per trial
      with a dict of Python numbers (a ``float``, an ``int``, or the chosen
      option); any Python code works.
    * ``batched=True``: ``objective`` must be a JAX function of a dict of scalar
      arrays; ``jax.jit(jax.vmap(objective))`` trains ``batch_size`` trials at
      once in one compiled program. Build the optimizer inside it with
      :func:`gradtx.inject_hyperparams` (or pass the traced values to any gradtx
      factory: traced hyperparameters are not validated). Integer dimensions
      arrive as int32 arrays, so they cannot set shapes there.

    The best trial has the lowest value (the highest with ``maximize``); NaN,
    what a diverged run returns, ranks last. When the best value of an
    ordered dimension lies within ``border_fraction`` of either end of its range
    (measured in log space for :func:`log_uniform`), a
    :class:`SearchBorderWarning` says so, and the name is listed in
    ``at_border``: the optimum may lie outside the range (cs231n).

    Args:
      objective: maps a dict ``name -> value`` to a scalar (a loss, or a score
        with ``maximize=True``).
      space: a dict ``name -> dimension`` (:func:`log_uniform`,
        :func:`uniform`, :func:`integer`, :func:`choice`).
      num_trials: an integer >= 1, the number of settings tried.
      key: a JAX PRNG key, or an integer seed.
      batched: evaluate with ``jax.vmap`` (see above) instead of a Python loop.
      batch_size: with ``batched``, the trials per compiled call (an integer
        >= 1; default: all of them). The last batch is padded, so one program
        serves every batch.
      maximize: larger values are better.
      border_fraction: in [0, 0.5): the part of a range, at each end, where a
        best value triggers the warning; 0 disables it.

    Returns:
      A :class:`SearchResult`: every trial in the order drawn, the best one,
      the dimensions at the border, and ``maximize``.

    Raises:
      ValueError: an argument out of range, an empty space or one holding
        something other than a dimension, a batched objective that does not
        return one scalar, or a batched search over non-numeric options.

    Examples:
      >>> from gradtx.training.search import log_uniform, random_search, uniform
      >>> space = {"learning_rate": log_uniform(1e-3, 1.0), "momentum": uniform(0.0, 0.99)}
      >>> objective = lambda h: (h["learning_rate"] - 0.03) ** 2 + (h["momentum"] - 0.5) ** 2
      >>> result = random_search(objective, space, num_trials=64, key=0)
      >>> len(result.trials), sorted(result.best.hyperparams)
      (64, ['learning_rate', 'momentum'])
      >>> result.best.value < 0.01
      True

    References:
      Bergstra & Bengio 2012, *Random Search for Hyper-Parameter Optimization*,
      JMLR 13; Karpathy et al., cs231n notes, "Hyperparameter optimization".
    """
    owner = "random_search"
    _check_space(space)
    _checks.positive_int(owner, "num_trials", num_trials)
    if batch_size is not None:
        _checks.positive_int(owner, "batch_size", batch_size)
    _checks.in_range(owner, "border_fraction", border_fraction, 0.0, 0.5)
    key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
    drawn = _sample(space, num_trials, key)
    settings = [
        {name: _python_value(space[name], d[i]) for name, d in drawn.items()}
        for i in range(num_trials)
    ]
    if batched:
        columns = {name: _batch_column(name, space[name], d) for name, d in drawn.items()}
        values = _evaluate_batched(objective, columns, batch_size or num_trials)
    else:
        values = np.asarray([float(objective(dict(h))) for h in settings], np.float64)
    trials = tuple(Trial(h, float(v)) for h, v in zip(settings, values, strict=True))
    best = trials[int(np.argmin(_rank_keys(values, maximize)))]
    if np.isnan(best.value):
        warnings.warn(f"{owner}: every trial returned NaN.", RuntimeWarning, stacklevel=2)
        return SearchResult(trials, best, (), maximize)
    at_border = _border_dimensions(space, best, border_fraction) if border_fraction > 0 else ()
    _warn_border(space, best, at_border, border_fraction)
    return SearchResult(trials, best, at_border, maximize)


def _check_space(space: Any) -> None:
    if not isinstance(space, Mapping) or not space:
        raise ValueError(f"search space must be a non-empty dict name -> dimension, got {space!r}.")
    for name, dim in space.items():
        if not isinstance(dim, (Uniform, LogUniform, Integer, Choice)):
            raise ValueError(
                f"search space: {name!r} must be a dimension (log_uniform, uniform, integer or "
                f"choice), got {dim!r}."
            )


def refine(space: Space, result: SearchResult, *, top_k: int = 5, margin: float = 0.1) -> Space:
    """Coarse to fine: narrows each dimension around the best trials of a search.

    For each ordered dimension, the new range is the smallest interval holding
    the values of the ``top_k`` best trials, widened on each side by ``margin``
    times the old range's width (in log space for :func:`log_uniform`; rounded
    up to whole numbers for :func:`integer`), and kept inside the old range. A
    :func:`choice` keeps the options that the top trials used, in their order.
    NaN trials are never among the best. A best value at a border stays at the
    border of the refined range: widen that dimension by hand instead (the
    search warned about it).

    Args:
      space: the space the search sampled.
      result: the :class:`SearchResult` of that search.
      top_k: an integer >= 1: the number of best trials to narrow around (all
        the trials with a non-NaN value if fewer).
      margin: > 0, the padding on each side, as a fraction of the old width.

    Returns:
      A new space with the same names, each dimension narrowed.

    Raises:
      ValueError: ``top_k`` or ``margin`` out of range, ``space`` not the
        space of ``result``, or no trial with a non-NaN value.

    Examples:
      >>> from gradtx.training.search import log_uniform, random_search, refine
      >>> space = {"learning_rate": log_uniform(1e-4, 1.0)}
      >>> objective = lambda h: abs(h["learning_rate"] - 0.01)
      >>> result = random_search(objective, space, num_trials=32, key=1)
      >>> fine = refine(space, result, top_k=4)
      >>> 1e-4 < fine["learning_rate"].low < 0.01 < fine["learning_rate"].high < 1.0
      True
    """
    _checks.positive_int("refine", "top_k", top_k)
    _checks.positive("refine", "margin", margin)
    _check_space(space)
    if result.trials and set(result.trials[0].hyperparams) != set(space):
        raise ValueError(
            f"refine: the space has {sorted(space)}, but the trials have "
            f"{sorted(result.trials[0].hyperparams)}."
        )
    values = np.asarray([t.value for t in result.trials], np.float64)
    finite = [i for i in np.argsort(_rank_keys(values, result.maximize)) if not np.isnan(values[i])]
    if not finite:
        raise ValueError("refine: no trial of the search returned a non-NaN value.")
    top = [result.trials[i] for i in finite[:top_k]]
    return {
        name: dim.narrow([t.hyperparams[name] for t in top], margin) for name, dim in space.items()
    }
