"""Eight optimizers compared on two small training workloads, each tuned.

The workloads (no data is downloaded):

- ``char_lm``: a character-level transformer language model (Flax NNX; by
  default 2 layers, ``d_model`` 128, 4 heads, a context of 64 bytes) trained on
  the Python standard library's own source: the ``*.py`` files directly in
  ``os.path.dirname(os.__file__)``, sorted by name, every tenth file held out
  for validation. The vocabulary is the 256 byte values. The validation loss is
  the mean cross-entropy in nats per character over a fixed set of windows of
  the held-out files.
- ``digits``: a small convolutional network on scikit-learn's bundled 8x8
  handwritten digits, a fixed stratified split (a quarter held out); validation
  loss and accuracy on the held-out digits.

The optimizers, all from gradtx: ``adamw``, ``lion``, ``adafactor``, ``muon``,
``soap``, ``shampoo``, ``schedule_free_adamw`` and ``prodigy`` (see
:data:`OPTIMIZERS` for the settings and the search range of each). Every one
but schedule-free runs on a linear warm-up (5% of the steps) and a cosine decay
to zero (``gradtx.warmup_cosine_decay_schedule``) peaking at its learning rate;
Prodigy's peak is 1.0 (the schedule scales the step it estimates), so only its
weight decay is tuned. Schedule-free AdamW takes a constant rate with its own
linear warm-up over the same 5% of the steps, and is evaluated at its averaged
point (``gradtx.schedule_free_eval_params``), not at the params it steps.

For each optimizer and workload, the same search budget: a random search
(``gradtx.training.random_search``) of ``--trials`` settings, the learning rate
log-uniform over the optimizer's range and the decoupled weight decay log-uniform
too where the optimizer has one, then ``--refine-trials`` more settings drawn
from the ranges narrowed around the best three (``gradtx.training.refine``);
each trial trains for the short search budget with seed 0 and is ranked by its
final validation loss. The best setting of all the trials then trains for the
full budget with seeds 1, 2 and 3 (a seed sets the initial weights and the
minibatches). The table gives the mean and standard deviation over the three
seeds of the final validation loss (and of the accuracy on the digits), the
steps and wall seconds each method needs to reach AdamW's final loss (the first
evaluation at which its seed-mean curve is at or below AdamW's seed-mean final
loss), and the wall seconds of a final run (the mean over the seeds, compilation
excluded: it is timed apart and recorded in the JSON).

The trials run one after another, not vmapped: on XLA:CPU a vmapped step was no
faster per run for the transformer and several times slower for the CNN (its
convolutions become grouped convolutions); ``workload_step_time.py --vmap``
measures it.

Usage::

    python benchmarks/workloads.py --quick      # tiny model and budgets, a smoke test (< 2 min)
    python benchmarks/workloads.py              # the full comparison (< 30 min, 2 CPU cores)
    python benchmarks/workloads.py --optimizers adamw,muon --workloads digits
    python benchmarks/workloads.py --large      # the larger configuration, for a GPU or TPU

Writes ``workloads.json`` (every number, the search trials and curves included),
``workloads.md`` (the tables) and ``workloads.png`` (validation loss against
steps and against wall seconds) to ``--out`` (default ``benchmarks/results``);
``workloads_quick.*`` with ``--quick`` and ``workloads_large.*`` with ``--large``,
so neither overwrites the default run. Prints the markdown tables. Sets
``OPENBLAS_NUM_THREADS=1`` when it is unset (see the comment at the imports).

The training functions are reusable from other scripts::

    import gradtx
    from workloads import train_char_lm, train_digits_cnn

    run = train_char_lm(gradtx.adamw(1e-3), steps=300, seed=1)
    run["final_val_loss"], run["curve"]  # nats per character, at run["curve_steps"]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# One OpenBLAS thread unless set otherwise, before NumPy or JAX load OpenBLAS (it
# has no effect once they have): Shampoo's and SOAP's eigendecompositions call
# LAPACK through it, and its threads, on 2 cores busy with other work, wait for
# one another (benchmarks/README.md measured a Shampoo step of the language model
# 4.5 times slower on average with OpenBLAS's default threads). XLA's own kernels
# do not use OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import gradtx  # noqa: E402
from gradtx.training import SearchBorderWarning, log_uniform, random_search, refine  # noqa: E402

# ---------------------------------------------------------------------------- data


def stdlib_source_files() -> list[Path]:
    """The ``*.py`` files directly in the standard library's folder, sorted by name."""
    folder = Path(os.path.dirname(os.__file__))
    return sorted(folder.glob("*.py"))


