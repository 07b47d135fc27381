"""The problems that ``gradtx compare`` and ``gradtx search`` race optimizers on.

Each is a full-batch, deterministic :class:`Problem`: a training loss of a
parameter pytree, a seeded starting point, the loss that counts as reached,
and, for the two problems on data, a validation loss and a test accuracy.

* ``digits``: a one-hidden-layer ReLU network (``64 -> hidden -> 10``, He
  initialisation) with the mean cross-entropy on scikit-learn's bundled 8x8
  digit scans (1797 images; 60% train, 20% validation, 20% test).
* ``logreg``: L2-regularised logistic regression on scikit-learn's bundled
  breast-cancer data (569 samples, 30 standardised features; same split),
  ``mean_i softplus(-s_i (x_i' w + b)) + l2 / 2 ||w||^2`` with labels
  ``s_i = +-1``; its minimum ``f*`` comes from Newton's method in float64.
* ``quadratic``: ``f(x) = 1/2 x' A x`` with ``A = Q diag(lambda) Q'``, the
  eigenvalues ``lambda`` log-spaced from 1 to the condition number and ``Q`` a
  seeded random rotation; ``f* = 0``.
* ``rosenbrock``: the chained Rosenbrock function
  ``sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2`` from ``(-1.2, 1, -1.2, ...)``;
  ``f* = 0`` at all ones.

scikit-learn (the ``examples`` extra) is imported only by the two data problems;
everything else needs jax and numpy alone.

References:
  Goodfellow, Bengio & Courville 2016, *Deep Learning*, Sec. 8.2 (ill
  conditioning) and 6.2.2 (cross-entropy); Rosenbrock 1960, *An automatic method
  for finding the greatest or least value of a function*, Comput. J. 3.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks
from gradtx.base import Array, Params

PROBLEMS = ("digits", "logreg", "quadratic", "rosenbrock")

_NO_SKLEARN = (
    "the {} problem needs scikit-learn, an optional dependency of gradtx: "
    "pip install 'gradtx[examples]' (or pip install scikit-learn)"
)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One deterministic, full-batch minimisation problem.

    Attributes:
      name: one of :data:`PROBLEMS`.
      title: a one-line description, for table titles.
      loss: the training loss, ``params -> scalar``, over the whole training set.
      params: the starting point, a pytree of float32 arrays.
      target: the loss that counts as reached (``steps to target``).
      rates: the default learning rates on this problem: by optimizer kind
        (``"gd"``, ``"momentum"``, ``"adagrad"``, ``"adadelta"``, ``"rmsprop"``,
        ``"adam"``, ``"rprop"``), and by optimizer name where one differs from
        its kind (RAdam's warm-up steps are momentum steps at the raw rate).
      optimum: the minimum ``f*`` where it is known, else None.
      valid_loss: the loss on held-out validation data, or None.
      accuracy: the classification accuracy on held-out test data, or None.
    """

    name: str
    title: str
    loss: Callable[[Params], Array]
    params: Params
    target: float
    rates: Mapping[str, float]
    optimum: float | None = None
    valid_loss: Callable[[Params], Array] | None = None
    accuracy: Callable[[Params], Array] | None = None


