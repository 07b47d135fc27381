"""COCOB-Backprop: coin betting through backpropagation (Orabona & Tommasi 2017, Alg. 2)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import Mask, chain
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate


class COCOBState(NamedTuple):
    """State of :func:`scale_by_cocob` (Optax's fields, in Optax's order), each shaped
    like the params; all but ``init_particles`` in at least float32."""

    init_particles: Updates  # w_1: a copy of the initial params.
    cumulative_gradients: Updates  # theta_t: the sum of the negative gradients.
    scale: Updates  # L_t: the largest |g| seen (eps at the start).
    subgradients: Updates  # G_t: the sum of |g|.
    reward: Updates  # Reward_t: the coin-betting wealth won, >= 0.


def cocob_leaf(g: Array, w: Array, w1: Array, theta, big_l, big_g, reward, alpha: Any):
    """One leaf of Alg. 2: returns ``(w_{t+1} - w_t, theta, L, G, Reward)``.

    With the paper's negative gradient ``-g``:
    ``L = max(L, |g|)``, ``G = G + |g|``, ``Reward = max(Reward - g (w_t - w_1), 0)``,
    ``theta = theta - g``,
    ``w_{t+1} = w_1 + theta (L + Reward) / (L max(G + L, alpha L))``.
    """
    c = tree.compute_dtype(jnp.result_type(g, w))
    out_dtype, state_dtype = g.dtype, theta.dtype
    g, w, w1 = g.astype(c), w.astype(c), w1.astype(c)
    big_l = jnp.maximum(big_l.astype(c), jnp.abs(g))
    big_g = big_g.astype(c) + jnp.abs(g)
    reward = jnp.maximum(reward.astype(c) - g * (w - w1), 0)
    theta = theta.astype(c) - g
    w_next = w1 + theta / (big_l * jnp.maximum(big_g + big_l, alpha * big_l)) * (big_l + reward)
    new_state = (theta, big_l, big_g, reward)
    return (w_next - w).astype(out_dtype), *(x.astype(state_dtype) for x in new_state)


def scale_by_cocob(alpha: Any = 100.0, eps: Any = 1e-8) -> GradientTransformation:
    """COCOB-Backprop's step (Orabona & Tommasi 2017, Alg. 2): each coordinate bets a
    fraction of the wealth it has won on the sign of the summed negative gradients.

    Per coordinate, with ``w_1`` the params at ``init``, ``w_t`` those passed to
    ``update`` and ``g_t`` the incoming updates:

    .. math::
        L_t &= \\max(L_{t-1}, |g_t|), \\quad G_t = G_{t-1} + |g_t|, \\quad
        \\theta_t = \\theta_{t-1} - g_t \\\\
        \\text{Reward}_t &= \\max\\big(\\text{Reward}_{t-1} - g_t (w_t - w_1), 0\\big) \\\\
        w_{t+1} &= w_1 + \\frac{\\theta_t}{L_t \\max(G_t + L_t,\\ \\alpha L_t)}
            (L_t + \\text{Reward}_t)

    and the update is ``w_{t+1} - w_t`` (a complete step: add it to the params).

    Args:
      alpha: ``alpha`` > 0, which caps the first bets (the paper's default 100).
      eps: ``L_0`` > 0, the initial scale.

    Returns:
      A transformation whose state is :class:`COCOBState`; ``update`` needs the
      params.

    Raises:
      ValueError: ``alpha`` or ``eps`` not positive; ``update`` without params.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_cocob(alpha=4.0)
      >>> x = jnp.array([1.0, 1.0])
      >>> tx.update(jnp.array([2.0, -2.0]), tx.init(x), x)[0]  # theta L / (L alpha L)
      Array([-0.25,  0.25], dtype=float32)

    Note:
      The paper writes ``L_0 = 0`` (undefined for a zero first gradient); ``eps``
      as ``L_0`` is the authors' TensorFlow code's and Optax's. Real params only.
      The sums are kept in at least float32 (Optax keeps the params' dtype, in
      which ``eps`` = 1e-8 is 0 for float16 params).

    References:
      Orabona & Tommasi (2017), Training Deep Networks without Learning Rates
      Through Coin Betting, NeurIPS, Alg. 2.
    """
    owner = "scale_by_cocob"
    _checks.positive(owner, "alpha", alpha)
    _checks.positive(owner, "eps", eps)

    def init_fn(params):
        tree.check_inexact(params, owner)

        def full(value):
            # At least float32: eps = 1e-8 is 0 in float16, and G grows past its range.
            return jax.tree.map(
                lambda x: jnp.full_like(x, value, tree.compute_dtype(x.dtype)), params
            )

        return COCOBState(
            init_particles=jax.tree.map(lambda x: jnp.array(x, copy=True), params),
            cumulative_gradients=full(0.0),
            scale=full(eps),
            subgradients=full(0.0),
            reward=full(0.0),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{owner}: the step is measured from the params: pass them to update.")
        tree.check_structure(state.init_particles, updates, owner=owner)

        def leaf(g, w, w1, theta, big_l, big_g, reward):
            return cocob_leaf(g, w, w1, theta, big_l, big_g, reward, alpha)

        step, theta, big_l, big_g, reward = tree.map_unzip(
            leaf, 5, updates, params, state.init_particles, state.cumulative_gradients,
            state.scale, state.subgradients, state.reward,
        )  # fmt: skip
        return step, COCOBState(state.init_particles, theta, big_l, big_g, reward)

    return GradientTransformation(init_fn, update_fn)


def cocob(
    learning_rate: ScalarOrSchedule = 1.0,
    alpha: Any = 100.0,
    eps: Any = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    """COCOB-Backprop (Orabona & Tommasi 2017, Alg. 2), with an L2 decay and a
    gradient scale.

    Composition: ``chain(add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate, flip_sign=False), scale_by_cocob(alpha,
    eps))``, as Optax: the learning rate multiplies the *gradient* fed to the
    betting (COCOB has no step size; 1 is the paper's method), and the decay is
    added to the gradient.

    Args:
      learning_rate: a multiplier of the gradient (a number or a schedule).
      alpha, eps: see :func:`scale_by_cocob`.
      weight_decay: ``lambda`` >= 0, added to the gradient as ``lambda w``.
      mask: which leaves are decayed (see :func:`add_decayed_weights`).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.cocob(alpha=4.0)
      >>> x = jnp.array([1.0, 1.0])
      >>> tx.update(jnp.array([2.0, -2.0]), tx.init(x), x)[0]
      Array([-0.25,  0.25], dtype=float32)

    References:
      Orabona & Tommasi (2017), Training Deep Networks without Learning Rates
      Through Coin Betting, NeurIPS, Alg. 2.
    """
    _checks.learning_rate("cocob", learning_rate)
    return chain(
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate, flip_sign=False),
        scale_by_cocob(alpha, eps),
    )
