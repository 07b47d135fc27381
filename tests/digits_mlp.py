"""Shared by the Flax tests: scikit-learn's digits, split and scaled, and two MLPs.

The data are the 1,797 8x8 handwritten digits bundled with scikit-learn (no
download): a fixed stratified split (a quarter held out for testing), and the
64 pixel features standardised with the training set's mean and standard
deviation (constant pixels keep a scale of 1). The two models are the same
network written for Flax's two APIs, Linen and NNX::

    x -> [Dense -> BatchNorm -> ReLU -> Dropout] * len(hidden) -> Dense -> logits

(the hidden Dense layers have no bias: batch norm subtracts it again, so its
gradient would be rounding noise, which Adam scales up to full-size steps)

so a test exercises everything that makes a Flax training step more than
``tx.update``: mutable batch statistics, a dropout PRNG stream, and a
train / evaluation switch. This is a helper module, not a test module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

NUM_FEATURES = 64
NUM_CLASSES = 10
HIDDEN = (128, 128)
DROPOUT_RATE = 0.2
# The default momentum 0.99 forgets its zero start only after a few hundred steps;
# 0.9 tracks the statistics within the step budgets of the tests.
BATCH_NORM_MOMENTUM = 0.9


class Digits(NamedTuple):
    """The digits split: float32 features, int32 labels in 0..9."""

    x_train: np.ndarray  # (1347, 64)
    y_train: np.ndarray  # (1347,)
    x_test: np.ndarray  # (450, 64)
    y_test: np.ndarray  # (450,)


def load_digits_split(test_fraction: float = 0.25, seed: int = 0) -> Digits:
    """The bundled digits, split (stratified) and standardised on the training part."""
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=test_fraction, random_state=seed, stratify=data.target
    )
    scaler = StandardScaler().fit(x_train)
    return Digits(
        scaler.transform(x_train).astype(np.float32),
        y_train.astype(np.int32),
        scaler.transform(x_test).astype(np.float32),
        y_test.astype(np.int32),
    )


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of integer ``labels`` under softmax ``logits``."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The fraction of rows whose largest logit is at the label."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def epoch_batches(key: jax.Array, num_examples: int, batch_size: int, num_epochs: int):
    """Row indices of ``num_epochs`` shuffled passes: ``(num_steps, batch_size)``.

    Each pass is a fresh permutation cut into full batches (the remainder of a
    pass is dropped), so every step of a ``lax.scan`` sees a batch of one shape.
    """
    per_epoch = num_examples // batch_size
    keys = jax.random.split(key, num_epochs)
    orders = jax.vmap(lambda k: jax.random.permutation(k, num_examples))(keys)
    return orders[:, : per_epoch * batch_size].reshape(num_epochs * per_epoch, batch_size)


class LinenMLP(nn.Module):
    """The MLP in Linen: ``train`` switches batch statistics and dropout on."""

    hidden: Sequence[int] = HIDDEN
    dropout_rate: float = DROPOUT_RATE
    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        for width in self.hidden:
            x = nn.Dense(width, use_bias=False)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=BATCH_NORM_MOMENTUM)(x)
            x = nn.relu(x)
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class NnxMLP(nnx.Module):
    """The MLP in NNX: ``model.train()`` / ``model.eval()`` switch the mode."""

    def __init__(
        self,
        rngs: nnx.Rngs,
        hidden: Sequence[int] = HIDDEN,
        dropout_rate: float = DROPOUT_RATE,
        num_features: int = NUM_FEATURES,
        num_classes: int = NUM_CLASSES,
    ):
        widths = (num_features, *hidden)
        self.blocks = nnx.List(
            [
                _nnx_block(width_in, width_out, dropout_rate, rngs)
                for width_in, width_out in zip(widths[:-1], widths[1:], strict=True)
            ]
        )
        self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for linear, norm, dropout in self.blocks:
            x = dropout(nnx.relu(norm(linear(x))))
        return self.head(x)


def _nnx_block(width_in: int, width_out: int, dropout_rate: float, rngs: nnx.Rngs):
    return nnx.List(
        [
            nnx.Linear(width_in, width_out, use_bias=False, rngs=rngs),
            nnx.BatchNorm(width_out, momentum=BATCH_NORM_MOMENTUM, rngs=rngs),
            nnx.Dropout(dropout_rate, rngs=rngs),
        ]
    )