def load_stdlib_text(validation_every: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The standard library's source as bytes, split by file: ``(train, validation)``.

    File ``i`` of :func:`stdlib_source_files` goes to validation when
    ``i % validation_every == validation_every - 1``, to training otherwise; the
    files of each part are joined in order. Returns two uint8 arrays.
    """
    train, validation = [], []
    for i, path in enumerate(stdlib_source_files()):
        part = validation if i % validation_every == validation_every - 1 else train
        part.append(path.read_bytes())
    as_array = lambda chunks: np.frombuffer(b"".join(chunks), dtype=np.uint8)
    return as_array(train), as_array(validation)


def load_digits_split() -> dict[str, np.ndarray]:
    """scikit-learn's bundled digits as ``(N, 8, 8, 1)`` images in [0, 1], split 3:1.

    The split is stratified by label with ``random_state=0``: 1,347 training and
    450 validation digits.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    x_train, x_val, y_train, y_val = train_test_split(
        images, labels, test_size=0.25, random_state=0, stratify=labels
    )
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}


# -------------------------------------------------------------------------- models


class CausalSelfAttention(nnx.Module):
    """Multi-head causal self-attention with 2-D projection matrices.

    The query, key and value projections are one ``(d, 3d)`` matrix and the output
    one ``(d, d)`` matrix, so matrix optimizers (Muon, Shampoo, SOAP) see them as
    matrices (``nnx.MultiHeadAttention`` keeps 3-D kernels).
    """

    def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.qkv = nnx.Linear(d_model, 3 * d_model, rngs=rngs)
        self.out = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, d_model = x.shape
        heads = self.qkv(x).reshape(batch, length, 3, self.num_heads, d_model // self.num_heads)
        q, k, v = heads[:, :, 0], heads[:, :, 1], heads[:, :, 2]
        attended = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        return self.out(attended.reshape(batch, length, d_model))


class TransformerBlock(nnx.Module):
    """Pre-norm block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs):
        self.attention_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.attention = CausalSelfAttention(d_model, num_heads, rngs=rngs)
        self.mlp_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.mlp_in = nnx.Linear(d_model, 4 * d_model, rngs=rngs)
        self.mlp_out = nnx.Linear(4 * d_model, d_model, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(x))))


class CharTransformer(nnx.Module):
    """A GPT-style byte-level language model: logits of the next byte at every position."""

    def __init__(self, *, layers: int, d_model: int, num_heads: int, context: int, rngs: nnx.Rngs):
        self.token_embedding = nnx.Embed(256, d_model, rngs=rngs)
        self.position_embedding = nnx.Embed(context, d_model, rngs=rngs)
        self.blocks = nnx.List(
            [TransformerBlock(d_model, num_heads, rngs=rngs) for _ in range(layers)]
        )
        self.final_norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.head = nnx.Linear(d_model, 256, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        positions = jnp.arange(tokens.shape[-1])
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))


class DigitsCNN(nnx.Module):
    """conv 3x3 -> ReLU -> conv 3x3 -> ReLU -> 2x2 average pool -> dense: 10 logits."""

    def __init__(self, *, channels: tuple[int, int] = (16, 32), rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, channels[0], kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(channels[0], channels[1], kernel_size=(3, 3), rngs=rngs)
        self.dense = nnx.Linear(4 * 4 * channels[1], 10, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.conv1(images))
        x = jax.nn.relu(self.conv2(x))
        x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        return self.dense(x.reshape(x.shape[0], -1))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean negative log-likelihood (nats) of integer ``labels`` under ``logits``."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[..., None], axis=-1))


# ----------------------------------------------------------------------- workloads


@dataclasses.dataclass(frozen=True)
class Workload:
    """A model, its data and its losses, as pure functions of the params.

    ``init(key)`` returns the params (an ``nnx.State``); ``train_loss(params,
    data, key)`` draws a minibatch with ``key`` and returns its mean loss;
    ``evaluate(params, data)`` returns a dict of validation metrics, with
    ``"loss"``. ``data`` is a dict of arrays passed to the compiled training
    program as an argument (not baked into it as constants).
    """

    name: str
    init: Callable[[jax.Array], Any]
    train_loss: Callable[[Any, dict, jax.Array], jax.Array]
    evaluate: Callable[[Any, dict], dict[str, jax.Array]]
    data: dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    """The character-level language model and its data."""

    layers: int = 2
    d_model: int = 128
    num_heads: int = 4
    context: int = 64
    batch_size: int = 16
    validation_windows: int = 128  # evenly spaced windows of the held-out text


@dataclasses.dataclass(frozen=True)
class DigitsConfig:
    """The digits network and its minibatches."""

    channels: tuple[int, int] = (16, 32)
    batch_size: int = 64


def char_lm_workload(config: CharLMConfig = CharLMConfig()) -> Workload:
    """The byte-level transformer on the standard library's source (see the module doc)."""
    train_text, val_text = load_stdlib_text()
    window = config.context + 1  # the inputs and, shifted by one, the targets
    starts = np.linspace(0, len(val_text) - window, config.validation_windows).astype(np.int64)
    val_windows = np.stack([val_text[s : s + window] for s in starts])

    def model(key: jax.Array) -> CharTransformer:
        return CharTransformer(
            layers=config.layers,
            d_model=config.d_model,
            num_heads=config.num_heads,
            context=config.context,
            rngs=nnx.Rngs(key),
        )

    graphdef, _ = nnx.split(nnx.eval_shape(lambda: model(jax.random.key(0))))

    def init(key):
        return nnx.state(model(key), nnx.Param)

    def loss(params, windows):
        windows = windows.astype(jnp.int32)
        logits = nnx.merge(graphdef, params)(windows[:, :-1])
        return cross_entropy(logits, windows[:, 1:])

    def train_loss(params, data, key):
        text = data["train_text"]
        starts = jax.random.randint(key, (config.batch_size,), 0, text.shape[0] - window)
        windows = jax.vmap(lambda s: jax.lax.dynamic_slice(text, (s,), (window,)))(starts)
        return loss(params, windows)

    def evaluate(params, data):
        return {"loss": loss(params, data["val_windows"])}

    data = {"train_text": train_text, "val_windows": val_windows}
    return Workload("char_lm", init, train_loss, evaluate, data)


def digits_workload(config: DigitsConfig = DigitsConfig()) -> Workload:
    """The small CNN on scikit-learn's digits (see the module doc)."""

    def model(key: jax.Array) -> DigitsCNN:
        return DigitsCNN(channels=config.channels, rngs=nnx.Rngs(key))

    graphdef, _ = nnx.split(nnx.eval_shape(lambda: model(jax.random.key(0))))

    def init(key):
        return nnx.state(model(key), nnx.Param)

    def logits(params, images):
        return nnx.merge(graphdef, params)(images)

    def train_loss(params, data, key):
        rows = jax.random.randint(key, (config.batch_size,), 0, data["x_train"].shape[0])
        return cross_entropy(logits(params, data["x_train"][rows]), data["y_train"][rows])

    def evaluate(params, data):
        out = logits(params, data["x_val"])
        accuracy = jnp.mean(jnp.argmax(out, axis=-1) == data["y_val"])
        return {"loss": cross_entropy(out, data["y_val"]), "accuracy": accuracy}

    return Workload("digits", init, train_loss, evaluate, load_digits_split())


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "char_lm": char_lm_workload,
    "digits": digits_workload,
}

