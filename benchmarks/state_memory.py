"""Low-memory optimizer state: its bytes, its step time, its error, its training curves.

Four parts, each on its own configurations (one line each in the tables below):

1. **Bytes per parameter** (``CONFIGS``): for each configuration and parameter
   tree, ``jax.jit(tx.init).lower(params).compile().memory_analysis()
   .output_size_in_bytes`` (what XLA allocates for the state, scalar counters and
   PRNG keys included) over the number of parameters. Trees: a float32 MLP
   (784-512-512-10, 0.67M parameters) and a small Transformer-like tree
   (embedding, two blocks of q/k/v/o projections, LayerNorm scales and a 4x MLP,
   a final norm and an output head, 2.09M parameters) whose leaf names follow the
   usual Flax ones so Adam-mini's default partition applies. A configuration with
   ``bfloat16`` params gets both trees in bfloat16.
2. **Step time** (``STEP_CONFIGS``): a jitted, donated step (``update`` then
   ``apply_updates``) per configuration on the three large trees of
   ``benchmarks/step_time.py`` (one 16M-float leaf, its 8.5M-float MLP, its
   25M-float 12-layer transformer), built and timed with that script's own
   helpers: the configurations alternate in blocks of steps, the order reversed
   every round, every step timed to its result; median over the timed steps, and
   the ratio to the float32 baseline (``adamw``; ``lion`` for ``lion_8bit``).
3. **Moment error** (``ERROR_CONFIGS``): ``adamw`` and its 8-bit versions
   (``v``'s map without 0, the default, and with 0, bitsandbytes',
   ``nu_map_has_zero=True``) and 4-bit versions (``v`` in blocks,
   ``nu_normalization="block"``, and normalised rank-1, the default) on one
   gradient stream: an MLP (256-512-512-10) regressing a fixed random teacher,
   the gradient of every step taken at the float32 run's params and given to
   all five. At
   steps 10, 100 and 1000: ``||m_q - m|| / ||m||`` and the same for ``v`` (the
   quantized moments dequantized; over the leaves that are quantized, i.e. the
   kernels), and the parameter drift
   ``||p_q - p|| / ||p - p_0||`` (each run applies its own updates).
4. **Training curves** (``TRAIN_CONFIGS``), three seeds each, one learning rate
   for every configuration: an MLP on scikit-learn's bundled digits, and the
   character-level transformer LM of ``benchmarks/workloads.py`` (Flax NNX, its
   default ``CharLMConfig``; its model, data and train/validation split are
   imported from there: ``workloads.char_lm_workload``) on the standard
   library's own source read from disk (nothing is downloaded). The final
   validation loss, mean and sample std over the seeds, and whether the mean is
   within the float32 run's seed spread: ``|mean - mean_f32| <= 2 * std_f32``.
   The bfloat16-params configurations keep the params (and so AdamW's moments)
   in bfloat16; the forward pass computes in float32 in every run.

Run: ``python benchmarks/state_memory.py [--quick] [--parts bytes,step,error,train]
[--char-lm-lr LR] [--train-tasks digits,char-lm] [--train-configs 'NAME;NAME']
[--json PATH]``; prints markdown tables. ``--quick``: tiny sizes and few steps (a
smoke test: about 2 min on 2 shared CPU cores; ``--quick --parts train`` alone
about 2 min too, most of it compilation).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gradtx

# step_time.py is a script beside this one: its trees and timing helpers are reused.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_time  # noqa: E402
import workloads  # noqa: E402

F32, BF16 = jnp.float32, jnp.bfloat16
HEADS = 4

# name -> (the transformation, the params' dtype)
CONFIGS: dict[str, tuple[Callable[[], Any], Any]] = {
    "adam": (lambda: gradtx.adam(1e-3), F32),
    "adamw": (lambda: gradtx.adamw(1e-3), F32),
    "adamw, mu and nu bfloat16": (
        lambda: gradtx.adamw(1e-3, mu_dtype=BF16, nu_dtype=BF16),
        F32,
    ),
    "adam_mini": (lambda: gradtx.adam_mini(1e-3, num_heads=HEADS), F32),
    "adamw + stochastic_rounding, bfloat16 params": (
        lambda: gradtx.chain(gradtx.adamw(1e-3), gradtx.stochastic_rounding(key=0)),
        BF16,
    ),
    "adamw + kahan_summation, bfloat16 params": (
        lambda: gradtx.chain(gradtx.adamw(1e-3), gradtx.kahan_summation()),
        BF16,
    ),
    "adamw_8bit": (lambda: gradtx.adamw_8bit(1e-3), F32),
    # v in blocks, as adamw_4bit was until rank-1 (its default now, the next row).
    "adamw_4bit": (lambda: gradtx.adamw_4bit(1e-3, nu_normalization="block"), F32),
    "adamw_4bit, nu rank-1": (lambda: gradtx.adamw_4bit(1e-3, nu_normalization="rank1"), F32),
    "quantize_state(adam), 8 bits, block 2048": (
        lambda: gradtx.quantize_state(gradtx.adam(1e-3), bits=8, block_size=2048),
        F32,
    ),
    "lion": (lambda: gradtx.lion(1e-4), F32),
    "lion_8bit": (lambda: gradtx.lion_8bit(1e-4), F32),
}


def mlp_params(dtype, widths=(784, 512, 512, 10)):
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        params[f"dense_{i}"] = {
            "kernel": jax.ShapeDtypeStruct((fan_in, fan_out), dtype),
            "bias": jax.ShapeDtypeStruct((fan_out,), dtype),
        }
    return params


def transformer_params(dtype, dim=256, vocab=1000, layers=2):
    def leaf(*shape):
        return jax.ShapeDtypeStruct(shape, dtype)

    def block():
        attn = {k: {"kernel": leaf(dim, dim)} for k in ("q_proj", "k_proj", "v_proj", "o_proj")}
        mlp = {
            "fc1": {"kernel": leaf(dim, 4 * dim), "bias": leaf(4 * dim)},
            "fc2": {"kernel": leaf(4 * dim, dim), "bias": leaf(dim)},
        }
        norms = {"ln_1": {"scale": leaf(dim)}, "ln_2": {"scale": leaf(dim)}}
        return {"attn": attn, **norms, "mlp": mlp}

    return {
        "embed": {"embedding": leaf(vocab, dim)},
        **{f"layers_{i}": block() for i in range(layers)},
        "final_norm": {"scale": leaf(dim)},
        "lm_head": {"kernel": leaf(dim, vocab)},
    }


def trees(quick: bool) -> dict[str, Callable[[Any], Any]]:
    if quick:
        return {
            "MLP": lambda d: mlp_params(d, (784, 64, 10)),
            "Transformer": lambda d: transformer_params(d, dim=64, vocab=100, layers=1),
        }
    return {"MLP": mlp_params, "Transformer": transformer_params}


def count(params) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def state_bytes(tx, params) -> int:
    compiled = jax.jit(tx.init).lower(params).compile()
    return int(compiled.memory_analysis().output_size_in_bytes)


def measure(quick: bool = False) -> dict[str, Any]:
    tree_fns = trees(quick)
    out: dict[str, Any] = {"params": {}, "bytes_per_param": {}}
    for tree_name, make_tree in tree_fns.items():
        out["params"][tree_name] = count(make_tree(F32))
    for name, (make, dtype) in CONFIGS.items():
        row = {}
        for tree_name, make_tree in tree_fns.items():
            params = make_tree(dtype)
            row[tree_name] = state_bytes(make(), params) / count(params)
        out["bytes_per_param"][name] = row
    return out


# ---------------------------------------------------------------------- 2. step time

# name -> (the transformation, the baseline its time is divided by)
STEP_CONFIGS: dict[str, tuple[Callable[[], Any], str]] = {
    "adamw": (lambda: gradtx.adamw(1e-3), "adamw"),
    "adamw_8bit": (lambda: gradtx.adamw_8bit(1e-3), "adamw"),
    "adamw_4bit": (lambda: gradtx.adamw_4bit(1e-3, nu_normalization="block"), "adamw"),
    "lion": (lambda: gradtx.lion(1e-4), "lion"),
    "lion_8bit": (lambda: gradtx.lion_8bit(1e-4), "lion"),
}
STEP_TREES = ("one_leaf", "mlp", "transformer")


def step_sizes(quick: bool) -> step_time.Sizes:
    """step_time.py's tree sizes; fewer timed steps than its own run (six configurations)."""
    if quick:
        return dataclasses.replace(step_time.QUICK, warmup=1, rounds=2, block=2)
    return dataclasses.replace(step_time.FULL, warmup=1, rounds=4, block=2)


