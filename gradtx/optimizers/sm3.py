"""SM3 (Anil, Gupta, Koren & Singer 2019, Alg. 2, SM3-II): memory-efficient AdaGrad.

AdaGrad keeps one accumulator per parameter. SM3 keeps one per *set* of a cover
of the parameters and bounds each parameter's accumulator by the smallest of its
sets'. For a tensor of shape ``(n_1, ..., n_p)`` the cover is the slices along
each axis (the rows and the columns of a matrix), so the state is ``n_1 + ... +
n_p`` numbers instead of ``n_1 * ... * n_p``. A vector or a scalar is its own
cover: SM3 is then AdaGrad.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import chain
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleBySM3State(NamedTuple):
    """State of :func:`scale_by_sm3`."""

    mu: Updates  # mu'(r): per leaf, a tuple of one vector per axis (the leaf itself
    # for a vector or a scalar): the cover's accumulators.
    nu: Updates  # the momentum m of the preconditioned gradient, shaped like the params.


def _axis_shape(ndim: int, axis: int, size: int) -> tuple[int, ...]:
    """``(1, ..., size, ..., 1)``: an axis accumulator broadcast against its leaf."""
    return tuple(size if i == axis else 1 for i in range(ndim))


def sm3_leaf(g, mu, m, b1, b2, eps):
    """One leaf of SM3-II, followed by the momentum.

    ``nu'(i) = min_{r ∋ i} mu'(r) + g(i)^2`` (``b2 = 1``), the step
    ``g / sqrt(nu' + eps)`` (0 where ``nu' = 0``), then ``mu'(r) = max_{i ∈ r} nu'(i)``.
    """
    c = tree.compute_dtype(jnp.promote_types(g.dtype, m.dtype))
    g_c = tree.as_dtype(g, c)
    if g.ndim < 2:
        bound = tree.as_dtype(mu[0], c)
    else:
        shaped = [jnp.reshape(a, _axis_shape(g.ndim, i, a.size)) for i, a in enumerate(mu)]
        bound = tree.as_dtype(functools.reduce(jnp.minimum, shaped), c)
    fresh = jnp.where(b2 == 1, 1, 1 - b2)  # b2 = 1 is SM3's sum; below 1, an EMA
    nu = fresh * g_c * g_c + b2 * bound
    positive = nu > 0
    step = jnp.where(positive, g_c / jnp.sqrt(jnp.where(positive, nu, 1) + eps), 0)
    new_m = tree.moment_leaf(step, m, b1, 1)
    if g.ndim < 2:
        new_mu = (tree.as_dtype(nu, mu[0].dtype),)
    else:
        others = lambda i: tuple(j for j in range(g.ndim) if j != i)  # noqa: E731
        new_mu = tuple(
            tree.as_dtype(jnp.max(nu, axis=others(i)), a.dtype) for i, a in enumerate(mu)
        )
    return tree.as_dtype(new_m, g.dtype), new_mu, new_m


def _axis_accumulators(p: Array) -> tuple[Array, ...]:
    """Zeros for the cover of ``p``: one vector per axis, or ``p``'s shape below 2-d."""
    p = jnp.asarray(p)
    if jnp.iscomplexobj(p):
        raise TypeError(
            "scale_by_sm3: complex parameters are not supported (the cover's maxima and "
            "minima compare real numbers): split them into real and imaginary parts."
        )
    if p.ndim < 2:
        return (tree.zeros_beside(p, p.shape, p.dtype),)
    return tuple(tree.zeros_beside(p, (size,), p.dtype) for size in p.shape)


