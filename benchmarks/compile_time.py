"""First-call cost of a jitted optimizer step, with and without each tactic of
``gradtx/_tactics.py``, against Optax, on transformer-shaped trees.

A step is ``update`` then ``apply_updates``, jitted with the params and state
donated. For each tree and method the script measures tracing and lowering
(``jax.jit(step).lower(...)``) and XLA compilation (``.compile()``), the least of
``--repeats`` fresh builds, for:

- gradtx as it is;
- gradtx with :func:`gradtx._tactics.per_leaf` off (the per-leaf step mapped plainly);
- gradtx with :func:`gradtx._tactics.joined_for_sum` off (one sum per leaf);
- Optax with the same hyperparameters.

The trees are the 12-layer transformer of ``step_time.py`` (196 leaves) and a
48-layer one (772 leaves), with small widths: the first-call cost depends on the
number of leaves and their shapes, not on their sizes.

Usage::

    python benchmarks/compile_time.py            # prints a markdown table
    python benchmarks/compile_time.py --layers 12 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from pathlib import Path

import jax
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_time  # noqa: E402

import gradtx  # noqa: E402
from gradtx import _tactics  # noqa: E402

METHODS = {
    "adam": (lambda: gradtx.adam(1e-3), lambda: optax.adam(1e-3)),
    "clip + adamw": (
        lambda: gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-3)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)),
    ),
}


def transformer(layers: int):
    sizes = dataclasses.replace(step_time.FULL, layers=layers, d_model=64, vocab=128, context=32)
    return step_time.random_tree(step_time.transformer_shapes(sizes), jax.random.key(0), 1.0)


def first_call(make, params) -> tuple[float, float]:
    tx = make()

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    start = time.perf_counter()
    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params)
    traced = time.perf_counter()
    lowered.compile()
    return traced - start, time.perf_counter() - traced


@contextlib.contextmanager
def without(name: str):
    """``_tactics.<name>`` replaced by the plain path while the block runs."""
    plain = {
        "per_leaf": lambda fn, leaves: fn,
        "joined_for_sum": lambda leaves: list(leaves),
    }[name]
    kept = getattr(_tactics, name)
    setattr(_tactics, name, plain)
    try:
        yield
    finally:
        setattr(_tactics, name, kept)


def measure(make, params, repeats: int, context=contextlib.nullcontext) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        with context():
            runs.append(first_call(make, params))
    trace = min(r[0] for r in runs)
    compile_ = min(r[1] for r in runs)
    return {"trace": trace, "compile": compile_, "total": trace + compile_}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="12,48", help="transformer depths (default 12,48)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh builds per cell")
    args = parser.parse_args(argv)
    print(f"JAX {jax.__version__}, Optax {optax.__version__}, backend {jax.default_backend()}")
    print()
    print("| leaves | method | gradtx | no per_leaf | no joined_for_sum | Optax |")
    print("| --- | --- | --- | --- | --- | --- |")
    for layers in (int(x) for x in args.layers.split(",")):
        params = transformer(layers)
        leaves = len(jax.tree.leaves(params))
        for method, (ours, theirs) in METHODS.items():
            cells = [
                measure(ours, params, args.repeats),
                measure(ours, params, args.repeats, lambda: without("per_leaf")),
                measure(ours, params, args.repeats, lambda: without("joined_for_sum")),
                measure(theirs, params, args.repeats),
            ]
            text = " | ".join(
                f"{c['total']:.2f} s ({c['trace']:.2f} + {c['compile']:.2f})" for c in cells
            )
            print(f"| {leaves} | {method} | {text} |", flush=True)
    print()
    print("Each cell: trace and lower + compile, the least of the fresh builds.")


if __name__ == "__main__":
    main()
