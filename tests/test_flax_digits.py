"""gradtx optimizers driving real Flax training: an MLP on scikit-learn's digits.

Both of Flax's APIs, each with what makes a real step more than ``tx.update``:
batch statistics updated alongside the gradient step, a dropout PRNG stream,
and a train / evaluation switch (see tests/digits_mlp.py for the data and the
models). Each run is one jitted ``lax.scan`` over its minibatch steps, with a
fixed seed, and must classify at least 95% of the 450 held-out digits.

* Linen: ``flax.training.train_state.TrainState`` with a ``batch_stats`` field
  and ``tx=gradtx.adamw`` on a warm-up + cosine schedule; a short training with
  ``gradtx.sgd`` and with ``optax.sgd`` gives the same parameters (gradtx
  follows Optax's conventions and protocol).
* NNX: ``nnx.Optimizer(model, gradtx.adam(...), wrt=nnx.Param)``, the model and
  optimizer split into a state pytree that the scan carries; the same run with
  Adam's moments in bfloat16 (``mu_dtype``, ``nu_dtype``) holds half the state's
  bytes and reaches the same bar.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import gradtx
from tests.digits_mlp import (
    LinenMLP,
    NnxMLP,
    accuracy,
    cross_entropy,
    epoch_batches,
    load_digits_split,
)

BATCH_SIZE = 128
NUM_EPOCHS = 30
STEPS_PER_EPOCH = 1347 // BATCH_SIZE  # 10 full batches of the 1,347 training digits
NUM_STEPS = NUM_EPOCHS * STEPS_PER_EPOCH
TARGET_ACCURACY = 0.95


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


def _schedule(peak: float, num_steps: int) -> gradtx.Schedule:
    return gradtx.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=num_steps // 10, decay_steps=num_steps
    )


# ---------------------------------------------------------------------------- Linen


class TrainState(train_state.TrainState):
    """Flax's train state plus the batch-norm running statistics."""

    batch_stats: Any


def _linen_state(tx, seed: int = 0) -> TrainState:
    model = LinenMLP()
    variables = model.init(jax.random.key(seed), jnp.zeros((1, 64)), train=False)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=tx,
    )


def _linen_step(state: TrainState, x, y, dropout_key) -> tuple[TrainState, jax.Array]:
    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, mutated = state.apply_fn(
            variables, x, train=True, rngs={"dropout": dropout_key}, mutable=["batch_stats"]
        )
        return cross_entropy(logits, y), mutated["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads, batch_stats=batch_stats), loss


def _linen_train(state: TrainState, digits, indices, seed: int = 0):
    """All the steps in one jitted scan; the dropout key of step k is ``fold_in(key, k)``."""
    x, y = jnp.asarray(digits.x_train), jnp.asarray(digits.y_train)
    dropout_key = jax.random.key(seed + 1)

    @jax.jit
    def train(state, indices):
        def body(state, rows):
            key = jax.random.fold_in(dropout_key, state.step)
            return _linen_step(state, x[rows], y[rows], key)

        return jax.lax.scan(body, state, indices)

    return train(state, indices)


def _linen_accuracy(state: TrainState, x, y) -> float:
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return float(accuracy(state.apply_fn(variables, x, train=False), y))


def test_linen_train_state_with_gradtx_adamw_reaches_95_percent(digits):
    indices = epoch_batches(jax.random.key(2), len(digits.y_train), BATCH_SIZE, NUM_EPOCHS)
    tx = gradtx.adamw(_schedule(3e-3, NUM_STEPS), weight_decay=1e-4)
    state, losses = _linen_train(_linen_state(tx), digits, indices)

    assert int(state.step) == NUM_STEPS
    test_accuracy = _linen_accuracy(state, digits.x_test, digits.y_test)
    assert test_accuracy >= TARGET_ACCURACY, test_accuracy
    losses = np.asarray(losses)
    assert np.all(np.isfinite(losses))
    assert losses[-STEPS_PER_EPOCH:].mean() < 0.2 * losses[:STEPS_PER_EPOCH].mean()

    # The running statistics were carried through the scan: the first batch norm's
    # running mean tracks the mean of its input (the first Dense layer's output)
    # over the training set, to within a tenth of that input's spread.
    pre_activation = digits.x_train @ np.asarray(state.params["Dense_0"]["kernel"])
    running_mean = np.asarray(state.batch_stats["BatchNorm_0"]["mean"])
    error = np.abs(running_mean - pre_activation.mean(axis=0))
    assert np.all(error <= 0.1 * pre_activation.std(axis=0) + 1e-3), error.max()


def test_linen_train_state_gradtx_and_optax_sgd_agree(digits):
    """30 TrainState steps with gradtx.sgd and optax.sgd (Nesterov momentum): same params.

    SGD rather than Adam: Adam divides each gradient by its own running scale, so a
    weight whose gradient is rounding noise (a kernel row fed by a pixel that is
    constant within a batch: batch norm cancels it) takes full-size steps in a
    direction set by the last bit, and two correct implementations part ways.
    """
    num_steps = 3 * STEPS_PER_EPOCH
    indices = epoch_batches(jax.random.key(3), len(digits.y_train), BATCH_SIZE, 3)
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.1, num_steps // 10, num_steps)
    ours = gradtx.sgd(schedule, momentum=0.9, nesterov=True)
    theirs = optax.sgd(schedule, momentum=0.9, nesterov=True)
    ours, _ = _linen_train(_linen_state(ours), digits, indices)
    theirs, _ = _linen_train(_linen_state(theirs), digits, indices)

    # Both evaluate the same float32 formulas (measured on CPU: bit-identical). The
    # tolerance leaves room for a backend that fuses or reorders them differently: an
    # ulp per step, carried through 30 steps, stays far below 1e-5 on these weights.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        (ours.params, ours.batch_stats),
        (theirs.params, theirs.batch_stats),
    )
    assert int(ours.step) == int(theirs.step) == num_steps


