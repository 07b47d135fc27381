"""Optimizer-state bytes per parameter for every named optimizer of gradtx.

Nothing is allocated: ``jax.eval_shape(tx.init, params)`` gives the state's shapes
and dtypes. The params are an MLP-like float32 tree (784-512-512-10, 0.67M
parameters); the quasi-Newton and Newton rows depend on the number of parameters
``n`` (BFGS keeps an ``n x n`` matrix), so they are also given for a small
``n = 1000`` problem, where such methods belong.

Run: ``python benchmarks/state_bytes.py [--json PATH]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math

import jax
import jax.numpy as jnp

import gradtx

NAMED = {
    "sgd": lambda: gradtx.sgd(0.1),
    "sgd(momentum=0.9)": lambda: gradtx.sgd(0.1, momentum=0.9),
    "momentum": lambda: gradtx.momentum(0.1),
    "nesterov_momentum": lambda: gradtx.nesterov_momentum(0.1),
    "adagrad": lambda: gradtx.adagrad(0.1),
    "rmsprop": lambda: gradtx.rmsprop(0.1),
    "rmsprop(centered, momentum)": lambda: gradtx.rmsprop(0.1, centered=True, momentum=0.9),
    "adadelta": lambda: gradtx.adadelta(),
    "adam": lambda: gradtx.adam(0.1),
    "adam(mu_dtype=bfloat16)": lambda: gradtx.adam(0.1, mu_dtype=jnp.bfloat16),
    "adam(mu, nu in bfloat16)": lambda: gradtx.adam(
        0.1, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16
    ),
    "adamw": lambda: gradtx.adamw(0.1),
    "amsgrad": lambda: gradtx.amsgrad(0.1),
    "adamax": lambda: gradtx.adamax(0.1),
    "nadam": lambda: gradtx.nadam(0.1),
    "radam": lambda: gradtx.radam(0.1),
    "adabound": lambda: gradtx.adabound(0.1),
    "amsbound": lambda: gradtx.amsbound(0.1),
    "rprop": lambda: gradtx.rprop(0.1),
    "lookahead(adam)": lambda: gradtx.lookahead(gradtx.adam(0.1)),
    "ranger": lambda: gradtx.ranger(0.1),
    "nonlinear_cg": lambda: gradtx.nonlinear_cg(),
    "lbfgs(memory_size=10)": lambda: gradtx.lbfgs(),
    "hessian_free": lambda: gradtx.hessian_free(),
    "newton": lambda: gradtx.newton(),
    "bfgs": lambda: gradtx.bfgs(),
}
# Dense n x n methods: shown only for the small problem.
DENSE = {"newton", "bfgs"}


def mlp_params(widths=(784, 512, 512, 10)):
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        params[f"layer{i}"] = {
            "w": jax.ShapeDtypeStruct((fan_in, fan_out), jnp.float32),
            "b": jax.ShapeDtypeStruct((fan_out,), jnp.float32),
        }
    return params


def small_params(n=1000):
    return {
        "w": jax.ShapeDtypeStruct((n - 10,), jnp.float32),
        "b": jax.ShapeDtypeStruct((10,), jnp.float32),
    }


def count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def state_bytes(make, params):
    shapes = jax.eval_shape(make().init, params)
    return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(shapes))


def measure():
    big, small = mlp_params(), small_params()
    rows = []
    for name, make in NAMED.items():
        row = {"optimizer": name}
        row["mlp_bytes_per_param"] = None if name in DENSE else state_bytes(make, big) / count(big)
        row["n1000_bytes_per_param"] = state_bytes(make, small) / count(small)
        rows.append(row)
    return {"mlp_params": count(big), "small_params": count(small), "rows": rows}


def markdown(result):
    lines = [
        f"| optimizer | bytes / param, MLP ({result['mlp_params']:,} float32 params) "
        f"| bytes / param, n = {result['small_params']:,} |",
        "| --- | ---: | ---: |",
    ]
    for row in result["rows"]:
        mlp = "-" if row["mlp_bytes_per_param"] is None else f"{row['mlp_bytes_per_param']:.2f}"
        lines.append(f"| `{row['optimizer']}` | {mlp} | {row['n1000_bytes_per_param']:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args()
    result = measure()
    print(markdown(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
