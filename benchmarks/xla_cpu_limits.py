"""Measurements behind the speed targets that XLA:CPU does not let any optimizer reach.

Twelve facts, each measured on whatever JAX's default backend is (they are about
XLA:CPU; on a GPU the numbers differ):

1. **Kernels per leaf.** XLA:CPU gives every output array its own kernel (no
   multi-output fusion: the option is not even accepted as a compile option).
   An Adam step writes three arrays per leaf (``m``, ``v``, the params), so it is
   three kernels per leaf in gradtx and in Optax alike. Each kernel reads what it
   needs again: ``m``: read ``g, m``, write ``m``; ``v``: read ``g, v``, write ``v``;
   params: read ``p, m, v``, write ``p``: 40 bytes per float32 parameter against
   the 28 a fused step would move, so at most 70% of the roofline.
2. **Cutting one buffer into many leaves.** A flat-buffer mode needs one slice per
   leaf to hand the user's tree back. Slicing one buffer into 2000 leaves of 1000
   floats costs tens of seconds of XLA compile time by itself, more than Optax's
   whole Adam step on that tree, while concatenating them costs about a second.
3. **Lookahead is Adam plus a sync.** ``lookahead(adam)`` cannot be faster than
   ``adam``: Optax's lookahead over plain Adam is the most it can gain. A
   lookahead that writes the new slow weights into its state in the sync step
   itself (a ``lax.cond`` on the sync) needs the inner update twice, for the
   update and for the state, so XLA holds it in a temporary as large as the
   params at every step (see 1), and XLA:CPU hands a large temporary back to
   the system after each run: its pages fault in anew, one minor page fault per
   4096 bytes, at every step. gradtx stores the slow weights one update late
   (after a sync the params are the slow weights) and keeps no temporary.
   Measured: step ms and page faults per step of both.
4. **Runtime offsets.** XLA:CPU compiles each distinct kernel once and shares
   identical ones. ``gradtx.flat`` cuts its buffers at offsets XLA sees as
   runtime values, so the leaves of one shape share one kernel; with
   ``share_kernels=False`` (constant offsets) every leaf is a kernel of its own.
   Measured: compile seconds and step time of ``flat(adam)`` both ways, against
   Optax's Adam. Constant integers folded into kernels cost the same (``p + i``
   for 1000 leaves compiles in seconds, ``p + 1`` in a fraction of one).
5. **Global-norm clipping on many leaves.** Compile seconds of a jitted
   ``clip_by_global_norm(1.0)`` update on many leaves, gradtx against Optax
   (gradtx's compiles an overflow rescue that Optax does not have).
6. **The program per leaf.** StableHLO operations per leaf of an Adam and an
   RMSProp step, and the seconds to trace and lower it and to compile it, gradtx
   against Optax: what a first call costs on a tree of many leaves, where XLA's
   work grows with the operations it is given.
7. **Blocking does not beat item 1.** A step done block by block (a
   ``fori_loop`` of ``dynamic_slice`` / ``dynamic_update_slice``) would keep each
   block in cache between the three kernels. Measured on one array's EMA, where
   XLA copies nothing: the loop's cost per block exceeds what the cache saves,
   at every block size, so item 1's bound stands.
8. **A cond per leaf.** The overflow rescue of the per-leaf clippings
   (``clip_by_block_rms``, ``clip_by_leaf_norm``, ``adaptive_grad_clip``) is a
   ``lax.cond`` on CPU, one per leaf, whose output is the leaf's norm.
   Measured: compile seconds of a norm-and-scale per leaf with no cond and with
   a cond of one output per leaf; and of the per-leaf clippings on those
   leaves, gradtx against Optax (which has no rescue).
9. **The floor of a step on many leaves.** A step ends with ``apply_updates``,
   one ``p + u`` per leaf: with one kernel per output array (item 1), a tree of
   2000 leaves costs 2000 kernel launches however the update is computed.
   Measured, interleaved: that least program (``p - g`` per leaf, donated)
   against Optax's SGD, momentum and Adam steps and ``gradtx.flat``'s, on 2000
   leaves of 1000 floats. The floor over Optax's step is the best ratio any
   library can reach on that tree: about 1 for SGD (Optax's SGD *is* the
   floor) and above 0.5 for momentum. The floor's compile seconds, over
   Optax's, bound the first call the same way: no program that writes 2000
   arrays compiles in less.
10. **The least program per cell.** For each element-wise cell of
   ``step_time.py``'s table: the bytes per parameter that gradtx's and Optax's
   compiled steps move (every kernel of the entry computation reading its
   operands and writing its result), against the least a program of one kernel
   per output array can move (``LEAST_PROGRAM``: Adam 40 bytes, SGD 12); on
   2000 leaves, kernels per leaf against one per output array. Where Optax's
   step already is that least program, no step can be faster than Optax's on
   a memory-bound cell: the lowest gradtx / Optax ratio the cell allows is 1.
   ``best_median`` is the median of those lowest ratios over the table's 40
   cells, counting every lookahead, chain and 2000-leaf cell (where ``flat``
   changes the program) as 0, the most favourable case.
11. **A sum over small arrays keeps them.** XLA:CPU reduces an array of fewer
   than about 4096 elements through a tree of partial sums whose input is a
   kernel of its own: ``sum(x * x)`` of 1000 floats writes the 1000 squares to a
   temporary first (at 4096 the square is fused into the sum and nothing is
   kept). Nor does it fuse a concatenation into a sum. So a global norm over
   many leaves of 1000 floats holds as many bytes as the leaves, summed leaf by
   leaf (Optax, and gradtx's ``clip_by_global_norm``), by ``vdot``, joined by
   groups large enough to be fused, or joined whole
   (:func:`gradtx.tree.squared_norm`): the temporary of the clip + AdamW chain
   on 2000 such leaves is one gradient's worth, not one leaf's.
   Measured: temporary bytes of each of those programs.
12. **A host callback slows every kernel.** A program that holds a host callback
   (``jax.debug.callback``, as ``apply_if_finite(..., raise_after=N)`` needs to
   raise under ``jit``) runs each of its kernels 10-15 us slower on XLA:CPU,
   even when the callback is in a ``lax.cond`` branch that never runs.
   Measured, interleaved, on many leaves of 1000 floats: the floor of item 9 with
   and without a callback of one scalar, and ``apply_if_finite(adam)`` with and
   without ``raise_after``, against Optax's (which cannot raise).
13. **The overflow rescue cannot share the first pass.** The per-leaf
   clippings could drop item 8's cond by summing ``|x|^2`` and ``|x c|^2`` in one
   variadic reduction and selecting the second where the first overflowed: no
   branch, and one kernel per leaf fewer than ``sum(x * x)`` (item 11). But
   XLA:CPU runs a variadic reduction as one sequential loop instead of its
   vectorised tree of partial sums: on a large leaf the pass is several times
   slower and its sum loses most of its digits, and on small leaves it compiles
   slower than the two sums it would replace.
   Measured: ms and relative error (against a float64 sum) of ``sum(x * x)`` and
   of the one-pass pair on one array, and the kernels per leaf and compile
   seconds of each leaf scaled by its norm, both ways, on many small leaves.

Usage::

    python benchmarks/xla_cpu_limits.py            # about 4 minutes on 2 cores
    python benchmarks/xla_cpu_limits.py --leaves 500
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import resource
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from step_time import (
    ELEMENTWISE,
    FULL,
    METHODS,
    QUICK,
    TREES,
    Run,
    Sizes,
    nfloats,
    random_tree,
    time_interleaved,
)

import gradtx

_ITEM_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2}
_ITEM_BYTES |= {"s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_NOT_KERNELS = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}


def _shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape such as ``f32[4096,4096]{1,0}`` or a tuple of them."""
    total = 0
    for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", shape):
        total += int(np.prod([int(d) for d in dims.split(",") if d])) * _ITEM_BYTES[dtype]
    return total