# ------------------------------------------------------------------------------ NNX


def _nnx_train(model: NnxMLP, optimizer: nnx.Optimizer, digits, indices):
    """All the steps in one jitted scan, carrying the split state of model and optimizer."""
    x, y = jnp.asarray(digits.x_train), jnp.asarray(digits.y_train)
    graphdef, state = nnx.split((model, optimizer))

    @jax.jit
    def train(state, indices):
        def body(state, rows):
            model, optimizer = nnx.merge(graphdef, state)
            loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x[rows]), y[rows]))(model)
            optimizer.update(model, grads)
            return nnx.state((model, optimizer)), loss

        return jax.lax.scan(body, state, indices)

    state, losses = train(state, indices)
    nnx.update((model, optimizer), state)
    return np.asarray(losses)


def test_nnx_optimizer_with_gradtx_adam_reaches_95_percent(digits):
    model = NnxMLP(nnx.Rngs(params=0, dropout=1))
    optimizer = nnx.Optimizer(model, gradtx.adam(_schedule(3e-3, NUM_STEPS)), wrt=nnx.Param)
    # wrt=nnx.Param: the optimizer state mirrors the parameters, not the batch statistics.
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    mu = nnx.to_pure_dict(optimizer.opt_state[0].mu)
    assert jax.tree.map(np.shape, mu) == jax.tree.map(np.shape, params)

    indices = epoch_batches(jax.random.key(2), len(digits.y_train), BATCH_SIZE, NUM_EPOCHS)
    losses = _nnx_train(model, optimizer, digits, indices)

    assert int(optimizer.step[...]) == NUM_STEPS
    assert int(optimizer.opt_state[0].count[...]) == NUM_STEPS
    model.eval()
    test_accuracy = float(accuracy(model(jnp.asarray(digits.x_test)), digits.y_test))
    assert test_accuracy >= TARGET_ACCURACY, test_accuracy
    assert np.all(np.isfinite(losses))
    assert losses[-STEPS_PER_EPOCH:].mean() < 0.2 * losses[:STEPS_PER_EPOCH].mean()

    # The batch statistics moved with the training (they start at mean 0, variance 1).
    linear, norm, _ = model.blocks[0]
    pre_activation = digits.x_train @ np.asarray(linear.kernel[...])
    error = np.abs(np.asarray(norm.mean[...]) - pre_activation.mean(axis=0))
    assert np.all(error <= 0.1 * pre_activation.std(axis=0) + 1e-3), error.max()


def _state_bytes(state) -> tuple[int, int]:
    """``(bytes of the floating-point leaves, bytes of the rest)`` of a state or its shapes."""
    sizes = [(x.size * x.dtype.itemsize, x.dtype) for x in jax.tree.leaves(state)]
    floating = sum(n for n, dtype in sizes if jnp.issubdtype(dtype, jnp.inexact))
    return floating, sum(n for n, _ in sizes) - floating


def test_nnx_adam_with_bfloat16_moments_halves_the_state_and_reaches_95_percent(digits):
    """Adam's two moments in bfloat16: half the state's bytes, the same accuracy bar.

    The run is the float32 test's above (model seed, batches, schedule), with
    ``mu_dtype`` and ``nu_dtype`` set; the moments are updated in float32 and
    rounded to bfloat16 when stored (gradtx.tree), and the updates come back in
    the params' float32.
    """
    model = NnxMLP(nnx.Rngs(params=0, dropout=1))
    schedule = _schedule(3e-3, NUM_STEPS)
    full = gradtx.adam(schedule)
    half = gradtx.adam(schedule, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    full_floats, full_counters = _state_bytes(jax.eval_shape(full.init, params))
    half_floats, half_counters = _state_bytes(jax.eval_shape(half.init, params))
    # Two float32 moments of the 26,378 parameters: 211,024 bytes; in bfloat16, half.
    assert full_floats == 2 * 4 * sum(np.size(p) for p in jax.tree.leaves(params))
    assert half_floats * 2 == full_floats
    assert half_counters == full_counters  # the int32 step counts stay as they are

    optimizer = nnx.Optimizer(model, half, wrt=nnx.Param)
    indices = epoch_batches(jax.random.key(2), len(digits.y_train), BATCH_SIZE, NUM_EPOCHS)
    losses = _nnx_train(model, optimizer, digits, indices)

    # The trained state kept its dtypes (nothing promoted the moments back to float32).
    adam_state = optimizer.opt_state[0]
    moments = [nnx.to_pure_dict(adam_state.mu), nnx.to_pure_dict(adam_state.nu)]
    assert {x.dtype for x in jax.tree.leaves(moments)} == {jnp.dtype(jnp.bfloat16)}
    assert _state_bytes(moments)[0] == half_floats
    model.eval()
    test_accuracy = float(accuracy(model(jnp.asarray(digits.x_test)), digits.y_test))
    assert test_accuracy >= TARGET_ACCURACY, test_accuracy
    assert np.all(np.isfinite(losses))
    assert losses[-STEPS_PER_EPOCH:].mean() < 0.2 * losses[:STEPS_PER_EPOCH].mean()
