"""gradtx.assignment's two solvers against SciPy's and Optax's.

The least cost is unique while the assignment may not be (ties), so each case
checks that the answer is an assignment (min(n, m) pairs, no row or column twice,
rows increasing) and that its cost is SciPy's ``linear_sum_assignment``'s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import linear_sum_assignment

from gradtx.assignment import base_hungarian_algorithm, hungarian_algorithm


def _matrices(seed=0, count=60):
    rng = np.random.default_rng(seed)
    for k in range(count):
        n, m = rng.integers(1, 9, size=2)
        if k % 3 == 0:  # small integers: many ties
            yield rng.integers(0, 4, size=(n, m)).astype(np.float32)
        else:
            yield rng.normal(size=(n, m)).astype(np.float32)


def _check(cost, i, j):
    i, j = np.asarray(i), np.asarray(j)
    k = min(cost.shape)
    assert i.shape == j.shape == (k,) and i.dtype == j.dtype == np.int32
    assert len(set(i)) == k and len(set(j)) == k and np.all(np.diff(i) > 0)
    rows, cols = linear_sum_assignment(cost)
    np.testing.assert_allclose(cost[i, j].sum(), cost[rows, cols].sum(), rtol=1e-6, atol=1e-5)


def test_least_cost_of_scipy_under_jit_wide_tall_and_tied():
    solve = jax.jit(hungarian_algorithm)
    for cost in _matrices():
        _check(cost, *solve(cost))


def test_same_cost_as_optax_and_vmapped_over_a_batch():
    rng = np.random.default_rng(1)
    batch = rng.normal(size=(5, 4, 6)).astype(np.float32)
    i, j = jax.vmap(hungarian_algorithm)(batch)
    for b in range(5):
        _check(batch[b], i[b], j[b])
        oi, oj = optax.assignment.hungarian_algorithm(jnp.asarray(batch[b]))
        np.testing.assert_allclose(batch[b][i[b], j[b]].sum(), batch[b][oi, oj].sum(), rtol=1e-6)


def test_integers_float64_and_empty_matrices():
    cost = np.array([[90, 80, 75, 70], [35, 85, 55, 65], [125, 95, 90, 95], [45, 110, 95, 115]])
    i, j = hungarian_algorithm(cost)  # an int matrix is solved in floats
    _check(cost, i, j)
    with jax.enable_x64(True):
        big = np.random.default_rng(2).normal(size=(7, 7)) * 1e12
        _check(big, *hungarian_algorithm(jnp.asarray(big)))
    i, j = hungarian_algorithm(np.zeros((0, 3)))
    assert i.shape == j.shape == (0,)


@pytest.mark.parametrize(
    "cost, error, message",
    [
        (np.ones(3), ValueError, r"hungarian_algorithm: cost_matrix must be 2-D, got shape \(3,\)"),
        (np.ones((2, 2), bool), TypeError, r"must be real numbers, got bool"),
        (np.ones((2, 2), np.complex64), TypeError, r"must be real numbers, got complex64"),
    ],
)
def test_bad_input_is_named(cost, error, message):
    with pytest.raises(error, match=message):
        hungarian_algorithm(cost)


@pytest.mark.parametrize("shape", [(1, 1), (5, 5), (8, 8), (3, 7), (7, 3), (1, 6), (6, 1)])
def test_base_hungarian_least_cost_of_scipy_square_and_rectangular(shape):
    solve = jax.jit(base_hungarian_algorithm)
    rng = np.random.default_rng(sum(shape))
    for k in range(8):
        if k % 2:  # small integers: many ties
            cost = rng.integers(0, 4, size=shape).astype(np.float32)
        else:
            cost = rng.normal(size=shape).astype(np.float32)
        _check(cost, *solve(cost))


def test_base_hungarian_agrees_with_hungarian_vmapped_float64_integer_and_empty():
    rng = np.random.default_rng(3)
    batch = rng.normal(size=(6, 5, 4)).astype(np.float32)
    i, j = jax.vmap(base_hungarian_algorithm)(batch)
    fi, fj = jax.vmap(hungarian_algorithm)(batch)
    for b in range(6):
        _check(batch[b], i[b], j[b])
        np.testing.assert_allclose(batch[b][i[b], j[b]].sum(), batch[b][fi[b], fj[b]].sum(), 1e-6)
    with jax.enable_x64(True):
        big = rng.normal(size=(6, 9)) * 1e12
        _check(big, *base_hungarian_algorithm(jnp.asarray(big)))
    cost = np.array([[90, 80, 75, 70], [35, 85, 55, 65], [125, 95, 90, 95], [45, 110, 95, 115]])
    _check(cost, *base_hungarian_algorithm(cost))
    i, j = base_hungarian_algorithm(np.zeros((4, 0)))
    assert i.shape == j.shape == (0,) and i.dtype == np.int32
    with pytest.raises(ValueError, match=r"base_hungarian_algorithm: cost_matrix must be 2-D"):
        base_hungarian_algorithm(np.ones(3))
    with pytest.raises(TypeError, match=r"base_hungarian_algorithm: .* real numbers, got bool"):
        base_hungarian_algorithm(np.ones((2, 2), bool))
