"""Penalties applied as transformations: L2, L1, elastic net, proximal steps, decay.

Goodfellow, Bengio & Courville (2016), Sec. 7.1, on parameter penalties: a
penalty ``alpha * Omega(w)`` added to the loss shows up in the gradient as
``alpha * grad Omega(w)``. The blocks here add that term to the updates, so any
optimizer can be regularized by chaining one in front of it:

* *before* the optimizer's scaling, on the gradient (coupled):
  :func:`add_decayed_weights` (L2), :func:`add_l1_penalty` (L1 by subgradient),
  :func:`add_elastic_net`;
* *after* the step (the updates are already ``-lr * direction``):
  :func:`decoupled_weight_decay` (AdamW-style decay for any optimizer), and the
  proximal steps :func:`proximal_l1` / :func:`proximal_elastic_net`, which replace
  ``w + u`` by ``prox(w + u)`` and so produce exact zeros (ISTA).

Every block takes a ``mask`` (which leaves are penalised); :func:`exclude_bias_and_norm`
is the usual one. Hyperparameters may be numbers, tracers or schedules of the step
count; a block whose hyperparameters are all constants keeps no state.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, EmptyState, GradientTransformation, Params, ScalarOrSchedule
from gradtx.combine import Mask, check_elementwise_mask, resolve_mask


def _select(keep: Any, changed: Array, original: Array) -> Array:
    if isinstance(keep, (bool, jnp.bool_)):
        return changed if keep else original
    return jnp.where(keep, changed, original)


# Optax's names: with a number the state is empty (Optax's AddDecayedWeightsState
# is EmptyState itself); with a schedule it holds the step count.
AddDecayedWeightsState = EmptyState


class WeightDecayScheduleState(NamedTuple):
    """State of :func:`add_decayed_weights` when ``weight_decay`` is a schedule.

    Optax's ``WeightDecaySchedule`` (not a public name there), same field.
    """

    count: Array  # int32 scalar: the step count fed to the schedule.


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0, mask: Mask | None = None
) -> GradientTransformation:
    """Adds ``alpha * w`` to the updates: the gradient of the L2 penalty.

    .. math::
        g \\leftarrow g + \\alpha w

    the gradient of :math:`J(w) + \\tfrac{\\alpha}{2} w^\\top w` (Goodfellow et al.
    2016, eq. 7.5). Placed before an adaptive scaling it is *coupled* L2; placed
    after it and before the step (as in :func:`adamw`) it is *decoupled* decay
    (Loshchilov & Hutter 2019).

    Args:
      weight_decay: ``alpha``, a number >= 0 or a schedule of the step count.
      mask: which leaves are decayed: a pytree of bools (or bool arrays) shaped
        like the params, or a function of the params returning one. A pytree with
        leaves is read as a mask even when it is callable (an Equinox module).
        Biases and normalization scales are usually excluded (Goodfellow et al.
        2016, Sec. 7.1).

    Raises:
      ValueError: ``weight_decay`` negative or not finite; ``update`` called
        without ``params``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> tx = gradtx.add_decayed_weights(0.1, mask={"w": True, "b": False})
      >>> grads = {"w": jnp.zeros(2), "b": jnp.zeros(2)}
      >>> tx.update(grads, tx.init(params), params)[0]
      {'b': Array([0., 0.], dtype=float32), 'w': Array([0.1, 0.1], dtype=float32)}
    """
    _checks.non_negative("add_decayed_weights", "weight_decay", weight_decay, schedule=True)
    check_elementwise_mask("add_decayed_weights", mask)
    scheduled = callable(weight_decay)

    def init_fn(params):
        tree.check_inexact(params, "add_decayed_weights")
        return WeightDecayScheduleState(tree.zero_count()) if scheduled else EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None and not jax.tree.leaves(updates):
            return updates, state  # nothing to decay: a group of partition with no leaves
        if params is None:
            raise ValueError(
                "add_decayed_weights: update needs the params: call update(updates, state, params)."
            )
        tree.check_structure(params, updates, owner="add_decayed_weights")
        if scheduled:
            alpha = weight_decay(state.count)
            state = WeightDecayScheduleState(tree.safe_increment(state.count))
        else:
            alpha = weight_decay
        keep = resolve_mask(mask, params)

        def leaf(u, p, m):
            return _select(m, tree.as_dtype(u + alpha * p, u.dtype), u)

        return jax.tree.map(leaf, updates, params, keep), state

    return GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------- the usual mask

_BIAS_OR_NORM_NAMES = frozenset({"bias", "b", "scale", "offset"})
_NORM_LAYER = re.compile(r"norm|^(ln|bn|gn)(_|\d|$)")


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute)).lower()
    return str(key).lower()


def exclude_bias_and_norm(params: Params) -> Any:
    """The usual penalty mask: every leaf but biases and normalization parameters.

    A leaf is *excluded* (``False``: not penalised) when either

    * it has at most one dimension (scalars and vectors: biases, the scales and
      offsets of LayerNorm / BatchNorm / RMSNorm, temperatures), or
    * a key on its path names a bias or a normalization layer: a key equal to
      ``bias``, ``b``, ``scale`` or ``offset`` (Flax and Haiku's names), or one
      containing ``norm`` (``LayerNorm_0``, ``batch_norm``, ``norm1``,
      ``RMSNorm``), or one starting with ``ln``, ``bn`` or ``gn`` followed by
      ``_``, a digit or nothing (``ln_f``, ``bn1``). Names are compared in lower
      case; this catches the biases and norm scales of layers stacked by
      ``scan`` / ``vmap``, which are 2-D.

    Every other leaf (kernels, embeddings, convolution filters) is ``True``.
    Weight decay is typically not applied to biases (Goodfellow et al. 2016,
    Sec. 7.1): a bias controls one unit only, so leaving it free costs little
    variance, and decaying a normalization scale just fights the normalization.

    Args:
      params: the parameters (any pytree; ``None`` leaves stay ``None``).

    Returns:
      A pytree of Python bools shaped like ``params``, for the ``mask`` argument
      of every penalty (or pass the function itself: ``mask=exclude_bias_and_norm``).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)},
      ...           "LayerNorm_0": {"scale": jnp.ones(2)},
      ...           "stacked": {"bias": jnp.ones((4, 2)), "kernel": jnp.ones((4, 2, 2))}}
      >>> gradtx.exclude_bias_and_norm(params)
      {'LayerNorm_0': {'scale': False}, 'dense': {'bias': False, 'kernel': True},
       'stacked': {'bias': False, 'kernel': True}}
    """

    def decide(path, leaf):
        if jnp.ndim(leaf) <= 1:
            return False
        names = [_key_name(key) for key in path]
        return not any(n in _BIAS_OR_NORM_NAMES or _NORM_LAYER.search(n) for n in names)

    return jax.tree_util.tree_map_with_path(decide, params)


# ---------------------------------------------------------------------- shared machinery


class PenaltyState(NamedTuple):
    """State of the penalty blocks below when one of their hyperparameters is a schedule."""

    count: Array  # int32 scalar: the step count k fed to the schedules.


def _leafwise(owner: str, leaf_fn: Callable[..., Array], hyperparameters: tuple, mask: Any):
    """A transformation that maps ``leaf_fn(u, w, *values)`` over the masked leaves.

    ``u`` and ``w`` (update and parameter) come in the compute dtype (at least
    float32), ``values`` are the hyperparameters, schedules evaluated at the step
    count; the result is cast back to the update's dtype. Unmasked leaves pass
    through untouched.
    """
    check_elementwise_mask(owner, mask)
    scheduled = any(callable(h) for h in hyperparameters)

    def init_fn(params):
        tree.check_inexact(params, owner)
        return PenaltyState(tree.zero_count()) if scheduled else EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(
                f"{owner}: update needs the params: call update(updates, state, params)."
            )
        tree.check_structure(params, updates, owner=owner)
        values = hyperparameters
        if scheduled:
            values = tuple(h(state.count) if callable(h) else h for h in hyperparameters)
            state = PenaltyState(tree.safe_increment(state.count))

        def leaf(u, w, keep):
            c = tree.compute_dtype(jnp.result_type(u, w))
            return _select(
                keep,
                tree.as_dtype(leaf_fn(tree.as_dtype(u, c), tree.as_dtype(w, c), *values), u.dtype),
                u,
            )

        return jax.tree.map(leaf, updates, params, resolve_mask(mask, params)), state

    return GradientTransformation(init_fn, update_fn)


def _soft_threshold(v: Array, threshold: Any) -> Array:
    """``sign(v) max(|v| - t, 0)``: the proximal map of ``t |v|``; exactly 0 where ``|v| <= t``.

    For a complex ``v`` the magnitude shrinks and the phase stays:
    ``v / |v| * max(|v| - t, 0)``, the proximal map of ``t |v|`` on the plane.
    """
    if not jnp.iscomplexobj(v):
        return jnp.sign(v) * jnp.maximum(jnp.abs(v) - threshold, 0)
    magnitude = jnp.abs(v)
    shrunk = jnp.maximum(magnitude - threshold, 0)
    return jnp.where(magnitude > 0, v * (shrunk / jnp.where(magnitude > 0, magnitude, 1)), 0)


# ---------------------------------------------------------------------- coupled penalties


def add_l1_penalty(
    l1_strength: ScalarOrSchedule = 0.0, mask: Mask | None = None
) -> GradientTransformation:
    """Adds ``alpha * sign(w)`` to the updates: a subgradient of the L1 penalty.

    .. math::
        g \\leftarrow g + \\alpha \\operatorname{sign}(w)

    the gradient of :math:`J(w) + \\alpha \\|w\\|_1` away from ``w = 0``
    (Goodfellow et al. 2016, eq. 7.20); at ``w_i = 0`` it uses the subgradient 0.
    For a complex ``w``, ``sign(w) = w / |w|``, the gradient of ``|w|``.
    Chain it before the optimizer, like :func:`add_decayed_weights`.

    A subgradient method only drives weights *towards* zero: they end up
    oscillating around it at the scale of ``lr * alpha``, never exactly on it. For
    exact zeros use :func:`proximal_l1` after the step instead.

    Args:
      l1_strength: ``alpha`` >= 0, a number or a schedule of the step count.
      mask: which leaves are penalised (see :func:`add_decayed_weights`).

    Raises:
      ValueError: ``l1_strength`` negative or not finite; ``update`` called
        without ``params``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.add_l1_penalty(0.1)
      >>> w = jnp.array([2.0, 0.0, -3.0])
      >>> tx.update(jnp.zeros(3), tx.init(w), w)[0]
      Array([ 0.1,  0. , -0.1], dtype=float32)
    """
    _checks.non_negative("add_l1_penalty", "l1_strength", l1_strength, schedule=True)
    return _leafwise("add_l1_penalty", lambda u, w, a: u + a * jnp.sign(w), (l1_strength,), mask)


def add_elastic_net(
    strength: ScalarOrSchedule = 0.0, alpha: float = 0.5, mask: Mask | None = None
) -> GradientTransformation:
    """Adds the gradient of the elastic-net penalty, with ``alpha`` weighting the L2 term.

    After Zou & Hastie (2005), the elastic net here is
    :math:`J(w) + \\lambda (\\alpha \\|w\\|_2^2 + (1 - \\alpha) \\|w\\|_1)`, so

    .. math::
        g \\leftarrow g + \\lambda \\left( 2 \\alpha w
            + (1 - \\alpha) \\operatorname{sign}(w) \\right)

    (``alpha = 0``: the lasso, :func:`add_l1_penalty`; ``alpha = 1``: ridge, with
    ``||w||^2`` not halved, i.e. :func:`add_decayed_weights` with ``2 * lambda``).
    The L1 part is a subgradient, as in :func:`add_l1_penalty`: no exact zeros;
    :func:`proximal_elastic_net` is the same penalty as a proximal step.

    **Other parametrisations.** Here ``alpha`` weights the *squared L2* term, as in
    Zou & Hastie (``alpha = lambda_2 / (lambda_1 + lambda_2)``).
    scikit-learn's ``ElasticNet(alpha=a, l1_ratio=r)`` penalises
    ``a r ||w||_1 + a (1 - r) / 2 ||w||^2`` (glmnet the same with ``lambda = a``,
    ``alpha = r``); the same penalty here is

    * ``strength = a (1 + r) / 2`` and ``alpha = (1 - r) / (1 + r)``;
    * conversely ``l1 = strength (1 - alpha)``, ``l2 = 2 strength alpha`` are the
      coefficients of ``||w||_1`` and ``||w||^2 / 2``.

    (Note that scikit-learn also divides its squared loss by ``2 n``.)

    Args:
      strength: ``lambda`` >= 0, a number or a schedule of the step count.
      alpha: the mix ``alpha`` in [0, 1]: the weight of ``||w||_2^2``.
      mask: which leaves are penalised (see :func:`add_decayed_weights`).

    Raises:
      ValueError: ``strength`` negative or not finite; ``alpha`` outside [0, 1];
        ``update`` called without ``params``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.add_elastic_net(0.1, alpha=0.5)
      >>> w = jnp.array([2.0, -1.0])
      >>> tx.update(jnp.zeros(2), tx.init(w), w)[0]  # 0.1 * (w + 0.5 sign(w))
      Array([ 0.25, -0.15], dtype=float32)

    References:
      Zou & Hastie (2005), Regularization and Variable Selection via the Elastic
      Net; Goodfellow, Bengio & Courville (2016), Sec. 7.1.
    """
    _checks.non_negative("add_elastic_net", "strength", strength, schedule=True)
    _checks.in_range("add_elastic_net", "alpha", alpha, 0.0, 1.0, closed_high=True, schedule=True)

    def leaf(u, w, lam):
        return u + lam * (2 * alpha * w + (1 - alpha) * jnp.sign(w))

    return _leafwise("add_elastic_net", leaf, (strength,), mask)


# ---------------------------------------------------------------------- after the step


def _check_step_rate(owner: str, learning_rate: Any) -> None:
    if learning_rate is None:
        raise ValueError(f"{owner}: learning_rate must be a number >= 0 or a schedule, got None.")
    _checks.non_negative(owner, "learning_rate", learning_rate, schedule=True)


def proximal_l1(
    l1_strength: ScalarOrSchedule,
    learning_rate: ScalarOrSchedule = 1.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    """The proximal step of the L1 penalty: soft-thresholding, with exact zeros.

    Placed *after* the step, it sees the point the step lands on,
    ``v = w + u``, and replaces it by

    .. math::
        \\operatorname{prox}_{t \\|\\cdot\\|_1}(v)_i
        = \\operatorname{sign}(v_i) \\max(|v_i| - t, 0), \\qquad t = \\eta_k \\alpha

    returning ``prox(v) - w`` as the update. With the gradient of the smooth loss
    before it, ``chain(sgd(eta), proximal_l1(alpha, eta))`` is ISTA, the proximal
    gradient method for ``J(w) + alpha ||w||_1``: every coordinate that the step
    brings within ``t`` of zero becomes *exactly* zero (when the updates have the
    params' dtype), which the subgradient of :func:`add_l1_penalty` never does.
    For a diagonal quadratic it converges to the closed form of Goodfellow et al.
    (2016), eq. 7.22: ``w_i = sign(w*_i) max(|w*_i| - alpha / H_ii, 0)``.
    Complex leaves shrink in magnitude and keep their phase.

    Args:
      l1_strength: ``alpha`` >= 0, a number or a schedule.
      learning_rate: ``eta`` >= 0, the step size of the step before (a number or
        the same schedule), so that the threshold is ``eta_k * alpha``.
      mask: which leaves are thresholded (see :func:`add_decayed_weights`).

    Raises:
      ValueError: ``l1_strength`` or ``learning_rate`` negative or not finite;
        ``update`` called without ``params``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.chain(gradtx.sgd(0.5), gradtx.proximal_l1(0.5, learning_rate=0.5))
      >>> w = jnp.array([1.0, 0.125, -0.375])
      >>> updates, _ = tx.update(jnp.zeros(3), tx.init(w), w)
      >>> gradtx.apply_updates(w, updates)  # threshold 0.25: small weights are exactly 0
      Array([ 0.75 ,  0.   , -0.125], dtype=float32)

    References:
      Daubechies, Defrise & De Mol (2004); Beck & Teboulle (2009), ISTA;
      Goodfellow, Bengio & Courville (2016), Sec. 7.1.2.
    """
    _checks.non_negative("proximal_l1", "l1_strength", l1_strength, schedule=True)
    _check_step_rate("proximal_l1", learning_rate)

    def leaf(u, w, a, eta):
        return _soft_threshold(w + u, eta * a) - w

    return _leafwise("proximal_l1", leaf, (l1_strength, learning_rate), mask)


def proximal_elastic_net(
    strength: ScalarOrSchedule,
    alpha: float = 0.5,
    learning_rate: ScalarOrSchedule = 1.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    """The proximal step of the elastic net (as :func:`add_elastic_net`), with exact zeros.

    For the penalty ``lambda (alpha ||w||_2^2 + (1 - alpha) ||w||_1)`` of
    :func:`add_elastic_net`, placed after the step that lands on ``v = w + u``:

    .. math::
        \\operatorname{prox}(v) = \\frac{\\operatorname{sign}(v)
            \\max(|v| - \\eta_k \\lambda (1 - \\alpha), 0)}{1 + 2 \\eta_k \\lambda \\alpha}

    returning ``prox(v) - w``. ``chain(sgd(eta), proximal_elastic_net(lambda, alpha,
    eta))`` is the proximal gradient method for the elastic net; with the mapping
    in :func:`add_elastic_net` it reaches scikit-learn's ``ElasticNet``
    coefficients. ``alpha = 0`` is :func:`proximal_l1`.

    Args:
      strength: ``lambda`` >= 0, a number or a schedule.
      alpha: the mix ``alpha`` in [0, 1], the weight of ``||w||_2^2``.
      learning_rate: ``eta`` >= 0, the step size of the step before.
      mask: which leaves are shrunk (see :func:`add_decayed_weights`).

    Raises:
      ValueError: ``strength`` or ``learning_rate`` negative or not finite;
        ``alpha`` outside [0, 1]; ``update`` called without ``params``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.proximal_elastic_net(1.0, alpha=0.5, learning_rate=1.0)
      >>> w = jnp.array([2.5, 0.25])
      >>> gradtx.apply_updates(w, tx.update(jnp.zeros(2), tx.init(w), w)[0])  # (|w| - 0.5) / 2
      Array([1., 0.], dtype=float32)

    References:
      Zou & Hastie (2005); Parikh & Boyd (2014), Proximal Algorithms.
    """
    _checks.non_negative("proximal_elastic_net", "strength", strength, schedule=True)
    _checks.in_range(
        "proximal_elastic_net", "alpha", alpha, 0.0, 1.0, closed_high=True, schedule=True
    )
    _check_step_rate("proximal_elastic_net", learning_rate)

    def leaf(u, w, lam, eta):
        shrunk = _soft_threshold(w + u, eta * lam * (1 - alpha))
        return shrunk / (1 + 2 * eta * lam * alpha) - w

    return _leafwise("proximal_elastic_net", leaf, (strength, learning_rate), mask)


def decoupled_weight_decay(
    weight_decay: ScalarOrSchedule,
    learning_rate: ScalarOrSchedule | None = None,
    mask: Mask | None = None,
) -> GradientTransformation:
    """Decoupled weight decay for any optimizer: placed after the step.

    .. math::
        u \\leftarrow u - \\eta_k \\lambda w

    so the parameters become ``w + u - eta_k lambda w``: the decay is not scaled
    by the optimizer's preconditioner (as L2 in the gradient would be) and not
    fed into its momentum (Loshchilov & Hutter 2019, Alg. 1 "SGDW" and 2
    "AdamW", line 12). ``chain(scale_by_adam(), scale_by_learning_rate(lr),
    decoupled_weight_decay(wd, learning_rate=lr))`` is :func:`adamw`.

    **Scaled by the learning rate or not** (an explicit choice, references differ):

    * ``learning_rate=lr`` (a number or the optimizer's schedule): the decay per
      step is ``lr_k * lambda``, as PyTorch's ``AdamW`` and Optax's ``adamw``;
      ``lambda`` is then of the order 1e-2 to 1e-1.
    * ``learning_rate=eta_k`` a schedule *multiplier*: the paper's form, where the
      Adam step is ``eta_k * alpha`` and the decay ``eta_k * lambda``.
    * ``learning_rate=None`` (default): the decay per step is ``lambda`` itself,
      independent of the rate (the paper with ``eta_k = 1``); ``lambda`` is then a
      fraction of the weight removed per step (1e-5 to 1e-4), and changing the
      learning rate does not change the decay.

    Args:
      weight_decay: ``lambda`` >= 0, a number or a schedule.
      learning_rate: ``eta``: ``None``, a number or a schedule (see above).
      mask: which leaves are decayed (see :func:`add_decayed_weights`).

    Raises:
      ValueError: ``weight_decay`` negative or not finite; a non-finite
        ``learning_rate``; ``update`` called without ``params``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.chain(gradtx.sgd(0.5), gradtx.decoupled_weight_decay(0.25))
      >>> w = jnp.array([2.0, -2.0])
      >>> tx.update(jnp.ones(2), tx.init(w), w)[0]  # -0.5 * g - 0.25 * w
      Array([-1.,  0.], dtype=float32)

    References:
      Loshchilov & Hutter (2019), Decoupled Weight Decay Regularization, Alg. 1-2.
    """
    _checks.non_negative("decoupled_weight_decay", "weight_decay", weight_decay, schedule=True)
    if learning_rate is None:
        return _leafwise(
            "decoupled_weight_decay", lambda u, w, lam: u - lam * w, (weight_decay,), mask
        )
    _checks.learning_rate("decoupled_weight_decay", learning_rate)

    def leaf(u, w, lam, eta):
        return u - eta * lam * w

    return _leafwise("decoupled_weight_decay", leaf, (weight_decay, learning_rate), mask)