def _split_balanced(text: str) -> tuple[str, str]:
    """``"(a, (b)) rest"`` -> ``("(a, (b))", "rest")``: the leading parenthesised group."""
    depth = 0
    for i, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if depth == 0:
            return text[: i + 1], text[i + 1 :].lstrip()
    raise ValueError(f"unbalanced HLO text: {text[:80]!r}")


def kernel_traffic(compiled: Any) -> tuple[int, int]:
    """Kernels in a compiled program's entry computation, and the bytes they move:
    every kernel's operands read whole and its result written whole.

    A kernel is every instruction but parameters, constants, tuples, tuple
    elements and bitcasts (which move nothing). A ``conditional`` or ``while``
    counts as one kernel that reads its operands and writes its result.
    """
    text = compiled.as_text()
    entry = text[text.index("ENTRY") :].split("\n}")[0]
    sizes: dict[str, int] = {}
    kernels = traffic = 0
    for line in entry.splitlines()[1:]:
        match = re.match(r"\s*(?:ROOT )?%(\S+) = (.*)", line)
        if match is None:
            continue
        name, rest = match.groups()
        if rest.startswith("("):
            shape, rest = _split_balanced(rest)
        else:
            shape, _, rest = rest.partition(" ")
        sizes[name] = _shape_bytes(shape)
        op = re.match(r"[\w-]+", rest)
        if op is None or op.group() in _NOT_KERNELS:
            continue
        operands, _ = _split_balanced(rest[op.end() :])
        kernels += 1
        traffic += sizes[name] + sum(sizes[o] for o in re.findall(r"%([^\s,()]+)", operands))
    return kernels, traffic


