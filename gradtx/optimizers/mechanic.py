"""Mechanic: a learned scale for any optimizer's steps (Cutkosky, Defazio & Mehta 2023, Alg. 1)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, Updates


class MechanicState(NamedTuple):
    """State of :func:`mechanize` (Optax's fields, in Optax's order)."""

    base_optimizer_state: Any  # the wrapped optimizer's state.
    count: Array  # int32 scalar: t.
    r: Array  # (num_betas,) real: the rewards r_t (before the max with 0).
    m: Array  # (num_betas,) real: the running maxima m_t of |h|.
    v: Array  # (num_betas,) real: the discounted sums v_t of h^2.
    s: Array  # (num_betas,) real: the scales s_t; the step scale is their sum.
    x0: Updates  # x_ref: the params at the first update.


def _total(parts: Any, dtype: Any) -> Array:
    return sum((p.astype(dtype) for p in jax.tree.leaves(parts)), jnp.zeros([], dtype))


def mechanize(
    base_optimizer: GradientTransformation,
    weight_decay: Any = 0.01,
    eps: Any = 1e-8,
    s_init: Any = 1e-6,
    num_betas: int = 6,
    *,
    tuner_form: Literal["optax", "authors"] = "optax",
) -> GradientTransformation:
    """Mechanic (Cutkosky, Defazio & Mehta 2023, Alg. 1): learns the scale of another
    optimizer's steps by coin betting.

    The base optimizer's steps ``u_t`` are summed into ``\\Delta_{t+1} = \\Delta_t +
    u_t``, and the params are ``x_{t+1} = x_{ref} + (\\sum_i s_{t+1,i})
    \\Delta_{t+1}``; ``n`` = ``num_betas`` bettors with decays ``\\beta_i = 1 -
    10^{-i}`` learn the scales. With ``g_t`` the gradient, ``\\lambda`` =
    ``weight_decay``, ``S_t = \\sum_i s_{t,i}``:

    .. math::
        \\tilde g_t &= g_t + \\lambda S_t \\frac{\\|g_t\\|}{\\|x_t\\| + \\epsilon} x_t,
        \\quad h_t = \\langle \\Delta_t, \\tilde g_t \\rangle \\\\
        m_t &= \\max(\\beta m_{t-1}, |h_t| + \\epsilon), \\quad
        v_t = \\beta^2 v_{t-1} + h_t^2, \\quad
        r_t = \\beta r_{t-1} - s_t \\operatorname{clip}(h_t, -m_{t-1}, m_{t-1}) \\\\
        W_t &= \\frac{s_{init}}{n} m_t + \\max(r_t, 0), \\quad
        s_{t+1} = \\frac{W_t}{\\sqrt{v_t} + \\epsilon}

    all per bettor (``\\beta``, ``m``, ``v``, ``r``, ``s`` are vectors of ``n``).
    ``\\Delta_t`` is read back from the params, ``(x_t - x_{ref}) / (S_t +
    \\epsilon)``, so the state holds no second copy of them.

    Args:
      base_optimizer: the optimizer whose steps are scaled (its ``update`` gets the
        params and the extra arguments).
      weight_decay: ``lambda`` >= 0, scaled by ``S_t ||g|| / ||x||``.
      eps: ``epsilon`` > 0.
      s_init: ``s_init`` > 0, each bettor's first scale and its share of the
        initial wealth.
      num_betas: ``n`` >= 1.
      tuner_form: the bettors' rules. ``"optax"`` (default): Optax's, as above.
        ``"authors"``: the authors' PyTorch package (``mechanic-pytorch``
        0.0.1): the scales start at 0 and ``m_0`` at ``10^{-6}``, ``m_t =
        \\max(\\beta m_{t-1}, |h_t|)`` and ``r_t = \\max(\\beta r_{t-1} - s_t
        h_t, 0)`` (``h`` unclipped, ``r`` clipped at 0 in place, as the paper's
        Alg. 1), and the decay term reads the params after the base step,
        ``x_t + u_t``, in place of ``x_t`` (its norm too). Its ``s_init``
        default is 1e-8.

    Returns:
      A complete optimizer whose state is :class:`MechanicState`; ``update``
      needs the params.

    Raises:
      ValueError: a hyperparameter out of range; ``update`` without params.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.mechanize(gradtx.sgd(0.1))
      >>> x = jnp.zeros(2)
      >>> u, state = tx.update(jnp.array([1.0, -1.0]), tx.init(x), x)
      >>> jnp.round(u / 1e-7, 3)  # Delta_1 = 0, so S_2 = s_init: s_init * (-0.1 g)
      Array([-1.,  1.], dtype=float32)

    Note:
      These are Optax's rules, which depart from the paper's Alg. 1 in four
      places: the bettors start at ``s_init`` (the paper's at 0); ``m`` takes
      ``|h| + epsilon`` (the paper's ``h``); ``r`` adds ``h`` clipped to the
      previous ``[-m, m]`` and keeps its negative part (the paper clips ``r``
      at 0 in place); and ``\\Delta_t`` is read back from the params with
      ``epsilon`` in the divisor. ``x_ref`` is taken at the first ``update``.
      Real params only.

    References:
      Cutkosky, Defazio & Mehta (2023), Mechanic: A Learning Rate Tuner, NeurIPS,
      Alg. 1.
    """
    owner = "mechanize"
    _checks.non_negative(owner, "weight_decay", weight_decay)
    _checks.positive(owner, "eps", eps)
    _checks.positive(owner, "s_init", s_init)
    _checks.positive_int(owner, "num_betas", num_betas)
    if tuner_form not in ("optax", "authors"):
        _checks._fail(owner, "tuner_form", tuner_form, "'optax' or 'authors'")
    authors = tuner_form == "authors"

    def init_fn(params):
        tree.check_inexact(params, owner)
        dtypes = [tree.real_dtype(tree.compute_dtype(x.dtype)) for x in jax.tree.leaves(params)]
        dtype = jnp.result_type(*dtypes) if dtypes else jnp.dtype(jnp.float32)
        zeros = lambda: jnp.zeros([num_betas], dtype)  # noqa: E731  (distinct buffers)
        return MechanicState(
            base_optimizer_state=base_optimizer.init(params),
            count=tree.zero_count(),
            r=zeros(),
            m=jnp.full([num_betas], 1e-6, dtype) if authors else zeros(),
            v=zeros(),
            s=zeros() if authors else jnp.full([num_betas], s_init, dtype),
            x0=jax.tree.map(lambda x: jnp.array(x, copy=True), params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(f"{owner}: the steps are summed from the params: pass them to update.")
        tree.check_structure(state.x0, updates, owner=owner)
        base_updates, base_state = base_optimizer.update(
            updates, state.base_optimizer_state, params, **extra_args
        )
        dtype = state.s.dtype
        first = state.count == 0
        x_ref = jax.tree.map(lambda x, x0: jnp.where(first, x, x0), params, state.x0)
        big_s = jnp.sum(state.s)
        g_norm = tree.sqrt(tree.squared_norm(updates)).astype(dtype)
        if authors:  # the authors' code decays the params after the base step, x_t + u_t
            decayed = jax.tree.map(
                lambda x, u: x.astype(jnp.promote_types(x.dtype, dtype)) + u, params, base_updates
            )
        else:
            decayed = params
        x_norm = tree.sqrt(tree.squared_norm(decayed)).astype(dtype)
        decay = weight_decay * big_s * g_norm / (x_norm + eps)

        def inner(g, x, x0, y):  # one leaf of h_t = <Delta_t, g~_t>, y the decayed params
            c = jnp.promote_types(tree.compute_dtype(jnp.result_type(g, x)), dtype)
            delta = (x.astype(c) - x0.astype(c)) / (big_s + eps)
            return jnp.sum(delta * (g.astype(c) + decay * y.astype(c)))

        h = _total(jax.tree.map(inner, updates, params, x_ref, decayed), dtype)
        betas = jnp.asarray([1 - 0.1**i for i in range(1, num_betas + 1)], dtype)
        v = betas**2 * state.v + h**2
        if authors:
            m = jnp.maximum(betas * state.m, jnp.abs(h))
            r = jnp.maximum(betas * state.r - state.s * h, 0)
        else:
            m = jnp.maximum(betas * state.m, jnp.abs(h) + eps)
            r = betas * state.r - state.s * jnp.clip(h, -state.m, state.m)
        wealth = s_init / num_betas * m + jnp.maximum(r, 0)
        s = wealth / (tree.sqrt(v) + eps)  # derivative 0, not inf, where v = 0

        def step(u, x, x0):  # x_{t+1} - x_t with x_{t+1} = x_ref + S_{t+1} (Delta_t + u_t)
            c = jnp.promote_types(tree.compute_dtype(jnp.result_type(u, x)), dtype)
            x_c, x0_c = x.astype(c), x0.astype(c)
            delta = (x_c - x0_c) / (big_s + eps) + u.astype(c)
            return (x0_c + jnp.sum(s) * delta - x_c).astype(u.dtype)

        new_updates = jax.tree.map(step, base_updates, params, x_ref)
        count = tree.safe_increment(state.count)
        return new_updates, MechanicState(base_state, count, r, m, v, s, x_ref)

    return GradientTransformation(init_fn, update_fn)
