"""AMSGrad: Adam with a non-decreasing second moment (Reddi, Kale & Kumar 2018).

Symbols and the placement of ``eps`` as in :mod:`gradtx.optimizers.adam`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import chain
from gradtx.optimizers.adam import bias_corrections, check_adam_args, init_moments, normalise
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByAmsgradState(NamedTuple):
    """State of :func:`scale_by_amsgrad`."""

    count: Array  # int32 scalar: t.
    mu: Updates  # m: EMA of g.
    nu: Updates  # v: EMA of |g|^2.
    nu_max: Updates  # v_hat (Reddi et al.): the running maximum of v (see options).


def scale_by_amsgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    max_before_bias_correction: bool = False,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AMSGrad's scaling: Adam with a non-decreasing second moment.

    .. math::
        \\hat v^{max}_t = \\max(\\hat v^{max}_{t-1}, \\hat v_t), \\qquad
        \\text{out} = \\frac{\\hat m}{\\sqrt{\\hat v^{max}_t + \\epsilon_{root}} + \\epsilon}

    (Reddi, Kale & Kumar 2018, Alg. 2.) References disagree on what the maximum is
    taken over:

    * ``max_before_bias_correction=False`` (default, Optax): the maximum of the
      bias-corrected ``v_hat_t = v_t / (1 - b2^t)``.
    * ``True`` (PyTorch): the maximum of the raw ``v_t``, corrected afterwards,
      ``sqrt(max(v) / (1 - b2^t))``. Because ``1 - b2^t`` grows, this forgets a
      large early ``v_hat`` faster.
    * ``bias_correction_mu=bias_correction_nu=False``: the paper's Alg. 2, with no
      correction at all.

    Args:
      b1, b2, eps, eps_root, mu_dtype, nu_dtype: as :func:`scale_by_adam`.
      bias_correction_mu: divide ``m`` by ``1 - b1^t``.
      bias_correction_nu: divide ``v`` by ``1 - b2^t``.
      max_before_bias_correction: see above.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_amsgrad()
      >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]  # ~ sign(g)
      Array([0.99999...], dtype=float32)
    """
    check_adam_args("scale_by_amsgrad", b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    corrections = bias_corrections(b1, b2, nesterov=False)

    def leaf(g, mu, nu, nu_max, factors):
        c = tree.compute_dtype(g.dtype)
        r = tree.real_dtype(c)
        new_mu = tree.moment_leaf(g, mu, b1, 1)
        new_nu = tree.moment_leaf(g, nu, b2, 2)
        bc1, bc2, _ = factors(c)
        bc2 = bc2 if bias_correction_nu else 1
        mu_hat = new_mu.astype(c)
        if bias_correction_mu:
            mu_hat = mu_hat / bc1
        if max_before_bias_correction:
            new_max = jnp.maximum(nu_max.astype(r), new_nu.astype(r))
            nu_hat = new_max / bc2
        else:
            new_max = jnp.maximum(nu_max.astype(r), new_nu.astype(r) / bc2)
            nu_hat = new_max
        out = normalise(mu_hat, nu_hat, eps, eps_root)
        return out.astype(g.dtype), new_mu, new_nu, new_max.astype(nu_max.dtype)

    def init_fn(params):
        mu, nu = init_moments(params, mu_dtype, nu_dtype)
        # nu_max gets its own buffer: a state whose leaves alias cannot be donated.
        nu_max = tree.zeros_like(params, nu_dtype, real=True)
        return ScaleByAmsgradState(tree.zero_count(), mu, nu, nu_max)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, owner="scale_by_amsgrad")
        count = tree.safe_increment(state.count)

        def factors(dtype):
            return corrections(count, dtype)

        out, mu, nu, nu_max = tree.map_unzip(
            lambda g, m, v, vm: leaf(g, m, v, vm, factors),
            4,
            updates,
            state.mu,
            state.nu,
            state.nu_max,
        )
        return out, ScaleByAmsgradState(count, mu, nu, nu_max)

    return GradientTransformation(init_fn, update_fn)


def amsgrad(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    max_before_bias_correction: bool = False,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AMSGrad (Reddi, Kale & Kumar 2018): Adam whose step sizes never grow.

    Composition: ``chain(scale_by_amsgrad(...), scale_by_learning_rate(lr))``; the
    rule and the conventions for the maximum are in :func:`scale_by_amsgrad`.

    Args:
      learning_rate: the step size, a number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nu_dtype: see :func:`scale_by_adam`.
      bias_correction_mu, bias_correction_nu, max_before_bias_correction: see
        :func:`scale_by_amsgrad`.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.amsgrad(0.1)
      >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]
      Array([-0.0999...], dtype=float32)

    References:
      Reddi, Kale & Kumar (2018), On the Convergence of Adam and Beyond, Alg. 2.
    """
    _checks.learning_rate("amsgrad", learning_rate)
    return chain(
        scale_by_amsgrad(
            b1,
            b2,
            eps,
            eps_root,
            mu_dtype,
            bias_correction_mu,
            bias_correction_nu,
            max_before_bias_correction=max_before_bias_correction,
            nu_dtype=nu_dtype,
        ),
        scale_by_learning_rate(learning_rate),
    )