def adam_step(tx: Any) -> Callable:
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def compiled_step(lib: Any, method: str, params: Any) -> Any:
    """A donated, jitted step (update + apply_updates) of ``step_time.py``'s ``method``."""
    tx = METHODS[method](lib)
    step = jax.jit(adam_step(tx), donate_argnums=(0, 1))
    return step.lower(params, tx.init(params), params).compile()


def per_leaf_kernels(lib: Any, method: str) -> float:
    """Kernels per leaf of a step of ``step_time.py``'s ``method``, from the
    difference between trees of 4 and 8 leaves of 1000 floats."""
    counts = []
    for leaves in (4, 8):
        params = {f"p{i}": jnp.ones(1000) for i in range(leaves)}
        counts.append(kernel_traffic(compiled_step(lib, method, params))[0])
    return (counts[1] - counts[0]) / 4


def kernels_per_leaf() -> dict[str, float | str]:
    """Adam's kernels per leaf in gradtx and Optax; whether XLA:CPU takes the option."""
    out: dict[str, float | str] = {
        "gradtx": per_leaf_kernels(gradtx, "adam"),
        "optax": per_leaf_kernels(optax, "adam"),
    }
    try:
        jax.jit(lambda x: x + 1).lower(jnp.ones(3)).compile(
            compiler_options={"xla_cpu_use_multi_output_fusion": True}
        )
        out["multi_output_fusion_option"] = "accepted"
    except Exception as error:  # XLA's error type varies by version
        out["multi_output_fusion_option"] = str(error).splitlines()[0][:120]
    return out


def compile_seconds(fn: Callable, *args: Any) -> float:
    start = time.perf_counter()
    jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - start


def slicing_cost(leaves: int, size: int) -> dict[str, float]:
    """Compile seconds: concatenating ``leaves`` arrays, cutting a buffer back into them."""
    parts = [jnp.ones(size) for _ in range(leaves)]
    buffer = jnp.ones(leaves * size)

    def cut(b):
        return [jax.lax.slice_in_dim(b, i * size, (i + 1) * size) for i in range(leaves)]

    params = {f"p{i}": p for i, p in enumerate(parts)}
    tx = optax.adam(1e-3)
    return {
        "concatenate": compile_seconds(jnp.concatenate, parts),
        "slice_into_leaves": compile_seconds(cut, buffer),
        "optax_adam_step": compile_seconds(adam_step(tx), params, tx.init(params), params),
    }


