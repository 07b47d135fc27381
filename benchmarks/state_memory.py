"""Optimizer-state bytes per parameter, from the compiled ``init`` program's memory analysis.

For each configuration and parameter tree: ``jax.jit(tx.init).lower(params)
.compile().memory_analysis().output_size_in_bytes`` (what XLA allocates for the
state, scalar counters and PRNG keys included), divided by the number of
parameters. Trees: a float32 MLP (784-512-512-10, 0.67M parameters) and a small
Transformer-like tree (embedding, two blocks of q/k/v/o projections, LayerNorm
scales and a 4x MLP, a final norm and an output head, 2.09M parameters), whose
leaf names follow the usual Flax ones so Adam-mini's default partition applies.
A configuration with ``bfloat16`` params gets both trees in bfloat16.

Another configuration is one line in ``CONFIGS``.

Run: ``python benchmarks/state_memory.py [--quick] [--json PATH]``; prints a
markdown table (``--quick``: smaller trees, for a smoke test).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import gradtx

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


def markdown(results: dict[str, Any]) -> str:
    names = list(results["params"])
    head = " | ".join(f"bytes / param, {t} ({results['params'][t]:,} params)" for t in names)
    lines = [f"| configuration | {head} |", "| --- |" + " ---: |" * len(names)]
    for config, row in results["bytes_per_param"].items():
        lines.append(f"| {config} | " + " | ".join(f"{row[t]:.3f}" for t in names) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller trees (a smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    args = parser.parse_args()
    results = measure(args.quick)
    results["backend"] = jax.default_backend()
    print(markdown(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
