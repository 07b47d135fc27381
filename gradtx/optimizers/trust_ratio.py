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
from gradtx.optimizers.adam import (
    ScaleByAdamState,
    check_adam_args,
    init_moments,
    normalise,
    scale_by_adam,
)
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


def lamb_leaf(g, x, m, v, shared, form):
    """One layer of LAMB in any of its forms: ``(out, m, v)`` (see :func:`lamb`).

    ``shared`` holds ``(eta_t, lambda_t, 1 - b1^t, 1 - b2^t)`` (``lambda_t`` 0 on
    a layer the mask leaves out); ``form`` the
    switches ``(b1, b2, eps, eps_root, bias_correction, weight_decouple,
    eps_in_trust_ratio, max_weight_norm)``.
    """
    b1, b2, eps, eps_root, bias_correction, weight_decouple, eps_in_ratio, max_norm = form
    eta, lam, bc1, bc2 = shared
    c = tree.compute_dtype(jnp.promote_types(g.dtype, x.dtype))
    new_m, new_v = tree.moment_leaf(g, m, b1, 1), tree.moment_leaf(g, v, b2, 2)
    m_c, v_c = tree.as_dtype(new_m, c), tree.as_dtype(new_v, tree.real_dtype(c))
    if bias_correction is True:  # Alg. 2: m_hat / (sqrt(v_hat) + eps)
        r = normalise(m_c / bc1, v_c / bc2, eps, eps_root)
    else:  # eps meets the uncorrected root
        r = normalise(m_c, v_c, eps, eps_root)
    x_c = tree.as_dtype(x, c)
    if weight_decouple:  # x <- (1 - eta lambda) x first; the ratio reads that x
        x_c, u = (1 - eta * lam) * x_c, r
    else:  # Alg. 2: the decay inside the ratio
        u = r + lam * x_c
    x_norm = leaf_norm(x_c, 0.0)
    if max_norm is not None:  # phi(z) = min(z, max_weight_norm)
        x_norm = jnp.minimum(x_norm, max_norm)
    u_norm = leaf_norm(u, 0.0)
    used = (x_norm > 0) & (u_norm > 0)
    denominator = u_norm + eps if eps_in_ratio else u_norm
    ratio = jnp.where(used, x_norm / jnp.where(used, denominator, 1), 1)
    step = eta / bc1 if bias_correction == "step" else eta
    out = -step * ratio * u
    if weight_decouple:
        out = out - eta * lam * tree.as_dtype(x, c)
    return tree.as_dtype(out, g.dtype), new_m, new_v


