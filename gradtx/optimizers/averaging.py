"""Averages of the parameter iterates (Polyak-Ruppert and exponential), kept in the state.

Stochastic gradient methods end in a noisy neighbourhood of a minimum; the average
of their iterates sits nearer its centre. Polyak & Juditsky (1992) and Ruppert
(1988) average all iterates uniformly; the exponential moving average (EMA) of
TensorFlow's ``ExponentialMovingAverage``, of "EMA of weights" in modern training
and of target networks in reinforcement learning forgets old iterates at rate
``decay``. Either way the average is *not* the point the optimizer continues from:
training goes on from the raw iterates, and the average is read from the state
(:func:`averaged_params`) to evaluate or to export.

Optax has no transformation for this: ``optax.ema`` averages the *updates*, and
``optax.incremental_update(new, old, step_size)`` is the EMA step as a function
(``step_size = 1 - decay``) that the user stores and calls by hand.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, OptState, Params


class AverageParamsState(NamedTuple):
    """State of :func:`average_params`."""

    count: Array  # int32 scalar: t, the number of iterates averaged so far.
    average: Params  # bar theta_t, shaped like the params, in accumulator_dtype.


def find_state(state: OptState, state_type: type, owner: str) -> Any:
    """The one ``state_type`` node inside ``state`` (a chain's tuple, a dict, ...).

    The search walks the state pytree from the outside in and stops at the first
    ``state_type`` on each branch, so a state nested inside another one of the
    same type is not visited.

    Raises:
      ValueError: no such node, or more than one (pass the member's own state).
    """
    found = [
        node
        for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, state_type))
        if isinstance(node, state_type)
    ]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(
            f"{owner}: this state holds no {state_type.__name__}; pass the state of an "
            f"optimizer that contains the matching transformation."
        )
    raise ValueError(
        f"{owner}: this state holds {len(found)} {state_type.__name__} nodes; pass the "
        f"state of the one you mean (e.g. state[i] of a chain)."
    )


def _copy(p, dtype):
    """A fresh array holding ``p`` (in ``dtype`` if given), never aliasing it."""
    p = jnp.asarray(p)
    if dtype is None:
        dtype = p.dtype
    elif jnp.iscomplexobj(p) and not jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError(
            f"average_params: accumulator_dtype {jnp.dtype(dtype)} would drop the imaginary "
            f"part of a {p.dtype} parameter: pass a complex dtype, or None."
        )
    return jnp.array(p, dtype=dtype, copy=True)


def _weight(decay, debias, count, dtype):
    """``w_t``: ``1/t`` (uniform), ``1 - beta`` (EMA), ``(1 - beta)/(1 - beta^t)`` (debiased)."""
    if decay is None:
        return 1 / count.astype(dtype)
    one_minus = 1 - jnp.asarray(decay, dtype)
    if debias:
        return one_minus / tree.bias_correction_factor(decay, count, dtype)
    return one_minus


def _average_leaf(p, u, average, decay, debias, count):
    """``bar theta + w_t (theta_t - bar theta)`` with ``theta_t = p + u`` as the user holds it."""
    c = tree.compute_dtype(jnp.result_type(p, u, average))
    p = jnp.asarray(p)
    new_params = (p + u).astype(p.dtype)  # what apply_updates gives the user
    current = average.astype(c)
    weight = _weight(decay, debias, count, tree.real_dtype(c))
    return (current + weight * (new_params.astype(c) - current)).astype(average.dtype)


def average_params(
    decay: float | None = None,
    debias: bool = False,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    """Keeps the running average of the parameters in the state; updates pass unchanged.

    Put it *last* in a chain: it needs the final updates, from which it forms the
    new iterate ``theta_t = params + updates`` (``params`` being the values passed
    to ``update``, those the updates are applied to), then folds it into the
    average

    .. math::
        \\bar\\theta_t = \\bar\\theta_{t-1} + w_t (\\theta_t - \\bar\\theta_{t-1})

    with the weight ``w_t`` chosen by the arguments:

    * ``decay=None``: ``w_t = 1/t``, the uniform Polyak-Ruppert average
      ``bar theta_t = (1/t) sum_{i=1..t} theta_i`` of the iterates after each step
      (the initial params are not included).
    * ``decay=beta``, ``debias=False``: ``w_t = 1 - beta``, the EMA started at the
      initial params, ``bar theta_t = beta^t theta_0 + (1 - beta) sum_i beta^(t-i)
      theta_i`` (TensorFlow's ``ExponentialMovingAverage``,
      ``optax.incremental_update``).
    * ``decay=beta``, ``debias=True``: ``w_t = (1 - beta) / (1 - beta^t)``, the EMA
      of the iterates alone, its weights normalised to sum to one (the zero-started
      EMA divided by ``1 - beta^t``, Kingma & Ba 2015, Sec. 3), so the initial
      params leave no trace.

    Read the average with :func:`averaged_params`. A transformation placed anywhere
    but last sees updates that later members still change, and averages the wrong
    points.

    Args:
      decay: ``beta`` in [0, 1) for an EMA, or ``None`` (default) for the uniform
        average of all iterates.
      debias: normalise the EMA's weights so that the initial params drop out (see
        above). The uniform average needs no debiasing and ignores it.
      accumulator_dtype: dtype of the stored average; ``None`` keeps the params'.
        With bfloat16 params and a decay near 1, ask for ``jnp.float32``: a step of
        ``(1 - beta)`` times a small difference rounds away in bfloat16.

    Returns:
      A transformation whose updates are its input, unchanged, and whose state is
      :class:`AverageParamsState`.

    Raises:
      ValueError: ``decay`` outside [0, 1), a non-float ``accumulator_dtype``, or
        ``update`` called without the params.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.chain(gradtx.sgd(0.5), gradtx.average_params())
      >>> w = jnp.array([4.0]); state = tx.init(w)
      >>> for _ in range(2):  # the gradient of w^2 / 2 is w: iterates 2, then 1
      ...     updates, state = tx.update(w, state, w)
      ...     w = gradtx.apply_updates(w, updates)
      >>> w, gradtx.averaged_params(state)
      (Array([1.], dtype=float32), Array([1.5], dtype=float32))

    References:
      Polyak & Juditsky (1992), Acceleration of Stochastic Approximation by
      Averaging, SIAM J. Control Optim. 30(4); Ruppert (1988), Efficient Estimators
      from a Slowly Convergent Robbins-Monro Process, Cornell ORIE TR 781.
    """
    if decay is not None:
        _checks.in_range("average_params", "decay", decay, 0.0, 1.0)
    _checks.dtype_or_none("average_params", "accumulator_dtype", accumulator_dtype)

    def init_fn(params):
        # A copy, so that donating the state never deletes the caller's params.
        average = jax.tree.map(lambda p: _copy(p, accumulator_dtype), params)
        return AverageParamsState(tree.zero_count(), average)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(
                "average_params: update needs the params (it averages params + updates)."
            )
        tree.check_structure(state.average, params, owner="average_params", what="params")
        tree.check_structure(state.average, updates, owner="average_params")
        count = tree.safe_increment(state.count)
        average = jax.tree.map(
            lambda p, u, a: _average_leaf(p, u, a, decay, debias, count),
            params,
            updates,
            state.average,
        )
        return updates, AverageParamsState(count, average)

    return GradientTransformation(init_fn, update_fn)


def averaged_params(state: OptState) -> Params:
    """The running average kept by :func:`average_params`, found anywhere in ``state``.

    ``state`` may be the state of :func:`average_params` itself or of any chain,
    named chain or wrapper containing exactly one :func:`average_params`. With
    Flax NNX: ``averaged_params(nnx.as_pure(optimizer.opt_state))``.

    Args:
      state: an optimizer state holding one :class:`AverageParamsState`.

    Returns:
      The average, shaped like the params, in the accumulator's dtype.

    Raises:
      ValueError: ``state`` holds no :class:`AverageParamsState`, or several.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.chain(gradtx.sgd(0.1), gradtx.average_params(decay=0.9))
      >>> gradtx.averaged_params(tx.init({"w": jnp.ones(2)}))  # starts at the params
      {'w': Array([1., 1.], dtype=float32)}
    """
    return find_state(state, AverageParamsState, "averaged_params").average
