"""Lookahead, a wrapper around any optimizer, and Ranger: Lookahead over RAdam.

Lookahead (Zhang, Lucas, Hinton & Ba 2019, Alg. 1) keeps two sets of weights:
the *fast* weights ``theta``, moved ``k`` times by an inner optimizer ``A``, and
the *slow* weights ``phi``, which then move a fraction ``alpha`` of the way to the
fast ones; the fast weights restart from there:

.. math::
    \\theta_{t,0} = \\phi_{t-1}, \\quad
    \\theta_{t,i} = \\theta_{t,i-1} + A(L, \\theta_{t,i-1}, d)
    \\ (i = 1..k), \\quad
    \\phi_t = \\phi_{t-1} + \\alpha (\\theta_{t,k} - \\phi_{t-1})

Symbols: ``k`` = ``sync_period``, ``alpha`` = ``slow_step_size``, ``A`` =
``fast_optimizer``.

**The user's params are the fast weights.** Optax's ``lookahead`` asks the user
to carry both sets in a ``LookaheadParams(fast, slow)`` and to take gradients at
``params.fast``; that call works here too (see :class:`LookaheadParams`). By
default the params stay a plain tree (the fast weights, at which the gradient is
taken), the slow weights live in the state, and :func:`lookahead_slow_params`
reads them for evaluation. On the ``k``-th step
of a period the returned update moves the params to the new slow weights
``phi_t`` (up to the rounding of ``params + update``); on the other steps it is
the inner optimizer's update. So a training loop, a Flax ``nnx.Optimizer`` or a
checkpoint needs no change to use Lookahead.

**The state holds the slow weights.** ``state.slow`` is ``phi`` after every
update: on a sync step the update computes ``phi_t``, returns the step that lands
the params on it, and stores it as the params will hold it (the same bits as the
synced params), with selects rather than a ``lax.cond``, so XLA fuses it all with
the inner step and keeps no params-sized temporary.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, OptState, Params, ScalarOrSchedule
from gradtx.combine import accepts_extra_args
from gradtx.optimizers.averaging import find_state
from gradtx.optimizers.radam import BelowThreshold, radam


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`."""

    fast_state: OptState  # The inner optimizer A's state (Optax's name).
    steps_since_sync: Array  # int32 scalar in [0, k): fast steps since the last sync.
    # phi, the slow weights, shaped like the params, in their dtypes; None when the
    # caller carries them in a LookaheadParams.
    slow: Params | None


def _check_sync_period(value: Any) -> None:
    """``k``: an integer >= 1 (a concrete integer array counts; a tracer is not checked)."""
    if isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, (np.ndarray, jax.Array)) and value.ndim == 0:
        if jnp.issubdtype(value.dtype, jnp.integer):
            value = int(value)
    _checks.positive_int("lookahead", "sync_period", value)


def _step_leaf(p, u, slow, alpha, is_sync):
    """The update and the new slow weights of one leaf.

    Off a sync: the inner update ``u``, and ``phi`` unchanged. On a sync step:
    ``phi_t = phi + alpha (theta_{t,k} - phi)`` with ``theta_{t,k} = p + u``
    unrounded (the user never holds it), and the update ``phi_t - p`` that lands
    the params on it, so ``apply_updates`` rounds once (bfloat16 params included).
    The state stores ``phi_t`` as the params hold it, ``p + (phi_t - p)`` added
    as :func:`gradtx.apply_updates` adds: the same bits as the synced params, and
    XLA computes both from one sum (no buffer holds the inner update).
    """
    p = jnp.asarray(p)
    c = tree.compute_dtype(jnp.result_type(p, u, slow))
    p_c, u_c, slow_c = p.astype(c), u.astype(c), slow.astype(c)
    new_slow = slow_c + alpha * (p_c + u_c - slow_c)
    out = jnp.where(is_sync, new_slow - p_c, u_c).astype(u.dtype)
    landed = (p + out).astype(p.dtype)  # the params after the step, as apply_updates adds
    return out, jnp.where(is_sync, landed.astype(slow.dtype), slow)