def measure_step_time(quick: bool) -> dict[str, Any]:
    sizes = step_sizes(quick)
    out: dict[str, Any] = {"sizes": dataclasses.asdict(sizes), "trees": {}}
    for tree in STEP_TREES:
        shapes = step_time.TREES[tree](sizes)
        params = step_time.random_tree(shapes, jax.random.key(0), 0.02)
        grads = step_time.random_tree(shapes, jax.random.key(1), 1e-3)
        runs, temp_bytes = [], {}
        for name, (make, _) in STEP_CONFIGS.items():
            contender = step_time.Contender(name, make(), gradtx.apply_updates)
            lib_params, state = contender.init(params)
            compiled, info = step_time.compile_step(contender, lib_params, state, grads)
            temp_bytes[name] = info["temp_bytes"]
            runs.append(step_time.Run(name, compiled, lib_params, state, grads))
        seconds = step_time.time_interleaved(runs, sizes, "step")
        del runs
        rows = {}
        for name, times in seconds.items():
            summary = step_time.summarize(times)
            summary.pop("steps_ms")
            rows[name] = summary
        for name, (_, baseline) in STEP_CONFIGS.items():
            rows[name]["temp_bytes"] = temp_bytes[name]  # XLA's temporaries in the step
            rows[name]["baseline"] = baseline
            rows[name]["ratio"] = rows[name]["median_ms"] / rows[baseline]["median_ms"]
        out["trees"][tree] = {"floats": step_time.nfloats(params), "configs": rows}
        print(f"step time: {tree} done", file=sys.stderr, flush=True)
    return out