def median_step_ms(step: Callable, params: Any, state: Any, grads: Any, steps: int = 30) -> float:
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    for _ in range(3):
        params, state = compiled(params, state, grads)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        params, state = compiled(params, state, grads)
        jax.block_until_ready((params, state))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def minor_faults_per_step(
    step: Callable, params: Any, state: Any, grads: Any, steps: int = 20
) -> float:
    """Minor page faults of the process per run of the donated, jitted ``step``."""
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    for _ in range(3):
        params, state = compiled(params, state, grads)
    jax.block_until_ready((params, state))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        params, state = compiled(params, state, grads)
        jax.block_until_ready((params, state))
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def lookahead_storing_in_the_sync_step(inner: Any, k: int, alpha: float) -> Any:
    """Lookahead whose sync step writes the new slow weights into the state (a
    ``lax.cond``): gradtx's design before it stored them one update late."""

    def init(params):
        return inner.init(params), jnp.zeros([], jnp.int32), jax.tree.map(jnp.copy, params)

    def update(grads, state, params):
        fast_state, steps, slow = state
        u, fast_state = inner.update(grads, fast_state, params)

        def sync(operand):
            u, slow = operand
            new_slow = jax.tree.map(lambda s, p, d: s + alpha * (p + d - s), slow, params, u)
            return jax.tree.map(jnp.subtract, new_slow, params), new_slow

        is_sync = steps >= k - 1
        out, slow = jax.lax.cond(is_sync, sync, lambda operand: operand, (u, slow))
        return out, (fast_state, jnp.where(is_sync, 0, steps + 1), slow)

    return optax.GradientTransformation(init, update)


def lookahead_bound(size: int) -> dict[str, float]:
    """Step times (ms) of plain Adam and of Optax's and gradtx's lookahead(adam),
    and of a lookahead storing the slow weights in the sync step; page faults
    per step of Adam, of gradtx's lookahead and of that one."""
    grads = {"w": jnp.full((size,), 0.01)}

    def fresh():
        return {"w": jnp.ones((size,))}

    plain = gradtx.adam(1e-3)
    ours = gradtx.lookahead(gradtx.adam(1e-3), sync_period=6, slow_step_size=0.5)
    theirs = optax.lookahead(optax.adam(1e-3), sync_period=6, slow_step_size=0.5)
    wrapped = optax.LookaheadParams(fresh(), fresh())
    out = {
        "adam": median_step_ms(adam_step(plain), fresh(), plain.init(fresh()), grads),
        "gradtx_lookahead": median_step_ms(adam_step(ours), fresh(), ours.init(fresh()), grads),
        "optax_lookahead": median_step_ms(adam_step(theirs), wrapped, theirs.init(wrapped), grads),
    }
    out["optax_lookahead_over_adam"] = out["optax_lookahead"] / out["adam"]
    eager = lookahead_storing_in_the_sync_step(gradtx.adam(1e-3), 6, 0.5)
    out["storing_in_sync_step"] = median_step_ms(
        adam_step(eager), fresh(), eager.init(fresh()), grads
    )
    for name, tx in [("adam", plain), ("gradtx_lookahead", ours), ("storing_in_sync_step", eager)]:
        out[f"{name}_faults_per_step"] = minor_faults_per_step(
            adam_step(tx), fresh(), tx.init(fresh()), grads
        )
    out["pages_of_one_leaf"] = size * 4 / 4096
    return out


def flat_offsets_cost(leaves: int, size: int = 1000) -> dict[str, dict[str, float]]:
    """Compile seconds and step ms of ``flat(adam)`` with runtime and constant offsets."""

    def fresh():  # the timed steps donate their params
        return {f"p{i:04d}": jnp.full((size,), 0.5) for i in range(leaves)}

    grads = {k: jnp.full((size,), 0.01) for k in fresh()}

    def cost(tx: Any) -> dict[str, float]:
        step = adam_step(tx)
        return {
            "compile_s": compile_seconds(step, fresh(), tx.init(fresh()), grads),
            "step_ms": median_step_ms(step, fresh(), tx.init(fresh()), grads),
        }

    return {
        "flat_shared_kernels": cost(gradtx.flat(gradtx.adam(1e-3), share_kernels=True)),
        "flat_kernel_per_leaf": cost(gradtx.flat(gradtx.adam(1e-3), share_kernels=False)),
        "optax_adam": cost(optax.adam(1e-3)),
    }


