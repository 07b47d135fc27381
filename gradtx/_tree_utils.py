"""Optax's tree utilities (``optax.tree``), published as :mod:`gradtx.tree`.

Kept apart from the per-leaf helpers that every method is written with, so that
``gradtx/tree.py`` stays the short core a new method reads. Import them from
:mod:`gradtx.tree`.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import inspect
import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import Array
from gradtx.tree import abs_sq, name_paths, sqrt

# ---------------------------------------------------------------------- Optax's tree utilities
# The names of ``optax.tree``, with its signatures and its results (values and
# dtypes), so that ``optax.tree.f(...)`` becomes ``gradtx.tree.f(...)``. They
# map over the leaves as ``jax.tree.map`` does: ``None`` is an empty subtree.


def add(tree_x: Any, tree_y: Any, *other_trees: Any) -> Any:
    """The leafwise sum of two or more trees of the same structure.

    Args:
      tree_x: a tree.
      tree_y: a tree like ``tree_x``.
      *other_trees: more trees like ``tree_x``, added too.

    Returns:
      ``tree_x + tree_y + ...``, leaf by leaf.

    Examples:
      >>> add({"a": jnp.array(1.0)}, {"a": 2.0}, {"a": 3.0})
      {'a': Array(6., dtype=float32, weak_type=True)}
    """
    return jax.tree.map(
        lambda *xs: functools.reduce(operator.add, xs), tree_x, tree_y, *other_trees
    )


def sub(tree_x: Any, tree_y: Any) -> Any:
    """The leafwise difference ``tree_x - tree_y``.

    Args:
      tree_x: a tree.
      tree_y: a tree like ``tree_x``.

    Returns:
      ``tree_x - tree_y``, leaf by leaf.

    Examples:
      >>> sub({"a": jnp.array([3.0])}, {"a": jnp.array([1.0])})
      {'a': Array([2.], dtype=float32)}
    """
    return jax.tree.map(operator.sub, tree_x, tree_y)


def mul(tree_x: Any, tree_y: Any) -> Any:
    """The leafwise (elementwise) product ``tree_x * tree_y``.

    Args:
      tree_x: a tree.
      tree_y: a tree like ``tree_x``.

    Returns:
      ``tree_x * tree_y``, leaf by leaf.

    Examples:
      >>> mul({"a": jnp.array([3.0])}, {"a": jnp.array([2.0])})
      {'a': Array([6.], dtype=float32)}
    """
    return jax.tree.map(operator.mul, tree_x, tree_y)


def div(tree_x: Any, tree_y: Any) -> Any:
    """The leafwise (elementwise) quotient ``tree_x / tree_y``.

    Args:
      tree_x: a tree.
      tree_y: a tree like ``tree_x``.

    Returns:
      ``tree_x / tree_y``, leaf by leaf.

    Examples:
      >>> div({"a": jnp.array([3.0])}, {"a": jnp.array([2.0])})
      {'a': Array([1.5], dtype=float32)}
    """
    return jax.tree.map(operator.truediv, tree_x, tree_y)


def scale(scalar: Any, tree: Any) -> Any:
    """``scalar * tree``: every leaf times one scalar.

    Args:
      scalar: a scalar.
      tree: a tree.

    Returns:
      a tree like ``tree``.

    Examples:
      >>> scale(2.0, {"a": jnp.array([1.5])})
      {'a': Array([3.], dtype=float32)}
    """
    return jax.tree.map(lambda x: scalar * x, tree)


def add_scale(tree_x: Any, scalar: Any, tree_y: Any) -> Any:
    """``tree_x + scalar * tree_y``, leaf by leaf (an axpy).

    A ``None`` leaf of ``tree_x`` stays ``None``, whatever ``tree_y`` holds there.

    Args:
      tree_x: a tree.
      scalar: a scalar.
      tree_y: a tree like ``tree_x``.

    Returns:
      a tree like ``tree_x``.

    Examples:
      >>> add_scale({"a": jnp.array([1.0])}, 0.5, {"a": jnp.array([4.0])})
      {'a': Array([3.], dtype=float32)}
    """
    scalar = jnp.asarray(scalar)
    return jax.tree.map(
        lambda x, y: None if x is None else x + scalar * y,
        tree_x,
        tree_y,
        is_leaf=lambda x: x is None,
    )


def vdot(tree_x: Any, tree_y: Any) -> Array:
    """The inner product ``<x, y> = sum conj(x) * y`` of two trees seen as flat vectors.

    Each leaf's product is a full-precision contraction over all its axes (no
    reshape, so a sharded leaf is not gathered); complex ``tree_x`` is conjugated.

    Args:
      tree_x: a tree.
      tree_y: a tree like ``tree_x``.

    Returns:
      a scalar (``0`` for trees without leaves).

    Examples:
      >>> vdot({"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([3.0, -1.0])})
      Array(1., dtype=float32)
    """

    return jax.tree.reduce(operator.add, jax.tree.map(_leaf_vdot, tree_x, tree_y), 0)


@jax.jit
def _leaf_vdot(x, y):
    """One leaf's ``sum conj(x) * y``, compiled as one program even when called eagerly.

    Eagerly, the conjugate and the contraction would otherwise run as two
    programs and round differently from the same code under ``jit`` (and from
    ``jnp.vdot``, itself jitted); as one program the eager and jitted results
    are the same bits.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    if jnp.iscomplexobj(x):
        x = jnp.conj(x)
    return jnp.tensordot(x, y, x.ndim, precision=jax.lax.Precision.HIGHEST)


def sum(tree: Any, associative_reduction: bool = False) -> Array:
    """The sum of every element of every leaf.

    Args:
      tree: a tree.
      associative_reduction: add the leaves' sums as a balanced tree
        (``jax.tree.reduce_associative``) instead of left to right: a faster
        compile on trees of many leaves, rounding in another order.

    Returns:
      a scalar (``0`` for a tree without leaves).

    Examples:
      >>> sum({"a": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)})
      Array(6., dtype=float32)
    """
    sums = jax.tree.map(jnp.sum, tree)
    if associative_reduction:
        return jax.tree.reduce_associative(operator.add, sums, identity=0)
    return jax.tree.reduce(operator.add, sums, 0)


def max(tree: Any) -> Array:
    """The largest element over every leaf (``-inf`` for a tree with no elements).

    Args:
      tree: a tree.

    Returns:
      a scalar.

    Examples:
      >>> max({"a": jnp.array([1.0, 5.0]), "b": jnp.array(3.0)})
      Array(5., dtype=float32)
    """
    maxes = [jnp.max(x) for x in jax.tree.leaves(tree) if jnp.size(x)]
    return functools.reduce(jnp.maximum, maxes, -float("inf"))


def min(tree: Any) -> Array:
    """The smallest element over every leaf (``inf`` for a tree with no elements).

    Args:
      tree: a tree.

    Returns:
      a scalar.

    Examples:
      >>> min({"a": jnp.array([1.0, 5.0]), "b": jnp.array(-3.0)})
      Array(-3., dtype=float32)
    """
    mins = [jnp.min(x) for x in jax.tree.leaves(tree) if jnp.size(x)]
    return functools.reduce(jnp.minimum, mins, float("inf"))


def norm(tree: Any, ord: int | str | float | None = None, squared: bool = False) -> Array:
    """The vector norm of the whole tree seen as one flat vector.

    .. math::
        \\|x\\|_2 = \\Big(\\sum_i |x_i|^2\\Big)^{1/2}, \\qquad
        \\|x\\|_1 = \\sum_i |x_i|, \\qquad \\|x\\|_\\infty = \\max_i |x_i|

    over every element ``x_i`` of every leaf (``|x_i|`` the modulus for complex
    leaves). The 2-norm's root has derivative 0 at 0 (:func:`sqrt`), not
    ``inf``: the gradient of the norm of a zero tree is 0, not NaN.

    Args:
      tree: a tree.
      ord: ``None`` or ``2``, ``1``, or ``inf`` (also ``"inf"``, ``"infinity"``).
      squared: return the norm squared.

    Returns:
      a scalar, in the dtype of the leaves' arithmetic (see :func:`global_norm`
      for a norm always accumulated in at least float32).

    Raises:
      ValueError: another ``ord``.

    Examples:
      >>> t = {"a": jnp.array([3.0, -4.0])}
      >>> [float(norm(t)), float(norm(t, ord=1)), float(norm(t, ord="inf"))]
      [5.0, 7.0, 4.0]
      >>> norm(t, squared=True)
      Array(25., dtype=float32)
    """
    if ord is None or ord == 2:
        total = sum(jax.tree.map(lambda x: abs_sq(jnp.asarray(x)), tree))
        return jnp.asarray(total if squared else sqrt(total))
    if ord == 1:
        total = sum(jax.tree.map(jnp.abs, tree))
    elif ord in (jnp.inf, "inf", "infinity"):
        total = max(jax.tree.map(jnp.abs, tree))
    else:
        raise ValueError(f"norm: ord must be None, 1, 2 or inf, got {ord!r}.")
    return jnp.asarray(total * total if squared else total)


def size(tree: Any) -> int:
    """The number of elements in all the leaves together, a Python ``int``.

    Args:
      tree: a tree.

    Returns:
      the total size.

    Examples:
      >>> size({"a": jnp.zeros((2, 3)), "b": jnp.zeros(4), "c": None})
      10
    """
    return builtins.sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def conj(tree: Any) -> Any:
    """The complex conjugate of every leaf (real leaves unchanged).

    Args:
      tree: a tree.

    Returns:
      a tree like ``tree``.

    Examples:
      >>> conj({"z": jnp.array([1 + 2j])})
      {'z': Array([1.-2.j], dtype=complex64)}
    """
    return jax.tree.map(jnp.conj, tree)


def real(tree: Any) -> Any:
    """The real part of every leaf.

    Args:
      tree: a tree.

    Returns:
      a tree like ``tree``, with real leaves.

    Examples:
      >>> real({"z": jnp.array([1 + 2j])})
      {'z': Array([1.], dtype=float32)}
    """
    return jax.tree.map(jnp.real, tree)


def where(condition: Any, tree_x: Any, tree_y: Any) -> Any:
    """``jnp.where(condition, x, y)`` leaf by leaf: ``tree_x`` where true, else ``tree_y``.

    Args:
      condition: a boolean (scalar, or an array broadcast against every leaf).
      tree_x: the tree taken where ``condition`` holds.
      tree_y: a tree like ``tree_x``, taken elsewhere.

    Returns:
      a tree like ``tree_x``.

    Examples:
      >>> where(jnp.array(False), {"a": jnp.ones(2)}, {"a": jnp.zeros(2)})
      {'a': Array([0., 0.], dtype=float32)}
    """
    return jax.tree.map(lambda x, y: jnp.where(condition, x, y), tree_x, tree_y)


def clip(tree: Any, min_value: Any = None, max_value: Any = None) -> Any:
    """Every element clipped to ``[min_value, max_value]`` (a ``None`` bound is no bound).

    Args:
      tree: a tree.
      min_value: the lower bound, or ``None``.
      max_value: the upper bound, or ``None``.

    Returns:
      a tree like ``tree``.

    Examples:
      >>> clip({"a": jnp.array([-2.0, 0.5, 3.0])}, -1.0, 1.0)
      {'a': Array([-1. ,  0.5,  1. ], dtype=float32)}
    """
    return jax.tree.map(lambda x: jnp.clip(x, min_value, max_value), tree)


def allclose(a: Any, b: Any, rtol: Any = 1e-05, atol: Any = 1e-08, equal_nan: bool = False) -> Any:
    """Whether every leaf of ``a`` is close to its counterpart in ``b`` (``jnp.allclose``).

    Args:
      a: a tree.
      b: a tree like ``a``.
      rtol: the relative tolerance.
      atol: the absolute tolerance.
      equal_nan: count NaNs in the same places as equal.

    Returns:
      a boolean scalar (``True`` for trees without leaves).

    Examples:
      >>> bool(allclose({"a": jnp.array([1.0])}, {"a": jnp.array([1.0 + 1e-7])}))
      True
    """
    close = jax.tree.map(
        lambda x, y: jnp.allclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan), a, b
    )
    return functools.reduce(operator.and_, jax.tree.leaves(close), True)


def batch_shape(tree: Any, shape: tuple[int, ...] = ()) -> Any:
    """Every leaf broadcast to leading batch axes ``shape`` (``(*shape, *leaf.shape)``).

    Args:
      tree: a tree.
      shape: the leading axes to add.

    Returns:
      a tree like ``tree``, each leaf of shape ``(*shape, *leaf.shape)``.

    Examples:
      >>> batch_shape({"a": jnp.zeros(3)}, (2,))["a"].shape
      (2, 3)
    """
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (*shape, *jnp.shape(x))), tree)


