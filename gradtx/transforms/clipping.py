"""Clipping the updates: by value, by norm (global, per leaf, per block RMS), adaptively.

Near a cliff of the loss (Goodfellow, Bengio & Courville 2016, Sec. 8.2.4 and
10.11.1; the seeds' "exploding gradient in cliff structure") one gradient can
be orders of magnitude larger than the rest and throw the parameters far away.
Clipping keeps its direction and bounds its length:

.. math::
    g \\leftarrow \\begin{cases} \\dfrac{v}{\\|g\\|} g & \\|g\\| > v \\\\ g & \\text{otherwise}
    \\end{cases}

(Pascanu, Mikolov & Bengio 2013, Alg. 1), over the whole tree
(:func:`clip_by_global_norm`), per leaf (:func:`clip_by_leaf_norm`,
:func:`clip_by_block_rms`) or per unit relative to the weights
(:func:`adaptive_grad_clip`); :func:`clip` bounds each element.

Shared rules, all tested:

* **No NaN from zeros.** The scale ``v / ||g||`` is only formed where
  ``||g|| > v >= 0``, so an all-zero gradient, or a maximum of 0, gives zero
  updates, never ``0 / 0``. (Optax's ``clip_by_global_norm(0.)`` and
  ``clip_by_block_rms(0.)`` return NaN on a zero gradient.)
* **Complex leaves** use magnitudes, ``|g|^2`` in every norm, and :func:`clip`
  limits the modulus and keeps the phase, so a common phase rotation of the
  gradient rotates the clipped result (Optax's ``clip`` refuses complex input).
* **Overflow.** Norms are summed in at least float32; where the sum of squares
  overflows (a float32 gradient above ~1e19) it is recomputed from the gradient
  divided by its largest magnitude, so a huge gradient is clipped to the right
  length in its own direction instead of to zero (a rescaled second pass that
  runs only when the first overflowed).
* A maximum of ``inf`` disables the clipping; NaN or negative maxima are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, EmptyState, GradientTransformation


def _check_maximum(owner: str, name: str, value: Any) -> None:
    """A clipping bound: a number >= 0, ``inf`` allowed (no clipping); skipped for tracers."""
    array = _checks._concrete(value)
    if array is not None and (np.isnan(array).any() or (array < 0).any()):
        _checks._fail(owner, name, value, "a number >= 0 (inf: no clipping)")


def _stateless(update_leaves) -> GradientTransformation:
    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        return update_leaves(updates, params), state

    return GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------- norms


def _sqrt(x: Array) -> Array:
    """``sqrt(x)`` whose derivative at 0 is 0, not ``inf * 0``: the clipping of a
    zero gradient stays differentiable (meta-gradients through an update).

    Written with ``lax.select``, not ``jnp.where``: the norms are taken once per
    leaf (or unit), and ``jnp.where``'s nested call and casts triple the ops
    each one adds to a program of many leaves (the same for the helpers below).
    """
    positive = jax.lax.gt(x, np.array(0, x.dtype))
    root = jax.lax.sqrt(jax.lax.select(positive, x, _filled(x, 1)))
    return jax.lax.select(positive, root, _filled(x, 0))


def _filled(x: Array, value: float) -> Array:
    """``value`` in ``x``'s shape and dtype: a literal for a scalar ``x``, which
    traces at a fraction of ``lax.full_like``'s cost (a few per leaf, on trees of
    thousands of leaves)."""
    if not x.shape:
        return np.array(value, x.dtype)
    return jax.lax.full(x.shape, value, x.dtype)


def _branch(overflowed: Array, rescaled, plain):
    """``lax.cond`` under a trace; a plain Python branch on concrete values (eager
    calls then neither stage nor compile the branch they do not take)."""
    if isinstance(overflowed, jax.core.Tracer):
        return jax.lax.cond(overflowed, rescaled, plain)
    return rescaled() if bool(overflowed) else plain()


def _no_overflow_scale(dtype: Any) -> float:
    """A power of two ``c`` for which ``sum |x c|^2`` over up to ``2^40`` finite
    elements of ``dtype`` cannot overflow: ``c = 2^-(e/2 + 20)``, ``2^e`` the
    dtype's overflow threshold (float32: ``2^-84``; float64: ``2^-532``).

    Multiplying by a power of two is exact; the elements it flushes to zero
    (``|x| < 2^21`` in float32) add at most ``2^82`` to a sum that overflowed
    (``>= 2^128``), a relative ``2^-46``.
    """
    return 2.0 ** -(jnp.finfo(dtype).maxexp // 2 + 20)


def _runtime_scale(squares: Array) -> Array:
    """:func:`_no_overflow_scale` where ``squares`` overflowed, else 1, as a value
    XLA cannot fold: with a constant ``c``, its simplifier rewrites
    ``(x c) (x c)`` as ``(x x) c^2``, and ``c^2`` underflows to 0 (float32)."""
    scale = _filled(squares, _no_overflow_scale(squares.dtype))
    overflowed = jax.lax.eq(squares, np.array(np.inf, squares.dtype))
    return jax.lax.select(overflowed, scale, _filled(squares, 1))


def _global_norm(xs: Sequence[Array], axis_name: tree.AxisName | None = None) -> Array:
    """``sqrt(sum |x|^2)`` over every element of every array, in at least float32.

    Where the sum of squares overflows to ``inf``, it is recomputed as
    ``sqrt(sum |x c|^2) / c`` with the power of two ``c`` of
    :func:`_no_overflow_scale`; that second pass runs only when the first
    overflowed. Both passes sum the small arrays joined, one reduction per dtype
    on one device (:func:`gradtx.tree.join_small`). A norm beyond the dtype's range is
    ``inf``; a NaN element gives NaN. With ``axis_name`` the arrays are this
    device's blocks of arrays split over that mesh axis: the sums are
    ``psum``-med across it, so every device gets the norm of the whole arrays
    (and takes the same branch).
    """
    xs = [x.astype(tree.compute_dtype(x.dtype)) for x in xs]
    if not xs:
        return jnp.zeros([], jnp.float32)
    total = tree.across(jax.lax.psum, axis_name)
    squares = total(tree.squared_norm(xs))

    def rescaled():
        # Each array in the dtype of the sum (a float32 leaf beside a float64 one).
        c = _runtime_scale(squares)
        wide = [x.astype(jnp.result_type(x.dtype, squares.dtype)) for x in xs]
        return _sqrt(total(sum(jnp.sum(tree.abs_sq(x * c)) for x in tree.join_small(wide)))) / c

    return _branch(jnp.isposinf(squares), rescaled, lambda: _sqrt(squares))


def _whole(x: Array, axis: Any) -> bool:
    """Whether ``axis`` (``None``, an int or a tuple) spans every axis of ``x``."""
    if axis is None or x.ndim == 0:
        return True
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    return sorted(int(a) % x.ndim for a in axes) == list(range(x.ndim))


def _unit_norms(xs: Sequence[Array], axes: Sequence[Any], then: Any = None) -> list[Array]:
    """The norm of each unit of each array: ``sqrt(sum |x|^2)`` over ``axes[i]``
    of ``xs[i]``, kept as size-1 dimensions so that it broadcasts against the
    array (a scalar where the unit is the whole array: it broadcasts as well, and
    traces in fewer operations), with the same overflow rescue as
    :func:`_global_norm`, one branch for all of them.

    ``then`` (a function of the list of norms) runs inside the branch, and its
    result is returned instead of the norms: a clipping's shrink factors
    computed there fuse with the norms into one kernel per leaf (XLA:CPU emits
    the branch's outputs as buffers, and fuses nothing across them).
    """
    xs = [tree.as_dtype(x, tree.compute_dtype(x.dtype)) for x in xs]
    if not xs:
        return []
    then = then or (lambda norms: norms)

    keep = [not _whole(x, a) for x, a in zip(xs, axes, strict=True)]

    def sums(scale=None):
        return [
            jnp.sum(tree.abs_sq(x if c is None else x * c), a, keepdims=k)
            for x, a, c, k in zip(xs, axes, scale or [None] * len(xs), keep, strict=True)
        ]

    squares = sums()

    def rescaled():
        scale = [_runtime_scale(sq) for sq in squares]  # per unit: 1 where it did not overflow
        return then([_sqrt(sq) / c for sq, c in zip(sums(scale), scale, strict=True)])

    def plain():
        return then([_sqrt(sq) for sq in squares])

    every = jnp.concatenate([jnp.ravel(sq) for sq in squares])
    return _branch(jnp.any(every == jnp.inf), rescaled, plain)


def _row_picker(vectors: Sequence[Array], groups: Sequence[Sequence[int]], staged: bool) -> Any:
    """``pick(g, r)``: element ``r`` of ``vectors[g]`` as a scalar. Under ``jit``
    the row numbers are runtime values (:func:`gradtx.tree.opaque_ints`), so every
    leaf of a group reads its factor through one shared kernel, not one compiled
    per leaf (a slice at a constant offset compiles in about 7 ms on XLA:CPU)."""
    flat = [jnp.ravel(v) for v in vectors]
    rows = [r for group in groups for r in range(len(group))]
    if staged:
        rows = tree.opaque_ints(rows, flat[0][0])
    starts = np.cumsum([0] + [len(group) for group in groups])

    def pick(g: int, r: int) -> Array:
        return jax.lax.dynamic_index_in_dim(flat[g], rows[starts[g] + r], keepdims=False)

    return pick


def _unit_factors(
    columns: Sequence[Sequence[Array]], axes: Sequence[Any], factor: Any
) -> list[Array]:
    """``factor(size, norms)`` for every unit of every position ``i``: ``norms``
    holds the norm of that unit in each of ``columns[0][i], columns[1][i], ...``
    (over ``axes[i]``, see :func:`_unit_norms`), ``size`` the number of elements
    of ``columns[0][i]``.

    Small arrays that are one unit each are stacked as the rows of one matrix per
    dtype and size (:func:`gradtx.tree.groups_of_a_kind`): one reduction for the
    group instead of one per array, and factors computed as one vector. XLA:CPU
    compiles each kernel on its own: on 400 leaves of 1000 floats this cut the
    first call of ``clip_by_block_rms`` from 3.4-3.5 s to 1.1-1.2 s and AGC's
    from 6.3 s to 1.1 s, and on 500 leaves their steps from 1.15-1.36 to
    0.52-0.72 of Optax's.
    """
    whole = [all(_whole(column[i], axes[i]) for column in columns) for i in range(len(axes))]
    groups = tree.groups_of_a_kind(
        [[column[i] for column in columns] if whole[i] else [] for i in range(len(axes))]
    )
    grouped = {i for group in groups for i in group}
    singles = [i for i in range(len(axes)) if i not in grouped]
    entries = [
        [column[i] for i in singles]
        + [jnp.stack([jnp.ravel(column[i]) for i in group]) for group in groups]
        for column in columns
    ]
    entry_axes = [axes[i] for i in singles] + [(1,)] * len(groups)
    first = columns[0]
    sizes = [first[i].size for i in singles] + [first[group[0]].size for group in groups]
    m = len(entry_axes)

    def then(norms):
        per_column = [norms[c * m : (c + 1) * m] for c in range(len(columns))]
        return [factor(sizes[j], [n[j] for n in per_column]) for j in range(m)]

    arrays = [x for entry in entries for x in entry]
    out = _unit_norms(arrays, entry_axes * len(columns), then)
    factors: list[Any] = [None] * len(axes)
    for j, i in enumerate(singles):
        factors[i] = out[j]
    if groups:
        pick = _row_picker(out[len(singles) :], groups, tree.staged(list(first)))
        for g, group in enumerate(groups):
            for r, i in enumerate(group):
                factors[i] = pick(g, r)
    return factors


def _leaf_factors(leaves: Sequence[Array], factor: Any) -> list[Array]:
    """``factor(size, norm)`` for each leaf, its number of elements and its
    Euclidean norm (a scalar), computed inside the overflow branch of
    :func:`_unit_norms`."""
    axes = [None] * len(leaves)
    return _unit_factors([leaves], axes, lambda size, n: factor(size, n[0]))


def _shrink(x: Array, norm: Array, maximum: Any) -> Array:
    """``x * maximum / norm`` where ``norm > maximum``, else ``x``; in ``x``'s dtype.

    ``norm > maximum >= 0`` implies ``norm > 0``: the division never meets a zero,
    so zero gradients and a zero maximum give zeros, not NaN (and no NaN in the
    derivative either: the untaken branch divides by 1).
    """
    return _times(x, _shrink_factor(norm, maximum))


def _shrink_factor(norm: Array, maximum: Any) -> Array:
    """``maximum / norm`` where ``norm > maximum``, else 1 (see :func:`_shrink`)."""
    over = norm > maximum
    norm = jnp.broadcast_to(norm, over.shape)
    ratio = maximum / jax.lax.select(over, norm, _filled(norm, 1))
    return jax.lax.select(over, ratio, _filled(ratio, 1))


def _times(x: Array, factor: Array) -> Array:
    """``x * factor`` computed in at least float32, returned in ``x``'s dtype."""
    return tree.as_dtype(tree.as_dtype(x, tree.compute_dtype(x.dtype)) * factor, x.dtype)


# ---------------------------------------------------------------------- by value


def _clip_leaf(u: Array, max_delta: Any) -> Array:
    if not jnp.iscomplexobj(u):
        return jnp.clip(u, -max_delta, max_delta).astype(u.dtype)
    return _shrink(u, _sqrt(tree.abs_sq(u.astype(tree.compute_dtype(u.dtype)))), max_delta)


def clip(max_delta: float | Array) -> GradientTransformation:
    """Clips every element of the updates to magnitude at most ``max_delta``.

    For real leaves this is ``clip(g, -max_delta, max_delta)``, as Optax's
    ``clip``. For complex leaves the modulus is limited and the phase kept,
    ``g * min(1, max_delta / |g|)``: clipping the real and imaginary parts
    separately would turn the update and depend on the phase convention (Optax
    raises on complex input). Unlike the norm clippings this changes the
    direction of the update as a whole.

    Args:
      max_delta: the largest magnitude of an element, >= 0 (0 zeroes every
        update, ``inf`` clips nothing).

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
    return _stateless(lambda updates, _: jax.tree.map(lambda u: _clip_leaf(u, max_delta), updates))


# ---------------------------------------------------------------------- by norm


def clip_by_global_norm(
    max_norm: float | Array, axis_name: tree.AxisName | None = None
) -> GradientTransformation:
    """Rescales the updates so that their global norm is at most ``max_norm``.

    .. math::
        g \\leftarrow \\frac{v}{\\|g\\|} g \\quad \\text{if } \\|g\\| > v

    with ``||g||`` the Euclidean norm of all leaves together (Pascanu et al.
    2013, Alg. 1; Goodfellow et al. 2016, Sec. 10.11.1, ``v`` the threshold).
    The direction of the update is kept: this is the remedy for the cliffs of
    Sec. 8.2.4. Zero gradients and ``max_norm=0`` give zeros, not NaN.

    Under :func:`jax.jit` with sharded arrays nothing is needed: XLA sums the
    squares of each device's block and all-reduces one scalar. Inside
    :func:`jax.shard_map`, where each device sees only its block of every leaf,
    pass ``axis_name``: the sum of squares (and that of the overflow rescue) is
    ``psum``-med across that axis, so every device clips by the norm of the
    whole tree, as the unsharded computation does.

    Args:
      max_norm: ``v``, the largest global norm, >= 0 (``inf``: no clipping).
      axis_name: ``None`` (every leaf is whole), or the mesh axis (or tuple of
        axes) of a ``shard_map`` over which *every* leaf is split into disjoint
        blocks. A leaf replicated over that axis would be counted once per
        device: clip such a tree before ``shard_map``, or split every leaf.

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

    References:
      Pascanu, Mikolov & Bengio (2013), On the difficulty of training recurrent
      neural networks, Alg. 1; Goodfellow, Bengio & Courville (2016), Sec. 10.11.1.
    """
    _check_maximum("clip_by_global_norm", "max_norm", max_norm)
    _checks.axis_name("clip_by_global_norm", axis_name)

    def update(updates, params):
        del params
        norm = _global_norm(jax.tree.leaves(updates), axis_name)
        factor = _shrink_factor(norm, max_norm)  # once, not once per leaf
        return jax.tree.map(lambda u: _times(u, factor), updates)

    return _stateless(update)


def clip_by_leaf_norm(max_norm: float | Array) -> GradientTransformation:
    """Rescales each leaf separately so that its Euclidean norm is at most ``max_norm``.

    ``g_l <- max_norm / ||g_l|| * g_l`` for each leaf ``l`` with
    ``||g_l|| > max_norm``: Pascanu et al.'s rule applied per parameter array
    instead of over the whole tree, so one exploding layer does not shrink the
    steps of the others.

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

    def update(updates, params):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        factors = _leaf_factors(leaves, lambda size, n: _shrink_factor(n, max_norm))
        shrunk = [_times(u, f) for u, f in zip(leaves, factors, strict=True)]
        return jax.tree.unflatten(treedef, shrunk)

    return _stateless(update)


def clip_by_block_rms(threshold: float | Array) -> GradientTransformation:
    """Rescales each leaf so that its root-mean-square is at most ``threshold``.

    ``g_l <- threshold / rms(g_l) * g_l`` where ``rms(g_l) = sqrt(mean |g_l|^2)``
    exceeds ``threshold``: :func:`clip_by_leaf_norm` with the bound
    ``threshold * sqrt(size)``, so it does not depend on the size of the leaf.
    A block is a leaf (a weight vector, matrix or filter bank), as in Optax.

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

    def update(updates, params):
        del params
        leaves, treedef = jax.tree.flatten(updates)

        def factor(size, norm):
            return _shrink_factor(norm, threshold * np.sqrt(np.asarray(size, norm.dtype)))

        factors = _leaf_factors(leaves, factor)
        shrunk = [_times(u, f) for u, f in zip(leaves, factors, strict=True)]
        return jax.tree.unflatten(treedef, shrunk)

    return _stateless(update)


# ---------------------------------------------------------------------- adaptive


def _unit_axes(x: Array, axis: Any) -> Any:
    """The axes a unit spans: the given ``axis``, else NFNets' convention.

    Brock et al. (2021) clip per output unit. Their code (and Optax) reads the
    layout from the rank: scalars and vectors (after squeezing) are one unit;
    rank 2 and 3 (``(in, out)`` dense kernels, ``(in, heads, dim)`` attention
    kernels) reduce over axis 0; rank 4 and up (``HWIO`` convolutions and their
    3-D kind) over every axis but the last. A scalar is one unit whatever ``axis``.
    """
    if x.ndim == 0:
        return ()
    if axis is not None:
        return axis
    if jnp.squeeze(x).ndim <= 1:
        return tuple(range(x.ndim))
    if x.ndim in (2, 3):
        return (0,)
    return tuple(range(x.ndim - 1))


def adaptive_grad_clip(
    clipping: float | Array, eps: float = 1e-3, axis: int | tuple[int, ...] | None = None
) -> GradientTransformation:
    """Adaptive gradient clipping (AGC): unit-wise, relative to the weights' norm.

    For each unit ``i`` (an output neuron: a slice of a leaf, see ``axis``) of a
    weight ``W`` with gradient ``G``:

    .. math::
        G_i \\leftarrow \\lambda \\frac{\\max(\\|W_i\\|, \\epsilon)}{\\|G_i\\|} G_i
        \\quad \\text{if } \\frac{\\|G_i\\|}{\\max(\\|W_i\\|, \\epsilon)} > \\lambda

    (Brock et al. 2021, eq. 3): a step may change a unit's weights by at most the
    fraction ``lambda`` of their norm; ``eps`` keeps zero-initialised units (biases)
    from being frozen. Zero gradients and ``clipping=0`` give zeros, not NaN.

    Args:
      clipping: ``lambda`` >= 0, the largest ratio of gradient to weight norm
        (Brock et al. use 0.01 to 0.16 depending on the batch size).
      eps: ``epsilon`` >= 0, the smallest weight norm a unit is measured against.
      axis: the axes a unit's norm runs over; ``None`` reads them from the rank:
        one unit for scalars and vectors, axis 0 for rank 2-3 (dense kernels
        ``(in, out)``), all axes but the last for rank 4+ (``HWIO`` convolutions),
        as the paper's code and Optax. A scalar leaf is always one unit.

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

    References:
      Brock, De, Smith & Simonyan (2021), High-Performance Large-Scale Image
      Recognition Without Normalization, Sec. 4.1.
    """
    _check_maximum("adaptive_grad_clip", "clipping", clipping)
    _checks.non_negative("adaptive_grad_clip", "eps", eps)

    def update(updates, params):
        if params is None:
            raise ValueError(
                "adaptive_grad_clip: update needs the params: call update(updates, state, params)."
            )
        tree.check_structure(params, updates, owner="adaptive_grad_clip")
        grads, treedef = jax.tree.flatten(updates)
        weights = treedef.flatten_up_to(params)
        axes = [_unit_axes(w, axis) for w in weights]

        def shrink_factor(size, norms):
            g_norm, w_norm = norms
            return _shrink_factor(g_norm, clipping * jnp.maximum(w_norm, eps))

        factors = _unit_factors([grads, weights], axes, shrink_factor)
        shrunk = [_times(g, f) for g, f in zip(grads, factors, strict=True)]
        return jax.tree.unflatten(treedef, shrunk)

    return _stateless(update)