def clip_compile_cost(leaves: int, size: int = 1000) -> dict[str, float]:
    """Compile seconds of a jitted ``clip_by_global_norm(1.0)`` update, gradtx and Optax."""
    grads = {f"p{i:04d}": jnp.full((size,), 0.5) for i in range(leaves)}

    def cost(tx: Any) -> float:
        return compile_seconds(lambda g, s: tx.update(g, s)[0], grads, tx.init(grads))

    return {
        "gradtx": cost(gradtx.clip_by_global_norm(1.0)),
        "optax": cost(optax.clip_by_global_norm(1.0)),
    }


def program_per_leaf(leaves: int, size: int = 1000) -> dict[str, dict[str, float]]:
    """StableHLO ops per leaf, trace + lower and compile seconds of a jitted step."""
    params = {f"p{i:04d}": jnp.zeros((size,), jnp.float32) for i in range(leaves)}
    out = {}
    for name in ("adam", "rmsprop"):
        for lib in (optax, gradtx):
            tx = getattr(lib, name)(1e-3)
            start = time.perf_counter()
            lowered = jax.jit(adam_step(tx)).lower(params, tx.init(params), params)
            traced = time.perf_counter()
            lowered.compile()
            done = time.perf_counter()
            text = lowered.as_text()
            out[f"{lib.__name__}_{name}"] = {
                "ops_per_leaf": len(re.findall(r"^\s*%\S+ = ", text, re.M)) / leaves,
                "trace_lower_s": traced - start,
                "compile_s": done - traced,
            }
    return out