# ------------------------------------------------------------------------ training


def evaluation_params(opt_state: Any, params: Any) -> Any:
    """The params to evaluate: schedule-free's averaged point where the state has one."""
    is_schedule_free = lambda node: isinstance(node, gradtx.ScheduleFreeState)
    if any(is_schedule_free(node) for node in jax.tree.leaves(opt_state, is_leaf=is_schedule_free)):
        return gradtx.schedule_free_eval_params(opt_state, params)
    return params


def make_trainer(
    workload: Workload,
    make_tx: Callable[..., gradtx.GradientTransformation],
    *,
    steps: int,
    eval_every: int,
) -> Callable[..., dict[str, Any]]:
    """A compiled training run, called as ``trainer(hyperparams, seed)``.

    ``make_tx(**hyperparams)`` builds the optimizer inside the compiled step, so
    the hyperparameters are traced: every call with the same names reuses one
    compilation, whatever the values.

    The steps run in a Python loop of one jitted, donated step each, not in a
    ``lax.scan``: on XLA:CPU (JAX 0.10.2) the digits CNN's step ran about 60 times
    slower inside a scan than on its own (162 ms against 2.5 ms; the transformer's
    step did not slow down), most likely its convolutions.

    The first call compiles the step and the evaluation ahead of time and
    reports those seconds apart (``compile_seconds``; 0 in later calls), so the
    wall times of the curve count the steps and evaluations only.

    Args:
      workload: what to train (:func:`char_lm_workload`, :func:`digits_workload`).
      make_tx: maps keyword hyperparameters (JAX scalars) to a gradtx optimizer.
      steps: the number of optimizer steps, a multiple of ``eval_every``.
      eval_every: the validation metrics are computed every ``eval_every`` steps;
        a call may pass its own (``trainer(hyperparams, seed, eval_every=steps)``
        evaluates once, at the end, with the same compiled programs).

    Returns:
      ``trainer(hyperparams, seed, eval_every=None)``, which returns a dict:
      ``curve`` (the validation loss after steps ``curve_steps``),
      ``curve_seconds`` (the wall seconds from the first step to each of those
      evaluations, compilation excluded), ``compile_seconds``,
      ``final_val_loss``, ``train_loss`` (the mean minibatch loss of each
      segment of ``eval_every`` steps), and for the digits ``accuracy_curve``
      and ``final_val_accuracy``; all as Python floats and lists. Its
      attribute ``compile_seconds`` holds the seconds of the compilation.
    """
    check_eval_every(steps, eval_every)
    data = jax.device_put(workload.data)  # once, not at every step

    @jax.jit
    def init(params, hyperparams):
        return make_tx(**hyperparams).init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, hyperparams, key, data):
        loss, grads = jax.value_and_grad(workload.train_loss)(params, data, key)
        updates, opt_state = make_tx(**hyperparams).update(grads, opt_state, params)
        return gradtx.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def evaluate(params, opt_state, data):
        return workload.evaluate(evaluation_params(opt_state, params), data)

    compiled: dict[str, Any] = {}

    def compile_once(params, opt_state, hyperparams, key) -> float:
        if compiled:
            return 0.0
        start = time.perf_counter()
        compiled["step"] = train_step.lower(params, opt_state, hyperparams, key, data).compile()
        compiled["evaluate"] = evaluate.lower(params, opt_state, data).compile()
        trainer.compile_seconds = time.perf_counter() - start
        return trainer.compile_seconds

    def trainer(
        hyperparams: dict[str, float], seed: int, eval_every: int | None = None
    ) -> dict[str, Any]:
        every = eval_every or default_eval_every
        check_eval_every(steps, every)
        init_key, batch_key = jax.random.split(jax.random.key(seed))
        hyperparams = {name: jnp.float32(value) for name, value in hyperparams.items()}
        # Flax's initializers run eagerly: XLA would take seconds to compile them.
        params = workload.init(init_key)
        opt_state = init(params, hyperparams)
        keys = list(jax.random.split(batch_key, steps))
        compile_seconds = compile_once(params, opt_state, hyperparams, keys[0])
        step_fn, evaluate_fn = compiled["step"], compiled["evaluate"]
        jax.block_until_ready((params, opt_state, keys))
        losses, history, seconds = [], [], []
        start = time.perf_counter()
        for step in range(1, steps + 1):
            params, opt_state, loss = step_fn(params, opt_state, hyperparams, keys[step - 1], data)
            losses.append(loss)
            if step % every == 0:
                metrics = jax.block_until_ready(evaluate_fn(params, opt_state, data))
                seconds.append(time.perf_counter() - start)
                history.append({"train_loss": jnp.mean(jnp.stack(losses)), **metrics})
                losses = []
        history = jax.device_get(history)
        out = {
            "curve_steps": list(range(every, steps + 1, every)),
            "curve": [float(point["loss"]) for point in history],
            "curve_seconds": seconds,
            "compile_seconds": compile_seconds,
            "train_loss": [float(point["train_loss"]) for point in history],
        }
        out["final_val_loss"] = out["curve"][-1]
        if "accuracy" in history[0]:
            out["accuracy_curve"] = [float(point["accuracy"]) for point in history]
            out["final_val_accuracy"] = out["accuracy_curve"][-1]
        return out

    default_eval_every = eval_every
    trainer.compile_seconds = 0.0  # until the first call
    return trainer