class LookaheadParams(NamedTuple):
    """The fast and slow weights side by side, for Optax's way of calling :func:`lookahead`.

    Give ``lookahead``'s ``init`` and ``update`` a ``LookaheadParams`` (this class
    or Optax's) and the slow weights are carried in the params, as Optax's
    ``lookahead`` carries them, instead of in the state: ``update`` takes the
    gradient at ``params.fast`` and returns a ``LookaheadParams`` of updates for
    both, to be added with :func:`gradtx.apply_updates`. Evaluate the model at
    ``params.slow``. The plain-params form (the default) needs neither.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> tx = gradtx.lookahead(gradtx.sgd(1.0), sync_period=2, slow_step_size=0.5)
      >>> params = gradtx.LookaheadParams.init_synced(jnp.array([4.0]))
      >>> state = tx.init(params)
      >>> for _ in range(2):  # fast: 4 -> 3 -> 2, then the sync: slow 4 + 0.5 (2 - 4)
      ...     updates, state = tx.update(jnp.array([1.0]), state, params)
      ...     params = gradtx.apply_updates(params, updates)
      >>> params
      LookaheadParams(fast=Array([3.], dtype=float32), slow=Array([3.], dtype=float32))
    """

    fast: Params  # theta, the weights the gradient is taken at.
    slow: Params  # phi, the weights to evaluate.

    @classmethod
    def init_synced(cls, params: Params) -> LookaheadParams:
        """Both sets starting at ``params``."""
        return cls(fast=params, slow=params)


def _is_pair(params: Any) -> bool:
    """A ``LookaheadParams``, gradtx's or Optax's (which share their fields)."""
    return type(params).__name__ == "LookaheadParams" and getattr(params, "_fields", ()) == (
        "fast",
        "slow",
    )


def _pair_step_leaf(fast, slow, u, alpha, is_sync):
    """The updates of one leaf's fast and slow weights (the ``LookaheadParams`` form).

    Off a sync the fast weights take ``u`` and the slow ones stay; on a sync both
    move to ``phi_t = phi + alpha (theta + u - phi)``.
    """
    fast, slow = jnp.asarray(fast), jnp.asarray(slow)
    c = tree.compute_dtype(jnp.result_type(fast, u, slow))
    f_c, u_c, s_c = fast.astype(c), u.astype(c), slow.astype(c)
    new_slow = s_c + alpha * (f_c + u_c - s_c)
    fast_out = jnp.where(is_sync, new_slow - f_c, u_c).astype(u.dtype)
    slow_out = jnp.where(is_sync, new_slow - s_c, 0).astype(u.dtype)
    return fast_out, slow_out


def _reset(fast_optimizer, slow, fast_state, is_sync):
    """The inner state re-initialised from the slow weights on a sync step, kept otherwise.

    A leaf of the inner state may be a Python scalar (a flag such as ``True``):
    its dtype is read with ``jnp.result_type``, which takes both.
    """
    fresh = fast_optimizer.init(slow)
    return jax.tree.map(
        lambda new, old: jnp.where(is_sync, jnp.asarray(new, jnp.result_type(old)), old),
        fresh,
        fast_state,
    )


