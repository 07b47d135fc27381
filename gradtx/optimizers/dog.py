"""DoG: the distance-over-gradients step size (Ivgi, Hinder & Carmon 2023), layer-wise
and global, and DoWG, its weighted variant (Khaled, Mishchenko & Jin 2023)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, identity
from gradtx.combine import Mask, chain
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate


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
        tree.check_structure(state.init_params, updates, owner=owner)

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


# ---------------------------------------------------------------------- DoG and DoWG, global


class DoGState(NamedTuple):
    """State of :func:`dog`'s scaling (Optax's fields, in Optax's order)."""

    is_init_step: Array  # bool scalar: no step taken yet.
    init_params: Any  # x_0, a copy of the initial params.
    max_dist: Array  # real scalar: \bar r_{t-1} (r_epsilon before the first step).
    sum_sq_norm_grads: Array  # real scalar: G_{t-1} = sum_{i < t} ||g_i||^2.


class DoWGState(NamedTuple):
    """State of :func:`dowg`'s scaling (Optax's fields, in Optax's order)."""

    init_params: Any  # x_0, a copy of the initial params.
    weighted_sq_norm_grads: Array  # real scalar: v_{t-1} = sum_{i < t} \bar r_i^2 ||g_i||^2.
    estim_sq_dist: Array  # real scalar: \bar r_{t-1}^2.


def _tree_scalar_dtype(params: Any) -> jnp.dtype:
    dtypes = [
        tree.real_dtype(tree.compute_dtype(jnp.result_type(x))) for x in jax.tree.leaves(params)
    ]
    return jnp.result_type(*dtypes) if dtypes else jnp.dtype(jnp.float32)


def _squared_distance(x: Any, x0: Any, dtype: Any) -> Array:
    """``||x - x_0||^2`` over the whole tree, in ``dtype``."""

    def leaf(a, b):
        c = jnp.promote_types(tree.compute_dtype(jnp.result_type(a, b)), dtype)
        return a.astype(c) - b.astype(c)

    return tree.squared_norm(jax.tree.map(leaf, x, x0)).astype(dtype)


def _scaled(eta: Array, updates: Any) -> Any:
    """``eta * g`` leaf by leaf, each in its gradient's dtype."""

    def leaf(g):
        c = tree.compute_dtype(g.dtype)
        return (eta.astype(tree.real_dtype(c)) * g.astype(c)).astype(g.dtype)

    return jax.tree.map(leaf, updates)


def _copy(params: Any) -> Any:
    # A copy: a donated state must not alias the params.
    return jax.tree.map(lambda x: jnp.array(x, copy=True), params)


