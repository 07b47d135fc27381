"""Every method beyond the main table, one large leaf: gradtx against Optax.

``step_time.py`` times ten methods on four trees. This script covers the rest of
the library (and Adam, as the yardstick): every named optimizer and wrapper, on one
tree of a large leaf (``--size`` floats, 16.8M by default) and a small one. For each
method it builds the donated, jitted step ``update`` + ``apply_updates`` for gradtx
and, where Optax has the same method, for Optax, and reports:

- the step time: median over ``--rounds`` rounds of ``--steps`` steps, the two
  libraries alternating, the order reversed every round (``step_time.py``'s
  ``time_interleaved``, every step timed to its result);
- the compiled step's temporary bytes (``memory_analysis().temp_size_in_bytes``):
  what it needs beyond params, gradient and state;
- the minor page faults per step: XLA:CPU hands a large temporary back to the
  system after every run, so each one faults in again (one fault per 4 KB page).

Usage::

    python benchmarks/every_method.py                 # under 2 minutes on 2 cores
    python benchmarks/every_method.py --methods adadelta,rprop --size 1048576

Writes ``every_method.json`` and ``every_method.md`` to ``--out`` (default
``benchmarks/results``) and prints the markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from step_time import QUICK, Run, time_interleaved
from xla_cpu_limits import minor_faults_per_step

import gradtx

LR = 1e-3

# name: (gradtx's method, Optax's same method or None, extra ``update`` arguments).
METHODS: dict[str, tuple[Callable[[], Any], Callable[[], Any] | None, dict]] = {
    "adam": (lambda: gradtx.adam(LR), lambda: optax.adam(LR), {}),
    "adadelta": (lambda: gradtx.adadelta(1.0), lambda: optax.adadelta(1.0), {}),
    "adadelta_weight_decay": (
        lambda: gradtx.adadelta(1.0, weight_decay=1e-4),
        lambda: optax.adadelta(1.0, weight_decay=1e-4),
        {},
    ),
    "adamax": (lambda: gradtx.adamax(LR), lambda: optax.adamax(LR), {}),
    "amsgrad": (lambda: gradtx.amsgrad(LR), lambda: optax.amsgrad(LR), {}),
    "adam_nesterov_vs_optax_nadam": (
        lambda: gradtx.adam(LR, nesterov=True),
        lambda: optax.nadam(LR),
        {},
    ),
    "nadam_dozat": (lambda: gradtx.nadam(LR), None, {}),
    "rprop": (lambda: gradtx.rprop(LR), lambda: optax.rprop(LR), {}),
    "adabound": (lambda: gradtx.adabound(LR), None, {}),
    "amsbound": (lambda: gradtx.amsbound(LR), None, {}),
    "ranger": (lambda: gradtx.ranger(LR), None, {}),
    "rmsprop_centered_nesterov": (
        lambda: gradtx.rmsprop(LR, centered=True, momentum=0.9, nesterov=True),
        lambda: optax.rmsprop(LR, centered=True, momentum=0.9, nesterov=True),
        {},
    ),
    "sgd_average_params": (
        lambda: gradtx.chain(gradtx.sgd(LR), gradtx.average_params(decay=0.99)),
        None,
        {},
    ),
    "ema": (lambda: gradtx.ema(0.9), lambda: optax.ema(0.9), {}),
    "clip": (lambda: gradtx.clip(1.0), lambda: optax.clip(1.0), {}),
    "clip_by_block_rms": (
        lambda: gradtx.clip_by_block_rms(1.0),
        lambda: optax.clip_by_block_rms(1.0),
        {},
    ),
    "clip_by_global_norm": (
        lambda: gradtx.clip_by_global_norm(1.0),
        lambda: optax.clip_by_global_norm(1.0),
        {},
    ),
    "adaptive_grad_clip": (
        lambda: gradtx.adaptive_grad_clip(0.01),
        lambda: optax.adaptive_grad_clip(0.01),
        {},
    ),
    "add_decayed_weights": (
        lambda: gradtx.add_decayed_weights(1e-4),
        lambda: optax.add_decayed_weights(1e-4),
        {},
    ),
    "add_noise": (
        lambda: gradtx.add_noise(0.01, 0.55, key=0),
        lambda: optax.add_noise(0.01, 0.55, 0),
        {},
    ),
    "proximal_l1": (lambda: gradtx.proximal_l1(LR, 1e-4), None, {}),
    "apply_if_finite_adam": (
        lambda: gradtx.apply_if_finite(gradtx.adam(LR), raise_after=5),
        lambda: optax.apply_if_finite(optax.adam(LR), 5),
        {},
    ),
    "accumulate_adam_4_vs_multisteps": (
        lambda: gradtx.accumulate(gradtx.adam(LR), 4),
        lambda: optax.MultiSteps(optax.adam(LR), 4),
        {},
    ),
    "inject_hyperparams_adam": (
        lambda: gradtx.inject_hyperparams(gradtx.adam)(learning_rate=LR),
        lambda: optax.inject_hyperparams(optax.adam)(learning_rate=LR),
        {},
    ),
    "masked_adam": (
        lambda: gradtx.masked(gradtx.adam(LR), {"w": True, "b": False}),
        lambda: optax.masked(optax.adam(LR), {"w": True, "b": False}),
        {},
    ),
    "adam_reduce_on_plateau": (
        lambda: gradtx.chain(gradtx.adam(LR), gradtx.reduce_on_plateau()),
        lambda: optax.chain(optax.adam(LR), optax.contrib.reduce_on_plateau()),
        {"value": 1.0},
    ),
}


def tree_of(size: int, value: float) -> dict[str, jax.Array]:
    return {"w": jnp.full((size,), value), "b": jnp.full((1000,), value)}


def step_of(tx: Any, extra: dict) -> Callable:
    """The step timed: ``update`` (with ``extra`` arguments) then ``apply_updates``."""
    extra = {k: jnp.asarray(v) for k, v in extra.items()}

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params, **extra)
        return optax.apply_updates(params, updates), state

    return step


def bench(name: str, size: int, rounds: int, steps: int) -> dict[str, Any]:
    """Both libraries' steps for ``name``, timed interleaved as ``step_time.py`` times."""
    make_gradtx, make_optax, extra = METHODS[name]
    grads = tree_of(size, 0.01)
    makers = {"gradtx": make_gradtx, "optax": make_optax}
    runs, steps_of, compiled = [], {}, {}
    for library, make in makers.items():
        if make is None:
            continue
        tx = make()
        steps_of[library] = (tx, step_of(tx, extra))
        params = tree_of(size, 0.5)
        state = tx.init(params)
        jitted = jax.jit(steps_of[library][1], donate_argnums=(0, 1))
        compiled[library] = jitted.lower(params, state, grads).compile()
        runs.append(Run(library, compiled[library], params, state, grads))
    sizes = dataclasses.replace(QUICK, warmup=3, rounds=rounds, block=steps)
    seconds = time_interleaved(runs, sizes, "step")
    result: dict[str, Any] = {}
    for library, (tx, step) in steps_of.items():
        result[library] = {
            "median_ms": 1e3 * float(np.median(seconds[library])),
            "temp_bytes": compiled[library].memory_analysis().temp_size_in_bytes,
            "faults_per_step": minor_faults_per_step(
                step, tree_of(size, 0.5), tx.init(tree_of(size, 0.5)), grads, steps=5
            ),
        }
    if "optax" in result:
        result["ratio"] = result["gradtx"]["median_ms"] / result["optax"]["median_ms"]
    return result


