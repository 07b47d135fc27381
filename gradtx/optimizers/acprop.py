"""ACProp: AdaBelief's centred second moment, used one step late (Zhuang et al. 2021, Alg. 2).

Symbols: ``alpha`` = ``learning_rate``; ``beta_1, beta_2`` = ``b1, b2``; ``m`` =
``mu``; ``s`` (the EMA of the squared prediction error) = ``nu``; ``epsilon`` =
``eps`` outside the root and ``eps_root`` added to ``s`` each step. The state is
AdaBelief's, :class:`gradtx.ScaleByBeliefState`, as in Optax.
"""

from __future__ import annotations

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import GradientTransformation, ScalarOrSchedule
from gradtx.combine import Mask, chain
from gradtx.optimizers.adabelief import ScaleByBeliefState
from gradtx.optimizers.adam import check_adam_args, moment_transformation, normalise
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate


def _acprop_leaf(g, mu, s, shared, b1, b2, eps, eps_root, centre_on_new, momentum_numerator):
    """One leaf of Alg. 2: the new ``m`` and ``s``, and ``g / (sqrt(s_hat_{t-1}) + eps)``
    (``m_hat_t`` in place of ``g`` with ``momentum_numerator``)."""
    c = tree.compute_dtype(g.dtype)
    r = tree.real_dtype(c)
    g_c = tree.as_dtype(g, c)
    new_mu = tree.moment_leaf(g, mu, b1, 1)
    centre = tree.as_dtype(new_mu if centre_on_new else mu, c)
    s_prev = tree.as_dtype(s, r)
    new_s = b2 * s_prev + (1 - b2) * tree.abs_sq(g_c - centre) + eps_root
    bc1, bc2_prev, first = shared(c)
    # At t = 1 there is no s_{t-1} yet: the step divides by 1 (Optax's choice).
    s_hat_prev = jnp.where(first, 1, s_prev / jnp.where(first, 1, bc2_prev))
    numerator = tree.as_dtype(new_mu, c) / bc1 if momentum_numerator else g_c
    out = normalise(numerator, s_hat_prev, eps, 0.0)
    return tree.as_dtype(out, g.dtype), new_mu, tree.as_dtype(new_s, s.dtype)


def scale_by_acprop(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    centre_on_new_momentum: bool = False,
    momentum_numerator: bool = False,
) -> GradientTransformation:
    """ACProp's scaling: the gradient over the root of the *previous* centred moment.

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        s_t = \\beta_2 s_{t-1} + (1-\\beta_2) |g_t - m_{t-1}|^2 + \\epsilon_{root},
        \\\\
        \\text{out} = \\frac{g_t}{\\sqrt{s_{t-1} / (1-\\beta_2^{t-1})} + \\epsilon}
        \\quad (t > 1), \\qquad \\text{out} = \\frac{g_1}{1 + \\epsilon} \\quad (t = 1)

    The asynchronous update of Zhuang et al. (2021, Alg. 2): the denominator
    holds information up to step ``t - 1`` only, so it is independent of the
    gradient it divides, while the numerator uses the gradient of step ``t``;
    ``m`` centres ``s`` (AdaBelief's "belief", :func:`gradtx.scale_by_belief`).

    This is ``optax.contrib.scale_by_acprop``'s arithmetic, and its choices where
    the algorithm leaves them open: ``s_{t-1}`` is bias-corrected by
    ``1 - beta_2^{t-1}``, and the first step, with no ``s_0`` to divide by,
    divides by 1. Optax's docstring writes the error as ``g_t - m_t`` while its
    code centres on ``m_{t-1}``; ``centre_on_new_momentum`` picks. The authors'
    PyTorch code (an AdaBelief fork) centres on ``m_t`` and divides the
    gradient by default; its ``momentum_update`` option divides the
    bias-corrected momentum ``m_t / (1 - beta_1^t)`` instead, which
    ``momentum_numerator`` selects (the authors' code also rectifies the step as
    RAdam by default, which gradtx does not do).

    Args:
      b1: ``beta_1`` in [0, 1).
      b2: ``beta_2`` in [0, 1).
      eps: ``epsilon`` >= 0, added to the root.
      eps_root: >= 0, added to ``s`` every step (it accumulates in the state).
      centre_on_new_momentum: ``False`` (default; Optax's code): the error is
        ``g_t - m_{t-1}``, the prediction made before ``g_t`` was seen.
        ``True``: ``g_t - m_t``, as AdaBelief's Alg. 2, Optax's docstring and
        the authors' code.
      momentum_numerator: ``False`` (default; Optax's and the authors' default):
        the numerator is ``g_t``. ``True``: ``m_t / (1 - beta_1^t)``, the
        authors' ``momentum_update=True``.

    Raises:
      ValueError: ``b1`` or ``b2`` outside [0, 1); negative ``eps``/``eps_root``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_acprop(eps=0.0)
      >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]  # g at t = 1
      Array([ 0.5, -2. ], dtype=float32)
    """
    check_adam_args("scale_by_acprop", b1, b2, eps, eps_root, None, None)
    for name, value in (
        ("centre_on_new_momentum", centre_on_new_momentum),
        ("momentum_numerator", momentum_numerator),
    ):
        if not isinstance(value, bool):
            raise TypeError(f"scale_by_acprop: {name} must be a bool, got {value!r}.")

    def leaf(g, mu, s, shared):
        return _acprop_leaf(
            g, mu, s, shared, b1, b2, eps, eps_root, centre_on_new_momentum, momentum_numerator
        )

    def scalars(count, dtype):
        bc1 = tree.bias_correction_factor(b1, count, dtype)
        return bc1, tree.bias_correction_factor(b2, count - 1, dtype), count == 1

    return moment_transformation("scale_by_acprop", ScaleByBeliefState, leaf, None, None, scalars)


def acprop(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
    *,
    centre_on_new_momentum: bool = False,
    momentum_numerator: bool = False,
) -> GradientTransformation:
    """ACProp (Zhuang et al. 2021, Alg. 2): centred, asynchronous adaptive steps.

    .. math::
        \\theta \\leftarrow \\theta - \\alpha \\left(
            \\frac{g_t}{\\sqrt{\\hat s_{t-1}} + \\epsilon} + \\lambda \\theta \\right)

    Composition: ``chain(scale_by_acprop(...), add_decayed_weights(lambda, mask),
    scale_by_learning_rate(alpha))``, as Optax's ``optax.contrib.acprop``: the
    decay is decoupled from the scaling and multiplied by the learning rate.

    Args:
      learning_rate: ``alpha``, a number or a schedule.
      b1, b2, eps, eps_root, centre_on_new_momentum, momentum_numerator: see
        :func:`scale_by_acprop`.
      weight_decay: ``lambda`` >= 0, a number or a schedule.
      mask: which leaves are decayed (see :func:`add_decayed_weights`).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.acprop(0.1, eps=0.0)
      >>> w = jnp.zeros(1)
      >>> tx.update(jnp.array([2.0]), tx.init(w), w)[0]
      Array([-0.2], dtype=float32)

    References:
      Zhuang, Ding, Tang, Dvornek, Tatikonda & Duncan (2021), Momentum Centering
      and Asynchronous Update for Adaptive Gradient Methods, Alg. 2 (ACProp).
    """
    _checks.learning_rate("acprop", learning_rate)
    return chain(
        scale_by_acprop(
            b1,
            b2,
            eps,
            eps_root,
            centre_on_new_momentum=centre_on_new_momentum,
            momentum_numerator=momentum_numerator,
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