def check_eval_every(steps: int, eval_every: int) -> None:
    if steps % eval_every:
        raise ValueError(f"steps ({steps}) must be a multiple of eval_every ({eval_every}).")


def train_char_lm(
    tx: gradtx.GradientTransformation,
    *,
    steps: int,
    seed: int,
    config: CharLMConfig = CharLMConfig(),
    eval_every: int | None = None,
) -> dict[str, Any]:
    """Trains the character-level transformer with ``tx``; its validation-loss curve.

    Args:
      tx: any gradtx (or Optax) optimizer; a schedule-free one is evaluated at
        its averaged point.
      steps: the number of optimizer steps (minibatches of
        ``config.batch_size`` windows of ``config.context`` bytes).
      seed: sets the initial weights and the minibatches.
      config: the model and data sizes.
      eval_every: validation every so many steps (default ``steps // 10``;
        ``steps`` must be a multiple of it).

    Returns:
      A dict: ``curve`` (validation loss in nats per character after each of
      ``curve_steps``), ``final_val_loss`` (the last point), ``train_loss``
      (mean minibatch loss between evaluations).
    """
    eval_every = eval_every or max(1, steps // 10)
    trainer = make_trainer(char_lm_workload(config), lambda: tx, steps=steps, eval_every=eval_every)
    return trainer({}, seed)


def train_digits_cnn(
    tx: gradtx.GradientTransformation,
    *,
    steps: int,
    seed: int,
    config: DigitsConfig = DigitsConfig(),
    eval_every: int | None = None,
) -> dict[str, Any]:
    """Trains the digits CNN with ``tx``; its validation loss and accuracy curves.

    Args:
      tx: any gradtx (or Optax) optimizer; a schedule-free one is evaluated at
        its averaged point.
      steps: the number of optimizer steps (minibatches of ``config.batch_size``
        digits drawn with replacement).
      seed: sets the initial weights and the minibatches.
      config: the network's channels and the batch size.
      eval_every: validation every so many steps (default ``steps // 10``;
        ``steps`` must be a multiple of it).

    Returns:
      A dict: ``curve`` (validation cross-entropy in nats after each of
      ``curve_steps``), ``final_val_loss``, ``accuracy_curve``,
      ``final_val_accuracy``, ``train_loss`` (mean minibatch loss between
      evaluations).
    """
    eval_every = eval_every or max(1, steps // 10)
    trainer = make_trainer(digits_workload(config), lambda: tx, steps=steps, eval_every=eval_every)
    return trainer({}, seed)


# ---------------------------------------------------------------------- optimizers

WARMUP_FRACTION = 0.05


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """How to build one optimizer for a run of ``steps`` steps, and what to search.

    ``build(steps, **hyperparams)`` returns the gradtx optimizer; ``space`` maps
    each hyperparameter name to its search range (``log_uniform``).
    """

    build: Callable[..., gradtx.GradientTransformation]
    space: dict[str, Any]
    note: str


def warmup_cosine(peak: Any, steps: int) -> gradtx.Schedule:
    """Linear warm-up from 0 over 5% of ``steps``, then a cosine decay to 0 at ``steps``."""
    return gradtx.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=max(1, round(WARMUP_FRACTION * steps)),
        decay_steps=steps,
    )


LEARNING_RATE_RANGE = log_uniform(1e-4, 1e-2)
WEIGHT_DECAY_RANGE = log_uniform(1e-4, 1e-1)

OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adamw": OptimizerSpec(
        lambda steps, learning_rate, weight_decay: gradtx.adamw(
            warmup_cosine(learning_rate, steps), weight_decay=weight_decay
        ),
        {"learning_rate": LEARNING_RATE_RANGE, "weight_decay": WEIGHT_DECAY_RANGE},
        "b1 0.9, b2 0.999",
    ),
    "lion": OptimizerSpec(
        lambda steps, learning_rate, weight_decay: gradtx.lion(
            warmup_cosine(learning_rate, steps), weight_decay=weight_decay
        ),
        # Lion's sign steps are larger: a rate 3-10x smaller, a decay 3-10x larger.
        {"learning_rate": log_uniform(1e-5, 1e-3), "weight_decay": log_uniform(1e-3, 1.0)},
        "b1 0.9, b2 0.99",
    ),
    "adafactor": OptimizerSpec(
        lambda steps, learning_rate: gradtx.adafactor(warmup_cosine(learning_rate, steps)),
        # Relative steps: the rate multiplies each leaf's RMS (at least 1e-3).
        {"learning_rate": log_uniform(1e-3, 1e-1)},
        "relative step (multiply_by_parameter_scale), factored, no momentum; "
        "its weight_decay_rate is not scaled by the rate, so it is left off",
    ),
    "muon": OptimizerSpec(
        lambda steps, learning_rate, weight_decay: gradtx.muon(
            warmup_cosine(learning_rate, steps),
            weight_decay=weight_decay,
            adam_weight_decay=weight_decay,
            consistent_rms=0.2,
        ),
        {"learning_rate": LEARNING_RATE_RANGE, "weight_decay": WEIGHT_DECAY_RANGE},
        "2-D leaves Muon, the others (biases, norms, conv kernels) AdamW at the same rate; "
        "consistent_rms 0.2 gives Muon's steps AdamW's RMS",
    ),
    "soap": OptimizerSpec(
        lambda steps, learning_rate, weight_decay: gradtx.soap(
            warmup_cosine(learning_rate, steps), weight_decay=weight_decay
        ),
        {"learning_rate": LEARNING_RATE_RANGE, "weight_decay": WEIGHT_DECAY_RANGE},
        "b1 0.95, b2 0.95, eigenbasis every 10 steps",
    ),
    "shampoo": OptimizerSpec(
        lambda steps, learning_rate, weight_decay: gradtx.shampoo(
            warmup_cosine(learning_rate, steps),
            weight_decay=weight_decay,
            b2=0.999,
            grafting="adam",
            block_size=128,
            precondition_frequency=10,
        ),
        {"learning_rate": LEARNING_RATE_RANGE, "weight_decay": WEIGHT_DECAY_RANGE},
        "Adam grafting, b1 0.9, b2 0.999, blocks of 128, roots every 10 steps",
    ),
    "schedule_free_adamw": OptimizerSpec(
        lambda steps, learning_rate, weight_decay: gradtx.schedule_free_adamw(
            learning_rate,
            warmup_steps=max(1, round(WARMUP_FRACTION * steps)),
            weight_decay=weight_decay,
        ),
        {"learning_rate": log_uniform(3e-4, 3e-2), "weight_decay": WEIGHT_DECAY_RANGE},
        "constant rate after its own 5% warm-up; evaluated at the averaged point",
    ),
    "prodigy": OptimizerSpec(
        lambda steps, weight_decay: gradtx.prodigy(
            warmup_cosine(1.0, steps), weight_decay=weight_decay, safeguard_warmup=True
        ),
        {"weight_decay": WEIGHT_DECAY_RANGE},
        "learning rate 1.0 on the warm-up + cosine schedule; safeguard_warmup",
    ),
}