def markdown(results: dict[str, dict], size: int) -> str:
    lines = [
        f"One leaf of {size:,} float32 and one of 1,000; step = donated jitted update + "
        "apply_updates. temp: the compiled step's temporary MB; faults: minor page "
        "faults per step.",
        "",
        "| method | gradtx ms | temp MB | faults | Optax ms | temp MB | faults | gradtx / Optax |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        g, o = r["gradtx"], r.get("optax")
        cells = [name, f"{g['median_ms']:.2f}", f"{g['temp_bytes'] / 1e6:.1f}"]
        cells.append(f"{g['faults_per_step']:.0f}")
        if o is None:
            cells += ["", "", "", ""]
        else:
            cells += [f"{o['median_ms']:.2f}", f"{o['temp_bytes'] / 1e6:.1f}"]
            cells += [f"{o['faults_per_step']:.0f}", f"{r['ratio']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 24, help="floats in the large leaf")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="steps per library per round")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated names")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    names = [n.strip() for n in args.methods.split(",")]
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    results = {}
    for name in names:
        results[name] = bench(name, args.size, args.rounds, args.steps)
        print(name, json.dumps(results[name]), flush=True)
    text = markdown(results, args.size)
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"jax": jax.__version__, "optax": optax.__version__, "backend": jax.default_backend()}
    (args.out / "every_method.json").write_text(
        json.dumps({"size": args.size, "machine": info, "results": results}, indent=1)
    )
    (args.out / "every_method.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
