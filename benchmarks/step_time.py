"""Optimizer step time of gradtx against Optax (and torch.optim when installed).

One *step* is one jitted ``step(params, state, grads) -> (params, state)``: the
transformation's ``update`` then ``apply_updates``, with the params and the state
donated. For every tree and method the script builds that step for gradtx and for
Optax with the same hyperparameters and measures, in the same process:

- the step time: the two libraries' steps alternate in blocks (``--block`` steps
  each, the first library swapped every round), every step timed on its own up to
  ``jax.block_until_ready``; median and spread over the timed steps after warm-up;
- the first-call cost: tracing and lowering, then XLA compilation, of a fresh jitted
  function (``jax.jit(step).lower(...).compile()``), and the compiled program's
  temporary buffer bytes (``compiled.memory_analysis().temp_size_in_bytes``);
- the step as a fraction of its roofline bound: the bytes a step must move (params
  read and written, grads read, every state array read and written) divided by
  the bandwidth of a jitted, donated elementwise kernel timed in the same run.

The trees: one 16M-float leaf; a 10-leaf MLP (8.5M floats); a 12-layer transformer
(196 leaves, 25M floats: q, k, v, out, MLP in/out, layer norms, embeddings); 2000
leaves of 1000 floats. ``--quick`` uses trees about 16 times smaller (a 3-layer
transformer, 100 leaves in the many-leaf tree) and fewer steps. torch.optim columns
(``foreach=True`` and ``fused=True``; empty where torch has no such variant, as for
Lookahead) are added when ``import torch`` works.

Usage::

    python benchmarks/step_time.py --quick                 # under a minute on 2 CPU cores
    python benchmarks/step_time.py                         # the full run
    python benchmarks/step_time.py --methods adam,lookahead --trees many_leaves

Writes ``step_time.json`` (every number) and ``step_time.md`` (one table per tree and
a summary against the speed targets), ``step_time_quick.*`` with ``--quick`` so a smoke
test never overwrites a full run, to ``--out`` (default ``benchmarks/results``), and
prints the markdown. Runs on whatever JAX's default backend is (CPU, GPU, TPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradtx

# ---------------------------------------------------------------------------- trees


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The sizes of the four trees and how many steps to time."""

    one_leaf: tuple[int, int]
    mlp_widths: tuple[int, ...]
    d_model: int
    layers: int
    vocab: int
    context: int
    many_leaves: int
    leaf_size: int
    warmup: int  # untimed steps per library before the timed rounds
    rounds: int  # timed rounds; each runs `block` steps of each library
    block: int
    roofline_floats: int


FULL = Sizes(
    one_leaf=(4096, 4096),
    mlp_widths=(768, 1536, 1536, 1536, 1024, 1000),
    d_model=384,
    layers=12,
    vocab=8192,
    context=1024,
    many_leaves=2000,
    leaf_size=1000,
    warmup=3,
    rounds=12,
    block=5,
    roofline_floats=4096 * 4096,
)
QUICK = Sizes(
    one_leaf=(1024, 1024),
    mlp_widths=(192, 384, 384, 384, 256, 250),
    d_model=96,
    layers=3,
    vocab=2048,
    context=256,
    many_leaves=100,
    leaf_size=1000,
    warmup=2,
    rounds=8,
    block=5,
    roofline_floats=1024 * 1024,
)


def one_leaf_shapes(sizes: Sizes) -> dict[str, tuple[int, ...]]:
    return {"w": sizes.one_leaf}


def mlp_shapes(sizes: Sizes) -> dict[str, tuple[int, ...]]:
    widths = sizes.mlp_widths
    shapes = {}
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        shapes[f"dense{i}/w"] = (fan_in, fan_out)
        shapes[f"dense{i}/b"] = (fan_out,)
    return shapes


def transformer_shapes(sizes: Sizes) -> dict[str, tuple[int, ...]]:
    d = sizes.d_model
    shapes = {"embed/tokens": (sizes.vocab, d), "embed/positions": (sizes.context, d)}
    for layer in range(sizes.layers):
        prefix = f"layer{layer:02d}"
        for name in ("q", "k", "v", "out"):
            shapes[f"{prefix}/attn/{name}/w"] = (d, d)
            shapes[f"{prefix}/attn/{name}/b"] = (d,)
        shapes[f"{prefix}/mlp/in/w"] = (d, 4 * d)
        shapes[f"{prefix}/mlp/in/b"] = (4 * d,)
        shapes[f"{prefix}/mlp/out/w"] = (4 * d, d)
        shapes[f"{prefix}/mlp/out/b"] = (d,)
        for norm in ("norm1", "norm2"):
            shapes[f"{prefix}/{norm}/scale"] = (d,)
            shapes[f"{prefix}/{norm}/bias"] = (d,)
    shapes["final_norm/scale"] = (d,)
    shapes["final_norm/bias"] = (d,)
    return shapes


