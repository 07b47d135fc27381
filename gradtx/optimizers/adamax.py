"""AdaMax: Adam with the infinity norm (Kingma & Ba 2015, Sec. 7.1, Alg. 2), and AdaMaxW."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import GradientTransformation, ScalarOrSchedule
from gradtx.combine import Mask, chain
from gradtx.optimizers.adam import ScaleByAdamState, check_adam_args, moment_transformation
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate


def scale_by_adamax(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AdaMax's scaling: Adam with the infinity norm (Kingma & Ba 2015, Alg. 2).

    .. math::
        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        u \\leftarrow \\max(\\beta_2 u, |g| + \\epsilon), \\quad
        \\text{out} = \\frac{m}{(1-\\beta_1^t)\\, u}

    The limit ``p -> infinity`` of ``v <- b2^p v + (1 - b2^p) |g|^p`` (Kingma & Ba
    2015, Sec. 7.1). The paper has no ``eps``; it is added inside the maximum, as Optax
    and PyTorch do, so an all-zero gradient gives 0, not 0/0.

    Args:
      b1: ``beta_1`` in [0, 1).
      b2: ``beta_2`` in [0, 1).
      eps: >= 0; ``eps=0`` is the paper's rule.
      mu_dtype, nu_dtype: dtypes of ``m`` and ``u``; ``None`` keeps the params'.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_adamax(eps=0.0)
      >>> tx.update(jnp.array([-3.0]), tx.init(jnp.zeros(1)))[0]  # m / ((1 - b1) |g|)
      Array([-0.99999...], dtype=float32)
    """
    check_adam_args("scale_by_adamax", b1, b2, eps, 0.0, mu_dtype, nu_dtype)

    def leaf(g, mu, u, shared):
        c = tree.compute_dtype(g.dtype)
        new_mu = tree.moment_leaf(g, mu, b1, 1)
        magnitude = jnp.abs(g.astype(c)) + eps
        new_u = jnp.maximum(b2 * u.astype(tree.real_dtype(c)), magnitude)
        bc1 = shared(c)
        out = tree.divide_by_root(new_mu.astype(c), bc1 * new_u)
        return out.astype(g.dtype), new_mu, new_u.astype(u.dtype)

    def scalars(count, dtype):
        return tree.bias_correction_factor(b1, count, dtype)

    return moment_transformation(
        "scale_by_adamax", ScaleByAdamState, leaf, mu_dtype, nu_dtype, scalars
    )


def adamax(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AdaMax (Kingma & Ba 2015, Alg. 2): Adam with the infinity norm.

    .. math::
        \\theta \\leftarrow \\theta - \\frac{\\alpha}{1-\\beta_1^t} \\frac{m}{u}

    Composition: ``chain(scale_by_adamax(...), scale_by_learning_rate(alpha))``.
    Default rate 2e-3 as the paper (Optax requires it to be given).

    Args:
      learning_rate: ``alpha``, a number or a schedule.
      b1, b2, eps, mu_dtype, nu_dtype: see :func:`scale_by_adamax`.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.adamax(0.1)
      >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]
      Array([-0.0999...], dtype=float32)

    References:
      Kingma & Ba (2015), Sec. 7.1 and Alg. 2.
    """
    _checks.learning_rate("adamax", learning_rate)
    return chain(
        scale_by_adamax(b1, b2, eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def adamaxw(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask | None = None,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AdaMaxW: AdaMax with decoupled weight decay (Loshchilov & Hutter 2019).

    .. math::
        \\theta \\leftarrow \\theta - \\alpha \\left(
            \\frac{m}{(1-\\beta_1^t)\\, u} + \\lambda \\theta \\right)

    Composition: ``chain(scale_by_adamax(...), add_decayed_weights(lambda, mask),
    scale_by_learning_rate(alpha))``, as :func:`adamw` is built on Adam's
    scaling: the decay is multiplied by the learning rate (Optax, PyTorch).

    Args:
      learning_rate: ``alpha``, a number or a schedule.
      b1, b2, eps, mu_dtype, nu_dtype: see :func:`scale_by_adamax`.
      weight_decay: ``lambda`` >= 0, a number or a schedule (default 1e-4, Optax's).
      mask: which leaves are decayed (see :func:`add_decayed_weights`).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> params = jnp.ones(2)
      >>> tx = gradtx.adamaxw(1e-3, weight_decay=0.01)
      >>> tx.update(jnp.zeros(2), tx.init(params), params)[0]  # -lr * lambda * w
      Array([-1.0...e-05, -1.0...e-05], dtype=float32)

    References:
      Kingma & Ba (2015), Sec. 7.1 and Alg. 2; Loshchilov & Hutter (2019),
      Decoupled Weight Decay Regularization, Alg. 2.
    """
    _checks.learning_rate("adamaxw", learning_rate)
    return chain(
        scale_by_adamax(b1, b2, eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
