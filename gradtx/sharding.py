"""Shardings of an optimizer state, read from the params' shardings without allocating.

Under a :class:`jax.sharding.Mesh` the state of an optimizer should live where
its parameters live: the moments ``mu``, ``nu`` of a parameter split over eight
devices are split the same way, and scalars (step counts, a PRNG key) are
replicated. :func:`state_shardings` computes that assignment from the shapes of
``tx.init(params)`` alone (:func:`jax.eval_shape`), so it can be passed as
``out_shardings`` to a jitted ``init`` (the state is then created in place,
never gathered on one device) and as the state's in/out shardings of a jitted
training step. :func:`zero1_state_shardings` instead splits the state across the
data-parallel axis while the params stay replicated (ZeRO stage 1).

Which state leaves mirror a parameter is read from the tree, not from names: a
sub-tree of the state *mirrors the params* when it has the params' tree
structure (``None`` leaves, as :func:`gradtx.masked` leaves them, count as
leaves), and each of its leaves that has the shape of its parameter (or that
shape with leading stack dimensions, as L-BFGS's memory) takes that
parameter's placement. Everything else (counters, keys, hyperparameters, the
factored or flattened buffers of a state that does not mirror the params) is
replicated. The dtype does not matter: a bfloat16 ``mu`` or an int8 sign buffer
of a float32 parameter is sharded like it. A block-quantized leaf
(:class:`gradtx.QuantizedArray`, see :func:`gradtx.quantize_state`) stands for
its parameter: its codes and its per-block scales are split along the
parameter's leading axes, and rank-1 scales (one vector per axis) each along
its own axis. Per-parameter statistics of another shape (SOAP's and Shampoo's
Kronecker factors, Adam-mini's block moments) are split as a rule registered
for their state's field says (:func:`register_statistics`).

References:
  Rajbhandari, Rasley, Ruwase & He (2020), ZeRO: Memory Optimizations Toward
  Training Trillion Parameter Models, Sec. 5.1 (P_os, optimizer-state partitioning).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

from gradtx import tree
from gradtx.base import GradientTransformation, OptState, Params

_NOT_MIRRORED = -1


def _is_none(x: Any) -> bool:
    return x is None


def _is_quantized(x: Any) -> bool:
    from gradtx.transforms.quantized_state import QuantizedArray  # imports this module

    return isinstance(x, QuantizedArray)


def _is_none_or_quantized(x: Any) -> bool:
    return x is None or _is_quantized(x)


# ---------------------------------------------------------------------- mirrors


def _ends_with(shape: tuple[int, ...], suffix: tuple[int, ...]) -> bool:
    return len(shape) >= len(suffix) and shape[len(shape) - len(suffix) :] == suffix


def mirror_indices(state: OptState, params: Params) -> Any:
    """For each state leaf, the index of the parameter it mirrors, or -1.

    A sub-tree of ``state`` mirrors the params when its tree structure equals
    the params' (``None`` counted as a leaf on both sides, so a masked-out
    parameter still lines up). A leaf of such a sub-tree mirrors the parameter
    at the same position when its shape is the parameter's, or the parameter's
    preceded by leading dimensions (a stack of copies, as the ``m`` past
    steps of L-BFGS, shape ``(m, *param.shape)``); any other leaf mirrors nothing.
    A :class:`gradtx.QuantizedArray` counts as one leaf and mirrors its parameter.

    Args:
      state: an optimizer state or its shapes (``jax.eval_shape(tx.init, params)``).
      params: the params the state was built from, or their shapes.

    Returns:
      A tree with the structure of ``state`` (a :class:`gradtx.QuantizedArray`
      counted as one leaf) whose leaves are ints: the index of the mirrored
      parameter in ``jax.tree.leaves(params, is_leaf=lambda x: x is None)``,
      or -1.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> from gradtx.sharding import mirror_indices
      >>> params = {"b": jnp.zeros(3), "w": jnp.zeros((2, 3))}
      >>> mirror_indices(gradtx.adam(0.1).init(params), params)[0]
      ScaleByAdamState(count=-1, mu={'b': 0, 'w': 1}, nu={'b': 0, 'w': 1})
    """
    param_leaves, params_def = jax.tree.flatten(params, is_leaf=_is_none)

    def mirrors(node: Any) -> bool:
        structure = jax.tree.structure(node, is_leaf=_is_none_or_quantized)
        return node is not None and structure == params_def

    def index(position: int, leaf: Any) -> int | None:
        if leaf is None:
            return None
        param = param_leaves[position]
        if param is not None and _is_quantized(leaf):
            return position
        if param is None or not _ends_with(jnp.shape(leaf), jnp.shape(param)):
            return _NOT_MIRRORED
        return position

    def indices(node: Any) -> Any:
        if not mirrors(node):
            return _NOT_MIRRORED
        leaves = params_def.flatten_up_to(node)
        return params_def.unflatten([index(i, leaf) for i, leaf in enumerate(leaves)])

    return jax.tree.map(indices, state, is_leaf=mirrors)


# ---------------------------------------------------------------------- quantized leaves


def _axis_devices(mesh: Mesh, entry: Any) -> int:
    names = (entry,) if isinstance(entry, str) else tuple(entry)
    return math.prod(mesh.shape[n] for n in names)


def _entries(spec: PartitionSpec, ndim: int) -> tuple[Any, ...]:
    """``spec``'s entry for each of ``ndim`` axes (``None``: the axis is whole)."""
    return tuple(spec) + (None,) * (ndim - len(tuple(spec)))