# -------------------------------------------------------------------- 3. moment error

ERROR_CONFIGS: dict[str, Callable[[float], Any]] = {
    "adamw": lambda lr: gradtx.adamw(lr),
    "adamw_8bit": lambda lr: gradtx.adamw_8bit(lr),
    "adamw_8bit, nu map with 0": lambda lr: gradtx.adamw_8bit(lr, nu_map_has_zero=True),
    "adamw_4bit": lambda lr: gradtx.adamw_4bit(lr, nu_normalization="block"),
    "adamw_4bit, nu rank-1": lambda lr: gradtx.adamw_4bit(lr, nu_normalization="rank1"),
}
ERROR_STEPS = (10, 100, 1000)


def _maps(bits: int, has_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(signed, non-negative) maps, as documented in :func:`gradtx.quantize_state`."""
    if bits == 8:
        return gradtx.dynamic_map(signed=True), gradtx.dynamic_map(signed=False, zero=has_zero)
    signed = gradtx.dynamic_map(signed=True, total_bits=4, max_exponent_bits=3)
    return signed, gradtx.zero_free_linear_map(4)


def dequantized(q: Any, like: jax.Array, code: np.ndarray, bits: int, block_size: int):
    """A :class:`gradtx.QuantizedArray` back in float32 (4-bit codes: high half first;
    a tuple of scales is the rank-1 layout)."""
    codes = q.codes
    if bits == 4:
        pairs = jnp.stack([codes >> 4, codes & 15], axis=-1)
        codes = jnp.reshape(pairs, codes.shape[:-1] + (-1,))[..., : like.shape[-1]]
    if isinstance(q.scales, tuple):
        return gradtx.dequantize_rank1(codes, q.scales, code, jnp.float32)
    return gradtx.dequantize_blockwise(codes, q.scales, code, block_size, jnp.float32)


def mlp_init(key: jax.Array, widths: tuple[int, ...], dtype=jnp.float32) -> dict:
    params = {}
    keys = jax.random.split(key, len(widths) - 1)
    for i, (k, fan_in, fan_out) in enumerate(zip(keys, widths[:-1], widths[1:], strict=True)):
        params[f"dense_{i}"] = {
            "kernel": (jax.random.normal(k, (fan_in, fan_out)) / math.sqrt(fan_in)).astype(dtype),
            "bias": jnp.zeros((fan_out,), dtype),
        }
    return params


def mlp_apply(params: dict, x: jax.Array) -> jax.Array:
    layers = [params[k] for k in sorted(params)]
    for layer in layers[:-1]:
        x = jax.nn.relu(x @ layer["kernel"].astype(jnp.float32) + layer["bias"])
    return x @ layers[-1]["kernel"].astype(jnp.float32) + layers[-1]["bias"]


def measure_moment_error(quick: bool) -> dict[str, Any]:
    widths = (64, 128, 128, 10) if quick else (256, 512, 512, 10)
    checkpoints = (10, 100) if quick else ERROR_STEPS
    lr, batch = 1e-3, 64
    key_params, key_teacher, key_data = jax.random.split(jax.random.key(0), 3)
    params0 = mlp_init(key_params, widths)
    teacher = mlp_init(key_teacher, widths)
    txs = {name: make(lr) for name, make in ERROR_CONFIGS.items()}
    # (bits, the default block_size, whether v's map holds 0)
    bits = {
        "adamw_8bit": (8, 256, False),
        "adamw_8bit, nu map with 0": (8, 256, True),
        "adamw_4bit": (4, 128, False),
        "adamw_4bit, nu rank-1": (4, 128, False),
    }

    def loss(p, x):
        return jnp.mean((mlp_apply(p, x) - mlp_apply(teacher, x)) ** 2)

    def metrics(params, states):
        ref_mu, ref_nu = states["adamw"][0].mu, states["adamw"][0].nu
        ref_p = jax.tree.leaves(params["adamw"])
        out = {}
        for name, (b, block_size, has_zero) in bits.items():
            signed, nonnegative = _maps(b, has_zero)
            mu, nu = states[name][0].mu, states[name][0].nu
            sums = {"mu": [0.0, 0.0], "nu": [0.0, 0.0]}
            for field, q_tree, ref_tree, code in (
                ("mu", mu, ref_mu, signed),
                ("nu", nu, ref_nu, nonnegative),
            ):
                is_q = lambda x: isinstance(x, gradtx.QuantizedArray)
                for q, ref in zip(
                    jax.tree.leaves(q_tree, is_leaf=is_q), jax.tree.leaves(ref_tree), strict=True
                ):
                    if is_q(q):  # float32 leaves (under min_size) are the reference's exactly
                        deq = dequantized(q, ref, code, b, block_size)
                        sums[field][0] += jnp.sum((deq - ref) ** 2)
                        sums[field][1] += jnp.sum(ref**2)
            drift = sum(
                jnp.sum((a - r) ** 2)
                for a, r in zip(jax.tree.leaves(params[name]), ref_p, strict=True)
            )
            moved = sum(
                jnp.sum((r - a0) ** 2)
                for r, a0 in zip(ref_p, jax.tree.leaves(params0), strict=True)
            )
            out[name] = {
                "mu": jnp.sqrt(sums["mu"][0] / sums["mu"][1]),
                "nu": jnp.sqrt(sums["nu"][0] / sums["nu"][1]),
                "param_drift": jnp.sqrt(drift / moved),
            }
        return out

    @jax.jit
    def run(params, states):
        def step(carry, t):
            params, states = carry
            x = jax.random.normal(jax.random.fold_in(key_data, t), (batch, widths[0]))
            g = jax.grad(loss)(params["adamw"], x)  # one gradient stream, the float32 run's
            new_params, new_states = {}, {}
            for name, tx in txs.items():
                updates, new_states[name] = tx.update(g, states[name], params[name])
                new_params[name] = gradtx.apply_updates(params[name], updates)
            carry = (new_params, new_states)
            return carry, metrics(*carry)

        _, per_step = jax.lax.scan(step, (params, states), jnp.arange(checkpoints[-1]))
        return per_step

    params = {name: params0 for name in txs}
    states = {name: tx.init(params0) for name, tx in txs.items()}
    per_step = jax.device_get(run(params, states))
    return {
        "widths": list(widths),
        "learning_rate": lr,
        "steps": {
            name: {str(s): {k: float(v[s - 1]) for k, v in row.items()} for s in checkpoints}
            for name, row in per_step.items()
        },
    }


# ------------------------------------------------------------------ 4. training curves


def unnamed_matrices_per_neuron(path: str, shape: tuple[int, ...]) -> Any:
    """``gradtx.adam_mini_partition``, with every matrix that none of its name rules
    matches given one second moment per output neuron instead of one for the whole
    matrix. The two tasks' layers are named ``qkv``, ``out``, ``head`` and ``dense``,
    none of the authors' names; Zhang et al. (2024) put the value, attention-output,
    MLP and output layers per output neuron, and the query and key per head (here
    within the fused ``qkv``, per neuron too)."""
    layout = gradtx.adam_mini_partition(path, shape)
    return (-1,) if layout == "whole" and len(shape) >= 2 else layout


# name -> (make(learning_rate, key, num_heads), the params' dtype)
TRAIN_CONFIGS: dict[str, tuple[Callable[[float, jax.Array, int], Any], Any]] = {
    "adamw": (lambda lr, key, heads: gradtx.adamw(lr), F32),
    "adamw, mu and nu bfloat16": (
        lambda lr, key, heads: gradtx.adamw(lr, mu_dtype=BF16, nu_dtype=BF16),
        F32,
    ),
    "adamw_8bit": (lambda lr, key, heads: gradtx.adamw_8bit(lr), F32),
    "adamw_4bit": (lambda lr, key, heads: gradtx.adamw_4bit(lr), F32),
    "adam_mini": (
        lambda lr, key, heads: gradtx.adam_mini(lr, weight_decay=1e-4, num_heads=heads),
        F32,
    ),
    "adam_mini, unnamed matrices per output neuron": (
        lambda lr, key, heads: gradtx.adam_mini(
            lr, weight_decay=1e-4, num_heads=heads, partition=unnamed_matrices_per_neuron
        ),
        F32,
    ),
    "adamw, bfloat16 params (no compensation)": (lambda lr, key, heads: gradtx.adamw(lr), BF16),
    "adamw + stochastic_rounding, bfloat16 params": (
        lambda lr, key, heads: gradtx.chain(gradtx.adamw(lr), gradtx.stochastic_rounding(key=key)),
        BF16,
    ),
    "adamw + kahan_summation, bfloat16 params": (
        lambda lr, key, heads: gradtx.chain(gradtx.adamw(lr), gradtx.kahan_summation()),
        BF16,
    ),
}
SEEDS = (0, 1, 2)


class Task(NamedTuple):
    """A model, its data, and how long to train it (the shape of ``workloads.Workload``)."""

    name: str
    init: Callable[[jax.Array], Any]  # key -> float32 params (runs eagerly)
    train_loss: Callable[[Any, dict, jax.Array], jax.Array]  # (params, data, key) -> minibatch loss
    val_loss: Callable[[Any, dict], jax.Array]  # (params, data) -> validation loss
    data: dict[str, np.ndarray]  # an argument of the compiled run, not a constant in it
    learning_rate: float
    steps: int
    evals: int  # validation losses along the run (the curve)
    num_heads: int  # Adam-mini's heads for q/k-named leaves (the MLP has none)


def digits_task(quick: bool) -> Task:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = (x[order] / 16.0).astype(np.float32), y[order].astype(np.int32)
    data = {"x_train": x[:1297], "y_train": y[:1297], "x_val": x[1297:], "y_val": y[1297:]}
    widths = (64, 256, 256, 10)

    def cross_entropy(params, x, y):
        logits = mlp_apply(params, x)
        return jnp.mean(
            jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], 1)[:, 0]
        )

    def train_loss(params, data, key):
        i = jax.random.randint(key, (64,), 0, data["x_train"].shape[0])
        return cross_entropy(params, data["x_train"][i], data["y_train"][i])

    return Task(
        "digits MLP",
        lambda key: mlp_init(key, widths),
        train_loss,
        lambda params, data: cross_entropy(params, data["x_val"], data["y_val"]),
        data,
        learning_rate=3e-3,
        steps=100 if quick else 600,
        evals=5 if quick else 10,
        num_heads=1,
    )


CHAR_LM_STEPS = 1000
# The best of float32 adamw's 3e-4, 1e-3, 3e-3 and 1e-2 at 1000 steps (benchmarks/README.md).
CHAR_LM_LR = 1e-3
# quick -> the model's size: workloads.py's default, or its own ``--quick`` one.
CHAR_LM = {False: workloads.CharLMConfig(), True: workloads.QUICK.char_lm}


def char_lm_task(quick: bool, learning_rate: float = CHAR_LM_LR) -> Task:
    """``benchmarks/workloads.py``'s Flax NNX char-LM, its data and its validation windows."""
    config = CHAR_LM[quick]
    workload = workloads.char_lm_workload(config)
    return Task(
        "char-LM transformer (workloads.py)",
        workload.init,
        workload.train_loss,
        lambda params, data: workload.evaluate(params, data)["loss"],
        workload.data,
        learning_rate=learning_rate,
        steps=20 if quick else CHAR_LM_STEPS,
        evals=2 if quick else 10,
        num_heads=config.num_heads,
    )


def train_curves(task: Task, make: Callable, dtype: Any) -> np.ndarray:
    """Validation loss at ``task.evals`` points for every seed: shape (seeds, evals).

    The seeds run side by side (``vmap``) in one compiled program; the params are
    stored in ``dtype`` and cast to float32 for the forward pass.
    """
    per_eval = task.steps // task.evals
    keys = [jax.random.split(jax.random.key(seed), 3) for seed in SEEDS]
    # Flax's initializers run eagerly, one seed at a time, then stack.
    inits = [jax.tree.map(lambda a: a.astype(dtype), task.init(k[0])) for k in keys]
    params = jax.tree.map(lambda *a: jnp.stack(a), *inits)
    key_data = jnp.stack([k[1] for k in keys])
    key_sr = jnp.stack([k[2] for k in keys])
    f32 = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float32), tree)

    def one_seed(params, key_data, key_sr, data):
        tx = make(task.learning_rate, key_sr, task.num_heads)
        state = tx.init(params)
        loss = lambda p, key: task.train_loss(f32(p), data, key)

        def step(carry, t):
            params, state = carry
            grads = jax.grad(loss)(params, jax.random.fold_in(key_data, t))
            updates, state = tx.update(grads, state, params)
            return (gradtx.apply_updates(params, updates), state), None

        def segment(carry, i):
            carry, _ = jax.lax.scan(step, carry, i * per_eval + jnp.arange(per_eval))
            return carry, task.val_loss(f32(carry[0]), data)

        _, curve = jax.lax.scan(segment, (params, state), jnp.arange(task.evals))
        return curve

    run = jax.jit(jax.vmap(one_seed, in_axes=(0, 0, 0, None)))
    return np.asarray(run(params, key_data, key_sr, jax.device_put(task.data)))