def _scale_by_dog(init_step: tuple[str, Any], eps: Any) -> GradientTransformation:
    """DoG's global step size ``eta_t = \\bar r_t / sqrt(G_t + eps)`` (see :func:`dog`)."""
    kind, value = init_step

    def init_fn(params):
        tree.check_inexact(params, "dog")
        dtype = _tree_scalar_dtype(params)
        if kind == "distance":
            r_eps = jnp.asarray(value, dtype)
        elif kind == "heuristic":
            r_eps = value * (
                1 + tree.sqrt(_squared_distance(params, tree.zeros_like(params), dtype))
            )
        else:  # "learning_rate": eta_0 is given, and the distance starts at 0
            r_eps = jnp.zeros([], dtype)
        return DoGState(
            is_init_step=jnp.asarray(True),
            init_params=_copy(params),
            max_dist=jnp.asarray(r_eps, dtype),
            sum_sq_norm_grads=jnp.zeros([], dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("dog: the distance is measured from the params: pass them to update.")
        tree.check_structure(state.init_params, updates, owner="dog")
        dtype = state.max_dist.dtype
        r_bar = jnp.maximum(
            state.max_dist, tree.sqrt(_squared_distance(params, state.init_params, dtype))
        )
        big_g = state.sum_sq_norm_grads + tree.squared_norm(updates).astype(dtype)
        eta = r_bar / jnp.sqrt(big_g + eps)
        if kind == "learning_rate":
            eta = jnp.where(state.is_init_step, jnp.asarray(value, dtype), eta)
        new_state = DoGState(jnp.asarray(False), state.init_params, r_bar, big_g)
        return _scaled(eta, updates), new_state

    return GradientTransformation(init_fn, update_fn)


def dog(
    learning_rate: ScalarOrSchedule = 1.0,
    init_step: tuple[Literal["distance", "learning_rate", "heuristic"], Any] = ("heuristic", 1e-6),
    eps: Any = 1e-8,
    weight_decay: Any | None = None,
    mask: Mask | None = None,
) -> GradientTransformation:
    """DoG, Distance over Gradients (Ivgi, Hinder & Carmon 2023, Alg. 1): SGD whose
    step is the largest distance travelled over the root of the summed squared
    gradient norms, with the norms taken over the whole tree.

    With ``x_0`` the params at ``init``, ``x_t`` those passed to ``update``, ``g_t``
    the gradient and ``alpha_t`` = ``learning_rate(t)``:

    .. math::
        \\bar r_t = \\max\\big(\\bar r_{t-1}, \\|x_t - x_0\\|\\big), \\quad
        G_t = G_{t-1} + \\|g_t\\|^2, \\quad
        \\eta_t = \\frac{\\bar r_t}{\\sqrt{G_t + \\epsilon}}, \\quad
        x_{t+1} = x_t - \\alpha_t \\eta_t g_t

    ``init_step`` sets the start, a pair ``(tag, value)``: ``("distance", r)``:
    ``\\bar r_{-1} = r`` (the paper's ``r_epsilon``); ``("heuristic", a)``:
    ``\\bar r_{-1} = a (1 + \\|x_0\\|)`` (the paper's recommendation, ``a`` = 1e-6,
    or 1e-4 with batch normalisation); ``("learning_rate", e)``: ``eta_0 = e``
    and ``\\bar r_{-1} = 0``.

    Composition: ``chain(add_decayed_weights(weight_decay, mask)`` (when
    ``weight_decay`` is not ``None``), DoG's scaling,
    ``scale_by_learning_rate(learning_rate))``; the decay is added to the gradient
    and so enters ``G_t``, as in Optax. :func:`scale_by_distance_over_gradients`
    is the layer-wise form (the paper's LDoG).

    Args:
      learning_rate: ``alpha``, a multiplier of DoG's step (a number or schedule).
      init_step: see above; the value must be > 0.
      eps: ``epsilon`` >= 0, added to ``G_t`` under the root (not in the paper).
      weight_decay: ``None`` (no decay) or a rate >= 0 added to the gradient.
      mask: which leaves are decayed (see :func:`add_decayed_weights`).

    Returns:
      The chain; DoG's state is :class:`DoGState`. ``update`` needs the params,
      and ``init`` the real initial params (``x_0`` and the heuristic read them).

    Raises:
      ValueError: an unknown ``init_step`` tag or a hyperparameter out of range;
        ``update`` without params.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.dog(init_step=("distance", 0.5), eps=0.0)
      >>> x = jnp.array([3.0, 4.0])
      >>> tx.update(jnp.array([3.0, 4.0]), tx.init(x), x)[0]  # -r_eps g / ||g||
      Array([-0.3, -0.4], dtype=float32)

    Note:
      The authors recommend averaging the iterates (see :func:`average_params`).
      Complex params use ``|.|^2`` in the norms. The scalars are kept in the
      widest real dtype of the params, at least float32 (Optax's: the narrowest).

    References:
      Ivgi, Hinder & Carmon (2023), DoG is SGD's Best Friend: A Parameter-Free
      Dynamic Step Size Schedule, ICML, Alg. 1.
    """
    owner = "dog"
    _checks.learning_rate(owner, learning_rate)
    if not (isinstance(init_step, (tuple, list)) and len(init_step) == 2):
        raise ValueError(f"{owner}: init_step must be a pair (tag, value), got {init_step!r}.")
    if init_step[0] not in ("distance", "learning_rate", "heuristic"):
        raise ValueError(
            f"{owner}: init_step's tag must be 'distance', 'learning_rate' or 'heuristic', "
            f"got {init_step[0]!r}."
        )
    _checks.positive(owner, "init_step value", init_step[1])
    _checks.non_negative(owner, "eps", eps)
    _checks.non_negative(owner, "weight_decay", weight_decay, schedule=True, optional=True)
    decay = identity() if weight_decay is None else add_decayed_weights(weight_decay, mask)
    return chain(decay, _scale_by_dog(tuple(init_step), eps), scale_by_learning_rate(learning_rate))


def _scale_by_dowg(init_estim_sq_dist: Any | None, eps: Any) -> GradientTransformation:
    """DoWG's step size ``eta_t = \\bar r_t^2 / (sqrt(v_t) + eps)`` (see :func:`dowg`)."""

    def init_fn(params):
        tree.check_inexact(params, "dowg")
        dtype = _tree_scalar_dtype(params)
        start = eps if init_estim_sq_dist is None else init_estim_sq_dist
        return DoWGState(
            init_params=_copy(params),
            weighted_sq_norm_grads=jnp.zeros([], dtype),
            estim_sq_dist=jnp.asarray(start, dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("dowg: the distance is measured from the params: pass them to update.")
        tree.check_structure(state.init_params, updates, owner="dowg")
        dtype = state.estim_sq_dist.dtype
        r_bar_sq = jnp.maximum(
            state.estim_sq_dist, _squared_distance(params, state.init_params, dtype)
        )
        v = state.weighted_sq_norm_grads + r_bar_sq * tree.squared_norm(updates).astype(dtype)
        eta = r_bar_sq / (jnp.sqrt(v) + eps)
        return _scaled(eta, updates), DoWGState(state.init_params, v, r_bar_sq)

    return GradientTransformation(init_fn, update_fn)


def dowg(
    learning_rate: ScalarOrSchedule = 1.0,
    init_estim_sq_dist: Any | None = None,
    eps: Any = 1e-4,
    weight_decay: Any | None = None,
    mask: Mask | None = None,
) -> GradientTransformation:
    """DoWG, Distance over Weighted Gradients (Khaled, Mishchenko & Jin 2023, Alg. 1):
    DoG with the squared gradient norms weighted by the squared distance.

    With ``x_0`` the params at ``init``, ``g_t`` the gradient and ``alpha_t`` =
    ``learning_rate(t)``:

    .. math::
        \\bar r_t = \\max\\big(\\bar r_{t-1}, \\|x_t - x_0\\|\\big), \\quad
        v_t = v_{t-1} + \\bar r_t^2 \\|g_t\\|^2, \\quad
        \\eta_t = \\frac{\\bar r_t^2}{\\sqrt{v_t} + \\epsilon}, \\quad
        x_{t+1} = x_t - \\alpha_t \\eta_t g_t

    with ``\\bar r_{-1}^2`` = ``init_estim_sq_dist`` (the paper's ``r_epsilon^2``;
    ``None``: ``eps``, as Optax) and ``v_{-1} = 0``.

    Composition: ``chain(add_decayed_weights(weight_decay, mask)`` (when
    ``weight_decay`` is not ``None``), DoWG's scaling,
    ``scale_by_learning_rate(learning_rate))``.

    Args:
      learning_rate: ``alpha``, a multiplier of DoWG's step (a number or schedule).
      init_estim_sq_dist: ``r_epsilon^2`` > 0, or ``None``.
      eps: ``epsilon`` >= 0, added to ``sqrt(v_t)`` (not in the paper).
      weight_decay: ``None`` (no decay) or a rate >= 0 added to the gradient.
      mask: which leaves are decayed (see :func:`add_decayed_weights`).

    Returns:
      The chain; DoWG's state is :class:`DoWGState`. ``update`` needs the params.

    Raises:
      ValueError: a hyperparameter out of range; ``update`` without params.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.dowg(init_estim_sq_dist=0.25, eps=0.0)
      >>> x = jnp.array([3.0, 4.0])
      >>> tx.update(jnp.array([3.0, 4.0]), tx.init(x), x)[0]  # -r^2 g / (r ||g||)
      Array([-0.3, -0.4], dtype=float32)

    Note:
      Complex params use ``|.|^2`` in the norms; the scalars are kept in the
      widest real dtype of the params, at least float32 (Optax's: the narrowest).

    References:
      Khaled, Mishchenko & Jin (2023), DoWG Unleashed: An Efficient Universal
      Parameter-Free Gradient Descent Method, NeurIPS, Alg. 1.
    """
    owner = "dowg"
    _checks.learning_rate(owner, learning_rate)
    _checks.positive(owner, "init_estim_sq_dist", init_estim_sq_dist, optional=True)
    _checks.non_negative(owner, "eps", eps)
    _checks.non_negative(owner, "weight_decay", weight_decay, schedule=True, optional=True)
    if init_estim_sq_dist is None and _checks.is_zero(eps):
        raise ValueError(
            f"{owner}: with init_estim_sq_dist=None the start is eps, which must be > 0."
        )
    decay = identity() if weight_decay is None else add_decayed_weights(weight_decay, mask)
    return chain(
        decay, _scale_by_dowg(init_estim_sq_dist, eps), scale_by_learning_rate(learning_rate)
    )