def _promotes_to(low: Any, high: Any) -> bool:
    return jnp.promote_types(low, high) == high


def dtype(tree: Any, mixed_dtype_handler: str | None = None) -> Any:
    """The dtype of the tree's leaves.

    Args:
      tree: a tree (without leaves: JAX's default float dtype).
      mixed_dtype_handler: what to do when leaves differ: ``None`` raises;
        ``"promote"`` gives the dtype they all promote to; ``"highest"`` /
        ``"lowest"`` the leaf dtype every other promotes to / from (an error
        where two leaves' dtypes do not promote one to the other, e.g. int32 and
        uint32).

    Returns:
      a numpy dtype.

    Raises:
      ValueError: mixed dtypes with ``mixed_dtype_handler=None``, dtypes with no
        highest or lowest, or an unknown ``mixed_dtype_handler``.

    Examples:
      >>> t = {"a": jnp.zeros(1, jnp.float16), "b": jnp.zeros(1, jnp.float32)}
      >>> dtype(t, "lowest"), dtype(t, "highest")
      (dtype('float16'), dtype('float32'))
    """
    dtypes = [jnp.asarray(x).dtype for x in jax.tree.leaves(tree)]
    if not dtypes:
        return jnp.asarray([]).dtype
    if mixed_dtype_handler is None:
        if any(d != dtypes[0] for d in dtypes):
            paths = [
                f"{jax.tree_util.keystr(p) or 'the root'} ({jnp.asarray(x).dtype})"
                for p, x in jax.tree_util.tree_leaves_with_path(tree)
            ]
            raise ValueError(
                f"dtype: the leaves have different dtypes ({name_paths(paths)}); pass "
                "mixed_dtype_handler='promote', 'highest' or 'lowest'."
            )
        return dtypes[0]
    if mixed_dtype_handler == "promote":
        return functools.reduce(jnp.promote_types, dtypes)
    if mixed_dtype_handler in ("highest", "lowest"):
        for d in dtypes:
            for e in dtypes:
                if not (_promotes_to(d, e) or _promotes_to(e, d)):
                    raise ValueError(
                        f"dtype: {d} and {e} do not promote one to the other, so the tree "
                        f"has no {mixed_dtype_handler} dtype; use mixed_dtype_handler='promote'."
                    )
        want_high = mixed_dtype_handler == "highest"
        pick = lambda d, e: e if _promotes_to(d, e) == want_high else d
        return functools.reduce(pick, dtypes)
    raise ValueError(
        "dtype: mixed_dtype_handler must be None, 'promote', 'highest' or 'lowest', "
        f"got {mixed_dtype_handler!r}."
    )


