"""``import gradtx as optax``: Flax training code written for Optax runs unchanged.

The same training functions, written once against an ``optax`` module argument,
run with Optax and with gradtx in its place: a Flax NNX
``nnx.Optimizer(model, optax.adamw(...), wrt=nnx.Param)`` and a Linen
``TrainState.create(apply_fn=..., params=..., tx=optax.adamw(...))``, each a few
AdamW steps (with a schedule, weight decay and a mask) on one tiny model, and
the parameters after them must agree to float32 tolerance.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax as real_optax
import pytest
from flax import linen, nnx
from flax.training import train_state

import gradtx

NUM_STEPS = 5
TOL = dict(rtol=1e-6, atol=1e-6)


def _batch():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)
    return x, y


def _adamw(optax: types.ModuleType):
    """Optax-style code: a schedule, and decay only on the kernels (a mask)."""
    schedule = optax.linear_schedule(1e-2, 1e-3, NUM_STEPS)
    no_bias = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # noqa: E731
    return optax.adamw(schedule, b1=0.8, weight_decay=0.1, mask=no_bias)


def _close(got, expected):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


class _NnxModel(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(3, 4, rngs=rngs)
        self.out = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def _nnx_training(optax: types.ModuleType):
    model = _NnxModel(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, _adamw(optax), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        loss_fn = lambda model: jnp.mean((model(x) - y) ** 2)  # noqa: E731
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    x, y = _batch()
    losses = [step(model, optimizer, x, y) for _ in range(NUM_STEPS)]
    return nnx.state(model, nnx.Param), losses


class _LinenModel(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dense(2)(jnp.tanh(linen.Dense(4)(x)))


def _linen_training(optax: types.ModuleType):
    model = _LinenModel()
    x, y = _batch()
    params = model.init(jax.random.key(0), x)["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=_adamw(optax))

    @jax.jit
    def step(state, x, y):
        def loss_fn(params):
            return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    losses = []
    for _ in range(NUM_STEPS):
        state, loss = step(state, x, y)
        losses.append(loss)
    return state.params, losses, state


@pytest.mark.parametrize("training", [_nnx_training, _linen_training], ids=["nnx", "linen"])
def test_gradtx_in_place_of_optax_gives_optax_s_parameters(training):
    ours = training(gradtx)
    theirs = training(real_optax)
    _close(ours[0], theirs[0])  # the parameters after the steps
    _close(ours[1], theirs[1])  # the losses along the way
    assert float(theirs[1][-1]) < float(theirs[1][0])  # the steps did train
    if training is _linen_training:
        assert int(ours[2].step) == NUM_STEPS
