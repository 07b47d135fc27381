"""DoG: the distance-over-gradients step size, layer-wise (Ivgi, Hinder & Carmon 2023)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation


class ScaleByDistanceOverGradientsState(NamedTuple):
    """State of :func:`scale_by_distance_over_gradients` (one scalar pair per leaf)."""

    max_dist: Any
    """Per leaf, a real scalar: ``\\bar r_t`` = the largest distance from the start seen."""
    grad_sum_of_squares: Any
    """Per leaf, a real scalar: ``G_t = \\sum_{i \\le t} \\|g_i\\|^2``."""
    init_params: Any
    """The starting point ``x_0``, in ``param_dtype``."""


def dog_leaf(g: Array, x: Array, x0: Array, r: Array, g_sos: Array, eps: Any, global_scale: Any):
    """One leaf of layer-wise DoG: returns ``(update, r_t, G_t)``.

    ``r_t = max(r_{t-1}, ||x_t - x_0||)``, ``G_t = G_{t-1} + ||g_t||^2``,
    ``update = global_scale * r_t / sqrt(G_t + eps) * g_t``; all in at least float32.
    """
    c = tree.compute_dtype(jnp.result_type(g, x))
    dist = tree.sqrt(jnp.sum(tree.abs_sq(x.astype(c) - x0.astype(c))))
    r = jnp.maximum(r, dist.astype(r.dtype))
    g_sos = g_sos + jnp.sum(tree.abs_sq(g.astype(c))).astype(g_sos.dtype)
    eta = global_scale * r / jnp.sqrt(g_sos + eps)
    return (eta * g.astype(c)).astype(g.dtype), r, g_sos


def scale_by_distance_over_gradients(
    reps_rel: float = 1e-6,
    eps: float = 1e-8,
    param_dtype: Any = jnp.float32,
    global_scale: float = 1.0,
) -> GradientTransformation:
    """Scales each leaf by DoG's parameter-free step size: distance over gradients.

    For each leaf (layer) ``\\ell``, with ``x_0`` the params at ``init``, ``x_t``
    the params passed to ``update`` and ``g_t`` the incoming updates:

    .. math::
        \\bar r_t = \\max\\big(\\bar r_{t-1}, \\|x_t - x_0\\|\\big), \\quad
        \\bar r_{0} = r_\\epsilon = \\text{reps\\_rel}\\,(1 + \\|x_0\\|), \\\\
        G_t = G_{t-1} + \\|g_t\\|^2, \\quad G_0 = 0, \\qquad
        u_t = s \\, \\frac{\\bar r_t}{\\sqrt{G_t + \\epsilon}} \\, g_t

    with ``s`` = ``global_scale`` and ``\\epsilon`` = ``eps``. This is the paper's
    layer-wise variant, LDoG (its Section 3 and Alg. 1 with norms taken per
    layer): one distance and one gradient sum per leaf. Use it with
    ``global_scale=-1`` (or before :func:`scale_by_learning_rate` with rate 1) to
    descend; the authors recommend averaging the iterates (see
    :func:`average_params`).

    Args:
      reps_rel: ``r_\\epsilon`` relative to ``1 + ||x_0||``, the initial distance
        (1e-4 recommended with batch norm, 1e-6 otherwise).
      eps: added to ``G_t`` under the root.
      param_dtype: the dtype of the stored copy of the initial params (its complex
        counterpart for a complex leaf; ``None``: the params' own).
      global_scale: the factor ``s`` (typically 1 or -1).

    Returns:
      A transformation whose state is :class:`ScaleByDistanceOverGradientsState`.

    Raises:
      ValueError: ``reps_rel`` or ``eps`` negative, infinite or NaN;
        ``global_scale`` not finite; ``update`` without params.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_distance_over_gradients(reps_rel=0.5)
      >>> x = jnp.array([3.0, 4.0])
      >>> tx.update(jnp.array([1.0, 0.0]), tx.init(x), x)[0]  # r_0 = 0.5 * (1 + 5)
      Array([3., 0.], dtype=float32)

    Note:
      Optax stores each gradient sum as a shape-``(1,)`` array, which makes the
      update of a 0-d leaf shape ``(1,)``; here it is a 0-d scalar and every
      update has its gradient's shape and dtype. Complex leaves use ``|.|^2``
      (Optax squares them). The distances and sums are computed in at least
      float32.

    References:
      Ivgi, Hinder & Carmon (2023), DoG is SGD's Best Friend: A Parameter-Free
      Dynamic Step Size Schedule, ICML, Alg. 1 and Section 3 (LDoG).
    """
    owner = "scale_by_distance_over_gradients"
    _checks.non_negative(owner, "reps_rel", reps_rel)
    _checks.non_negative(owner, "eps", eps)
    _checks.finite(owner, "global_scale", global_scale)
    _checks.dtype_or_none(owner, "param_dtype", param_dtype)

    def init_fn(params):
        tree.check_inexact(params, owner)

        def initial_distance(x):
            norm = tree.sqrt(jnp.sum(tree.abs_sq(x.astype(tree.compute_dtype(x.dtype)))))
            return reps_rel * (1 + norm)

        def stored(x):
            # A copy (a donated state must not alias the params); a complex leaf
            # keeps its imaginary part in the complex counterpart of param_dtype.
            dtype = x.dtype if param_dtype is None else jnp.dtype(param_dtype)
            if jnp.iscomplexobj(x):
                dtype = jnp.result_type(dtype, jnp.complex64)
            return jnp.array(x, dtype=dtype, copy=True)

        def zero_sum(x):
            return jnp.zeros([], tree.real_dtype(tree.compute_dtype(x.dtype)))

        return ScaleByDistanceOverGradientsState(
            max_dist=jax.tree.map(initial_distance, params),
            grad_sum_of_squares=jax.tree.map(zero_sum, params),
            init_params=jax.tree.map(stored, params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(
                f"{owner}: the distance is measured from the params: "
                "call update(updates, state, params)."
            )
        tree.check_structure(params, updates, owner=owner)

        def leaf(g, x, x0, r, g_sos):
            return dog_leaf(g, x, x0, r, g_sos, eps, global_scale)

        new_updates, max_dist, g_sos = tree.map_unzip(
            leaf,
            3,
            updates,
            params,
            state.init_params,
            state.max_dist,
            state.grad_sum_of_squares,
        )
        return new_updates, ScaleByDistanceOverGradientsState(max_dist, g_sos, state.init_params)

    return GradientTransformation(init_fn, update_fn)
