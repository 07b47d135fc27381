"""Performance-dependent scaling: shrink the step when the loss stops improving.

A "performance-dependent" schedule: keep the learning rate fixed until
the validation loss stops improving, then halve it (Bishop's and the
Edinburgh MLP notes' rule; Keras' and PyTorch's ``ReduceLROnPlateau``). It is a
transformation rather than a schedule because it reads the loss, passed as the
extra argument ``value``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, Updates


class ReduceOnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau`; ``state.scale`` is the current multiplier.

    The float fields are real scalars in the params' widest dtype (at least
    float32); the counters are int32 scalars.
    """

    scale: Array  # the multiplier applied to the updates; 1 at first, >= min_scale.
    best_value: Array  # the lowest evaluated loss so far; +inf before the first.
    plateau_count: Array  # evaluations since the last improvement (reset by a reduction).
    cooldown_count: Array  # evaluations left in the cooldown after a reduction.
    count: Array  # losses accumulated towards the next evaluation (< accumulation_size).
    avg_value: Array  # the mean of those losses.


def _int_at_least(owner: str, name: str, value: Any, minimum: int) -> None:
    """An integer >= minimum; tracers (vmap over a patience) are not checked."""
    if isinstance(value, jax.core.Tracer):
        return
    array = np.asarray(value)
    if (
        isinstance(value, (bool, np.bool_))
        or array.shape != ()
        or not np.issubdtype(array.dtype, np.integer)
        or int(array) < minimum
    ):
        shown = value.item() if isinstance(value, (np.ndarray, jax.Array)) else value
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {shown!r}.")


def _open_unit_interval(owner: str, name: str, value: Any) -> None:
    """A number in (0, 1); tracers are not checked."""
    _checks.finite(owner, name, value)
    if isinstance(value, jax.core.Tracer):
        return
    array = np.asarray(value, dtype=np.float64)
    if not np.all((array > 0) & (array < 1)):
        shown = array.item() if array.size == 1 else value
        raise ValueError(f"{owner}: {name} must be in (0, 1), got {shown!r}.")


def _state_dtype(params: Any) -> jnp.dtype:
    """The widest real dtype among the params, at least float32."""
    dtype = jnp.dtype(jnp.float32)
    for leaf in jax.tree.leaves(params):
        dtype = jnp.promote_types(dtype, tree.real_dtype(tree.compute_dtype(jnp.result_type(leaf))))
    return dtype


def has_improved(value: Array, best: Array, rtol: Any, atol: Any) -> Array:
    """``value < best - (rtol * |best| + atol)``; any finite value improves on +inf.

    The margin is measured on ``|best|``, so "better" means "lower" for a loss of
    either sign. NaN never improves.
    """
    margin = rtol * jnp.abs(best) + atol
    threshold = jnp.where(jnp.isinf(best), best, best - margin)
    return value < threshold


def evaluate(
    state: ReduceOnPlateauState,
    value: Array,
    *,
    factor: Any,
    patience: Any,
    rtol: Any,
    atol: Any,
    cooldown: Any,
    min_scale: Any,
) -> ReduceOnPlateauState:
    """One evaluation of the plateau rule on ``value`` (the mean loss).

    An improvement records the new best and clears the plateau count; otherwise
    the count grows. During a cooldown the count stays at 0 and the cooldown
    shortens. Outside it, the ``patience``-th evaluation in a row without
    improvement multiplies the scale by ``factor`` (never below ``min_scale``),
    clears the count and starts a cooldown of ``cooldown`` evaluations.
    """
    improved = has_improved(value, state.best_value, rtol, atol)
    best = jnp.where(improved, value, state.best_value)
    plateau = jnp.where(improved, 0, tree.safe_increment(state.plateau_count))
    cooling = state.cooldown_count > 0
    reduce = jnp.logical_and(~cooling, plateau >= patience)
    scale = jnp.where(reduce, jnp.maximum(state.scale * factor, min_scale), state.scale)
    plateau = jnp.where(cooling | reduce, 0, plateau)
    cooldown_count = jnp.where(cooling, state.cooldown_count - 1, jnp.where(reduce, cooldown, 0))
    return ReduceOnPlateauState(
        scale=scale.astype(state.scale.dtype),
        best_value=best.astype(state.best_value.dtype),
        plateau_count=plateau.astype(jnp.int32),
        cooldown_count=cooldown_count.astype(jnp.int32),
        count=jnp.zeros([], jnp.int32),
        avg_value=jnp.zeros([], state.avg_value.dtype),
    )


_MISSING_VALUE = (
    "reduce_on_plateau: the loss is missing. Pass it as the extra argument `value`: "
    "`updates, state = tx.update(grads, state, params, value=loss)` (a scalar: the "
    "validation loss, or the training loss of the step). Inside optax.chain, wrap the "
    "gradtx block as optax.GradientTransformationExtraArgs(*block) so that it receives it."
)


