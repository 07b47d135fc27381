"""MoMo and MoMo-Adam: momentum model-based step sizes (Schaipp et al. 2023, Alg. 1, 2)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates


class MomoState(NamedTuple):
    """State of :func:`momo` (Optax's fields, in Optax's order)."""

    exp_avg: Updates  # d_k: EMA of the gradients, like the params.
    barf: Array  # real scalar: \bar f_k, EMA of the loss values.
    gamma: Array  # real scalar: gamma_k, EMA of <g_i, x_i>.
    lb: Array  # real scalar: f_*, the lower bound in use.
    count: Array  # int32 scalar: k.


class MomoAdamState(NamedTuple):
    """State of :func:`momo_adam` (Optax's fields, in Optax's order)."""

    exp_avg: Updates  # d_k: EMA of the gradients.
    exp_avg_sq: Updates  # v_k: EMA of |g|^2, real.
    barf: Array  # real scalar: \bar f_k.
    gamma: Array  # real scalar: gamma_k.
    lb: Array  # real scalar: f_*.
    count: Array  # int32 scalar: k.


def _scalar_dtype(params: Any) -> jnp.dtype:
    dtypes = [
        tree.real_dtype(tree.compute_dtype(jnp.result_type(x))) for x in jax.tree.leaves(params)
    ]
    return jnp.result_type(*dtypes) if dtypes else jnp.dtype(jnp.float32)


def _total(parts: Any, dtype: Any) -> Array:
    return sum((p.astype(dtype) for p in jax.tree.leaves(parts)), jnp.zeros([], dtype))


def _real_dot(a: Array, b: Array) -> Array:
    return jnp.sum(jnp.real(jnp.conj(a) * b))


def _check(owner, learning_rate, lower_bound, weight_decay):
    _checks.learning_rate(owner, learning_rate)
    _checks.finite(owner, "lower_bound", lower_bound)
    _checks.non_negative(owner, "weight_decay", weight_decay)


def _check_decay_form(owner, decay_form):
    if decay_form not in ("optax", "authors"):
        _checks._fail(owner, "decay_form", decay_form, "'optax' or 'authors'")


def _need_value(owner, params, value):
    if params is None:
        raise ValueError(f"{owner}: the model reads <g, x>: pass the params to update.")
    if value is None:
        raise ValueError(
            f"{owner}: pass the loss at the params as update(..., value=loss) "
            "(jax.value_and_grad gives both)."
        )


def _lower_bound(cap, old_lb, floor, scale):
    """MoMo*'s reset: where the model's cap falls below the bound in use, halve it."""
    return jnp.where(cap < scale * old_lb, jnp.maximum(cap / (2 * scale), floor), old_lb)


def momo(
    learning_rate: ScalarOrSchedule = 1.0,
    beta: Any = 0.9,
    lower_bound: Any = 0.0,
    weight_decay: Any = 0.0,
    adapt_lower_bound: bool = False,
    *,
    decay_form: Literal["optax", "authors"] = "optax",
) -> GradientTransformation:
    """MoMo (Schaipp et al. 2023, Alg. 1): SGD with momentum whose step is capped by a
    Polyak step on a momentum model of the loss.

    With ``f_k`` the loss at ``x_k`` (``update``'s ``value``), ``rho`` = ``beta``
    (0 at the first step), ``alpha_k`` = ``learning_rate(k)``, ``lambda`` =
    ``weight_decay`` and ``f_*`` = ``lower_bound``:

    .. math::
        d_k &= \\rho d_{k-1} + (1-\\rho) g_k, \\quad
        \\bar f_k = \\rho \\bar f_{k-1} + (1-\\rho) f_k, \\quad
        \\gamma_k = \\rho \\gamma_{k-1} + (1-\\rho) \\langle g_k, x_k \\rangle \\\\
        \\tau_k &= \\min\\Big(\\alpha_k, \\frac{\\big((1+\\alpha_k\\lambda)
            (\\bar f_k - f_* - \\gamma_k) + \\langle d_k, x_k \\rangle\\big)_+}
            {\\|d_k\\|^2}\\Big) \\\\
        x_{k+1} &= x_k - \\frac{\\alpha_k \\lambda}{1 + \\alpha_k \\lambda} x_k
            - \\tau_k d_k

    ``adapt_lower_bound=True`` is MoMo* (the paper's online estimate of ``f_*``):
    after each step ``f_* <- max(\\bar f_k + <d_k, x_k> - gamma_k - tau_k
    ||d_k||^2 / 2, lower_bound)``, and where the model's cap ``(1 + alpha
    lambda)(\\bar f_k - gamma_k) + <d_k, x_k>`` falls below ``(1 + alpha lambda)
    f_*``, ``f_*`` is first reset to half the cap (not below ``lower_bound``).

    Args:
      learning_rate: ``alpha``, the largest step (a number or a schedule).
      beta: ``rho`` in [0, 1), the momentum.
      lower_bound: ``f_*``, a lower bound on the loss (0 for most losses).
      weight_decay: ``lambda`` >= 0.
      adapt_lower_bound: MoMo*, see above.
      decay_form: where the decay divides. ``"optax"`` (default): Optax's,
        as above, ``x_k / (1 + alpha lambda) - tau_k d_k``. ``"authors"``: the
        authors' PyTorch code (``momo-opt`` 0.1.0), a proximal step that
        divides the whole step, ``(x_k - tau_k d_k) / (1 + alpha lambda)``.
        The two agree when ``weight_decay`` is 0.

    Returns:
      A complete optimizer whose state is :class:`MomoState`. ``update`` needs
      the params and ``value=`` the loss.

    Raises:
      ValueError: a hyperparameter out of range; ``update`` without params or
        without ``value``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.momo(learning_rate=10.0)
      >>> x = jnp.array([2.0])  # f(x) = x^2 / 2, g = x: the Polyak step f g / |g|^2
      >>> tx.update(x, tx.init(x), x, value=2.0)[0]
      Array([-1.], dtype=float32)

    Note:
      A zero model direction (``||d_k||^2`` at most the machine epsilon of the
      scalars' dtype) gives ``tau_k = 0``. Complex params use the real part of
      the inner products.

    References:
      Schaipp, Ohana, Eickenberg, Defazio & Gower (2023), MoMo: Momentum Models
      for Adaptive Learning Rates, Alg. 1 (MoMo) and Sec. 5 (MoMo*).
    """
    owner = "momo"
    _check(owner, learning_rate, lower_bound, weight_decay)
    _checks.in_range(owner, "beta", beta, 0.0, 1.0)
    _check_decay_form(owner, decay_form)

    def init_fn(params):
        tree.check_inexact(params, owner)
        dtype = _scalar_dtype(params)
        return MomoState(
            tree.zeros_like(params),
            jnp.zeros([], dtype),
            jnp.zeros([], dtype),
            jnp.asarray(lower_bound, dtype),
            tree.zero_count(),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        _need_value(owner, params, value)
        tree.check_structure(state.exp_avg, updates, owner=owner)
        dtype = state.barf.dtype
        rho = jnp.where(state.count == 0, 0.0, beta).astype(dtype)

        def moments(g, x, d):
            c = tree.compute_dtype(jnp.result_type(g, x))
            g, x = g.astype(c), x.astype(c)
            d = rho * d.astype(c) + (1 - rho) * g
            return d, _real_dot(g, x), jnp.sum(tree.abs_sq(d)), _real_dot(d, x)

        d, gx, dd, dx = tree.map_unzip(moments, 4, updates, params, state.exp_avg)
        barf = rho * state.barf + (1 - rho) * jnp.asarray(value, dtype)
        gamma = rho * state.gamma + (1 - rho) * _total(gx, dtype)
        d_sq, d_x = _total(dd, dtype), _total(dx, dtype)
        alpha = jnp.asarray(
            learning_rate(state.count) if callable(learning_rate) else learning_rate, dtype
        )
        shrink = 1 + alpha * weight_decay
        lb = state.lb
        if adapt_lower_bound:
            lb = _lower_bound(shrink * (barf - gamma) + d_x, lb, lower_bound, shrink)
        polyak = jnp.maximum(shrink * (barf - lb - gamma) + d_x, 0) / d_sq
        polyak = jnp.where(d_sq <= jnp.finfo(dtype).eps, 0, polyak)
        tau = jnp.minimum(alpha, polyak)

        def step(g, x, d_i):
            c = d_i.dtype
            step_size = tau / shrink if decay_form == "authors" else tau
            out = -(alpha * weight_decay / shrink) * x.astype(c) - step_size * d_i
            return out.astype(g.dtype)

        new_updates = jax.tree.map(step, updates, params, d)
        if adapt_lower_bound:
            lb = jnp.maximum(barf + d_x - gamma - tau * d_sq / 2, lower_bound)
        exp_avg = jax.tree.map(lambda new, old: new.astype(old.dtype), d, state.exp_avg)
        count = tree.safe_increment(state.count)
        return new_updates, MomoState(exp_avg, barf, gamma, lb.astype(dtype), count)

    return GradientTransformation(init_fn, update_fn)


def momo_adam(
    learning_rate: ScalarOrSchedule = 1e-2,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    lower_bound: Any = 0.0,
    weight_decay: Any = 0.0,
    adapt_lower_bound: bool = False,
    *,
    decay_form: Literal["optax", "authors"] = "optax",
) -> GradientTransformation:
    """MoMo-Adam (Schaipp et al. 2023, Alg. 2): Adam whose step is capped by a Polyak
    step on a momentum model of the loss, in Adam's metric.

    With :func:`momo`'s symbols, ``rho_k = 1 - b1^{k+1}`` and
    ``D_k = \\epsilon + \\sqrt{v_k / (1 - b2^{k+1})}``:

    .. math::
        d_k &= \\beta_1 d_{k-1} + (1-\\beta_1) g_k, \\quad
        v_k = \\beta_2 v_{k-1} + (1-\\beta_2) |g_k|^2 \\\\
        \\bar f_k &= \\beta_1 \\bar f_{k-1} + (1-\\beta_1) f_k, \\quad
        \\gamma_k = \\beta_1 \\gamma_{k-1} + (1-\\beta_1) \\langle g_k, x_k \\rangle \\\\
        \\tau_k &= \\min\\Big(\\frac{\\alpha_k}{\\rho_k}, \\frac{\\big((1+\\alpha_k\\lambda)
            (\\bar f_k - \\rho_k f_* - \\gamma_k) + \\langle d_k, x_k\\rangle\\big)_+}
            {\\langle d_k, d_k / D_k\\rangle}\\Big) \\\\
        x_{k+1} &= x_k - \\frac{\\alpha_k \\lambda}{1 + \\alpha_k \\lambda} x_k
            - \\tau_k \\frac{d_k}{D_k}

    ``adapt_lower_bound=True`` estimates ``f_*`` online as in :func:`momo`, with
    ``rho_k`` dividing the estimate.

    Args:
      learning_rate: ``alpha`` (a number or a schedule).
      b1, b2: ``beta_1``, ``beta_2`` in [0, 1).
      eps: ``epsilon`` >= 0, added to the root.
      lower_bound, weight_decay, adapt_lower_bound: see :func:`momo`.
      decay_form: see :func:`momo` (``"authors"``: ``(x_k - tau_k d_k / D_k) /
        (1 + alpha lambda)``, the authors' ``MomoAdam`` with ``divide=True``,
        its default).

    Returns:
      A complete optimizer whose state is :class:`MomoAdamState`. ``update``
      needs the params and ``value=`` the loss.

    Raises:
      ValueError: a hyperparameter out of range; ``update`` without params or
        without ``value``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.momo_adam(learning_rate=0.1)
      >>> x = jnp.array([2.0])
      >>> u, _ = tx.update(x, tx.init(x), x, value=2.0)
      >>> u  # alpha / rho_0 = 1 caps tau; d / D = 0.2 / 2
      Array([-0.09999...], dtype=float32)

    References:
      Schaipp, Ohana, Eickenberg, Defazio & Gower (2023), MoMo: Momentum Models
      for Adaptive Learning Rates, Alg. 2 (MoMo-Adam).
    """
    owner = "momo_adam"
    _check(owner, learning_rate, lower_bound, weight_decay)
    _checks.in_range(owner, "b1", b1, 0.0, 1.0)
    _checks.in_range(owner, "b2", b2, 0.0, 1.0)
    _checks.non_negative(owner, "eps", eps)
    _check_decay_form(owner, decay_form)

    def init_fn(params):
        tree.check_inexact(params, owner)
        dtype = _scalar_dtype(params)
        return MomoAdamState(
            tree.zeros_like(params),
            tree.zeros_like(params, real=True),
            jnp.zeros([], dtype),
            jnp.zeros([], dtype),
            jnp.asarray(lower_bound, dtype),
            tree.zero_count(),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        _need_value(owner, params, value)
        tree.check_structure(state.exp_avg, updates, owner=owner)
        dtype = state.barf.dtype
        count = tree.safe_increment(state.count)
        t = count.astype(dtype)
        rho_k, bc2 = 1 - b1**t, 1 - b2**t

        def moments(g, x, d, v):
            c = tree.compute_dtype(jnp.result_type(g, x))
            g, x = g.astype(c), x.astype(c)
            d = b1 * d.astype(c) + (1 - b1) * g
            v = b2 * v.astype(tree.real_dtype(c)) + (1 - b2) * tree.abs_sq(g)
            big_d = eps + tree.sqrt(v / bc2.astype(v.dtype))
            return d, v, _real_dot(g, x), _real_dot(d, d / big_d), _real_dot(d, x)

        d, v, gx, dd, dx = tree.map_unzip(
            moments, 5, updates, params, state.exp_avg, state.exp_avg_sq
        )
        barf = b1 * state.barf + (1 - b1) * jnp.asarray(value, dtype)
        gamma = b1 * state.gamma + (1 - b1) * _total(gx, dtype)
        d_sq, d_x = _total(dd, dtype), _total(dx, dtype)
        alpha = jnp.asarray(
            learning_rate(state.count) if callable(learning_rate) else learning_rate, dtype
        )
        shrink = 1 + alpha * weight_decay
        lb = state.lb
        if adapt_lower_bound:
            lb = _lower_bound(shrink * (barf - gamma) + d_x, lb, lower_bound, rho_k * shrink)
        polyak = jnp.maximum(shrink * (barf - rho_k * lb - gamma) + d_x, 0) / d_sq
        polyak = jnp.where(d_sq <= jnp.finfo(dtype).eps, 0, polyak)
        tau = jnp.minimum(alpha / rho_k, polyak)

        def step(g, x, d_i, v_i):
            big_d = eps + tree.sqrt(v_i / bc2.astype(v_i.dtype))
            step_size = tau / shrink if decay_form == "authors" else tau
            out = -(alpha * weight_decay / shrink) * x.astype(d_i.dtype) - step_size * d_i / big_d
            return out.astype(g.dtype)

        new_updates = jax.tree.map(step, updates, params, d, v)
        if adapt_lower_bound:
            lb = jnp.maximum((barf + d_x - gamma - tau * d_sq / 2) / rho_k, lower_bound)
        exp_avg = jax.tree.map(lambda new, old: new.astype(old.dtype), d, state.exp_avg)
        exp_avg_sq = jax.tree.map(lambda new, old: new.astype(old.dtype), v, state.exp_avg_sq)
        new_state = MomoAdamState(exp_avg, exp_avg_sq, barf, gamma, lb.astype(dtype), count)
        return new_updates, new_state

    return GradientTransformation(init_fn, update_fn)