def many_leaves_shapes(sizes: Sizes) -> dict[str, tuple[int, ...]]:
    return {f"leaf{i:04d}": (sizes.leaf_size,) for i in range(sizes.many_leaves)}


TREES: dict[str, Callable[[Sizes], dict[str, tuple[int, ...]]]] = {
    "one_leaf": one_leaf_shapes,
    "mlp": mlp_shapes,
    "transformer": transformer_shapes,
    "many_leaves": many_leaves_shapes,
}


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a/b": x}`` -> ``{"a": {"b": x}}``: the trees look like a model's params."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def random_tree(shapes: dict[str, tuple[int, ...]], key: jax.Array, scale: float) -> Any:
    keys = jax.random.split(key, len(shapes))
    flat = {
        path: scale * jax.random.normal(k, shape, jnp.float32)
        for k, (path, shape) in zip(keys, shapes.items(), strict=True)
    }
    return nest(flat)


def copy_tree(tree: Any) -> Any:
    """Fresh buffers: a donated step must own every array it is given."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def nbytes(tree: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))


def nfloats(tree: Any) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


# ------------------------------------------------------------------------- methods

LEARNING_RATE = 1e-3
SYNC_PERIOD = 6  # lookahead's k: one slow step every SYNC_PERIOD steps


def warmup_cosine(lib: Any) -> Callable:
    return lib.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=LEARNING_RATE,
        warmup_steps=100,
        decay_steps=10_000,
        end_value=1e-5,
    )


# The same names and arguments exist in gradtx and Optax: one table, two libraries.
METHODS: dict[str, Callable[[Any], Any]] = {
    "sgd": lambda lib: lib.sgd(LEARNING_RATE),
    "momentum": lambda lib: lib.sgd(LEARNING_RATE, momentum=0.9),
    "nesterov": lambda lib: lib.sgd(LEARNING_RATE, momentum=0.9, nesterov=True),
    "adagrad": lambda lib: lib.adagrad(LEARNING_RATE, initial_accumulator_value=0.1, eps=1e-7),
    "rmsprop": lambda lib: lib.rmsprop(LEARNING_RATE, decay=0.9, eps=1e-8),
    "adam": lambda lib: lib.adam(LEARNING_RATE),
    "adamw": lambda lib: lib.adamw(LEARNING_RATE, weight_decay=1e-4),
    "radam": lambda lib: lib.radam(LEARNING_RATE),
    "lookahead": lambda lib: lib.lookahead(
        lib.adam(LEARNING_RATE), sync_period=SYNC_PERIOD, slow_step_size=0.5
    ),
    "chain": lambda lib: lib.chain(
        lib.clip_by_global_norm(1.0), lib.adamw(warmup_cosine(lib), weight_decay=1e-4)
    ),
}
# The methods whose step is element-wise (no reduction across a leaf).
ELEMENTWISE = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "radam")

METHOD_LABELS = {
    "lookahead": "lookahead(adam)",
    "chain": "clip+adamw+warmup-cosine",
}


@dataclasses.dataclass
class Contender:
    """One library's optimizer for one method, ready to be jitted and stepped."""

    library: str
    tx: Any
    apply_updates: Callable
    wrap_params: Callable[[Any], Any] = lambda params: params

    def make_step(self) -> Callable:
        """A fresh step function: a new object, so no jit cache can hide its compile."""
        tx, apply_updates = self.tx, self.apply_updates

        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return apply_updates(params, updates), state

        return step

    def init(self, params: Any) -> tuple[Any, Any]:
        """The library's params (own buffers) and state (own buffers) for ``params``."""
        params = copy_tree(self.wrap_params(copy_tree(params)))
        return params, copy_tree(self.tx.init(params))