def scale_by_sm3(b1: float = 0.9, b2: float = 1.0, eps: float = 1e-8) -> GradientTransformation:
    """SM3-II's scaling (Anil et al. 2019, Alg. 2) with an averaged momentum.

    .. math::
        \\nu'_t(i) = \\min_{r: S_r \\ni i} \\mu'_{t-1}(r) + g_t(i)^2, \\quad
        \\mu'_t(r) = \\max_{i \\in S_r} \\nu'_t(i), \\quad
        m_t = b_1 m_{t-1} + (1 - b_1) \\frac{g_t}{\\sqrt{\\nu'_t + \\epsilon}},
        \\quad \\text{out} = m_t

    with ``0/0 = 0``. The cover ``{S_r}`` of a leaf of rank >= 2 is its slices
    along each axis; a vector or a scalar is covered by its single entries
    (AdaGrad). With ``b2 < 1`` the sum becomes a moving average,
    ``nu' = (1 - b2) g^2 + b2 min mu'``.

    Departures from the paper: ``eps`` inside the root (0 is the paper's rule);
    the momentum ``m``, an average (``1 - b1`` weighs the new step) as Optax
    (the paper's experiments add momentum, its Alg. 2 has none: ``b1 = 0``). A
    scalar leaf is covered like a one-element vector (Optax's block fails on it).

    Args:
      b1: the momentum decay, in [0, 1).
      b2: in (0, 1]: 1 (default) is SM3's sum of squares.
      eps: >= 0, added inside the root.

    Raises:
      ValueError: ``b1`` outside [0, 1), ``b2`` outside (0, 1], a negative ``eps``.
      TypeError: complex params (at ``init``).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_sm3(b1=0.0, eps=0.0)
      >>> g = jnp.array([[1.0, 2.0], [-2.0, 4.0]])
      >>> tx.update(g, tx.init(g))[0]  # g / |g| on the first step
      Array([[ 1.,  1.],
             [-1.,  1.]], dtype=float32)

    References:
      Anil, Gupta, Koren & Singer (2019), Memory-Efficient Adaptive Optimization,
      Alg. 2 (SM3-II).
    """
    owner = "scale_by_sm3"
    _checks.in_range(owner, "b1", b1, 0.0, 1.0)
    _checks.finite(owner, "b2", b2)
    array = _checks.scalar(owner, "b2", b2)
    if array is not None and not 0 < array <= 1:
        _checks._fail(owner, "b2", b2, "in (0, 1]")
    _checks.non_negative(owner, "eps", eps)

    def init_fn(params):
        tree.check_inexact(params, owner)
        mu = jax.tree.map(_axis_accumulators, params)
        return ScaleBySM3State(mu, tree.zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.nu, updates, owner=owner)
        # Each leaf's mu is a tuple: a subtree at the leaf's place, which map_unzip
        # hands to the leaf function whole.
        out, mu, nu = tree.map_unzip(
            lambda g, mu, m: sm3_leaf(g, mu, m, b1, b2, eps), 3, updates, state.mu, state.nu
        )
        return out, ScaleBySM3State(mu, nu)

    return GradientTransformation(init_fn, update_fn)


def sm3(learning_rate: ScalarOrSchedule, momentum: float = 0.9) -> GradientTransformation:
    """SM3 (Anil et al. 2019, Alg. 2, SM3-II) with momentum.

    .. math::
        w_{t+1} = w_t - \\eta\\, m_t

    with ``m`` the averaged, SM3-preconditioned gradient of :func:`scale_by_sm3`.
    Composition: ``chain(scale_by_sm3(momentum), scale_by_learning_rate(eta))``, as
    Optax (which takes a constant rate only; a schedule works here too).

    Args:
      learning_rate: ``eta``, a number or a schedule.
      momentum: ``b1`` of :func:`scale_by_sm3`, in [0, 1).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.sm3(0.1, momentum=0.0)
      >>> tx.update(jnp.array([3.0, -4.0]), tx.init(jnp.zeros(2)))[0]
      Array([-0.1,  0.1], dtype=float32)

    References:
      Anil, Gupta, Koren & Singer (2019), Memory-Efficient Adaptive Optimization,
      Alg. 2.
    """
    _checks.learning_rate("sm3", learning_rate)
    return chain(scale_by_sm3(momentum), scale_by_learning_rate(learning_rate))
