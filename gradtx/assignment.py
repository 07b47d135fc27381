"""The linear assignment problem (Optax's ``optax.assignment``).

:func:`hungarian_algorithm` pairs the rows and columns of a cost matrix so that
the summed cost is least; it runs under ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["hungarian_algorithm"]


def hungarian_algorithm(cost_matrix: Any) -> tuple[jax.Array, jax.Array]:
    """The Hungarian algorithm: a least-cost assignment of rows to columns.

    For an ``n x m`` cost matrix ``C`` it finds ``min(n, m)`` pairs ``(i_k, j_k)``,
    no row or column used twice, minimising ``sum_k C[i_k, j_k]``:

    .. math::
        \\min_{X \\in \\{0,1\\}^{n \\times m}} \\sum_{i,j} C_{ij} X_{ij}
        \\quad \\text{s.t.} \\quad \\sum_j X_{ij} \\le 1,\\ \\sum_i X_{ij} \\le 1,\\
        \\sum_{i,j} X_{ij} = \\min(n, m).

    Rows are added one at a time; each is matched by a shortest augmenting path
    in the reduced costs ``C_ij - u_i - v_j``, whose dual potentials ``u, v``
    keep every reduced cost non-negative (Kuhn 1955; Munkres 1957; the
    ``O(n^2 m)`` form with potentials of Jonker & Volgenant 1987). Each row's
    search is a ``lax.while_loop`` over columns, vectorised across them.

    Args:
      cost_matrix: a 2-D array of real costs (integers are taken as floats).

    Returns:
      ``(i, j)``: two int32 arrays of length ``min(n, m)``, ``i`` increasing;
      the assignment's cost is ``cost_matrix[i, j].sum()``. Ties between equally
      cheap assignments may be broken differently from other implementations.

    Raises:
      ValueError: ``cost_matrix`` is not 2-D.
      TypeError: ``cost_matrix`` is complex or boolean.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.assignment import hungarian_algorithm
      >>> cost = jnp.array([[8, 4, 7], [5, 2, 3], [9, 6, 7], [9, 4, 8]])
      >>> i, j = hungarian_algorithm(cost)
      >>> i, j, int(cost[i, j].sum())
      (Array([0, 1, 3], dtype=int32), Array([0, 2, 1], dtype=int32), 15)
    """
    cost = jnp.asarray(cost_matrix)
    if cost.ndim != 2:
        raise ValueError(f"hungarian_algorithm: cost_matrix must be 2-D, got shape {cost.shape}")
    if jnp.issubdtype(cost.dtype, jnp.complexfloating) or cost.dtype == jnp.bool_:
        raise TypeError(f"hungarian_algorithm: cost_matrix must be real numbers, got {cost.dtype}")
    n, m = cost.shape
    if min(n, m) == 0:
        empty = jnp.zeros((0,), jnp.int32)
        return empty, empty
    if n > m:  # assign each column a row instead, then list the pairs by row
        cols, rows = _rows_to_columns(cost.T)
        order = jnp.argsort(rows)
        return rows[order], cols[order]
    return _rows_to_columns(cost)


def _rows_to_columns(cost: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Every row of an ``n x m`` matrix, ``n <= m``, matched to a column."""
    n, m = cost.shape
    dtype = jnp.promote_types(cost.dtype, jnp.float32)
    inf = jnp.asarray(jnp.inf, dtype)
    # 1-based as in the textbook form: row 0 and column 0 are the "virtual" ones.
    padded = jnp.zeros((n + 1, m + 1), dtype).at[1:, 1:].set(cost.astype(dtype))
    columns = jnp.arange(m + 1)

    def add_row(i, carry):
        u, v, row_of = carry  # row_of[j]: the (1-based) row matched to column j, 0 if none
        row_of = row_of.at[0].set(i)

        def not_reached_free_column(search):
            j0 = search[5]
            return search[2][j0] != 0

        def grow(search):
            u, v, row_of, min_reduced, way, j0, used = search
            used = used.at[j0].set(True)
            i0 = row_of[j0]
            reduced = padded[i0] - u[i0] - v
            better = ~used & (reduced < min_reduced)
            min_reduced = jnp.where(better, reduced, min_reduced)
            way = jnp.where(better, j0, way)
            candidates = jnp.where(used, inf, min_reduced)
            j1 = jnp.argmin(candidates).astype(jnp.int32)
            delta = candidates[j1]
            # Used columns' rows are distinct: shift their potentials by delta.
            u = u.at[row_of].add(jnp.where(used, delta, 0))
            v = jnp.where(used, v - delta, v)
            min_reduced = jnp.where(used, min_reduced, min_reduced - delta)
            return u, v, row_of, min_reduced, way, j1, used

        start = (
            u,
            v,
            row_of,
            jnp.full(m + 1, inf),
            jnp.zeros(m + 1, jnp.int32),
            jnp.int32(0),
            jnp.zeros(m + 1, bool),
        )
        u, v, row_of, _, way, j0, _ = jax.lax.while_loop(not_reached_free_column, grow, start)

        def step_back(walk):
            row_of, j0 = walk
            j1 = way[j0]
            return row_of.at[j0].set(row_of[j1]), j1

        row_of, _ = jax.lax.while_loop(lambda walk: walk[1] != 0, step_back, (row_of, j0))
        return u, v, row_of

    start = (jnp.zeros(n + 1, dtype), jnp.zeros(m + 1, dtype), jnp.zeros(m + 1, jnp.int32))
    _, _, row_of = jax.lax.fori_loop(1, n + 1, add_row, start)
    # Invert row_of (columns 1..m) into the column of each row; unmatched columns drop.
    target = jnp.where(row_of[1:] > 0, row_of[1:] - 1, n)
    column_of_row = jnp.zeros(n, jnp.int32).at[target].set(columns[1:] - 1, mode="drop")
    return jnp.arange(n, dtype=jnp.int32), column_of_row
