"""NAdam: Adam with Nesterov momentum (Dozat 2016, Alg. 2), and NAdamW.

Symbols and the placement of ``eps`` as in :mod:`gradtx.optimizers.adam`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import Mask, chain
from gradtx.optimizers.adam import check_adam_args, init_moments, normalise
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByNadamState(NamedTuple):
    """State of :func:`scale_by_nadam`."""

    count: Array  # int32 scalar: t.
    mu_product: Array  # prod_{i<=t} mu_i, a scalar in the default float dtype.
    mu: Updates  # m: EMA of g with the constant b1.
    nu: Updates  # v: EMA of |g|^2.


def _dozat_momentum(b1, momentum_decay, step):
    """``mu_t = b1 (1 - 0.5 * 0.96^(t * psi))`` (Dozat 2016; psi = 1/250)."""
    return b1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))


def scale_by_nadam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    momentum_decay: float | None = 0.004,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """NAdam's scaling: Adam with Nesterov momentum (Dozat 2016, Alg. 2).

    .. math::
        \\mu_t = \\beta_1 (1 - \\tfrac12 \\, 0.96^{t \\psi}), \\quad
        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        \\bar m = \\frac{(1-\\mu_t)\\, g}{1 - \\prod_{i\\le t}\\mu_i}
                + \\frac{\\mu_{t+1}\\, m}{1 - \\prod_{i\\le t+1}\\mu_i}, \\quad
        \\text{out} = \\frac{\\bar m}{\\sqrt{\\hat v + \\epsilon_{root}} + \\epsilon}

    with ``v_hat`` Adam's corrected second moment.

    Args:
      b1, b2, eps, eps_root, mu_dtype, nu_dtype: as :func:`scale_by_adam`.
      momentum_decay: ``psi`` >= 0 of Dozat's warming momentum schedule (0.004, i.e.
        ``0.96^(t/250)``, as the paper, PyTorch and Keras). ``None`` uses the
        constant ``mu_t = b1``, which is Optax's ``nadam`` and
        ``scale_by_adam(nesterov=True)``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_nadam(momentum_decay=None)
      >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]  # (0.9 * 0.2 / 0.19 + 2) / 2
      Array([1.47367...], dtype=float32)
    """
    check_adam_args("scale_by_nadam", b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    if momentum_decay is not None:
        _checks.non_negative("scale_by_nadam", "momentum_decay", momentum_decay)

    def momentum_at(step):
        if momentum_decay is None:
            return jnp.asarray(b1, step.dtype)
        return _dozat_momentum(b1, momentum_decay, step)

    def init_fn(params):
        mu, nu = init_moments(params, mu_dtype, nu_dtype)
        return ScaleByNadamState(tree.zero_count(), jnp.ones([], float), mu, nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, owner="scale_by_nadam")
        count = tree.safe_increment(state.count)
        step = count.astype(state.mu_product.dtype)
        mu_t, mu_next = momentum_at(step), momentum_at(step + 1)
        product = state.mu_product * mu_t

        def leaf(g, mu, nu):
            c = tree.compute_dtype(g.dtype)
            new_mu = tree.moment_leaf(g, mu, b1, 1)
            new_nu = tree.moment_leaf(g, nu, b2, 2)
            p_t, p_next = product.astype(c), (product * mu_next).astype(c)
            mixed = (1 - mu_t.astype(c)) * g.astype(c) / (1 - p_t) + mu_next.astype(
                c
            ) * new_mu.astype(c) / (1 - p_next)
            nu_hat = new_nu.astype(tree.real_dtype(c)) / tree.bias_correction_factor(b2, count, c)
            out = normalise(mixed, nu_hat, eps, eps_root)
            return out.astype(g.dtype), new_mu, new_nu

        out, mu, nu = tree.map_unzip(leaf, 3, updates, state.mu, state.nu)
        return out, ScaleByNadamState(count, product, mu, nu)

    return GradientTransformation(init_fn, update_fn)


def nadam(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    momentum_decay: float | None = 0.004,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """NAdam (Dozat 2016): Adam with Nesterov momentum.

    Composition: ``chain(scale_by_nadam(...), scale_by_learning_rate(lr))``; the
    rule is in :func:`scale_by_nadam`. Defaults are the paper's, with its momentum
    schedule (``momentum_decay=0.004``, as PyTorch and Keras);
    ``momentum_decay=None`` gives Optax's ``nadam`` (a constant ``mu_t = b1``).

    Args:
      learning_rate: the step size, a number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, momentum_decay, nu_dtype: see
        :func:`scale_by_nadam`.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.nadam(0.1, momentum_decay=None)
      >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]
      Array([-0.147367...], dtype=float32)

    References:
      Dozat (2016), Incorporating Nesterov Momentum into Adam, ICLR workshop, Alg. 2.
    """
    _checks.learning_rate("nadam", learning_rate)
    return chain(
        scale_by_nadam(
            b1, b2, eps, eps_root, mu_dtype, momentum_decay=momentum_decay, nu_dtype=nu_dtype
        ),
        scale_by_learning_rate(learning_rate),
    )


def nadamw(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask | None = None,
    *,
    momentum_decay: float | None = 0.004,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """NAdamW: NAdam with decoupled weight decay (Loshchilov & Hutter 2019).

    .. math::
        \\theta \\leftarrow \\theta - \\eta \\left(
            \\frac{\\bar m}{\\sqrt{\\hat v} + \\epsilon} + \\lambda \\theta \\right)

    with ``m_bar`` NAdam's Nesterov-mixed moment (:func:`scale_by_nadam`).
    Composition: ``chain(scale_by_nadam(...), add_decayed_weights(lambda, mask),
    scale_by_learning_rate(eta))``, as :func:`adamw` is built on Adam's scaling.
    Like :func:`nadam`, the default is Dozat's momentum schedule
    (``momentum_decay=0.004``); ``momentum_decay=None`` gives Optax's ``nadamw``.

    Args:
      learning_rate: ``eta``, a number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, momentum_decay, nu_dtype: see
        :func:`scale_by_nadam`.
      weight_decay: ``lambda`` >= 0, a number or a schedule (default 1e-4, Optax's).
      mask: which leaves are decayed (see :func:`add_decayed_weights`).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> params = jnp.ones(2)
      >>> tx = gradtx.nadamw(1e-3, weight_decay=0.01)
      >>> tx.update(jnp.zeros(2), tx.init(params), params)[0]  # -lr * lambda * w
      Array([-1.0...e-05, -1.0...e-05], dtype=float32)

    References:
      Dozat (2016), Incorporating Nesterov Momentum into Adam, ICLR workshop, Alg. 2;
      Loshchilov & Hutter (2019), Decoupled Weight Decay Regularization, Alg. 2.
    """
    _checks.learning_rate("nadamw", learning_rate)
    return chain(
        scale_by_nadam(
            b1, b2, eps, eps_root, mu_dtype, momentum_decay=momentum_decay, nu_dtype=nu_dtype
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
