"""GaLore: an optimizer run on low-rank projections of the gradient (Zhao et al. 2024, Alg. 2).

For a weight matrix ``W`` (``m x n``) with gradient ``G``, every ``T`` steps a
rank-``r`` orthonormal basis ``P`` of ``G``'s leading singular vectors is taken
from an SVD; the base optimizer ``rho`` (Adam in the paper) runs on the
projection ``R = P^T G``, and its update is projected back and scaled by
``alpha``:

.. math::
    R_t = P_t^\\top G_t, \\quad N_t = \\rho_t(R_t), \\quad
    \\tilde G_t = \\alpha P_t N_t, \\quad W \\leftarrow W - \\eta \\tilde G_t

Symbols: ``r`` = ``rank``; ``T`` = ``update_proj_gap``; ``alpha`` = ``scale``;
``rho`` = ``base_optimizer``; ``eta`` = ``learning_rate``. By default (Optax's
``projection_type="reverse_std"``) a matrix with ``m < n`` is projected on the
right (``R = G Q`` with ``Q`` the leading right singular vectors,
``G~ = alpha N Q^T``), so the state is ``r x min(m, n)``-sized. The paper's
Alg. 2 (for ``m <= n``) and the authors' code (``proj_type="std"``) project a
wide matrix on the left and a tall one on the right instead (the state
``r x max(m, n)``): ``projection_type="std"``.
Leaves that are not projected (vectors, by default) go through ``rho`` whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, OptState, ScalarOrSchedule, Updates
from gradtx.combine import Mask, chain
from gradtx.optimizers.adam import scale_by_adam
from gradtx.transforms.regularize import _leafwise, add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate


class GaLoreDimensionNumbers(NamedTuple):
    """Which axes of a leaf are the rows (``reduction_axis``) and columns (``output_axis``).

    A leaf with more than two axes (attention weights stored as ``(embed, heads,
    head_dim)``) is projected as the matrix whose rows are the reduction axes
    and whose columns are the output axes, flattened in the order given; every
    axis must be in exactly one of the two.
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


class GaLoreState(NamedTuple):
    """State of :func:`scale_by_galore` (Optax's fields and order)."""

    count: Array  # int32 scalar: t, steps taken.
    base_optimizer_state: OptState  # rho's state, on the projected (low-rank) leaves.
    # P per leaf, (m, r) or (n, r) ((m + n, r), P over Q, for projection_type
    # "full"); a 0-d zero for a leaf left whole (Optax keeps a (0, 0) array there,
    # which orbax cannot checkpoint).
    projector: Updates


def _check_state_fits(owner: str, state: GaLoreState, expected: GaLoreState) -> None:
    """Raises ValueError naming the state arrays whose shapes are not those ``init`` gives."""
    if jax.tree.structure(state) != jax.tree.structure(expected):
        raise ValueError(f"{owner}: the state's tree is not the one init gives these updates.")
    paths = jax.tree_util.tree_flatten_with_path(expected)[0]
    bad = [
        f"{jax.tree_util.keystr(path)}: expected shape {want.shape}, got {jnp.shape(got)}"
        for (path, want), got in zip(paths, jax.tree.leaves(state), strict=True)
        if jnp.shape(got) != want.shape
    ]
    if bad:
        raise ValueError(
            f"{owner}: the state was built for params of other shapes than these updates "
            f"({'; '.join(bad)}); call init with the params being trained."
        )


def _axes(value: Sequence[int] | int, ndim: int) -> tuple[int, ...]:
    values = (value,) if isinstance(value, int) else tuple(value)
    return tuple(a % ndim for a in values)