def gradtx_contender(method: str) -> Contender:
    # gradtx's lookahead keeps the slow weights in its state: plain params.
    return Contender("gradtx", METHODS[method](gradtx), gradtx.apply_updates)


def flat_contender(method: str) -> Contender:
    """gradtx's method inside ``gradtx.flat``: one buffer per dtype for the state."""
    return Contender("flat", gradtx.flat(METHODS[method](gradtx)), gradtx.apply_updates)


def optax_contender(method: str) -> Contender:
    if method == "lookahead":
        # Optax's lookahead carries (fast, slow) as its params; the grads are the fast ones'.
        return Contender(
            "optax", METHODS[method](optax), optax.apply_updates, optax.LookaheadParams.init_synced
        )
    return Contender("optax", METHODS[method](optax), optax.apply_updates)


# ------------------------------------------------------------------------ measuring


def summarize(seconds: list[float]) -> dict[str, float]:
    """Median, quartiles, extremes and mean of step times, in milliseconds."""
    ms = np.asarray(seconds) * 1e3
    p25, median, p75 = np.percentile(ms, [25, 50, 75])
    return {
        "median_ms": float(median),
        "p25_ms": float(p25),
        "p75_ms": float(p75),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "steps": int(ms.size),
        "steps_ms": [round(float(x), 4) for x in ms],  # in the order they ran
    }


