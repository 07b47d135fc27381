"""Shared runs for the SAM, Sophia and GaLore tests (tests/test_contrib_*.py).

These methods read more than a recorded gradient: SAM takes the gradient at the
points it visits, Sophia a Hessian-vector product of the loss. So the runs here
compute the gradient at the current point, plus recorded noise for step ``k``:

* :func:`reference_paths`: a separable loss ``f(x) = sum 0.5 c (x - t)^2 +
  0.25 q x^4`` over four leaves (two matrices, a vector, a scalar), whose exact
  Hessian diagonal ``c + 3 q x^2`` the float64 references use; gradtx runs on it
  in float32 and float64.
* :func:`optax_paths`: tests/test_optax_parity.py's problem (a softmax regression,
  a quadratic and a quartic), gradtx and Optax side by side.

Each builds all its cases into one jitted ``lax.scan`` per dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests.test_optax_parity import DATA, NOISE, PARAMS, _cast, _loss

STEPS = 120

_rng = np.random.default_rng(21)
SHAPES = [(4, 3), (2, 5), (3,), ()]
THETA0 = [_rng.normal(size=s) for s in SHAPES]
CURV = [_rng.uniform(0.5, 3.0, size=s) for s in SHAPES]
TARGET = [_rng.normal(size=s) for s in SHAPES]
QUART = 0.2
GRAD_NOISE = [0.3 * _rng.normal(size=(STEPS, *s)) for s in SHAPES]


def loss_leaves(x):
    """The separable loss, for a list of jax arrays."""
    return sum(
        jnp.sum(0.5 * c * (xi - t) ** 2 + 0.25 * QUART * xi**4)
        for xi, c, t in zip(x, CURV, TARGET, strict=True)
    )


def grad_np(x):
    """``grad f`` in float64 numpy."""
    return [c * (xi - t) + QUART * xi**3 for xi, c, t in zip(x, CURV, TARGET, strict=True)]


def hessian_diag_np(x):
    """The exact diagonal of the (diagonal) Hessian of ``f``, float64 numpy."""
    return [c + 3 * QUART * xi**2 for xi, c in zip(x, CURV, strict=True)]


def noisy_grad_np(k, x):
    """The gradient of step ``k`` at ``x``: ``grad f(x)`` plus the recorded noise."""
    return [g + n[k] for g, n in zip(grad_np(x), GRAD_NOISE, strict=True)]


def _scan_paths(txs, params, noise, loss, extras):
    """Params after every step of each ``tx`` (``p <- p + update``), in one program."""

    def path(tx, extra):
        def body(carry, noise_k):
            p, state = carry
            grad = jax.tree.map(jnp.add, jax.grad(loss)(p), noise_k)
            updates, state = tx.update(grad, state, p, **extra(loss))
            p = jax.tree.map(lambda a, u: (a + u).astype(a.dtype), p, updates)
            return (p, state), p

        return jax.lax.scan(body, (params, tx.init(params)), noise)[1]

    return [path(tx, extra) for tx, extra in zip(txs, extras, strict=True)]


def no_extra(loss):
    del loss
    return {}


def reference_paths(makers, dtype, extras=None):
    """gradtx's trajectories on the separable loss, one list of ``(STEPS, *shape)`` per maker."""
    extras = extras or [no_extra] * len(makers)
    params = [jnp.asarray(t, dtype) for t in THETA0]
    noise = [jnp.asarray(n, dtype) for n in GRAD_NOISE]
    txs = [make() for make in makers]
    run = jax.jit(lambda p, n: _scan_paths(txs, p, n, loss_leaves, extras))
    return [[np.asarray(x, np.float64) for x in path] for path in run(params, noise)]


def deviation(got, reference):
    """Largest ``|got - ref| / (|ref| + 1)`` over steps 1..STEPS and every leaf."""
    return max(
        float(np.max(np.abs(g - r[1:]) / (np.abs(r[1:]) + 1)))
        for g, r in zip(got, reference, strict=True)
    )


def optax_paths(pairs, dtype, extras=None):
    """``[(gradtx_path, optax_path) for pair in pairs]`` on test_optax_parity's problem."""
    extras = extras or [no_extra] * len(pairs)
    data = {
        "x": jnp.asarray(DATA["x"], dtype),
        "y": jnp.asarray(DATA["y"]),
        "curv": jnp.asarray(DATA["curv"], dtype),
        "target": jnp.asarray(DATA["target"], dtype),
    }
    params, noise = _cast(PARAMS, dtype), _cast(NOISE, dtype)
    txs = [make() for pair in pairs for make in pair]
    doubled = [extra for extra in extras for _ in range(2)]

    def all_paths(params, noise, data):
        return _scan_paths(txs, params, noise, lambda p: _loss(p, data), doubled)

    paths = jax.jit(all_paths)(params, noise, data)
    return list(zip(paths[::2], paths[1::2], strict=True))