def _fits(mesh: Mesh, entry: Any, length: int) -> Any:
    """``entry`` if its devices divide ``length`` (or it is ``None``), else ``None``."""
    return entry if entry is None or length % _axis_devices(mesh, entry) == 0 else None


def _quantized_placement(mesh: Mesh, spec: PartitionSpec, ndim: int, leaf: Any) -> Any:
    """The shardings of a :class:`gradtx.QuantizedArray` of a parameter placed by ``spec``.

    The codes take the parameter's spec (the packed last axis of 4-bit codes is
    whole when its length is not divisible); the scales, shape
    ``param.shape[:k] + (n_blocks,)``, take the spec of the ``k`` leading axes,
    and the blocks axis takes axis ``k``'s entry when no later axis is split
    and the device count divides the number of blocks (each device then holds
    the scales of its own elements). Rank-1 scales (a tuple, ``scales[a]`` of
    shape ``(param.shape[a],)``) take the spec's entry for axis ``a``: the row
    scales split as the rows, the column scales as the columns.
    """
    entries = _entries(spec, ndim)
    fits = lambda entry, length: _fits(mesh, entry, length)  # noqa: E731
    codes = entries[:-1] + (fits(entries[-1], leaf.codes.shape[-1]),) if ndim else ()
    if isinstance(leaf.scales, tuple):  # rank-1: scales[a] indexed like the parameter's axis a
        return type(leaf)(
            NamedSharding(mesh, PartitionSpec(*codes)),
            tuple(
                NamedSharding(mesh, PartitionSpec(fits(entry, scale.shape[0])))
                for entry, scale in zip(entries, leaf.scales, strict=True)
            ),
        )
    k = leaf.scales.ndim - 1
    later_whole = all(e is None for e in entries[k + 1 :])
    blocks = fits(entries[k], leaf.scales.shape[-1]) if ndim and later_whole else None
    return type(leaf)(
        NamedSharding(mesh, PartitionSpec(*codes)),
        NamedSharding(mesh, PartitionSpec(*entries[:k], blocks)),
    )


# ---------------------------------------------------------------------- statistics of a parameter

StatisticsRule = Callable[[tuple[int, ...], tuple[Any, ...], Any], Any]
"""``rule(param_shape, entries, node) -> each array's entries``: see :func:`register_statistics`."""

_STATISTICS: dict[type, dict[str, StatisticsRule]] = {}


