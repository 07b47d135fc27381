"""Optax's older spelling of :mod:`gradtx.tree`: ``tree_utils.tree_add`` is ``tree.add``.

Optax keeps its tree functions in ``optax.tree`` and, under the older names with
a ``tree_`` prefix, in ``optax.tree_utils``. This module answers to the older
names with the functions of :mod:`gradtx.tree` (``gradtx.tree_utils.tree_add``
is ``gradtx.tree.add``; ``NamedTupleKey`` keeps its name), so that code written
against ``optax.tree_utils`` runs with ``import gradtx as optax``. It holds no
implementation of its own.

Examples:
  >>> import gradtx, jax.numpy as jnp
  >>> gradtx.tree_utils.tree_add is gradtx.tree.add
  True
  >>> gradtx.tree_utils.tree_norm({"a": jnp.array([3.0, 4.0])})
  Array(5., dtype=float32)
"""

from __future__ import annotations

from typing import Any

from gradtx import tree

# Optax 0.2.8's ``optax.tree_utils`` namespace.
OPTAX_NAMES = (
    "NamedTupleKey",
    "tree_add",
    "tree_add_scale",
    "tree_allclose",
    "tree_batch_shape",
    "tree_bias_correction",
    "tree_cast",
    "tree_cast_like",
    "tree_clip",
    "tree_conj",
    "tree_div",
    "tree_dtype",
    "tree_full_like",
    "tree_get",
    "tree_get_all_with_path",
    "tree_map_params",
    "tree_max",
    "tree_min",
    "tree_mul",
    "tree_norm",
    "tree_ones_like",
    "tree_random_like",
    "tree_real",
    "tree_scale",
    "tree_set",
    "tree_size",
    "tree_split_key_like",
    "tree_sub",
    "tree_sum",
    "tree_unwrap_random_key_data",
    "tree_update_infinity_moment",
    "tree_update_moment",
    "tree_update_moment_per_elem_norm",
    "tree_vdot",
    "tree_where",
    "tree_zeros_like",
)


def __getattr__(name: str) -> Any:
    if name in OPTAX_NAMES:
        return getattr(tree, name.removeprefix("tree_"))
    raise AttributeError(f"module 'gradtx.tree_utils' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *OPTAX_NAMES})
