"""Shampoo in its blocked, grafted form (Gupta, Koren & Singer 2018, Alg. 1; Anil et al.
2020; Shi et al. 2023).

Shampoo preconditions a matrix gradient ``G`` from both sides: it accumulates the
row statistics ``L = sum G G^T`` and the column statistics ``R = sum G^T G`` and
steps along ``L^{-1/4} G R^{-1/4}``. The distributed form used in practice splits
each matrix into blocks of at most ``block_size`` rows and columns (each block its
own ``L`` and ``R``), recomputes the inverse roots every few steps only, and
*grafts* the step length of a diagonal method (AdaGrad or Adam) onto Shampoo's
direction, block by block.

Sharding: ``nu`` and ``mu`` are shaped like their parameter and follow its
sharding. The blocks' ``L, R`` and roots, stacked along a leading axis, are
split along it over the mesh axes that split the parameter's rows (the first
axis of the rows a tensor merges, when the others are whole), then those that
split its columns, when their devices divide the number of blocks; the block
sides are whole. This is the rule registered with ``gradtx.sharding``, which
``state_shardings`` applies (``zero1_state_shardings`` splits each stack along
its first divisible dimension, as a moment); an eager ``init`` places the
blocks so. Each device then holds, and roots, ``1/n`` of the
blocks; they are its own blocks of the parameter when the rows alone are split
and ``n`` divides the number of block rows (or the columns alone, with one
block row), and XLA moves the gradient's blocks to them otherwise.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradtx import _checks, sharding, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import chain
from gradtx.linear_algebra import matrix_inverse_pth_root
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate

_GRAFTINGS = ("adam", "adagrad", "sgd", None)
_ROOT_METHODS = ("eigh", "newton")
_EXACT = lax.Precision.HIGHEST  # no TF32 / bfloat16 passes in the matrix products


class ScaleByShampooState(NamedTuple):
    """State of :func:`scale_by_shampoo`."""

    count: Array  # int32 scalar: the steps taken, t - 1 during step t.
    preconditioners: Any  # per leaf: for a matrix (or a tensor, seen as one), the
    # tuple (L, R, L^{-1/p}, R^{-1/p}) of its nr x nc blocks, stacked row by row:
    # (nr * nc, br, br) and (nr * nc, bc, bc); () for a vector or a scalar.
    nu: Updates  # the grafted method's second moment v (AdaGrad's sum, Adam's EMA),
    # shaped like the params (zeros, unused, for grafting "sgd" or None).
    mu: Updates  # the momentum m of the step, shaped like the params.


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The matrix a leaf of rank >= 2 is preconditioned as: its last axis are the columns."""
    return math.prod(shape[:-1]), shape[-1]


def _grid(size: int, block_size: int) -> tuple[int, int]:
    """``(number of blocks, block length)`` along an axis of ``size``; the last block padded."""
    length = min(block_size, size)
    return -(-size // length), length


def _to_blocks(g: Array, block_size: int) -> Array:
    """``(m, n) -> (nr * nc, br, bc)``: the blocks of ``g`` row by row, zero-padded to whole."""
    m, n = g.shape
    (nr, br), (nc, bc) = _grid(m, block_size), _grid(n, block_size)
    g = jnp.pad(g, ((0, nr * br - m), (0, nc * bc - n)))
    return g.reshape(nr, br, nc, bc).transpose(0, 2, 1, 3).reshape(nr * nc, br, bc)


def _from_blocks(blocks: Array, m: int, n: int, block_size: int) -> Array:
    """The inverse of :func:`_to_blocks`: ``(nr * nc, br, bc) -> (m, n)``, padding dropped."""
    (nr, br), (nc, bc) = _grid(m, block_size), _grid(n, block_size)
    blocks = blocks.reshape(nr, nc, br, bc).transpose(0, 2, 1, 3)
    return blocks.reshape(nr * br, nc * bc)[:m, :n]


def _eigh(a: Array) -> tuple[Array, Array]:
    """``jnp.linalg.eigh`` of a stack of matrices; on CPU one matrix per LAPACK call.

    jaxlib 0.10's CPU ``eigh`` hands the matrices of a batch to XLA's intra-op
    thread pool and blocks its own pool thread until they are done. Shampoo's
    per-leaf roots are independent, so XLA may run several such calls at once;
    when they hold every thread of the pool (2 on a 2-core machine), none of
    the work they wait for can start and the step never returns. A call on one
    matrix runs on the calling thread, so ``lax.map`` over the stack cannot
    block; the decompositions are the same LAPACK calls on the same matrices.
    """
    return lax.platform_dependent(
        a, cpu=lambda x: lax.map(jnp.linalg.eigh, x), default=jnp.linalg.eigh
    )


def _inverse_root(a: Array, p: int, method: str) -> Array:
    """``a^{-1/p}`` of a symmetric positive definite matrix (a batch of them)."""
    if method == "eigh":
        w, v = _eigh(a)
        w = jnp.maximum(w, jnp.finfo(a.dtype).tiny)  # rounding may leave w slightly < 0
        return jnp.matmul(
            v * w[..., None, :] ** (-1.0 / p), jnp.swapaxes(v, -1, -2), precision=_EXACT
        )
    flat = a.reshape(-1, *a.shape[-2:])
    root = jax.vmap(lambda x: matrix_inverse_pth_root(x, p, ridge_epsilon=0.0)[0])(flat)
    return root.reshape(a.shape)


def _graft_leaf(g, nu, count, grafting, graft_b2, graft_eps):
    """The grafted method's step and its new second moment (computed in ``g``'s dtype)."""
    if grafting == "adagrad":
        nu = nu + g * g
        return g / (jnp.sqrt(nu) + graft_eps), nu
    if grafting == "adam":
        nu = graft_b2 * nu + (1 - graft_b2) * g * g
        nu_hat = nu / (1 - graft_b2 ** (count + 1).astype(g.dtype))
        return g / (jnp.sqrt(nu_hat) + graft_eps), nu
    return g, nu  # "sgd", or None: the gradient itself


def shampoo_leaf(g, pre, nu, m, count, *, b1, b2, block_size, matrix_epsilon, grafting,
                 graft_b2, graft_eps, root_method, exponent, frequency, start):  # fmt: skip
    """One leaf of blocked Shampoo with grafting and momentum.

    Per block ``G_ij`` of the leaf (viewed as a matrix): ``L <- b2 L + (1 - b2) G G^T``
    (``L + G G^T`` when ``b2 = 1``), likewise ``R`` with ``G^T G``; every
    ``frequency`` steps from ``start`` on, ``L^{-1/p}, R^{-1/p}`` of ``L + eps I``,
    ``R + eps I``; the direction ``P = L^{-1/p} G R^{-1/p}`` rescaled to the
    grafted step's norm on the block; then ``m <- b1 m + step``.
    """
    c = tree.compute_dtype(g.dtype)
    g_c = tree.as_dtype(g, c)
    graft, new_nu = _graft_leaf(g_c, tree.as_dtype(nu, c), count, grafting, graft_b2, graft_eps)
    step = graft
    new_pre = pre
    if pre:
        left, right, left_root, right_root = (tree.as_dtype(x, c) for x in pre)
        shape = _matrix_shape(g.shape)
        blocks = _to_blocks(g_c.reshape(shape), block_size)
        fresh = jnp.where(b2 == 1, 1, 1 - b2)  # b2 = 1: Gupta et al.'s sum; below 1, an EMA
        gram = lambda spec: jnp.einsum(spec, blocks, blocks, precision=_EXACT)  # noqa: E731
        left = b2 * left + fresh * gram("...ij,...kj->...ik")
        right = b2 * right + fresh * gram("...ji,...jk->...ik")
        t = count + 1
        recompute = (t >= start) & ((t - start) % frequency == 0)

        def roots():
            eye = lambda k: jnp.eye(k, dtype=c)  # noqa: E731
            return (
                _inverse_root(left + matrix_epsilon * eye(left.shape[-1]), exponent, root_method),
                _inverse_root(right + matrix_epsilon * eye(right.shape[-1]), exponent, root_method),
            )

        left_root, right_root = lax.cond(recompute, roots, lambda: (left_root, right_root))
        direction = jnp.matmul(
            jnp.matmul(left_root, blocks, precision=_EXACT), right_root, precision=_EXACT
        )
        norm = lambda x: jnp.sqrt(jnp.sum(x * x, axis=(-2, -1), keepdims=True))  # noqa: E731
        if grafting is None:
            shaped = direction
        else:
            d_norm = norm(direction)
            g_norm = norm(_to_blocks(graft.reshape(shape), block_size))
            shaped = direction * jnp.where(d_norm > 0, g_norm / jnp.where(d_norm > 0, d_norm, 1), 0)
        preconditioned = _from_blocks(shaped, *shape, block_size).reshape(g.shape)
        step = jnp.where(t >= start, preconditioned, graft)
        new_pre = tuple(
            tree.as_dtype(x, y.dtype)
            for x, y in zip((left, right, left_root, right_root), pre, strict=True)
        )
    new_m = b1 * tree.as_dtype(m, c) + step
    return (
        tree.as_dtype(new_m, g.dtype),
        new_pre,
        tree.as_dtype(new_nu, nu.dtype),
        tree.as_dtype(new_m, m.dtype),
    )


def _preconditioners(p: Any, block_size: int) -> tuple[Array, ...]:
    """Zeros for the blocks' ``L, R`` and their roots; ``()`` for a vector or a scalar."""
    p = jnp.asarray(p)
    if jnp.iscomplexobj(p):
        raise TypeError(
            "scale_by_shampoo: complex parameters are not supported: split them into real "
            "and imaginary parts."
        )
    if p.ndim < 2:
        return ()
    m, n = _matrix_shape(p.shape)
    (nr, br), (nc, bc) = _grid(m, block_size), _grid(n, block_size)
    c = tree.compute_dtype(p.dtype)
    left, right = (nr * nc, br, br), (nr * nc, bc, bc)
    blocks = tuple(jnp.zeros(s, c) for s in (left, right, left, right))
    return sharding.place_statistics(p, blocks, _block_entries)


def _block_entries(shape: tuple[int, ...], entries: tuple[Any, ...], blocks: Any) -> Any:
    """Where a parameter's stacked blocks are split: ``(blocks axis, None, None)`` each.

    The blocks axis takes the mesh axes that split the rows of the matrix the
    parameter is viewed as (its first axis, when the other merged ones are
    whole), then those that split its columns (its last axis); the rule of
    ``preconditioners`` (:func:`gradtx.sharding.register_statistics`).
    """
    if not blocks:  # a vector or a scalar
        return ()
    rows = entries[0] if all(e is None for e in entries[1:-1]) else None
    names = [
        name
        for entry in (rows, entries[-1])
        if entry is not None
        for name in ((entry,) if isinstance(entry, str) else entry)
    ]
    axis = None if not names else names[0] if len(names) == 1 else tuple(names)
    return tuple((axis, None, None) for _ in blocks)


sharding.register_statistics(ScaleByShampooState, "preconditioners", _block_entries)


def scale_by_shampoo(
    block_size: int = 1024,
    b1: float = 0.9,
    b2: float = 1.0,
    matrix_epsilon: float = 1e-6,
    *,
    grafting: str | None = "adagrad",
    graft_b2: float = 0.999,
    graft_eps: float = 1e-8,
    inverse_root_method: str = "eigh",
    exponent_override: int | None = None,
    precondition_frequency: int = 1,
    start_preconditioning_step: int = 1,
) -> GradientTransformation:
    """Blocked Shampoo's scaling with grafting and momentum (Gupta et al. 2018, Alg. 1).

    Each leaf of rank >= 2 is viewed as a matrix (its last axis the columns, the
    others merged into rows) and split into blocks ``G_{ij}`` of at most
    ``block_size`` rows and columns (the last ones shorter). Each block keeps

    .. math::
        L_t = \\beta_2 L_{t-1} + (1 - \\beta_2) G_t G_t^\\top, \\quad
        R_t = \\beta_2 R_{t-1} + (1 - \\beta_2) G_t^\\top G_t

    (the sums ``L_{t-1} + G G^T``, ``R_{t-1} + G^T G`` of Gupta et al. when
    ``b2 = 1``) and steps along

    .. math::
        P_t = \\hat L^{-1/p} G_t \\hat R^{-1/p}, \\quad
        u_t = \\frac{\\lVert D_t \\rVert_F}{\\lVert P_t \\rVert_F} P_t, \\quad
        m_t = \\beta_1 m_{t-1} + u_t, \\quad \\text{out} = m_t,

    with ``\\hat L^{-1/p}``, ``\\hat R^{-1/p}`` the inverse roots of
    ``L + \\epsilon I``, ``R + \\epsilon I`` last computed (at steps
    ``start, start + f, start + 2f, ...``), ``p = 4`` (Shampoo's order-2 rule,
    ``2k`` for the ``k = 2`` sides) unless ``exponent_override``, and ``D_t``
    the grafted method's step on the block (grafting: the step length of ``D``,
    the direction of Shampoo): AdaGrad ``D = g / (sqrt(sum g^2) + eps_g)``, Adam
    without momentum ``D = g / (sqrt(v / (1 - b_g^t)) + eps_g)``,
    ``v = b_g v + (1 - b_g) g^2``, SGD ``D = g``; with ``grafting=None``,
    ``u = P``. Before step ``start``, and for every vector or scalar leaf,
    ``u = D`` (the gradient itself for ``"sgd"`` or ``None``).

    Symbols: ``beta_1`` = ``b1``, ``beta_2`` = ``b2``, ``epsilon`` =
    ``matrix_epsilon``, ``f`` = ``precondition_frequency``, ``start`` =
    ``start_preconditioning_step``, ``b_g`` = ``graft_b2``, ``eps_g`` = ``graft_eps``.

    Departures from the papers: Gupta et al.'s Alg. 1 starts from ``L_0 = eps I``
    and roots every step with no blocks, grafting or momentum (``block_size``
    larger than every dimension, ``grafting=None``, ``b1=0``, ``b2=1``: the
    same steps, as ``L_0 + sum = eps I + sum``). No bias correction of ``L``, ``R``
    for ``b2 < 1`` (Shi et al. offer one; a common scale of ``L`` changes the step
    only through ``epsilon``, and not at all once grafted). The momentum is a sum
    ``b1 m + u`` (Optax's ``trace``), on the final step. A leaf of rank > 2 is
    flattened to a matrix, where Anil et al. precondition every axis. The state
    stores the roots whatever ``f`` (as Shi et al.).

    Args:
      block_size: the largest block side (a positive integer).
      b1: the momentum decay, in [0, 1).
      b2: the statistics' decay, in (0, 1]: 1 is Shampoo's sum.
      matrix_epsilon: ``epsilon`` > 0, added to ``L`` and ``R`` before the root.
      grafting: ``"adagrad"`` (default), ``"adam"``, ``"sgd"`` or ``None``.
      graft_b2: Adam grafting's decay, in [0, 1) (unused otherwise).
      graft_eps: >= 0, added to the grafted method's root.
      inverse_root_method: ``"eigh"`` (an eigendecomposition) or ``"newton"``
        (coupled Newton, :func:`gradtx.matrix_inverse_pth_root`).
      exponent_override: ``p`` when not ``None``, a positive integer.
      precondition_frequency: ``f``: the roots are recomputed every ``f`` steps.
      start_preconditioning_step: the first step (counted from 1) that uses
        Shampoo's direction; its roots are computed then.

    Raises:
      ValueError: a value out of its range or not among the choices.
      TypeError: complex params (at ``init``).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_shampoo(block_size=2, grafting=None, b1=0.0)
      >>> w = jnp.zeros((2, 2))
      >>> u, _ = tx.update(jnp.eye(2), tx.init(w), w)  # L = R = I: (1 + eps)^-1/2 I
      >>> jnp.round(u, 4)
      Array([[1., 0.],
             [0., 1.]], dtype=float32)

    References:
      Gupta, Koren & Singer (2018), Shampoo: Preconditioned Stochastic Tensor
      Optimization, Alg. 1. Anil, Gupta, Koren, Regan & Singer (2020), Scalable
      Second Order Optimization for Deep Learning (blocks, grafting). Shi et al.
      (2023), A Distributed Data-Parallel PyTorch Implementation of the
      Distributed Shampoo Optimizer for Training Neural Networks At-Scale.
    """
    owner = "scale_by_shampoo"
    _checks.positive_int(owner, "block_size", block_size)
    _checks.in_range(owner, "b1", b1, 0.0, 1.0)
    _checks.finite(owner, "b2", b2)
    array = _checks.scalar(owner, "b2", b2)
    if array is not None and not 0 < array <= 1:
        _checks._fail(owner, "b2", b2, "in (0, 1]")
    _checks.positive(owner, "matrix_epsilon", matrix_epsilon)
    if grafting not in _GRAFTINGS:
        raise ValueError(f"{owner}: grafting must be one of {_GRAFTINGS}, got {grafting!r}.")
    _checks.in_range(owner, "graft_b2", graft_b2, 0.0, 1.0)
    _checks.non_negative(owner, "graft_eps", graft_eps)
    if inverse_root_method not in _ROOT_METHODS:
        raise ValueError(
            f"{owner}: inverse_root_method must be one of {_ROOT_METHODS}, "
            f"got {inverse_root_method!r}."
        )
    if exponent_override is not None:
        _checks.positive_int(owner, "exponent_override", exponent_override)
    _checks.positive_int(owner, "precondition_frequency", precondition_frequency)
    _checks.positive_int(owner, "start_preconditioning_step", start_preconditioning_step)
    exponent = 4 if exponent_override is None else int(exponent_override)

    def init_fn(params):
        tree.check_inexact(params, owner)
        pre = jax.tree.map(lambda p: _preconditioners(p, block_size), params)
        nu = tree.zeros_like(params, real=True)
        return ScaleByShampooState(tree.zero_count(), pre, nu, tree.zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, owner=owner)
        count = state.count

        def leaf(g, pre, nu, m):
            return shampoo_leaf(
                g, pre, nu, m, count, b1=b1, b2=b2, block_size=block_size,
                matrix_epsilon=matrix_epsilon, grafting=grafting, graft_b2=graft_b2,
                graft_eps=graft_eps, root_method=inverse_root_method, exponent=exponent,
                frequency=precondition_frequency, start=start_preconditioning_step,
            )  # fmt: skip

        out, pre, nu, mu = tree.map_unzip(
            leaf, 4, updates, state.preconditioners, state.nu, state.mu
        )
        return out, ScaleByShampooState(tree.safe_increment(count), pre, nu, mu)

    return GradientTransformation(init_fn, update_fn)


def shampoo(
    learning_rate: ScalarOrSchedule,
    block_size: int = 1024,
    b1: float = 0.9,
    b2: float = 1.0,
    matrix_epsilon: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    grafting: str | None = "adagrad",
    graft_b2: float = 0.999,
    graft_eps: float = 1e-8,
    inverse_root_method: str = "eigh",
    exponent_override: int | None = None,
    precondition_frequency: int = 1,
    start_preconditioning_step: int = 1,
) -> GradientTransformation:
    """Blocked, grafted Shampoo (Gupta et al. 2018, Alg. 1; Shi et al. 2023) with decoupled decay.

    .. math::
        w_{t+1} = w_t - \\eta\\, (m_t + \\lambda w_t)

    with ``m`` the step of :func:`scale_by_shampoo` (see it for the arguments
    shared with it) and ``lambda`` = ``weight_decay`` (decoupled, as AdamW).
    Composition: ``chain(scale_by_shampoo(...), add_decayed_weights(weight_decay),
    scale_by_learning_rate(learning_rate))``.

    Args:
      learning_rate: ``eta``, a number or a schedule.
      block_size: see :func:`scale_by_shampoo`.
      b1: see :func:`scale_by_shampoo`.
      b2: see :func:`scale_by_shampoo`.
      matrix_epsilon: see :func:`scale_by_shampoo`.
      weight_decay: ``lambda`` >= 0.
      grafting: see :func:`scale_by_shampoo`.
      graft_b2: see :func:`scale_by_shampoo`.
      graft_eps: see :func:`scale_by_shampoo`.
      inverse_root_method: see :func:`scale_by_shampoo`.
      exponent_override: see :func:`scale_by_shampoo`.
      precondition_frequency: see :func:`scale_by_shampoo`.
      start_preconditioning_step: see :func:`scale_by_shampoo`.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.shampoo(0.1, b1=0.0, grafting="sgd")
      >>> g = jnp.array([[3.0, 0.0], [0.0, 4.0]])
      >>> tx.update(g, tx.init(g), g)[0].diagonal()  # the direction I, the norm of g
      Array([-0.35355338, -0.35355338], dtype=float32)

    References:
      Gupta, Koren & Singer (2018), Alg. 1; Anil et al. (2020); Shi et al. (2023).
    """
    _checks.learning_rate("shampoo", learning_rate)
    _checks.non_negative("shampoo", "weight_decay", weight_decay)
    return chain(
        scale_by_shampoo(
            block_size,
            b1,
            b2,
            matrix_epsilon,
            grafting=grafting,
            graft_b2=graft_b2,
            graft_eps=graft_eps,
            inverse_root_method=inverse_root_method,
            exponent_override=exponent_override,
            precondition_frequency=precondition_frequency,
            start_preconditioning_step=start_preconditioning_step,
        ),  # fmt: skip
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(learning_rate),
    )
