"""Shared drivers of the ``test_contrib_*`` files: reference runs and Optax parity.

Reference runs use tests/test_reference_trajectories.py's data (120 recorded
gradients on a three-leaf tree, float32-representable); parity runs use
tests/test_optax_parity.py's ``run_pairs`` (120 steps of a stochastic loss on a
four-leaf tree). Every group of runs is traced into one jitted program, so a
test file costs one compilation per dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import gradtx
from tests.test_optax_parity import TOL, assert_trees_close, run_pairs
from tests.test_reference_trajectories import (
    GRADS,
    GRADS_BY_STEP,
    THETA0,
    _unflatten,
    deviation,
    with_start,
)

__all__ = [
    "GRADS_BY_STEP",
    "THETA0",
    "TOL",
    "assert_optax_parity",
    "deviation",
    "gradtx_runs",
]

Evaluate = Callable[[object, object], object] | None


def _scan(tx, params, grads, evaluate):
    def step(carry, g):
        p, state = carry
        updates, state = tx.update(g, state, p)
        p = gradtx.apply_updates(p, updates)
        return (p, state), (p, p if evaluate is None else evaluate(state, p))

    return jax.lax.scan(step, (params, tx.init(params)), grads)[1]


def gradtx_runs(
    makers: Sequence[tuple[Callable[[], gradtx.GradientTransformation], Evaluate]], dtype: str
) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Each ``(make, evaluate)`` run on the reference data in ``dtype``, one jitted program.

    Returns, per run, the params' trajectory and the trajectory of
    ``evaluate(state, params)`` (the params again when ``evaluate`` is None),
    each a list of float64 arrays, one per leaf, with the start as row 0.
    """
    with jax.enable_x64(dtype == "float64"):
        params = _unflatten([jnp.asarray(t, dtype) for t in THETA0])
        grads = _unflatten([jnp.asarray(g, dtype) for g in GRADS])
        txs = [(make(), evaluate) for make, evaluate in makers]
        runs = jax.jit(lambda p, g: [_scan(tx, p, g, ev) for tx, ev in txs])(params, grads)
        out = []
        for ys, xs in runs:
            for leaf in jax.tree.leaves((ys, xs)):
                assert leaf.dtype == jnp.dtype(dtype)
            out.append((with_start(THETA0, ys), with_start(THETA0, xs)))
        return out


def assert_optax_parity(pairs, dtype: str, tol: dict[str, float] | None = None) -> None:
    """``run_pairs(pairs, dtype)`` (one jitted program), each pair's trajectories close."""
    with jax.enable_x64(dtype == "float64"):
        results = run_pairs(pairs, dtype)
    for index, (ours, theirs) in enumerate(results):
        try:
            assert_trees_close(ours, theirs, **(tol or TOL[dtype]))
        except AssertionError as error:
            raise AssertionError(f"pair {index}: {error}") from None
