"""AdaBound and AMSBound: Adam whose per-weight step size is clipped to a band
that narrows to an SGD rate (Luo, Xiong, Liu & Sun 2019).

The step size of each weight, Adam's ``alpha / sqrt(v)``, is clipped to
``[eta_l(t), eta_u(t)]``, bounds that start at 0 and infinity (Adam) and
converge to ``final_lr`` (SGD with momentum):

.. math::
    \\eta_l(t) = \\alpha^* \\Big(1 - \\frac{1}{\\gamma t + 1}\\Big), \\qquad
    \\eta_u(t) = \\alpha^* \\Big(1 + \\frac{1}{\\gamma t}\\Big)

(``alpha*`` = ``final_lr``; the paper's experiments use ``gamma = 1 - beta_2``,
the released code ``gamma = 1e-3``, the same number for ``beta_2 = 0.999``).
AMSBound clips AMSGrad instead: ``v`` is replaced by its running maximum.

**Two forms** (``form=``), because the paper and the authors' code differ:

* ``"code"`` (default, what users reproduce: github.com/Luolc/AdaBound,
  ``AdaBound.step``): bias-corrected, no ``1/sqrt(t)``::

      step_size = lr sqrt(1 - b2^t) / (1 - b1^t)
      theta <- theta - clip(step_size / (sqrt(v) + eps), eta_l(t), eta_u(t)) * m

  The bias correction of *both* moments sits inside the clipped quantity, which
  multiplies the raw ``m``; ``eps`` meets the uncorrected root; AMSBound takes
  the maximum of the raw ``v``. Late in training the step is
  ``final_lr * m``: SGD on an EMA of the gradients.
* ``"paper"`` (Alg. 2; Alg. 3 for AMSBound): no bias correction, and the clipped
  rate decays as ``1/sqrt(t)`` (what the regret bound needs)::

      eta_t = clip(alpha / (sqrt(v) + eps), eta_l(t), eta_u(t)) / sqrt(t)
      theta <- theta - eta_t * m

  with a constant ``beta_1`` (the analysis lets it decay) and no projection
  (unconstrained ``F``); ``eps = 0`` is the paper literally.

**Why the named optimizer is still a chain.** The clip acts on the step size,
so the learning rate is inside it. But the code anchors the bounds to the
learning rate: with a schedule it uses ``final_lr * lr_t / base_lr`` ("lr_scheduler
cannot affect final_lr, this is a workaround to apply lr decay"), and a clip is
positively homogeneous, ``clip(lr x, lr a, lr b) = lr clip(x, a, b)`` for
``lr > 0``. So the learning rate factors out exactly:

.. math::
    \\text{step} = \\alpha_t \\cdot
        \\text{clip}\\Big(\\frac{c_t}{\\sqrt{v} + \\epsilon},
                          \\frac{\\alpha^*}{\\alpha_0}(1 - \\tfrac{1}{\\gamma t + 1}),
                          \\frac{\\alpha^*}{\\alpha_0}(1 + \\tfrac{1}{\\gamma t})\\Big)
        \\, m

and :func:`adabound` is ``chain(scale_by_adabound(...), scale_by_learning_rate(lr))``
like every other method here: the block computes the clipped step per unit of
learning rate, with its bounds expressed relative to the base rate ``alpha_0``
(``base_learning_rate``), and any schedule moves the bounds with it, as in the
authors' code. With a constant rate this is exactly the bounds of the paper and
the code; the paper form follows the same convention under a schedule (the
paper has none).

**The base rate.** ``alpha_0`` is the learning rate when it is a number; for a
schedule, its value at step 0 (the rate a PyTorch scheduler starts from, which
the code records as ``base_lr``). A schedule that starts at 0 (a warmup) has no
such anchor: pass ``base_learning_rate`` (e.g. the peak rate). Under
``inject_hyperparams`` the injected rate reaches :func:`adabound` as a number at
every step, which makes the bounds absolute (``final_lr`` fixed) unless
``base_learning_rate`` is given.

**Weight decay.** The code's ``weight_decay`` is an L2 term added to the
gradient: ``chain(add_decayed_weights(wd), adabound(...))``.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import chain
from gradtx.optimizers.adam import init_moments
from gradtx.transforms.scale import scale_by_learning_rate

Form = Literal["code", "paper"]
_FORMS = ("code", "paper")


class ScaleByAdaboundState(NamedTuple):
    """State of :func:`scale_by_adabound`."""

    count: Array  # int32 scalar: t.
    mu: Updates  # m_t: EMA of g (never corrected itself: see the forms).
    nu: Updates  # v_t: EMA of |g|^2, real.
    nu_max: Updates | None  # AMSBound's v_hat_t = max_{s<=t} v_s, real; None for AdaBound.


def bounds(ratio: Any, gamma: Any, count: Array, dtype: Any) -> tuple[Array, Array]:
    """``eta_l(t) / alpha_0`` and ``eta_u(t) / alpha_0`` for ``t = count``.

    ``ratio`` is ``final_lr / alpha_0``. The lower bound is written
    ``gamma t / (gamma t + 1)`` rather than ``1 - 1 / (gamma t + 1)`` (the same
    number) so that it does not cancel in float32 while ``gamma t`` is small;
    ``gamma = 0`` gives ``[0, inf)``, i.e. no clipping.
    """
    gamma_t = gamma * count.astype(dtype)
    return ratio * gamma_t / (gamma_t + 1), ratio * (1 + 1 / gamma_t)


def _check_adabound_args(owner, b1, b2, eps, final_lr, gamma, base, form, mu_dtype, nu_dtype):
    _checks.in_range(owner, "b1", b1, 0.0, 1.0)
    _checks.in_range(owner, "b2", b2, 0.0, 1.0)
    _checks.non_negative(owner, "eps", eps)
    _checks.positive(owner, "final_lr", final_lr)
    _checks.non_negative(owner, "gamma", gamma)
    _checks.positive(owner, "base_learning_rate", base)
    if form not in _FORMS:
        raise ValueError(f"{owner}: form must be one of {_FORMS}, got {form!r}.")
    _checks.dtype_or_none(owner, "mu_dtype", mu_dtype)
    _checks.dtype_or_none(owner, "nu_dtype", nu_dtype)


def scale_by_adabound(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    final_lr: float = 0.1,
    gamma: float = 1e-3,
    *,
    base_learning_rate: float = 1e-3,
    amsbound: bool = False,
    form: Form = "code",
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AdaBound's (or AMSBound's) clipped step, per unit of learning rate.

    .. math::
        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        v \\leftarrow \\beta_2 v + (1-\\beta_2) |g|^2, \\quad
        \\text{out} = \\text{clip}\\Big(\\frac{c_t}{\\sqrt{v} + \\epsilon},
            \\frac{\\eta_l(t)}{\\alpha_0}, \\frac{\\eta_u(t)}{\\alpha_0}\\Big)
            \\, m \\, d_t

    with ``c_t = sqrt(1 - b2^t) / (1 - b1^t), d_t = 1`` (``form="code"``) or
    ``c_t = 1, d_t = 1 / sqrt(t)`` (``form="paper"``), the bounds of the module
    docstring, and ``v`` replaced by ``max_{s<=t} v_s`` for AMSBound. Follow it
    with ``scale_by_learning_rate(lr)`` whose (initial) rate is
    ``base_learning_rate``: the product is the AdaBound step (module docstring).

    Args:
      b1: ``beta_1`` in [0, 1).
      b2: ``beta_2`` in [0, 1).
      eps: >= 0, added to the (uncorrected) root.
      final_lr: ``alpha*`` > 0, the SGD rate both bounds converge to.
      gamma: >= 0, how fast the bounds converge (0: never, plain Adam/AMSGrad).
      base_learning_rate: ``alpha_0`` > 0, the learning rate the step is
        multiplied by afterwards (its value at step 0 for a schedule):
        ``final_lr`` is relative to it.
      amsbound: clip AMSGrad's step (the running maximum of ``v``), Alg. 3.
      form: ``"code"`` (default; the authors' released code) or ``"paper"``
        (Alg. 2 / 3, with the ``1/sqrt(t)`` decay).
      mu_dtype: dtype of ``m``; ``None`` keeps the params'.
      nu_dtype: dtype of ``v`` (and its maximum); ``None`` keeps the params'.

    Raises:
      ValueError: ``b1``/``b2`` outside [0, 1); negative ``eps`` or ``gamma``;
        ``final_lr`` or ``base_learning_rate`` not > 0; an unknown ``form``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.optimizers.adabound import scale_by_adabound
      >>> tx = scale_by_adabound(final_lr=0.1, gamma=1e6, base_learning_rate=0.01)
      >>> out, _ = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
      >>> out.round(4)  # both bounds ~ final_lr / base = 10: out = 10 m = 10 (0.1 g)
      Array([ 0.5, -2. ], dtype=float32)
    """
    _check_adabound_args(
        "scale_by_adabound",
        b1,
        b2,
        eps,
        final_lr,
        gamma,
        base_learning_rate,
        form,
        mu_dtype,
        nu_dtype,
    )
    ratio = final_lr / base_learning_rate

    def leaf(g, mu, nu, nu_max, count):
        c = tree.compute_dtype(g.dtype)
        r = tree.real_dtype(c)
        new_mu = tree.moment_leaf(g, mu, b1, 1)
        new_nu = tree.moment_leaf(g, nu, b2, 2)
        v = new_nu.astype(r)
        if amsbound:
            v = jnp.maximum(nu_max.astype(r), v)
            new_max = v.astype(nu_max.dtype)
        else:
            new_max = None
        # A zero root means every gradient so far was 0, so m = 0: any finite rate will do.
        root = tree.sqrt(v) + eps
        lower, upper = bounds(ratio, gamma, count, r)
        if form == "code":
            c_t = jnp.sqrt(tree.bias_correction_factor(b2, count, r))
            c_t = c_t / tree.bias_correction_factor(b1, count, r)
            rate = tree.divide_by_root(c_t, root)
            out = jnp.clip(rate, lower, upper) * new_mu.astype(c)
        else:
            rate = tree.divide_by_root(1, root)
            out = jnp.clip(rate, lower, upper) * new_mu.astype(c) / jnp.sqrt(count.astype(r))
        return out.astype(g.dtype), new_mu, new_nu, new_max

    def init_fn(params):
        mu, nu = init_moments(params, mu_dtype, nu_dtype)
        # nu_max gets its own buffer: a state whose leaves alias cannot be donated.
        nu_max = tree.zeros_like(params, nu_dtype, real=True) if amsbound else None
        return ScaleByAdaboundState(tree.zero_count(), mu, nu, nu_max)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, owner="scale_by_adabound")
        count = tree.safe_increment(state.count)
        nu_max = state.nu_max if amsbound else state.nu  # a stand-in the leaf ignores
        out, mu, nu, new_max = tree.map_unzip(
            lambda g, m, v, vm: leaf(g, m, v, vm, count), 4, updates, state.mu, state.nu, nu_max
        )
        return out, ScaleByAdaboundState(count, mu, nu, new_max if amsbound else None)

    return GradientTransformation(init_fn, update_fn)