def timed_call(fn: Callable, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def measure_kernel(
    kernel: Callable, donated: tuple, fixed: tuple, repeats: int, timing: str
) -> float:
    """Seconds of ``donated = kernel(*donated, *fixed)``, buffers recycled: the median
    over calls each timed to its result, or with ``timing="block"`` the mean of
    ``repeats`` calls dispatched back to back."""
    for _ in range(3):  # compile and warm up
        donated, _ = timed_call(kernel, *donated, *fixed)
    if timing == "block":
        start = time.perf_counter()
        for _ in range(repeats):
            donated = kernel(*donated, *fixed)
        jax.block_until_ready(donated)
        return (time.perf_counter() - start) / repeats
    seconds = []
    for _ in range(repeats):
        donated, dt = timed_call(kernel, *donated, *fixed)
        seconds.append(dt)
    return float(np.median(seconds))


def measure_roofline(n: int, timing: str, repeats: int = 30) -> dict[str, float]:
    """Bandwidth of two jitted, donated elementwise kernels on ``n`` float32s.

    The triad ``a <- a + s b`` moves 3 arrays (read 2, write 1); the Adam-like
    kernel ``(p, m) <- (p - lr m', m' = b m + (1 - b) g)`` moves 5 (read 3, write 2).
    The faster of the two is the roofline.
    """

    def triad(a, b):
        return (a + 0.5 * b,)

    def read3_write2(p, m, g):
        m = 0.9 * m + 0.1 * g
        return p - 1e-3 * m, m

    ones = lambda: jnp.ones((n,), jnp.float32)
    triad_s = measure_kernel(
        jax.jit(triad, donate_argnums=0), (ones(),), (ones(),), repeats, timing
    )
    adam_s = measure_kernel(
        jax.jit(read3_write2, donate_argnums=(0, 1)), (ones(), ones()), (ones(),), repeats, timing
    )
    triad_bw = 3 * 4 * n / triad_s
    adam_bw = 5 * 4 * n / adam_s
    return {
        "floats": n,
        "triad_ms": triad_s * 1e3,
        "triad_gb_s": triad_bw / 1e9,
        "read3_write2_ms": adam_s * 1e3,
        "read3_write2_gb_s": adam_bw / 1e9,
        "gb_s": max(triad_bw, adam_bw) / 1e9,
    }


def compile_step(contender: Contender, params: Any, state: Any, grads: Any) -> tuple[Any, dict]:
    """Trace, lower and compile a fresh jitted step; its times and temporary bytes."""
    jitted = jax.jit(contender.make_step(), donate_argnums=(0, 1))
    start = time.perf_counter()
    lowered = jitted.lower(params, state, grads)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    analysis = compiled.memory_analysis()
    temp = getattr(analysis, "temp_size_in_bytes", None) if analysis is not None else None
    return compiled, {
        "trace_lower_s": lowered_at - start,
        "xla_compile_s": done - lowered_at,
        "total_s": done - start,
        "temp_bytes": None if temp is None else int(temp),
    }


@dataclasses.dataclass
class Run:
    """A compiled step, the params and state it steps (replaced at each donated call), grads."""

    name: str
    step: Callable
    params: Any
    state: Any
    grads: Any

    def advance(self) -> float:
        (self.params, self.state), seconds = timed_call(
            self.step, self.params, self.state, self.grads
        )
        return seconds

    def advance_block(self, steps: int) -> float:
        """Mean seconds per step of ``steps`` steps dispatched back to back, one sync."""
        start = time.perf_counter()
        for _ in range(steps):
            self.params, self.state = self.step(self.params, self.state, self.grads)
        jax.block_until_ready((self.params, self.state))
        return (time.perf_counter() - start) / steps


def triad_run(n: int) -> Run:
    """The roofline kernel as a run: ``a <- a + s b`` on ``n`` float32s, ``a`` donated."""

    def triad(a, state, b):
        return a + 0.5 * b, state

    step = jax.jit(triad, donate_argnums=(0, 1))
    ones = jnp.ones((n,), jnp.float32)
    return Run("roofline", step, jnp.array(ones, copy=True), (), ones)


def time_interleaved(runs: list[Run], sizes: Sizes, timing: str) -> dict[str, list[float]]:
    """Alternate the runs in blocks of ``sizes.block`` steps.

    ``timing="step"`` times every step up to its result (on a CPU a step's
    dispatch is small against its work); ``timing="block"`` dispatches the block's
    steps back to back and times them to the last result, one mean per block (on
    an accelerator a sync per step would add its latency to every step). The
    order reverses every round, so each outer run follows, in turn, the middle
    ones and itself.
    """
    for run in runs:
        for _ in range(sizes.warmup):
            run.advance()
    seconds: dict[str, list[float]] = {run.name: [] for run in runs}
    for round_ in range(sizes.rounds):
        for run in runs if round_ % 2 == 0 else runs[::-1]:
            if timing == "block":
                seconds[run.name].append(run.advance_block(sizes.block))
            else:
                seconds[run.name].extend(run.advance() for _ in range(sizes.block))
    return seconds


def minimal_bytes(params: Any, state: Any, grads: Any) -> int:
    """Bytes one step must move: params read and written, grads read, state read and written."""
    return 2 * nbytes(params) + nbytes(grads) + 2 * nbytes(state)


def bench_method(
    method: str,
    params: Any,
    grads: Any,
    sizes: Sizes,
    roofline: Run,
    timing: str,
    with_flat: bool,
) -> dict:
    """gradtx (and gradtx.flat) against Optax for one method on one tree, the roofline
    kernel between them."""
    contenders = [gradtx_contender(method), optax_contender(method)]
    if with_flat:
        contenders.append(flat_contender(method))
    runs, result = [], {}
    for contender in contenders:
        lib_params, state = contender.init(params)
        compiled, compile_info = compile_step(contender, lib_params, state, grads)
        result[contender.library] = {
            "compile": compile_info,
            "minimal_bytes": minimal_bytes(lib_params, state, grads),
            "state_bytes": nbytes(state),
        }
        runs.append(Run(contender.library, compiled, lib_params, state, grads))
    seconds = time_interleaved([runs[0], roofline, *runs[1:]], sizes, timing)
    del runs
    triad = summarize(seconds.pop(roofline.name))
    bandwidth = 3 * nbytes(roofline.grads) / (triad["median_ms"] * 1e-3)
    result["roofline"] = {"triad": triad, "gb_s": bandwidth / 1e9}
    for library, times in seconds.items():
        entry = result[library]
        entry["time"] = summarize(times)
        bound_ms = entry["minimal_bytes"] / bandwidth * 1e3
        entry["roofline_fraction"] = bound_ms / entry["time"]["median_ms"]
    optax_ = result["optax"]
    for library, prefix in (("gradtx", ""), ("flat", "flat_")):
        if library in result:
            ours = result[library]
            result[prefix + "ratio"] = ours["time"]["median_ms"] / optax_["time"]["median_ms"]
            result[prefix + "compile_ratio"] = (
                ours["compile"]["total_s"] / optax_["compile"]["total_s"]
            )
    return result


# ---------------------------------------------------------------------------- torch


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


TORCH_OPTIMIZERS: dict[str, tuple[str, dict] | None] = {
    "sgd": ("SGD", {"lr": LEARNING_RATE}),
    "momentum": ("SGD", {"lr": LEARNING_RATE, "momentum": 0.9}),
    "nesterov": ("SGD", {"lr": LEARNING_RATE, "momentum": 0.9, "nesterov": True}),
    "adagrad": ("Adagrad", {"lr": LEARNING_RATE, "initial_accumulator_value": 0.1, "eps": 1e-7}),
    "rmsprop": ("RMSprop", {"lr": LEARNING_RATE, "alpha": 0.9, "eps": 1e-8}),
    "adam": ("Adam", {"lr": LEARNING_RATE}),
    "adamw": ("AdamW", {"lr": LEARNING_RATE, "weight_decay": 1e-4}),
    "radam": ("RAdam", {"lr": LEARNING_RATE}),
    "lookahead": None,  # torch.optim has no Lookahead
    "chain": ("AdamW", {"lr": LEARNING_RATE, "weight_decay": 1e-4}),
}


def torch_device() -> str | None:
    """Where torch runs next to JAX's backend; None when it cannot match it."""
    import torch

    if jax.default_backend() == "cpu":
        return "cpu"
    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        return "cuda"
    return None


def warmup_cosine_factor(step: int) -> float:
    """The chain's schedule as torch's LambdaLR multiplier of the peak rate."""
    return float(warmup_cosine(optax)(step)) / LEARNING_RATE


def torch_step_fn(method: str, tensors: list, variant: str, device: str) -> Callable | None:
    """A closure doing one torch.optim step, or None where the variant does not exist."""
    import torch

    spec = TORCH_OPTIMIZERS[method]
    if spec is None:
        return None
    name, kwargs = spec
    try:
        opt = getattr(torch.optim, name)(tensors, **kwargs, **{variant: True})
        opt.step()  # some unsupported fused variants fail only here
    except (RuntimeError, TypeError, ValueError):
        return None
    if method != "chain":
        return opt.step
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine_factor)

    def chain_step():
        torch.nn.utils.clip_grad_norm_(tensors, 1.0, foreach=True)
        opt.step()
        schedule.step()

    return chain_step