def _as_matrix(x: Array, dims: GaLoreDimensionNumbers) -> tuple[Array, Callable[[Array], Array]]:
    """``x`` as a (rows, columns) matrix, and the function that undoes it."""
    if x.ndim < 2:
        raise ValueError(f"galore: a projected leaf needs >= 2 axes, got shape {x.shape}.")
    rows, cols = _axes(dims.reduction_axis, x.ndim), _axes(dims.output_axis, x.ndim)
    if set(rows) & set(cols) or sorted(rows + cols) != list(range(x.ndim)):
        raise ValueError(
            f"galore: {dims} must split the axes of shape {x.shape} into two disjoint sets."
        )
    order = rows + cols
    moved_shape = tuple(x.shape[a] for a in order)
    inverse = tuple(order.index(a) for a in range(x.ndim))
    matrix = x.transpose(order).reshape(math.prod(moved_shape[: len(rows)]), -1)
    return matrix, lambda y: y.reshape(moved_shape).transpose(inverse)


_PROJECTION_TYPES = ("reverse_std", "std", "left", "right", "full")


def _side(shape: tuple[int, int], projection_type: str) -> str:
    """Where a ``(rows, cols)`` matrix is projected: ``"left"`` (``P^T G``),
    ``"right"`` (``G Q``) or ``"full"`` (``P^T G Q``).

    ``"reverse_std"`` (Optax's): left when ``rows >= cols``, else right, so the
    projector spans the longer side and the state is ``r x min(m, n)``.
    ``"std"`` (the paper's, the authors' default): the other way round, so the
    projector spans the shorter side and the state is ``r x max(m, n)``.
    """
    if projection_type == "reverse_std":
        return "left" if shape[0] >= shape[1] else "right"
    if projection_type == "std":
        return "right" if shape[0] >= shape[1] else "left"
    return projection_type


