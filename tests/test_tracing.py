"""Nothing depends on tracing: a hyperparameter that is a constant, a traced array
or injected (:func:`gradtx.inject_hyperparams`) gives the same state tree and the
same numbers. Checked over the whole registry.

A traced hyperparameter is also differentiated through (finite, and exact where
the update is linear in it). It differs from a Python constant only in where its
arithmetic is rounded (``1 - b1`` in float64 on the host, or in float32 in the
program), so the numbers agree to a few float32 ulps, not bit for bit.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests.registry import REGISTRY, WITH_HYPERPARAMETER, tiny_grads, tiny_params

# Two steps, as in tests/test_behaviour.py: the second reads the state the first
# wrote, and the registry's periodic blocks have a period of 2 or less.
STEPS = 2
RTOL, ATOL = 2e-5, 1e-6  # a few float32 ulps over two steps (see the module docstring)


def _layout(state):
    """A state's tree structure with each leaf's shape and dtype."""
    leaves, treedef = jax.tree.flatten(state)
    return treedef, [(jnp.shape(x), jnp.result_type(x)) for x in leaves]


def _updates(tx, steps=STEPS):
    params = tiny_params()
    state = tx.init(params)
    out = []
    for k in range(steps):
        updates, state = tx.update(tiny_grads(k), state, params)
        out.append(updates)
    return out, state


def _assert_close(got, expected):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("entry", WITH_HYPERPARAMETER, ids=str)
def test_a_traced_hyperparameter_gives_the_state_tree_and_numbers_of_a_constant(entry):
    name = entry.hyperparameter
    # A float32 value, so that the constant and the traced array are the same number.
    # The default where the entry has one (a decay of 0 would make a centred variance
    # g^2 - g^2, whose rounding depends on how XLA fuses it, not on tracing).
    default = inspect.signature(entry.factory).parameters[name].default
    value = entry.kwargs.get(name, default)
    if not isinstance(value, (int, float)):
        value = entry.hyperparameter_values[-1]
    value = float(np.float32(value))
    constant, constant_state = _updates(entry.make(**{name: value}))

    def last_sum(h):  # the sum of the last update, with the run as its aux
        updates, state = _updates(entry.make(**{name: h}))
        return sum(jnp.sum(u) for u in jax.tree.leaves(updates[-1])), (updates, state)

    # Built under jit and differentiated with respect to the hyperparameter: the
    # checks must not trip on a tracer, and the derivative must be finite.
    traced = jax.jit(jax.value_and_grad(last_sum, has_aux=True))
    (total, (got, got_state)), derivative = traced(jnp.float32(value))
    assert _layout(got_state) == _layout(constant_state)
    _assert_close(got, constant)
    assert bool(jnp.isfinite(derivative)), entry.name
    if entry.linear_in_hyperparameter and value != 0:
        # The update is proportional to h, so d/dh of its sum is the sum over h.
        np.testing.assert_allclose(derivative, total / value, rtol=1e-5, atol=1e-6)


# Every entry with a number to inject; the others (combinators of transformations)
# take none, and inject_hyperparams would wrap them unchanged.
INJECTABLE = tuple(
    e
    for e in REGISTRY
    if e.hyperparameter is not None or any(isinstance(v, float) for v in e.kwargs.values())
)


@pytest.mark.parametrize("entry", INJECTABLE, ids=str)
def test_injected_hyperparameters_keep_the_inner_state_tree_and_numbers(entry):
    injected = gradtx.inject_hyperparams(entry.factory)(**entry.kwargs)
    plain = entry.make()
    if entry.extra_args:
        defaults = dict(entry.extra_args)
        inner = injected
        injected = gradtx.GradientTransformation(
            inner.init, lambda u, s, p=None, **kw: inner.update(u, s, p, **{**defaults, **kw})
        )
    expected, plain_state = _updates(plain)
    got, state = _updates(injected)
    assert _layout(state.inner_state) == _layout(plain_state)
    _assert_close(got, expected)