def time_torch(
    method: str, params: Any, grads: Any, sizes: Sizes, device: str, timing: str
) -> dict:
    """torch.optim step times (foreach, fused) on the same tree as torch tensors,
    timed per step or per block as the JAX steps are (:func:`time_interleaved`)."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    result = {}
    for variant in ("foreach", "fused"):
        tensors = []
        for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(grads), strict=True):
            tensor = torch.nn.Parameter(torch.tensor(np.asarray(p), device=device))
            tensor.grad = torch.tensor(np.asarray(g), device=device)
            tensors.append(tensor)
        step = torch_step_fn(method, tensors, variant, device)
        if step is None:
            result[variant] = None
            continue
        for _ in range(sizes.warmup):
            step()
        sync()
        seconds = []
        per_timer = sizes.block if timing == "block" else 1
        for _ in range(sizes.rounds * sizes.block // per_timer):
            start = time.perf_counter()
            for _ in range(per_timer):
                step()
            sync()
            seconds.append((time.perf_counter() - start) / per_timer)
        result[variant] = summarize(seconds)
        del tensors, step
    return result


# --------------------------------------------------------------------------- driver


def bench_tree(
    tree: str,
    out: dict,
    args: argparse.Namespace,
    sizes: Sizes,
    roofline: Run,
    torch_dev: str | None,
    save: Callable[[], None],
) -> None:
    """Fills ``out`` with the tree's cells, calling ``save`` after each."""
    shapes = TREES[tree](sizes)
    key_params, key_grads = jax.random.split(jax.random.key(0))
    params = random_tree(shapes, key_params, 0.02)
    grads = random_tree(shapes, key_grads, 1e-3)
    out.update({"leaves": len(shapes), "floats": nfloats(params), "methods": {}})
    with_flat = not args.no_flat and len(shapes) > 1  # one leaf: flat changes nothing
    for method in args.methods:
        result = bench_method(method, params, grads, sizes, roofline, args.timing, with_flat)
        if torch_dev is not None:
            result["torch"] = time_torch(method, params, grads, sizes, torch_dev, args.timing)
        out["methods"][method] = result
        print(progress_line(tree, method, result), file=sys.stderr, flush=True)
        save()
        gc.collect()
    del params, grads
    gc.collect()
    jax.clear_caches()


