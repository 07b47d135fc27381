"""How some steps are compiled: the only home of backend- and compiler-specific tactics.

The math of every method is written plainly where the method lives. A function
here changes only *how* XLA compiles an expression, never what it computes: the
same numbers, the same state, on every backend. Each tactic names what it buys,
on which backend, and on which tree it was measured; one that stops paying goes.

=====================  ===========  ==============================================
tactic                 backend      what it buys
=====================  ===========  ==============================================
:func:`rare_branch`    CPU, TPU     a ``lax.cond`` for a branch that almost never
                                    runs (the overflow rescue of a norm): its cost
                                    is skipped. On a GPU a conditional reads its
                                    predicate on the host, so the branch is
                                    computed and selected instead, with no host
                                    round trip in the step.
=====================  ===========  ==============================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


def backend() -> str:
    """The platform a step traced now will run on: JAX's default backend."""
    return jax.default_backend()


def rare_branch(pred: Any, rare: Callable[..., Any], usual: Callable[..., Any], *operands: Any) -> Any:
    """``rare(*operands)`` where ``pred`` else ``usual(*operands)``, for a rarely true ``pred``.

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