def blocked_ema_cost(size: int) -> dict[str, float]:
    """Median ms of a donated ``m <- 0.9 m + 0.1 g`` over one array, whole and by blocks."""

    def whole(m, g):
        return 0.9 * m + 0.1 * g

    def blocked(block):
        def ema(m, g):
            def body(i, m):
                start = i * block
                mb = jax.lax.dynamic_slice_in_dim(m, start, block)
                gb = jax.lax.dynamic_slice_in_dim(g, start, block)
                return jax.lax.dynamic_update_slice_in_dim(m, 0.9 * mb + 0.1 * gb, start, 0)

            return jax.lax.fori_loop(0, size // block, body, m)

        return ema

    def median_ms(fn):
        compiled = jax.jit(fn, donate_argnums=0).lower(jnp.ones(size), jnp.ones(size)).compile()
        m, g, times = jnp.ones(size), jnp.ones(size), []
        for _ in range(25):
            start = time.perf_counter()
            m = compiled(m, g)
            m.block_until_ready()
            times.append(time.perf_counter() - start)
        return 1e3 * float(np.median(times[3:]))

    out = {"whole": median_ms(whole)}
    for block in (2**12, 2**14, 2**16, 2**18, 2**20):
        if size % block == 0:
            out[f"block_{block}"] = median_ms(blocked(block))
    return out


def cond_outputs_cost(leaves: int, size: int = 1000) -> dict[str, float]:
    """Compile seconds: each leaf scaled by its norm, with and without a cond between."""
    xs = [jnp.full((size,), 0.5) for _ in range(leaves)]

    def squares(xs):
        sq = [jnp.sum(x * x) for x in xs]
        return sq, jnp.any(jnp.stack([jnp.isinf(s) for s in sq]))

    def no_cond(xs):
        sq, _ = squares(xs)
        return [x * jnp.sqrt(s) for x, s in zip(xs, sq, strict=True)]

    def cond_per_leaf(xs):
        sq, flag = squares(xs)
        norms = jax.lax.cond(flag, lambda: [2 * s for s in sq], lambda: [jnp.sqrt(s) for s in sq])
        return [x * n for x, n in zip(xs, norms, strict=True)]

    out = {f.__name__: compile_seconds(f, xs) for f in (no_cond, cond_per_leaf)}
    params = {f"p{i:04d}": x for i, x in enumerate(xs)}
    for name in ("clip_by_block_rms", "adaptive_grad_clip"):
        value = 1.0 if name == "clip_by_block_rms" else 0.01
        for lib in (gradtx, optax):
            tx = getattr(lib, name)(value)
            out[f"{lib.__name__}_{name}"] = compile_seconds(
                adam_step(tx), params, tx.init(params), params
            )
    return out


def fresh_leaves(leaves: int, size: int, value: float = 0.5) -> dict[str, Any]:
    """``leaves`` float32 arrays of ``size``, new buffers (a donated step owns them)."""
    return {f"p{i:04d}": jnp.full((size,), value, jnp.float32) for i in range(leaves)}


def floor_step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
    """The least step that writes every param leaf: ``p - g``, one kernel per leaf."""
    return jax.tree.map(lambda p, g: p - g, params, grads), state


def interleaved_steps(
    steps: dict[str, tuple[Callable, Any]], leaves: int, size: int, rounds: int, block: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms and first-call compile seconds of each donated ``(step, state)`` on
    ``leaves`` fresh leaves of ``size`` floats, the steps interleaved by rounds."""
    grads = fresh_leaves(leaves, size, 0.01)
    runs, compile_s = [], {}
    for name, (step, state) in steps.items():
        jax.clear_caches()  # no step reuses what another one compiled
        start = time.perf_counter()
        params = fresh_leaves(leaves, size)
        compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
        compile_s[name] = time.perf_counter() - start
        runs.append(Run(name, compiled, fresh_leaves(leaves, size), state, grads))
    sizes = dataclasses.replace(QUICK, warmup=2, rounds=rounds, block=block)
    seconds = time_interleaved(runs, sizes, "step")
    return {name: 1e3 * float(np.median(times)) for name, times in seconds.items()}, compile_s


def many_leaves_floor(leaves: int, size: int = 1000, rounds: int = 10) -> dict[str, float]:
    """Median step ms on ``leaves`` leaves: the least program that writes every
    param leaf, and Optax's and ``gradtx.flat``'s steps, interleaved by rounds."""

    steps = {"floor": (floor_step, ())}
    for name, lib in (("optax", optax), ("gradtx_flat", None)):
        for method, make in (
            ("sgd", lambda m: m.sgd(0.1)),
            ("momentum", lambda m: m.sgd(0.1, momentum=0.9)),
            ("adam", lambda m: m.adam(1e-3)),
        ):
            tx = make(lib) if lib else gradtx.flat(make(gradtx))
            steps[f"{name}_{method}"] = (adam_step(tx), tx.init(fresh_leaves(leaves, size)))
    out, compile_s = interleaved_steps(steps, leaves, size, rounds, block=6)
    for method in ("sgd", "momentum", "adam"):
        out[f"floor / optax_{method}"] = out["floor"] / out[f"optax_{method}"]
    out.update({f"{name}_compile_s": s for name, s in compile_s.items()})
    for method in ("sgd", "momentum", "adam"):
        out[f"floor / optax_{method}_compile"] = compile_s["floor"] / compile_s[f"optax_{method}"]
    return out


# The least program of each method when every output array is its own kernel (item
# 1): (state arrays, arrays the update reads). A state array's kernel reads the
# gradient and that array and writes it: 3 arrays. The params' kernel reads the
# params and what the update needs at least, and writes the params. SGD's update
# needs g; momentum's the new trace; Nesterov's g and the new trace; AdaGrad's and
# RMSProp's g and the new accumulator; the Adam family's the two new moments.
LEAST_PROGRAM = {"sgd": (0, 1), "momentum": (1, 1), "nesterov": (1, 2), "adagrad": (1, 2)}
LEAST_PROGRAM |= {"rmsprop": (1, 2), "adam": (2, 2), "adamw": (2, 2), "radam": (2, 2)}


def least_arrays(method: str) -> int:
    """Arrays a step of ``method`` moves per parameter, at least, one kernel per output."""
    state, reads = LEAST_PROGRAM[method]
    return 3 * state + reads + 2


def least_program_cells(sizes: Sizes = FULL) -> dict[str, Any]:
    """Per cell of ``step_time.py``'s table: the bytes per parameter (float32) that
    gradtx's and Optax's compiled steps move, against the least a program of one
    kernel per output can move; on many leaves, kernels per leaf against the least
    (one per output array). The lowest gradtx / Optax ratio a cell allows is the
    least over Optax's; the best median the table allows counts every
    lookahead, chain and many-leaf cell as 0."""
    cells: dict[str, dict[str, float]] = {}
    for tree in ("one_leaf", "mlp", "transformer"):
        params = random_tree(TREES[tree](sizes), jax.random.PRNGKey(0), 1.0)
        floats = nfloats(params)
        for method in ELEMENTWISE:
            moved = {
                lib.__name__: kernel_traffic(compiled_step(lib, method, params))[1] / floats
                for lib in (gradtx, optax)
            }
            least = 4.0 * least_arrays(method)
            moved["least"] = least
            moved["best"] = least / moved["optax"]
            cells[f"{tree}/{method}"] = {key: round(value, 3) for key, value in moved.items()}
    for method in ELEMENTWISE:
        per_leaf = {lib.__name__: per_leaf_kernels(lib, method) for lib in (gradtx, optax)}
        outputs = 1 + LEAST_PROGRAM[method][0]  # the params and each state array
        cells[f"many_leaves/{method}"] = {
            **per_leaf,
            "least": outputs,
            "best": outputs / per_leaf["optax"],
        }
    bounded = [
        cell["best"] for tree_method, cell in cells.items() if not tree_method.startswith("many")
    ]
    unbounded = len(TREES) * len(METHODS) - len(bounded)
    return {
        "cells": cells,
        "cells_at_least": sum(b >= 0.999 for b in bounded),
        "best_median": round(float(np.median([0.0] * unbounded + bounded)), 3),
    }


def small_sum_temporaries(leaves: int = 200, size: int = 1000) -> dict[str, int]:
    """Temporary bytes of a sum of squares: of one array of ``size`` floats and of
    4096, and over ``leaves`` arrays of ``size``, in four arrangements."""
    xs = [jnp.full((size,), 0.5, jnp.float32) for _ in range(leaves)]

    def temp_bytes(fn: Callable, *args: Any) -> int:
        return int(jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes)

    def square_sum(x):
        return jnp.sum(x * x)

    def by_groups(xs, group=8):  # joined 8 leaves at a time: each sum has 8000 elements
        return sum(square_sum(jnp.concatenate(xs[i : i + group])) for i in range(0, len(xs), group))

    return {
        f"one_array_of_{size}": temp_bytes(square_sum, xs[0]),
        "one_array_of_4096": temp_bytes(square_sum, jnp.ones(4096)),
        "leaf_by_leaf": temp_bytes(lambda xs: sum(square_sum(x) for x in xs), xs),
        "leaf_by_leaf_vdot": temp_bytes(lambda xs: sum(jnp.vdot(x, x) for x in xs), xs),
        "joined_by_groups_of_8": temp_bytes(by_groups, xs),
        "joined": temp_bytes(gradtx.tree.squared_norm, xs),
        "bytes_of_the_leaves": 4 * size * leaves,
    }


def callback_cost(leaves: int, size: int = 1000, rounds: int = 6) -> dict[str, float]:
    """Median step ms on ``leaves`` leaves, with and without a host callback."""

    def floor_with_callback(params, state, grads):
        jax.debug.callback(lambda x: None, grads["p0000"][0])
        return floor_step(params, state, grads)

    steps = {"floor": (floor_step, ()), "floor_with_callback": (floor_with_callback, ())}
    for name, tx in (
        ("gradtx_apply_if_finite", gradtx.apply_if_finite(gradtx.adam(1e-3))),
        ("gradtx_raise_after_5", gradtx.apply_if_finite(gradtx.adam(1e-3), raise_after=5)),
        ("optax_apply_if_finite", optax.apply_if_finite(optax.adam(1e-3), 5)),
    ):
        steps[name] = (adam_step(tx), tx.init(fresh_leaves(leaves, size)))
    out, _ = interleaved_steps(steps, leaves, size, rounds, block=5)
    out["us_per_leaf_of_the_callback"] = 1e3 * (out["floor_with_callback"] - out["floor"]) / leaves
    return out


def _one_pass_norm_squared(x: Any, c: Any) -> Any:
    """``sum x^2``, or ``sum (x c)^2`` where it overflowed, from one variadic ``lax.reduce``."""
    zero = jnp.zeros((), x.dtype)
    plain, rescaled = jax.lax.reduce(
        (x * x, (x * c) * (x * c)), (zero, zero), lambda a, b: (a[0] + b[0], a[1] + b[1]), (0,)
    )
    return jax.lax.select(plain == jnp.inf, rescaled, plain)


def one_pass_rescue_cost(size: int, leaves: int = 400, small: int = 1000) -> dict[str, float]:
    """Item 13: the plain and the rescaled sum of squares in one pass, against ``sum(x * x)``."""
    x = jax.random.normal(jax.random.key(0), (size,), jnp.float32) + 0.3
    exact = float(np.sum(np.asarray(x, np.float64) ** 2))
    # The scale is an argument: as a constant, XLA would fold (x c)^2 into x^2 c^2.
    c = jnp.float32(2.0**-84)
    out = {}
    for name, fn, args in (
        ("sum", jax.jit(lambda x: jnp.sum(x * x)), (x,)),
        ("one_pass", jax.jit(_one_pass_norm_squared), (x, c)),
    ):
        out[f"{name}_relative_error"] = abs(float(fn(*args)) - exact) / exact
        times = []
        for _ in range(20):
            start = time.perf_counter()
            fn(*args).block_until_ready()
            times.append(time.perf_counter() - start)
        out[f"{name}_ms"] = 1e3 * float(np.median(times))

    xs = [jnp.full((small,), 0.5) for _ in range(leaves)]

    def by_sum(xs, c):
        return [x * jnp.sqrt(jnp.sum(x * x)) for x in xs]

    def by_one_pass(xs, c):
        return [x * jnp.sqrt(_one_pass_norm_squared(x, c)) for x in xs]

    for fn in (by_sum, by_one_pass):
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(xs, c).compile()
        out[f"{fn.__name__}_compile_s"] = time.perf_counter() - start
        out[f"{fn.__name__}_kernels_per_leaf"] = kernel_traffic(compiled)[0] / leaves
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=2000, help="for the slicing test")
    parser.add_argument("--size", type=int, default=4_000_000, help="floats, lookahead test")
    args = parser.parse_args()
    print(f"JAX {jax.__version__} on {jax.default_backend()}, Optax {optax.__version__}")
    print("1. Adam kernels per leaf:", kernels_per_leaf())
    print(f"2. compile seconds, {args.leaves} leaves of 1000:", slicing_cost(args.leaves, 1000))
    print(f"3. step ms on one leaf of {args.size:,} floats:", lookahead_bound(args.size))
    print(f"4. flat(adam), {args.leaves} leaves of 1000:", flat_offsets_cost(args.leaves))
    print(f"5. clip_by_global_norm, {args.leaves} leaves of 1000:", clip_compile_cost(args.leaves))
    print("6. program per leaf, 1000 leaves of 1000:", program_per_leaf(1000))
    print(f"7. EMA ms by block size, one array of {1 << 24:,}:", blocked_ema_cost(1 << 24))
    print("8. compile seconds, 400 leaves of 1000:", cond_outputs_cost(400))
    print(f"9. step ms, {args.leaves} leaves of 1000:", many_leaves_floor(args.leaves))
    print("10. least programs, step_time.py's cells:", least_program_cells())
    print("11. temporary bytes of sums of squares:", small_sum_temporaries())
    print(f"12. step ms, {args.leaves} leaves of 1000:", callback_cost(args.leaves))
    print(
        "13. one-pass rescue, 16.8M floats and 400 leaves of 1000:", one_pass_rescue_cost(1 << 24)
    )


if __name__ == "__main__":
    main()