# ------------------------------------------------------------------------- budgets


@dataclasses.dataclass(frozen=True)
class Budget:
    """The model sizes, steps and trials of one run of the comparison.

    The search has two stages, the same for every optimizer: ``trials``
    settings drawn from the optimizer's ranges, then ``refine_trials`` drawn
    from the ranges narrowed (``gradtx.training.refine``) around the
    ``refine_top_k`` best of those; the best of all the trials wins.
    """

    char_lm: CharLMConfig
    digits: DigitsConfig
    steps: dict[str, int]  # workload -> steps of each final run
    search_steps: dict[str, int]  # workload -> steps of each search trial
    eval_every: dict[str, int]  # workload -> validation every so many steps (final runs)
    trials: int
    refine_trials: int = 0
    refine_top_k: int = 3
    seeds: tuple[int, ...] = (1, 2, 3)
    search_seed: int = 0


FULL = Budget(
    char_lm=CharLMConfig(),
    digits=DigitsConfig(),
    steps={"char_lm": 250, "digits": 600},
    search_steps={"char_lm": 50, "digits": 200},
    eval_every={"char_lm": 25, "digits": 25},
    trials=6,
    refine_trials=4,
)
# For an accelerator: a 6-layer, d_model 384 language model (10,942,720 params)
# on windows of 256 bytes, a wider CNN, 8x the language model's steps and
# 18 search trials (6 + 4 in the default). On 2 CPU cores one language-model
# step of it took about 7 s.
LARGE = Budget(
    char_lm=CharLMConfig(
        layers=6, d_model=384, num_heads=6, context=256, batch_size=64, validation_windows=256
    ),
    digits=DigitsConfig(channels=(32, 64), batch_size=128),
    steps={"char_lm": 2000, "digits": 1500},
    search_steps={"char_lm": 400, "digits": 500},
    eval_every={"char_lm": 100, "digits": 50},
    trials=12,
    refine_trials=6,
)
QUICK = Budget(
    char_lm=CharLMConfig(
        layers=1, d_model=32, num_heads=2, context=32, batch_size=8, validation_windows=32
    ),
    digits=DigitsConfig(channels=(4, 8), batch_size=32),
    steps={"char_lm": 20, "digits": 20},
    search_steps={"char_lm": 20, "digits": 20},  # the same program: one compilation
    eval_every={"char_lm": 5, "digits": 5},
    trials=2,
    refine_trials=1,
)

