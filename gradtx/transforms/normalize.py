"""Rescaling and recentring the updates: by their norm, by the params' size, by their mean.

* :func:`normalize_by_update_norm` divides the whole tree by its norm
  (normalized gradient descent, Hazan, Levy & Shalev-Shwartz 2015), and
  :func:`normalize` is Optax's contrib form of it, without a scale or an ``eps``
  (SAM's ascent direction, Foret et al. 2021);
* :func:`scale_by_param_block_rms` and :func:`scale_by_param_block_norm` multiply
  each leaf by the RMS or the norm of its parameter (Adafactor's relative step
  size, Shazeer & Stern 2018; the numerator of LARS's trust ratio, You et al. 2017);
* :func:`centralize` subtracts from each output unit's gradient its mean (gradient
  centralization, Yong et al. 2020).

All are stateless. Norms and means are computed in at least float32 (``|x|^2`` for
complex leaves), and each update is returned in its gradient's dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, EmptyState, GradientTransformation
from gradtx.transforms.clipping import _norms


def _stateless(owner: str, update) -> GradientTransformation:
    """A transformation with no state whose updates are ``update(updates, params)``."""

    def init_fn(params):
        tree.check_inexact(params, owner)
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        return update(updates, params), state

    return GradientTransformation(init_fn, update_fn)


def _needs_params(owner: str, updates: Any, params: Any) -> None:
    if params is None:
        raise ValueError(f"{owner}: update needs the params: call update(updates, state, params).")
    tree.check_structure(params, updates, owner=owner)


def _scaled(u: Array, factor: Array) -> Array:
    """``u * factor`` computed in at least float32, returned in ``u``'s dtype."""
    return (u.astype(tree.compute_dtype(u.dtype)) * factor).astype(u.dtype)


# ---------------------------------------------------------------------- by the update's norm


def normalize_by_update_norm(
    scale_factor: float | Array = 1.0, eps: float = 1e-6
) -> GradientTransformation:
    """Divides the updates by their global norm: a step of fixed length.

    Normalized gradient descent (Hazan, Levy & Shalev-Shwartz 2015, Alg. 1) steps
    along the unit vector :math:`\\hat g = g / \\|g\\|`; here, with ``s`` the
    ``scale_factor`` and :math:`\\epsilon` the ``eps``,

    .. math::
        g \\leftarrow \\frac{s}{\\|g\\|_2 + \\epsilon} \\, g

    where :math:`\\|g\\|_2` is the norm of the whole tree seen as one vector
    (``|g|^2`` for complex leaves). The update's length is ``s`` (a little less:
    :math:`\\epsilon` keeps a zero gradient at zero instead of ``0 / 0``, a
    departure from the paper). ``scale_factor=-lr`` makes it a descent step, as
    in Optax's example; the same name, arguments and numbers as
    ``optax.normalize_by_update_norm``. A norm whose square overflows (float32
    above ~1e19) is computed as ``m ||g / m||``, ``m = max |g|``, so a huge
    gradient is still normalized, not zeroed.

    Args:
      scale_factor: ``s``, the length of the update, a finite number (negative to
        descend).
      eps: ``epsilon`` >= 0, added to the norm.

    Raises:
      ValueError: ``scale_factor`` not finite; ``eps`` negative or not finite.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.normalize_by_update_norm(scale_factor=-0.5, eps=0.0)
      >>> tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))[0]
      Array([-0.3, -0.4], dtype=float32)

    References:
      Hazan, Levy & Shalev-Shwartz (2015), Beyond Convexity: Stochastic
      Quasi-Convex Optimization, Alg. 1 (NGD).
    """
    _checks.finite("normalize_by_update_norm", "scale_factor", scale_factor)
    _checks.non_negative("normalize_by_update_norm", "eps", eps)

    def update(updates, params):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        if not leaves:
            return updates
        factor = scale_factor / (_norms([leaves])[0] + eps)
        return treedef.unflatten([_scaled(u, factor) for u in leaves])

    return _stateless("normalize_by_update_norm", update)


NormalizeState = EmptyState
"""State of :func:`normalize`: :class:`gradtx.EmptyState`, as ``optax.contrib.NormalizeState``."""


