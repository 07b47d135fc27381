"""MADGRAD: momentumized, adaptive, dual averaged gradients (Defazio & Jelassi 2021, Alg. 1).

Symbols: ``gamma_k`` = ``learning_rate`` at step ``k``; ``lambda_k`` the weight
of gradient ``k`` in the sums; ``s`` = ``s``; ``nu`` = ``grad_sum_sq``; ``x_0`` =
``x0``; ``epsilon`` = ``eps``; the paper's momentum ``c`` is ``1 - momentum``
(``momentum = 0.9`` is the paper's ``c = 0.1``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, Params, ScalarOrSchedule, Updates
from gradtx.combine import chain
from gradtx.transforms.regularize import add_decayed_weights, decoupled_weight_decay


class MadgradState(NamedTuple):
    """State of :func:`scale_by_madgrad`."""

    count: Array  # int32 scalar: k, the steps taken.
    grad_sum_sq: Updates  # nu: sum of lambda_i |g_i|^2, real.
    s: Updates  # s: sum of lambda_i g_i.
    x0: Params  # x_0: the params given to init.


def _madgrad_leaf(g, nu, s, x0, x, gamma, k, momentum, eps):
    """One leaf of Alg. 1 at step ``k``: the new ``nu`` and ``s``, and ``x_{k+1} - x_k``."""
    c = tree.compute_dtype(g.dtype)
    lam = gamma * jnp.sqrt(tree.as_dtype(k + 1, tree.real_dtype(c)))
    g_c = tree.as_dtype(g, c)
    new_nu = tree.as_dtype(nu, tree.real_dtype(c)) + lam * tree.abs_sq(g_c)
    new_s = tree.as_dtype(s, c) + lam * g_c
    z = tree.as_dtype(x0, c) - tree.divide_by_root(new_s, jnp.cbrt(new_nu) + eps)
    x_c = tree.as_dtype(x, c)
    new_x = (1 - momentum) * z + momentum * x_c
    return (
        tree.as_dtype(new_x - x_c, g.dtype),
        tree.as_dtype(new_nu, nu.dtype),
        tree.as_dtype(new_s, s.dtype),
    )


def _check(owner, learning_rate, momentum, eps):
    _checks.learning_rate(owner, learning_rate)
    _checks.in_range(owner, "momentum", momentum, 0.0, 1.0)
    _checks.non_negative(owner, "eps", eps)


def scale_by_madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    eps: float = 1e-6,
    *,
    eps_in_lambda: bool = True,
) -> GradientTransformation:
    """MADGRAD's step: dual averaging with a cube-root AdaGrad scale, then momentum.

    .. math::
        \\lambda_k = (\\gamma_k + \\epsilon) \\sqrt{k + 1}, \\quad
        s \\leftarrow s + \\lambda_k g_k, \\quad
        \\nu \\leftarrow \\nu + \\lambda_k |g_k|^2, \\\\
        z = x_0 - \\frac{s}{\\nu^{1/3} + \\epsilon}, \\quad
        \\text{out} = x_{k+1} - x_k, \\quad
        x_{k+1} = (1 - c)\\, x_k + c\\, z, \\quad c = 1 - \\text{momentum}

    (Defazio & Jelassi 2021, Alg. 1, with ``k`` counted from 0.) The output is a
    complete step, the learning rate included: chain nothing after it that scales
    it. ``x_k`` are the params given to ``update``, and ``x_0`` those given to
    ``init``. ``momentum = 0`` is dual averaging without momentum (``x = z``).

    Departures from the paper, all shared by Optax's ``optax.contrib.madgrad``,
    the authors' code (facebookresearch/madgrad) and ``pytorch_optimizer.MADGRAD``:
    the weight ``lambda_k`` uses ``gamma_k + eps`` where the paper has ``gamma_k``
    (``eps_in_lambda=False`` gives the paper's); ``eps`` is added to the cube root.
    A denominator of 0 (only with ``eps = 0`` and no gradient yet) gives a zero
    step, as PyTorch's, not Optax's 0/0. Complex params use ``|g|^2`` in ``nu``
    (Optax squares ``g``; PyTorch refuses them).

    Args:
      learning_rate: ``gamma_k``, a number or a schedule of the step count.
      momentum: in [0, 1): the weight of ``x_k`` in ``x_{k+1}``, the paper's
        ``1 - c``.
      eps: ``epsilon`` >= 0, added to the cube root (and to ``gamma_k``).
      eps_in_lambda: ``True`` (default; Optax, the authors' code, PyTorch):
        ``lambda_k = (gamma_k + eps) sqrt(k + 1)``; ``False``: the paper's
        ``lambda_k = gamma_k sqrt(k + 1)``.

    Raises:
      ValueError: a non-finite ``learning_rate``; ``momentum`` outside [0, 1);
        ``eps`` negative; ``update`` called without ``params``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_madgrad(1.0, momentum=0.0, eps=0.0)
      >>> w = jnp.zeros(2)
      >>> tx.update(jnp.array([8.0, -1.0]), tx.init(w), w)[0]  # -g / |g|^(2/3)
      Array([-2.,  1.], dtype=float32)

    References:
      Defazio & Jelassi (2021), A Momentumized, Adaptive, Dual Averaged Gradient
      Method for Stochastic Optimization, Alg. 1 (MADGRAD).
    """
    owner = "scale_by_madgrad"
    _check(owner, learning_rate, momentum, eps)

    def init_fn(params):
        tree.check_inexact(params, owner)
        return MadgradState(
            tree.zero_count(),
            tree.zeros_like(params, real=True),
            tree.zeros_like(params),
            jax.tree.map(lambda x: jnp.array(x, copy=True), params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(
                f"{owner}: update needs the params: call update(updates, state, params)."
            )
        tree.check_structure(state.s, updates, owner=owner)
        gamma = learning_rate(state.count) if callable(learning_rate) else learning_rate
        if eps_in_lambda:
            gamma = gamma + eps
        out, nu, s = tree.map_unzip(
            lambda g, v, t, w0, w: _madgrad_leaf(g, v, t, w0, w, gamma, state.count, momentum, eps),
            3,
            updates,
            state.grad_sum_sq,
            state.s,
            state.x0,
            params,
        )
        return out, MadgradState(tree.safe_increment(state.count), nu, s, state.x0)

    return GradientTransformation(init_fn, update_fn)


def madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    eps: float = 1e-6,
    *,
    weight_decouple: bool = False,
    eps_in_lambda: bool = True,
) -> GradientTransformation:
    """MADGRAD (Defazio & Jelassi 2021, Alg. 1), with L2 weight decay.

    .. math::
        g_k \\leftarrow g_k + \\lambda_{wd} x_k, \\qquad
        x_{k+1} = (1 - c)\\, x_k + c \\left(x_0 - \\frac{s}{\\nu^{1/3} + \\epsilon}\\right)

    Composition: ``chain(add_decayed_weights(weight_decay),
    scale_by_madgrad(learning_rate, momentum, eps))``, as Optax's
    ``optax.contrib.madgrad`` and ``pytorch_optimizer.MADGRAD``'s default: the
    decay enters the gradient, so the dual averages accumulate it.

    Args:
      learning_rate: ``gamma_k``, a number or a schedule.
      momentum, eps, eps_in_lambda: see :func:`scale_by_madgrad`.
      weight_decay: ``lambda_wd`` >= 0.
      weight_decouple: ``False`` (default; Optax, the authors' code): the decay
        is added to the gradient. ``True``: ``pytorch_optimizer``'s
        ``weight_decouple=True``, ``chain(scale_by_madgrad(...),
        decoupled_weight_decay(weight_decay, gamma_k + eps))``: after the step,
        ``x`` loses ``(gamma_k + eps) lambda_wd x_k`` (``gamma_k`` alone with
        ``eps_in_lambda=False``).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.madgrad(1.0, momentum=0.0, eps=0.0)
      >>> w = jnp.zeros(1)
      >>> tx.update(jnp.array([8.0]), tx.init(w), w)[0]
      Array([-2.], dtype=float32)

    References:
      Defazio & Jelassi (2021), A Momentumized, Adaptive, Dual Averaged Gradient
      Method for Stochastic Optimization, Alg. 1.
    """
    _check("madgrad", learning_rate, momentum, eps)
    _checks.non_negative("madgrad", "weight_decay", weight_decay)
    step = scale_by_madgrad(learning_rate, momentum, eps, eps_in_lambda=eps_in_lambda)
    if not weight_decouple:
        return chain(add_decayed_weights(weight_decay), step)
    shift = eps if eps_in_lambda else 0.0
    if callable(learning_rate):
        rate = lambda count: learning_rate(count) + shift  # noqa: E731
    else:
        rate = learning_rate + shift
    return chain(step, decoupled_weight_decay(weight_decay, rate))