TRAIN_TASKS = ("digits", "char-lm")


def measure_training(
    quick: bool,
    char_lm_lr: float = CHAR_LM_LR,
    tasks: tuple[str, ...] = TRAIN_TASKS,
    configs: tuple[str, ...] = tuple(TRAIN_CONFIGS),
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    makers = {
        "digits": lambda: digits_task(quick),
        "char-lm": lambda: char_lm_task(quick, char_lm_lr),
    }
    for task in (makers[name]() for name in TRAIN_TASKS if name in tasks):
        rows: dict[str, Any] = {}
        for name, (make, dtype) in TRAIN_CONFIGS.items():
            if name != "adamw" and name not in configs:  # adamw: the reference
                continue
            start = time.perf_counter()
            curves = train_curves(task, make, dtype)
            final = curves[:, -1]
            rows[name] = {
                "final_val_loss": [float(v) for v in final],
                "mean": float(final.mean()),
                "std": float(final.std(ddof=1)),
                "curve_mean": [float(v) for v in curves.mean(0)],
                "seconds": time.perf_counter() - start,
            }
            print(f"training: {task.name}, {name} done", file=sys.stderr, flush=True)
        ref = rows["adamw"]
        for row in rows.values():
            row["delta"] = row["mean"] - ref["mean"]
            row["within_f32_spread"] = bool(abs(row["delta"]) <= 2 * ref["std"])
        n_params = sum(x.size for x in jax.tree.leaves(task.init(jax.random.key(0))))
        out[task.name] = {
            "params": int(n_params),
            "learning_rate": task.learning_rate,
            "steps": task.steps,
            "seeds": list(SEEDS),
            "configs": rows,
        }
    return out


# ------------------------------------------------------------------------- markdown


def bytes_table(results: dict[str, Any]) -> str:
    names = list(results["params"])
    head = " | ".join(f"bytes / param, {t} ({results['params'][t]:,} params)" for t in names)
    lines = [f"| configuration | {head} |", "| --- |" + " ---: |" * len(names)]
    for config, row in results["bytes_per_param"].items():
        lines.append(f"| {config} | " + " | ".join(f"{row[t]:.3f}" for t in names) + " |")
    return "\n".join(lines)


def step_table(step: dict[str, Any]) -> str:
    trees = list(step["trees"])
    head = " | ".join(
        f"{t} ({step['trees'][t]['floats'] / 1e6:.1f}M) ms | ratio | temp MB" for t in trees
    )
    lines = [
        f"| configuration | baseline | {head} |",
        "| --- | --- |" + " ---: | ---: | ---: |" * len(trees),
    ]
    for name in STEP_CONFIGS:
        cells = []
        for t in trees:
            row = step["trees"][t]["configs"][name]
            temp = row.get("temp_bytes")
            temp_mb = "" if temp is None else f"{temp / 1e6:.0f}"
            cells += [f"{row['median_ms']:.1f}", f"{row['ratio']:.2f}", temp_mb]
        baseline = STEP_CONFIGS[name][1]
        lines.append(f"| {name} | {baseline} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def error_table(error: dict[str, Any]) -> str:
    steps = list(next(iter(error["steps"].values())))
    lines = [
        "| configuration | step | rel. error of m | rel. error of v | param drift |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, per_step in error["steps"].items():
        for s in steps:
            r = per_step[s]
            lines.append(
                f"| {name} | {s} | {r['mu']:.2e} | {r['nu']:.2e} | {r['param_drift']:.2e} |"
            )
    return "\n".join(lines)


def training_table(task_name: str, task: dict[str, Any]) -> str:
    lines = [
        f"{task_name} ({task['params']:,} params, {task['steps']} steps, learning rate "
        f"{task['learning_rate']:g}, seeds {task['seeds']}):",
        "",
        "| configuration | final val loss, mean ± std | - float32 | within float32 spread |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, row in task["configs"].items():
        lines.append(
            f"| {name} | {row['mean']:.4f} ± {row['std']:.4f} | {row['delta']:+.4f} | "
            f"{'yes' if row['within_f32_spread'] else 'no'} |"
        )
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    parts = [bytes_table(results)] if "bytes_per_param" in results else []
    if "step_time" in results:
        parts.append(step_table(results["step_time"]))
    if "moment_error" in results:
        parts.append(error_table(results["moment_error"]))
    for task_name, task in results.get("training", {}).items():
        parts.append(training_table(task_name, task))
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- main

PARTS = ("bytes", "step", "error", "train")


def run(
    quick: bool = False,
    parts: tuple[str, ...] = PARTS,
    char_lm_lr: float = CHAR_LM_LR,
    train_tasks: tuple[str, ...] = TRAIN_TASKS,
    train_configs: tuple[str, ...] = tuple(TRAIN_CONFIGS),
) -> dict[str, Any]:
    start = time.perf_counter()
    results: dict[str, Any] = {
        "command": "python benchmarks/state_memory.py " + " ".join(sys.argv[1:]),
        "quick": quick,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
        },
    }
    if "bytes" in parts:
        results.update(measure(quick))
    if "step" in parts:
        results["step_time"] = measure_step_time(quick)
    if "error" in parts:
        results["moment_error"] = measure_moment_error(quick)
    if "train" in parts:
        results["training"] = measure_training(quick, char_lm_lr, train_tasks, train_configs)
    results["wall_s"] = time.perf_counter() - start
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    parser.add_argument(
        "--char-lm-lr",
        type=float,
        default=CHAR_LM_LR,
        help=f"the char-LM's learning rate in the training part (default {CHAR_LM_LR:g})",
    )
    parser.add_argument(
        "--train-tasks",
        default=",".join(TRAIN_TASKS),
        help=f"the training part's tasks, a comma-separated subset of {','.join(TRAIN_TASKS)}",
    )
    parser.add_argument(
        "--train-configs",
        default=";".join(TRAIN_CONFIGS),
        help="the training part's configurations, separated by ';' (their names hold "
        "commas; default: all; adamw, the reference, always runs)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    train_configs = tuple(c.strip() for c in args.train_configs.split(";") if c.strip())
    if set(train_configs) - set(TRAIN_CONFIGS):
        parser.error(f"--train-configs: choose from {'; '.join(TRAIN_CONFIGS)}")
    train_tasks = tuple(t.strip() for t in args.train_tasks.split(",") if t.strip())
    if set(train_tasks) - set(TRAIN_TASKS) or not train_tasks:
        parser.error(f"--train-tasks: choose from {','.join(TRAIN_TASKS)}")
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    results = run(args.quick, parts, args.char_lm_lr, train_tasks, train_configs)
    results["backend"] = jax.default_backend()
    print(markdown(results))
    print(f"wall time: {results['wall_s']:.0f} s", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
