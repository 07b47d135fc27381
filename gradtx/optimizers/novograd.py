"""NovoGrad (Ginsburg et al. 2019, Alg. 1): layer-wise second moments.

NovoGrad keeps Adam's per-coordinate first moment but one second moment per
layer (per leaf of the params tree): the moving average of the layer's squared
gradient norm. The gradient is normalized by it *before* the momentum, and the
weight decay is added to the normalized gradient inside the momentum.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import chain
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByNovogradState(NamedTuple):
    """State of :func:`scale_by_novograd`."""

    count: Array  # int32 scalar: t.
    mu: Updates  # m^l: the momentum of the normalized gradients, shaped like the params.
    nu: Updates  # v^l: EMA of ||g^l||^2, one real scalar per leaf.


def novograd_leaf(g, w, m, v, first, b1, b2, eps, eps_root, weight_decay):
    """One layer of Alg. 1; ``first`` is True at t = 1 (the moments start from g)."""
    c = tree.compute_dtype(jnp.promote_types(g.dtype, m.dtype))
    g_c = tree.as_dtype(g, c)
    sq_norm = tree.squared_norm(g_c)
    new_v = jnp.where(first, sq_norm, b2 * tree.as_dtype(v, sq_norm.dtype) + (1 - b2) * sq_norm)
    normalized = g_c / (jnp.sqrt(new_v + eps_root) + eps)
    if w is not None:
        normalized = normalized + weight_decay * tree.as_dtype(w, c)
    new_m = jnp.where(first, normalized, b1 * tree.as_dtype(m, c) + normalized)
    new_m = tree.as_dtype(new_m, m.dtype)
    return tree.as_dtype(new_m, g.dtype), new_m, tree.as_dtype(new_v, v.dtype)


def scale_by_novograd(
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mu_dtype: Any | None = None,
) -> GradientTransformation:
    """NovoGrad's scaling (Ginsburg et al. 2019, Alg. 1), for each layer ``l``.

    .. math::
        v^l_t = \\beta_2 v^l_{t-1} + (1-\\beta_2) \\|g^l_t\\|^2, \\quad
        m^l_t = \\beta_1 m^l_{t-1} +
            \\left(\\frac{g^l_t}{\\sqrt{v^l_t + \\epsilon_{root}} + \\epsilon}
            + d\\, w^l_t\\right), \\quad \\text{out} = m^l_t

    starting from ``v_1 = ||g_1||^2`` and ``m_1 = g_1 / (sqrt(v_1) + eps) + d w_1``
    (no averaging with zeros, hence no bias correction). Symbols: ``beta_1,
    beta_2`` = ``b1, b2``, ``d`` = ``weight_decay``, ``epsilon`` = ``eps``. The
    momentum adds the whole normalized gradient (no ``1 - beta_1`` factor), as the
    paper.

    Departure from the paper: ``eps`` (outside the root) and ``eps_root`` (inside)
    are added at every step, the first included; the paper has no epsilon.

    Args:
      b1: ``beta_1`` in [0, 1).
      b2: ``beta_2`` in [0, 1).
      eps: >= 0, added outside the root.
      eps_root: >= 0, added inside the root.
      weight_decay: ``d`` >= 0; when nonzero, ``update`` needs the params.
      mu_dtype: dtype of ``m``; ``None`` keeps the params'.

    Raises:
      ValueError: a decay outside [0, 1); a negative ``eps``, ``eps_root`` or
        ``weight_decay``; a nonzero ``weight_decay`` and ``update`` without params.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_novograd(eps=0.0)
      >>> tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))[0]  # g / ||g||
      Array([0.6, 0.8], dtype=float32)

    References:
      Ginsburg et al. (2019), Stochastic Gradient Methods with Layer-wise Adaptive
      Moments for Training of Deep Networks, Alg. 1.
    """
    owner = "scale_by_novograd"
    _checks.in_range(owner, "b1", b1, 0.0, 1.0)
    _checks.in_range(owner, "b2", b2, 0.0, 1.0)
    _checks.non_negative(owner, "eps", eps)
    _checks.non_negative(owner, "eps_root", eps_root)
    _checks.non_negative(owner, "weight_decay", weight_decay)
    _checks.dtype_or_none(owner, "mu_dtype", mu_dtype)
    reads_params = not _checks.is_zero(weight_decay)

    def init_fn(params):
        tree.check_inexact(params, owner)

        def nu_leaf(p):
            return tree.zeros_beside(p, (), tree.real_dtype(jnp.asarray(p).dtype))

        return ScaleByNovogradState(
            tree.zero_count(), tree.zeros_like(params, mu_dtype), jax.tree.map(nu_leaf, params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        tree.check_structure(state.mu, updates, owner=owner)
        if reads_params and params is None:
            raise ValueError(
                f"{owner}: weight_decay adds d * w to the normalized gradient: call "
                "update(updates, state, params)."
            )
        if reads_params:
            tree.check_structure(params, updates, owner=owner)
        count = tree.safe_increment(state.count)
        first = count == 1
        weights = params if reads_params else updates  # (ignored without decay)

        def leaf(g, w, m, v):
            w = w if reads_params else None
            return novograd_leaf(g, w, m, v, first, b1, b2, eps, eps_root, weight_decay)

        out, mu, nu = tree.map_unzip(leaf, 3, updates, weights, state.mu, state.nu)
        return out, ScaleByNovogradState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)


def novograd(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """NovoGrad (Ginsburg et al. 2019, Alg. 1).

    .. math::
        w^l_{t+1} = w^l_t - \\lambda_t m^l_t

    with ``m`` the layer-normalized momentum of :func:`scale_by_novograd`.
    Composition: ``chain(scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
    scale_by_learning_rate(lambda_t))``, as Optax (``eps`` 1e-6 here, 1e-8 in the
    block, as Optax).

    Args:
      learning_rate: ``lambda_t``, a number or a schedule.
      b1, b2, eps, eps_root, weight_decay: see :func:`scale_by_novograd`.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.novograd(0.1, eps=0.0)
      >>> tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))[0]
      Array([-0.06..., -0.08...], dtype=float32)

    References:
      Ginsburg et al. (2019), Stochastic Gradient Methods with Layer-wise Adaptive
      Moments for Training of Deep Networks, Alg. 1.
    """
    _checks.learning_rate("novograd", learning_rate)
    return chain(
        scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
        scale_by_learning_rate(learning_rate),
    )
