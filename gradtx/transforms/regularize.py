"""Penalties applied as transformations: coupled L2 weight decay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, EmptyState, GradientTransformation, Params, ScalarOrSchedule

Mask = Any | Callable[[Params], Any]
"""A pytree of bools shaped like the params (True = apply), or a function of the
params that returns one."""


def resolve_mask(mask: Mask | None, params: Params) -> Any:
    """The mask tree for ``params``: all-True for ``None``, called if a function."""
    if mask is None:
        return jax.tree.map(lambda _: True, params)
    return mask(params) if callable(mask) else mask


def _select(keep: Any, changed: Array, original: Array) -> Array:
    if isinstance(keep, (bool, jnp.bool_)):
        return changed if keep else original
    return jnp.where(keep, changed, original)


class AddDecayedWeightsState(NamedTuple):
    """State of :func:`add_decayed_weights` when ``weight_decay`` is a schedule."""

    count: Array  # int32 scalar: the step count fed to the schedule.


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0, mask: Mask | None = None
) -> GradientTransformation:
    """Adds ``alpha * w`` to the updates: the gradient of the L2 penalty.

    .. math::
        g \\leftarrow g + \\alpha w

    the gradient of :math:`J(w) + \\tfrac{\\alpha}{2} w^\\top w` (Goodfellow et al.
    2016, eq. 7.5). Placed before an adaptive scaling it is *coupled* L2; placed
    after it and before the step (as in :func:`adamw`) it is *decoupled* decay
    (Loshchilov & Hutter 2019).

    Args:
      weight_decay: ``alpha``, a number >= 0 or a schedule of the step count.
      mask: which leaves are decayed: a pytree of bools shaped like the params, or
        a function of the params returning one. Biases and normalization scales are
        usually excluded (the seeds: "typically not applied on bias terms").

    Raises:
      ValueError: ``weight_decay`` negative or not finite; ``update`` called
        without ``params``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> tx = gradtx.add_decayed_weights(0.1, mask={"w": True, "b": False})
      >>> grads = {"w": jnp.zeros(2), "b": jnp.zeros(2)}
      >>> tx.update(grads, tx.init(params), params)[0]
      {'b': Array([0., 0.], dtype=float32), 'w': Array([0.1, 0.1], dtype=float32)}
    """
    _checks.non_negative("add_decayed_weights", "weight_decay", weight_decay)
    scheduled = callable(weight_decay)

    def init_fn(params):
        del params
        return AddDecayedWeightsState(tree.zero_count()) if scheduled else EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(
                "add_decayed_weights: update needs the params: call update(updates, state, params)."
            )
        tree.check_structure(params, updates, owner="add_decayed_weights")
        if scheduled:
            alpha = weight_decay(state.count)
            state = AddDecayedWeightsState(tree.safe_increment(state.count))
        else:
            alpha = weight_decay
        keep = resolve_mask(mask, params)

        def leaf(u, p, m):
            return _select(m, (u + alpha * p).astype(u.dtype), u)

        return jax.tree.map(leaf, updates, params, keep), state

    return GradientTransformation(init_fn, update_fn)
