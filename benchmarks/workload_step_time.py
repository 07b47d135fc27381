"""Training-step time of the workload benchmark's optimizers on its models.

Times the jitted, donated training step of :mod:`workloads` (the gradient of a
minibatch's loss, the optimizer's update, ``apply_updates``) for each optimizer
with the settings of ``workloads.OPTIMIZERS`` (a learning rate of 1e-3 and a
weight decay of 1e-4 where it has them). After ``--warmup`` steps (the
compilation included), ``--steps`` steps are timed one by one, each up to
``jax.block_until_ready``, the optimizers taking turns in blocks of ``--block``
steps so that a change of the machine's load falls on all of them alike.
Prints, per optimizer, the median and the mean step (the mean counts the
occasional expensive steps, such as Shampoo's inverse roots every 10 steps) and
both as a multiple of the first optimizer's.

Usage::

    python benchmarks/workload_step_time.py                       # adamw and shampoo on char_lm
    python benchmarks/workload_step_time.py --optimizers adamw,soap,shampoo --steps 200
    python benchmarks/workload_step_time.py --workload digits --vmap 6   # 6 runs in one step

On XLA:CPU the eigendecompositions (``jnp.linalg.eigh``) call LAPACK from the
OpenBLAS that SciPy ships, which splits even a 128 x 128 problem over its
threads; on a machine whose cores are busy with other work that can make each
call 10 to 100 times slower. ``OPENBLAS_NUM_THREADS=1`` in the environment
keeps OpenBLAS on the calling thread (XLA's own kernels are not affected).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import gradtx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import OPTIMIZERS, WORKLOADS, CharLMConfig, DigitsConfig  # noqa: E402

DEFAULTS = {"learning_rate": 1e-3, "weight_decay": 1e-4}
CONFIGS = {"char_lm": CharLMConfig(), "digits": DigitsConfig()}


def make_step(workload, optimizer: str, steps: int, vmap: int = 1):
    """The workload's training step with ``optimizer`` (its schedule over ``steps``).

    With ``vmap`` > 1 the step trains that many runs at once (``jax.vmap`` over
    their params, optimizer states and minibatch keys; initial weights from keys
    0, 1, ...), as a vmapped hyperparameter search or a batch of seeds would.
    """
    spec = OPTIMIZERS[optimizer]
    hyperparams = {name: jnp.float32(DEFAULTS[name]) for name in spec.space}

    def step(params, opt_state, key, data):
        loss, grads = jax.value_and_grad(workload.train_loss)(params, data, key)
        updates, opt_state = spec.build(steps, **hyperparams).update(grads, opt_state, params)
        return gradtx.apply_updates(params, updates), opt_state, loss

    init = lambda p: spec.build(steps, **hyperparams).init(p)
    if vmap == 1:
        params = workload.init(jax.random.key(0))
    else:
        runs = [workload.init(jax.random.key(i)) for i in range(vmap)]
        params = jax.tree.map(lambda *leaves: jnp.stack(leaves), *runs)
        step = jax.vmap(step, in_axes=(0, 0, 0, None))
        init = jax.vmap(init)
    step = jax.jit(step, donate_argnums=(0, 1))
    opt_state = jax.jit(init)(params)
    return step, [params, opt_state]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workload", default="char_lm", choices=list(WORKLOADS))
    parser.add_argument("--optimizers", default="adamw,shampoo")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per optimizer")
    parser.add_argument("--warmup", type=int, default=12, help="untimed steps first")
    parser.add_argument("--block", type=int, default=20, help="steps per turn")
    parser.add_argument(
        "--vmap", type=int, default=1, help="runs per step, vmapped; times are per run"
    )
    args = parser.parse_args(argv)
    optimizers = [v.strip() for v in args.optimizers.split(",") if v.strip()]

    workload = WORKLOADS[args.workload](CONFIGS[args.workload])
    data = jax.device_put(workload.data)
    total = args.warmup + args.steps
    runs = {name: make_step(workload, name, total, args.vmap) for name in optimizers}
    shape = (total,) if args.vmap == 1 else (total, args.vmap)
    keys = jax.random.split(jax.random.key(1), shape)
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    done = dict.fromkeys(optimizers, 0)

    def advance(name: str, count: int, timed: bool) -> None:
        step, carry = runs[name]
        for _ in range(count):
            start = time.perf_counter()
            params, opt_state, loss = step(*carry, keys[done[name]], data)
            jax.block_until_ready((params, opt_state, loss))
            if timed:
                times[name].append((time.perf_counter() - start) / args.vmap)
            carry[:] = [params, opt_state]
            done[name] += 1

    for name in optimizers:
        advance(name, args.warmup, timed=False)
    while any(len(t) < args.steps for t in times.values()):
        for name in optimizers:
            advance(name, min(args.block, args.steps - len(times[name])), timed=True)

    base = optimizers[0]
    median = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    mean = {name: 1e3 * statistics.mean(t) for name, t in times.items()}
    backend = jax.default_backend()
    batched = f", {args.vmap} runs vmapped, ms per run" if args.vmap > 1 else ""
    print(
        f"{args.workload}: {args.steps} timed steps each{batched}, "
        f"JAX {jax.__version__} ({backend})"
    )
    print("| optimizer | median ms | mean ms | median / " + base + " | mean / " + base + " |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in optimizers:
        print(
            f"| `{name}` | {median[name]:.1f} | {mean[name]:.1f} | "
            f"{median[name] / median[base]:.2f} | {mean[name] / mean[base]:.2f} |"
        )


if __name__ == "__main__":
    main()