def progress_line(tree: str, method: str, result: dict) -> str:
    g, o = result["gradtx"], result["optax"]
    return (
        f"  {tree:12s} {METHOD_LABELS.get(method, method):26s} "
        f"gradtx {g['time']['median_ms']:9.3f} ms  optax {o['time']['median_ms']:9.3f} ms  "
        f"ratio {result['ratio']:.2f}  compile {g['compile']['total_s']:.2f}s / "
        f"{o['compile']['total_s']:.2f}s"
        + (
            f"  flat {result['flat']['time']['median_ms']:.3f} ms, "
            f"{result['flat']['compile']['total_s']:.2f}s"
            if "flat" in result
            else ""
        )
    )


def cpu_name() -> str:
    """The CPU's model name where /proc/cpuinfo gives it, else the platform's word."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_version() -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes under gradtx/), if git says."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "gradtx")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit + ("+dirty" if dirty else "")) or "unknown"


def machine_info() -> dict:
    device = jax.devices()[0]
    info = {
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "gradtx": getattr(gradtx, "__version__", "dev"),
        "gradtx_commit": source_version(),
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "device_count": jax.device_count(),
    }
    if torch_available():
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def interleaved_roofline(trees: dict) -> dict:
    """Median and range of the triad bandwidths timed between the cells' libraries."""
    values = [r["roofline"]["gb_s"] for t in trees.values() for r in t["methods"].values()]
    return {
        "median": float(np.median(values)) if values else None,
        "min": min(values, default=None),
        "max": max(values, default=None),
    }


