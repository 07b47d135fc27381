"""Clipping the updates: by value, by norm (global, per leaf, per block RMS), adaptively.

Clipping bounds the length of a gradient and keeps its direction (Pascanu, Mikolov
& Bengio 2013, Alg. 1; Goodfellow, Bengio & Courville 2016, Sec. 10.11.1):

.. math::
    g \\leftarrow g \\min\\left(1, \\frac{v}{\\|g\\|}\\right)

over the whole tree (:func:`clip_by_global_norm`), per leaf (:func:`clip_by_leaf_norm`,
:func:`clip_by_block_rms`) or per unit relative to the weights
(:func:`adaptive_grad_clip`, Brock et al. 2021); :func:`clip` bounds each element. Rules:

* **No NaN from zeros.** ``v / ||g||`` is only formed where ``||g|| > v >= 0``, so
  a zero gradient or a maximum of 0 gives zeros (Optax: NaN); ``sqrt`` has
  derivative 0 at 0, so the derivative through the clipping of zeros is finite.
* **Complex leaves** use ``|g|^2`` in the norms; :func:`clip` limits the modulus
  and keeps the phase (Optax's ``clip`` refuses complex input).
* **Overflow.** Norms and updates are computed in at least float32, outputs in each
  leaf's dtype. Where a sum of squares overflows (float32 above ~1e19), the norm is
  ``m ||x / m||``, ``m = max |x|``: a huge gradient is clipped to the right length
  in its own direction, not to zero (via :func:`gradtx._tactics.rare_branch`).
* A maximum of ``inf`` disables the clipping; NaN or negative maxima are refused.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, _tactics, tree
from gradtx.base import Array, EmptyState, GradientTransformation

ClipState = EmptyState
"""Optax's name of the state of :func:`clip`: it is stateless, so this is
:class:`~gradtx.EmptyState` (no fields, as Optax's)."""

ClipByGlobalNormState = EmptyState
"""Optax's name of the state of :func:`clip_by_global_norm`: it is stateless, so this is
:class:`~gradtx.EmptyState` (no fields, as Optax's)."""

AdaptiveGradClipState = EmptyState
"""Optax's name of the state of :func:`adaptive_grad_clip`: it is stateless, so this is
:class:`~gradtx.EmptyState` (no fields, as Optax's)."""


def _check_maximum(owner: str, name: str, value: Any) -> None:
    """A clipping bound: a number >= 0, ``inf`` allowed (no clipping); skipped for tracers."""
    array = _checks.scalar(owner, name, value)
    if array is not None and (np.isnan(array).any() or (array < 0).any()):
        _checks._fail(owner, name, value, "a number >= 0 (inf: no clipping)")


def _stateless(update) -> GradientTransformation:
    """A transformation with no state whose updates are ``update(updates, params)``."""

    def init(params):
        tree.check_inexact(params)
        return EmptyState()

    return GradientTransformation(
        init,
        lambda updates, state, params=None, **extra_args: (update(updates, params), state),
    )


def _clipped(g: Array, norm: Array, maximum: Any) -> Array:
    """``g min(1, maximum / norm)`` in ``g``'s dtype, divided only where ``norm > maximum``."""
    over = norm > maximum
    factor = jnp.where(over, maximum / jnp.where(over, norm, 1), 1)
    return (g.astype(tree.compute_dtype(g.dtype)) * factor).astype(g.dtype)


def _norms(groups: list[list[Array]], axis: Any = None, axis_name: Any = None) -> list[Array]:
    """Per group of arrays, ``sqrt(sum |x|^2)`` over ``axis`` (``None``: all, a scalar;
    else kept as size-1 dimensions) of all its arrays, ``psum``-med over ``axis_name``,
    in at least float32. Where a sum overflows, every norm is ``m ||x / m||`` instead,
    ``m = max |x|`` over the same elements (one decision for all groups)."""
    groups = [[x.astype(tree.compute_dtype(x.dtype)) for x in xs] for xs in groups]
    if axis is None:  # whole arrays: small ones may be summed joined
        groups = [_tactics.joined_for_sum(xs) for xs in groups]
    psum, pmax = tree.across(jax.lax.psum, axis_name), tree.across(jax.lax.pmax, axis_name)
    keep = axis is not None

    def sum_sq(xs, m=1):
        dtype = jnp.result_type(*(tree.real_dtype(x.dtype) for x in xs))
        return psum(sum(jnp.sum(tree.abs_sq(x / m), axis, keepdims=keep).astype(dtype) for x in xs))

    def rescued_norm(xs):
        tops = [jnp.max(jnp.abs(x), axis, keepdims=keep, initial=0) for x in xs]
        m = pmax(functools.reduce(jnp.maximum, tops))
        m = jnp.where(m > 0, m, 1)
        return m * tree.sqrt(sum_sq(xs, m))

    squares = [sum_sq(xs) for xs in groups]
    overflowed = functools.reduce(jnp.logical_or, [jnp.any(jnp.isposinf(s)) for s in squares])
    rescued = lambda groups, _: [rescued_norm(xs) for xs in groups]
    return _tactics.rare_branch(
        overflowed, rescued, lambda _, sq: [tree.sqrt(s) for s in sq], groups, squares
    )


def clip(max_delta: float | Array) -> GradientTransformation:
    """Clips every element of the updates to magnitude at most ``max_delta``.

    Real leaves: ``clip(g, -max_delta, max_delta)``, as Optax's ``clip``. Complex
    leaves: ``g * min(1, max_delta / |g|)``, the modulus limited and the phase kept.

    Args:
      max_delta: the largest magnitude of an element, >= 0 (``inf``: no clipping).

    Raises:
      ValueError: ``max_delta`` negative or NaN.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.clip(1.0)
      >>> tx.update(jnp.array([0.5, -3.0, 2.0]), tx.init(None))[0]
      Array([ 0.5, -1. ,  1. ], dtype=float32)
      >>> tx.update(jnp.array([3.0 + 4.0j]), tx.init(None))[0]  # modulus 5 -> 1
      Array([0.6+0.8j], dtype=complex64)
    """
    _check_maximum("clip", "max_delta", max_delta)

    def clip_leaf(g):
        if not jnp.iscomplexobj(g):
            return jnp.clip(g, -max_delta, max_delta).astype(g.dtype)
        return _clipped(g, tree.sqrt(tree.abs_sq(g.astype(tree.compute_dtype(g.dtype)))), max_delta)

    return _stateless(lambda updates, _: jax.tree.map(clip_leaf, updates))


def clip_by_global_norm(
    max_norm: float | Array, axis_name: tree.AxisName | None = None
) -> GradientTransformation:
    """Rescales the updates so that their global norm is at most ``max_norm``.

    ``g <- g min(1, v / ||g||)``, ``||g||`` the Euclidean norm of all leaves together
    (Pascanu et al. 2013, Alg. 1; Goodfellow et al. 2016, Sec. 10.11.1). Inside
    :func:`jax.shard_map`, where each device sees its block of every leaf, pass
    ``axis_name``: the sums are ``psum``-med across it (under ``jit``, nothing is needed).

    Args:
      max_norm: ``v``, the largest global norm, >= 0 (``inf``: no clipping).
      axis_name: ``None`` (every leaf is whole), or the ``shard_map`` mesh axis
        (or tuple of axes) over which *every* leaf is split into disjoint blocks
        (a replicated leaf would be counted once per device).

    Raises:
      ValueError: ``max_norm`` negative or NaN; ``axis_name`` not None, a string
        or a non-empty tuple of strings.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.clip_by_global_norm(1.0)
      >>> g = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}  # norm 5
      >>> tx.update(g, tx.init(g))[0]
      {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}

      Inside ``shard_map`` (here one device; with ``n`` each holds ``1/n`` of ``g``):

      >>> import jax
      >>> from jax.sharding import Mesh, PartitionSpec as P
      >>> mesh = Mesh(jax.devices()[:1], ("data",))
      >>> tx = gradtx.clip_by_global_norm(1.0, axis_name="data")
      >>> clip = lambda g: tx.update(g, tx.init(g))[0]
      >>> jax.shard_map(clip, mesh=mesh, in_specs=P("data"), out_specs=P("data"))(
      ...     jnp.array([3.0, 4.0]))
      Array([0.6, 0.8], dtype=float32)
    """
    _check_maximum("clip_by_global_norm", "max_norm", max_norm)
    _checks.axis_name("clip_by_global_norm", axis_name)

    def update(updates, params):
        leaves = jax.tree.leaves(updates)
        norm = _norms([leaves], axis_name=axis_name)[0] if leaves else None
        return jax.tree.map(lambda g: _clipped(g, norm, max_norm), updates)

    return _stateless(update)


def clip_by_leaf_norm(max_norm: float | Array) -> GradientTransformation:
    """Rescales each leaf so that its Euclidean norm is at most ``max_norm``.

    ``g_l <- g_l min(1, max_norm / ||g_l||)``: one exploding layer does not shrink the others.

    Args:
      max_norm: the largest norm of a leaf, >= 0 (``inf``: no clipping).

    Raises:
      ValueError: ``max_norm`` negative or NaN.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.clip_by_leaf_norm(1.0)
      >>> g = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.5])}
      >>> tx.update(g, tx.init(g))[0]
      {'a': Array([0.6, 0.8], dtype=float32), 'b': Array([0.5], dtype=float32)}
    """
    _check_maximum("clip_by_leaf_norm", "max_norm", max_norm)
    clip_leaf = lambda g: _clipped(g, _norms([[g]])[0], max_norm)
    return _stateless(lambda updates, _: jax.tree.map(clip_leaf, updates))


def clip_by_block_rms(threshold: float | Array) -> GradientTransformation:
    """Rescales each leaf so that its root-mean-square is at most ``threshold``.

    ``g_l <- g_l min(1, threshold / rms(g_l))``, ``rms(g_l) = sqrt(mean |g_l|^2)``:
    :func:`clip_by_leaf_norm` with the bound ``threshold * sqrt(size)``, as Optax.

    Args:
      threshold: the largest RMS of a leaf, >= 0 (``inf``: no clipping).

    Raises:
      ValueError: ``threshold`` negative or NaN.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.clip_by_block_rms(1.0)
      >>> tx.update(jnp.array([3.0, -3.0, 3.0, 3.0]), tx.init(None))[0]  # rms 3 -> 1
      Array([ 1., -1.,  1.,  1.], dtype=float32)
    """
    _check_maximum("clip_by_block_rms", "threshold", threshold)

    def clip_leaf(g):
        norm = _norms([[g]])[0]
        return _clipped(g, norm, threshold * np.sqrt(np.asarray(g.size, norm.dtype)))

    return _stateless(lambda updates, _: jax.tree.map(clip_leaf, updates))


def _unit_axes(x: Array, axis: Any) -> tuple[int, ...]:
    """The axes (ints >= 0) of ``x`` a unit spans: ``axis``, else by rank as Brock et
    al.'s code and Optax: a scalar or (squeezed) vector is one unit, rank 2-3
    (``(in, out)`` kernels) reduce axis 0, rank 4+ (``HWIO``) all axes but the last."""
    if axis is not None:
        return tuple(int(a) % x.ndim for a in np.atleast_1d(axis)) if x.ndim else ()
    if jnp.squeeze(x).ndim <= 1:
        return tuple(range(x.ndim))
    return (0,) if x.ndim in (2, 3) else tuple(range(x.ndim - 1))


def unitwise_norm(x: Array, axis: int | tuple[int, ...] | None = None) -> Array:
    """The L2 norm of each unit of ``x``, broadcast back to ``x``'s shape.

    A unit is the slice that :func:`adaptive_grad_clip` measures (Brock et al.
    2021, Sec. 4.1): ``||x_i|| = sqrt(sum_{j in unit i} |x_j|^2)`` over the axes
    ``axis``, or, with ``axis=None``, over axes read from the rank as Optax's
    ``optax.transforms.unitwise_norm``: a scalar or a (squeezed) vector is one
    unit, a rank-2 or rank-3 kernel ``(in, out)`` reduces axis 0, and a rank-4
    or rank-5 convolution kernel (``HWIO``, ``DHWIO``) every axis but the last.
    Ranks above 5 reduce every axis but the last too, where Optax asks for
    ``axis``. A sum of squares that overflows is taken as ``m ||x / m||`` with
    ``m = max |x|``, so a finite unit has a finite norm.

    Args:
      x: an array (complex allowed: ``|x|^2``).
      axis: the axes a unit spans, or ``None`` (by rank).

    Returns:
      The norms, real, in at least float32, with ``x``'s shape.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.unitwise_norm(jnp.array([[3.0, 0.0], [4.0, 1.0]]))  # per column
      Array([[5., 1.],
             [5., 1.]], dtype=float32)
    """
    x = jnp.asarray(x)
    norm = _norms([[x]], _unit_axes(x, axis) if x.ndim else None)[0]
    return jnp.broadcast_to(norm, x.shape)


def unitwise_clip(g_norm: Array, max_norm: Array, grad: Array, div_eps: Any = 1e-6) -> Array:
    """Scales each element of ``grad`` whose unit norm exceeds ``max_norm`` down to it.

    ``grad`` where ``g_norm < max_norm``, else ``grad * max_norm / max(g_norm,
    div_eps)``: the rule of :func:`adaptive_grad_clip` (Brock et al. 2021, eq. 3)
    on precomputed norms, with Optax's ``optax.transforms.unitwise_clip``
    arguments and numbers. ``div_eps`` only keeps the division finite.

    Args:
      g_norm: the unit norms of ``grad``, broadcast to its shape
        (:func:`unitwise_norm`).
      max_norm: the largest norm of each unit, of the same shape.
      grad: the gradient.
      div_eps: the smallest divisor.

    Raises:
      ValueError: the three arrays are not of one shape.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> g = jnp.array([3.0, 4.0])
      >>> gradtx.unitwise_clip(gradtx.unitwise_norm(g), jnp.full(2, 1.0), g)
      Array([0.6, 0.8], dtype=float32)
    """
    g_norm, max_norm, grad = jnp.asarray(g_norm), jnp.asarray(max_norm), jnp.asarray(grad)
    if not g_norm.shape == max_norm.shape == grad.shape:
        raise ValueError(
            "unitwise_clip: g_norm, max_norm and grad must have one shape, got "
            f"{g_norm.shape}, {max_norm.shape} and {grad.shape}."
        )
    clipped = grad * (max_norm / jnp.maximum(g_norm, div_eps))
    return jnp.where(g_norm < max_norm, grad, clipped)


def adaptive_grad_clip(
    clipping: float | Array, eps: float = 1e-3, axis: int | tuple[int, ...] | None = None
) -> GradientTransformation:
    """Adaptive gradient clipping (AGC): unit-wise, relative to the weights' norm.

    A step may change a unit's weights by at most the fraction ``lambda`` of their
    norm: for each unit ``i`` (an output neuron, see ``axis``) of a weight ``W``
    with gradient ``G`` (Brock et al. 2021, eq. 3; ``eps`` lets zero-initialised units move):

    .. math::
        G_i \\leftarrow \\lambda \\frac{\\max(\\|W_i\\|, \\epsilon)}{\\|G_i\\|} G_i
        \\quad \\text{if } \\frac{\\|G_i\\|}{\\max(\\|W_i\\|, \\epsilon)} > \\lambda

    Args:
      clipping: ``lambda`` >= 0, the largest ratio of gradient to weight norm
        (Brock et al. use 0.01 to 0.16 depending on the batch size).
      eps: ``epsilon`` >= 0, the smallest weight norm a unit is measured against.
      axis: the axes a unit spans (an int or a tuple); ``None`` reads them from the
        rank as the paper's code: scalars and vectors are one unit, rank 2-3
        (``(in, out)``) reduce axis 0, rank 4+ (``HWIO``) all axes but the last.
        A scalar leaf is always one unit.

    Raises:
      ValueError: ``clipping`` or ``eps`` negative or NaN; ``update`` called
        without ``params``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.adaptive_grad_clip(0.5)
      >>> w = jnp.array([[3.0], [4.0]])  # one unit of norm 5: at most 2.5
      >>> tx.update(jnp.array([[30.0], [40.0]]), tx.init(w), w)[0]
      Array([[1.5],
             [2. ]], dtype=float32)
    """
    _check_maximum("adaptive_grad_clip", "clipping", clipping)
    _checks.non_negative("adaptive_grad_clip", "eps", eps)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else axis
    if axis is not None and not (
        isinstance(axes, tuple)
        and all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes)
    ):
        raise TypeError(
            f"adaptive_grad_clip: axis must be None, an int or a tuple of ints, "
            f"got {axis!r} ({type(axis).__name__})."
        )

    def clip_leaf(g, w):
        g_norm, w_norm = _norms([[g], [w]], _unit_axes(w, axis))
        return _clipped(g, g_norm, clipping * jnp.maximum(w_norm, eps))

    def update(updates, params):
        if params is None:
            raise ValueError(
                "adaptive_grad_clip: update needs the params: call update(updates, state, params)."
            )
        tree.check_structure(params, updates, owner="adaptive_grad_clip")
        return jax.tree.map(clip_leaf, updates, params)

    return _stateless(update)