def lookahead(
    fast_optimizer: GradientTransformation,
    sync_period: int = 6,
    slow_step_size: float = 0.5,
    reset_state: bool = False,
) -> GradientTransformation:
    """Lookahead around any transformation: k steps forward, one step back.

    Runs ``fast_optimizer`` on the params (the fast weights ``theta``); every
    ``sync_period``-th step it moves the slow weights ``phi`` (kept in the state)
    toward the fast ones and returns the update that sets the params to them:

    .. math::
        \\phi \\leftarrow \\phi + \\alpha (\\theta + u - \\phi), \\qquad
        \\text{out} = \\phi - \\theta

    where ``u`` is the inner update of that step; on the other steps
    ``out = u``. The slow weights start at the initial params; read them with
    :func:`lookahead_slow_params` to evaluate the model between syncs.

    Optax's call, ``init`` and ``update`` given a :class:`LookaheadParams`
    ``(fast, slow)``, works too: the slow weights then stay in the params (the
    state's ``slow`` is ``None``) and ``update`` returns a ``LookaheadParams`` of
    updates for both.

    Differences from ``optax.lookahead``: the params may be a plain tree (the
    default, see the module docstring); ``sync_period`` and
    ``slow_step_size`` have defaults (``k = 6``, ``alpha = 0.5``, Ranger's); with
    ``reset_state=True`` the inner state is re-initialised from the new slow
    weights (Optax: from the fast weights before the step), which differs only
    for an inner optimizer whose ``init`` reads the params' values. Otherwise the
    two give the same fast and slow trajectories.

    Args:
      fast_optimizer: ``A``, the inner transformation (gradtx or Optax), a
        complete optimizer whose updates are added to the params.
      sync_period: ``k``, fast steps per slow step, an integer >= 1.
      slow_step_size: ``alpha`` in (0, 1]; ``sync_period=1, slow_step_size=1`` is
        ``fast_optimizer`` itself.
      reset_state: re-initialise ``fast_optimizer``'s state at each sync
        (default ``False``: the state carries on across syncs).

    Returns:
      A transformation whose state is :class:`LookaheadState` and whose
      ``update`` needs the params. Apply its updates unchanged: the sync
      step's update lands the params it was given on the new slow weights.

    Raises:
      ValueError: ``sync_period`` not an integer >= 1, ``slow_step_size`` outside
        (0, 1], or ``update`` called without the params.
      TypeError: ``update`` given a :class:`LookaheadParams` where ``init`` was
        given plain params, or the other way round.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda w: jnp.sum(w**2)
      >>> tx = gradtx.lookahead(gradtx.sgd(0.1), sync_period=5, slow_step_size=0.5)
      >>> w = jnp.array([1.0, -2.0]); state = tx.init(w)
      >>> for _ in range(100):
      ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
      ...     w = gradtx.apply_updates(w, updates)
      >>> bool(loss(gradtx.lookahead_slow_params(state, w)) < 1e-6)
      True

    References:
      Zhang, Lucas, Hinton & Ba (2019), Lookahead Optimizer: k steps forward, 1
      step back, NeurIPS, Alg. 1.
    """
    _check_sync_period(sync_period)
    _checks.positive("lookahead", "slow_step_size", slow_step_size)
    _checks.in_range("lookahead", "slow_step_size", slow_step_size, 0.0, 1.0, closed_high=True)
    inner_update = accepts_extra_args(fast_optimizer.update)

    def init_fn(params):
        if _is_pair(params):  # the slow weights are the caller's: the state holds none
            return LookaheadState(fast_optimizer.init(params.fast), tree.zero_count(), None)
        # A copy, so that donating the state never deletes the caller's params.
        slow = jax.tree.map(lambda p: jnp.array(p, dtype=jnp.asarray(p).dtype, copy=True), params)
        return LookaheadState(fast_optimizer.init(params), tree.zero_count(), slow)

    def pair_update(updates, state, params, **extra_args):
        tree.check_structure(params.fast, params.slow, owner="lookahead", what="params.slow")
        inner, fast_state = inner_update(updates, state.fast_state, params.fast, **extra_args)
        is_sync = state.steps_since_sync >= sync_period - 1
        fast_out, slow_out = tree.map_unzip(
            lambda f, s, u: _pair_step_leaf(f, s, u, slow_step_size, is_sync),
            2,
            params.fast,
            params.slow,
            inner,
        )
        if reset_state:
            landed = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params.fast, fast_out)
            fast_state = _reset(fast_optimizer, landed, fast_state, is_sync)
        steps = jnp.where(is_sync, 0, state.steps_since_sync + 1).astype(jnp.int32)
        out = type(params)(fast=fast_out, slow=slow_out)
        return out, LookaheadState(fast_state, steps, None)

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(
                "lookahead: update needs the params (the fast weights) to move the slow weights."
            )
        if _is_pair(params) != (state.slow is None):
            given = "a LookaheadParams" if _is_pair(params) else "plain params"
            raise TypeError(
                f"lookahead: update got {given} but init got "
                f"{'plain params' if _is_pair(params) else 'a LookaheadParams'}; pass the "
                "same kind to both (LookaheadParams(fast, slow), or the fast weights alone)."
            )
        if _is_pair(params):
            return pair_update(updates, state, params, **extra_args)
        tree.check_structure(state.slow, params, owner="lookahead", what="params")
        inner, fast_state = inner_update(updates, state.fast_state, params, **extra_args)
        is_sync = state.steps_since_sync >= sync_period - 1
        out, slow = tree.map_unzip(
            lambda p, u, s: _step_leaf(p, u, s, slow_step_size, is_sync),
            2,
            params,
            inner,
            state.slow,
        )
        if reset_state:
            fast_state = _reset(fast_optimizer, slow, fast_state, is_sync)
        steps = jnp.where(is_sync, 0, state.steps_since_sync + 1).astype(jnp.int32)
        return out, LookaheadState(fast_state, steps, slow)

    return GradientTransformation(init_fn, update_fn)


