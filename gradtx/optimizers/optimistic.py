"""Optimistic gradient methods for games and saddle points.

Optimistic gradient descent (the Euclidean optimistic mirror descent of
Daskalakis, Ilyas, Syrgkanis & Zeng 2018; the OGDA of Mokhtari, Ozdaglar &
Pattathil 2020, here with separate weights ``alpha, beta``) takes, besides
the step along the current gradient, a step against the previous one:
``theta <- theta - eta ((alpha + beta) g_t - beta g_{t-1})``, which damps the
cycling of plain gradient descent-ascent on min-max problems. Optimistic Adam
(Daskalakis et al. 2018, Alg. 1) does the same with Adam's ratios
``r_t = m_hat_t / (sqrt(v_hat_t) + eps)`` in place of the gradients.

**The first step.** There is no ``g_0``: gradtx, like Optax, uses ``g_1`` for it
(as if the iterate before the first were the first), so the first step is
``-eta alpha g_1``. Taking ``g_0 = 0`` instead would make it ``-eta (alpha +
beta) g_1``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import chain
from gradtx.optimizers.adam import scale_by_adam
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByOptimisticGradientState(NamedTuple):
    """State of :func:`scale_by_optimistic_gradient`."""

    count: Array  # int32 scalar: t - 1, the steps taken (0: no previous gradient yet).
    previous_gradient: Updates  # g_{t-1}, in the params' dtype.


def _optimistic_leaf(g, g_prev, is_first, alpha, beta):
    """``(alpha + beta) g_t - beta g_{t-1}``, with ``g_{t-1} = g_t`` at the first step."""
    c = tree.compute_dtype(g.dtype)
    g_c = tree.as_dtype(g, c)
    prev = jnp.where(is_first, g_c, tree.as_dtype(g_prev, c))
    out = (alpha + beta) * g_c - beta * prev
    return tree.as_dtype(out, g.dtype), tree.as_dtype(g, g_prev.dtype)


def _at(value, count):
    return value(count) if callable(value) else value


def scale_by_optimistic_gradient(
    alpha: ScalarOrSchedule = 1.0, beta: ScalarOrSchedule = 1.0
) -> GradientTransformation:
    """The generalized optimistic gradient: ``(alpha + beta) g_t - beta g_{t-1}``.

    .. math::
        \\text{out}_t = (\\alpha + \\beta)\\, g_t - \\beta\\, g_{t-1},
        \\qquad g_0 := g_1

    (OGDA, Mokhtari et al. 2020, with two weights; ``alpha = beta = 1`` and a step
    ``eta`` is Daskalakis et al. 2018's ``2 g_t - g_{t-1}``.) ``beta = 0``
    gives the gradient back. The incoming updates need not be gradients:
    :func:`optimistic_adam_v2` feeds Adam's ratios.

    Args:
      alpha: the weight ``alpha`` of the current gradient, a finite number or a
        schedule of the step count (Optax takes numbers only).
      beta: the optimism ``beta`` (a negative momentum), a finite number or a
        schedule.

    Raises:
      ValueError: ``alpha`` or ``beta`` not finite.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_optimistic_gradient()
      >>> state = tx.init(jnp.zeros(1))
      >>> first, state = tx.update(jnp.array([1.0]), state)  # alpha g_1
      >>> second, _ = tx.update(jnp.array([3.0]), state)  # 2 * 3 - 1
      >>> first, second
      (Array([1.], dtype=float32), Array([5.], dtype=float32))
    """
    owner = "scale_by_optimistic_gradient"
    _checks.finite(owner, "alpha", alpha, schedule=True)
    _checks.finite(owner, "beta", beta, schedule=True)

    def init_fn(params):
        return ScaleByOptimisticGradientState(tree.zero_count(), tree.zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.previous_gradient, updates, owner=owner)
        is_first = state.count == 0
        a, b = _at(alpha, state.count), _at(beta, state.count)
        out, previous = tree.map_unzip(
            lambda g, p: _optimistic_leaf(g, p, is_first, a, b),
            2,
            updates,
            state.previous_gradient,
        )
        return out, ScaleByOptimisticGradientState(tree.safe_increment(state.count), previous)

    return GradientTransformation(init_fn, update_fn)


def optimistic_gradient_descent(
    learning_rate: ScalarOrSchedule,
    alpha: ScalarOrSchedule = 1.0,
    beta: ScalarOrSchedule = 1.0,
) -> GradientTransformation:
    """Optimistic gradient descent (Daskalakis et al. 2018; Mokhtari et al. 2020).

    .. math::
        \\theta \\leftarrow \\theta - \\eta_t \\left((\\alpha + \\beta)\\, g_t
            - \\beta\\, g_{t-1}\\right)

    Composition: ``chain(scale_by_optimistic_gradient(alpha, beta),
    scale_by_learning_rate(eta))``. With the defaults, ``theta - 2 eta g_t + eta
    g_{t-1}``: the optimistic mirror descent step of Daskalakis et al. (Euclidean
    case). The first step is ``-eta alpha g_1`` (see the module docstring).

    Args:
      learning_rate: ``eta_t``, a number or a schedule.
      alpha, beta: see :func:`scale_by_optimistic_gradient`.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> # min_x max_y x*y: plain descent-ascent spirals out, this converges.
      >>> tx = gradtx.optimistic_gradient_descent(0.3)
      >>> z = jnp.array([1.0, 1.0]); state = tx.init(z)
      >>> for _ in range(200):
      ...     g = jnp.array([z[1], -z[0]])  # (d/dx, -d/dy) of x*y
      ...     updates, state = tx.update(g, state, z)
      ...     z = gradtx.apply_updates(z, updates)
      >>> bool(jnp.linalg.norm(z) < 1e-3)  # gradtx.sgd(0.3) ends near 8e3
      True

    References:
      Daskalakis, Ilyas, Syrgkanis & Zeng (2018), Training GANs with Optimism,
      ICLR (optimistic mirror descent); Mokhtari, Ozdaglar & Pattathil (2020), A Unified Analysis of
      Extra-gradient and Optimistic Gradient Methods for Saddle Point Problems:
      Proximal Point Approach, AISTATS (OGDA).
    """
    _checks.learning_rate("optimistic_gradient_descent", learning_rate)
    return chain(
        scale_by_optimistic_gradient(alpha, beta),
        scale_by_learning_rate(learning_rate),
    )


def optimistic_adam_v2(
    learning_rate: ScalarOrSchedule,
    *,
    alpha: ScalarOrSchedule = 1.0,
    beta: ScalarOrSchedule = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    nesterov: bool = True,
) -> GradientTransformation:
    """Optimistic Adam (Daskalakis et al. 2018, Alg. 1), Optax's second interface.

    .. math::
        r_t = \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon},
        \\qquad \\theta \\leftarrow \\theta - \\eta_t
            \\left((\\alpha + \\beta)\\, r_t - \\beta\\, r_{t-1}\\right)

    Composition: ``chain(scale_by_adam(b1, b2, eps, eps_root, mu_dtype,
    nesterov=nesterov), scale_by_optimistic_gradient(alpha, beta),
    scale_by_learning_rate(eta))``. Alg. 1 is ``alpha = beta = 1`` with
    ``nesterov=False``; the default ``nesterov=True`` (Optax's) takes NAdam's
    ``m_hat`` (see :func:`scale_by_adam`). Its first step is ``-eta alpha r_1``
    where Alg. 1, reading ``r_0 = 0``, takes ``-2 eta r_1``.

    Args:
      learning_rate: ``eta_t``, a number or a schedule.
      alpha, beta: see :func:`scale_by_optimistic_gradient`.
      b1, b2, eps, eps_root, mu_dtype, nesterov: see :func:`scale_by_adam`.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.optimistic_adam_v2(0.1, nesterov=False)
      >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]  # -eta alpha r_1
      Array([-0.0999...], dtype=float32)

    References:
      Daskalakis, Ilyas, Syrgkanis & Zeng (2018), Training GANs with Optimism,
      ICLR, Alg. 1.
    """
    _checks.learning_rate("optimistic_adam_v2", learning_rate)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha, beta),
        scale_by_learning_rate(learning_rate),
    )


def optimistic_adam(
    learning_rate: ScalarOrSchedule,
    optimism: ScalarOrSchedule | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    """Optimistic Adam (Daskalakis et al. 2018, Alg. 1), Optax's first interface.

    .. math::
        \\theta \\leftarrow \\theta - \\left(\\eta_t\\, r_t
            + o_t\\, (r_t - r_{t-1})\\right)

    with ``r_t`` Adam's ratio (:func:`optimistic_adam_v2`). Composition:
    ``chain(scale_by_adam(...), scale_by_optimistic_gradient(eta, o),
    scale_by_learning_rate(1.0))``: the learning rate is the optimistic block's
    ``alpha`` and the optimism ``o`` its ``beta``. ``o = eta`` (the default) is
    Alg. 1's ``-2 eta r_t + eta r_{t-1}``. Optax deprecates this interface for
    :func:`optimistic_adam_v2` and refuses schedules here; gradtx takes them.

    Args:
      learning_rate: ``eta_t``, a number or a schedule.
      optimism: ``o``, a finite number or a schedule; ``None`` uses
        ``learning_rate``, as the paper.
      b1, b2, eps, eps_root, mu_dtype, nesterov: see :func:`scale_by_adam`.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.optimistic_adam(0.1, nesterov=False)
      >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]  # -eta r_1
      Array([-0.0999...], dtype=float32)

    References:
      Daskalakis, Ilyas, Syrgkanis & Zeng (2018), Training GANs with Optimism,
      ICLR, Alg. 1.
    """
    _checks.learning_rate("optimistic_adam", learning_rate)
    _checks.finite("optimistic_adam", "optimism", optimism, schedule=True, optional=True)
    optimism = learning_rate if optimism is None else optimism
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(learning_rate, optimism),
        scale_by_learning_rate(1.0),
    )
