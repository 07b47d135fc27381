"""AdaBelief: Adam scaled by the belief in the gradient (Zhuang et al. 2020, Alg. 2).

Symbols: ``alpha`` = ``learning_rate``; ``beta_1, beta_2`` = ``b1, b2``; ``m`` =
``mu``; ``s`` (the EMA of the squared prediction error ``(g - m)^2``) = ``nu``;
the paper's single ``epsilon`` is ``eps`` outside the root and ``eps_root``
inside ``s`` (both 1e-16 by default, so the defaults are the paper's).
"""

from __future__ import annotations

from typing import NamedTuple

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import chain
from gradtx.optimizers.adam import (
    bias_corrections,
    check_adam_args,
    moment_transformation,
    normalise,
)
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByBeliefState(NamedTuple):
    """State of :func:`scale_by_belief`."""

    count: Array  # int32 scalar: t.
    mu: Updates  # m: EMA of g.
    nu: Updates  # s: EMA of |g - m|^2 plus eps_root per step, real.


def _belief_leaf(g, mu, s, shared, b1, b2, eps, eps_root, nesterov):
    """One leaf of Alg. 2: the new ``m`` and ``s``, and ``m_hat / (sqrt(s_hat) + eps)``."""
    c = tree.compute_dtype(g.dtype)
    r = tree.real_dtype(c)
    g_c = tree.as_dtype(g, c)
    new_mu = tree.moment_leaf(g, mu, b1, 1)
    mu_c = tree.as_dtype(new_mu, c)
    surprise = tree.abs_sq(g_c - mu_c)  # (g_t - m_t)^2: the prediction error
    new_s = b2 * tree.as_dtype(s, r) + (1 - b2) * surprise + eps_root
    bc1, bc2, bc1_next = shared(c)
    if nesterov:
        mu_hat = b1 * mu_c / bc1_next + (1 - b1) * g_c / bc1
    else:
        mu_hat = mu_c / bc1
    out = normalise(mu_hat, new_s / bc2, eps, 0.0)
    return tree.as_dtype(out, g.dtype), new_mu, tree.as_dtype(new_s, s.dtype)


def scale_by_belief(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """AdaBelief's scaling: Adam with the variance of ``g`` around ``m`` for ``v``.

    .. math::
        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        s \\leftarrow \\beta_2 s + (1-\\beta_2) |g - m|^2 + \\epsilon_{root}, \\quad
        \\text{out} = \\frac{m / (1-\\beta_1^t)}{\\sqrt{s / (1-\\beta_2^t)} + \\epsilon}

    (Zhuang et al. 2020, Alg. 2, with the projection of its last line the
    identity, as in unconstrained training.) ``s`` uses the *new* ``m``. Like
    the paper, ``eps_root`` is added to ``s`` at every step, so it accumulates
    in the state (to ``eps_root / (1 - b2)``).

    Args:
      b1: ``beta_1`` in [0, 1).
      b2: ``beta_2`` in [0, 1).
      eps: ``epsilon`` >= 0, added to the root.
      eps_root: ``epsilon`` >= 0, added to ``s`` each step.
      nesterov: use ``b1 m/(1-b1^{t+1}) + (1-b1) g/(1-b1^t)`` for the corrected
        ``m``, as :func:`scale_by_adam` (Optax's option; not in the paper).

    Raises:
      ValueError: ``b1`` or ``b2`` outside [0, 1); negative ``eps``/``eps_root``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_belief()
      >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]  # m / |0.9 g|
      Array([ 1.1111..., -1.1111...], dtype=float32)
    """
    check_adam_args("scale_by_belief", b1, b2, eps, eps_root, None, None)

    def leaf(g, mu, s, shared):
        return _belief_leaf(g, mu, s, shared, b1, b2, eps, eps_root, nesterov)

    scalars = bias_corrections(b1, b2, nesterov)
    return moment_transformation("scale_by_belief", ScaleByBeliefState, leaf, None, None, scalars)


def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """AdaBelief (Zhuang et al. 2020, Alg. 2): steps scaled by the belief in ``g``.

    .. math::
        \\theta \\leftarrow \\theta - \\alpha \\frac{\\hat m}{\\sqrt{\\hat s} + \\epsilon}

    with ``s`` the EMA of ``(g - m)^2`` (:func:`scale_by_belief`): a step is large
    where the gradient is close to its prediction ``m``, small where it is not.
    Composition: ``chain(scale_by_belief(...), scale_by_learning_rate(alpha))``.

    Args:
      learning_rate: ``alpha``, a number or a schedule.
      b1, b2, eps, eps_root, nesterov: see :func:`scale_by_belief`.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda w: jnp.sum(w**2)
      >>> tx = gradtx.adabelief(0.1)
      >>> w = jnp.array([1.0, -2.0]); state = tx.init(w)
      >>> for _ in range(200):
      ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
      ...     w = gradtx.apply_updates(w, updates)
      >>> bool(loss(w) < 1e-2)
      True

    References:
      Zhuang, Tang, Ding, Tatikonda, Dvornek, Papademetris & Duncan (2020),
      AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients,
      NeurIPS, Alg. 2.
    """
    _checks.learning_rate("adabelief", learning_rate)
    return chain(
        scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )
