"""Layer-wise trust ratios: LARS (You, Gitman & Ginsburg 2017) and LAMB (You et al. 2020).

Both scale each layer's (leaf's) update by the ratio of the layer's weight norm to
its update norm, so that every layer moves by the same *relative* amount whatever
the scale of its gradient. :func:`scale_by_trust_ratio` is that one idea; LARS
puts it after weight decay and before heavy-ball momentum, LAMB after Adam's
scaling and decoupled decay. :func:`gradtx.fromage` (``fromage.py``) uses it too.

A *layer* is a leaf of the params tree, as in Optax: a norm is taken over each
whole leaf, so :func:`gradtx.flat` (one buffer per dtype) changes the numbers.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, EmptyState, GradientTransformation, ScalarOrSchedule
from gradtx.combine import Mask, chain, masked, resolve_mask
from gradtx.optimizers.adam import scale_by_adam
from gradtx.optimizers.sgd import trace
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate

ScaleByTrustRatioState = EmptyState
"""Optax's name of the state of :func:`scale_by_trust_ratio`: it is stateless, so
this is :class:`~gradtx.EmptyState` (no fields, as Optax's)."""


def leaf_norm(x: Array, min_norm: Any) -> Array:
    """``max(||x||_2, min_norm)`` over the whole leaf, real, in at least float32."""
    return jnp.maximum(tree.sqrt(tree.squared_norm(x)), min_norm)


def trust_ratio_leaf(u: Array, w: Array, min_norm: Any, trust_coefficient: Any, eps: Any):
    """One layer: ``u * eta ||w|| / (||u|| + eps)``, or ``u`` where a norm is 0."""
    c = tree.compute_dtype(jnp.promote_types(u.dtype, w.dtype))
    w_norm = leaf_norm(tree.as_dtype(w, c), min_norm)
    u_norm = leaf_norm(tree.as_dtype(u, c), min_norm)
    either_zero = (w_norm == 0) | (u_norm == 0)
    # The inner where keeps the derivative finite where the ratio is not used.
    ratio = trust_coefficient * w_norm / jnp.where(either_zero, 1, u_norm + eps)
    ratio = jnp.where(either_zero, 1, ratio)
    return tree.as_dtype(tree.as_dtype(u, c) * ratio, u.dtype)


def check_params(owner: str, params: Any) -> None:
    if params is None:
        raise ValueError(
            f"{owner}: the trust ratio reads the weights: call update(updates, state, params)."
        )


def scale_by_trust_ratio(
    min_norm: float = 0.0, trust_coefficient: float = 1.0, eps: float = 0.0
) -> GradientTransformation:
    """Scales each leaf's update by its trust ratio (You et al. 2017; 2020).

    .. math::
        \\text{out}_l = \\eta\\,
            \\frac{\\max(\\|w_l\\|, n_{min})}{\\max(\\|u_l\\|, n_{min}) + \\epsilon}\\, u_l

    for each leaf (layer) ``l``, with ``u_l`` the incoming update and ``w_l`` the
    weights; where either norm is 0 the update passes unchanged (a layer at zero,
    or with no update, would otherwise never move or divide 0 by 0).

    Symbols: ``eta`` = ``trust_coefficient`` (LARS's trust coefficient; LAMB's
    scaling function ``phi`` is the identity), ``n_min`` = ``min_norm``,
    ``epsilon`` = ``eps``.

    Args:
      min_norm: >= 0, a floor on both norms (Fromage uses 1e-6).
      trust_coefficient: ``eta``, a finite number.
      eps: >= 0, added to the update norm.

    Raises:
      ValueError: a negative ``min_norm`` or ``eps``; ``update`` without params.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_trust_ratio()
      >>> w = jnp.array([3.0, 4.0])  # ||w|| = 5
      >>> tx.update(jnp.array([0.0, 0.1]), tx.init(w), w)[0]  # rescaled to norm 5
      Array([0., 5.], dtype=float32)

    References:
      You, Gitman & Ginsburg (2017), Large Batch Training of Convolutional
      Networks, Alg. 1; You et al. (2020), Large Batch Optimization for Deep
      Learning: Training BERT in 76 Minutes, Alg. 2.
    """
    owner = "scale_by_trust_ratio"
    _checks.non_negative(owner, "min_norm", min_norm)
    _checks.finite(owner, "trust_coefficient", trust_coefficient)
    _checks.non_negative(owner, "eps", eps)

    def init_fn(params):
        tree.check_inexact(params, owner)
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_params(owner, params)
        tree.check_structure(params, updates, owner=owner)

        def leaf(u, w):
            return trust_ratio_leaf(u, w, min_norm, trust_coefficient, eps)

        return jax.tree.map(leaf, updates, params), state

    return GradientTransformation(init_fn, update_fn)


def lars_paper_leaf(g: Array, w: Array, beta: Any, eta: Any, eps: Any, trusted: bool) -> Array:
    """One layer of LARS's Alg. 1: ``lambda (g + beta w)``, the paper's local rate.

    ``lambda = eta ||w|| / (||g|| + beta ||w|| + eps)``, or 1 where ``||w||`` or
    the denominator is 0, or where the layer takes no trust ratio (``trusted``).
    """
    c = tree.compute_dtype(jnp.promote_types(g.dtype, w.dtype))
    g_c, w_c = tree.as_dtype(g, c), tree.as_dtype(w, c)
    u = g_c + beta * w_c
    if not trusted:
        return tree.as_dtype(u, g.dtype)
    w_norm, g_norm = leaf_norm(w_c, 0.0), leaf_norm(g_c, 0.0)
    denominator = g_norm + beta * w_norm + eps
    used = (w_norm > 0) & (denominator > 0)
    ratio = jnp.where(used, eta * w_norm / jnp.where(used, denominator, 1), 1)
    return tree.as_dtype(u * ratio, g.dtype)


def _leaf_flags(mask: Any, params: Any) -> Any:
    """A bool per params leaf from a mask (True/None: all; a tree, maybe a prefix; a function)."""
    if mask is True:
        mask = None
    keep = resolve_mask(mask, params)
    return jax.tree.map(lambda k, sub: jax.tree.map(lambda _: bool(k), sub), keep, params)


def _lars_paper_ratio(
    weight_decay: Any,
    weight_decay_mask: Any,
    trust_coefficient: Any,
    eps: Any,
    trust_ratio_mask: Any,
) -> GradientTransformation:
    """The decay and the trust ratio of LARS's Alg. 1 in one block (see :func:`lars`)."""

    def init_fn(params):
        tree.check_inexact(params, "lars")
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_params("lars", params)
        tree.check_structure(params, updates, owner="lars")
        decayed = _leaf_flags(weight_decay_mask, params)
        trusted = _leaf_flags(trust_ratio_mask, params)

        def leaf(g, w, d, t):
            beta = weight_decay if d else 0.0
            return lars_paper_leaf(g, w, beta, trust_coefficient, eps, t)

        return jax.tree.map(leaf, updates, params, decayed, trusted), state

    return GradientTransformation(init_fn, update_fn)


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    """LAMB (You et al. 2020, Alg. 2): Adam's direction, decoupled decay, a trust ratio.

    .. math::
        r = \\frac{\\hat m}{\\sqrt{\\hat v} + \\epsilon}, \\qquad
        x \\leftarrow x - \\eta_t \\frac{\\|x\\|}{\\|r + \\lambda x\\|} (r + \\lambda x)

    per layer, with ``m_hat, v_hat`` Adam's bias-corrected moments. Composition:
    ``chain(scale_by_adam(b1, b2, eps, eps_root), add_decayed_weights(lambda, mask),
    scale_by_trust_ratio(), scale_by_learning_rate(eta))``, as Optax. The paper's
    scaling function ``phi`` is the identity here (no clipping of ``||x||``).

    Args:
      learning_rate: ``eta_t``, a number or a schedule.
      b1, b2, eps, eps_root: see :func:`gradtx.scale_by_adam` (``eps`` 1e-6 here).
      weight_decay: ``lambda`` >= 0, a number or a schedule.
      mask: which leaves are decayed (see :func:`gradtx.add_decayed_weights`).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.lamb(0.1)
      >>> w = jnp.array([3.0, 4.0])
      >>> tx.update(jnp.array([1.0, 0.0]), tx.init(w), w)[0]  # a step of 0.1 ||w||
      Array([-0.5, -0. ], dtype=float32)

    References:
      You et al. (2020), Large Batch Optimization for Deep Learning: Training BERT
      in 76 Minutes, Alg. 2.
    """
    _checks.learning_rate("lamb", learning_rate)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Mask | bool | None = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: Mask | bool | None = True,
    momentum: float = 0.9,
    nesterov: bool = False,
    *,
    trust_ratio_form: str = "optax",
) -> GradientTransformation:
    """LARS (You, Gitman & Ginsburg 2017, Alg. 1): SGD with layer-wise trust ratios.

    .. math::
        \\lambda_l = \\eta \\frac{\\|w_l\\|}{\\|g_l + \\beta w_l\\| + \\epsilon}, \\quad
        v \\leftarrow m v + \\gamma_t \\lambda_l (g_l + \\beta w_l), \\quad
        w \\leftarrow w - v

    Symbols (the paper's): ``eta`` = ``trust_coefficient``, ``beta`` =
    ``weight_decay``, ``gamma_t`` = ``learning_rate``, ``m`` = ``momentum``.
    Composition: ``chain(add_decayed_weights(beta, weight_decay_mask),
    masked(scale_by_trust_ratio(trust_coefficient=eta, eps=eps), trust_ratio_mask),
    scale_by_learning_rate(gamma), trace(m, nesterov))``, as Optax: the rate is
    inside the velocity, as in the paper.

    By default the local rate divides by the norm of the decayed gradient,
    ``||g + beta w||`` (Optax's form), where Alg. 1 writes ``||g|| + beta ||w||``,
    its upper bound; they agree at ``beta = 0``. ``trust_ratio_form="paper"`` takes
    Alg. 1's denominator, as ``pytorch_optimizer.LARS`` does (which decays and
    scales only leaves of rank >= 2: pass ``weight_decay_mask`` and
    ``trust_ratio_mask`` ``lambda p: jax.tree.map(lambda x: x.ndim > 1, p)``).

    Args:
      learning_rate: ``gamma_t``, a number or a schedule.
      weight_decay: ``beta`` >= 0, a number or a schedule.
      weight_decay_mask: which leaves are decayed; ``True`` (default): all.
      trust_coefficient: ``eta`` (default 1e-3, the paper's).
      eps: >= 0, added to the denominator of the trust ratio.
      trust_ratio_mask: which leaves get a trust ratio; ``True`` (default): all.
        Optax's and the common practice: exclude biases and normalization scales.
      momentum: ``m`` in [0, 1).
      nesterov: Nesterov's look-ahead form of the momentum (see :func:`gradtx.trace`).
      trust_ratio_form: gradtx's switch: ``"optax"`` (default), ``||g + beta w||``
        in the denominator; ``"paper"``, ``||g|| + beta ||w||`` (Alg. 1,
        ``pytorch_optimizer``), with ``weight_decay`` a number.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.lars(1.0, trust_coefficient=0.1)
      >>> w = jnp.array([3.0, 4.0])
      >>> tx.update(jnp.array([2.0, 0.0]), tx.init(w), w)[0]  # 0.1 ||w|| g / ||g||
      Array([-0.5,  0. ], dtype=float32)

    References:
      You, Gitman & Ginsburg (2017), Large Batch Training of Convolutional
      Networks, Alg. 1.
    """
    _checks.learning_rate("lars", learning_rate)
    if trust_ratio_form not in ("optax", "paper"):
        raise ValueError(
            f"lars: trust_ratio_form must be 'optax' or 'paper', got {trust_ratio_form!r}"
        )
    if trust_ratio_form == "paper":
        _checks.non_negative("lars", "weight_decay", weight_decay)
        _checks.finite("lars", "trust_coefficient", trust_coefficient)
        _checks.non_negative("lars", "eps", eps)
        return chain(
            _lars_paper_ratio(
                weight_decay, weight_decay_mask, trust_coefficient, eps, trust_ratio_mask
            ),
            scale_by_learning_rate(learning_rate),
            trace(decay=momentum, nesterov=nesterov),
        )
    decay_mask = None if weight_decay_mask is True else weight_decay_mask
    ratio = scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps)
    if trust_ratio_mask is not True:
        ratio = masked(ratio, trust_ratio_mask)
    return chain(
        add_decayed_weights(weight_decay, decay_mask),
        ratio,
        scale_by_learning_rate(learning_rate),
        trace(decay=momentum, nesterov=nesterov),
    )
