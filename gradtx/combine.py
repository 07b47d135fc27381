"""Composition: ``chain`` and ``named_chain``.

Members may be gradtx or Optax transformations (anything with ``init`` and
``update``). Extra arguments reach each member that accepts them: all of them for
an ``update`` with ``**kwargs``, the ones it names otherwise, none for a plain
Optax ``update(updates, state, params=None)``.

The other direction has one catch: ``optax.chain`` passes extra arguments only to
members of its own ``GradientTransformationExtraArgs`` type and silently drops
them for anything else, gradtx blocks included. When a gradtx block inside an
``optax.chain`` needs ``value`` or ``value_fn``, wrap it:
``optax.GradientTransformationExtraArgs(*gradtx_block)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from gradtx.base import GradientTransformation

_POSITIONAL = ("updates", "state", "params")


def _accepts_extra_args(update: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps ``update`` so that it only receives the extra args it declares."""
    try:
        signature = inspect.signature(update)
    except (TypeError, ValueError):
        return update
    parameters = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return update
    named = {
        p.name
        for p in parameters[len(_POSITIONAL) :]
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }

    def filtered(updates, state, params=None, **extra_args):
        kept = {k: v for k, v in extra_args.items() if k in named}
        return update(updates, state, params, **kept)

    return filtered


def _check_members(owner: str, transforms: tuple[Any, ...]) -> None:
    for i, tx in enumerate(transforms):
        if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
            raise TypeError(
                f"{owner}: argument {i} must be a transformation with init and update, "
                f"got {type(tx).__name__}."
            )


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Applies transformations one after the other; the state is a tuple of theirs.

    ``chain(a, b).update(g, ...)`` feeds ``g`` to ``a`` and ``a``'s output to ``b``.
    Every named optimizer in gradtx is such a chain.

    Args:
      *transforms: gradtx or Optax transformations, in the order they apply.

    Returns:
      A transformation whose state is ``tuple(member states)``.

    Raises:
      TypeError: a member has no ``init`` / ``update``.
      ValueError: the state passed to ``update`` has the wrong number of members.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.chain(gradtx.scale(2.0), gradtx.scale_by_learning_rate(0.1))
      >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
      Array([-0.2, -0.2], dtype=float32)
    """
    _check_members("chain", transforms)
    updaters = tuple(_accepts_extra_args(t.update) for t in transforms)

    def init_fn(params):
        return tuple(t.init(params) for t in transforms)

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            got = len(state) if isinstance(state, tuple) else type(state).__name__
            raise ValueError(
                f"chain: expected a state tuple of {len(transforms)} members "
                f"(from init), got {got}."
            )
        new_state = []
        for member_state, update in zip(state, updaters, strict=True):
            updates, member_state = update(updates, member_state, params, **extra_args)
            new_state.append(member_state)
        return updates, tuple(new_state)

    return GradientTransformation(init_fn, update_fn)


def named_chain(*transforms: tuple[str, GradientTransformation]) -> GradientTransformation:
    """Like :func:`chain`, with the state a dict keyed by the members' names.

    Named states are easy to find in a checkpoint or a log
    (``state["adam"].mu``).

    Args:
      *transforms: ``(name, transformation)`` pairs with distinct names.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.named_chain(("adam", gradtx.scale_by_adam()), ("lr", gradtx.scale(-0.1)))
      >>> sorted(tx.init(jnp.zeros(2)))
      ['adam', 'lr']
    """
    names = [name for name, _ in transforms]
    if len(set(names)) != len(names):
        raise ValueError(f"named_chain: names must be distinct, got {names}.")
    _check_members("named_chain", tuple(tx for _, tx in transforms))
    updaters = tuple((name, _accepts_extra_args(tx.update)) for name, tx in transforms)

    def init_fn(params):
        return {name: tx.init(params) for name, tx in transforms}

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, dict) or sorted(state) != sorted(names):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"named_chain: expected a state dict with keys {names}, got {got}.")
        new_state = {}
        for name, update in updaters:
            updates, new_state[name] = update(updates, state[name], params, **extra_args)
        return updates, new_state

    return GradientTransformation(init_fn, update_fn)
