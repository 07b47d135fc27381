"""Sophia: clipped momentum over a diagonal Hessian estimate (Liu et al. 2023, Alg. 3).

Symbols: ``beta_1`` = ``b1`` (momentum decay); ``beta_2`` = ``b2`` (decay of the
Hessian EMA, updated every ``k`` = ``update_interval`` steps); ``m`` = ``mu``;
``h`` = ``nu``; ``gamma`` = ``gamma``; ``epsilon`` = ``eps``; the clip at 1 =
``clip_threshold``; ``lambda`` = ``weight_decay``; ``eta_t`` = ``learning_rate``.
The Hessian diagonal comes from a transformation (``hessian_diagonal_fn``),
Hutchinson's estimator by default (Sophia-H).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import Mask, accepts_extra_args, chain
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate


class HutchinsonState(NamedTuple):
    """State of :func:`hutchinson_estimator_diag_hessian`."""

    key: Array  # The PRNG key the next probe vector is drawn from.


def _hutchinson_leaf(hv, u):
    """``u * (H u)``: one leaf of the estimate, unbiased since ``E[u u^T] = I``."""
    return hv * u


def hutchinson_estimator_diag_hessian(random_seed: Array | None = None) -> GradientTransformation:
    """Hutchinson's estimator of the Hessian's diagonal, ``u * (H u)``.

    .. math::
        \\hat h = u \\odot \\nabla^2 f(\\theta)\\, u, \\qquad u_i \\in \\{-1, +1\\}
        \\text{ uniformly}

    (Liu et al. 2023, Alg. 1, Hutchinson 1989). The Hessian-vector product is a
    forward derivative of ``jax.grad(obj_fn)``: ``update`` takes the objective
    ``obj_fn(params) -> scalar`` as an extra argument and ignores the incoming
    updates' values (the estimate takes their dtypes). Each call draws a fresh
    ``u`` from the key in its state (split once per call, then once per leaf,
    as Optax's, so the same seed gives the same numbers).

    Args:
      random_seed: a PRNG key; ``None`` uses ``jax.random.PRNGKey(0)``.

    Returns:
      A transformation with state :class:`HutchinsonState` whose ``update``
      needs the params and ``obj_fn``.

    Raises:
      ValueError: ``update`` called without the params or without ``obj_fn``.

    Note:
      The paper draws ``u`` from a standard normal; this (as Optax) uses
      Rademacher signs, the estimator of least variance among those with
      independent entries.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.hutchinson_estimator_diag_hessian()
      >>> w = jnp.array([1.0, 2.0])
      >>> obj_fn = lambda w: jnp.sum(jnp.array([3.0, 5.0]) * w**2)  # diag(H) = (6, 10)
      >>> tx.update(w, tx.init(w), w, obj_fn=obj_fn)[0]
      Array([ 6., 10.], dtype=float32)
    """

    def init_fn(params):
        tree.check_inexact(params, "hutchinson_estimator_diag_hessian")
        return HutchinsonState(jax.random.PRNGKey(0) if random_seed is None else random_seed)

    def update_fn(updates, state, params=None, obj_fn=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("hutchinson_estimator_diag_hessian: update needs the params.")
        if obj_fn is None:
            raise ValueError(
                "hutchinson_estimator_diag_hessian: update needs obj_fn, the objective "
                "as a function of the params: update(updates, state, params, obj_fn=f)."
            )
        key, probe_key = jax.random.split(state.key)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(probe_key, len(leaves))
        signs = [
            jax.random.rademacher(k, jnp.shape(p), jnp.float32).astype(jnp.result_type(p))
            for k, p in zip(keys, leaves, strict=True)
        ]
        probes = jax.tree.unflatten(treedef, signs)
        hvp = jax.jvp(jax.grad(obj_fn), (params,), (probes,))[1]
        estimate = jax.tree.map(_hutchinson_leaf, hvp, probes)
        # In the incoming updates' dtypes (the gradient's), like every update.
        return tree.cast_like(estimate, updates), HutchinsonState(key)

    return GradientTransformation(init_fn, update_fn)


class SophiaState(NamedTuple):
    """State of :func:`scale_by_sophia` (Optax's fields and order)."""

    count: Array  # int32 scalar: t, steps taken.
    mu: Updates  # m: EMA of g with decay beta_1, in mu_dtype.
    nu: Updates  # h: EMA of the Hessian-diagonal estimates with decay beta_2, params' dtype.
    hessian_fn_state: Any  # The state of hessian_diagonal_fn.


def _sophia_leaf(g, m, h, t, b1, gamma, eps, clip_threshold, bias_correction):
    """``m``'s new value, and ``clip(m_hat / max(gamma h, eps), c)`` in ``g``'s dtype."""
    m = tree.moment_leaf(g, m, b1, 1)
    c = tree.compute_dtype(jnp.promote_types(m.dtype, h.dtype))
    m_hat = m.astype(c)
    if bias_correction:
        m_hat = m_hat / tree.bias_correction_factor(b1, t, c)
    u = m_hat / jnp.maximum(gamma * h.astype(c), eps)
    if clip_threshold is not None:
        u = jnp.clip(u, -clip_threshold, clip_threshold)
    return u.astype(g.dtype), m


def scale_by_sophia(
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: GradientTransformation | None = None,
    mu_dtype: Any | None = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
    *,
    bias_correction: bool = True,
    refresh_hessian_first: bool = False,
) -> GradientTransformation:
    """Sophia's scaling: bias-corrected momentum over a clipped diagonal Hessian.

    .. math::
        m \\leftarrow \\beta_1 m + (1 - \\beta_1) g, \\quad
        \\text{out} = \\operatorname{clip}\\!\\left(
            \\frac{m / (1 - \\beta_1^t)}{\\max(\\gamma h, \\epsilon)}, c\\right),

    then, every ``k``-th step (``t = 1, k + 1, 2k + 1, ...``),
    ``h <- beta_2 h + (1 - beta_2) h_hat`` with ``h_hat`` from
    ``hessian_diagonal_fn`` (Liu et al. 2023, Alg. 3). ``clip`` bounds each
    coordinate to ``[-c, c]``.

    Args:
      b1: ``beta_1`` in [0, 1), the momentum's decay.
      b2: ``beta_2`` in [0, 1), the Hessian EMA's decay (per estimate: its
        effective decay per step is about ``1 - (1 - b2) / k``).
      eps: ``epsilon`` >= 0, the floor of the denominator.
      gamma: ``gamma`` > 0, the scale of the Hessian in the denominator.
      clip_threshold: ``c`` > 0, or ``None`` for no clipping.
      update_interval: ``k`` >= 1, steps between Hessian estimates.
      hessian_diagonal_fn: a transformation whose ``update(grads, state,
        params, **extra_args)`` returns the estimate ``h_hat``; ``None`` uses
        :func:`hutchinson_estimator_diag_hessian` (which needs ``obj_fn``).
        The extra arguments of ``update`` are passed on to it.
      mu_dtype: dtype of ``m``; ``None`` keeps the params'.
      verbose: print the share of unclipped coordinates (the "win rate", which
        the authors advise keeping in [0.1, 0.5]) with ``jax.debug.print``.
      print_win_rate_every_n_steps: with ``verbose``, print every this many
        steps (0: never).
      bias_correction: divide ``m`` by ``1 - beta_1^t`` (``True``, Optax's) or
        not (``False``: the paper's Alg. 3 and pytorch_optimizer's ``SophiaH``).
      refresh_hessian_first: on a refresh step, update ``h`` before the step
        and use it (``True``: the paper's Alg. 3 and ``SophiaH``), or after it
        (``False``, Optax's: the step uses the previous ``h``).

    Raises:
      ValueError: a hyperparameter out of range; ``update`` without the params.

    Note:
      The defaults are Optax's, which departs from the paper's Alg. 3 in two
      ways, each with its switch: the momentum is bias corrected
      (``bias_correction``), and a step uses the Hessian EMA from *before*
      that step's estimate (``refresh_hessian_first``; Optax's first step
      divides by ``max(0, eps)`` and so moves every coordinate by ``c``). The
      Hutchinson probes are Rademacher, not the paper's Gaussian.
      pytorch_optimizer's ``SophiaH(lr, betas, p=rho, eps=e)`` computes
      ``clip(m / max(h, e), rho)``: ``gamma=1, eps=e, clip_threshold=rho`` with
      both switches at the paper's setting.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_sophia(b1=0.0, gamma=1.0, refresh_hessian_first=True)
      >>> w = jnp.array([1.0, 1.0])
      >>> obj_fn = lambda w: jnp.sum(jnp.array([2.0, 8.0]) * w**2)  # diag(H) = (4, 16)
      >>> tx.update(jnp.array([0.02, -0.8]), tx.init(w), w, obj_fn=obj_fn)[0]  # g / (0.01 H)
      Array([ 0.5, -1. ], dtype=float32)
    """
    owner = "scale_by_sophia"
    _checks.in_range(owner, "b1", b1, 0.0, 1.0)
    _checks.in_range(owner, "b2", b2, 0.0, 1.0)
    _checks.non_negative(owner, "eps", eps)
    _checks.positive(owner, "gamma", gamma)
    _checks.positive(owner, "clip_threshold", clip_threshold, optional=True)
    _checks.positive_int(owner, "update_interval", update_interval)
    _checks.dtype_or_none(owner, "mu_dtype", mu_dtype)
    for name, flag in (
        ("verbose", verbose),
        ("bias_correction", bias_correction),
        ("refresh_hessian_first", refresh_hessian_first),
    ):
        if not isinstance(flag, bool):
            raise TypeError(f"{owner}: {name} must be True or False, got {flag!r}.")
    if hessian_diagonal_fn is None:
        hessian_diagonal_fn = hutchinson_estimator_diag_hessian()
    hessian_update = accepts_extra_args(hessian_diagonal_fn.update)

    def init_fn(params):
        return SophiaState(
            tree.zero_count(),
            tree.zeros_like(params, mu_dtype),
            tree.zeros_like(params),
            hessian_diagonal_fn.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(f"{owner}: update needs the params (the Hessian is taken at them).")
        tree.check_structure(state.mu, updates, owner=owner)
        t = tree.safe_increment(state.count)

        def refresh(hessian_state, nu):
            estimate, hessian_state = hessian_update(updates, hessian_state, params, **extra_args)
            return hessian_state, tree.update_moment(estimate, nu, b2, 1)

        hessian_state, nu = jax.lax.cond(
            state.count % update_interval == 0,
            refresh,
            lambda hessian_state, nu: (hessian_state, nu),
            state.hessian_fn_state,
            state.nu,
        )
        out, mu = tree.map_unzip(
            lambda g, m, h: _sophia_leaf(
                g, m, h, t, b1, gamma, eps, clip_threshold, bias_correction
            ),
            2,
            updates,
            state.mu,
            nu if refresh_hessian_first else state.nu,
        )
        if verbose and print_win_rate_every_n_steps > 0:
            _print_win_rate(out, clip_threshold, t, print_win_rate_every_n_steps)
        return out, SophiaState(t, mu, nu, hessian_state)

    return GradientTransformation(init_fn, update_fn)


def _print_win_rate(out: Updates, clip_threshold: Any, t: Array, every: int) -> None:
    """Prints the share of coordinates below the clip every ``every`` steps."""
    leaves = jax.tree.leaves(out)
    limit = jnp.inf if clip_threshold is None else clip_threshold
    unclipped = sum(jnp.sum(jnp.abs(u) < limit) for u in leaves)
    rate = unclipped / sum(u.size for u in leaves)
    jax.lax.cond(
        t % every == 0,
        lambda: jax.debug.print("Sophia win rate: {}", rate),
        lambda: None,
    )


def sophia(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    weight_decay_mask: Mask | None = None,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: GradientTransformation | None = None,
    mu_dtype: Any | None = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
    *,
    bias_correction: bool = True,
    refresh_hessian_first: bool = False,
) -> GradientTransformation:
    """Sophia (Liu et al. 2023, Alg. 3): clipped Newton-like steps with decoupled decay.

    .. math::
        \\theta \\leftarrow \\theta - \\eta_t \\left(
            \\operatorname{clip}\\!\\left(\\frac{\\hat m}{\\max(\\gamma h,
            \\epsilon)}, c\\right) + \\lambda \\theta \\right)

    Composition: ``chain(scale_by_sophia(...), add_decayed_weights(lambda,
    weight_decay_mask), scale_by_learning_rate(eta))``; see
    :func:`scale_by_sophia` for the rule and its departures from the paper.
    With the default Hutchinson estimator, call ``update(grads, state, params,
    obj_fn=f)`` with ``f(params) -> loss`` on the current batch.

    Args:
      learning_rate: ``eta_t``, a number or a schedule.
      b1, b2, eps, gamma: see :func:`scale_by_sophia`.
      clip_threshold, update_interval, hessian_diagonal_fn: see :func:`scale_by_sophia`.
      mu_dtype, verbose, print_win_rate_every_n_steps: see :func:`scale_by_sophia`.
      bias_correction, refresh_hessian_first: see :func:`scale_by_sophia`.
      weight_decay: ``lambda`` >= 0 (default 1e-4, Optax's).
      weight_decay_mask: which leaves are decayed (see :func:`add_decayed_weights`).

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda w: jnp.sum(jnp.array([1.0, 10.0]) * w**2)
      >>> tx = gradtx.sophia(0.2, b1=0.9, b2=0.9, weight_decay=0.0, gamma=1.0, update_interval=1)
      >>> @jax.jit
      ... def step(w, state):
      ...     updates, state = tx.update(jax.grad(loss)(w), state, w, obj_fn=loss)
      ...     return gradtx.apply_updates(w, updates), state
      >>> w = jnp.array([1.0, 1.0]); state = tx.init(w)
      >>> for _ in range(100):
      ...     w, state = step(w, state)
      >>> bool(loss(w) < 1e-2)
      True

    References:
      Liu, Li, Hall, Liang & Ma (2023), Sophia: A Scalable Stochastic
      Second-order Optimizer for Language Model Pre-training, ICLR 2024, Alg. 3.
    """
    _checks.learning_rate("sophia", learning_rate)
    return chain(
        scale_by_sophia(
            b1,
            b2,
            eps,
            gamma,
            clip_threshold,
            update_interval,
            hessian_diagonal_fn,
            mu_dtype,
            verbose,
            print_win_rate_every_n_steps,
            bias_correction=bias_correction,
            refresh_hessian_first=refresh_hessian_first,
        ),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