def run(args: argparse.Namespace, save: Callable[[dict], None]) -> dict:
    """Every tree and method of ``args``; ``save(result)`` after each cell (a partial
    result: ``finished`` false, no roofline after the trees)."""
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = dataclasses.replace(sizes, rounds=args.rounds)
    start = time.perf_counter()
    roofline_before = measure_roofline(sizes.roofline_floats, args.timing)
    print(f"roofline: {roofline_before['gb_s']:.1f} GB/s", file=sys.stderr, flush=True)
    use_torch = torch_available() and not args.no_torch
    torch_dev = torch_device() if use_torch else None
    result: dict = {
        "command": "python benchmarks/step_time.py " + " ".join(sys.argv[1:]),
        "quick": args.quick,
        "finished": False,
        "timing": args.timing,
        "sizes": dataclasses.asdict(sizes),
        "machine": machine_info(),
        "torch_device": torch_dev,
        "roofline": {"before": roofline_before, "after": None},
        "learning_rate": LEARNING_RATE,
        "lookahead_sync_period": SYNC_PERIOD,
        "trees": {},
    }

    def save_partial() -> None:
        result["roofline"]["interleaved_gb_s"] = interleaved_roofline(result["trees"])
        result["wall_s"] = time.perf_counter() - start
        result["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        save(result)

    roofline = triad_run(sizes.roofline_floats)
    for tree in args.trees:
        print(f"{tree}:", file=sys.stderr, flush=True)
        result["trees"][tree] = {}
        bench_tree(tree, result["trees"][tree], args, sizes, roofline, torch_dev, save_partial)
    result["roofline"]["after"] = measure_roofline(sizes.roofline_floats, args.timing)
    result["finished"] = True
    save_partial()
    return result


# ------------------------------------------------------------------------- markdown


def fmt_ms(entry: dict | None) -> str:
    if entry is None:
        return ""
    half_iqr = (entry["p75_ms"] - entry["p25_ms"]) / 2
    return f"{entry['median_ms']:.3g} ± {half_iqr:.2g}"


def fmt_gb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def fmt_mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def tree_table(name: str, tree: dict, with_torch: bool) -> list[str]:
    header = [
        "method",
        "gradtx ms",
        "optax ms",
        "gradtx / optax",
        "gradtx % roofline",
        "optax % roofline",
        "gradtx compile s",
        "optax compile s",
        "compile ratio",
        "gradtx temp MB",
        "optax temp MB",
        "roofline GB/s",
    ]
    with_flat = any("flat" in r for r in tree["methods"].values())
    if with_flat:
        header += ["flat ms", "flat / optax", "flat compile s", "flat compile ratio"]
    if with_torch:
        header += ["torch foreach ms", "torch fused ms"]
    lines = [
        f"### {name}: {tree['leaves']:,} leaves, {tree['floats'] / 1e6:.1f}M float32",
        "",
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
    ]
    for method, r in tree["methods"].items():
        g, o = r["gradtx"], r["optax"]
        cells = [
            f"`{METHOD_LABELS.get(method, method)}`",
            fmt_ms(g["time"]),
            fmt_ms(o["time"]),
            f"**{r['ratio']:.2f}**" if r["ratio"] > 1.05 else f"{r['ratio']:.2f}",
            f"{100 * g['roofline_fraction']:.0f}%",
            f"{100 * o['roofline_fraction']:.0f}%",
            f"{g['compile']['total_s']:.2f}",
            f"{o['compile']['total_s']:.2f}",
            f"{r['compile_ratio']:.2f}",
            fmt_mb(g["compile"]["temp_bytes"]),
            fmt_mb(o["compile"]["temp_bytes"]),
            fmt_gb(r["roofline"]["gb_s"]),
        ]
        if with_flat:
            f = r["flat"]
            cells += [
                fmt_ms(f["time"]),
                f"{r['flat_ratio']:.2f}",
                f"{f['compile']['total_s']:.2f}",
                f"{r['flat_compile_ratio']:.2f}",
            ]
        if with_torch:
            torch_result = r.get("torch") or {}
            cells += [fmt_ms(torch_result.get("foreach")), fmt_ms(torch_result.get("fused"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def target_lines(result: dict) -> list[str]:
    """The speed targets, each with the measured number and met / not met."""
    trees = result["trees"]
    cells = [(t, m, r) for t, tree in trees.items() for m, r in tree["methods"].items()]
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    if cells:
        ratios = [r["ratio"] for _, _, r in cells]
        worst_tree, worst_method, worst = max(cells, key=lambda c: c[2]["ratio"])
        above = [f"{t}/{METHOD_LABELS.get(m, m)}" for t, m, r in cells if r["ratio"] > 1.1]
        median = float(np.median(ratios))
        lines.append(
            f"- gradtx / Optax step time, median over all cells: {median:.2f} "
            f"(target <= 1.0: {verdict(median <= 1.0)})"
        )
        lines.append(
            f"- worst cell: {worst['ratio']:.2f} ({worst_tree}, "
            f"{METHOD_LABELS.get(worst_method, worst_method)}); cells above 1.1: "
            f"{len(above)} of {len(cells)}{': ' + ', '.join(above) if above else ''} "
            f"(target: none: {verdict(not above)})"
        )
    lookahead = {
        t: tr["methods"]["lookahead"] for t, tr in trees.items() if "lookahead" in tr["methods"]
    }
    if lookahead:
        speedups = {t: 1 / r["ratio"] for t, r in lookahead.items()}
        mean_speedups = {
            t: r["optax"]["time"]["mean_ms"] / r["gradtx"]["time"]["mean_ms"]
            for t, r in lookahead.items()
        }
        listed = ", ".join(
            f"{t} {speedups[t]:.2f}x (mean step, syncs included: {mean_speedups[t]:.2f}x)"
            for t in lookahead
        )
        large = [speedups[t] for t in lookahead if t != "many_leaves"]
        lines.append(
            f"- lookahead(adam), Optax / gradtx median step time: {listed} "
            f"(target >= 3x on the large trees: {verdict(bool(large) and min(large) >= 3)})"
        )
    chains = {t: tr["methods"]["chain"] for t, tr in trees.items() if "chain" in tr["methods"]}
    if chains:
        listed = ", ".join(
            f"{t} {fmt_mb(r['gradtx']['compile']['temp_bytes'])} / "
            f"{fmt_mb(r['optax']['compile']['temp_bytes'])}"
            for t, r in chains.items()
        )
        lines.append(f"- clip+adamw+warmup-cosine temporaries, gradtx / Optax MB: {listed}")
    if "transformer" in trees:
        compiles = {m: r["compile_ratio"] for m, r in trees["transformer"]["methods"].items()}
        worst = max(compiles, key=compiles.get)
        listed = ", ".join(f"{METHOD_LABELS.get(m, m)} {c:.2f}" for m, c in compiles.items())
        lines.append(
            f"- transformer tree, compile gradtx / Optax: {listed} (target <= 1 everywhere: "
            f"{verdict(compiles[worst] <= 1.0)}, worst {METHOD_LABELS.get(worst, worst)})"
        )
    return lines


def timing_sentence(result: dict) -> str:
    sizes, block = result["sizes"], result["sizes"]["block"]
    steps = sizes["rounds"] * block
    if result["timing"] == "block":
        how = (
            f"Step times: median ± half the interquartile range of {sizes['rounds']} block "
            f"means per library, each block {block} steps dispatched back to back and timed "
            f"to the last result ({steps} steps), the libraries alternating block by block"
        )
    else:
        how = (
            f"Step times: median ± half the interquartile range over {steps} steps per "
            f"library, each timed to its result, the libraries alternating in blocks of {block}"
        )
    return how + f" after {sizes['warmup']} warm-up steps."


def markdown(result: dict) -> str:
    machine = result["machine"]
    roof = result["roofline"]
    inter = roof["interleaved_gb_s"]
    after = roof["after"] or {"triad_gb_s": float("nan"), "read3_write2_gb_s": float("nan")}
    with_torch = result["torch_device"] is not None
    lines = [
        f"`{result['command'].strip()}` ({'quick' if result['quick'] else 'full'} run, "
        f"{result['date']}, {result['wall_s'] / 60:.1f} min"
        + ("" if result["finished"] else "; **stopped before the end: a partial table**")
        + ")",
        "",
        f"Machine: {machine['processor']}, {machine['cpu_count']} CPUs; JAX {machine['jax']} "
        f"on {machine['backend']} ({machine['device']}), gradtx at {machine['gradtx_commit']}, "
        f"Optax {machine['optax']}"
        + (
            f", torch {machine['torch']} ({machine['torch_threads']} threads)"
            if with_torch
            else ", torch not installed"
        )
        + ".",
        f"Roofline: a jitted triad `a <- a + 0.5 b` on {roof['before']['floats'] / 1e6:.1f}M "
        f"float32 (`a` donated: 3 arrays moved), timed in blocks between the two libraries' "
        f"blocks of every cell: {fmt_gb(inter['median'])} GB/s, median over the cells "
        f"({fmt_gb(inter['min'])} to {fmt_gb(inter['max'])}); each cell's % roofline uses the "
        f"triad of its own rounds. Timed alone before / after the trees: triad "
        f"{roof['before']['triad_gb_s']:.1f} / {after['triad_gb_s']:.1f} GB/s, an "
        f"Adam-like read-3/write-2 kernel {roof['before']['read3_write2_gb_s']:.1f} / "
        f"{after['read3_write2_gb_s']:.1f} GB/s.",
        "",
        timing_sentence(result) + f" % roofline: the bytes a step must move "
        f"(params read + written, grads read, state read + written) at the cell's triad "
        f"bandwidth, over the median step time. Compile: trace + lower + XLA compile of a "
        f"fresh jitted step. Temp MB: XLA's temporary buffers. Ratios above 1.05 in bold. "
        f"lookahead syncs every {result['lookahead_sync_period']} steps.",
        "",
    ]
    for name, tree in result["trees"].items():
        lines += tree_table(name, tree, with_torch) + [""]
    lines += ["Against the targets:", ""] + target_lines(result)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def parse_list(value: str, allowed: list[str], what: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}"
        )
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small trees, few steps (< 1 min)")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        type=lambda v: parse_list(v, list(METHODS), "method"),
        help=f"comma-separated subset of {','.join(METHODS)}",
    )
    parser.add_argument(
        "--trees",
        default=",".join(TREES),
        type=lambda v: parse_list(v, list(TREES), "tree"),
        help=f"comma-separated subset of {','.join(TREES)}",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="timed rounds (default 12 full, 8 quick; 5 steps per library each)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the torch.optim columns")
    parser.add_argument(
        "--no-flat", action="store_true", help="skip the gradtx.flat columns (trees of 2+ leaves)"
    )
    parser.add_argument(
        "--timing",
        choices=("step", "block"),
        default=None,
        help="time each step to its result, or each block of steps to its last "
        "(default: step on a CPU, block on an accelerator)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="folder for step_time.json and .md (step_time_quick.* with --quick)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.timing is None:
        args.timing = "step" if jax.default_backend() == "cpu" else "block"
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / ("step_time_quick" if args.quick else "step_time")
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")

    def save(result: dict) -> None:  # after every cell: a stopped run keeps what it measured
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        md_path.write_text(markdown(result), encoding="utf-8")

    result = run(args, save)
    print(markdown(result))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
