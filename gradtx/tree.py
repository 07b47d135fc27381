"""Pytree arithmetic shared by every method: moments, corrections, norms, casts.

Every optimizer in gradtx does its per-leaf math through these helpers, so the
rules for numbers live in one place:

* Arithmetic runs in at least float32 (:func:`compute_dtype`): a bfloat16 or
  float16 leaf is promoted for the root and the division, so a small ``eps``
  never underflows, and the result is cast back by the caller.
* Second moments use the squared magnitude ``|g|^2`` (:func:`abs_sq`), which is
  right for complex leaves, and are stored in the real dtype.
* ``None`` leaves are empty subtrees and pass through untouched.

The second half holds every function of ``optax.tree`` under its name and
signature (``add``, ``vdot``, ``norm``, ``get``, ``set``, ``random_like``, ...),
so ``optax.tree.f(...)`` becomes ``gradtx.tree.f(...)``.
"""

from __future__ import annotations

import builtins
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _tactics
from gradtx.base import Array

_INT32_MAX = jnp.iinfo(jnp.int32).max

AxisName = str | tuple[str, ...]
"""A mesh axis name, or several (``shard_map``'s ``axis_name`` of a collective)."""


# ---------------------------------------------------------------------- dtypes


def compute_dtype(dtype: Any) -> jnp.dtype:
    """The dtype to do arithmetic in: ``dtype`` promoted to at least float32.

    bfloat16 and float16 become float32; float64, complex64 and complex128 stay.
    """
    return jnp.promote_types(dtype, jnp.float32)


def real_dtype(dtype: Any) -> jnp.dtype:
    """The real dtype of ``dtype`` (complex64 -> float32); real dtypes unchanged."""
    return jnp.finfo(dtype).dtype


def cast(tree: Any, dtype: Any | None) -> Any:
    """Casts every leaf to ``dtype``; ``None`` returns the tree unchanged (``optax.tree.cast``).

    >>> cast({"a": jnp.ones(2)}, jnp.bfloat16)["a"].dtype
    dtype(bfloat16)
    """
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: jnp.asarray(x).astype(dtype), tree)


def cast_like(tree: Any, other_tree: Any) -> Any:
    """Casts each leaf of ``tree`` to the dtype of the matching leaf of ``other_tree``.

    As ``optax.tree.cast_like``: a leaf of ``other_tree`` without a dtype (a
    Python number) leaves its counterpart as it is.

    >>> cast_like({"a": jnp.ones(2)}, {"a": jnp.zeros(2, jnp.float16)})["a"].dtype
    dtype('float16')
    """
    return jax.tree.map(
        lambda x, y: as_dtype(x, y.dtype) if hasattr(y, "dtype") else x, tree, other_tree
    )


def as_dtype(x: Array, dtype: Any) -> Array:
    """``x`` in ``dtype`` (a no-op where it already has it)."""
    return jnp.asarray(x).astype(dtype)


def zeros_beside(param: Any, shape: Any, dtype: Any) -> Array:
    """Zeros of ``shape`` on the devices that hold ``param``, replicated over them.

    For a statistic of a parameter that is not shaped like it (a norm per leaf, a
    factored row, a cover set): created eagerly, it lives on the parameter's mesh,
    where ``gradtx.sharding.state_shardings`` puts it, not on the default device.
    Under ``jit`` the zeros are left to XLA and ``out_shardings``.

    >>> zeros_beside(jnp.ones((2, 3)), (1,), jnp.float32)
    Array([0.], dtype=float32)
    """
    zeros = jnp.zeros(shape, dtype)
    sharding = getattr(param, "sharding", None)
    if isinstance(param, jax.core.Tracer) or not isinstance(sharding, jax.sharding.NamedSharding):
        return zeros
    replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    return jax.device_put(zeros, replicated)


def zeros_like(tree: Any, dtype: Any | None = None, *, real: bool = False) -> Any:
    """Zeros shaped like ``tree``: in ``dtype`` if given, else each leaf's dtype.

    With ``real=True`` a complex leaf gets zeros of its real dtype (for second
    moments, which are real). Optax's ``optax.tree.zeros_like(tree, dtype)``
    call works as is; unlike Optax's, an integer or boolean leaf raises (see
    :func:`full_like`).

    >>> zeros_like({"z": jnp.ones(2, jnp.complex64)}, real=True)["z"].dtype
    dtype('float32')
    """
    return full_like(tree, 0.0, dtype, real=real)