def register_statistics(state_type: type, field: str, rule: StatisticsRule) -> None:
    """Says how the per-parameter statistics in ``field`` of ``state_type`` states are split.

    Some optimizers keep, for each parameter, arrays that are not shaped like
    it: SOAP's and Shampoo's Kronecker factors ``(d, d)``, Adam-mini's one
    second moment per block. They mirror no parameter (:func:`mirror_indices`),
    so they would be replicated. Registered here, the field is read with the
    params' tree structure as a prefix, and the node under each parameter (an
    array, a tuple of arrays and ``None``) is placed by ``rule(param_shape,
    entries, node)``: it gets the parameter's shape, the entry of the
    parameter's :class:`PartitionSpec` for each of its axes (``None`` for a
    whole axis, else a mesh axis name or a tuple of them) and the node (its
    arrays or their :class:`jax.ShapeDtypeStruct`), and returns the node with
    each array replaced by a tuple of entries, one per axis of that array. An
    entry whose devices do not divide the array's length on that axis is
    dropped (the axis kept whole).

    :func:`state_shardings` applies the rule, and an optimizer's eager
    ``init`` places the node with :func:`place_statistics`.
    :func:`zero1_state_shardings`, whose params are whole, splits each array
    of the node as it splits a leaf that mirrors a parameter, along its first
    dimension that the device count divides (:func:`split_spec`). A field
    that does not have the params' structure (the state of
    :func:`gradtx.flat`), a parameter without a :class:`NamedSharding` and a
    quantized leaf (:func:`gradtx.quantize_state`) keep the placement they
    have without the rule.

    Args:
      state_type: the state's class (a ``NamedTuple``).
      field: the name of the field holding one node per parameter.
      rule: ``rule(param_shape, entries, node)`` as above; it reads only shapes.
    """
    _STATISTICS.setdefault(state_type, {})[field] = rule


def _statistics_placement(
    rule: StatisticsRule, mesh: Mesh, spec: PartitionSpec, shape: tuple[int, ...], node: Any
) -> Any:
    """The :class:`NamedSharding` of each array of ``node``, as ``rule`` says."""
    wanted = rule(tuple(shape), _entries(spec, len(shape)), node)

    def place(leaf: Any, entries: tuple[Any, ...]) -> NamedSharding:
        fitted = (_fits(mesh, e, n) for e, n in zip(entries, leaf.shape, strict=True))
        return NamedSharding(mesh, PartitionSpec(*fitted))

    return jax.tree.map(place, node, wanted)


def place_statistics(param: Any, node: Any, rule: StatisticsRule) -> Any:
    """Puts the statistics ``node`` of a placed ``param`` where :func:`state_shardings` would.

    For an optimizer's ``init`` called eagerly on placed params: its
    statistics are then created on the parameter's mesh, split by ``rule``
    (see :func:`register_statistics`), as ``jnp.zeros_like(param)`` is split
    like ``param``. Under ``jit`` (``param`` a tracer) or for a ``param``
    without a :class:`NamedSharding`, ``node`` is returned as it is.

    Args:
      param: the parameter.
      node: its statistics: an array, or a tuple of arrays and ``None``.
      rule: the rule registered for the field that holds ``node``.

    Returns:
      ``node``, each array placed with the :class:`NamedSharding` the rule gives.
    """
    sharding = getattr(param, "sharding", None)
    if isinstance(param, jax.core.Tracer) or not isinstance(sharding, NamedSharding):
        return node
    placement = _statistics_placement(rule, sharding.mesh, sharding.spec, jnp.shape(param), node)
    return jax.device_put(node, placement)


def _with_statistics(
    placed: Any, shapes: Any, params: Params, place: Callable[[int, StatisticsRule, Any], Any]
) -> Any:
    """``placed`` with each registered field's node of parameter ``i`` placed by
    ``place(i, rule, node)`` (``None``: as placed)."""
    params_def = jax.tree.structure(params, is_leaf=_is_none)

    def registered(node: Any) -> bool:
        return type(node) in _STATISTICS

    def visit(placed_node: Any, shape_node: Any) -> Any:
        if not registered(shape_node):
            return placed_node
        fields = {}
        for field, rule in _STATISTICS[type(shape_node)].items():
            try:
                nodes = params_def.flatten_up_to(getattr(shape_node, field))
            except (ValueError, TypeError):
                continue  # not one node per parameter
            olds = params_def.flatten_up_to(getattr(placed_node, field))
            news = [
                None if node is None or _is_quantized(node) else place(i, rule, node)
                for i, node in enumerate(nodes)
            ]
            fields[field] = params_def.unflatten(
                [old if new is None else new for old, new in zip(olds, news, strict=True)]
            )
        return placed_node._replace(**fields)

    return jax.tree.map(visit, placed, shapes, is_leaf=registered)