def _lamb_forms(
    learning_rate, b1, b2, eps, eps_root, weight_decay, mask, form
) -> GradientTransformation:
    """LAMB's other forms as one block (see :func:`lamb`); state ``(count, mu, nu)``."""
    owner = "lamb"

    def init_fn(params):
        tree.check_inexact(params, owner)
        return ScaleByAdamState(tree.zero_count(), *init_moments(params, None, None))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_params(owner, params)
        tree.check_structure(params, updates, owner=owner)
        decayed = _leaf_flags(mask, params)
        count = tree.safe_increment(state.count)
        eta = learning_rate(state.count) if callable(learning_rate) else learning_rate
        lam = weight_decay(state.count) if callable(weight_decay) else weight_decay

        lams = jax.tree.map(lambda d: lam if d else 0.0, decayed)

        def leaf(g, x, m, v, lam_i):
            c = tree.real_dtype(tree.compute_dtype(jnp.promote_types(g.dtype, x.dtype)))
            shared = (
                jnp.asarray(eta, c),
                jnp.asarray(lam_i, c),
                tree.bias_correction_factor(b1, count, c),
                tree.bias_correction_factor(b2, count, c),
            )
            return lamb_leaf(g, x, m, v, shared, form)

        out, mu, nu = tree.map_unzip(leaf, 3, updates, params, state.mu, state.nu, lams)
        return out, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
    *,
    bias_correction: bool | str = True,
    weight_decouple: bool = False,
    eps_in_trust_ratio: bool = False,
    max_weight_norm: float | None = None,
) -> GradientTransformation:
    """LAMB (You et al. 2020, Alg. 2): Adam's direction, decoupled decay, a trust ratio.

    .. math::
        r = \\frac{\\hat m}{\\sqrt{\\hat v} + \\epsilon}, \\qquad
        x \\leftarrow x - \\eta_t \\frac{\\phi(\\|x\\|)}{\\|r + \\lambda x\\|} (r + \\lambda x)

    per layer, with ``m_hat, v_hat`` Adam's bias-corrected moments. Composition:
    ``chain(scale_by_adam(b1, b2, eps, eps_root), add_decayed_weights(lambda, mask),
    scale_by_trust_ratio(), scale_by_learning_rate(eta))``, as Optax. The paper's
    scaling function ``phi`` is the identity here (no clipping of ``||x||``)
    unless ``max_weight_norm`` is set.

    The keyword-only switches give the forms of the PyTorch code, where the
    references disagree (the defaults are Optax's, which is Alg. 2):

    - ``bias_correction``: ``True`` (Optax, the paper's Alg. 2) uses ``m_hat,
      v_hat``; ``False`` (cybertronai's ``pytorch-lamb``, which follows the
      paper's arXiv v3) uses ``r = m / (sqrt(v) + eps)``, so ``eps`` meets the
      uncorrected root; ``"step"`` (``pytorch_optimizer.Lamb``) takes that ``r``
      and divides the whole step, after the trust ratio, by ``1 - b1^t``.
    - ``weight_decouple``: ``False`` (Optax, the paper, ``pytorch-lamb``,
      ``pytorch_optimizer``'s ``weight_decouple=False``) adds ``lambda x`` to
      ``r`` inside the trust ratio; ``True`` (``pytorch_optimizer``'s default)
      first shrinks ``x <- (1 - eta_t lambda) x``, outside the ratio, and the
      ratio reads the shrunk ``x`` and ``r`` alone.
    - ``eps_in_trust_ratio``: ``False`` (Optax, the paper, ``pytorch-lamb``)
      divides by ``||u||``, ``u`` the vector the ratio scales (``r + lambda
      x`` or ``r``); ``True`` (``pytorch_optimizer``) by ``||u|| + eps``.
    - ``max_weight_norm``: ``None`` (Optax) leaves ``phi`` the identity; a number
      ``c`` clips, ``phi(z) = min(z, c)`` (the paper leaves the bounds of ``phi``
      open; ``pytorch-lamb`` and ``pytorch_optimizer`` use 10).

    ``pytorch_optimizer.Lamb()`` (its defaults) is ``lamb(...,
    bias_correction="step", weight_decouple=True, eps_in_trust_ratio=True,
    max_weight_norm=10.0)``. Any non-default switch runs the whole method as
    one block whose state is :class:`~gradtx.ScaleByAdamState` (``count, mu,
    nu``, the moments uncorrected).

    Args:
      learning_rate: ``eta_t``, a number or a schedule.
      b1, b2, eps, eps_root: see :func:`gradtx.scale_by_adam` (``eps`` 1e-6 here).
      weight_decay: ``lambda`` >= 0, a number or a schedule.
      mask: which leaves are decayed (see :func:`gradtx.add_decayed_weights`).
      bias_correction: gradtx's switch, ``True`` (default), ``False`` or
        ``"step"`` (above).
      weight_decouple: gradtx's switch, the decay outside the ratio (above).
      eps_in_trust_ratio: gradtx's switch, ``eps`` added to the update's norm.
      max_weight_norm: gradtx's switch, ``None`` or > 0: a cap on ``||x||`` in
        the ratio.

    Raises:
      ValueError: an unknown ``bias_correction``; a hyperparameter out of range.

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
    owner = "lamb"
    _checks.learning_rate(owner, learning_rate)
    if bias_correction not in (True, False, "step") or not isinstance(bias_correction, (bool, str)):
        raise ValueError(
            f"{owner}: bias_correction must be True, False or 'step', got {bias_correction!r}"
        )
    if max_weight_norm is not None:
        _checks.positive(owner, "max_weight_norm", max_weight_norm)
    default = (
        bias_correction is True
        and not weight_decouple
        and not eps_in_trust_ratio
        and max_weight_norm is None
    )
    if default:
        return chain(
            scale_by_adam(b1, b2, eps, eps_root),
            add_decayed_weights(weight_decay, mask),
            scale_by_trust_ratio(),
            scale_by_learning_rate(learning_rate),
        )
    check_adam_args(owner, b1, b2, eps, eps_root, None, None)
    _checks.non_negative(owner, "weight_decay", weight_decay, schedule=True)
    form = (
        b1,
        b2,
        eps,
        eps_root,
        bias_correction,
        bool(weight_decouple),
        bool(eps_in_trust_ratio),
        max_weight_norm,
    )
    return _lamb_forms(learning_rate, b1, b2, eps, eps_root, weight_decay, mask, form)


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
