"""Shared runs for the tests of Optax's contrib methods (tests/test_contrib_*.py).

Two problems, each run for every case of a file in one jitted program:

* ``reference_runs``: a noisy quadratic on the leaves of
  tests/test_reference_trajectories.py, ``f_k(x) = sum_i c_i (x_i - t_i)^2 / 2 +
  <n_k, x>``, whose gradient depends on the point, so the parameter-free methods'
  distance estimates actually grow (with recorded gradients that ignore the point
  they would not). The float64 references of tests/reference/ read the gradient
  (and the loss) through :class:`NoisyQuadratic`.
* ``optax_runs``: the softmax-regression problem of tests/test_optax_parity.py,
  gradtx's method beside Optax's, with the loss passed as ``value`` to both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tests import test_optax_parity as P
from tests.test_reference_trajectories import NUM_STEPS, RTOL, THETA0, TREEDEF, deviation

__all__ = [
    "NUM_STEPS",
    "RTOL",
    "NoisyQuadratic",
    "deviation",
    "optax_runs",
    "reference_runs",
    "max_rel",
]

_rng = np.random.default_rng(20230601)
CURV = [_rng.uniform(0.5, 2.0, size=np.shape(x)) for x in THETA0]
TARGET = [_rng.normal(size=np.shape(x)) for x in THETA0]
NOISE = [0.5 * _rng.normal(size=(NUM_STEPS, *np.shape(x))) for x in THETA0]


class NoisyQuadratic:
    """The k-th call returns ``(f_k(x), grad f_k(x))`` at the float64 point ``x``."""

    def __init__(self):
        self.k = 0

    def __call__(self, x):
        k, self.k = self.k, self.k + 1
        value = sum(
            np.sum(0.5 * c * (x_i - t) ** 2 + n[k] * x_i)
            for x_i, c, t, n in zip(x, CURV, TARGET, NOISE, strict=True)
        )
        grads = [c * (x_i - t) + n[k] for x_i, c, t, n in zip(x, CURV, TARGET, NOISE, strict=True)]
        return float(value), grads

    def grads(self, x):
        """The gradient only (for :class:`tests.reference._common.Gradients`)."""
        return self(x)[1]


def _quadratic(x, curv, target, noise_k):
    parts = [
        jnp.sum(0.5 * c * (x_i - t) ** 2 + n * x_i)
        for x_i, c, t, n in zip(x, curv, target, noise_k, strict=True)
    ]
    return sum(parts[1:], parts[0])


def reference_runs(makers, dtype):
    """Trajectories (float64 numpy, one per leaf, row 0 the start) of every
    ``maker()`` on the noisy quadratic, all cases in one jitted program."""
    with jax.enable_x64(dtype == "float64"):
        cast = lambda leaves: [jnp.asarray(a, dtype) for a in leaves]  # noqa: E731
        params = jax.tree.unflatten(TREEDEF, cast(THETA0))
        consts = (cast(CURV), cast(TARGET), cast(NOISE))
        txs = [make() for make in makers]

        def run(tx, params, curv, target, noise):
            def body(carry, noise_k):
                p, state = carry
                value, g = jax.value_and_grad(
                    lambda q: _quadratic(jax.tree.leaves(q), curv, target, noise_k)
                )(p)
                u, state = tx.update(g, state, p, value=value)
                p = jax.tree.map(lambda a, b: a + b, p, u)
                return (p, state), p

            return jax.lax.scan(body, (params, tx.init(params)), noise)[1]

        def all_runs(params, curv, target, noise):
            return [run(tx, params, curv, target, noise) for tx in txs]

        outs = jax.jit(all_runs)(params, *consts)
        result = []
        for out in outs:
            rows = jax.tree.leaves(out)
            assert all(r.dtype == jnp.dtype(dtype) for r in rows)
            result.append(
                [
                    np.concatenate([np.asarray(t0, np.float64)[None], np.asarray(r, np.float64)])
                    for t0, r in zip(THETA0, rows, strict=True)
                ]
            )
        return result


def optax_runs(pairs, dtype, steps=P.STEPS):
    """``[(ours, theirs)]`` trajectories on tests/test_optax_parity.py's problem,
    ``p <- p + update``, the loss passed as ``value``; all pairs in one program."""
    with jax.enable_x64(dtype == "float64"):
        data = {
            "x": jnp.asarray(P.DATA["x"], dtype),
            "y": jnp.asarray(P.DATA["y"]),
            "curv": jnp.asarray(P.DATA["curv"], dtype),
            "target": jnp.asarray(P.DATA["target"], dtype),
        }
        params = P._cast(P.PARAMS, dtype)
        noise = jax.tree.map(lambda n: n[:steps], P._cast(P.NOISE, dtype))
        # Optax's plain transformations (scale_by_cocob) take no extra arguments.
        built = [(make_a(), optax.with_extra_args_support(make_b())) for make_a, make_b in pairs]

        def path(tx, params, noise, data):
            def body(carry, noise_k):
                p, state = carry
                value, grad = jax.value_and_grad(P._loss)(p, data)
                grad = jax.tree.map(jnp.add, grad, noise_k)
                updates, state = tx.update(grad, state, p, value=value)
                p = jax.tree.map(lambda a, u: a + u, p, updates)
                return (p, state), p

            return jax.lax.scan(body, (params, tx.init(params)), noise)[1]

        @jax.jit
        def all_pairs(params, noise, data):
            return [(path(a, params, noise, data), path(b, params, noise, data)) for a, b in built]

        return all_pairs(params, noise, data)


def max_rel(got, want, floor=1.0):
    """``max |got - want| / (|want| + floor)`` over every leaf and step (both finite)."""
    worst = 0.0
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), "non-finite trajectory"
        worst = max(worst, float(np.max(np.abs(a - b) / (np.abs(b) + floor))))
    return worst