# ---------------------------------------------------------------------- random trees


def split_key_like(rng_key: Array, target_tree: Any) -> Any:
    """One PRNG key per leaf of ``target_tree``: ``rng_key`` split, in ``jax.tree`` order.

    Args:
      rng_key: a PRNG key (``jax.random.key`` or a raw ``jax.random.PRNGKey``).
      target_tree: the tree whose structure the keys take.

    Returns:
      a tree like ``target_tree`` with a key in place of each leaf.

    Examples:
      >>> keys = split_key_like(jax.random.key(0), {"a": 1.0, "b": 2.0})
      >>> sorted(keys)
      ['a', 'b']
    """
    treedef = jax.tree.structure(target_tree)
    return jax.tree.unflatten(treedef, list(jax.random.split(rng_key, treedef.num_leaves)))


def _takes_sharding(sampler: Callable[..., Any]) -> bool:
    try:
        return "out_sharding" in inspect.signature(sampler).parameters
    except (TypeError, ValueError):  # a callable without a signature
        return False


def random_like(
    rng_key: Array,
    target_tree: Any,
    sampler: Callable[..., Any] = jax.random.normal,
    dtype: Any | None = None,
) -> Any:
    """A tree of random arrays shaped like ``target_tree``'s leaves, one key per leaf.

    Leaf ``i`` (in ``jax.tree`` order) is ``sampler(key_i, leaf.shape, dtype)``
    with ``key_i`` from :func:`split_key_like`, so the same key gives
    ``optax.tree.random_like``'s numbers. A sampler that takes ``out_sharding``
    gets the leaf's sharding.

    Args:
      rng_key: a PRNG key.
      target_tree: a tree of arrays.
      sampler: ``(key, shape, dtype) -> array``, e.g. ``jax.random.normal``
        (default) or ``jax.random.uniform``.
      dtype: the dtype passed to ``sampler``; ``None`` uses each leaf's.

    Returns:
      a tree like ``target_tree``.

    Examples:
      >>> noise = random_like(jax.random.key(0), {"a": jnp.zeros((2, 3))})
      >>> noise["a"].shape, noise["a"].dtype
      ((2, 3), dtype('float32'))
    """
    keys = split_key_like(rng_key, target_tree)
    with_sharding = _takes_sharding(sampler)

    def leaf(x, key):
        kwargs = {"out_sharding": jax.typeof(x).sharding} if with_sharding else {}
        return sampler(key, x.shape, dtype or x.dtype, **kwargs)

    return jax.tree.map(leaf, target_tree, keys)


