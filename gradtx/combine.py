"""Composition: ``chain``, ``named_chain``, ``masked`` and ``partition``.

Members may be gradtx or Optax transformations (anything with ``init`` and
``update``). Extra arguments reach each member that accepts them: all of them for
an ``update`` with ``**kwargs``, the ones it names otherwise, none for a plain
Optax ``update(updates, state, params=None)``.

The other direction has one catch: ``optax.chain`` passes extra arguments only to
members of its own ``GradientTransformationExtraArgs`` type and silently drops
them for anything else, gradtx blocks included. When a gradtx block inside an
``optax.chain`` needs ``value`` or ``value_fn``, wrap it:
``optax.GradientTransformationExtraArgs(*gradtx_block)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from gradtx import tree
from gradtx._tree_utils import _is_params_slot
from gradtx.base import GradientTransformation, GradientTransformationExtraArgs, OptState, Params

_POSITIONAL = ("updates", "state", "params")


def accepts_extra_args(update: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps ``update`` so that it only receives the extra args it declares.

    Shared by every wrapper that calls an inner transformation (chain, masked,
    lookahead, apply_if_finite, accumulate, inject_hyperparams, flat).
    """
    try:
        signature = inspect.signature(update)
    except (TypeError, ValueError):
        return update
    parameters = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return update
    named = {
        p.name
        for p in parameters[len(_POSITIONAL) :]
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }

    def filtered(updates, state, params=None, **extra_args):
        kept = {k: v for k, v in extra_args.items() if k in named}
        return update(updates, state, params, **kept)

    return filtered


def accepts_named_kwargs(fn: Callable[..., Any], positional: int) -> Callable[..., Any]:
    """Wraps ``fn(*args, **kwargs)`` so that it only receives the keyword arguments it
    declares after its first ``positional`` parameters (all of them with ``**kwargs``).

    The rule of :func:`accepts_extra_args`, for the functions that wrappers call with
    the extra args besides an update: a condition of the step count
    (``conditionally_mask``), a stateful schedule (``inject_stateful_hyperparams``).
    """
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return fn
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return fn
    named = {
        p.name
        for p in parameters[positional:]
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }

    def filtered(*args, **kwargs):
        return fn(*args, **{k: v for k, v in kwargs.items() if k in named})

    return filtered