# ---------------------------------------------------------------------- placements


def _param_ndims(params: Params) -> list[int | None]:
    """The rank of each parameter, flattened (``None`` leaves included)."""
    return [None if p is None else jnp.ndim(p) for p in jax.tree.leaves(params, is_leaf=_is_none)]


def _param_shapes(params: Params) -> list[tuple[int, ...] | None]:
    """The shape of each parameter, flattened (``None`` leaves included)."""
    return [None if p is None else jnp.shape(p) for p in jax.tree.leaves(params, is_leaf=_is_none)]


def _param_shardings(params: Params, param_shardings: Any) -> list[Any]:
    """The sharding of each parameter, flattened (``None`` leaves included)."""
    params_def = jax.tree.structure(params, is_leaf=_is_none)
    if isinstance(param_shardings, Sharding):
        return [param_shardings] * params_def.num_leaves
    if param_shardings is not None:
        try:
            return params_def.flatten_up_to(param_shardings)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "state_shardings: param_shardings must have the tree structure of the params "
                f"(or be one Sharding for all of them): {error}"
            ) from None
    leaves, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_none)
    unplaced = [jax.tree_util.keystr(k) for k, p in leaves if p is not None and not _placed(p)]
    if unplaced:
        raise ValueError(
            f"state_shardings: the params {tree.name_paths(unplaced)} carry no sharding: "
            "pass param_shardings."
        )
    return [None if p is None else p.sharding for _, p in leaves]


def _placed(param: Any) -> bool:
    return isinstance(getattr(param, "sharding", None), Sharding)


def _replicated_like(shardings: Sequence[Any]) -> Sharding:
    """A fully replicated sharding on the devices of ``shardings``."""
    named = [s for s in shardings if isinstance(s, NamedSharding)]
    if named:
        return NamedSharding(named[0].mesh, PartitionSpec())
    devices = {d for s in shardings if s is not None for d in s.device_set}
    if len(devices) == 1:
        return SingleDeviceSharding(devices.pop())
    raise ValueError(
        "state_shardings: cannot tell how to replicate the state's scalars from "
        f"param shardings {sorted({type(s).__name__ for s in shardings})}: use "
        "NamedShardings or pass replicated=NamedSharding(mesh, PartitionSpec())."
    )