# ---------------------------------------------------------------------- comparing


def staged_search(
    objective: Callable[[dict[str, float]], float], space: dict[str, Any], budget: Budget
) -> dict[str, Any]:
    """``budget.trials`` random settings, then ``budget.refine_trials`` in the refined ranges.

    Both stages are :func:`gradtx.training.random_search` (keys ``search_seed``
    and ``search_seed + 1``). Returns the best setting, every trial (with its
    stage), and the dimensions whose best value lies in the outer 10% of the
    original range (log scale), as ``random_search`` flags them.
    """
    with warnings.catch_warnings():  # a best value at a border is recorded, not printed
        warnings.simplefilter("ignore", SearchBorderWarning)
        stages = [random_search(objective, space, budget.trials, key=budget.search_seed)]
        if budget.refine_trials and not all(math.isnan(t.value) for t in stages[0].trials):
            narrowed = refine(space, stages[0], top_k=budget.refine_top_k)
            stages.append(
                random_search(objective, narrowed, budget.refine_trials, key=budget.search_seed + 1)
            )
    trials = [
        {**trial.hyperparams, "final_val_loss": trial.value, "stage": stage}
        for stage, result in enumerate(stages)
        for trial in result.trials
    ]
    ranked = [math.inf if math.isnan(t["final_val_loss"]) else t["final_val_loss"] for t in trials]
    best = {name: trials[int(np.argmin(ranked))][name] for name in space}
    at_border = [
        name
        for name, dim in space.items()
        if not 0.1 <= dim.position(best[name]) <= 0.9  # random_search's border_fraction
    ]
    refined = (
        {name: [dim.low, dim.high] for name, dim in narrowed.items()} if len(stages) > 1 else None
    )
    return {"best": best, "trials": trials, "at_border": at_border, "refined_space": refined}


