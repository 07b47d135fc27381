"""Euclidean projections of a pytree onto convex sets (and two spheres).

Each function returns ``argmin_p ||x - p||_2`` over its set ``C``, with ``x`` a
whole tree seen as one flat vector. Projected gradient descent alternates a step
and a projection::

    updates, state = opt.update(grads, state, params)
    params = gradtx.projections.projection_simplex(gradtx.apply_updates(params, updates))

The names, arguments and defaults are ``optax.projections``'. Optax is the
reference for the conventions; a few degenerate inputs where Optax's result is
not a point of the set (NaN, or off the sphere) get a point of the set here, and
each function's docstring says which.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradtx import _checks
from gradtx import tree as pytree


def _radius(owner: str, name: str, value: Any) -> None:
    """Checks a scalar radius or sum (>= 0, finite); a tree of them is left alone."""
    if jax.tree_util.treedef_is_leaf(jax.tree.structure(value)) and jnp.ndim(value) == 0:
        _checks.non_negative(owner, name, value)


def _check_real(owner: str, tree_: Any) -> None:
    complex_paths = [
        jax.tree_util.keystr(path) or "the root"
        for path, x in jax.tree_util.tree_leaves_with_path(tree_)
        if jnp.iscomplexobj(x)
    ]
    if complex_paths:
        raise TypeError(
            f"{owner}: the set is defined by an order on real numbers, and the leaves at "
            f"{pytree.name_paths(complex_paths)} are complex."
        )


def _like(bound: Any, tree_: Any) -> Any:
    """``bound`` as a tree like ``tree_``: a scalar is repeated at every leaf."""
    if jax.tree_util.treedef_is_leaf(jax.tree.structure(bound)):
        return jax.tree.map(lambda _: bound, tree_)
    return bound


def projection_non_negative(tree: Any) -> Any:
    """Projection onto the non-negative orthant: ``p = max(x, 0)`` elementwise.

    .. math::
        \\operatorname{argmin}_{p \\ge 0} \\|x - p\\|_2^2 = \\max(x, 0)

    Args:
      tree: the tree ``x`` to project (real leaves).

    Returns:
      a tree like ``tree``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.projections.projection_non_negative({"w": jnp.array([-1.0, 2.0])})
      {'w': Array([0., 2.], dtype=float32)}
    """
    return jax.tree.map(jax.nn.relu, tree)


def projection_box(tree: Any, lower: Any, upper: Any) -> Any:
    """Projection onto the box ``lower <= p <= upper``: each element clipped.

    .. math::
        \\operatorname{argmin}_{l \\le p \\le u} \\|x - p\\|_2^2 = \\min(\\max(x, l), u)

    The set is a product of intervals, so the projection is separable.

    Args:
      tree: the tree ``x`` to project (real leaves).
      lower: the lower bound ``l``: a scalar, or a tree like ``tree``.
      upper: the upper bound ``u``: a scalar, or a tree like ``tree``.

    Returns:
      a tree like ``tree``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.projections.projection_box({"w": jnp.array([-1.0, 0.5, 2.0])}, 0.0, 1.0)
      {'w': Array([0. , 0.5, 1. ], dtype=float32)}

    Note:
      A scalar bound applies to every leaf; Optax's ``projection_box`` raises on
      scalar bounds for a tree of more than one leaf.
    """
    return jax.tree.map(jnp.clip, tree, _like(lower, tree), _like(upper, tree))


def projection_hypercube(tree: Any, scale: Any = 1) -> Any:
    """Projection onto the hypercube ``0 <= p <= scale`` (:func:`projection_box`).

    Args:
      tree: the tree ``x`` to project (real leaves).
      scale: the side of the cube: a scalar >= 0, or a tree like ``tree``.

    Returns:
      a tree like ``tree``.

    Raises:
      ValueError: a scalar ``scale`` that is negative or not finite.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.projections.projection_hypercube(jnp.array([-1.0, 0.5, 2.0]))
      Array([0. , 0.5, 1. ], dtype=float32)
    """
    _radius("projection_hypercube", "scale", scale)
    return projection_box(tree, 0, scale)


def _simplex_threshold(v: jax.Array, scale: Any) -> jax.Array:
    """``tau`` with ``sum(max(v - tau, 0)) = scale``, by sorting (Condat 2016, Alg. 1)."""
    u = jnp.sort(v)[::-1]
    partial_sums = jnp.cumsum(u)
    j = jnp.arange(1, v.size + 1, dtype=v.dtype)
    # u_j - (sum_{i<=j} u_i - scale) / j > 0 holds exactly for j = 1..k.
    k = jnp.maximum(jnp.sum(u - (partial_sums - scale) / j > 0), 1)
    return (partial_sums[k - 1] - scale) / k.astype(v.dtype)


def projection_simplex(tree: Any, scale: Any = 1) -> Any:
    """Projection onto the simplex ``{p >= 0, sum(p) = scale}`` (all leaves together).

    .. math::
        \\operatorname{argmin}_{p \\ge 0,\\ \\mathbf{1}^\\top p = s} \\|x - p\\|_2^2
        = \\max(x - \\tau, 0), \\qquad
        \\tau = \\frac{1}{k}\\Big(\\sum_{i \\le k} u_i - s\\Big), \\quad
        k = \\max\\Big\\{j : u_j > \\frac{1}{j}\\Big(\\sum_{i \\le j} u_i - s\\Big)\\Big\\}

    with ``u`` the elements of ``x`` sorted in decreasing order and ``s`` =
    ``scale``. ``tau`` is the multiplier of the equality constraint in the KKT
    conditions. This is the sort-based algorithm (Held, Wolfe & Crowder 1974;
    Duchi, Shalev-Shwartz, Singer & Chandra 2008, Fig. 1; Condat 2016, Alg. 1):
    ``O(n log n)``, branch-free, so it runs under ``jit`` and ``vmap``.
    Condat's faster expected-linear-time algorithms (his Alg. 3 and 4) loop on
    data-dependent conditions and are not used. The derivative is JAX's through
    the sort (``dp/dx = diag(m) - m m^T / k`` with ``m`` the support), the
    Jacobian Optax writes out by hand. The arithmetic is done in at least
    float32 and each leaf is returned in its dtype.

    Args:
      tree: the tree ``x`` to project (real leaves).
      scale: the sum ``s`` >= 0 of the result (1: the probability simplex).

    Returns:
      a tree like ``tree``.

    Raises:
      TypeError: a complex leaf.
      ValueError: a ``scale`` that is negative or not finite.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.projections.projection_simplex({"w": jnp.array([0.75, 1.25]), "b": -2.0})
      {'b': Array(0., dtype=float32), 'w': Array([0.25, 0.75], dtype=float32)}

    References:
      Condat (2016), Fast projection onto the simplex and the l1 ball,
      Mathematical Programming 158, Alg. 1.
      Duchi, Shalev-Shwartz, Singer & Chandra (2008), Efficient projections onto
      the l1-ball for learning in high dimensions, ICML, Fig. 1.
    """
    _radius("projection_simplex", "scale", scale)
    _check_real("projection_simplex", tree)
    values, unravel = ravel_pytree(tree)
    if values.size == 0:
        return tree
    v = values.astype(pytree.compute_dtype(values.dtype))
    projected = jax.nn.relu(v - _simplex_threshold(v, scale))
    return unravel(projected.astype(values.dtype))


def _signs(tree_: Any) -> Any:
    """``sign(x)`` with +1 at 0: the sign a zero element takes on a sphere."""
    return jax.tree.map(lambda x: jnp.where(x < 0, -1, 1).astype(jnp.result_type(x)), tree_)


def projection_l1_sphere(tree: Any, scale: Any = 1) -> Any:
    """Projection onto the l1 sphere ``{p : ||p||_1 = scale}``.

    .. math::
        \\operatorname{argmin}_{\\|p\\|_1 = s} \\|x - p\\|_2^2
        = \\operatorname{sign}(x) \\odot \\Pi_{\\Delta_s}(|x|)

    with :math:`\\Pi_{\\Delta_s}` the projection onto the simplex of sum ``s``
    (:func:`projection_simplex`): the nearest point keeps the signs of ``x``, and
    its magnitudes solve the simplex problem (Duchi et al. 2008, Lemma 3).

    Args:
      tree: the tree ``x`` to project (real leaves).
      scale: the radius ``s`` >= 0.

    Returns:
      a tree like ``tree``.

    Raises:
      TypeError: a complex leaf.
      ValueError: a ``scale`` that is negative or not finite.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.projections.projection_l1_sphere(jnp.array([2.0, -1.0]), 1.0)
      Array([ 1., -0.], dtype=float32)

    Note:
      A zero element takes the sign +1 (both signs are equally near). Optax's
      ``projection_l1_sphere`` uses ``sign(0) = 0`` there, which for a point
      inside the ball with a zero element returns a point off the sphere
      (``[0.2, 0]`` gives ``[0.6, 0]``, of l1 norm 0.6; here ``[0.6, 0.4]``).
    """
    _radius("projection_l1_sphere", "scale", scale)
    _check_real("projection_l1_sphere", tree)
    magnitudes = projection_simplex(jax.tree.map(jnp.abs, tree), scale)
    return pytree.mul(_signs(tree), magnitudes)


def projection_l1_ball(tree: Any, scale: Any = 1) -> Any:
    """Projection onto the l1 ball ``{p : ||p||_1 <= scale}``.

    .. math::
        \\operatorname{argmin}_{\\|p\\|_1 \\le s} \\|x - p\\|_2^2 =
        \\begin{cases} x & \\|x\\|_1 \\le s \\\\
        \\operatorname{sign}(x) \\odot \\max(|x| - \\tau, 0) & \\text{otherwise}
        \\end{cases}

    Outside the ball the nearest point is on the sphere
    (:func:`projection_l1_sphere`, the sort-based simplex algorithm of Duchi et
    al. 2008, Fig. 1 on ``|x|``): soft thresholding at the ``tau`` that makes the
    l1 norm ``s``.

    Args:
      tree: the tree ``x`` to project (real leaves).
      scale: the radius ``s`` >= 0.

    Returns:
      a tree like ``tree``.

    Raises:
      TypeError: a complex leaf.
      ValueError: a ``scale`` that is negative or not finite.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.projections.projection_l1_ball({"w": jnp.array([0.75, -1.25]), "b": 0.1})
      {'b': Array(0., dtype=float32), 'w': Array([ 0.25, -0.75], dtype=float32)}

    References:
      Duchi, Shalev-Shwartz, Singer & Chandra (2008), Efficient projections onto
      the l1-ball for learning in high dimensions, ICML, Sec. 4.
    """
    _radius("projection_l1_ball", "scale", scale)
    _check_real("projection_l1_ball", tree)
    inside = pytree.norm(tree, ord=1) <= scale
    return pytree.where(inside, tree, projection_l1_sphere(tree, scale))


def projection_l2_sphere(tree: Any, scale: Any = 1) -> Any:
    """Projection onto the l2 sphere ``{p : ||p||_2 = scale}``: ``p = scale * x / ||x||``.

    .. math::
        \\operatorname{argmin}_{\\|p\\|_2 = s} \\|x - p\\|_2^2 = \\frac{s}{\\|x\\|_2}\\, x

    Args:
      tree: the tree ``x`` to project (real or complex leaves).
      scale: the radius ``s`` >= 0.

    Returns:
      a tree like ``tree``.

    Raises:
      ValueError: a ``scale`` that is negative or not finite.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.projections.projection_l2_sphere(jnp.array([3.0, 4.0]), 10.0)
      Array([6., 8.], dtype=float32)

    Note:
      Every point of the sphere is nearest to ``x = 0``; this returns the one with
      all elements equal to ``s / sqrt(n)``, where Optax's returns NaN.
    """
    _radius("projection_l2_sphere", "scale", scale)
    norm = pytree.norm(tree)
    uniform = scale / jnp.sqrt(max(pytree.size(tree), 1))
    safe = jnp.where(norm > 0, norm, 1)
    return jax.tree.map(
        lambda x: jnp.where(norm > 0, (scale / safe) * x, uniform).astype(x.dtype), tree
    )


def projection_l2_ball(tree: Any, scale: Any = 1) -> Any:
    """Projection onto the l2 ball ``{p : ||p||_2 <= scale}``: ``x`` scaled back if outside.

    .. math::
        \\operatorname{argmin}_{\\|p\\|_2 \\le s} \\|x - p\\|_2^2
        = \\frac{s}{\\max(\\|x\\|_2, s)}\\, x

    Args:
      tree: the tree ``x`` to project (real or complex leaves).
      scale: the radius ``s`` >= 0.

    Returns:
      a tree like ``tree``.

    Raises:
      ValueError: a ``scale`` that is negative or not finite.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.projections.projection_l2_ball(jnp.array([3.0, 4.0]), 1.0)
      Array([0.6, 0.8], dtype=float32)

    Note:
      With ``s = 0`` and ``x = 0`` this returns 0, where Optax's returns NaN.
    """
    _radius("projection_l2_ball", "scale", scale)
    norm = pytree.norm(tree)
    factor = jnp.where(norm > scale, scale / jnp.where(norm > 0, norm, 1), 1)
    return jax.tree.map(lambda x: (factor * x).astype(x.dtype), tree)


def projection_linf_ball(tree: Any, scale: Any = 1) -> Any:
    """Projection onto the l-infinity ball ``{p : max |p_i| <= scale}``: each element clipped.

    .. math::
        \\operatorname{argmin}_{\\|p\\|_\\infty \\le s} \\|x - p\\|_2^2 = \\min(\\max(x, -s), s)

    Args:
      tree: the tree ``x`` to project (real leaves).
      scale: the radius ``s`` >= 0.

    Returns:
      a tree like ``tree``.

    Raises:
      ValueError: a ``scale`` that is negative or not finite.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.projections.projection_linf_ball(jnp.array([-3.0, 0.5, 2.0]))
      Array([-1. ,  0.5,  1. ], dtype=float32)
    """
    _radius("projection_linf_ball", "scale", scale)
    return projection_box(tree, -scale, scale)


def projection_vector(x: Any, a: Any) -> Any:
    """Projection onto the line spanned by the tree ``a``.

    .. math::
        \\operatorname{proj}_a x = \\frac{\\langle a, x \\rangle}{\\langle a, a \\rangle}\\, a

    Args:
      x: the tree to project.
      a: a nonzero tree like ``x`` (a zero ``a`` gives NaN, as in Optax).

    Returns:
      a tree like ``x``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> gradtx.projections.projection_vector(jnp.array([2.0, 3.0]), jnp.array([1.0, 0.0]))
      Array([2., 0.], dtype=float32)
    """
    return pytree.scale(pytree.vdot(a, x) / pytree.vdot(a, a), a)


def projection_hyperplane(x: Any, a: Any, b: Any) -> Any:
    """Projection onto the hyperplane ``{y : <a, y> = b}``.

    .. math::
        \\operatorname{argmin}_{\\langle a, y \\rangle = b} \\|x - y\\|_2^2
        = x + \\frac{b - \\langle a, x \\rangle}{\\langle a, a \\rangle}\\, a

    Args:
      x: the tree to project.
      a: the hyperplane's normal, a nonzero tree like ``x``.
      b: the hyperplane's offset, a scalar.

    Returns:
      a tree like ``x``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> a = jnp.array([1.0, 1.0])
      >>> gradtx.projections.projection_hyperplane(jnp.array([2.0, 0.0]), a, 1.0)
      Array([ 1.5, -0.5], dtype=float32)
    """
    return pytree.add_scale(x, (b - pytree.vdot(a, x)) / pytree.vdot(a, a), a)


def projection_halfspace(x: Any, a: Any, b: Any) -> Any:
    """Projection onto the halfspace ``{y : <a, y> <= b}``.

    .. math::
        \\operatorname{argmin}_{\\langle a, y \\rangle \\le b} \\|x - y\\|_2^2
        = x + \\min\\Big(0, \\frac{b - \\langle a, x \\rangle}{\\langle a, a \\rangle}\\Big)\\, a

    A point inside is returned as it is; one outside goes to the hyperplane
    (:func:`projection_hyperplane`).

    Args:
      x: the tree to project (real leaves).
      a: the halfspace's outward normal, a nonzero tree like ``x``.
      b: the offset, a scalar.

    Returns:
      a tree like ``x``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> a = jnp.array([1.0, 1.0])
      >>> gradtx.projections.projection_halfspace(jnp.array([2.0, 0.0]), a, 1.0)
      Array([ 1.5, -0.5], dtype=float32)
      >>> gradtx.projections.projection_halfspace(jnp.array([0.0, 0.0]), a, 1.0)
      Array([0., 0.], dtype=float32)
    """
    step = jnp.minimum((b - pytree.vdot(a, x)) / pytree.vdot(a, a), 0)
    return pytree.add_scale(x, step, a)