def ones_like(tree: Any, dtype: Any | None = None) -> Any:
    """Ones shaped like ``tree``, in ``dtype`` or each leaf's (``optax.tree.ones_like``).

    An integer or boolean leaf raises ``TypeError``, as in :func:`zeros_like`.

    >>> ones_like({"a": jnp.zeros(2)})
    {'a': Array([1., 1.], dtype=float32)}
    """
    return full_like(tree, 1.0, dtype)


def full_like(tree: Any, fill_value: Any, dtype: Any | None = None, *, real: bool = False) -> Any:
    """Arrays of ``fill_value`` shaped like ``tree`` (see :func:`zeros_like` for dtypes).

    Optax's ``optax.tree.full_like(tree, fill_value, dtype)`` call works as is.
    ``tree`` is the params a state is built from: an integer or boolean leaf raises
    ``TypeError`` (see :func:`check_inexact`), where Optax's returns an integer
    array; so does a real ``dtype`` for a complex leaf (unless ``real=True``).

    >>> full_like({"a": jnp.zeros(2)}, 0.5)
    {'a': Array([0.5, 0.5], dtype=float32)}
    """
    check_inexact(tree)

    def leaf(x):
        x = jnp.asarray(x)
        leaf_dtype = dtype if dtype is not None else x.dtype
        if not real and jnp.iscomplexobj(x) and not jnp.issubdtype(leaf_dtype, jnp.complexfloating):
            raise ValueError(
                f"a state dtype of {jnp.dtype(leaf_dtype)} would drop the imaginary part of a "
                f"{x.dtype} parameter: pass a complex dtype, or None to follow the params."
            )
        if real:
            leaf_dtype = real_dtype(leaf_dtype)
        # full_like, not full: a placed (sharded) parameter gets its state where it lives.
        return jnp.full_like(x, fill_value, leaf_dtype)

    return jax.tree.map(leaf, tree)


