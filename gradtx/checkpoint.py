"""Checking a restored optimizer state against the state it must replace.

A checkpoint library hands back what it stored: :func:`flax.serialization.msgpack_restore`
gives nested dicts (tuples keyed ``'0'``, ``'1'``, ...), ``orbax-checkpoint``
restored without a target gives nested dicts and lists, and both give whatever
the writer wrote, which may come from another optimizer configuration.
:func:`restore_state` compares that against a *template*, the state the
running program builds (``tx.init(params)``, or its shapes from
:func:`jax.eval_shape`), and either returns a state of exactly the template's
structure, shapes and dtypes, or raises before building anything. A state is
never half restored.

Leaves are matched by their path, read as names: a dict key, a NamedTuple field
and a tuple or list index all give one name (``ScaleByAdamState.mu['w']`` at
index 0 of a chain is ``0/mu/w``), so the containers a serializer substitutes
for NamedTuples and tuples do not matter, while a field, key or leaf that
differs does.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx.base import OptState

_PYTHON_SCALARS = (bool, int, float, complex)


def _key_name(key: Any) -> str:
    """One entry of a key path as a name: the key, field or index, as text."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _named_leaves(tree: Any) -> dict[tuple[str, ...], Any]:
    """``{('0', 'mu', 'w'): leaf, ...}``: every leaf of ``tree`` under its path read as names."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _shown(path: tuple[str, ...]) -> str:
    return "/".join(path) or "<root>"


def _dtype(leaf: Any) -> np.dtype | None:
    """The dtype of an array leaf; None for a Python number (weakly typed)."""
    if isinstance(leaf, _PYTHON_SCALARS):
        return None
    return np.dtype(leaf.dtype)


def _exact_in(value: Any, dtype: np.dtype) -> bool:
    """Whether the Python number ``value`` is held exactly by ``dtype``."""
    try:
        return bool(np.asarray(value, dtype) == value)
    except (OverflowError, ValueError, TypeError):
        return False


def _leaf_differences(path: str, want: Any, got: Any) -> list[str]:
    """What differs between a template leaf and a restored leaf: type, shape, dtype."""
    if not isinstance(got, _PYTHON_SCALARS) and not hasattr(got, "dtype"):
        return [f"{path}: a {type(got).__name__}, expected an array"]
    problems = []
    want_shape, got_shape = tuple(np.shape(want)), tuple(np.shape(got))
    if want_shape != got_shape:
        problems.append(f"{path}: shape {got_shape}, expected {want_shape}")
    want_dtype, got_dtype = np.dtype(want.dtype), _dtype(got)
    if got_dtype is None:
        if not _exact_in(got, want_dtype):
            problems.append(f"{path}: the number {got!r} is not exactly a {want_dtype}")
    elif got_dtype != want_dtype:
        problems.append(f"{path}: dtype {got_dtype}, expected {want_dtype}")
    return problems


def state_differences(template: OptState, restored: Any) -> list[str]:
    """Every difference between a restored state and the template, as sentences.

    Args:
      template: the state the program expects (arrays or :class:`jax.ShapeDtypeStruct`).
      restored: what the checkpoint library returned.

    Returns:
      One line per difference: leaves missing from ``restored``, leaves it has
      that the template does not, and per shared leaf a different shape or dtype.
      Empty when ``restored`` matches.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> from gradtx.checkpoint import state_differences
      >>> params = {"w": jnp.zeros(2)}
      >>> state_differences(gradtx.adam(0.1).init(params), gradtx.sgd(0.1, 0.9).init(params))
      ['missing: 0/count, 0/mu/w, 0/nu/w', 'not in the template: 0/trace/w']
    """
    return _differences(_named_leaves(template), _named_leaves(restored))


def _differences(want: dict, got: dict) -> list[str]:
    """:func:`state_differences` on the two trees' named leaves."""
    missing = [_shown(path) for path in want if path not in got]
    unexpected = [_shown(path) for path in got if path not in want]
    problems = []
    if missing:
        problems.append(f"missing: {tree.name_paths(missing)}")
    if unexpected:
        problems.append(f"not in the template: {tree.name_paths(unexpected)}")
    for path, leaf in want.items():
        if path in got:
            problems.extend(_leaf_differences(_shown(path), leaf, got[path]))
    return problems


def _as_template_leaf(want: Any, got: Any, default: Any) -> jax.Array:
    """``got`` as a JAX array of ``want``'s dtype, placed like ``want``.

    A leaf on the default device comes back uncommitted, as ``jnp.asarray``
    makes it, so a jitted step that took the original state takes the restored
    one without compiling again; a leaf placed elsewhere (a sharded template) is
    put there with ``jax.device_put``.
    """
    sharding = getattr(want, "sharding", None)
    if sharding is None or sharding == default:
        return jnp.asarray(np.asarray(got, np.dtype(want.dtype)))
    value = got if isinstance(got, jax.Array) else np.asarray(got, np.dtype(want.dtype))
    return jax.device_put(value, sharding)


def restore_state(template: OptState, restored: Any) -> OptState:
    """Returns ``restored`` as a state shaped exactly like ``template``, or raises.

    ``restored`` may be a state of the template's own types (``flax.serialization.
    from_bytes``, ``orbax`` restored with a target) or the plain containers a
    serializer gives back without one (``flax.serialization.msgpack_restore``,
    ``orbax`` ``StandardCheckpointer().restore(path)``). Its leaves are matched
    to the template's by path (see the module docstring); every difference is
    collected first, so the error lists all of them and nothing is returned.
    Values are not converted: a dtype must match exactly (a Python number is
    accepted when the template's dtype holds it exactly).

    Args:
      template: the state the program expects: ``tx.init(params)`` or
        ``jax.eval_shape(tx.init, params)``. Where its leaves carry a sharding
        (placed arrays, ``ShapeDtypeStruct`` with ``sharding``) the restored
        leaves are placed with it.
      restored: the state read from the checkpoint.

    Returns:
      A state with the template's tree structure whose leaves are JAX arrays of
      the template's shapes and dtypes, holding the values of ``restored``.

    Raises:
      ValueError: the tree paths, a shape or a dtype differ; the message names
        every differing leaf.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> from flax import serialization
      >>> from gradtx.checkpoint import restore_state
      >>> params = {"w": jnp.ones(3)}
      >>> tx = gradtx.adam(0.1)
      >>> state = tx.update(params, tx.init(params), params)[1]
      >>> raw = serialization.msgpack_restore(serialization.to_bytes(state))
      >>> restore_state(tx.init(params), raw)[0].count
      Array(1, dtype=int32)
      >>> restore_state(gradtx.adam(0.1, mu_dtype=jnp.bfloat16).init(params), raw)
      Traceback (most recent call last):
      ...
      ValueError: restore_state: ... (0/mu/w: dtype float32, expected bfloat16).
    """
    want, got = _named_leaves(template), _named_leaves(restored)
    problems = _differences(want, got)
    if problems:
        raise ValueError(
            "restore_state: the restored state does not match the template "
            f"({'; '.join(problems)})."
        )
    default = jnp.zeros((), jnp.int8).sharding
    leaves = [_as_template_leaf(leaf, got[path], default) for path, leaf in want.items()]
    return jax.tree.unflatten(jax.tree.structure(template), leaves)
