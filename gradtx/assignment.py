"""The linear assignment problem (Optax's ``optax.assignment``).

:func:`hungarian_algorithm` pairs the rows and columns of a cost matrix so that
the summed cost is least; it runs under ``jax.jit`` and ``jax.vmap``.
:func:`base_hungarian_algorithm` solves the same problem by the plain textbook
search (one column settled per iteration), a simple reference for the first.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["base_hungarian_algorithm", "hungarian_algorithm"]


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
    cost = _checked_cost("hungarian_algorithm", cost_matrix)
    n, m = cost.shape
    if min(n, m) == 0:
        empty = jnp.zeros((0,), jnp.int32)
        return empty, empty
    if n > m:  # assign each column a row instead, then list the pairs by row
        cols, rows = _rows_to_columns(cost.T)
        order = jnp.argsort(rows)
        return rows[order], cols[order]
    return _rows_to_columns(cost)


def _checked_cost(owner: str, cost_matrix: Any) -> jax.Array:
    cost = jnp.asarray(cost_matrix)
    if cost.ndim != 2:
        raise ValueError(f"{owner}: cost_matrix must be 2-D, got shape {cost.shape}")
    if jnp.issubdtype(cost.dtype, jnp.complexfloating) or cost.dtype == jnp.bool_:
        raise TypeError(f"{owner}: cost_matrix must be real numbers, got {cost.dtype}")
    return cost


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


def base_hungarian_algorithm(cost_matrix: Any) -> tuple[jax.Array, jax.Array]:
    """The Hungarian algorithm in its plain textbook form (Crouse 2016, Alg. 4).

    Solves the same problem as :func:`hungarian_algorithm` (a least-cost
    assignment of ``min(n, m)`` rows to columns, no row or column twice) by the
    shortest augmenting path method as Crouse writes it: rows are assigned one
    at a time; for row ``k`` a Dijkstra search over the reduced costs
    ``C_ij - u_i - v_j`` settles one column per iteration (the cheapest one not
    yet reached) until it reaches a free column ``s``; then the dual potentials
    move and the path from ``k`` to ``s`` is flipped:

    .. math::
        u_k \\mathrel{+}= d_s, \\quad
        u_i \\mathrel{+}= d_s - d_{c(i)} \\ (i \\text{ reached}, i \\ne k), \\quad
        v_j \\mathrel{-}= d_s - d_j \\ (j \\text{ settled}),

    where ``d_j`` is the search's shortest path length to column ``j`` and
    ``c(i)`` the column row ``i`` held. A wide matrix is solved as given, a tall
    one through its transpose. Kept as a simple reference beside
    :func:`hungarian_algorithm` (Optax's ``base_hungarian_algorithm``).

    Args:
      cost_matrix: a 2-D array of real costs (integers are taken as floats).

    Returns:
      ``(i, j)``: two int32 arrays of length ``min(n, m)``, ``i`` increasing;
      the assignment's cost is ``cost_matrix[i, j].sum()``.

    Raises:
      ValueError: ``cost_matrix`` is not 2-D.
      TypeError: ``cost_matrix`` is complex or boolean.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.assignment import base_hungarian_algorithm
      >>> cost = jnp.array([[8, 4, 7], [5, 2, 3], [9, 6, 7], [9, 4, 8]])
      >>> i, j = base_hungarian_algorithm(cost)
      >>> int(cost[i, j].sum())
      15

    References:
      Crouse (2016), On implementing 2D rectangular assignment algorithms, IEEE
      Transactions on Aerospace and Electronic Systems 52(4), Alg. 4 (pp.
      1685-1686); Kuhn (1955), The Hungarian method for the assignment problem.
    """
    cost = _checked_cost("base_hungarian_algorithm", cost_matrix)
    n, m = cost.shape
    if min(n, m) == 0:
        empty = jnp.zeros((0,), jnp.int32)
        return empty, empty
    if n > m:
        col_of_row = _crouse(cost.T)  # one row of cost for each column, in column order
        order = jnp.argsort(col_of_row)
        return col_of_row[order], order.astype(jnp.int32)
    return jnp.arange(n, dtype=jnp.int32), _crouse(cost)


def _crouse(cost: jax.Array) -> jax.Array:
    """The column of each row of an ``n x m`` matrix, ``n <= m`` (Crouse's Alg. 4)."""
    n, m = cost.shape
    dtype = jnp.promote_types(cost.dtype, jnp.float32)
    cost = cost.astype(dtype)
    inf = jnp.asarray(jnp.inf, dtype)

    def assign_row(k, carry):
        u, v, col4row, row4col = carry

        def searching(s):
            return s[-1] < 0

        def settle_one_column(s):
            i, min_val, shortest, path, row_seen, col_seen, _ = s
            row_seen = row_seen.at[i].set(True)
            reduced = min_val + cost[i] - u[i] - v
            better = ~col_seen & (reduced < shortest)
            path = jnp.where(better, i, path)
            shortest = jnp.where(better, reduced, shortest)
            j = jnp.argmin(jnp.where(col_seen, inf, shortest)).astype(jnp.int32)
            col_seen = col_seen.at[j].set(True)
            free = row4col[j] < 0
            return (
                jnp.where(free, i, row4col[j]),
                shortest[j],
                shortest,
                path,
                row_seen,
                col_seen,
                jnp.where(free, j, -1),
            )

        start = (
            k,
            jnp.zeros((), dtype),
            jnp.full(m, inf),
            jnp.full(m, -1, jnp.int32),
            jnp.zeros(n, bool),
            jnp.zeros(m, bool),
            jnp.int32(-1),
        )
        _, min_val, shortest, path, row_seen, col_seen, sink = jax.lax.while_loop(
            searching, settle_one_column, start
        )

        # The potentials: the new row by the path's length, the other reached rows
        # and the settled columns by what the path saved over reaching them.
        held = shortest[jnp.clip(col4row, 0)]
        u = jnp.where(row_seen, u + min_val - held, u).at[k].set(u[k] + min_val)
        v = jnp.where(col_seen, v - (min_val - shortest), v)

        # Flip the path from the sink back to row k.
        def flipping(walk):
            return walk[-1]

        def flip(walk):
            col4row, row4col, j, _ = walk
            i = path[j]
            row4col = row4col.at[j].set(i)
            previous = col4row[i]
            col4row = col4row.at[i].set(j)
            return col4row, row4col, previous, i != k

        col4row, row4col, _, _ = jax.lax.while_loop(
            flipping, flip, (col4row, row4col, sink, jnp.bool_(True))
        )
        return u, v, col4row, row4col

    start = (
        jnp.zeros(n, dtype),
        jnp.zeros(m, dtype),
        jnp.full(n, -1, jnp.int32),
        jnp.full(m, -1, jnp.int32),
    )
    _, _, col4row, _ = jax.lax.fori_loop(0, n, assign_row, start)
    return col4row