def check_inexact(params: Any, owner: str | None = None) -> None:
    """Raises TypeError naming the leaves of ``params`` that are integers or booleans.

    An optimizer's step is a real (or complex) number: an integer parameter would
    truncate every update to zero and hold an integer state, so it is refused at
    ``init``. Exclude such leaves with :func:`gradtx.masked` or
    :func:`gradtx.partition` (the inner transformation never sees them).
    A Python ``float`` or ``complex`` leaf is fine (weakly typed, as in JAX).
    """
    bad = []
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if isinstance(x, (float, complex)):  # a Python number: weakly typed
            continue
        dtype = getattr(x, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
            bad.append(f"{jax.tree_util.keystr(path) or 'the root'} ({dtype or type(x).__name__})")
    if bad:
        start = f"{owner}: " if owner else ""
        raise TypeError(
            f"{start}parameters must be floating-point or complex arrays, got {name_paths(bad)}: "
            "cast them to a float dtype, or leave them out with gradtx.masked or gradtx.partition."
        )


# ---------------------------------------------------------------------- structure


def _leaf_paths(tree: Any) -> list[str]:
    # None leaves are listed too: a masked-out leaf is None in a state (see masked).
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
    return [jax.tree_util.keystr(path) for path, _ in leaves]


def _none_paths(tree: Any) -> set[str]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
    return {jax.tree_util.keystr(path) for path, x in leaves if x is None}


def name_paths(paths: list[str], limit: int = 10) -> str:
    """``paths`` joined by commas for an error message, the first ``limit`` of them
    and a count of the rest: on a model of thousands of leaves, a wrong tree should
    not print thousands of paths.

    >>> name_paths(["['a']", "['b']", "['c']"], limit=2)
    "['a'], ['b'] and 1 more"
    """
    shown = ", ".join(paths[:limit])
    return shown if len(paths) <= limit else f"{shown} and {len(paths) - limit} more"


def _kind(x: Any) -> str:
    """``"bool"``, ``"integer"`` or ``"floating"`` (real or complex): what a leaf holds."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return "bool" if isinstance(x, bool) else "integer" if isinstance(x, int) else "floating"
    if jnp.issubdtype(dtype, jnp.bool_):
        return "bool"
    return "floating" if jnp.issubdtype(dtype, jnp.inexact) else "integer"


def _check_leaves(expected: Any, got: Any, owner: str, what: str, dtypes: bool) -> None:
    """Raises ValueError naming the leaves whose shape or dtype kind differ (same trees)."""
    e_leaves, g_leaves = jax.tree.leaves(expected), jax.tree.leaves(got)
    bad = [
        i
        for i, (e, g) in enumerate(zip(e_leaves, g_leaves, strict=True))
        if np.shape(e) != np.shape(g) or (dtypes and _kind(e) != _kind(g))
    ]
    if not bad:
        return
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(expected)[0]]

    def shown(x):
        return f"a {_kind(x)} array of shape {np.shape(x)}"

    details = [
        f"{paths[i] or 'the root'}: expected {shown(e_leaves[i])}, got {shown(g_leaves[i])}"
        for i in bad
    ]
    raise ValueError(
        f"{owner}: the {what} do not have the leaf shapes and dtypes of the params the state "
        f"was initialised with: {name_paths(details)}."
    )


def check_structure(
    expected: Any, got: Any, *, owner: str, what: str = "updates", dtypes: bool = True
) -> None:
    """Raises ValueError naming the paths where ``got`` and ``expected`` differ.

    ``expected`` is the tree the state was built from (via ``init``). The tree
    structures must be equal, every leaf must have the shape of its counterpart
    (a gradient of shape ``(3, 1)`` is not broadcast into a ``(3, 2)`` state) and,
    with ``dtypes=True``, its dtype kind (bool, integer, or real/complex).
    Only static shapes and dtypes are compared: the check runs when the step is
    traced and costs nothing in the compiled step.
    """
    expected_def = jax.tree.structure(expected)
    got_def = jax.tree.structure(got)
    if expected_def == got_def:
        _check_leaves(expected, got, owner, what, dtypes)
        return
    expected_paths, got_paths = _leaf_paths(expected), _leaf_paths(got)
    missing = sorted(builtins.set(expected_paths) - builtins.set(got_paths))
    unexpected = sorted(builtins.set(got_paths) - builtins.set(expected_paths))
    details = []
    if missing:
        details.append(f"missing from {what}: {name_paths(missing)}")
    if unexpected:
        details.append(f"in {what} but not in the state: {name_paths(unexpected)}")
    if not details:
        # The same paths, but a leaf is None (empty) on one side only: a masked-out leaf.
        empty_expected, empty_got = _none_paths(expected), _none_paths(got)
        if empty_expected != empty_got:
            flipped = sorted(empty_expected ^ empty_got)
            details.append(f"None in one and an array in the other at {name_paths(flipped)}")
    if not details:
        details.append(f"state structure {expected_def}, {what} structure {got_def}")
    raise ValueError(
        f"{owner}: the {what} do not have the tree structure of the params the state "
        f"was initialised with ({'; '.join(details)})."
    )


def map_unzip(fn: Any, n: int, first: Any, *rest: Any) -> tuple[Any, ...]:
    """Maps ``fn`` (returning an n-tuple per leaf) and returns n trees like ``first``.

    The per-leaf step of an optimizer returns its output and its new state
    together; this splits them back into trees. How the step is traced is a
    compile tactic (:func:`gradtx._tactics.per_leaf`), never a change in what
    it computes.
    """
    treedef = jax.tree.structure(first)
    fn = _tactics.per_leaf(fn, treedef.flatten_up_to(first))
    per_leaf = treedef.flatten_up_to(jax.tree.map(fn, first, *rest))
    columns = list(zip(*per_leaf, strict=True)) if per_leaf else [()] * n
    return tuple(treedef.unflatten(list(column)) for column in columns)


# ---------------------------------------------------------------------- counters


def safe_increment(count: Array) -> Array:
    """``count + 1`` for an int32 counter, saturating at the int32 maximum."""
    count = jnp.asarray(count, jnp.int32)
    return jnp.where(count < _INT32_MAX, count + 1, _INT32_MAX).astype(jnp.int32)


def zero_count() -> Array:
    """The initial value of a step counter: an int32 scalar zero."""
    return jnp.zeros([], jnp.int32)


# ---------------------------------------------------------------------- magnitudes


def abs_sq(x: Array) -> Array:
    """``|x|^2`` element-wise, real-valued for complex ``x`` (not ``x * x``)."""
    if jnp.iscomplexobj(x):
        return jnp.real(x) ** 2 + jnp.imag(x) ** 2
    return x * x


def squared_norm(tree: Any) -> Array:
    """``sum |x|^2`` over every element of every leaf, in at least float32."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros([], jnp.float32)
    leaves = _tactics.joined_for_sum([x.astype(compute_dtype(x.dtype)) for x in leaves])
    sums = [jnp.sum(abs_sq(x)) for x in leaves]
    dtype = jnp.result_type(*sums)
    return builtins.sum((s.astype(dtype) for s in sums), jnp.zeros([], dtype))


def global_norm(tree: Any) -> Array:
    """The Euclidean norm of the whole tree seen as one flat vector."""
    return jnp.sqrt(squared_norm(tree))


def across(collective: Any, axis_name: AxisName | None) -> Any:
    """``x -> collective(x, axis_name)`` (e.g. ``jax.lax.psum``), or ``x -> x`` for None.

    A reduction over the whole tree inside ``shard_map`` sees only this device's
    block of each leaf; passing its local result through ``across`` completes it
    over the mesh axis, so every device gets the value of the whole tree.
    """
    if axis_name is None:
        return lambda x: x
    return lambda x: collective(x, axis_name)


@jax.custom_jvp
def sqrt(x: Array) -> Array:
    """``jnp.sqrt(x)``, with derivative 0 at ``x = 0`` instead of ``inf``.

    The values are ``jnp.sqrt``'s, bit for bit. Only the derivative at 0 changes:
    a second moment ``v = |g|^2`` that is exactly 0 has ``dv = 2 g dg = 0``
    there, and ``inf * 0`` would make a meta-gradient through the step NaN (for
    Adam, RMSProp, AdaGrad, AdaBound with ``eps_root = 0`` and a gradient
    coordinate that is exactly 0). With derivative 0 the chain rule gives the
    finite one-sided value, ``d|g| = 0`` at ``g = 0``. Forward and reverse mode
    both use the rule (it is linear in the tangent).

    >>> import jax
    >>> float(jax.grad(sqrt)(0.0)), float(jax.grad(sqrt)(4.0))
    (0.0, 0.25)
    """
    return jnp.sqrt(x)


@sqrt.defjvp
def _sqrt_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (x,), (dx,) = primals, tangents
    root = jnp.sqrt(x)
    positive = x > 0
    return root, jnp.where(positive, dx / (2 * jnp.where(positive, root, 1)), 0)


def divide_by_root(numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator``, with 1 in place of a denominator of 0.

    For the second-moment methods: their root is 0 only when every gradient so
    far was 0, and then the numerator is 0 too, so the output is 0, not 0/0
    (which is what ``eps=0`` with an all-zero gradient would otherwise give).
    The guard is there whatever ``eps`` is, constant or traced, so a step
    computes the same numbers either way.
    """
    return numerator / jnp.where(denominator > 0, denominator, 1)


# ---------------------------------------------------------------------- moments


def moment_leaf(g: Array, moment: Array, decay: Any, order: int) -> Array:
    """One leaf's EMA: ``decay * moment + (1 - decay) * x`` of ``x = g``, ``|g|^2`` or ``g**order``.

    ``x`` is ``g`` for order 1, the squared magnitude ``|g|^2`` for order 2, and
    ``g**order`` for any other order. Computed in at least float32 and returned in
    the moment's dtype.
    """
    c = compute_dtype(jnp.promote_types(g.dtype, moment.dtype))
    g = as_dtype(g, c)
    x = g if order == 1 else abs_sq(g) if order == 2 else g**order
    if order == 2:
        c = real_dtype(c)
    return as_dtype(decay * as_dtype(moment, c) + (1 - decay) * as_dtype(x, c), moment.dtype)


def update_moment(updates: Any, moments: Any, decay: Any, order: int) -> Any:
    """The exponential moving average of ``updates**order`` over a whole tree.

    ``m <- decay * m + (1 - decay) * g`` for ``order=1`` and
    ``r <- decay * r + (1 - decay) * |g|^2`` for ``order=2`` (Goodfellow et al.
    2016, Alg. 8.5 and 8.7); ``g**order`` for other orders. A ``None`` update
    gives ``None``. Optax's ``optax.tree.update_moment`` call works as is; it
    differs on purpose for order 2 on complex leaves, where Optax's averages the
    complex ``g**2`` and this the real ``|g|^2`` (Optax's
    ``update_moment_per_elem_norm`` does that too), and in the dtype: the moment's.

    Args:
      updates: the tree of ``g``.
      moments: the tree of moments, of the same structure.
      decay: the EMA's decay in [0, 1].
      order: the power of ``g`` averaged (``|g|^2`` for 2).

    Returns:
      The new moments, each in its moment's dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.tree import update_moment
      >>> update_moment({"a": jnp.array([2.0])}, {"a": jnp.array([1.0])}, 0.5, 2)
      {'a': Array([2.5], dtype=float32)}
    """
    return jax.tree.map(
        lambda g, m: None if g is None else moment_leaf(g, m, decay, order),
        updates,
        moments,
        is_leaf=lambda x: x is None,
    )


def update_moment_per_elem_norm(updates: Any, moments: Any, decay: Any, order: int) -> Any:
    """The EMA of ``|g|**order``, the elementwise magnitude to the power ``order``.

    ``m <- decay * m + (1 - decay) * |g|^order`` for complex leaves; a real leaf
    uses ``g**order`` (signed for odd orders), as
    ``optax.tree.update_moment_per_elem_norm``. Computed in at least float32 and
    returned in the moment's dtype; a ``None`` update gives ``None``.

    Args:
      updates: the tree of ``g``.
      moments: the tree of moments, of the same structure.
      decay: the EMA's decay in [0, 1].
      order: the power of ``|g|`` averaged.

    Returns:
      The new moments, each in its moment's dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.tree import update_moment_per_elem_norm
      >>> z = {"a": jnp.array([3 + 4j])}
      >>> update_moment_per_elem_norm(z, {"a": jnp.array([0.0])}, 0.5, 1)
      {'a': Array([2.5], dtype=float32)}
    """

    def leaf(g, m):
        if g is None:
            return None
        c = compute_dtype(jnp.promote_types(g.dtype, m.dtype))
        g = as_dtype(g, c)
        x = abs_sq(g) ** (order / 2) if jnp.iscomplexobj(g) else g**order
        c = jnp.promote_types(x.dtype, m.dtype)
        return as_dtype(decay * as_dtype(m, c) + (1 - decay) * x, m.dtype)

    return jax.tree.map(leaf, updates, moments, is_leaf=lambda x: x is None)


def update_infinity_moment(updates: Any, moments: Any, decay: Any, eps: Any) -> Any:
    """The exponentially weighted infinity norm: ``u <- max(decay * u, |g| + eps)``.

    AdaMax's ``u`` (Kingma & Ba 2015, Alg. 2), with ``eps`` added inside the max
    as ``optax.tree.update_infinity_moment`` does. Returned in the moment's
    dtype; a ``None`` update gives ``None``.

    Args:
      updates: the tree of ``g``.
      moments: the tree of ``u``, of the same structure.
      decay: ``beta_2`` in [0, 1].
      eps: added to ``|g|`` inside the max.

    Returns:
      The new ``u``, each in its moment's dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.tree import update_infinity_moment
      >>> update_infinity_moment({"a": jnp.array([-3.0])}, {"a": jnp.array([4.0])}, 0.5, 0.0)
      {'a': Array([3.], dtype=float32)}
    """

    def leaf(g, u):
        if g is None:
            return None
        c = real_dtype(compute_dtype(jnp.promote_types(g.dtype, u.dtype)))
        new = jnp.maximum(jnp.abs(g).astype(c) + eps, decay * u.astype(c))
        return as_dtype(new, u.dtype)

    return jax.tree.map(leaf, updates, moments, is_leaf=lambda x: x is None)


def bias_correction_factor(decay: Any, count: Array, dtype: Any) -> Array:
    """``1 - decay**t`` in ``dtype``: the mass an EMA started at zero has after t steps."""
    dtype = real_dtype(compute_dtype(dtype))
    return 1 - jnp.asarray(decay, dtype) ** jnp.asarray(count).astype(dtype)


def bias_correction(moment: Any, decay: Any, count: Array) -> Any:
    """``m / (1 - decay**t)`` for every leaf (Kingma & Ba 2015, Alg. 1).

    Leaves are computed in at least float32 and returned in that dtype; callers
    cast the final update back to the gradient's dtype. Optax's
    ``optax.tree.bias_correction(moment, decay, count)`` call works as is; its
    result keeps a bfloat16 moment's dtype, where this one is float32.

    >>> bias_correction({"m": jnp.array([0.5])}, 0.5, jnp.int32(1))
    {'m': Array([1.], dtype=float32)}
    """

    def leaf(m):
        c = compute_dtype(m.dtype)
        return m.astype(c) / bias_correction_factor(decay, count, c)

    return jax.tree.map(leaf, moment)


# Optax's tree utilities (``__all__`` of gradtx/_tree_utils.py), which use the helpers above.
from gradtx._tree_utils import *  # noqa: E402, F403