def unwrap_random_key_data(input_tree: Any) -> Any:
    """Typed PRNG keys replaced by their raw data (``jax.random.key_data``), for comparing.

    Args:
      input_tree: a tree of arrays and typed keys.

    Returns:
      the tree, every typed-key leaf as a ``uint32`` array.

    Examples:
      >>> unwrap_random_key_data({"k": jax.random.key(0), "x": 1.0})["k"].dtype
      dtype('uint32')
    """

    def leaf(x):
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return jax.tree.map(leaf, input_tree)


# ---------------------------------------------------------------------- finding values in a state
# A key names a dict entry, a NamedTuple field or a NamedTuple type (``"count"``,
# ``"learning_rate"``, ``"ScaleByAdamState"``). Paths are jax key paths in which
# a NamedTuple field is a NamedTupleKey, which carries the tuple's type name, so
# a filter can tell ``ScaleByAdamState.count`` from ``AddNoiseState.count``.


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
    """A path entry for a NamedTuple field: the tuple's type name and the field.

    ``str`` gives ``"TupleName.field"``, which :func:`jax.tree_util.keystr` shows.

    Attributes:
      tuple_name: the NamedTuple's class name (``"ScaleByAdamState"``).
      name: the field (``"count"``).

    Examples:
      >>> str(NamedTupleKey("ScaleByAdamState", "count"))
      'ScaleByAdamState.count'
    """

    tuple_name: str
    name: str

    def __str__(self) -> str:
        return f"{self.tuple_name}.{self.name}"