def _matmul(a: Array, b: Array) -> Array:
    # Full float32 products, also on GPUs whose default would round to TF32.
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _split(num: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random 60 / 20 / 20 split of ``range(num)``: train, validation, test."""
    order = np.random.default_rng(seed).permutation(num)
    cut = int(0.6 * num), int(0.8 * num)
    return order[: cut[0]], order[cut[0] : cut[1]], order[cut[1] :]


def _load(problem: str, loader: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one of scikit-learn's bundled data sets; ImportError when it is missing."""
    try:
        from sklearn import datasets
    except ImportError as error:
        raise ImportError(_NO_SKLEARN.format(problem)) from error
    return getattr(datasets, loader)(return_X_y=True)


def quadratic(condition_number: float = 1e3, dim: int = 20, seed: int = 0) -> Problem:
    """An ill-conditioned quadratic ``f(x) = 1/2 x' A x`` with ``f* = 0``.

    ``A = Q diag(lambda_1, ..., lambda_n) Q'``, the ``lambda_i`` log-spaced over
    ``[1, kappa]`` and ``Q`` a random rotation (QR of a Gaussian matrix); the
    start ``x_0`` is standard normal. Gradient descent with the rate ``1 / L``
    (``L = kappa`` the largest eigenvalue) shrinks the error along the smallest
    eigenvalue by ``1 - 1 / kappa`` per step.

    Args:
      condition_number: ``kappa = lambda_max / lambda_min``, finite and >= 1.
      dim: the number of coordinates, an integer >= 1.
      seed: seeds ``Q`` and ``x_0``.

    Returns:
      The :class:`Problem`; its target is ``1e-6 f(x_0)``.

    Raises:
      ValueError: ``condition_number < 1`` or ``dim < 1``.

    Examples:
      >>> from gradtx_cli.problems import quadratic
      >>> problem = quadratic(condition_number=10.0, dim=3)
      >>> float(problem.loss(problem.params)) > problem.target > 0
      True
    """
    _checks.in_range("quadratic", "condition_number", condition_number, 1.0, math.inf)
    _checks.positive_int("quadratic", "dim", dim)
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    eigenvalues = np.logspace(0.0, math.log10(condition_number), dim)
    a = (rotation * eigenvalues) @ rotation.T
    a = jnp.asarray(0.5 * (a + a.T), jnp.float32)
    x0 = jnp.asarray(rng.standard_normal(dim), jnp.float32)
    loss = lambda x: 0.5 * _matmul(x, _matmul(a, x))
    rate = 1.0 / float(eigenvalues[-1])
    return Problem(
        name="quadratic",
        title=f"quadratic, dim {dim}, condition number {condition_number:g}",
        loss=loss,
        params=x0,
        target=1e-6 * float(loss(x0)),
        rates={"gd": rate, "momentum": rate, "adagrad": 0.3, "adadelta": 0.02,
               "rmsprop": 1e-3, "adam": 0.1, "rprop": 0.01,
               "nadam": 0.01, "radam": 3e-3, "ranger": 3e-3},
        optimum=0.0,
    )  # fmt: skip


def rosenbrock(dim: int = 2) -> Problem:
    """The chained Rosenbrock function, from ``(-1.2, 1, -1.2, 1, ...)``.

    .. math::
        f(x) = \\sum_{i=1}^{n-1} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2,
        \\qquad f^* = f(1, \\dots, 1) = 0

    A curved narrow valley: first-order methods crawl along it, quasi-Newton
    methods follow it.

    Args:
      dim: the number of coordinates, an integer >= 2.

    Returns:
      The :class:`Problem`; its target is ``1e-6``.

    Raises:
      ValueError: ``dim < 2``.

    Examples:
      >>> from gradtx_cli.problems import rosenbrock
      >>> problem = rosenbrock()
      >>> round(float(problem.loss(problem.params)), 4)
      24.2
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
        raise ValueError(f"rosenbrock: dim must be an integer >= 2, got {dim!r}.")
    x0 = jnp.asarray(np.resize([-1.2, 1.0], dim), jnp.float32)

    def loss(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    return Problem(
        name="rosenbrock",
        title=f"Rosenbrock, dim {dim}",
        loss=loss,
        params=x0,
        target=1e-6,
        rates={"gd": 1e-3, "momentum": 1e-3, "adagrad": 0.3, "adadelta": 1.0,
               "rmsprop": 1e-3, "adam": 0.02, "rprop": 0.01, "radam": 3e-3, "ranger": 3e-3},
        optimum=0.0,
    )  # fmt: skip


def _logistic_minimum(x: np.ndarray, s: np.ndarray, l2: float) -> float:
    """``min_{w, b} mean softplus(-s (x w + b)) + l2 / 2 |w|^2`` by damped Newton in float64."""
    design = np.hstack([x, np.ones((len(x), 1))])
    penalty = np.append(np.full(x.shape[1], l2), 0.0)  # the bias is not penalised

    def value(theta):
        return np.mean(np.logaddexp(0.0, -s * (design @ theta))) + 0.5 * penalty @ theta**2

    theta = np.zeros(design.shape[1])
    for _ in range(100):
        p = 0.5 * (1.0 - np.tanh(0.5 * s * (design @ theta)))  # sigmoid of minus the margin
        grad = design.T @ (-s * p) / len(s) + penalty * theta
        if np.max(np.abs(grad)) < 1e-12:
            break
        hessian = (design.T * (p * (1.0 - p))) @ design / len(s) + np.diag(penalty)
        step, t = np.linalg.solve(hessian, grad), 1.0
        while value(theta - t * step) > value(theta) - 0.25 * t * grad @ step and t > 1e-8:
            t *= 0.5
        theta = theta - t * step
    return float(value(theta))


def logreg(seed: int = 0, l2: float = 1e-3) -> Problem:
    """L2-regularised logistic regression on the breast-cancer data.

    .. math::
        f(w, b) = \\frac{1}{m} \\sum_{i=1}^m \\log(1 + e^{-s_i (x_i^\\top w + b)})
        + \\frac{\\lambda}{2} \\|w\\|^2

    over the training split (features standardised with its mean and standard
    deviation), ``s_i = +-1``; strictly convex, ``f*`` from Newton's method.

    Args:
      seed: seeds the train / validation / test split.
      l2: ``lambda``, finite and >= 0.

    Returns:
      The :class:`Problem`, params ``{"w": (30,), "b": ()}`` from zeros; its
      target is ``f* + 1e-5``.

    Raises:
      ValueError: ``l2 < 0``.
      ImportError: scikit-learn is not installed.

    Examples:
      >>> from gradtx_cli.problems import logreg
      >>> problem = logreg()
      >>> round(float(problem.loss(problem.params)), 4)  # log 2 at w = 0
      0.6931
    """
    _checks.non_negative("logreg", "l2", l2)
    x, y = _load("logreg", "load_breast_cancer")
    train, valid, test = _split(len(y), seed)
    x = (x - x[train].mean(0)) / x[train].std(0)
    s = 2.0 * y - 1.0
    optimum = _logistic_minimum(x[train], s[train], l2)
    xs, ss = jnp.asarray(x, jnp.float32), jnp.asarray(s, jnp.float32)

    def margins(params, rows):
        return ss[rows] * (_matmul(xs[rows], params["w"]) + params["b"])

    def data_loss(params, rows):
        return jnp.mean(jax.nn.softplus(-margins(params, rows)))

    params = {"w": jnp.zeros(x.shape[1], jnp.float32), "b": jnp.zeros((), jnp.float32)}
    return Problem(
        name="logreg",
        title=f"logistic regression, breast cancer, l2 {l2:g}",
        loss=lambda p: data_loss(p, train) + 0.5 * l2 * jnp.sum(p["w"] ** 2),
        params=params,
        target=optimum + 1e-5,
        rates={"gd": 1.0, "momentum": 0.3, "adagrad": 1.0, "adadelta": 1.0,
               "rmsprop": 0.01, "adam": 0.1, "rprop": 0.01},
        optimum=optimum,
        valid_loss=lambda p: data_loss(p, valid),
        accuracy=lambda p: jnp.mean(margins(p, test) > 0),
    )  # fmt: skip


def _dense(key: Array, fan_in: int, fan_out: int) -> dict[str, Array]:
    """He-normal weights (for ReLU) and zero biases."""
    scale = math.sqrt(2.0 / fan_in)
    w = scale * jax.random.normal(key, (fan_in, fan_out), jnp.float32)
    return {"w": w, "b": jnp.zeros(fan_out, jnp.float32)}


def _logits(params: Mapping[str, Any], x: Array) -> Array:
    hidden = jax.nn.relu(_matmul(x, params["hidden"]["w"]) + params["hidden"]["b"])
    return _matmul(hidden, params["out"]["w"]) + params["out"]["b"]


def digits(seed: int = 0, hidden: int = 64) -> Problem:
    """A one-hidden-layer ReLU network on the 8x8 digit scans, full batch.

    .. math::
        f(\\theta) = -\\frac{1}{m} \\sum_{i=1}^m \\log \\operatorname{softmax}(
        W_2 \\operatorname{relu}(W_1 x_i + b_1) + b_2)_{y_i}

    over the training split, pixels scaled to ``[0, 1]``. Non-convex; the
    target is a training cross-entropy of 0.01.

    Args:
      seed: seeds the split and the He initialisation.
      hidden: the width of the hidden layer, an integer >= 1.

    Returns:
      The :class:`Problem`, params ``{"hidden": {"w", "b"}, "out": {"w", "b"}}``.

    Raises:
      ValueError: ``hidden < 1``.
      ImportError: scikit-learn is not installed.

    Examples:
      >>> from gradtx_cli.problems import digits
      >>> problem = digits()
      >>> 0.0 <= float(problem.accuracy(problem.params)) <= 1.0
      True
    """
    _checks.positive_int("digits", "hidden", hidden)
    x, y = _load("digits", "load_digits")
    train, valid, test = _split(len(y), seed)
    xs, ys = jnp.asarray(x / 16.0, jnp.float32), jnp.asarray(y)
    keys = jax.random.split(jax.random.key(seed), 2)
    params = {"hidden": _dense(keys[0], x.shape[1], hidden), "out": _dense(keys[1], hidden, 10)}

    def data_loss(params, rows):
        log_p = jax.nn.log_softmax(_logits(params, xs[rows]))
        return -jnp.mean(jnp.take_along_axis(log_p, ys[rows, None], axis=1))

    return Problem(
        name="digits",
        title=f"digits MLP, 64-{hidden}-10 ReLU, {len(train)} training images",
        loss=lambda p: data_loss(p, train),
        params=params,
        target=0.01,
        rates={"gd": 0.5, "momentum": 0.05, "adagrad": 0.1, "adadelta": 1.0,
               "rmsprop": 1e-3, "adam": 1e-2, "rprop": 0.01},
        valid_loss=lambda p: data_loss(p, valid),
        accuracy=lambda p: jnp.mean(jnp.argmax(_logits(p, xs[test]), axis=1) == ys[test]),
    )  # fmt: skip


def make_problem(
    name: str, *, seed: int = 0, condition_number: float = 1e3, dim: int | None = None
) -> Problem:
    """Builds a problem by name.

    Args:
      name: one of :data:`PROBLEMS`.
      seed: seeds the data split, the initialisation or the random matrix.
      condition_number: of ``quadratic`` (ignored by the others).
      dim: of ``quadratic`` (default 20) or ``rosenbrock`` (default 2); the
        hidden width of ``digits`` (default 64); ignored by ``logreg``.

    Returns:
      The :class:`Problem`.

    Raises:
      ValueError: an unknown name or an argument out of range.
      ImportError: a data problem without scikit-learn.

    Examples:
      >>> from gradtx_cli.problems import make_problem
      >>> make_problem("rosenbrock", dim=3).title
      'Rosenbrock, dim 3'
    """
    if name == "quadratic":
        return quadratic(condition_number, 20 if dim is None else dim, seed)
    if name == "rosenbrock":
        return rosenbrock(2 if dim is None else dim)
    if name == "logreg":
        return logreg(seed)
    if name == "digits":
        return digits(seed, 64 if dim is None else dim)
    raise ValueError(f"unknown problem {name!r}; choose one of {', '.join(PROBLEMS)}.")