def normalize() -> GradientTransformation:
    """Divides the updates by their global norm: the unit vector along them.

    .. math::
        g \\leftarrow \\frac{g}{\\|g\\|_2}

    with :math:`\\|g\\|_2` the norm of the whole tree seen as one vector (``|g|^2``
    for complex leaves). Sharpness-aware minimization ascends along this
    direction before it takes its step: ``chain(normalize(), sgd(rho))`` is
    SAM's perturbation ``rho g / ||g||`` (Foret et al. 2021, Eq. 2), as in
    :func:`optax.contrib.sam`'s example. Same name and numbers as
    ``optax.contrib.normalize``, with one departure: an all-zero tree stays zero
    where Optax returns ``0 / 0 = NaN``. Use :func:`normalize_by_update_norm`
    for a scale and an ``eps``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.normalize()
      >>> tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))[0]
      {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}

    References:
      Foret, Kleiner, Mobahi & Neyshabur (2021), Sharpness-Aware Minimization
      for Efficiently Improving Generalization, Eq. 2 and Alg. 1.
    """

    def update(updates, params):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        if not leaves:
            return updates
        norm = _norms([leaves])[0]
        safe = jnp.where(norm > 0, norm, 1)
        return treedef.unflatten(
            [(u.astype(tree.compute_dtype(u.dtype)) / safe).astype(u.dtype) for u in leaves]
        )

    return _stateless("normalize", update)


# ---------------------------------------------------------------------- by the params' size


def _root_mean_square(w: Array) -> Array:
    """``sqrt(mean |w|^2)`` in at least float32 (derivative 0 at 0)."""
    return tree.sqrt(jnp.mean(tree.abs_sq(w.astype(tree.compute_dtype(w.dtype)))))


def _norm(w: Array) -> Array:
    """``sqrt(sum |w|^2)`` over the whole leaf, in at least float32 (derivative 0 at 0)."""
    return tree.sqrt(jnp.sum(tree.abs_sq(w.astype(tree.compute_dtype(w.dtype)))))


def scale_by_param_block_rms(min_scale: float | Array = 1e-3) -> GradientTransformation:
    """Multiplies each leaf's update by the RMS of its parameter, at least ``min_scale``.

    Adafactor's relative step size (Shazeer & Stern 2018, Sec. 8): a step is
    measured against the scale of the parameter it moves. With
    :math:`\\epsilon_2` the ``min_scale``, for each leaf (a *block*: a bias
    vector, a kernel matrix) ``X`` of ``n`` elements,

    .. math::
        u \\leftarrow u \\, \\max\\left(\\epsilon_2,
            \\operatorname{RMS}(X)\\right), \\qquad
        \\operatorname{RMS}(X) = \\sqrt{\\tfrac{1}{n} \\textstyle\\sum_i |X_i|^2}

    so a parameter initialised at zero still moves (at the scale
    :math:`\\epsilon_2 = 10^{-3}`, the paper's value). Same name, arguments and
    numbers as ``optax.scale_by_param_block_rms``.

    Args:
      min_scale: ``epsilon_2`` >= 0, the smallest factor.

    Raises:
      ValueError: ``min_scale`` negative or not finite; ``update`` called without
        ``params``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_param_block_rms()
      >>> w = jnp.array([3.0, -3.0])  # RMS 3
      >>> tx.update(jnp.ones(2), tx.init(w), w)[0]
      Array([3., 3.], dtype=float32)

    References:
      Shazeer & Stern (2018), Adafactor: Adaptive Learning Rates with Sublinear
      Memory Cost, Sec. 8 and Alg. 4 (``alpha_t = max(eps_2, RMS(X_{t-1})) rho_t``).
    """
    _checks.non_negative("scale_by_param_block_rms", "min_scale", min_scale)

    def update(updates, params):
        _needs_params("scale_by_param_block_rms", updates, params)
        return jax.tree.map(
            lambda u, w: _scaled(u, jnp.maximum(_root_mean_square(w), min_scale)), updates, params
        )

    return _stateless("scale_by_param_block_rms", update)


