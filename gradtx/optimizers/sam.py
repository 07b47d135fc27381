"""SAM: sharpness-aware minimization (Foret, Kleiner, Mobahi & Neyshabur 2021, Alg. 1).

SAM takes the gradient at an adversarially perturbed point and applies it at the
unperturbed one. With ``rho`` the neighbourhood radius and ``eta`` the step,

.. math::
    \\hat\\epsilon = \\rho \\, \\frac{g(w)}{\\|g(w)\\|_2}, \\qquad
    w \\leftarrow w - \\eta \\, g(w + \\hat\\epsilon)

(Alg. 1 with ``p = 2``). As in Optax, both moves are delegated: the ascent
``w -> w + eps_hat`` is *minus* the update of ``adv_optimizer`` (``chain(
normalize_by_update_norm(eps=0), sgd(rho))`` gives the paper's), and the descent
is ``optimizer``'s update at the start-of-period params. A period is
``sync_period`` calls: ``sync_period - 1`` ascent steps, then one descent step
from where the period began (the paper's SAM is ``sync_period=2``).

Symbols: ``rho`` = the ``adv_optimizer``'s step; ``eta`` = ``optimizer``'s;
``w`` = the params at the start of a period (``SAMState.cache``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, OptState, Params
from gradtx.combine import accepts_extra_args


class SAMState(NamedTuple):
    """State of :func:`sam` (Optax's fields and order)."""

    steps_since_sync: Array  # int32 scalar in [0, sync_period): calls since the descent step.
    opt_state: OptState  # The outer (descent) optimizer's state.
    adv_state: OptState  # The adversarial (ascent) optimizer's state.
    cache: Params | None  # w, the params at the start of the period (None in opaque mode).


def _sam_leaf(g, p, cache, adv, outer, first, last):
    """One leaf's update (in ``g``'s dtype) and start-of-period params.

    The period starts (``first``) at the params given now. On an ascent call the
    update is ``-adv`` (the adversarial optimizer's step, turned uphill); on the
    last call it is ``(w - p) + outer``: back to ``w``, then the descent step,
    computed in at least float32.
    """
    start = jnp.where(first, p, cache)
    c = tree.compute_dtype(jnp.result_type(p, cache, outer, adv))
    back = start.astype(c) - jnp.asarray(p).astype(c)
    out = jnp.where(last, back + outer.astype(c), -adv.astype(c))
    return out.astype(g.dtype), start.astype(cache.dtype)


def _select(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond, jnp.asarray(a).astype(b.dtype), b), new, old)


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"sam: {name} must be True or False, got {value!r}.")


