"""SGD with Polyak's step size (Loizou et al. 2021; Berrada et al. 2020).

Polyak's step for a convex ``f`` with known minimum ``f*`` is
``gamma = (f(x) - f*) / ||grad f(x)||^2``; its stochastic form SPS_max (Loizou
et al. 2021, eq. 5) caps it: ``gamma = min((f_i(x) - f_i*) / (c ||g||^2),
gamma_b)``. It reads the loss: every ``update`` takes it as the extra argument
``value`` (``tx.update(grads, state, params, value=loss)``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, EmptyState, GradientTransformation, ScalarOrSchedule
from gradtx.combine import chain
from gradtx.optimizers.sgd import sgd

_VARIANTS = ("sps", "sps+")


def _loss(owner: str, extra_args: dict[str, Any]) -> Array:
    value = extra_args.get("value")
    if value is None:
        raise _checks.MissingArgumentError(
            f"{owner}: Polyak's step reads the loss: pass it as the extra argument `value`: "
            "tx.update(grads, state, params, value=loss). (Inside optax.chain, wrap the "
            "block in optax.GradientTransformationExtraArgs so that it receives `value`.)"
        )
    value = jnp.asarray(value)
    if value.ndim != 0 or jnp.iscomplexobj(value):
        raise ValueError(
            f"{owner}: value must be the loss, a real scalar; got shape {value.shape} "
            f"and dtype {value.dtype}."
        )
    return value


def polyak_step(value, sq_norm, f_min, max_learning_rate, eps, variant):
    """``min((f - f*) / (||u||^2 + eps), gamma_max)``; 0 where the denominator is 0.

    ``variant="sps+"`` takes the positive part of the gap ``f - f*``.
    """
    gap = tree.as_dtype(value - f_min, sq_norm.dtype)
    if variant == "sps+":
        gap = jnp.maximum(gap, 0)
    denominator = sq_norm + eps
    positive = denominator > 0
    step = jnp.minimum(gap / jnp.where(positive, denominator, 1), max_learning_rate)
    return jnp.where(positive, step, 0)


def _check_variant(owner: str, variant: Any) -> None:
    if variant not in _VARIANTS:
        raise ValueError(f"{owner}: variant must be one of {_VARIANTS}, got {variant!r}.")


def scale_by_polyak(
    f_min: float = 0.0,
    max_learning_rate: float = 1.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    """Scales the updates by Polyak's step size, SPS_max (Loizou et al. 2021, eq. 5).

    .. math::
        \\text{out} = \\min\\left( \\frac{f(x) - f^\\star}{\\|u\\|^2 + \\epsilon},
            \\gamma_{max} \\right) u

    with ``u`` the incoming updates (the whole tree's norm), ``f(x)`` the extra
    argument ``value``. Symbols: ``f*`` = ``f_min``, ``gamma_max`` =
    ``max_learning_rate`` (Loizou's ``gamma_b``), ``epsilon`` = ``eps``.
    ``variant="sps+"`` uses ``max(f(x) - f*, 0)`` (Garrigos et al. 2023), so a loss
    below ``f*`` gives no step instead of a step uphill. Where ``||u||^2 + eps`` is
    0 (a zero gradient and ``eps = 0``) the output is 0, not 0/0.

    Args:
      f_min: ``f*``, a guess of the minimum of ``f`` (0 for models that
        interpolate the data).
      max_learning_rate: ``gamma_max`` > 0.
      eps: >= 0, added to ``||u||^2``.
      variant: ``"sps"`` or ``"sps+"``.

    Raises:
      ValueError: a non-positive ``max_learning_rate``, a negative ``eps``, an
        unknown ``variant``; at ``update``, a non-scalar ``value``.
      TypeError: at ``update``, no ``value`` (Optax's type for it; the error is
        also a ``ValueError``).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_polyak()
      >>> g = jnp.array([3.0, 4.0])  # ||g||^2 = 25
      >>> tx.update(g, tx.init(g), value=5.0)[0]  # (5 - 0) / 25 * g
      Array([0.6, 0.8], dtype=float32)

    References:
      Loizou, Vaswani, Laradji & Lacoste-Julien (2021), Stochastic Polyak
      Step-size for SGD, eq. 5 (SPS_max); Berrada, Zisserman & Kumar (2020),
      Training Neural Networks for and by Interpolation; Garrigos et al. (2023)
      for SPS+.
    """
    owner = "scale_by_polyak"
    _checks.finite(owner, "f_min", f_min)
    _checks.positive(owner, "max_learning_rate", max_learning_rate)
    _checks.non_negative(owner, "eps", eps)
    _check_variant(owner, variant)

    def init_fn(params):
        tree.check_inexact(params, owner)
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params
        value = _loss(owner, extra_args)
        step = polyak_step(
            value, tree.squared_norm(updates), f_min, max_learning_rate, eps, variant
        )

        def leaf(u):
            c = tree.compute_dtype(jnp.promote_types(u.dtype, step.dtype))
            return tree.as_dtype(tree.as_dtype(u, c) * step, u.dtype)

        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init_fn, update_fn)


def polyak_sgd(
    max_learning_rate: float = 1.0,
    scaling: ScalarOrSchedule = 1.0,
    f_min: float = 0.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    """SGD with Polyak's step size, SPS_max (Loizou et al. 2021, eq. 5).

    .. math::
        x \\leftarrow x - s \\min\\left( \\frac{f(x) - f^\\star}{s^2 \\|g\\|^2 + \\epsilon},
            \\gamma_{max} \\right) g

    Composition: ``chain(sgd(s), scale_by_polyak(f*, gamma_max, eps, variant))``,
    as Optax, so the Polyak step sees the scaled gradient ``-s g``. With ``s = 1``
    (default) this is SPS_max with ``c = 1``; in general Loizou's ``c`` is ``s``
    and ``gamma_b`` is ``s gamma_max`` (for ``eps = 0``). ``update`` needs the loss
    as the extra argument ``value``.

    Args:
      max_learning_rate: ``gamma_max``, see :func:`scale_by_polyak`.
      scaling: ``s``, a number or a schedule.
      f_min, eps, variant: see :func:`scale_by_polyak`.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda w: jnp.sum(w**2)  # minimum 0
      >>> tx = gradtx.polyak_sgd()
      >>> w = jnp.array([1.0, -2.0]); state = tx.init(w)
      >>> value, grad = jax.value_and_grad(loss)(w)
      >>> updates, state = tx.update(grad, state, w, value=value)
      >>> loss(w + updates)  # Polyak's step halves w on a quadratic
      Array(1.25, dtype=float32)

    References:
      Loizou, Vaswani, Laradji & Lacoste-Julien (2021), Stochastic Polyak
      Step-size for SGD, eq. 5; Berrada, Zisserman & Kumar (2020).
    """
    _checks.finite("polyak_sgd", "scaling", scaling, schedule=True)
    return chain(sgd(scaling), scale_by_polyak(f_min, max_learning_rate, eps, variant))