def compare(
    workload: Workload, optimizer: str, budget: Budget, log: Callable[[str], None]
) -> dict[str, Any]:
    """Searches one optimizer's hyperparameters on ``workload``, then trains the best per seed.

    The search trials evaluate once, at their last step; the final runs every
    ``budget.eval_every`` steps, timed from their first step (compilation apart).
    """
    spec = OPTIMIZERS[optimizer]
    name = workload.name

    trainers: dict[int, Callable] = {}

    def trainer(steps: int) -> Callable:  # one compilation per budget (the two may agree)
        if steps not in trainers:
            make_tx = lambda **hyperparams: spec.build(steps, **hyperparams)
            trainers[steps] = make_trainer(
                workload, make_tx, steps=steps, eval_every=budget.eval_every[name]
            )
        return trainers[steps]

    start = time.perf_counter()
    search_steps = budget.search_steps[name]
    search_run = trainer(search_steps)
    objective = lambda hyperparams: search_run(
        hyperparams, budget.search_seed, eval_every=search_steps
    )["final_val_loss"]
    search = staged_search(objective, spec.space, budget)
    searched = time.perf_counter()
    best = search["best"]
    log(f"{name} / {optimizer}: best {format_hyperparams(best)} (search {searched - start:.0f} s)")

    final_run = trainer(budget.steps[name])
    runs = [final_run(best, seed) for seed in budget.seeds]
    finals = np.array([run["final_val_loss"] for run in runs])
    result = {
        "hyperparams": best,
        "search": {**search, "seconds": searched - start},
        "runs": runs,
        "final_val_loss_mean": float(finals.mean()),
        "final_val_loss_std": float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,
        "mean_curve": np.mean([run["curve"] for run in runs], axis=0).tolist(),
        "mean_curve_seconds": np.mean([run["curve_seconds"] for run in runs], axis=0).tolist(),
        # The search's and the final runs' programs (one if their steps agree).
        "compile_seconds": sum(t.compile_seconds for t in trainers.values()),
        "seconds": time.perf_counter() - start,
    }
    del result["search"]["best"]
    if "final_val_accuracy" in runs[0]:
        accuracies = np.array([run["final_val_accuracy"] for run in runs])
        result["final_val_accuracy_mean"] = float(accuracies.mean())
        result["final_val_accuracy_std"] = (
            float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0
        )
    log(
        f"{name} / {optimizer}: {result['final_val_loss_mean']:.4f} "
        f"± {result['final_val_loss_std']:.4f}, {result['mean_curve_seconds'][-1]:.1f} s "
        f"per run ({result['seconds']:.0f} s in all)"
    )
    return result


def steps_to_reference(result: dict[str, Any], name: str, reference: str = "adamw") -> None:
    """Adds to each cell of workload ``name`` when it reaches ``reference``'s final loss.

    The target is the reference's seed-mean final validation loss; a method
    reaches it at the first evaluation where its own seed-mean curve is at or
    below it: ``steps_to_reference`` is that evaluation's step and
    ``seconds_to_reference`` the seed-mean wall seconds to it (compilation
    excluded); both ``None`` when the curve never gets there.
    """
    cells = result["results"].get(name, {})
    if reference not in cells:
        return
    target = cells[reference]["final_val_loss_mean"]
    for cell in cells.values():
        steps = cell["runs"][0]["curve_steps"]
        hits = [i for i, loss in enumerate(cell["mean_curve"]) if loss <= target]
        cell["reference_loss"] = target
        cell["steps_to_reference"] = steps[hits[0]] if hits else None
        cell["seconds_to_reference"] = cell["mean_curve_seconds"][hits[0]] if hits else None


def format_hyperparams(hyperparams: dict[str, float]) -> str:
    short = {"learning_rate": "lr", "weight_decay": "wd"}
    return ", ".join(f"{short.get(k, k)} {v:.2g}" for k, v in hyperparams.items())


# ------------------------------------------------------------------------ reporting


def format_seconds(seconds: float) -> str:
    return f"{seconds:.1f}" if seconds >= 10 else f"{seconds:.2f}"


def markdown(result: dict[str, Any]) -> str:
    """A table per workload, a row per optimizer: the final validation loss (mean ±
    standard deviation over the seeds), the digits' accuracy, the setting found, the
    steps and wall seconds to reach AdamW's final loss, and the wall seconds of a run."""
    tables = []
    for name in result["workloads"]:
        header = ["optimizer", "val loss"] + (["val accuracy"] if name == "digits" else [])
        header += ["setting", "steps to adamw's loss", "s to adamw's loss", "s per run"]
        rule = ["---", "---:"] + (["---:"] if name == "digits" else []) + ["---"] + ["---:"] * 3
        lines = [
            f"**{name}**",
            "",
            "| " + " | ".join(header) + " |",
            "| " + " | ".join(rule) + " |",
        ]
        for optimizer in result["optimizers"]:
            cell = result["results"].get(name, {}).get(optimizer)
            if cell is None:  # not run (yet)
                lines.append(
                    "| " + " | ".join([f"`{optimizer}`"] + [""] * (len(header) - 1)) + " |"
                )
                continue
            row = [
                f"`{optimizer}`",
                f"{cell['final_val_loss_mean']:.3f} ± {cell['final_val_loss_std']:.3f}",
            ]
            if name == "digits":
                mean, std = cell["final_val_accuracy_mean"], cell["final_val_accuracy_std"]
                row.append(f"{100 * mean:.1f}% ± {100 * std:.1f}")
            border = " (at a border)" if cell["search"]["at_border"] else ""
            row.append(format_hyperparams(cell["hyperparams"]) + border)
            reached = cell.get("steps_to_reference")
            row.append("not reached" if reached is None else str(reached))
            seconds = cell.get("seconds_to_reference")
            row.append("not reached" if seconds is None else format_seconds(seconds))
            row.append(format_seconds(cell["mean_curve_seconds"][-1]))
            lines.append("| " + " | ".join(row) + " |")
        tables.append("\n".join(lines) + "\n")
    return "\n".join(tables)