def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
    accumulation_size: int = 1,
    min_scale: float = 0.0,
) -> GradientTransformation:
    """Multiplies the updates by a scale that shrinks when the loss plateaus.

    Each ``update`` reads the loss from the extra argument ``value``. Every
    ``accumulation_size`` calls, the mean of the losses received is *evaluated*:
    it **improves** when

    .. math::
        v < v_{best} - (\\text{rtol} \\cdot |v_{best}| + \\text{atol})

    which records ``v`` as the new best. After ``patience`` evaluations in a row
    without improvement the scale is multiplied by ``factor`` (``0.5`` halves the
    learning rate, as Bishop advises), floored at ``min_scale``; then
    ``cooldown`` evaluations pass before non-improvements count again. Every
    update, between evaluations too, is multiplied by the current scale
    (``state.scale``), so put this block after the learning rate:
    ``chain(adam(1e-3), reduce_on_plateau(0.5, patience=5))``.

    **Negative losses.** The margin is taken on ``|best|``. Optax's
    ``optax.contrib.reduce_on_plateau`` tests ``v < (1 - rtol) * best - atol``,
    which is the same rule for a positive ``best`` (so gradtx reproduces it
    there) but, for a negative one (a log-likelihood, an ELBO), counts a loss
    slightly *worse* than the best as an improvement: on a flat or slowly
    worsening negative loss it never reduces. PyTorch's relative threshold has
    the same flaw. gradtx's rule treats both signs alike.

    **Patience.** The reduction happens at the ``patience``-th evaluation without
    improvement, as Optax counts; PyTorch's ``ReduceLROnPlateau(patience=p)``
    waits one evaluation longer (it is ``patience=p + 1`` here). A NaN loss
    counts as no improvement.

    Args:
      factor: the multiplier of a reduction, in (0, 1).
      patience: an integer >= 1, the number of evaluations in a row without
        improvement that trigger a reduction.
      rtol: >= 0, the improvement required relative to ``|best|``.
      atol: >= 0, the improvement required in absolute terms (added to the
        relative one). ``rtol = atol = 0``: any decrease is an improvement.
      cooldown: an integer >= 0, the number of evaluations after a reduction
        during which nothing counts towards the next one.
      accumulation_size: an integer >= 1: the number of ``update`` calls whose
        losses are averaged into one evaluation (1 for a validation loss; more
        for noisy minibatch losses).
      min_scale: in [0, 1], the lowest scale a reduction can reach.

    Returns:
      A transformation whose ``update`` requires ``value``; its state is a
      :class:`ReduceOnPlateauState`.

    Raises:
      ValueError: at construction, for an argument out of its range; at
        ``update``, when ``value`` is missing or is not a scalar.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> from gradtx.transforms.plateau import reduce_on_plateau
      >>> tx = reduce_on_plateau(factor=0.5, patience=2)
      >>> state = tx.init(jnp.zeros(2))
      >>> for loss in [3.0, 2.0, 2.0, 2.0, 2.5, 1.0]:  # two evaluations without progress
      ...     updates, state = tx.update(jnp.ones(2), state, value=loss)
      ...     print(float(state.scale), end=" ")
      1.0 1.0 1.0 0.5 0.5 0.5

    References:
      Optax's ``optax.contrib.reduce_on_plateau`` (argument names and counting);
      PyTorch's ``torch.optim.lr_scheduler.ReduceLROnPlateau``.
    """
    owner = "reduce_on_plateau"
    _open_unit_interval(owner, "factor", factor)
    _int_at_least(owner, "patience", patience, 1)
    _checks.non_negative(owner, "rtol", rtol)
    _checks.non_negative(owner, "atol", atol)
    _int_at_least(owner, "cooldown", cooldown, 0)
    _int_at_least(owner, "accumulation_size", accumulation_size, 1)
    _checks.in_range(owner, "min_scale", min_scale, 0.0, 1.0, closed_high=True)
    rule = dict(
        factor=factor, patience=patience, rtol=rtol, atol=atol, cooldown=cooldown,
        min_scale=min_scale,
    )  # fmt: skip

    def init_fn(params):
        tree.check_inexact(params, "reduce_on_plateau")
        dtype = _state_dtype(params)
        # One array per field: a state whose leaves alias cannot be donated.
        return ReduceOnPlateauState(
            scale=jnp.ones([], dtype),
            best_value=jnp.full([], jnp.inf, dtype),
            plateau_count=tree.zero_count(),
            cooldown_count=tree.zero_count(),
            count=tree.zero_count(),
            avg_value=jnp.zeros([], dtype),
        )

    def update_fn(updates: Updates, state: ReduceOnPlateauState, params=None, **extra_args):
        del params
        if extra_args.get("value") is None:
            raise ValueError(_MISSING_VALUE)
        value = jnp.asarray(extra_args["value"])
        if value.shape != ():
            raise ValueError(
                f"{owner}: value must be a scalar loss, got an array of shape {value.shape}."
            )
        value = value.astype(state.avg_value.dtype)
        count = state.count + 1
        mean = state.avg_value + (value - state.avg_value) / count  # running mean
        state = state._replace(count=count, avg_value=mean.astype(state.avg_value.dtype))
        evaluated = evaluate(state, mean, **rule)
        state = jax.tree.map(
            lambda new, old: jnp.where(count >= accumulation_size, new, old), evaluated, state
        )
        scale = state.scale
        return jax.tree.map(lambda u: (u * scale).astype(u.dtype), updates), state

    return GradientTransformation(init_fn, update_fn)