Filtering = Callable[[tuple[Any, ...], Any], bool]
"""``filtering(path, value) -> bool``: keeps a match of :func:`get_all_with_path`."""


def _is_named_tuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _has_key(node: Any, keys: tuple[Any, ...]) -> bool:
    """Whether ``node`` is a dict holding one of ``keys``, or a NamedTuple with such a
    field or such a name."""
    if _is_named_tuple(node):
        return type(node).__name__ in keys or any(k in node._fields for k in keys)
    return isinstance(node, dict) and any(k in node for k in keys)


def _children(path: tuple[Any, ...], node: Any) -> list[tuple[tuple[Any, ...], Any]]:
    """The (path, child) pairs of a NamedTuple or a dict."""
    if _is_named_tuple(node):
        name = type(node).__name__
        return [((*path, NamedTupleKey(name, f)), getattr(node, f)) for f in node._fields]
    return [((*path, jax.tree_util.DictKey(k)), v) for k, v in node.items()]


def _entry_name(entry: Any) -> Any:
    """The dict key, field name or index a path entry stands for."""
    for attribute in ("name", "key", "idx"):
        if hasattr(entry, attribute):
            return getattr(entry, attribute)
    raise KeyError(f"unsupported path entry {entry!r}")


def _named_leaves(tree: Any, stop: Callable[[Any], bool]) -> list[tuple[tuple[Any, ...], Any]]:
    """``jax.tree_util.tree_leaves_with_path(tree, is_leaf=stop)``, with NamedTupleKeys
    for NamedTuple fields."""
    out = []
    flat = jax.tree_util.tree_leaves_with_path(
        tree, is_leaf=lambda x: stop(x) or _is_named_tuple(x)
    )
    for path, node in flat:
        if _is_named_tuple(node) and not stop(node):
            for child_path, child in _children(path, node):
                out += [((*child_path, *p), x) for p, x in _named_leaves(child, stop)]
        else:
            out.append((path, node))
    return out