def _shapes(rows: int, cols: int, r: int, side: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(projector shape, projected gradient shape)`` for a ``rows x cols`` matrix."""
    if side == "left":
        return (rows, r), (r, cols)
    if side == "right":
        return (cols, r), (rows, r)
    return (rows + cols, r), (r, r)  # "full": P stacked over Q


def _new_projector(g: Array, rank: int, svd_dtype: Any, side: str) -> Array:
    """The ``rank`` leading singular vectors of ``g``: left ones (``U``), right ones
    (``V``), or, for ``"full"``, ``U`` stacked over ``V`` (``(m + n, rank)``).

    Computed in ``svd_dtype`` (``None``: ``g``'s, at least float32); the caller
    stores them in the state's dtype, the params'.
    """
    c = tree.compute_dtype(g.dtype) if svd_dtype is None else svd_dtype
    u, _, vh = jnp.linalg.svd(g.astype(c), full_matrices=False)
    if side == "left":
        return u[:, :rank]
    if side == "right":
        return vh[:rank, :].T
    return jnp.concatenate([u[:, :rank], vh[:rank, :].T])


def _project(matrix: Array, projector: Array, side: str) -> Array:
    """``R = P^T G``, ``G Q`` or ``P^T G Q``."""
    if side == "left":
        return projector.T @ matrix
    if side == "right":
        return matrix @ projector
    p, q = projector[: matrix.shape[0]], projector[matrix.shape[0] :]
    return p.T @ matrix @ q


def _project_back(n: Array, projector: Array, rows: int, side: str) -> Array:
    """``P N``, ``N Q^T`` or ``P N Q^T`` (``rows``: the full matrix's row count)."""
    if side == "left":
        return projector @ n
    if side == "right":
        return n @ projector.T
    p, q = projector[:rows], projector[rows:]
    return p @ n @ q.T


def _project_leaf(g, projector, dims, rank, refresh, svd_dtype, projection_type):
    """``R`` (see :func:`_project`) with ``P`` renewed from ``G``'s SVD when ``refresh``."""
    if dims is None:
        return g, projector
    matrix, _ = _as_matrix(g, dims)
    r = min(rank, *matrix.shape)
    side = _side(matrix.shape, projection_type)
    projector = jax.lax.cond(
        refresh,
        lambda: _new_projector(matrix, r, svd_dtype, side).astype(projector.dtype),
        lambda: projector,
    )
    return _project(matrix, projector, side), projector


def _project_back_leaf(n, projector, g, dims, scale, projection_type):
    """``alpha`` times the projected-back ``N``, in the shape and dtype of ``g``."""
    if dims is None:
        return n.astype(g.dtype)
    matrix, undo = _as_matrix(g, dims)
    side = _side(matrix.shape, projection_type)
    full = _project_back(n, projector, matrix.shape[0], side)
    return (scale * undo(full)).astype(g.dtype)


def scale_by_galore(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: GradientTransformation | None = None,
    weight_dimension_numbers: Any | None = None,
    *,
    svd_dtype: Any | None = jnp.float32,
    projection_type: str = "reverse_std",
) -> GradientTransformation:
    """GaLore's scaling: ``base_optimizer`` on rank-``r`` projections of each matrix gradient.

    .. math::
        P \\leftarrow U_{:, :r}(G) \\text{ every } T \\text{ steps}, \\quad
        \\text{out} = \\alpha \\, P \\, \\rho(P^\\top G)

    (Zhao et al. 2024, Alg. 2), with ``U(G)`` the left singular vectors of ``G``,
    computed at steps ``t = 1, T + 1, 2T + 1, ...``; with the default
    ``projection_type`` a matrix with fewer rows than columns is projected on
    the right (see the module docstring). The base optimizer's state lives on
    the projections, so Adam's two moments take ``2 r min(m, n)`` numbers
    instead of ``2 m n`` (``2 r max(m, n)`` with ``projection_type="std"``).

    The refresh is the same in the paper, Optax and the authors' PyTorch code
    (``galore_torch``): an SVD at the first step and then every ``T`` steps
    (their 0-based counters at ``t mod T = 0``), with the base optimizer's
    moments kept, not reset, across a refresh; ``alpha`` multiplies the
    projected-back update of projected leaves only, in all three. So in this
    block only the side the projection is taken on differs
    (``projection_type``); :func:`galore`'s decay has its own (``decay_form``).

    Args:
      rank: ``r`` >= 1, the projection's rank (capped at ``min(m, n)``).
      update_proj_gap: ``T`` >= 1, steps between SVDs.
      scale: ``alpha``, multiplies the projected-back updates.
      base_optimizer: ``rho``, a transformation that reads only the updates
        (``scale_by_adam``, ``scale_by_lion``, ...; not one that reads the params,
        which it would be given as ``None``); ``None`` uses :func:`scale_by_adam`.
      weight_dimension_numbers: which leaves are projected and how: ``None``
        (every 2-D leaf, rows = axis 0), one :class:`GaLoreDimensionNumbers`
        (every leaf with >= 2 axes), a tree of them with ``None`` for leaves to
        leave whole, or a function of the params returning such a tree.
      svd_dtype: the dtype the SVD runs in: ``float32`` (the default, Optax's
        and the authors' PyTorch code's, which both cast any other dtype to
        float32 for it: a float64 gradient is rounded, a bfloat16 one widened),
        or ``None`` for the gradient's own dtype, at least float32 (float64
        stays float64; the paper names no precision). The projector is kept in
        the params' dtype either way.
      projection_type: which side of an ``m x n`` matrix is projected, named
        as the authors' ``proj_type``:

        - ``"reverse_std"`` (default, Optax's): ``P^T G`` with ``P`` the
          leading left singular vectors when ``m >= n``, else ``G Q`` with
          ``Q`` the leading right ones: the projector spans the longer side,
          the state is ``r x min(m, n)``.
        - ``"std"`` (the paper's Alg. 2, which takes the left projector for
          ``m <= n``, and the authors' default): the other way round, ``G Q``
          when ``m >= n``, else ``P^T G``: the projector spans the shorter
          side, the state is ``r x max(m, n)``. For a square matrix the
          authors' code (and this) projects on the right, the paper's
          ``m <= n`` on the left.
        - ``"left"`` / ``"right"``: always ``P^T G`` / always ``G Q``.
        - ``"full"``: both, ``R = P^T G Q`` (``r x r``), back as
          ``alpha P N Q^T``; the projector leaf holds ``P`` stacked over ``Q``,
          ``(m + n) x r``.

        Any choice is a rank-``r`` truncation of ``G`` at a refresh step; they
        differ in between, and in where the state is kept.

    Raises:
      ValueError: ``rank`` or ``update_proj_gap`` not an integer >= 1; ``scale``
        not finite; ``projection_type`` not one of the five names; dimension
        numbers that do not split a leaf's axes.

    Note:
      Singular vectors are defined up to sign. A sign flip at a refresh
      changes the base optimizer's path (its moments were built in the old
      basis), so runs that take the SVD at different precisions (``svd_dtype``)
      or with another library's SVD may part ways after a refresh, as they do
      in the authors' code.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_galore(rank=1, base_optimizer=gradtx.identity())
      >>> g = jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
      >>> tx.update(g, tx.init(g))[0]  # the rank-1 part of g
      Array([[3., 0.],
             [0., 0.],
             [0., 0.]], dtype=float32)
      >>> tx = gradtx.scale_by_galore(rank=1, projection_type="std")
      >>> tx.init(g).projector.shape  # the paper's side for 3 x 2: Q spans the columns
      (2, 1)
    """
    owner = "scale_by_galore"
    _checks.positive_int(owner, "rank", rank)
    _checks.positive_int(owner, "update_proj_gap", update_proj_gap)
    _checks.finite(owner, "scale", scale)
    _checks.dtype_or_none(owner, "svd_dtype", svd_dtype)
    if not isinstance(projection_type, str) or projection_type not in _PROJECTION_TYPES:
        raise ValueError(
            f"{owner}: projection_type must be one of {_PROJECTION_TYPES}, got {projection_type!r}."
        )
    if base_optimizer is None:
        base_optimizer = scale_by_adam()

    def dims_of(tree_):
        spec = weight_dimension_numbers
        if spec is None:
            return jax.tree.map(lambda p: GaLoreDimensionNumbers() if p.ndim == 2 else None, tree_)
        if isinstance(spec, GaLoreDimensionNumbers):
            return jax.tree.map(lambda p: spec if p.ndim >= 2 else None, tree_)
        return spec(tree_) if callable(spec) else spec

    def shapes(p, dims):
        if dims is None:
            return tree.zeros_beside(p, (), p.dtype), jnp.zeros_like(p)
        rows, cols = _as_matrix(p, dims)[0].shape
        r = min(rank, rows, cols)
        projector, low = _shapes(rows, cols, r, _side((rows, cols), projection_type))
        return tree.zeros_beside(p, projector, p.dtype), tree.zeros_beside(p, low, p.dtype)

    def dims_list(tree_):
        """The dimension numbers of each leaf of ``tree_``, in leaf order (None: whole)."""
        return jax.tree.structure(tree_).flatten_up_to(dims_of(tree_))

    def init_fn(params):
        leaves, treedef = jax.tree.flatten(params)
        if not leaves:
            return GaLoreState(tree.zero_count(), base_optimizer.init(params), params)
        pairs = [shapes(p, d) for p, d in zip(leaves, dims_list(params), strict=True)]
        projectors, proxies = (treedef.unflatten([pair[i] for pair in pairs]) for i in (0, 1))
        return GaLoreState(tree.zero_count(), base_optimizer.init(proxies), projectors)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is not None:  # the state holds no full-shaped leaf to check against
            tree.check_structure(params, updates, owner=owner)
        elif jax.tree.structure(state.projector) != jax.tree.structure(updates):
            raise ValueError(f"{owner}: the updates' tree differs from the one given to init.")
        _check_state_fits(owner, state, jax.eval_shape(init_fn, updates))
        refresh = state.count % update_proj_gap == 0
        grads, treedef = jax.tree.flatten(updates)
        dims = dims_list(updates)
        pairs = [
            _project_leaf(g, p, d, rank, refresh, svd_dtype, projection_type)
            for g, p, d in zip(grads, treedef.flatten_up_to(state.projector), dims, strict=True)
        ]
        low, projectors = (treedef.unflatten([pair[i] for pair in pairs]) for i in (0, 1))
        steps, base_state = base_optimizer.update(low, state.base_optimizer_state, None)
        out = [
            _project_back_leaf(n, p, g, d, scale, projection_type)
            for n, p, g, d in zip(
                treedef.flatten_up_to(steps),
                treedef.flatten_up_to(projectors),
                grads,
                dims,
                strict=True,
            )
        ]
        state = GaLoreState(tree.safe_increment(state.count), base_state, projectors)
        return treedef.unflatten(out), state

    return GradientTransformation(init_fn, update_fn)


def galore(
    learning_rate: ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: GradientTransformation | None = None,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
    weight_dimension_numbers: Any | None = None,
    *,
    svd_dtype: Any | None = jnp.float32,
    projection_type: str = "reverse_std",
    decay_form: str = "optax",
) -> GradientTransformation:
    """GaLore (Zhao et al. 2024, Alg. 2): a low-rank-state optimizer with decoupled decay.

    .. math::
        W \\leftarrow W - \\eta \\left( \\alpha P \\rho(P^\\top G) + \\lambda W \\right)

    Composition: ``chain(scale_by_galore(rank, update_proj_gap, scale,
    base_optimizer, weight_dimension_numbers), add_decayed_weights(lambda,
    mask), scale_by_learning_rate(eta))``; see :func:`scale_by_galore`. The
    decay acts on the full weights (give it here, not in ``base_optimizer``);
    with ``decay_form="authors"`` it follows the rate and reads the weights
    after the step.

    Args:
      learning_rate: ``eta``, a number or a schedule.
      rank, update_proj_gap, scale, base_optimizer: see :func:`scale_by_galore`.
      weight_dimension_numbers, svd_dtype, projection_type: see
        :func:`scale_by_galore` (``projection_type="std"`` is the paper's side,
        the default ``"reverse_std"`` Optax's).
      weight_decay: ``lambda`` >= 0 (default 0, Optax's).
      mask: which leaves are decayed (see :func:`add_decayed_weights`).
      decay_form: when the decay reads the weights (the paper's Alg. 2 has no
        decay). ``"optax"`` (default, Optax's): before the step, ``W <- W -
        eta (alpha P N + lambda W)``. ``"authors"``: after it, on the weights
        the step lands on, ``W <- (W - eta alpha P N)(1 - eta lambda)``, as the
        authors' ``GaLoreAdamW`` (and ``pytorch_optimizer.GaLore``) do; the two
        differ by ``eta^2 lambda alpha P N`` a step.

    Raises:
      ValueError: ``decay_form`` not ``"optax"`` or ``"authors"``; a bad
        ``weight_decay``; the others as :func:`scale_by_galore`.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)
      >>> tx = gradtx.galore(0.1, rank=2, update_proj_gap=10)
      >>> p = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}; state = tx.init(p)
      >>> state[0].projector["w"].shape  # 4 >= 3 rows: P is (4, 2), Adam sees (2, 3)
      (4, 2)
      >>> for _ in range(50):
      ...     updates, state = tx.update(jax.grad(loss)(p), state, p)
      ...     p = gradtx.apply_updates(p, updates)
      >>> bool(loss(p) < 0.5)
      True

    References:
      Zhao, Zhang, Chen, Wang, Anandkumar & Tian (2024), GaLore: Memory-Efficient
      LLM Training by Gradient Low-Rank Projection, ICML, Alg. 2.
    """
    _checks.learning_rate("galore", learning_rate)
    if decay_form not in ("optax", "authors"):
        raise ValueError(
            f"galore: decay_form must be one of ('optax', 'authors'), got {decay_form!r}."
        )
    block = scale_by_galore(
        rank,
        update_proj_gap,
        scale,
        base_optimizer,
        weight_dimension_numbers,
        svd_dtype=svd_dtype,
        projection_type=projection_type,
    )
    if decay_form == "optax":
        return chain(
            block,
            add_decayed_weights(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )
    _checks.non_negative("galore", "weight_decay", weight_decay, schedule=True)
    return chain(
        block,
        scale_by_learning_rate(learning_rate),
        _leafwise("galore", _decay_after_step, (weight_decay, learning_rate), mask),
    )


def _decay_after_step(u: Array, w: Array, weight_decay: Any, learning_rate: Any) -> Array:
    """``(w + u)(1 - eta lambda) - w``: the step ``u`` taken, then the landed weights decayed."""
    return u - learning_rate * weight_decay * (w + u)
