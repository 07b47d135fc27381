"""signSGD and Signum: steps along the sign of the gradient or of its momentum.

Bernstein, Wang, Azizzadenesheli & Anandkumar (2018), Alg. 1 (signSGD) and
Alg. 3 (Signum). Symbols: ``delta`` (the paper's step) = ``learning_rate``;
``beta`` = ``beta``; ``m`` the momentum (:func:`gradtx.ema`'s average).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import EmptyState, GradientTransformation, ScalarOrSchedule
from gradtx.combine import chain
from gradtx.transforms.moments import ema
from gradtx.transforms.scale import scale_by_learning_rate


def _sign_leaf(g):
    """``sign(g)`` in ``g``'s dtype (``g / |g|`` for a complex ``g``, 0 at 0)."""
    return tree.as_dtype(jnp.sign(g), g.dtype)


def scale_by_sign() -> GradientTransformation:
    """Replaces each coordinate of the updates by its sign.

    .. math::
        \\text{out} = \\operatorname{sign}(g) \\in \\{-1, 0, 1\\}

    A complex coordinate gets ``g / |g|`` (its phase), as ``jnp.sign`` gives.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_sign()
      >>> tx.update(jnp.array([0.3, -2.0, 0.0]), tx.init(jnp.zeros(3)))[0]
      Array([ 1., -1.,  0.], dtype=float32)
    """

    def init_fn(params):
        tree.check_inexact(params, "scale_by_sign")
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return jax.tree.map(_sign_leaf, updates), state

    return GradientTransformation(init_fn, update_fn)


def sign_sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """signSGD (Bernstein et al. 2018, Alg. 1): a step along the gradient's sign.

    .. math::
        \\theta \\leftarrow \\theta - \\delta_k \\operatorname{sign}(g)

    Composition: ``chain(scale_by_sign(), scale_by_learning_rate(delta))``.

    Args:
      learning_rate: ``delta``, a number or a schedule.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.sign_sgd(0.1)
      >>> tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))[0]
      Array([-0.1,  0.1], dtype=float32)

    References:
      Bernstein, Wang, Azizzadenesheli & Anandkumar (2018), signSGD: Compressed
      Optimisation for Non-Convex Problems, ICML, Alg. 1.
    """
    _checks.learning_rate("sign_sgd", learning_rate)
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


def signum(
    learning_rate: ScalarOrSchedule, beta: float = 0.9, accumulator_dtype: Any | None = None
) -> GradientTransformation:
    """Signum (Bernstein et al. 2018, Alg. 3): a step along the momentum's sign.

    .. math::
        m \\leftarrow \\beta m + (1 - \\beta) g, \\qquad
        \\theta \\leftarrow \\theta - \\delta_k \\operatorname{sign}(m)

    Composition: ``chain(ema(beta, debias=False, accumulator_dtype),
    scale_by_sign(), scale_by_learning_rate(delta))``. The average is not
    corrected for its bias: a positive factor does not change a sign.

    Args:
      learning_rate: ``delta``, a number or a schedule.
      beta: the momentum ``beta`` in [0, 1); ``beta = 0`` is :func:`sign_sgd`.
      accumulator_dtype: dtype of ``m``; ``None`` keeps the params'.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.signum(0.1)
      >>> tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))[0]
      Array([-0.1,  0.1], dtype=float32)

    References:
      Bernstein, Wang, Azizzadenesheli & Anandkumar (2018), signSGD: Compressed
      Optimisation for Non-Convex Problems, ICML, Alg. 3.
    """
    _checks.learning_rate("signum", learning_rate)
    _checks.in_range("signum", "beta", beta, 0.0, 1.0)
    _checks.dtype_or_none("signum", "accumulator_dtype", accumulator_dtype)
    return chain(
        ema(beta, debias=False, accumulator_dtype=accumulator_dtype),
        scale_by_sign(),
        scale_by_learning_rate(learning_rate),
    )
