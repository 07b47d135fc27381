"""How some steps are compiled: the only home of backend- and compiler-specific tactics.

The math of every method is written plainly where the method lives. A function
here changes only *how* XLA compiles an expression, never what it computes: the
same numbers and the same state on every backend, and no test depends on which
path ran. Each tactic says what it buys, on which backend, and where it was
measured; one that stops paying goes. (``gradtx.flat`` keeps its own buffer
slicing inside ``flat``; its runtime offsets run on the CPU backend only.)

Each tactic, its backend, and what it buys:

* :func:`per_leaf` (every backend): an optimizer's per-leaf step traced as a
  nested ``jax.jit`` under a trace: traced once per distinct leaf shape and dtype
  instead of once per leaf; XLA inlines the calls, so the program is the same.
* :func:`rare_branch` (CPU and TPU): a ``lax.cond`` around a branch that almost
  never runs (the overflow rescue of a norm), so its cost is skipped. On a GPU a
  conditional waits on the host for its predicate, so both branches are computed
  and one is selected: no host round trip in the step.
* :func:`joined_for_sum` (CPU): small leaves raveled and joined, one array per
  dtype, before a sum of squares (global norms): XLA:CPU compiles each reduction
  kernel on its own.
* :func:`after` (every backend): gradient accumulation's new sum ordered after the
  ``lax.cond`` that read the old one, so a donated state takes it in place: one
  params-sized temporary fewer.
* :func:`not_folded` (every backend): the zeros a quantized state is built from
  (:func:`gradtx.quantize_state`'s ``init``) hidden from XLA's constant folding,
  which otherwise evaluates the whole block-wise quantization at compile time:
  ``jax.jit(gradtx.adamw_8bit(1e-3).init)`` of a 784-512-512-10 MLP compiles in
  1.3 s instead of 4.8 s (2 CPU cores, JAX 0.10.2).
* :func:`one_program_when_eager` (every backend): a function of many small
  operations (quantizing or dequantizing one state leaf) compiled as one program
  when called eagerly, instead of one program per operation, shape and dtype. The first eager
  ``gradtx.adamw_4bit(1e-3).init`` of the quick transformer tree of
  ``benchmarks/step_time.py`` (52 leaves) took 0.6 s of CPU instead of 8.6 s,
  ``adamw_8bit``'s 0.8 s instead of 3.9 s (2 CPU cores, JAX 0.10.2).

Measured on 2 CPU cores (JAX 0.10.2, Optax 0.2.8; ``python
benchmarks/compile_time.py``), first call of a jitted, donated step, trace +
compile in seconds:

======  ============  =======  ==============  ====================  =====
leaves  step          gradtx   no per_leaf     no joined_for_sum     Optax
======  ============  =======  ==============  ====================  =====
196     adam          0.48     0.88            0.49                  0.52
196     clip + adamw  0.85     1.27            1.50                  0.98
772     adam          2.66     4.53            2.71                  2.71
772     clip + adamw  4.80     6.95            11.58                 5.08
======  ============  =======  ==============  ====================  =====

On a GPU or TPU none of these has been measured yet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax


def backend() -> str:
    """The platform a step traced now will run on: JAX's default backend."""
    return jax.default_backend()


def rare_branch(
    pred: Any, rare: Callable[..., Any], usual: Callable[..., Any], *operands: Any
) -> Any:
    """``rare(*operands)`` where ``pred``, else ``usual(*operands)``; ``pred`` rarely true.

    Both functions must return the same structure, shapes and dtypes. On CPU and
    TPU this is a ``lax.cond`` (the rare branch costs nothing when not taken); on
    a GPU both run and the result is selected, so the step never waits on the
    host for ``pred``. A concrete ``pred`` (eager) branches in Python.
    """
    if not isinstance(pred, jax.core.Tracer):
        return rare(*operands) if bool(pred) else usual(*operands)
    if backend() == "gpu":
        return jax.tree.map(
            lambda a, b: jax.lax.select(jax.numpy.broadcast_to(pred, a.shape), a, b),
            rare(*operands),
            usual(*operands),
        )
    return jax.lax.cond(pred, rare, usual, *operands)


def per_leaf(fn: Callable[..., Any], leaves: Sequence[Any]) -> Callable[..., Any]:
    """``fn`` to map over the leaves of a tree: nested in ``jax.jit`` when traced.

    Under a trace (``jit``, ``vmap``, ``grad``) the nested ``jit`` is traced once
    per distinct leaf shape and dtype and inlined by XLA, so the compiled program
    is the same and a transformer-sized tree traces and compiles faster. Eager
    calls map ``fn`` plainly (a nested ``jit`` there would compile anew for each
    update's fresh closure).
    """
    if leaves and isinstance(leaves[0], jax.core.Tracer):
        return jax.jit(fn)
    return fn


_SMALL = 2**14


def joined_for_sum(leaves: Sequence[Any]) -> list[Any]:
    """The elements of ``leaves`` in fewer arrays, for a sum over all of them.

    On the CPU backend with one device, the leaves of fewer than ``2**14``
    elements are raveled and joined, one array per dtype (a copy no larger than
    the small leaves together); larger leaves are kept. Elsewhere, or with more
    than one device (a split leaf would be gathered), the leaves are returned as
    they are.
    """
    if backend() != "cpu" or jax.device_count() > 1:
        return list(leaves)
    kept, joined = [], {}
    for x in leaves:
        if x.size < _SMALL:
            joined.setdefault(x.dtype, []).append(jax.numpy.ravel(x))
        else:
            kept.append(x)
    return kept + [jax.numpy.concatenate(p) if len(p) > 1 else p[0] for p in joined.values()]


def after(value: Any, out: Any) -> Any:
    """``value``, made to depend on ``out``: what reads it is computed after ``out``.

    For a state buffer written after a ``lax.cond`` has read the old one (gradient
    accumulation): ordered so, a donated state takes the new value in place, where
    XLA would otherwise keep a params-sized temporary (neither
    ``lax.optimization_barrier`` nor returning the value from the cond avoids it).
    The dependency is ``a == a or a != a`` on the first element ``a`` of ``out``:
    true for every ``a``, NaN included, and not folded by XLA. Eagerly, or with
    several devices (the first element of a sharded leaf lives on one device, and
    reading it would add a transfer to every step), ``value`` is returned as is.
    """
    leaves = [x for x in jax.tree.leaves(out) if x.size]
    if not leaves or not isinstance(leaves[0], jax.core.Tracer) or jax.device_count() > 1:
        return value
    anchor = jax.numpy.ravel(leaves[0])[0]
    return value & ((anchor == anchor) | (anchor != anchor))


def one_program_when_eager(fn: Callable[..., Any], **jit_kwargs: Any) -> Callable[..., Any]:
    """``fn``, called through ``jax.jit(fn, **jit_kwargs)`` when its arguments are concrete.

    Under a trace ``fn`` is called plainly: it is part of the program being traced
    anyway. The jitted function is made once, here, so every later eager call
    with the same shapes, dtypes and static arguments reuses its compilation.
    """
    compiled = jax.jit(fn, **jit_kwargs)

    def call(*args: Any) -> Any:
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args)):
            return fn(*args)
        return compiled(*args)

    return call


def not_folded(x: Any) -> Any:
    """``x``, which XLA may not evaluate at compile time (``lax.optimization_barrier``).

    Eagerly ``x`` is returned as is.
    """
    return jax.lax.optimization_barrier(x) if isinstance(x, jax.core.Tracer) else x
