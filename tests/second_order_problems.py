"""The test problems of the second-order methods, in JAX (for gradtx) and numpy (for scipy).

Four problems from issue 5, each a :class:`Problem`: a JAX loss of a parameter
pytree (several leaves where natural), its starting point, and the same
function with its gradient and Hessian on the flat float64 vector that
``jax.flatten_util.ravel_pytree`` makes of the tree (the leaves in tree order,
each raveled row-major), which is what ``scipy.optimize.minimize`` and the numpy
references of ``tests/reference/second_order.py`` take.

* ``rosenbrock_2d``: ``100 (y - x^2)^2 + (1 - x)^2`` from ``(-1.2, 1)``,
  params ``{"x": (), "y": ()}``; minimiser ``(1, 1)``.
* ``rosenbrock_20d``: the chained form of ``scipy.optimize.rosen``,
  ``sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``, from the origin; minimiser
  all ones. (From ``(-1.2, 1, -1.2, 1, ...)`` damped Newton ends in the other
  local minimum of the chained form, near ``x_1 = -1``.)
* ``quadratic``: ``0.5 (x - x*)' A (x - x*)`` in 20 dimensions, params
  ``{"b": (8,), "w": (4, 3)}``; ``A = Q diag(lambda) Q'`` with ``lambda`` spaced
  geometrically from 1 to 1e4 (condition number 1e4) and ``Q`` a seeded random
  rotation; minimiser ``x*`` (seeded).
* ``logistic``: L2-regularised logistic regression on scikit-learn's bundled
  breast-cancer data (569 samples, 30 standardised features, labels 0/1),
  ``mean_i [log(1 + e^{z_i}) - t_i z_i] + 0.5 lam ||w||^2`` with ``z = X w + b``,
  ``lam = 1e-2``, params ``{"b": (), "w": (30,)}`` from zeros.

:func:`scipy_result` caches ``scipy.optimize.minimize`` on each at tight
tolerance (BFGS, L-BFGS-B, Newton-CG with the Hessian, CG).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax.flatten_util import ravel_pytree

Params = Any
"""A pytree of arrays."""

SCIPY_METHODS = ("BFGS", "L-BFGS-B", "Newton-CG", "CG")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One test problem.

    Attributes:
      name: the test id.
      loss: the JAX loss, ``params -> scalar``, computed in the params' dtype.
      params0: the starting point, a pytree of float64 numpy arrays.
      fun: the loss on the flat float64 vector (numpy).
      jac: its gradient (numpy).
      hess: its Hessian (numpy).
      minimiser: the exact minimiser as a flat vector, where it is known in closed
        form (None for the logistic regression).
    """

    name: str
    loss: Callable[[Params], jax.Array]
    params0: Params
    fun: Callable[[np.ndarray], float]
    jac: Callable[[np.ndarray], np.ndarray]
    hess: Callable[[np.ndarray], np.ndarray]
    minimiser: np.ndarray | None = None

    def flatten(self, params: Params) -> np.ndarray:
        """The params as one float64 vector, in ``ravel_pytree`` order."""
        leaves = [np.asarray(leaf, np.float64).reshape(-1) for leaf in jax.tree.leaves(params)]
        return np.concatenate(leaves)

    def unflatten(self, x: np.ndarray, dtype=np.float64) -> Params:
        """The flat vector ``x`` as a pytree shaped like ``params0`` (numpy leaves of ``dtype``)."""
        leaves, treedef = jax.tree.flatten(self.params0)
        out, start = [], 0
        for leaf in leaves:
            size = int(np.size(leaf))
            out.append(np.asarray(x[start : start + size], dtype).reshape(np.shape(leaf)))
            start += size
        return jax.tree.unflatten(treedef, out)

    def __str__(self) -> str:
        return self.name


# ---------------------------------------------------------------- Rosenbrock


def _rosenbrock_jax(x: jax.Array) -> jax.Array:
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _rosenbrock_2d() -> Problem:
    return Problem(
        name="rosenbrock_2d",
        loss=lambda p: _rosenbrock_jax(jnp.stack([p["x"], p["y"]])),
        params0={"x": np.float64(-1.2), "y": np.float64(1.0)},
        fun=scipy.optimize.rosen,
        jac=scipy.optimize.rosen_der,
        hess=scipy.optimize.rosen_hess,
        minimiser=np.ones(2),
    )


def _rosenbrock_20d() -> Problem:
    return Problem(
        name="rosenbrock_20d",
        loss=lambda p: _rosenbrock_jax(p["x"]),
        params0={"x": np.zeros(20)},
        fun=scipy.optimize.rosen,
        jac=scipy.optimize.rosen_der,
        hess=scipy.optimize.rosen_hess,
        minimiser=np.ones(20),
    )