def scale_by_param_block_norm(min_scale: float | Array = 1e-3) -> GradientTransformation:
    """Multiplies each leaf's update by the norm of its parameter, at least ``min_scale``.

    The numerator of LARS's layer-wise trust ratio (You, Gitman & Ginsburg 2017):
    for each leaf ``w``,

    .. math::
        u \\leftarrow u \\, \\max\\left(\\epsilon, \\|w\\|_2\\right)

    with :math:`\\|w\\|_2` the Euclidean (Frobenius) norm of the whole leaf and
    :math:`\\epsilon` the ``min_scale``. Chained after a per-leaf normalization of
    the gradient it gives LARS's local rate ``||w|| / ||g||``. Same name,
    arguments and numbers as ``optax.scale_by_param_block_norm``.

    Args:
      min_scale: ``epsilon`` >= 0, the smallest factor (lets zero-initialised
        parameters move).

    Raises:
      ValueError: ``min_scale`` negative or not finite; ``update`` called without
        ``params``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_param_block_norm()
      >>> w = jnp.array([3.0, 4.0])  # norm 5
      >>> tx.update(jnp.ones(2), tx.init(w), w)[0]
      Array([5., 5.], dtype=float32)

    References:
      You, Gitman & Ginsburg (2017), Large Batch Training of Convolutional
      Networks, Alg. 1 (the local learning rate ``eta ||w|| / ||grad L(w)||``).
    """
    _checks.non_negative("scale_by_param_block_norm", "min_scale", min_scale)

    def update(updates, params):
        _needs_params("scale_by_param_block_norm", updates, params)
        return jax.tree.map(
            lambda u, w: _scaled(u, jnp.maximum(_norm(w), min_scale)), updates, params
        )

    return _stateless("scale_by_param_block_norm", update)


# ---------------------------------------------------------------------- by the mean


def _centralized(g: Array, output_axis: int) -> Array:
    """``g`` minus its mean over every axis but ``output_axis``; leaves of rank <= 1 as they are."""
    if g.ndim <= 1:
        return g
    keep = output_axis % g.ndim
    axes = tuple(a for a in range(g.ndim) if a != keep)
    x = g.astype(tree.compute_dtype(g.dtype))
    return (x - jnp.mean(x, axis=axes, keepdims=True)).astype(g.dtype)


def centralize(*, output_axis: int = 0) -> GradientTransformation:
    """Gradient centralization: each output unit's gradient minus its mean.

    For a weight ``W`` whose output unit ``i`` has the fan-in weights ``w_i``
    (``M`` of them), Yong et al. (2020) replace the gradient of ``w_i`` by

    .. math::
        \\Phi_{GC}(\\nabla_{w_i} L) = \\nabla_{w_i} L
            - \\frac{1}{M} \\sum_{j=1}^{M} \\nabla_{w_{i,j}} L

    i.e. they project it onto the hyperplane of zero-mean fan-in vectors, which
    constrains the weights and regularises the output features. Leaves of rank 0
    and 1 (biases, scales) are left alone, as in the paper.

    The unit axis is ``output_axis`` and the mean runs over every other axis. The
    default, ``0``, is Optax's ``centralize`` (which takes no argument): the
    layout of PyTorch weights, ``(out, in, h, w)``. Flax and Haiku store kernels
    as ``(in, out)`` and ``(h, w, in, out)``, where the paper's units are on the
    last axis: use ``output_axis=-1`` there (with the default, a Flax ``Dense``
    kernel is centred along each *input* row instead).

    Args:
      output_axis: the axis that indexes the output units (negative counts from
        the last); the mean is over all the other axes.

    Raises:
      TypeError: ``output_axis`` is not an int.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.centralize()
      >>> g = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]])
      >>> tx.update(g, tx.init(g))[0]
      Array([[-1.,  0.,  1.],
             [-2., -1.,  3.]], dtype=float32)

    References:
      Yong, Huang, Hua & Zhang (2020), Gradient Centralization: A New
      Optimization Technique for Deep Neural Networks, Sec. 3.2 (the operator
      ``Phi_GC``) and Alg. 1 (SGDM with GC).
    """
    if isinstance(output_axis, (bool, np.bool_)) or not isinstance(output_axis, (int, np.integer)):
        raise TypeError(
            f"centralize: output_axis must be an int, got {output_axis!r} "
            f"({type(output_axis).__name__})."
        )

    def update(updates, params):
        del params
        return jax.tree.map(lambda g: _centralized(g, output_axis), updates)

    return _stateless("centralize", update)
