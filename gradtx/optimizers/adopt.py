"""ADOPT: Adam with the second moment of the *previous* step (Taniguchi et al. 2024, Alg. 1).

Adam divides the momentum by a second moment that includes the current
gradient; ADOPT normalises the gradient first, by the second moment of the
steps before it, and then averages the normalised gradients. With that order
it converges for any ``beta_2`` at the optimal rate. The first gradient only
initialises ``v``; the first step moves nothing.

Symbols: ``beta_1, beta_2`` = ``b1, b2``; ``epsilon`` = ``eps``; ``m, v`` =
``mu, nu``; ``c_t`` = ``clip_value_fn(t)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import GradientTransformation, ScalarOrSchedule
from gradtx.combine import chain
from gradtx.optimizers.adam import ScaleByAdamState, check_adam_args, moment_transformation
from gradtx.transforms.scale import scale_by_learning_rate

ClipForm = Literal["paper", "authors"]


def _quarter_power(t: Any) -> Any:
    """``c_t = t^{1/4}``, the paper's clipping bound."""
    return t**0.25


def scale_by_adopt(
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[Any], Any] = _quarter_power,
    clip_form: ClipForm = "paper",
) -> GradientTransformation:
    """ADOPT's scaling (Taniguchi et al. 2024, Alg. 1 and its clipped form).

    On the first call ``v_0 = |g_0|^2`` and the output is 0; then, for ``t >= 1``:

    .. math::
        \\hat g_t = \\mathrm{clip}\\left(\\frac{g_t}{\\max(\\sqrt{v_{t-1}}, \\epsilon)},
            c_t\\right), \\quad
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) \\hat g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) |g_t|^2, \\quad
        \\text{out} = m_t

    (``clip(a, c)`` limits each coordinate to ``[-c, c]``; with ``nesterov``,
    ``out = beta_1 m_t + (1-beta_1) hat g_t``.) No bias correction: ``v`` starts
    at a gradient, and ``m`` averages normalised gradients.

    Args:
      b1: ``beta_1`` in [0, 1).
      b2: ``beta_2`` in [0, 1).
      eps: ``epsilon`` >= 0, the floor of the root.
      mu_dtype: dtype of ``m``; ``None`` keeps the params'.
      nesterov: Nesterov's form of the momentum (Optax's option; not in the paper).
      use_clipping: clip the normalised gradient (the paper's stable variant,
        default, as Optax); ``False`` is Alg. 1 as printed.
      clip_value_fn: ``t -> c_t``, default ``t^{1/4}`` (the paper's). A function
        of the step, not a schedule: under :func:`inject_hyperparams` name it
        in ``static_args`` (as with Optax).
      clip_form: which ``t`` the bound reads. ``"paper"`` (default): the number
        of the update, ``t = 1`` on the first step that moves (after the call
        that sets ``v_0``), as the paper indexes Alg. 1 and as Optax 0.2.8
        does. ``"authors"``: the number of the call, ``t + 1``, as the authors'
        PyTorch code and ``pytorch_optimizer.ADOPT`` count, so their bound is
        one step ahead of Optax's.

    Raises:
      ValueError: ``b1`` or ``b2`` outside [0, 1), a negative ``eps``, an unknown
        ``clip_form``, or a ``clip_value_fn`` that is not callable.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_adopt(b1=0.5)
      >>> state = tx.init(jnp.zeros(1))
      >>> out, state = tx.update(jnp.array([2.0]), state)  # sets v_0 = 4, no step
      >>> out, tx.update(jnp.array([1.0]), state)[0]  # (1 - b1) clip(1 / 2, 1)
      (Array([0.], dtype=float32), Array([0.25], dtype=float32))

    References:
      Taniguchi et al. (2024), ADOPT: Modified Adam Can Converge with Any beta_2
      with the Optimal Rate, NeurIPS, Alg. 1 and the clipped update of Sec. 4.
    """
    owner = "scale_by_adopt"
    check_adam_args(owner, b1, b2, eps, 0.0, mu_dtype, None)
    if clip_form not in ("paper", "authors"):
        _checks._fail(owner, "clip_form", clip_form, "'paper' or 'authors'")
    if not callable(clip_value_fn):
        _checks._fail(owner, "clip_value_fn", clip_value_fn, "a function of the step")
    offset = 0 if clip_form == "paper" else 1

    def leaf(g, mu, nu, shared):
        dtype = tree.compute_dtype(g.dtype)
        first, clip_value = shared(dtype)
        g_c = tree.as_dtype(g, dtype)
        nu_c = tree.as_dtype(nu, tree.real_dtype(dtype))
        normed = g_c / jnp.maximum(jnp.sqrt(nu_c), eps)
        if use_clipping:
            normed = jnp.clip(normed, -clip_value, clip_value)
        mu_c = tree.as_dtype(mu, dtype)
        new_mu = jnp.where(first, mu_c, b1 * mu_c + (1 - b1) * normed)
        new_nu = jnp.where(first, tree.abs_sq(g_c), b2 * nu_c + (1 - b2) * tree.abs_sq(g_c))
        out = b1 * new_mu + (1 - b1) * normed if nesterov else new_mu
        out = jnp.where(first, jnp.zeros_like(out), out)
        return tree.as_dtype(out, g.dtype), tree.as_dtype(new_mu, mu.dtype), new_nu.astype(nu.dtype)

    def scalars(count, dtype):
        # ``count`` is the number of this call (1 on the first); the update is t = count - 1.
        clip_value = jnp.asarray(clip_value_fn(count - 1 + offset)).astype(tree.real_dtype(dtype))
        return count == 1, clip_value

    return moment_transformation(owner, ScaleByAdamState, leaf, mu_dtype, None, scalars)


def adopt(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[Any], Any] = _quarter_power,
    clip_form: ClipForm = "paper",
) -> GradientTransformation:
    """ADOPT (Taniguchi et al. 2024, Alg. 1): Adam normalising by the previous ``v``.

    .. math::
        \\theta_t = \\theta_{t-1} - \\alpha_t m_t

    with ``m_t`` from :func:`scale_by_adopt`. Composition:
    ``chain(scale_by_adopt(...), scale_by_learning_rate(alpha))``.

    Args:
      learning_rate: ``alpha``, a number or a schedule.
      b1, b2, eps, mu_dtype, nesterov, use_clipping, clip_value_fn, clip_form:
        see :func:`scale_by_adopt` (``clip_form="authors"`` is
        ``pytorch_optimizer.ADOPT``'s bound).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.adopt(0.1, b1=0.0)
      >>> state = tx.init(jnp.zeros(1))
      >>> _, state = tx.update(jnp.array([2.0]), state)
      >>> tx.update(jnp.array([-2.0]), state)[0]  # -alpha clip(g / |g_0|, 1)
      Array([0.1], dtype=float32)

    References:
      Taniguchi et al. (2024), ADOPT: Modified Adam Can Converge with Any beta_2
      with the Optimal Rate, NeurIPS, Alg. 1.
    """
    _checks.learning_rate("adopt", learning_rate)
    return chain(
        scale_by_adopt(
            b1,
            b2,
            eps,
            mu_dtype,
            nesterov=nesterov,
            use_clipping=use_clipping,
            clip_value_fn=clip_value_fn,
            clip_form=clip_form,
        ),
        scale_by_learning_rate(learning_rate),
    )