def check_members(owner: str, transforms: tuple[Any, ...]) -> None:
    for i, tx in enumerate(transforms):
        if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
            raise TypeError(
                f"{owner}: argument {i} must be a transformation with init and update, "
                f"got {type(tx).__name__}."
            )


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Applies transformations one after the other; the state is a tuple of theirs.

    ``chain(a, b).update(g, ...)`` feeds ``g`` to ``a`` and ``a``'s output to ``b``.
    Every named optimizer in gradtx is such a chain.

    Args:
      *transforms: gradtx or Optax transformations, in the order they apply.

    Returns:
      A :class:`GradientTransformationExtraArgs` (as Optax's ``chain`` returns)
      whose state is ``tuple(member states)``.

    Raises:
      TypeError: a member has no ``init`` / ``update``.
      ValueError: the state passed to ``update`` has the wrong number of members.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.chain(gradtx.scale(2.0), gradtx.scale_by_learning_rate(0.1))
      >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
      Array([-0.2, -0.2], dtype=float32)
    """
    check_members("chain", transforms)
    updaters = tuple(accepts_extra_args(t.update) for t in transforms)

    def init_fn(params):
        return tuple(t.init(params) for t in transforms)

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            got = len(state) if isinstance(state, tuple) else type(state).__name__
            raise ValueError(
                f"chain: expected a state tuple of {len(transforms)} members "
                f"(from init), got {got}."
            )
        new_state = []
        for member_state, update in zip(state, updaters, strict=True):
            updates, member_state = update(updates, member_state, params, **extra_args)
            new_state.append(member_state)
        return updates, tuple(new_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def named_chain(*transforms: tuple[str, GradientTransformation]) -> GradientTransformation:
    """Like :func:`chain`, with the state a dict keyed by the members' names.

    Named states are easy to find in a checkpoint or a log
    (``state["adam"].mu``).

    Args:
      *transforms: ``(name, transformation)`` pairs with distinct names.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.named_chain(("adam", gradtx.scale_by_adam()), ("lr", gradtx.scale(-0.1)))
      >>> sorted(tx.init(jnp.zeros(2)))
      ['adam', 'lr']
    """
    names = [name for name, _ in transforms]
    if len(set(names)) != len(names):
        raise ValueError(f"named_chain: names must be distinct, got {names}.")
    check_members("named_chain", tuple(tx for _, tx in transforms))
    updaters = tuple((name, accepts_extra_args(tx.update)) for name, tx in transforms)

    def init_fn(params):
        return {name: tx.init(params) for name, tx in transforms}

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, dict) or sorted(state) != sorted(names):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"named_chain: expected a state dict with keys {names}, got {got}.")
        new_state = {}
        for name, update in updaters:
            updates, new_state[name] = update(updates, state[name], params, **extra_args)
        return updates, new_state

    return GradientTransformationExtraArgs(init_fn, update_fn)


# ---------------------------------------------------------------------- masks
# A leaf (or subtree) that a mask leaves out is replaced by ``None``, an empty
# subtree for JAX: the inner transformation's ``init`` and ``update`` see a tree of
# the params' shape in which those leaves simply are not there, so they hold no
# state for them and pay nothing for them, whatever the inner is (a gradtx block, a
# chain, an Optax transformation). The outputs are merged back with the mask.

Mask = Any | Callable[[Params], Any]
"""A pytree of bools shaped like the params (True = apply), or a function of the
params that returns one."""


def is_function(mask: Any) -> bool:
    """Whether a mask (or labels) argument is a function to call, not a tree to read.

    A pytree with leaves is read as a tree even when it is callable: an Equinox
    module of bools defines ``__call__`` but is a mask, not a function of the
    params. Only a callable that is a leaf itself (a plain function, a lambda, a
    ``functools.partial``) or a pytree with no leaves is called.

    >>> is_function(lambda params: params), is_function({"w": True})
    (True, False)
    """
    if not callable(mask):
        return False
    leaves = jax.tree.leaves(mask)
    return not leaves or (len(leaves) == 1 and leaves[0] is mask)


def resolve_mask(mask: Mask | None, params: Params) -> Any:
    """The mask tree for ``params``: all-True for ``None``, called if a function
    (see :func:`is_function`), else the tree itself."""
    if mask is None:
        return jax.tree.map(lambda _: True, params)
    return mask(params) if is_function(mask) else mask


def check_elementwise_mask(owner: str, mask: Any) -> None:
    """Raises TypeError unless ``mask`` is None, a function, or a tree whose every leaf
    is a bool or an array of bools (an element-wise mask, as the penalties take)."""
    if mask is None or is_function(mask):
        return
    for path, leaf in jax.tree_util.tree_flatten_with_path(mask)[0]:
        dtype = getattr(leaf, "dtype", None)
        if isinstance(leaf, (bool, np.bool_)) or (dtype is not None and dtype == np.bool_):
            continue
        where = jax.tree_util.keystr(path) or "the root"
        raise TypeError(
            f"{owner}: mask must be None, a function of the params, or a pytree of bools "
            f"(or bool arrays) shaped like the params, got {leaf!r} "
            f"({type(leaf).__name__}) at {where}."
        )


def _path_keys(path: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(key) for key in path)


def _mismatch(owner: str, prefix: Any, full: Any, kind: str, what: str) -> ValueError:
    """The error for a mask/labels tree that is not a prefix of the ``what`` tree."""
    is_none = lambda x: x is None  # None leaves have paths too
    prefix_paths = [_path_keys(p) for p, _ in jax.tree_util.tree_flatten_with_path(prefix)[0]]
    full_paths = [
        _path_keys(p) for p, _ in jax.tree_util.tree_flatten_with_path(full, is_leaf=is_none)[0]
    ]
    absent = ["".join(q) for q in prefix_paths if not any(p[: len(q)] == q for p in full_paths)]
    uncovered = ["".join(p) for p in full_paths if not any(p[: len(q)] == q for q in prefix_paths)]
    details = []
    if absent:
        details.append(f"in the {kind} but not in the {what}: {tree.name_paths(absent)}")
    if uncovered:
        details.append(f"in the {what} but not in the {kind}: {tree.name_paths(uncovered)}")
    if not details:
        details.append(
            f"{kind} structure {jax.tree.structure(prefix)}, "
            f"{what} structure {jax.tree.structure(full, is_leaf=is_none)}"
        )
    return ValueError(
        f"{owner}: the {kind} must have the tree structure of the {what} (or be a prefix "
        f"of it): {'; '.join(details)}."
    )


def _mask_leaf(owner: str, path: Any, leaf: Any) -> bool:
    where = jax.tree_util.keystr(path) or "the root"
    if isinstance(leaf, (bool, np.bool_)):
        return bool(leaf)
    if isinstance(leaf, jax.core.Tracer):
        raise TypeError(
            f"{owner}: the mask must be known when the step is traced, got a traced value at "
            f"{where}: build it from the tree's structure, names and shapes, not its values."
        )
    shape, dtype = np.shape(leaf), getattr(leaf, "dtype", None)
    if shape == () and dtype is not None and np.dtype(dtype) == np.bool_:
        return bool(leaf)
    shown = f"an array of shape {shape}" if shape else repr(leaf)
    raise TypeError(
        f"{owner}: every mask leaf must be a bool (one per parameter leaf or subtree), "
        f"got {shown} at {where}."
    )


def _bool_mask(owner: str, mask: Any) -> Any:
    """``mask`` with every leaf checked and turned into a Python bool."""
    return jax.tree_util.tree_map_with_path(lambda p, m: _mask_leaf(owner, p, m), mask)


def _hide(owner: str, keep: Any, tree: Any, what: str, kind: str = "mask") -> Any:
    """``tree`` with the leaves (or subtrees) where ``keep`` is False set to None."""
    try:
        return jax.tree.map(lambda k, x: x if k else None, keep, tree)
    except ValueError as error:
        raise _mismatch(owner, keep, tree, kind, what) from error


def _merge(keep: Any, inner: Any, outer: Any) -> Any:
    """``inner`` where ``keep`` is True, ``outer`` elsewhere."""
    return jax.tree.map(lambda k, i, o: i if k else o, keep, inner, outer)


def _hide_extra_args(owner, keep, updates, extra_args, enabled):
    """Masks the extra args shaped like the updates (``mask_compatible_extra_args``)."""
    if not enabled:
        return extra_args
    structure = jax.tree.structure(updates)
    return {
        name: _hide(owner, keep, value, name) if jax.tree.structure(value) == structure else value
        for name, value in extra_args.items()
    }


class MaskedNode(NamedTuple):
    """An empty subtree that stands for a masked-out leaf (Optax's name and class).

    A ``NamedTuple`` with no fields: JAX sees a node with no children, so
    ``jax.tree.map`` and every gradtx block pass over it, and two trees with
    ``MaskedNode()`` at the same places have the same structure. ``optax.masked``
    puts one where its mask is False; gradtx's :func:`masked` and
    :func:`partition` put ``None`` there instead (which the sharding helpers and
    ``apply_updates`` read as "no parameter here"), and accept trees that hold
    ``MaskedNode()`` as they accept any other empty subtree. Code that tests
    ``isinstance(x, MaskedNode)`` (an ``is_leaf`` for Optax's masked states) keeps
    working with this class.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> params = {"w": jnp.ones(2), "frozen": gradtx.MaskedNode()}
      >>> jax.tree.leaves(params)
      [Array([1., 1.], dtype=float32)]
      >>> tx = gradtx.sgd(0.5)
      >>> tx.update(params, tx.init(params))[0]
      {'frozen': MaskedNode(), 'w': Array([-0.5, -0.5], dtype=float32)}
    """


class MaskedState(NamedTuple):
    """State of :func:`masked`."""

    # The inner transformation's state, built on the params with every masked-out
    # leaf set to None (it holds nothing for those leaves).
    inner_state: OptState


def masked(
    inner: GradientTransformation,
    mask: Mask,
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformation:
    """Applies ``inner`` to the leaves where ``mask`` is True; passes the others through.

    Masked-out leaves come back unchanged and ``inner`` holds no state for them: it
    is initialised and updated on the tree with those leaves replaced by ``None``
    (an empty subtree for JAX), so any transformation works as ``inner``: a gradtx
    block, a chain, an Optax transformation. Same semantics and arguments as
    ``optax.masked``.

    Args:
      inner: the transformation to apply to the selected leaves.
      mask: a pytree of bools with the params' structure, or a prefix of it (one
        bool for a whole subtree), ``True`` where ``inner`` applies; or a function
        returning one. The function is called with the params in ``init`` and with
        the updates in ``update`` (as Optax does), so it must depend on the tree's
        structure, names and shapes only; each mask leaf is a Python or numpy bool,
        known when the step is traced. A pytree with leaves is read as a tree even
        when it is callable (an Equinox module of bools): only a plain function
        is called (see :func:`is_function`).
      mask_compatible_extra_args: also mask the extra arguments of ``update`` that
        have the updates' tree structure (per-parameter tags, for example).

    Returns:
      A transformation whose state is :class:`MaskedState`.

    Raises:
      TypeError: ``inner`` is not a transformation; ``mask`` is None or has a leaf
        that is not a bool (an element-wise array mask, a traced value).
      ValueError: the mask does not have the params' tree structure or a prefix of it.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> from gradtx.combine import masked
      >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> tx = masked(gradtx.sgd(0.1), {"w": True, "b": False})
      >>> grads = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> tx.update(grads, tx.init(params), params)[0]  # b is passed through
      {'b': Array([1., 1.], dtype=float32), 'w': Array([-0.1, -0.1], dtype=float32)}
    """
    check_members("masked", (inner,))
    if mask is None:
        raise TypeError(
            "masked: mask must be a pytree of bools or a function of the params, got None."
        )
    if not is_function(mask):
        _bool_mask("masked", mask)
    update = accepts_extra_args(inner.update)

    def resolve(tree):
        return _bool_mask("masked", resolve_mask(mask, tree))

    def init_fn(params):
        if _is_params_slot(params):  # tree.map_params locating the params in the state
            return MaskedState(inner.init(params))
        return MaskedState(inner.init(_hide("masked", resolve(params), params, "params")))

    def update_fn(updates, state, params=None, **extra_args):
        if params is not None:
            # Dtypes are compared by the inner transformation, on the leaves it sees:
            # a masked-out leaf may be an integer counter with a float0 gradient.
            tree.check_structure(params, updates, owner="masked", dtypes=False)
        keep = resolve(updates)
        inner_updates = _hide("masked", keep, updates, "updates")
        inner_params = None if params is None else _hide("masked", keep, params, "params")
        extra_args = _hide_extra_args(
            "masked", keep, updates, extra_args, mask_compatible_extra_args
        )
        new, inner_state = update(inner_updates, state.inner_state, inner_params, **extra_args)
        return _merge(keep, new, updates), MaskedState(inner_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)


# ---------------------------------------------------------------------- partition


class PartitionState(NamedTuple):
    """State of :func:`partition`."""

    # {label: that label's transformation's state}, each built on the params with
    # the leaves of every other label set to None.
    inner_states: dict[Hashable, OptState]


def _check_labels(labels: Any, transforms: Mapping[Hashable, Any]) -> None:
    used = []
    for path, label in jax.tree_util.tree_flatten_with_path(labels)[0]:
        try:
            hash(label)
        except TypeError:
            raise TypeError(
                f"partition: every label must be hashable (a string, an int), got "
                f"{type(label).__name__} at {jax.tree_util.keystr(path) or 'the root'}."
            ) from None
        used.append(label)
    unknown = sorted({repr(label) for label in used if label not in transforms})
    if unknown:
        raise ValueError(
            f"partition: no transformation for the label(s) {', '.join(unknown)}: "
            f"transforms has {', '.join(sorted(map(repr, transforms)))}."
        )


def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Any | Callable[[Params], Any],
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformation:
    """Applies a different transformation to each group of parameters.

    Every parameter leaf carries a label; the transformation of that label
    updates it and holds its state (as :func:`masked` on that label's leaves),
    so biases, embeddings or normalisation scales can get another optimizer or
    other hyperparameters. Same semantics and arguments as ``optax.partition``
    (``optax.multi_transform``). A transformation whose label no leaf carries is
    allowed (as in Optax): its state is built on an empty tree.

    Args:
      transforms: ``{label: transformation}``.
      param_labels: a pytree of labels with the params' structure, or a prefix of
        it (one label for a whole subtree); or a function of the params returning
        one (called with the params in ``init`` and with the updates in ``update``,
        as Optax does, so it must depend on structure, names and shapes only). A
        pytree with leaves is read as labels even when it is callable (an Equinox
        module of labels): only a plain function is called.
      mask_compatible_extra_args: also split the extra arguments of ``update`` that
        have the updates' tree structure, as :func:`masked` does.

    Returns:
      A transformation whose state is :class:`PartitionState`.

    Raises:
      TypeError: ``transforms`` is not a mapping of transformations; a label is
        not hashable.
      ValueError: ``transforms`` is empty; a label has no transformation; the labels
        do not have the params' tree structure or a prefix of it; the state has
        other labels than ``transforms``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> from gradtx.combine import partition
      >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> tx = partition({"adam": gradtx.adam(0.1), "sgd": gradtx.sgd(0.01)},
      ...                {"w": "adam", "b": "sgd"})
      >>> grads = {"w": jnp.full(2, 3.0), "b": jnp.full(2, 3.0)}
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> updates["b"]  # sgd: -0.01 * 3
      Array([-0.03, -0.03], dtype=float32)
      >>> sorted(state.inner_states)
      ['adam', 'sgd']
    """
    if not isinstance(transforms, Mapping):
        raise TypeError(
            f"partition: transforms must be a mapping {{label: transformation}}, "
            f"got {type(transforms).__name__}."
        )
    if not transforms:
        raise ValueError("partition: transforms is empty: give at least one {label: tx}.")
    order = list(transforms)
    check_members("partition", tuple(transforms.values()))
    if not is_function(param_labels):
        _check_labels(param_labels, transforms)
    updaters = {label: accepts_extra_args(tx.update) for label, tx in transforms.items()}

    def resolve(tree):
        labels = param_labels(tree) if is_function(param_labels) else param_labels
        _check_labels(labels, transforms)
        return labels

    def keep(labels, label):
        return jax.tree.map(lambda leaf: leaf == label, labels)

    def init_fn(params):
        labels = resolve(params)
        return PartitionState(
            {
                label: tx.init(_hide("partition", keep(labels, label), params, "params", "labels"))
                for label, tx in transforms.items()
            }
        )

    def update_fn(updates, state, params=None, **extra_args):
        inner_states = getattr(state, "inner_states", None)
        if not isinstance(inner_states, Mapping) or set(inner_states) != set(order):
            got = (
                f"the labels {', '.join(sorted(map(repr, inner_states)))}"
                if isinstance(inner_states, Mapping)
                else type(state).__name__
            )
            raise ValueError(
                f"partition: expected a PartitionState with the labels "
                f"{', '.join(sorted(map(repr, order)))} (from init), got {got}."
            )
        if params is not None:
            tree.check_structure(params, updates, owner="partition", dtypes=False)
        labels = resolve(updates)
        outputs, new_states = [], {}
        for label in order:
            group = keep(labels, label)
            hidden = _hide("partition", group, updates, "updates", "labels")
            hidden_params = (
                None if params is None else _hide("partition", group, params, "params", "labels")
            )
            extra = _hide_extra_args(
                "partition", group, updates, extra_args, mask_compatible_extra_args
            )
            out, new_states[label] = updaters[label](
                hidden, inner_states[label], hidden_params, **extra
            )
            outputs.append(out)
        index = {label: i for i, label in enumerate(order)}
        merged = jax.tree.map(lambda label, *outs: outs[index[label]], labels, *outputs)
        return merged, PartitionState(new_states)

    return GradientTransformationExtraArgs(init_fn, update_fn)


MultiTransformState = PartitionState
"""Optax's older name of :class:`PartitionState` (the same ``inner_states`` field)."""

MaskOrFn = Mask | None
"""Optax's name of a mask argument that may also be ``None`` (no mask)."""


def multi_transform(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Any | Callable[[Params], Any],
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformation:
    """Optax's older name of :func:`partition`: a transformation per group of params.

    .. math::
        u'_\\ell = T_{\\lambda(\\ell)}(u_\\ell) \\quad \\text{for every leaf } \\ell

    where ``\\lambda(\\ell)`` is the leaf's label in ``param_labels`` and
    ``T_k`` = ``transforms[k]``. Identical to :func:`partition` (same arguments,
    same :class:`PartitionState`, also known as ``MultiTransformState``).

    Args:
      transforms: ``{label: transformation}``.
      param_labels: a pytree of labels (or a prefix of one), or a function of the
        params returning one.
      mask_compatible_extra_args: also split the extra arguments of ``update``
        that have the updates' tree structure.

    Returns:
      A transformation whose state is :class:`PartitionState`.

    Raises:
      TypeError, ValueError: as :func:`partition`.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.multi_transform(
      ...     {"a": gradtx.scale(2.0), "b": gradtx.set_to_zero()}, {"w": "a", "b": "b"})
      >>> params = {"w": jnp.ones(1), "b": jnp.ones(1)}
      >>> tx.update(params, tx.init(params))[0]
      {'b': Array([0.], dtype=float32), 'w': Array([2.], dtype=float32)}
    """
    return partition(
        transforms, param_labels, mask_compatible_extra_args=mask_compatible_extra_args
    )