def plot_curves(result: dict[str, Any], path: Path) -> None:
    """Validation loss against steps (top row) and wall seconds (bottom row), one column
    per workload: the mean over seeds per optimizer, the band from min to max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = result["workloads"]
    fig, axes = plt.subplots(2, len(workloads), figsize=(6 * len(workloads), 8.5), squeeze=False)
    for column, name in enumerate(workloads):
        cells = result["results"].get(name, {})
        shown = []  # the curves after their first quarter set the y range
        for optimizer, cell in cells.items():
            curves = np.array([run["curve"] for run in cell["runs"]])
            mean = curves.mean(axis=0)
            low, high = curves.min(axis=0), curves.max(axis=0)
            color = f"C{result['optimizers'].index(optimizer)}"  # the same in every panel
            xs = (cell["runs"][0]["curve_steps"], cell["mean_curve_seconds"])
            for row, x in enumerate(xs):
                axes[row, column].plot(x, mean, label=optimizer, color=color)
                axes[row, column].fill_between(x, low, high, alpha=0.15, color=color)
            shown += [v for v in mean[len(mean) // 4 :] if math.isfinite(v)]
        unit = "nats / char" if name == "char_lm" else "nats"
        labels = ("step", "wall seconds of a run (compilation excluded)")
        for row, xlabel in enumerate(labels):
            ax = axes[row, column]
            if shown:
                pad = 0.05 * (max(shown) - min(shown)) + 1e-3
                ax.set_ylim(min(shown) - pad, max(shown) + pad)
            if "adamw" in cells:
                ax.axhline(cells["adamw"]["final_val_loss_mean"], color="0.5", lw=0.8, ls=":")
            ax.set(title=name, xlabel=xlabel, ylabel=f"validation loss ({unit})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(
        "gradtx optimizers: mean validation loss over 3 seeds (band: min to max; "
        "dotted: AdamW's final loss)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def parse_list(value: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}"
        )
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny models and budgets (< 2 min)")
    size.add_argument(
        "--large",
        action="store_true",
        help="the larger configuration, for a GPU or TPU (writes workloads_large.*)",
    )
    parser.add_argument(
        "--optimizers",
        default=",".join(OPTIMIZERS),
        type=lambda v: parse_list(v, list(OPTIMIZERS), "optimizer"),
        help=f"comma-separated subset of {','.join(OPTIMIZERS)}",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        type=lambda v: parse_list(v, list(WORKLOADS), "workload"),
        help=f"comma-separated subset of {','.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--trials", type=int, default=0, help="first-stage search trials (default 6; 2 quick)"
    )
    parser.add_argument(
        "--refine-trials",
        type=int,
        default=-1,
        help="second-stage trials in the refined ranges (default 4; 1 quick; 0: none)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="folder for workloads.json, .md and .png (workloads_quick.* with --quick)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    budget = QUICK if args.quick else LARGE if args.large else FULL
    if args.trials:
        budget = dataclasses.replace(budget, trials=args.trials)
    if args.refine_trials >= 0:
        budget = dataclasses.replace(budget, refine_trials=args.refine_trials)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (
        "workloads_quick" if args.quick else "workloads_large" if args.large else "workloads"
    )
    log = lambda message: print(message, file=sys.stderr, flush=True)

    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "cpu_count": os.cpu_count(),
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "load_average_at_start": list(os.getloadavg()),
        },
        "budget": dataclasses.asdict(budget),
        "optimizers": args.optimizers,
        "settings": {name: OPTIMIZERS[name].note for name in args.optimizers},
        "search_spaces": {
            name: {k: [d.low, d.high] for k, d in OPTIMIZERS[name].space.items()}
            for name in args.optimizers
        },
        "workloads": args.workloads,
        "results": {},
    }
    start = time.perf_counter()
    for name in args.workloads:
        workload = WORKLOADS[name](getattr(budget, name))
        result["results"][name] = {}
        for optimizer in args.optimizers:
            result["results"][name][optimizer] = compare(workload, optimizer, budget, log)
            steps_to_reference(result, name)
            result["seconds"] = time.perf_counter() - start
            # After every cell: a stopped run keeps what it measured.
            stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
            stem.with_suffix(".md").write_text(markdown(result))
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    plot_curves(result, stem.with_suffix(".png"))
    print(json.dumps(result, indent=2) if args.json else table)
    log(f"wrote {stem}.json, .md and .png in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