def _matches(tree: Any, key: Any) -> list[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) for ``key``: the outermost matches first, then those nested in them."""
    has = lambda node: _has_key(node, (key,))
    holders = [(p, node) for p, node in _named_leaves(tree, has) if has(node)]
    found = []
    for path, node in holders:
        if _is_named_tuple(node) and type(node).__name__ == key:
            found.append((path, node))
        elif _is_named_tuple(node):
            found.append(((*path, NamedTupleKey(type(node).__name__, key)), getattr(node, key)))
        else:
            found.append(((*path, jax.tree_util.DictKey(key)), node[key]))
    for path, node in holders:
        for child_path, child in _children(path, node):
            found += [((*child_path, *p), x) for p, x in _matches(child, key)]
    return found


def get_all_with_path(
    tree: Any, key: Any, filtering: Filtering | None = None
) -> list[tuple[tuple[Any, ...], Any]]:
    """Every value stored under ``key`` in ``tree``, each with its path.

    ``key`` is a dict key, a NamedTuple field, or a NamedTuple's class name (the
    whole tuple is the value then). Matches come in ``jax.tree`` order of the
    outermost ones, then those nested inside a match. Paths are tuples of jax
    key entries with :class:`NamedTupleKey` for NamedTuple fields
    (:func:`jax.tree_util.keystr` prints them).

    Args:
      tree: a tree, typically an optimizer state.
      key: the key, field or NamedTuple name to look for.
      filtering: ``filtering(path, value) -> bool``; only the matches it keeps.

    Returns:
      a list of ``(path, value)``.

    Examples:
      >>> import gradtx
      >>> state = gradtx.adam(0.1).init(jnp.zeros(2))
      >>> [jax.tree_util.keystr(p) for p, _ in get_all_with_path(state, "count")]
      ['[0]ScaleByAdamState.count']
    """
    found = _matches(tree, key)
    if filtering is None:
        return found
    return [(path, value) for path, value in found if filtering(path, value)]


def get(tree: Any, key: Any, default: Any = None, filtering: Filtering | None = None) -> Any:
    """The one value stored under ``key`` in ``tree``, or ``default`` if there is none.

    Args:
      tree: a tree, typically an optimizer state.
      key: a dict key, NamedTuple field or NamedTuple name (see
        :func:`get_all_with_path`).
      default: returned when nothing matches.
      filtering: ``filtering(path, value) -> bool``, to pick one among several.

    Returns:
      the value.

    Raises:
      KeyError: several values match.

    Examples:
      >>> import gradtx
      >>> get(gradtx.adam(0.1).init(jnp.zeros(2)), "count")
      Array(0, dtype=int32)
    """
    found = get_all_with_path(tree, key, filtering)
    if len(found) > 1:
        paths = [jax.tree_util.keystr(p) for p, _ in found]
        raise KeyError(f"get: {len(found)} values match {key!r}, at {name_paths(paths)}.")
    return found[0][1] if found else default


def set(tree: Any, filtering: Filtering | None = None, /, **kwargs: Any) -> Any:
    """A copy of ``tree`` with the values under the given keys replaced.

    Every match of each key (see :func:`get_all_with_path`) that ``filtering``
    keeps is replaced, nested ones included; a NamedTuple name replaces the
    whole tuple. Dicts are rebuilt as plain dicts.

    Args:
      tree: a tree, typically an optimizer state.
      filtering: ``filtering(path, value) -> bool``; only the matches it keeps
        are replaced (positional only).
      **kwargs: ``key=new_value`` for each key to replace.

    Returns:
      the new tree.

    Raises:
      KeyError: a key has no match (that ``filtering`` keeps).

    Examples:
      >>> import gradtx
      >>> state = set(gradtx.adam(0.1).init(jnp.zeros(2)), count=jnp.int32(5))
      >>> get(state, "count")
      Array(5, dtype=int32)
    """
    for key in kwargs:
        if not get_all_with_path(tree, key, filtering):
            kept = " that filtering keeps" if filtering is not None else ""
            raise KeyError(f"set: no value{kept} matches {key!r} in the tree.")
    keep = lambda path, value: filtering is None or filtering(path, value)
    has = lambda node: _has_key(node, tuple(kwargs))

    def replace(path, node):
        if not has(node):
            return node
        if _is_named_tuple(node) and type(node).__name__ in kwargs and keep(path, node):
            return kwargs[type(node).__name__]
        new = {}
        for child_path, child in _children(path, node):
            name = _entry_name(child_path[-1])
            new[name] = (
                kwargs[name]
                if name in kwargs and keep(child_path, child)
                else within(child_path, child)
            )
        return node._replace(**new) if _is_named_tuple(node) else new

    def within(prefix, subtree):
        treedef = jax.tree.structure(subtree, is_leaf=has)
        leaves = _named_leaves(subtree, has)
        return jax.tree.unflatten(treedef, [replace((*prefix, *p), x) for p, x in leaves])

    return within((), tree)


class _ParamsSlot:
    """A leafless pytree standing for the params while an ``init`` builds a state skeleton."""


jax.tree_util.register_pytree_node(_ParamsSlot, lambda _: ((), None), lambda *_: _ParamsSlot())


def _is_params_slot(params: Any) -> bool:
    """Whether ``init`` was called by :func:`map_params` to find the params' copies.

    A wrapper whose ``init`` reads the params' structure (``masked``, with a mask
    tree fixed when built) passes the placeholder straight to its inner ``init``
    instead, as Optax's ``masked`` does.
    """
    return isinstance(params, _ParamsSlot)


def map_params(
    initable: Any,
    f: Callable[..., Any],
    state: Any,
    /,
    *rest: Any,
    transform_non_params: Callable[..., Any] | None = None,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """``f`` mapped over every copy of the params inside an optimizer state.

    ``initable`` (a transformation, or its ``init``) is run on a placeholder
    with no leaves: the subtrees of its state where the placeholder comes back
    are the params-shaped parts (moments, traces, ...), mapped with
    ``jax.tree.map(f, part, *rest)``; every other part is passed through, or
    through ``transform_non_params``. Use it to build sharding specs for a state
    from the params' specs. As in Optax, an ``init`` that reads the params'
    shapes or values cannot run on the placeholder.

    Args:
      initable: a GradientTransformation, or any ``init(params) -> state``.
      f: applied leafwise to each params-shaped part (and the ``rest`` trees).
      state: the state to map over.
      *rest: trees like the params, passed to ``f`` beside each part.
      transform_non_params: applied to every other state leaf; ``None`` keeps them.
      is_leaf: passed to the ``jax.tree.map`` over each params-shaped part.

    Returns:
      a tree like ``state``.

    Examples:
      >>> import gradtx
      >>> tx = gradtx.adam(0.1)
      >>> state = tx.init({"w": jnp.ones(2)})
      >>> shapes = map_params(tx, lambda x: x.shape, state, transform_non_params=lambda _: None)
      >>> shapes[0].mu, shapes[0].count
      ({'w': (2,)}, None)
    """
    init = initable.init if hasattr(initable, "init") else initable
    skeleton = init(_ParamsSlot())

    def visit(mark, value):
        if isinstance(mark, _ParamsSlot):
            return jax.tree.map(f, value, *rest, is_leaf=is_leaf)
        return value if transform_non_params is None else transform_non_params(value)

    return jax.tree.map(visit, skeleton, state, is_leaf=lambda x: isinstance(x, _ParamsSlot))


__all__ = [
    "NamedTupleKey",
    "add",
    "add_scale",
    "allclose",
    "batch_shape",
    "clip",
    "conj",
    "div",
    "dtype",
    "get",
    "get_all_with_path",
    "map_params",
    "max",
    "min",
    "mul",
    "norm",
    "random_like",
    "real",
    "scale",
    "set",
    "size",
    "split_key_like",
    "sub",
    "sum",
    "unwrap_random_key_data",
    "vdot",
    "where",
]