# ---------------------------------------------------------------- quadratic


def rotated_quadratic(dim: int, condition: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A, x*)``: ``A = Q diag(lambda) Q'`` with eigenvalues from 1 to ``condition``."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    q = q * np.sign(np.diag(r))  # a rotation drawn uniformly (Haar), fixed by the seed
    eigenvalues = np.geomspace(1.0, condition, dim)
    a = (q * eigenvalues) @ q.T
    return 0.5 * (a + a.T), rng.normal(size=dim)


def _quadratic() -> Problem:
    a, x_star = rotated_quadratic(20, 1e4, seed=20240605)
    params0 = {"b": np.zeros(8), "w": np.zeros((4, 3))}

    def loss(p):
        dtype = p["w"].dtype
        x = jnp.concatenate([p["b"], p["w"].reshape(-1)]) - jnp.asarray(x_star, dtype)
        return 0.5 * x @ (jnp.asarray(a, dtype) @ x)

    return Problem(
        name="quadratic",
        loss=loss,
        params0=params0,
        fun=lambda x: 0.5 * (x - x_star) @ a @ (x - x_star),
        jac=lambda x: a @ (x - x_star),
        hess=lambda x: a,
        minimiser=x_star,
    )


# ---------------------------------------------------------------- logistic regression

LOGISTIC_LAMBDA = 1e-2


@functools.cache
def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    """``(X, t)``: the bundled data set, features standardised (mean 0, std 1), labels 0/1."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = np.asarray(data.data, np.float64)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x, np.asarray(data.target, np.float64)


def _logistic() -> Problem:
    x, t = breast_cancer()
    lam = LOGISTIC_LAMBDA

    def loss(p):
        dtype = p["w"].dtype
        z = jnp.asarray(x, dtype) @ p["w"] + p["b"]
        data_term = jnp.mean(jax.nn.softplus(z) - jnp.asarray(t, dtype) * z)
        return data_term + 0.5 * lam * jnp.sum(p["w"] ** 2)

    design = np.concatenate([np.ones((len(t), 1)), x], axis=1)  # flat order: b, then w
    penalty = lam * np.diag([0.0] + [1.0] * x.shape[1])

    def fun(v):
        z = design @ v
        return float(np.mean(np.logaddexp(0.0, z) - t * z) + 0.5 * v @ penalty @ v)

    def jac(v):
        prob = 1.0 / (1.0 + np.exp(-(design @ v)))
        return design.T @ (prob - t) / len(t) + penalty @ v

    def hess(v):
        prob = 1.0 / (1.0 + np.exp(-(design @ v)))
        return (design.T * (prob * (1.0 - prob))) @ design / len(t) + penalty

    return Problem(
        name="logistic",
        loss=loss,
        params0={"b": np.float64(0.0), "w": np.zeros(x.shape[1])},
        fun=fun,
        jac=jac,
        hess=hess,
    )


PROBLEMS: dict[str, Problem] = {
    p.name: p for p in (_rosenbrock_2d(), _rosenbrock_20d(), _quadratic(), _logistic())
}


# ---------------------------------------------------------------- scipy


def _scipy_options(method: str) -> dict[str, float]:
    """Tolerances near the floor of float64: the minimisers agree to ~1e-9 or better."""
    if method == "Newton-CG":
        return {"xtol": 1e-14, "maxiter": 10_000}
    if method == "L-BFGS-B":
        return {"ftol": 1e-20, "gtol": 1e-12, "maxiter": 10_000}
    return {"gtol": 1e-10, "maxiter": 10_000}


@functools.cache
def scipy_result(name: str, method: str) -> scipy.optimize.OptimizeResult:
    """``scipy.optimize.minimize`` on problem ``name`` with ``method``, at tight tolerance."""
    problem = PROBLEMS[name]
    hess = {"hess": problem.hess} if method == "Newton-CG" else {}
    return scipy.optimize.minimize(
        problem.fun,
        problem.flatten(problem.params0),
        jac=problem.jac,
        method=method,
        options=_scipy_options(method),
        **hess,
    )


def flat_jax(problem: Problem) -> tuple[Callable[[jax.Array], jax.Array], jax.Array]:
    """The JAX loss as a function of the flat vector, and the flat start (for cross-checks)."""
    flat0, unravel = ravel_pytree(jax.tree.map(jnp.asarray, problem.params0))
    return (lambda v: problem.loss(unravel(v))), flat0
