"""Running a transformation on one contiguous buffer per dtype.

``flat(inner)`` concatenates the leaves of the params (and of every gradient)
into one 1-D buffer per dtype, ``{"bfloat16": ..., "float32": ...}``, runs
``inner`` on those few large arrays instead of on many small ones, and cuts its
output back into the user's tree. The inner state lives on the buffers between
steps, so a step flattens the gradient once and unflattens the update once.
A leaf of ``pack_below`` elements or more is not packed: it is a buffer of its
own (``"float32:7"``, leaf 7 of the tree), the leaf itself, in its shape.

**Same numbers.** Every per-leaf method in gradtx is element-wise (moments,
roots, divisions, decays), so running it on a concatenation of the leaves
computes the same numbers: a leaf keeps its dtype (one buffer per dtype, so
bfloat16 and complex leaves are never promoted, unlike a single raveled vector),
and each leaf of the update comes back in its gradient's dtype. Two caveats of
the compiler, not of the math: a power or a root may be evaluated by vector code
for a buffer and by scalar code for a scalar leaf (one ulp apart), and for
bfloat16, XLA's default ``--xla_allow_excess_precision`` lets each program skip
a different intermediate rounding to bfloat16 (with the flag off, the bfloat16
numbers are identical too).

**What does not carry over.** Inside ``flat`` the inner transformation sees one
leaf per dtype, not the user's tree:

* masks written for the params cannot apply there: a mask *tree*
  (``add_decayed_weights(mask=...)``, ``adamw(mask=...)``) fails with a
  ``ValueError`` saying so, and a mask *function* would be called on the
  buffers and decide on them, which is silently wrong. Keep masked blocks
  outside: ``chain(flat(scale_by_adam()), add_decayed_weights(wd, mask),
  scale_by_learning_rate(lr))``;
* per-leaf reductions (a norm per layer, trust ratios: ``clip_by_leaf_norm``,
  ``clip_by_block_rms``, ``adaptive_grad_clip``) become one per dtype; keep them
  outside (``chain(clip_by_leaf_norm(1.0), flat(adam(1e-3)))``). Whole-tree
  reductions (a global norm) keep their value, summed in another order;
* randomness drawn per leaf (``add_noise``) is drawn per buffer instead: the same
  distribution, other samples.

Extra arguments of ``update`` reach ``inner`` unchanged, except ``value_fn``
(the loss as a function of the params), which is wrapped to accept the buffers.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _tactics, tree
from gradtx.base import GradientTransformation, OptState, Params, Updates
from gradtx.combine import accepts_extra_args


class _Leaf(NamedTuple):
    # The key of the leaf's buffer: the name of the params' dtype for a packed
    # leaf, "<dtype>:<leaf index>" for a leaf with a buffer of its own.
    buffer: str
    start: int  # Offset of the leaf's first element in that buffer.
    shape: tuple[int, ...]


class FlatLayout(NamedTuple):
    """Where each leaf of the params lives in the buffers: static and hashable."""

    treedef: Any  # The params' tree structure (``None`` leaves included).
    names: tuple[tuple[Any, ...], ...]  # Each leaf's dict keys and sequence indices.
    leaves: tuple[_Leaf, ...]  # One per array leaf, in ``treedef`` order.
    sizes: tuple[tuple[str, int], ...]  # (dtype name, buffer length), sorted by name.


class FlatState(NamedTuple):
    """State of :func:`flat`: the inner state on the buffers; the layout is in its type.

    ``state.layout`` (the params' tree, shapes and buffer offsets) is static: it
    is an attribute of the subclass of ``FlatState`` made once per layout, so
    the state's only field is ``inner_state`` and the layout is part of the
    tree structure, not a leaf. The state is then a plain NamedTuple of arrays
    that jits, vmaps and checkpoints like any other (``flax.serialization``
    restores a NamedTuple by calling its type, which brings the layout back).
    """

    inner_state: OptState  # The inner transformation's state, on {dtype name: buffer}.

    def to_tree(self, buffers: dict[str, jax.Array]) -> Params:
        """Cuts ``{dtype name: buffer}`` (a moment of the inner state) into the params' tree."""
        return _unflatten(self.layout, buffers, None, self.layout.treedef)


FlatState.layout = None  # Set on the subclass of each layout (not a NamedTuple field).


@functools.cache
def _state_type(layout: FlatLayout) -> type[FlatState]:
    """The subclass of :class:`FlatState` that carries ``layout`` (one per layout)."""
    return type("FlatState", (FlatState,), {"__slots__": (), "layout": layout})


def _names(path: tuple[Any, ...]) -> tuple[Any, ...]:
    """The dict keys and sequence indices of a leaf's path, without attribute hops.

    Containers such as Flax's ``Variable`` add attribute steps (``.value``) to a
    path; the names a user gives (dict keys, list positions) are what must agree.
    """
    kept = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            kept.append(key.key)
        elif isinstance(key, jax.tree_util.SequenceKey):
            kept.append(key.idx)
    return tuple(kept)


def _layout(params: Params, pack_below: int | None) -> FlatLayout:
    """Packs the leaves of fewer than ``pack_below`` elements (all with ``None``)
    into one buffer per dtype; a larger leaf is a buffer of its own."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    leaves = [leaf for _, leaf in with_paths]
    names = tuple(_names(path) for path, _ in with_paths)
    sizes: dict[str, int] = {}
    entries = []
    for i, leaf in enumerate(leaves):
        leaf = jnp.asarray(leaf)
        packed = pack_below is None or leaf.size < pack_below
        name = leaf.dtype.name if packed else f"{leaf.dtype.name}:{i}"
        entries.append(_Leaf(name, sizes.get(name, 0), tuple(leaf.shape)))
        sizes[name] = sizes.get(name, 0) + leaf.size
    return FlatLayout(treedef, names, tuple(entries), tuple(sorted(sizes.items())))


def _leaves(layout: FlatLayout, values: Any, what: str) -> tuple[list[jax.Array], Any]:
    """The leaves and tree structure of ``values``, checked against the layout.

    The leaves must match the params' in number, shape and names (dict keys and
    sequence indices). The containers may differ (Flax's ``nnx.Optimizer`` calls
    ``init`` on ``Variable``-wrapped params and ``update`` on plain arrays); the
    result takes the structure of ``values``.
    """
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(values)
    names = tuple(_names(path) for path, _ in with_paths)
    if len(with_paths) != len(layout.leaves) or (
        treedef != layout.treedef and names != layout.names
    ):
        expected = layout.treedef.unflatten(
            [jax.ShapeDtypeStruct(e.shape, jnp.float32) for e in layout.leaves]
        )
        tree.check_structure(expected, values, owner="flat", what=what)
    leaves = []
    for (path, leaf), entry in zip(with_paths, layout.leaves, strict=True):
        leaf = jnp.asarray(leaf)
        if tuple(leaf.shape) != entry.shape:
            raise ValueError(
                f"flat: {what} leaf {jax.tree_util.keystr(path)} has shape {tuple(leaf.shape)}, "
                f"but the params the state was initialised with have {entry.shape} there."
            )
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):  # the params are (see init)
            raise ValueError(
                f"flat: {what} leaf {jax.tree_util.keystr(path)} is a {leaf.dtype} array of "
                f"shape {entry.shape}, but the params the state was initialised with have a "
                "floating-point array there."
            )
        leaves.append(leaf)
    return leaves, treedef


def _flatten(layout: FlatLayout, leaves: list[jax.Array]) -> dict[str, jax.Array]:
    """One 1-D buffer per params dtype, promoted where its leaves' dtypes differ; a
    leaf with a buffer of its own is that buffer, in its shape.

    Not even raveled: XLA:CPU then writes the new params in place of donated
    ones (through a reshape it copies them, a temporary as large as the leaf).
    """
    groups: dict[str, list[jax.Array]] = {name: [] for name, _ in layout.sizes}
    for leaf, entry in zip(leaves, layout.leaves, strict=True):
        groups[entry.buffer].append(leaf if ":" in entry.buffer else jnp.ravel(leaf))
    return {
        name: jnp.concatenate(parts) if len(parts) > 1 else parts[0]
        for name, parts in groups.items()
    }


def _unflatten(
    layout: FlatLayout,
    buffers: dict[str, jax.Array],
    like: list | None,
    treedef: Any,
    share_kernels: bool = False,
) -> Any:
    """The tree ``treedef`` cut from ``buffers``, each leaf in the dtype of ``like``'s.

    With ``share_kernels`` on the CPU backend the cuts are dynamic slices at
    runtime offsets (:func:`_runtime_offsets`), so XLA:CPU compiles one kernel per
    leaf shape, not one per leaf; a buffer of 2**31 elements or more, beyond int32
    offsets, is cut at constant offsets. Other backends always cut at constant
    offsets: the offsets come out of a ``while_loop``, which on a GPU would read
    its predicate on the host at every step.
    """
    lengths = dict(layout.sizes)
    sizes = [int(np.prod(entry.shape, dtype=np.int64)) for entry in layout.leaves]
    # A leaf alone in its buffer is the whole buffer: no cut.
    cut = [size < lengths[entry.buffer] for entry, size in zip(layout.leaves, sizes, strict=True)]
    starts: dict[int, Any] = {i: layout.leaves[i].start for i in range(len(sizes)) if cut[i]}
    floating = [b for b in buffers.values() if jnp.issubdtype(b.dtype, jnp.inexact) and b.size]
    fits = max(lengths.values(), default=0) < 2**31
    if share_kernels and _tactics.backend() == "cpu" and floating and fits and len(starts) > 1:
        shared = _runtime_offsets(list(starts.values()), floating[0][0])
        starts = dict(zip(starts, shared, strict=True))
    leaves = []
    for i, (entry, size) in enumerate(zip(layout.leaves, sizes, strict=True)):
        piece = buffers[entry.buffer]
        if cut[i]:
            piece = jax.lax.dynamic_slice_in_dim(piece, starts[i], size)
        piece = piece.reshape(entry.shape)
        leaves.append(piece if like is None else piece.astype(like[i].dtype))
    return treedef.unflatten(leaves)


def _runtime_offsets(values: list[int], anchor: jax.Array) -> list[jax.Array]:
    """``values`` as int32 scalars that XLA sees as runtime values, not constants.

    XLA:CPU compiles every distinct kernel on its own and shares the code of
    identical ones; a slice at a constant offset bakes the offset into its kernel,
    so cutting a buffer into many leaves compiles a kernel per leaf. With the
    offset an operand, the leaves of one shape share one. The values come out of
    a ``while_loop`` whose trip count XLA cannot know: it runs (once, adding its
    counter 0) only when the scalar ``anchor`` is NaN, so they are always
    ``values``, computed after ``anchor``.
    """

    def again(carry):
        count, _ = carry
        return (count < 1) & jnp.isnan(anchor)

    def once(carry):
        count, current = carry
        return count + 1, tuple(v + count for v in current)

    start = (jnp.int32(0), tuple(jnp.int32(v) for v in values))
    return list(jax.lax.while_loop(again, once, start)[1])


def _tree_error_hint(error: ValueError) -> ValueError:
    return ValueError(
        f"flat: the inner transformation failed on the flattened tree ({error}). Inside flat "
        "it sees one 1-D buffer per dtype, not the params' tree, so a mask or labels written "
        "for the params cannot apply there: keep masked blocks outside flat, e.g. "
        "chain(flat(scale_by_adam()), add_decayed_weights(wd, mask), scale_by_learning_rate(lr))."
    )


def flat(
    inner: GradientTransformation,
    *,
    pack_below: int | None = 2**14,
    share_kernels: bool = True,
) -> GradientTransformation:
    """Runs ``inner`` on one contiguous 1-D buffer per dtype instead of leaf by leaf.

    ``init`` ravels and concatenates the params' leaves per dtype and builds
    ``inner``'s state on ``{dtype name: buffer}``; ``update`` does the same to the
    gradient (and to the params when given), applies ``inner``, and cuts the
    result back into the gradient's tree, each leaf in its gradient's dtype.
    Element-wise methods (every per-leaf optimizer of gradtx) give the same
    numbers as without ``flat``; see the module docstring for masks and per-leaf
    reductions, which do not carry over.

    Args:
      inner: the transformation to run on the buffers (a gradtx or Optax
        transformation, e.g. ``gradtx.adam(1e-3)``).
      pack_below: leaves of fewer elements are packed into their dtype's buffer;
        a larger leaf is a buffer of its own, in its shape (``"float32:7"`` for
        leaf 7 of the tree), which costs no copy: packing saves kernels per
        leaf, and a large leaf has work enough to fill its own. ``None`` packs
        every leaf.
        On a CPU, packing every leaf made the step on an MLP of a few large
        weight matrices several times slower than leaf by leaf (its packed
        gradient buffer is a fresh allocation every step), while on 2000
        leaves of 1000 floats packing is faster for every method but SGD. On
        a GPU, packing a whole 196-leaf transformer halved Adam's step
        (``benchmarks/README.md``, ``python benchmarks/step_time.py``).
      share_kernels: cut the update into leaves at offsets the compiler sees as
        runtime values, so that the leaves of one shape share one compiled
        kernel. XLA:CPU compiles each distinct kernel on its own: on 2000
        leaves of 1000 floats, ``flat(adam)`` compiles about three times
        faster with ``True`` than with ``False``, while each step is somewhat
        slower, the offsets being copied at every step
        (``python benchmarks/xla_cpu_limits.py``). ``False`` pays off on runs
        of many thousands of steps. The numbers are the same either way.

    Returns:
      A transformation whose state is :class:`FlatState`
      (``state.to_tree(buffers)`` reads a buffer dict of the inner state, such as
      Adam's ``mu``, in the params' tree).

    Raises:
      TypeError: ``inner`` has no ``init`` / ``update``.
      ValueError: the gradient (or params) passed to ``update`` does not have the
        leaves of the params given to ``init`` (their number and shapes: the
        containers may differ, as Flax's ``Variable`` wrappers do); the inner
        transformation applies a mask or labels written for the params' tree.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> from gradtx.transforms.flat import flat
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2, jnp.bfloat16)}
      >>> tx = flat(gradtx.sgd(0.1, momentum=0.9))
      >>> state = tx.init(params)
      >>> {k: v.shape for k, v in state.inner_state[0].trace.items()}
      {'bfloat16': (2,), 'float32': (4,)}
      >>> grads = {"w": jnp.ones((2, 2)), "b": jnp.ones(2, jnp.bfloat16)}
      >>> updates, state = tx.update(grads, state)
      >>> updates["b"]
      Array([-0.100098, -0.100098], dtype=bfloat16)

    References:
      Optax's ``flatten`` ravels every leaf into one vector of a single promoted
      dtype; ``flat`` keeps one buffer per dtype.
    """
    if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "update", None))):
        raise TypeError(
            f"flat: inner must be a transformation with init and update, got "
            f"{type(inner).__name__}."
        )
    inner_update = accepts_extra_args(inner.update)

    if pack_below is not None and (
        isinstance(pack_below, bool) or not isinstance(pack_below, int) or pack_below < 1
    ):
        raise ValueError(f"flat: pack_below must be an integer >= 1 or None, got {pack_below!r}.")

    def init_fn(params: Params) -> FlatState:
        tree.check_inexact(params, "flat")
        layout = _layout(params, pack_below)
        buffers = _flatten(layout, [jnp.asarray(p) for p in jax.tree.leaves(params)])
        return _state_type(layout)(inner.init(buffers))

    def update_fn(
        updates: Updates, state: FlatState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, FlatState]:
        layout = state.layout
        grads, grads_def = _leaves(layout, updates, "updates")
        flat_params, params_def = None, grads_def
        if params is not None:
            param_leaves, params_def = _leaves(layout, params, "params")
            flat_params = _flatten(layout, param_leaves)
        if callable(extra_args.get("value_fn")):
            value_fn = extra_args["value_fn"]

            def flat_value_fn(buffers, *args, **kwargs):
                return value_fn(_unflatten(layout, buffers, None, params_def), *args, **kwargs)

            extra_args = {**extra_args, "value_fn": flat_value_fn}
        try:
            out, inner_state = inner_update(
                _flatten(layout, grads), state.inner_state, flat_params, **extra_args
            )
        except ValueError as error:
            if "tree" not in str(error).lower():
                raise
            raise _tree_error_hint(error) from error
        return (
            _unflatten(layout, out, grads, grads_def, share_kernels),
            type(state)(inner_state),
        )

    return GradientTransformation(init_fn, update_fn)


def _ravel_all(tree_: Any) -> jax.Array:
    """Every leaf raveled and concatenated into one vector (of the promoted dtype)."""
    leaves = jax.tree.leaves(tree_)
    if not leaves:
        return jnp.zeros([0], jnp.float32)
    return jnp.concatenate([jnp.ravel(jnp.asarray(x)) for x in leaves])


def _cut_like(like: Any, vector: jax.Array) -> Any:
    """``vector`` cut into leaves shaped (and typed) like those of ``like``."""
    leaves, treedef = jax.tree.flatten(like)
    if not leaves:
        return like
    bounds = np.cumsum([np.size(x) for x in leaves])[:-1]
    pieces = jnp.split(vector, bounds)
    return treedef.unflatten(
        [
            jnp.reshape(p, np.shape(x)).astype(jnp.result_type(x))
            for p, x in zip(pieces, leaves, strict=True)
        ]
    )


def flatten(inner: GradientTransformation) -> GradientTransformation:
    """Runs ``inner`` on one vector holding every leaf, Optax's ``flatten``.

    .. math::
        v = \\operatorname{concat}(\\operatorname{vec}(u_1), \\dots,
            \\operatorname{vec}(u_L)), \\qquad
        (v', s) \\leftarrow T(v, s), \\qquad
        u'_\\ell = \\operatorname{reshape}(v'_{[o_\\ell, o_{\\ell+1})}, \\text{shape}(u_\\ell))

    with ``T`` = ``inner`` and ``o_\\ell`` the offset of leaf ``\\ell``. All leaves
    go into a single vector (of their promoted dtype) and ``inner``'s state is
    built on it, so a per-leaf reduction in ``inner`` (a leaf norm, a trust
    ratio) is taken over the whole tree, exactly as in ``optax.flatten``; the
    params, when given, are flattened the same way. For many small leaves of
    several dtypes, :func:`flat` (one buffer per dtype, large leaves apart) is
    the faster choice.

    Args:
      inner: the transformation to run on the vector.

    Returns:
      A transformation whose state is ``inner``'s state on the vector.

    Raises:
      TypeError: ``inner`` is not a transformation; an integer or boolean param.
      ValueError: ``update`` given params whose tree or leaf shapes differ from
        the updates' (Optax does not check).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.flatten(gradtx.clip_by_leaf_norm(1.0))  # one "leaf": the tree
      >>> params = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
      >>> tx.update(params, tx.init(params))[0]
      {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}

    Note:
      Each output leaf has its incoming update's dtype; Optax returns every leaf
      in the promoted dtype of the vector (the same for a single-dtype tree).
    """
    if not (hasattr(inner, "init") and hasattr(inner, "update")):
        raise TypeError(f"flatten: inner must be a transformation, got {type(inner).__name__}.")
    inner_update = accepts_extra_args(inner.update)

    def init_fn(params):
        # Integer leaves would be promoted into the float vector and stepped.
        tree.check_inexact(params, "flatten")
        return inner.init(_ravel_all(params))

    def update_fn(updates, state, params=None, **extra_args):
        if params is not None:
            tree.check_structure(params, updates, owner="flatten")
            params = _ravel_all(params)
        flat_updates, state = inner_update(_ravel_all(updates), state, params, **extra_args)
        return _cut_like(updates, flat_updates), state

    return GradientTransformation(init_fn, update_fn)