def state_shardings(
    tx: GradientTransformation,
    params: Params,
    param_shardings: Any = None,
    *,
    replicated: Sharding | None = None,
) -> Any:
    """The sharding of every leaf of ``tx.init(params)``, computed without allocating.

    A state leaf that mirrors a parameter (see :func:`mirror_indices`: the
    moments, traces, slow weights, step sizes, in any dtype) gets that
    parameter's sharding, and a stack of copies ``(m, *param.shape)`` the same
    sharding with the stack dimension whole; the statistics of a registered
    field (:func:`register_statistics`: SOAP's and Shampoo's factors,
    Adam-mini's block moments) are split as its rule says; every other leaf
    (step counts, keys, hyperparameters) gets ``replicated``. Only the shapes
    of the state are computed (:func:`jax.eval_shape`), so ``params`` may be
    abstract.

    Args:
      tx: the optimizer.
      params: the params (arrays or :class:`jax.ShapeDtypeStruct`).
      param_shardings: the params' shardings: a tree with the params' structure,
        or one :class:`jax.sharding.Sharding` for all; ``None`` reads
        ``param.sharding`` from each parameter (placed arrays, or
        ``ShapeDtypeStruct`` built with a ``sharding``).
      replicated: the sharding of the leaves that mirror no parameter; ``None``
        replicates them over the mesh of the first :class:`NamedSharding` among
        the params' (or puts them on the params' single device).

    Returns:
      A tree of shardings with the structure of the state: pass it as
      ``out_shardings`` of ``jax.jit(tx.init)`` and as the state's entry of a
      training step's ``in_shardings`` / ``out_shardings``.

    Raises:
      ValueError: ``param_shardings`` does not have the params' structure; it
        is ``None`` and a parameter carries no sharding; or ``replicated`` is
        needed (no NamedSharding, several devices) and not given.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      >>> from gradtx.sharding import state_shardings
      >>> mesh = Mesh(jax.devices()[:1], ("data",))
      >>> params = {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}
      >>> shardings = {"w": NamedSharding(mesh, P("data")), "b": NamedSharding(mesh, P())}
      >>> tx = gradtx.adam(1e-3)
      >>> out = state_shardings(tx, params, shardings)
      >>> out[0].mu["w"].spec, out[0].count.spec
      (P('data',), P())
      >>> state = jax.jit(tx.init, out_shardings=out)(params)
      >>> state[0].nu["w"].sharding == shardings["w"]
      True
    """
    flat_shardings = _param_shardings(params, param_shardings)
    ndims = _param_ndims(params)
    param_shapes = _param_shapes(params)
    shapes = jax.eval_shape(tx.init, params)

    def elsewhere() -> Sharding:
        return replicated if replicated is not None else _replicated_like(flat_shardings)

    def placement(i: int, leaf: Any) -> Any:
        if i == _NOT_MIRRORED:
            return elsewhere()
        if _is_quantized(leaf):
            return _quantized_sharding(flat_shardings[i], ndims[i], leaf, elsewhere)
        return _stacked(flat_shardings[i], leaf.ndim - ndims[i], elsewhere)

    def statistics(i: int, rule: StatisticsRule, node: Any) -> Any:
        sharding = flat_shardings[i]
        if not isinstance(sharding, NamedSharding):
            return None
        return _statistics_placement(rule, sharding.mesh, sharding.spec, param_shapes[i], node)

    placed = jax.tree.map(placement, mirror_indices(shapes, params), shapes)
    return _with_statistics(placed, shapes, params, statistics)


def _quantized_sharding(
    sharding: Sharding, ndim: int, leaf: Any, elsewhere: Callable[[], Sharding]
) -> Any:
    """A quantized leaf placed like its parameter (see :func:`_quantized_placement`)."""
    if isinstance(sharding, NamedSharding):
        return _quantized_placement(sharding.mesh, sharding.spec, ndim, leaf)
    if len(sharding.device_set) == 1:
        return type(leaf)(sharding, jax.tree.map(lambda _: sharding, leaf.scales))
    return type(leaf)(elsewhere(), jax.tree.map(lambda _: elsewhere(), leaf.scales))


def _stacked(sharding: Sharding, extra: int, elsewhere: Callable[[], Sharding]) -> Sharding:
    """The sharding of ``extra`` leading dimensions stacked on a parameter: not split.

    Only a :class:`NamedSharding` can say so (``P(None, ..., *spec)``); a stack
    placed with another kind of sharding goes ``elsewhere()`` (replicated).
    """
    if extra == 0:
        return sharding
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec(*([None] * extra), *sharding.spec))
    return elsewhere()


# ---------------------------------------------------------------------- ZeRO-1


def _axis_size(mesh: Mesh, axis_name: str | tuple[str, ...]) -> int:
    names = (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)
    unknown = [n for n in names if n not in mesh.shape]
    if not names or unknown:
        raise ValueError(
            f"zero1_state_shardings: axis_name must name axes of the mesh "
            f"{tuple(mesh.axis_names)}, got {axis_name!r}."
        )
    size = 1
    for n in names:
        size *= mesh.shape[n]
    return size


