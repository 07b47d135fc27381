"""Trains an MLP with batch norm and dropout on handwritten digits: Flax Linen + gradtx.

The data are the 1,797 8x8 digits bundled with scikit-learn (no download), split
three to one into training and test sets (stratified, fixed seed) and standardised
with the training set's statistics. The model is

    x -> [Dense -> BatchNorm -> ReLU -> Dropout] x 2 -> Dense -> 10 logits

trained with ``flax.training.train_state.TrainState(tx=gradtx.adamw(...))`` on a
warm-up + cosine learning-rate schedule. A ``TrainState`` subclass carries the
batch-norm running statistics; dropout draws its mask from ``fold_in(key, step)``.
Each epoch is one jitted ``jax.lax.scan`` over its minibatches.

    python examples/linen_digits.py
    python examples/linen_digits.py --epochs 50 --learning-rate 1e-2
    python examples/linen_digits.py --quick       # fewer epochs, a few seconds

The last line printed is ``test accuracy: 0.xxxx``. The other examples on the digits
(``lr_search.py``, ``early_stopping.py``) import the data, model and steps from here.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import gradtx


class Split(NamedTuple):
    """Features (float32, standardised) and integer labels of a training and a test set."""

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array


def load_digits_split(test_fraction: float = 0.25, seed: int = 0) -> Split:
    """The bundled digits, split (stratified) and standardised on the training part."""
    data = load_digits()
    return split_and_scale(data.data, data.target, test_fraction, seed)


def split_and_scale(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> Split:
    """A stratified split; both parts scaled with the first part's mean and deviation."""
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    scaler = StandardScaler().fit(x_train)  # a constant pixel keeps a scale of 1
    return Split(
        jnp.asarray(scaler.transform(x_train), jnp.float32),
        jnp.asarray(y_train, jnp.int32),
        jnp.asarray(scaler.transform(x_test), jnp.float32),
        jnp.asarray(y_test, jnp.int32),
    )


def hold_out(x: jax.Array, y: jax.Array, fraction: float, seed: int = 0):
    """``(x_kept, y_kept, x_held, y_held)``: a stratified ``fraction`` held out.

    For a validation set carved from the training set, which is already scaled.
    """
    kept, held = train_test_split(
        np.arange(len(y)), test_size=fraction, random_state=seed, stratify=np.asarray(y)
    )
    return x[kept], y[kept], x[held], y[held]


class MLP(nn.Module):
    """The classifier; ``train=True`` uses batch statistics and dropout."""

    hidden: Sequence[int] = (128, 128)
    dropout_rate: float = 0.2
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        for width in self.hidden:
            # No bias: batch norm would subtract it again.
            x = nn.Dense(width, use_bias=False)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.relu(x)
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class TrainState(train_state.TrainState):
    """Flax's train state plus the batch-norm running statistics."""

    batch_stats: Any


def create_state(tx: gradtx.GradientTransformation, key: jax.Array) -> TrainState:
    """Fresh parameters and statistics of :class:`MLP`, and ``tx``'s state for them."""
    model = MLP()
    variables = model.init(key, jnp.zeros((1, 64)), train=False)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=tx,
    )


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of the integer labels."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def train_step(state: TrainState, x, y, dropout_key) -> tuple[TrainState, jax.Array]:
    """One gradient step on a minibatch; returns the new state and the minibatch loss."""
    key = jax.random.fold_in(dropout_key, state.step)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, mutated = state.apply_fn(
            variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
        )
        return cross_entropy(logits, y), mutated["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads, batch_stats=batch_stats), loss


def train_steps(state: TrainState, x, y, batches, dropout_key) -> tuple[TrainState, jax.Array]:
    """:func:`train_step` over the rows ``batches[k]`` of ``(x, y)``, in a ``lax.scan``."""

    def body(state, rows):
        return train_step(state, x[rows], y[rows], dropout_key)

    return jax.lax.scan(body, state, batches)


def shuffled_batches(key: jax.Array, num_examples: int, batch_size: int, num_epochs: int):
    """``(num_epochs, steps_per_epoch, batch_size)`` row indices: a permutation per epoch.

    The rows left over after the last full batch of an epoch are skipped in it.
    """
    per_epoch = num_examples // batch_size
    keys = jax.random.split(key, num_epochs)
    orders = jax.vmap(lambda k: jax.random.permutation(k, num_examples))(keys)
    return orders[:, : per_epoch * batch_size].reshape(num_epochs, per_epoch, batch_size)


def predict(state: TrainState, x: jax.Array) -> jax.Array:
    """Logits in evaluation mode: running statistics, no dropout."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return state.apply_fn(variables, x, train=False)


def evaluate(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(loss, accuracy)`` of the model in evaluation mode."""
    logits = predict(state, x)
    return cross_entropy(logits, y), jnp.mean(jnp.argmax(logits, axis=-1) == y)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="passes over the data")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="the peak rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="15 epochs: a fast check")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 15)
    return args


def main(argv=None) -> float:
    args = parse_args(argv)
    data = load_digits_split()
    init_key, shuffle_key, dropout_key = jax.random.split(jax.random.key(args.seed), 3)
    batches = shuffled_batches(shuffle_key, len(data.y_train), args.batch_size, args.epochs)
    num_steps = batches.shape[0] * batches.shape[1]
    schedule = gradtx.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=args.learning_rate,
        warmup_steps=num_steps // 10,
        decay_steps=num_steps,
    )
    tx = gradtx.adamw(schedule, weight_decay=args.weight_decay)
    state = create_state(tx, init_key)
    epoch = jax.jit(train_steps)

    start = time.perf_counter()
    for k, epoch_batches in enumerate(batches, start=1):
        state, losses = epoch(state, data.x_train, data.y_train, epoch_batches, dropout_key)
        if k % 5 == 0 or k == args.epochs:
            print(f"epoch {k:3d}: mean training loss {float(losses.mean()):.4f}")
    _, test_accuracy = evaluate(state, data.x_test, data.y_test)
    seconds = time.perf_counter() - start
    print(f"{num_steps} steps of gradtx.adamw in {seconds:.1f} s (compilation included)")
    print(f"test accuracy: {float(test_accuracy):.4f}")
    return float(test_accuracy)


if __name__ == "__main__":
    main()
