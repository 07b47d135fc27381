"""Fromage (Bernstein et al. 2020, Alg. 1): Frobenius-matched gradient descent.

Each layer moves by a fixed fraction ``eta`` of its own norm, in the direction of
its gradient (the trust ratio of :func:`gradtx.scale_by_trust_ratio`), and is then
shrunk by ``1 / sqrt(1 + eta^2)``, which undoes the growth of the weight norm that
a step orthogonal to the weights would cause.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule
from gradtx.combine import chain
from gradtx.optimizers.trust_ratio import check_params, scale_by_trust_ratio


class FromageStepState(NamedTuple):
    """State of Fromage's step (the second member of :func:`fromage`'s chain)."""

    count: Array  # int32 scalar: k, the 0-based step of the rate schedule eta_k.


def fromage_leaf(u, w, eta):
    """``(w - eta u) / sqrt(1 + eta^2) - w``, the change of one layer.

    Written ``-eta s u + (s - 1) w`` with ``s = 1 / sqrt(1 + eta^2)``: the
    difference ``s w - w`` would cancel (``s - 1`` is ``-eta^2 / 2`` to first order).
    """
    c = tree.compute_dtype(jnp.promote_types(u.dtype, w.dtype))
    shrink = 1 / (1 + eta**2) ** 0.5
    out = -(eta * shrink) * tree.as_dtype(u, c) + (shrink - 1) * tree.as_dtype(w, c)
    return tree.as_dtype(out, u.dtype)


def _fromage_step(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """The step and retraction of Alg. 1 applied to the trust-ratio-scaled gradient."""
    scheduled = callable(learning_rate)

    def init_fn(params):
        return FromageStepState(tree.zero_count())

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_params("fromage", params)
        tree.check_structure(params, updates, owner="fromage")
        eta = learning_rate(state.count) if scheduled else learning_rate
        out = jax.tree.map(lambda u, w: fromage_leaf(u, w, eta), updates, params)
        return out, FromageStepState(tree.safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)


def fromage(learning_rate: ScalarOrSchedule, min_norm: float = 1e-6) -> GradientTransformation:
    """Fromage (Bernstein et al. 2020, Alg. 1), for each layer ``l``.

    .. math::
        W_l \\leftarrow \\frac{1}{\\sqrt{1 + \\eta^2}} \\left( W_l - \\eta\\,
            \\frac{\\|W_l\\|}{\\|g_l\\|}\\, g_l \\right)

    Symbols: ``eta`` = ``learning_rate`` (the paper suggests 0.01), the norms are
    Frobenius norms of each leaf, floored at ``min_norm`` (a layer or a gradient of
    norm 0 is not rescaled). Composition: ``chain(scale_by_trust_ratio(min_norm),
    <the step and shrink above>)``; Optax writes the same step as a rate
    ``eta / sqrt(1 + eta^2)`` and a *negative* weight decay ``1 / sqrt(1 + eta^2)
    - 1``, which gradtx's :func:`gradtx.add_decayed_weights` (decay >= 0) refuses.

    The update is not proportional to ``eta``.

    Args:
      learning_rate: ``eta``, a number or a schedule.
      min_norm: >= 0, the floor of both norms.

    Raises:
      ValueError: a non-finite ``learning_rate``, a negative ``min_norm``, or
        ``update`` without params.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.fromage(0.75)  # 1 / sqrt(1 + 0.75^2) = 0.8
      >>> w = jnp.array([3.0, 4.0])
      >>> new_w = w + tx.update(jnp.array([0.0, 1.0]), tx.init(w), w)[0]
      >>> new_w  # 0.8 * (w - 0.75 * 5 * [0, 1])
      Array([2.4..., 0.2...], dtype=float32)

    References:
      Bernstein, Vahdat, Yue & Liu (2020), On the distance between two neural
      networks and the stability of learning, Alg. 1.
    """
    _checks.learning_rate("fromage", learning_rate)
    return chain(scale_by_trust_ratio(min_norm), _fromage_step(learning_rate))
