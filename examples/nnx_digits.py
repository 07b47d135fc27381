"""Trains an MLP with batch norm and dropout on handwritten digits: Flax NNX + gradtx.

The same data and network as ``linen_digits.py`` (scikit-learn's bundled digits,
``[Linear -> BatchNorm -> ReLU -> Dropout] x 2 -> Linear``), written as an NNX
module and trained with

    optimizer = nnx.Optimizer(model, gradtx.adamw(schedule), wrt=nnx.Param)

where ``wrt=nnx.Param`` keeps the batch statistics out of the optimizer (they
are updated by the forward pass in training mode). Each step is an ``nnx.jit``
function that mutates the model and the optimizer in place; ``model.train()``
and ``model.eval()`` switch batch norm and dropout between the two modes.

    python examples/nnx_digits.py
    python examples/nnx_digits.py --epochs 50 --learning-rate 1e-2
    python examples/nnx_digits.py --quick        # fewer epochs, a few seconds

The last line printed is ``test accuracy: 0.xxxx``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from linen_digits import cross_entropy, load_digits_split, shuffled_batches

import gradtx


class MLP(nnx.Module):
    """The classifier: hidden blocks of Linear (no bias), BatchNorm, ReLU and Dropout."""

    def __init__(
        self,
        rngs: nnx.Rngs,
        hidden: Sequence[int] = (128, 128),
        dropout_rate: float = 0.2,
        num_features: int = 64,
        num_classes: int = 10,
    ):
        widths = (num_features, *hidden)
        self.blocks = nnx.List(
            [
                nnx.List(
                    [
                        # No bias: batch norm would subtract it again.
                        nnx.Linear(width_in, width_out, use_bias=False, rngs=rngs),
                        nnx.BatchNorm(width_out, momentum=0.9, rngs=rngs),
                        nnx.Dropout(dropout_rate, rngs=rngs),
                    ]
                )
                for width_in, width_out in zip(widths[:-1], widths[1:], strict=True)
            ]
        )
        self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for linear, norm, dropout in self.blocks:
            x = dropout(nnx.relu(norm(linear(x))))
        return self.head(x)


@nnx.jit
def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    """One gradient step on a minibatch, in place; returns the minibatch loss."""
    loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x), y))(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def accuracy(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(model(x), axis=-1) == y)


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
    model = MLP(nnx.Rngs(params=args.seed, dropout=args.seed + 1))
    batches = shuffled_batches(
        jax.random.key(args.seed + 2), len(data.y_train), args.batch_size, args.epochs
    )
    num_steps = batches.shape[0] * batches.shape[1]
    schedule = gradtx.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=args.learning_rate,
        warmup_steps=num_steps // 10,
        decay_steps=num_steps,
    )
    optimizer = nnx.Optimizer(
        model, gradtx.adamw(schedule, weight_decay=args.weight_decay), wrt=nnx.Param
    )

    start = time.perf_counter()
    model.train()
    for k, epoch_batches in enumerate(batches, start=1):
        losses = [
            train_step(model, optimizer, data.x_train[r], data.y_train[r]) for r in epoch_batches
        ]
        if k % 5 == 0 or k == args.epochs:
            print(f"epoch {k:3d}: mean training loss {float(jnp.mean(jnp.stack(losses))):.4f}")
    model.eval()
    test_accuracy = float(accuracy(model, data.x_test, data.y_test))
    seconds = time.perf_counter() - start
    print(f"{int(optimizer.step[...])} steps of gradtx.adamw in {seconds:.1f} s")
    print(f"test accuracy: {test_accuracy:.4f}")
    return test_accuracy


if __name__ == "__main__":
    main()