def lookahead_slow_params(state: OptState, params: Params | None = None) -> Params:
    """The slow weights ``phi`` of a :func:`lookahead`, found anywhere in ``state``.

    ``state`` may be a :class:`LookaheadState` or the state of any chain or wrapper
    holding one :func:`lookahead` (a lookahead nested inside another's
    ``fast_optimizer`` is not searched: the outer one's slow weights are returned).
    The state holds the slow weights after every update (``state.slow``), so
    this only finds them; ``params``, if given, are checked to have their tree
    structure. Between syncs they are the point the fast weights will be pulled
    back toward, and the weights to evaluate. With Flax NNX:
    ``lookahead_slow_params(nnx.as_pure(optimizer.opt_state))``.

    Args:
      state: an optimizer state holding a :class:`LookaheadState`.
      params: optional, the current params (the fast weights): checked to be
        shaped like the slow weights.

    Returns:
      The slow weights, shaped like the params, in their dtypes.

    Raises:
      ValueError: ``state`` holds no :class:`LookaheadState`, or several side by
        side; ``params`` shaped unlike the slow weights; the lookahead was given a
        :class:`LookaheadParams` (its slow weights are ``params.slow``).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.lookahead(gradtx.sgd(1.0), sync_period=2, slow_step_size=0.5)
      >>> w = jnp.array([4.0]); state = tx.init(w)
      >>> u, state = tx.update(jnp.array([1.0]), state, w)  # fast: 4 -> 3
      >>> w = w + u
      >>> gradtx.lookahead_slow_params(state)  # not synced yet
      Array([4.], dtype=float32)
      >>> u, state = tx.update(jnp.array([1.0]), state, w)  # fast: 3 -> 2, sync
      >>> w = w + u
      >>> gradtx.lookahead_slow_params(state)  # 4 + 0.5 * (2 - 4)
      Array([3.], dtype=float32)
      >>> state.slow
      Array([3.], dtype=float32)
    """
    found = find_state(state, LookaheadState, "lookahead_slow_params")
    if found.slow is None:
        raise ValueError(
            "lookahead_slow_params: this lookahead was given a LookaheadParams, so the slow "
            "weights are not in its state: read them from params.slow."
        )
    if params is not None:
        tree.check_structure(found.slow, params, owner="lookahead_slow_params", what="params")
    return found.slow


def ranger(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    sync_period: int = 6,
    slow_step_size: float = 0.5,
    reset_state: bool = False,
    nesterov: bool = False,
    below_threshold: BelowThreshold = "momentum",
    eps_hat: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """Ranger: Lookahead over RAdam (Wright 2019).

    Composition, literally: ``lookahead(radam(learning_rate, b1, b2, eps,
    eps_root, threshold, ...), sync_period, slow_step_size, reset_state)``. Read
    the slow weights with :func:`lookahead_slow_params`.

    Defaults: RAdam's (Optax's ``radam``) and Ranger's ``k = 6, alpha = 0.5``.
    Wright's released code is ``ranger(lr, b1=0.95, eps=1e-5, eps_hat=True)``
    (eps on the uncorrected root, the momentum step below the threshold; it tests
    ``rho_t > 5`` where gradtx tests ``>=``, which differs only when ``rho_t``
    is exactly 5); later versions of that code also centralise the gradients,
    which is not part of Ranger here.

    Args:
      learning_rate: RAdam's step size ``alpha_t``, a number or a schedule.
      b1, b2, eps, eps_root, threshold: see :func:`scale_by_radam`.
      sync_period: Lookahead's ``k`` (default 6), see :func:`lookahead`.
      slow_step_size: Lookahead's ``alpha`` (default 0.5), see :func:`lookahead`.
      reset_state: see :func:`lookahead`.
      nesterov, below_threshold, eps_hat, mu_dtype, nu_dtype: see :func:`scale_by_radam`.

    Raises:
      ValueError: a bad hyperparameter of RAdam or Lookahead (see both).

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda w: jnp.sum(w**2)
      >>> tx = gradtx.ranger(0.1)
      >>> w = jnp.array([1.0, -2.0]); state = tx.init(w)
      >>> for _ in range(300):
      ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
      ...     w = gradtx.apply_updates(w, updates)
      >>> bool(loss(gradtx.lookahead_slow_params(state, w)) < 1e-3)
      True

    References:
      Wright (2019), Ranger (github.com/lessw2020/Ranger-Deep-Learning-Optimizer);
      Liu et al. (2020), On the Variance of the Adaptive Learning Rate and Beyond,
      ICLR, Alg. 2; Zhang et al. (2019), Lookahead Optimizer: k steps forward, 1
      step back, NeurIPS, Alg. 1.
    """
    inner = radam(
        learning_rate,
        b1,
        b2,
        eps,
        eps_root,
        threshold,
        nesterov=nesterov,
        below_threshold=below_threshold,
        eps_hat=eps_hat,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )
    return lookahead(inner, sync_period, slow_step_size, reset_state)