def _base_rate(owner: str, learning_rate: ScalarOrSchedule, base: Any) -> Any:
    """``alpha_0``: ``base`` if given, else the rate, or a schedule's value at step 0."""
    if base is not None:
        _checks.positive(owner, "base_learning_rate", base)
        return base
    if not callable(learning_rate):
        _checks.positive(owner, "learning_rate", learning_rate)
        return learning_rate
    first = learning_rate(tree.zero_count())
    try:
        _checks.positive(owner, "learning_rate(0)", first)
    except ValueError:
        raise ValueError(
            f"{owner}: the learning-rate schedule starts at {float(first)!r}, which cannot "
            "anchor final_lr; pass base_learning_rate (the rate final_lr is relative to, "
            "e.g. the peak of a warmup)."
        ) from None
    return first


def adabound(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    final_lr: float = 0.1,
    gamma: float = 1e-3,
    *,
    amsbound: bool = False,
    form: Form = "code",
    base_learning_rate: float | None = None,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AdaBound (Luo et al. 2019): Adam whose step sizes are clipped towards SGD's.

    .. math::
        \\theta \\leftarrow \\theta - \\text{clip}\\Big(
            \\frac{\\alpha_t c_t}{\\sqrt{v} + \\epsilon},
            \\eta_l(t), \\eta_u(t)\\Big) \\, m \\, d_t

    (:func:`scale_by_adabound` for ``c_t, d_t`` and the two forms; the module
    docstring for the bounds and the schedule convention). Composition:
    ``chain(scale_by_adabound(..., base_learning_rate=alpha_0),
    scale_by_learning_rate(lr))``, exact because the clip is homogeneous in the
    learning rate. Defaults are the authors' code (lr 1e-3, final_lr 0.1,
    gamma 1e-3, eps 1e-8), which the default ``form="code"`` reproduces.

    Args:
      learning_rate: ``alpha_t`` > 0, a number or a schedule.
      b1, b2, eps, final_lr, gamma: see :func:`scale_by_adabound`.
      amsbound, form, mu_dtype, nu_dtype: see :func:`scale_by_adabound`.
      base_learning_rate: ``alpha_0``, the rate ``final_lr`` is relative to;
        ``None`` (default) takes ``learning_rate``, or a schedule's value at
        step 0.

    Raises:
      ValueError: a learning rate (or a schedule's first value) that is not > 0
        without ``base_learning_rate``; the cases of :func:`scale_by_adabound`.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> from gradtx.optimizers.adabound import adabound
      >>> loss = lambda w: jnp.sum(w**2)
      >>> tx = adabound(0.1, final_lr=0.1)
      >>> w = jnp.array([1.0, -2.0]); state = tx.init(w)
      >>> for _ in range(200):
      ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
      ...     w = gradtx.apply_updates(w, updates)
      >>> bool(loss(w) < 1e-3)
      True

    References:
      Luo, Xiong, Liu & Sun (2019), Adaptive Gradient Methods with Dynamic Bound
      of Learning Rate (ICLR), Alg. 2 and 3; github.com/Luolc/AdaBound.
    """
    _checks.learning_rate("adabound", learning_rate)
    base = _base_rate("adabound", learning_rate, base_learning_rate)
    return chain(
        scale_by_adabound(
            b1,
            b2,
            eps,
            final_lr,
            gamma,
            base_learning_rate=base,
            amsbound=amsbound,
            form=form,
            mu_dtype=mu_dtype,
            nu_dtype=nu_dtype,
        ),
        scale_by_learning_rate(learning_rate),
    )


def amsbound(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    final_lr: float = 0.1,
    gamma: float = 1e-3,
    *,
    form: Form = "code",
    base_learning_rate: float | None = None,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AMSBound (Luo et al. 2019, Alg. 3): AdaBound on AMSGrad's running maximum of ``v``.

    ``adabound(..., amsbound=True)``; see :func:`adabound` for every argument.

    Args:
      learning_rate, b1, b2, eps, final_lr, gamma: see :func:`adabound`.
      form, base_learning_rate, mu_dtype, nu_dtype: see :func:`adabound`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.optimizers.adabound import amsbound
      >>> tx = amsbound(1e-3)
      >>> state = tx.init(jnp.zeros(1))
      >>> u, state = tx.update(jnp.array([2.0]), state)
      >>> u  # step 1 of Adam: -lr sign(g), inside the bounds
      Array([-0.00099...], dtype=float32)

    References:
      Luo, Xiong, Liu & Sun (2019), Adaptive Gradient Methods with Dynamic Bound
      of Learning Rate (ICLR), Alg. 3; github.com/Luolc/AdaBound.
    """
    return adabound(
        learning_rate,
        b1,
        b2,
        eps,
        final_lr,
        gamma,
        amsbound=True,
        form=form,
        base_learning_rate=base_learning_rate,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )
