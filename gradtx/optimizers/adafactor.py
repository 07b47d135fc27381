"""Adafactor (Shazeer & Stern 2018, Alg. 4 and 5): factored second moments.

For a matrix ``G`` of shape ``(n, m)`` Adam keeps ``n m`` second moments;
Adafactor keeps the moving averages of its row sums ``R`` and column sums ``C``
of ``G^2`` (``n + m`` numbers) and rebuilds the rank-one estimate
``V = R C / sum(R)`` (Alg. 4). A leaf with fewer than two axes of at least
``min_dim_size_to_factor`` keeps the full average (Alg. 5). A leaf of rank > 2 is
factored over its two largest axes, the others being a batch of matrices.

The named optimizer adds the paper's other pieces: update clipping (Sec. 6), the
step relative to the parameter scale (Sec. 8), and optionally momentum and decay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, EmptyState, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import Mask, chain
from gradtx.optimizers.trust_ratio import check_params
from gradtx.transforms.clipping import clip_by_block_rms
from gradtx.transforms.moments import ema
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale, scale_by_learning_rate


def _decay_rate_pow(i: Array, exponent: float = 0.8) -> Array:
    """``1 - t^(-exponent)`` with ``t = i + 1``: the paper's increasing decay
    ``beta_2t = 1 - t^(-c)`` (Sec. 7), 0 at the first step. Computed in JAX's
    default float dtype (float64 with x64 enabled; Optax: always float32)."""
    t = jnp.asarray(i + 1, jnp.result_type(float))
    return 1.0 - t ** (-exponent)


class FactoredState(NamedTuple):
    """State of :func:`scale_by_factored_rms`: Optax's fields, with the averages
    kept as size-1 axes (``keepdims``), so that they broadcast against the leaf and
    the leaf's shape can be read back from them (a ``(2, 3)`` and a ``(3, 2)``
    leaf give different states). Real, in the params' (real) dtype.

    For a factored leaf of shape ``S``, ``v`` is a placeholder of shape ``(1,)``;
    for the others, ``v_row`` and ``v_col`` are.
    """

    count: Array  # int32 scalar: t - 1, steps taken.
    v_row: Updates  # R / m: the mean of G^2 over the largest axis (paper: row sums).
    v_col: Updates  # C / n: the mean over the second largest axis (paper: column sums).
    v: Updates  # V: the full average, for the leaves that are not factored.


def factored_dims(shape: tuple[int, ...], factored: bool, min_size: int) -> tuple[int, int] | None:
    """``(second largest axis, largest axis)`` to factor over, or None (Alg. 5)."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_size:
        return None
    return int(order[-2]), int(order[-1])


def _shape_of_state(row: Array, col: Array, v: Array) -> tuple[int, ...]:
    """The leaf shape a leaf's state was built for: ``v``'s, or for a factored
    leaf (averages of rank >= 2) the larger of the averages' sizes on each axis."""
    if np.ndim(row) < 2:
        return np.shape(v)
    return tuple(int(n) for n in np.maximum(np.shape(row), np.shape(col)))


def _check_leaves(updates: Any, state: FactoredState) -> None:
    """Raises ValueError naming the leaves whose shape or dtype kind does not fit the
    state (its leaves are not shaped like the params, so the tree is checked here)."""
    owner = "scale_by_factored_rms"
    structure = jax.tree.map(lambda _: 0, state.v)
    tree.check_structure(structure, jax.tree.map(lambda _: 0, updates), owner=owner)
    paths = jax.tree_util.tree_flatten_with_path(updates)[0]
    states = zip(*(jax.tree.leaves(t) for t in (state.v_row, state.v_col, state.v)), strict=True)
    bad = []
    for (path, g), (row, col, v) in zip(paths, states, strict=True):
        expected = _shape_of_state(row, col, v)
        if np.shape(g) != expected or not jnp.issubdtype(jnp.result_type(g), jnp.inexact):
            bad.append(
                f"{jax.tree_util.keystr(path) or 'the root'}: expected a floating array of shape "
                f"{expected}, got a {jnp.result_type(g)} array of shape {np.shape(g)}"
            )
    if bad:
        raise ValueError(
            f"{owner}: the updates do not have the leaf shapes and dtypes of the params the "
            f"state was initialised with: {tree.name_paths(bad)}."
        )


def factored_rms_leaf(g, v_row, v_col, v, decay, dims, epsilon):
    """One leaf: ``g / sqrt(V_hat)`` and the new averages (Alg. 4, or Alg. 5 when
    ``dims`` is None). Means in place of the paper's sums give the same ``V_hat``."""
    c = tree.compute_dtype(g.dtype)
    r = tree.real_dtype(c)
    g_c = tree.as_dtype(g, c)
    sq = tree.abs_sq(g_c) + epsilon  # G^2 + eps_1
    if dims is None:
        new_v = decay * tree.as_dtype(v, r) + (1 - decay) * sq
        out = g_c * new_v**-0.5
        return tree.as_dtype(out, g.dtype), v_row, v_col, tree.as_dtype(new_v, v.dtype)
    d1, d0 = dims
    mean = lambda x, axis: jnp.mean(x, axis=axis, keepdims=True)  # noqa: E731
    new_row = decay * tree.as_dtype(v_row, r) + (1 - decay) * mean(sq, d0)
    new_col = decay * tree.as_dtype(v_col, r) + (1 - decay) * mean(sq, d1)
    # V_hat = R C / sum(R): the row factor is normalized by the mean of R over d1.
    out = g_c * (new_row / mean(new_row, d1)) ** -0.5 * new_col**-0.5
    new_row, new_col = tree.as_dtype(new_row, v_row.dtype), tree.as_dtype(new_col, v_col.dtype)
    return tree.as_dtype(out, g.dtype), new_row, new_col, v


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
    decay_rate_fn: Callable[[Array, Any], Array] = _decay_rate_pow,
) -> GradientTransformation:
    """Adafactor's scaling: the gradient over the root of a factored second moment.

    .. math::
        \\begin{aligned}
        R_t &= \\hat\\beta_{2t} R_{t-1} + (1-\\hat\\beta_{2t})
            (G_t^2 + \\epsilon_1 1_n 1_m^\\top) 1_m, \\quad
        C_t = \\hat\\beta_{2t} C_{t-1} + (1-\\hat\\beta_{2t})
            1_n^\\top (G_t^2 + \\epsilon_1 1_n 1_m^\\top), \\\\
        \\hat V_t &= R_t C_t / (1_n^\\top R_t), \\qquad
        \\text{out} = G_t / \\sqrt{\\hat V_t}, \\qquad
        \\hat\\beta_{2t} = 1 - t^{-c}
        \\end{aligned}

    (Shazeer & Stern 2018, Alg. 4); a leaf that is not factored keeps
    ``V_t = beta_2t V_{t-1} + (1 - beta_2t)(G_t^2 + eps_1)`` and returns
    ``G_t / sqrt(V_t)`` (Alg. 5). Symbols: ``c`` = ``decay_rate``, ``eps_1`` =
    ``epsilon``, ``t`` = steps taken + 1 - ``step_offset``. Complex gradients use
    ``|G|^2``.

    Args:
      factored: factor the leaves that qualify; ``False``: Alg. 5 for every leaf.
      decay_rate: ``c`` > 0 in ``beta_2t = 1 - t^(-c)`` (the paper's 0.8).
      step_offset: >= 0, subtracted from the step count (to restart the decay
        schedule when fine-tuning).
      min_dim_size_to_factor: an integer >= 1: a leaf is factored when its second
        largest axis has at least this size.
      epsilon: ``eps_1`` >= 0, added to ``G^2``.
      decay_rate_fn: ``(steps taken - step_offset, decay_rate) -> beta_2t``. A
        function of two arguments, not a schedule: under
        :func:`gradtx.inject_hyperparams`, name it in ``static_args``.

    Raises:
      ValueError: ``decay_rate`` <= 0, a negative ``step_offset`` or ``epsilon``,
        ``min_dim_size_to_factor`` < 1.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_factored_rms(min_dim_size_to_factor=2, epsilon=0.0)
      >>> g = jnp.array([[1.0, -1.0], [2.0, 2.0]])
      >>> tx.update(g, tx.init(g))[0]  # beta_21 = 0: V_hat = G^2 here (rank one)
      Array([[ 1., -1.],
             [ 1.,  1.]], dtype=float32)

    References:
      Shazeer & Stern (2018), Adafactor: Adaptive Learning Rates with Sublinear
      Memory Cost, Alg. 4 and 5.
    """
    owner = "scale_by_factored_rms"
    _checks.positive(owner, "decay_rate", decay_rate)
    _checks.non_negative(owner, "step_offset", step_offset)
    _checks.positive_int(owner, "min_dim_size_to_factor", min_dim_size_to_factor)
    _checks.non_negative(owner, "epsilon", epsilon)
    if not callable(decay_rate_fn):
        raise TypeError(f"{owner}: decay_rate_fn must be callable, got {decay_rate_fn!r}.")

    def dims_of(shape):
        return factored_dims(tuple(shape), factored, min_dim_size_to_factor)

    def init_fn(params):
        tree.check_inexact(params, owner)

        def leaf(p):
            p = jnp.asarray(p)
            r = tree.real_dtype(p.dtype)
            dims = dims_of(p.shape)
            if dims is None:
                row, col = (tree.zeros_beside(p, (1,), r) for _ in range(2))  # two buffers
                return row, col, jnp.zeros_like(p, r)
            d1, d0 = dims
            row = tree.zeros_beside(p, tuple(1 if i == d0 else n for i, n in enumerate(p.shape)), r)
            col = tree.zeros_beside(p, tuple(1 if i == d1 else n for i, n in enumerate(p.shape)), r)
            return row, col, tree.zeros_beside(p, (1,), r)

        v_row, v_col, v = tree.map_unzip(leaf, 3, params)
        return FactoredState(tree.zero_count(), v_row, v_col, v)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _check_leaves(updates, state)
        decay = decay_rate_fn(state.count - step_offset, decay_rate)

        def leaf(g, row, col, v):
            return factored_rms_leaf(g, row, col, v, decay, dims_of(g.shape), epsilon)

        out, v_row, v_col, v = tree.map_unzip(leaf, 4, updates, state.v_row, state.v_col, state.v)
        return out, FactoredState(tree.safe_increment(state.count), v_row, v_col, v)

    return GradientTransformation(init_fn, update_fn)


def _scale_by_parameter_scale(min_scale: float = 1e-3) -> GradientTransformation:
    """``u <- max(eps_2, RMS(w)) u`` per leaf: the step relative to the parameter
    scale (Shazeer & Stern 2018, Sec. 8; Optax's ``scale_by_param_block_rms``)."""

    def leaf(u, w):
        c = tree.compute_dtype(jnp.promote_types(u.dtype, w.dtype))
        w_c = tree.as_dtype(w, c)
        rms = tree.sqrt(jnp.mean(tree.abs_sq(w_c)))
        return tree.as_dtype(tree.as_dtype(u, c) * jnp.maximum(rms, min_scale), u.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_params("adafactor", params)
        tree.check_structure(params, updates, owner="adafactor")
        return jax.tree.map(leaf, updates, params), state

    return GradientTransformation(lambda params: EmptyState(), update_fn)


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: ScalarOrSchedule | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    weight_decay_mask: Mask | None = None,
) -> GradientTransformation:
    """Adafactor (Shazeer & Stern 2018, Alg. 4 and 5, with Sec. 6 and 8).

    .. math::
        \\hat U_t = \\frac{U_t}{\\max(1, \\mathrm{RMS}(U_t) / d)}, \\quad
        \\alpha_t = \\max(\\epsilon_2, \\mathrm{RMS}(X_{t-1}))\\, \\rho_t, \\quad
        X_t = X_{t-1} - \\alpha_t \\hat U_t

    per leaf, with ``U_t = G_t / sqrt(V_hat_t)`` from :func:`scale_by_factored_rms`.
    Symbols: ``d`` = ``clipping_threshold`` (None: no clipping), ``rho_t`` =
    ``learning_rate`` (None: 1), ``eps_2`` = 1e-3 (applied only with
    ``multiply_by_parameter_scale``; without it ``alpha_t = rho_t``).
    Composition, as Optax: ``chain(scale_by_factored_rms(factored, decay_rate,
    decay_offset, min_dim_size_to_factor, eps), clip_by_block_rms(d),
    scale_by_learning_rate(rho, flip_sign=False), <scale by max(eps_2, RMS(X))>,
    ema(momentum, debias=False, accumulator_dtype=dtype_momentum),
    add_decayed_weights(weight_decay_rate, weight_decay_mask), scale(-1))``, each
    optional piece present when its argument is set.

    Departures from the paper, as Optax: ``momentum`` (the paper's ``beta_1``,
    Sec. 5, off by default) averages the *scaled* step; ``weight_decay_rate`` is
    added after the learning rate, so it is not multiplied by it; the default
    ``learning_rate=None`` is a constant ``rho = 1`` where the paper decays
    ``rho_t = min(1e-2, 1/sqrt(t))`` (pass a schedule for that).

    Args:
      learning_rate: ``rho_t``, a number, a schedule, or None.
      min_dim_size_to_factor, decay_rate, factored: see
        :func:`scale_by_factored_rms`.
      decay_offset: its ``step_offset``.
      multiply_by_parameter_scale: multiply by ``max(eps_2, RMS(X_{t-1}))``.
      clipping_threshold: ``d`` >= 0, or None.
      momentum: in [0, 1), or None (no momentum).
      dtype_momentum: the momentum's dtype (float32; None follows the params).
      weight_decay_rate: >= 0, a number or a schedule, or None.
      eps: ``eps_1`` of :func:`scale_by_factored_rms`.
      weight_decay_mask: which leaves are decayed (see
        :func:`gradtx.add_decayed_weights`).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.adafactor(0.1)
      >>> w = jnp.array([3.0, -4.0])  # RMS(w) ~ 3.54
      >>> tx.update(jnp.array([1.0, 1.0]), tx.init(w), w)[0]  # -0.1 * RMS(w) * sign(g)
      Array([-0.35355..., -0.35355...], dtype=float32)

    References:
      Shazeer & Stern (2018), Adafactor: Adaptive Learning Rates with Sublinear
      Memory Cost, Alg. 4 and 5.
    """
    owner = "adafactor"
    if learning_rate is not None:
        _checks.learning_rate(owner, learning_rate)
    if momentum is not None:
        _checks.in_range(owner, "momentum", momentum, 0.0, 1.0)
    _checks.dtype_or_none(owner, "dtype_momentum", dtype_momentum)
    members = [
        scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)
    ]
    if clipping_threshold is not None:
        members.append(clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        members.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        members.append(_scale_by_parameter_scale())
    if momentum is not None:
        members.append(ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        members.append(add_decayed_weights(weight_decay_rate, weight_decay_mask))
    members.append(scale(-1))
    return chain(*members)