def sam(
    optimizer: GradientTransformation,
    adv_optimizer: GradientTransformation,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: str | None = None,
) -> GradientTransformation:
    """Sharpness-aware minimization around two optimizers (Foret et al. 2021, Alg. 1).

    Each period of ``k = sync_period`` calls takes ``k - 1`` ascent steps with
    ``adv_optimizer`` and one descent step with ``optimizer`` from the params
    ``w`` at which the period began, using the gradient at the perturbed point:

    .. math::
        w_{i+1} = w_i - A(g(w_i)) \\ (i = 0..k-2), \\qquad
        w \\leftarrow w + O(g(w_{k-1}), w)

    where ``A`` and ``O`` are the two optimizers' updates (``A`` is a descent
    step, so its negative climbs). With ``A = chain(normalize_by_update_norm(
    eps=0), sgd(rho))``, ``O = sgd(eta)`` and ``k = 2`` this is the paper's SAM.

    **Transparent mode** (``opaque_mode=False``, the default): every call takes
    one step, so the caller computes the gradient at each perturbed point, as in
    any training loop; the last call of a period returns the update that moves
    the params back to ``w`` and down. **Opaque mode**: one call runs the whole
    period, asking ``grad_fn(params, i)`` (an extra argument of ``update``) for
    the gradient at the ``i``-th perturbed point; the caller sees only descents
    (needed when a call has side effects, e.g. BatchNorm statistics).

    Args:
      optimizer: ``O``, the outer (descent) optimizer, called with the
        start-of-period params.
      adv_optimizer: ``A``, the adversarial optimizer, whose update is negated.
      sync_period: ``k`` >= 1, calls per period (default 2, the paper's).
      reset_state: re-initialise ``adv_optimizer``'s state at each descent step.
      opaque_mode: run the ``k - 1`` ascents inside one call (see above).
      batch_axis_name: in opaque mode, a mapped axis over which the adversarial
        gradients are averaged (``jax.lax.pmean``); ``None`` for none.

    Returns:
      A transformation with state :class:`SAMState`, whose ``update`` needs the
      params (and ``grad_fn`` in opaque mode).

    Raises:
      ValueError: ``sync_period`` not an integer >= 1; ``update`` called without
        the params, or in opaque mode without ``grad_fn``.
      TypeError: ``reset_state`` or ``opaque_mode`` not a bool;
        ``batch_axis_name`` neither a string nor None.

    Note:
      With ``sync_period=1`` there is no ascent and SAM is ``optimizer`` itself.
      Optax's transparent mode there returns ``w_{t-1} - w_t + O(g)``, stepping
      from the params of the previous call; here the period's start is the
      current params, so the two agree for every ``sync_period >= 2`` and
      differ only at 1.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> adv = gradtx.chain(gradtx.normalize_by_update_norm(eps=0.0), gradtx.sgd(0.05))
      >>> tx = gradtx.sam(gradtx.sgd(0.1), adv)
      >>> loss = lambda w: jnp.sum(w**2)
      >>> w = jnp.array([1.0, -2.0]); state = tx.init(w)
      >>> for _ in range(200):
      ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
      ...     w = gradtx.apply_updates(w, updates)
      >>> bool(loss(w) < 1e-2)
      True

    References:
      Foret, Kleiner, Mobahi & Neyshabur (2021), Sharpness-Aware Minimization for
      Efficiently Improving Generalization, ICLR, Alg. 1.
    """
    if isinstance(sync_period, jax.Array) and sync_period.ndim == 0:
        sync_period = int(sync_period)
    _checks.positive_int("sam", "sync_period", sync_period)
    _check_flag("reset_state", reset_state)
    _check_flag("opaque_mode", opaque_mode)
    if batch_axis_name is not None and not isinstance(batch_axis_name, str):
        raise TypeError(f"sam: batch_axis_name must be a string or None, got {batch_axis_name!r}.")
    outer_update = accepts_extra_args(optimizer.update)
    adv_update = accepts_extra_args(adv_optimizer.update)

    def init_fn(params):
        cache = None if opaque_mode else jax.tree.map(lambda p: jnp.array(p, copy=True), params)
        return SAMState(
            tree.zero_count(), optimizer.init(params), adv_optimizer.init(params), cache
        )

    def transparent_update(updates, state, params, extra_args):
        tree.check_structure(state.cache, params, owner="sam", what="params")
        tree.check_structure(state.cache, updates, owner="sam")
        first = state.steps_since_sync == 0
        last = state.steps_since_sync == sync_period - 1
        start = jax.tree.map(lambda p, c: jnp.where(first, p, c), params, state.cache)
        adv, adv_state = adv_update(updates, state.adv_state, params, **extra_args)
        outer, opt_state = outer_update(updates, state.opt_state, start, **extra_args)
        out, cache = tree.map_unzip(
            lambda g, p, c, a, o: _sam_leaf(g, p, c, a, o, first, last),
            2,
            updates,
            params,
            state.cache,
            adv,
            outer,
        )
        if reset_state:
            adv_state = _select(last, adv_optimizer.init(params), adv_state)
        else:
            adv_state = _select(last, state.adv_state, adv_state)
        opt_state = _select(last, opt_state, state.opt_state)
        steps = jnp.where(last, 0, state.steps_since_sync + 1).astype(jnp.int32)
        return out, SAMState(steps, opt_state, adv_state, cache)

    def opaque_update(updates, state, params, grad_fn: Callable, extra_args):
        adv_params, grads, adv_state = params, updates, state.adv_state
        for i in range(sync_period - 1):
            step, adv_state = adv_update(grads, adv_state, adv_params, **extra_args)
            adv_params = jax.tree.map(lambda p, s: (p - s).astype(p.dtype), adv_params, step)
            grads = grad_fn(adv_params, i)
            if batch_axis_name is not None:
                grads = jax.lax.pmean(grads, axis_name=batch_axis_name)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        out, opt_state = outer_update(grads, state.opt_state, params, **extra_args)
        out = tree.cast_like(out, updates)  # grad_fn's dtypes may differ from the gradient's
        return out, SAMState(tree.zero_count(), opt_state, adv_state, None)

    def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
        if params is None:
            raise ValueError("sam: update needs the params: call update(updates, state, params).")
        if not opaque_mode:
            return transparent_update(updates, state, params, extra_args)
        if grad_fn is None:
            raise ValueError(
                "sam: opaque_mode=True needs grad_fn(params, i), the gradient at the i-th "
                "adversarial point: call update(updates, state, params, grad_fn=grad_fn)."
            )
        tree.check_structure(params, updates, owner="sam")
        return opaque_update(updates, state, params, grad_fn, extra_args)

    return GradientTransformation(init_fn, update_fn)