def split_spec(
    shape: Sequence[int], axis_name: str | tuple[str, ...], axis_size: int, *, skip: int = 0
) -> PartitionSpec:
    """Splits the first dimension of ``shape`` divisible by ``axis_size`` over ``axis_name``.

    Args:
      shape: the array's shape.
      axis_name: a mesh axis name, or a tuple of them (their devices together).
      axis_size: the number of devices along ``axis_name``.
      skip: the number of leading dimensions never to split (the stack
        dimensions of a state leaf, see :func:`mirror_indices`).

    Returns:
      ``PartitionSpec(None, ..., axis_name)`` ending at the first dimension
      after the ``skip`` first of nonzero size that ``axis_size`` divides;
      ``PartitionSpec()`` (replicated) when there is none.

    Examples:
      >>> from gradtx.sharding import split_spec
      >>> split_spec((3, 16), "data", 8), split_spec((3,), "data", 8)
      (P(None, 'data'), P())
      >>> split_spec((8, 3, 16), "data", 8, skip=1)
      P(None, None, 'data')
    """
    for dim in range(skip, len(shape)):
        if shape[dim] > 0 and shape[dim] % axis_size == 0:
            return PartitionSpec(*([None] * dim), axis_name)
    return PartitionSpec()


def zero1_state_shardings(
    tx: GradientTransformation, params: Params, mesh: Mesh, axis_name: str | tuple[str, ...]
) -> Any:
    """Optimizer-state shardings that split the state across a data-parallel axis (ZeRO-1).

    The params stay replicated; each state leaf that mirrors a parameter (see
    :func:`mirror_indices`) is split along the first of the parameter's
    dimensions divisible by the number of devices on ``axis_name``
    (:func:`split_spec`), so with ``n`` devices each holds ``1/n`` of it; a leaf
    with no such dimension, and every leaf mirroring no parameter, is replicated,
    except the statistics of a registered field (:func:`register_statistics`),
    each split along its own first divisible dimension. A quantized leaf
    (:func:`gradtx.quantize_state`) has its codes and scales split as its
    parameter would be. In a jitted step taking the state with these
    shardings, XLA computes each device's slice of the update and
    all-gathers the updates for the replicated params (Rajbhandari et al.
    2020, Sec. 5.1, P_os).

    Args:
      tx: the optimizer.
      params: the params (arrays or :class:`jax.ShapeDtypeStruct`).
      mesh: the device mesh.
      axis_name: the data-parallel axis of ``mesh`` (or a tuple of its axes).

    Returns:
      A tree of :class:`NamedSharding` with the structure of ``tx.init(params)``.

    Raises:
      ValueError: ``axis_name`` is not an axis of ``mesh``.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> from jax.sharding import Mesh
      >>> from gradtx.sharding import zero1_state_shardings
      >>> mesh = Mesh(jax.devices()[:1], ("data",))  # on 8 devices, "data" of size 8
      >>> params = {"w": jnp.zeros((3, 8)), "b": jnp.zeros(3)}
      >>> out = zero1_state_shardings(gradtx.adam(1e-3), params, mesh, "data")
      >>> out[0].mu["w"].spec, out[0].count.spec  # 8 devices: P(None, 'data') for w
      (P('data',), P())

    References:
      Rajbhandari, Rasley, Ruwase & He (2020), ZeRO: Memory Optimizations
      Toward Training Trillion Parameter Models, Sec. 5.1.
    """
    size = _axis_size(mesh, axis_name)
    ndims = _param_ndims(params)
    shapes = jax.eval_shape(tx.init, params)
    param_shapes = _param_shapes(params)

    def placement(i: int, leaf: Any) -> Any:
        if i == _NOT_MIRRORED:
            return NamedSharding(mesh, PartitionSpec())
        if _is_quantized(leaf):
            spec = split_spec(param_shapes[i], axis_name, size)
            return _quantized_placement(mesh, spec, ndims[i], leaf)
        skip = leaf.ndim - ndims[i]
        return NamedSharding(mesh, split_spec(leaf.shape, axis_name, size, skip=skip))

    def statistics(i: int, rule: StatisticsRule, node: Any) -> Any:
        del i, rule  # the params are whole: a statistic is split as its own shape allows
        split = lambda leaf: NamedSharding(mesh, split_spec(leaf.shape, axis_name, size))  # noqa: E731
        return jax.tree.map(split, node)

    placed = jax.tree.map(placement, mirror_indices(shapes, params), shapes)
    return _with_statistics(placed, shapes, params, statistics)
