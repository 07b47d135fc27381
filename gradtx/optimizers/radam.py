"""RAdam: Adam whose adaptive step is rectified while its variance is intractable.

Liu et al. (2020), On the Variance of the Adaptive Learning Rate and Beyond,
Alg. 2. Early on, ``v_t`` averages so few squared gradients that the adaptive
rate ``1 / sqrt(v_hat)`` has a huge (for ``rho_t <= 4``, infinite) variance.
RAdam measures how many gradients the average effectively holds, the length of
the approximated simple moving average

.. math::
    \\rho_\\infty = \\frac{2}{1-\\beta_2} - 1, \\qquad
    \\rho_t = \\rho_\\infty - \\frac{2 t \\beta_2^t}{1 - \\beta_2^t},

and while ``rho_t`` is below a threshold takes a plain momentum step; above it,
Adam's step multiplied by the rectification term ``r_t`` that brings the
variance of the adaptive rate down to its asymptotic value.

Symbols: ``alpha_t`` = the learning rate, ``beta_1, beta_2`` = ``b1, b2``,
``m, v`` = ``mu, nu``, ``l_t`` (the paper's adaptive rate
``sqrt((1 - beta_2^t) / v_t)``) = ``1 / (sqrt(v_hat) + eps)``.

**Where references disagree.** Each is an option here:

* ``threshold``: the paper's Alg. 2 rectifies when ``rho_t > 4`` (where the
  variance becomes finite); the authors' released code, PyTorch and Optax use 5
  ("more conservative since it's an approximated value"). Default 5 (Optax). The
  test is ``rho_t > threshold`` as in the paper and PyTorch (Optax and the
  authors' code write ``>=``; the two differ only when ``rho_t`` equals the
  threshold exactly, and ``>`` never rectifies at ``rho_t = 4``, where ``r_t``
  is 0 and ``rho_inf = 4`` would make it 0/0).
* Below the threshold (``below_threshold``): the paper, PyTorch and Optax take
  the bias-corrected momentum step ``m_hat`` (``"momentum"``); the authors'
  code by default (``degenerated_to_sgd=False``) takes no step at all
  (``"skip"``), while the moments still accumulate.
* ``eps``: the paper has none. Optax adds it to the corrected root,
  ``m_hat / (sqrt(v_hat + eps_root) + eps)`` (the default here, as in
  :func:`gradtx.scale_by_adam`); PyTorch and the authors' code add it to the
  *uncorrected* root, ``m_hat sqrt(1 - beta_2^t) / (sqrt(v) + eps)``
  (``eps_hat=True``).

**rho_t in float32.** Written as above, ``rho_t`` is the difference of two
numbers near ``rho_inf`` (1999 for ``b2 = 0.999``), and ``b2**t`` of the float32
``b2`` does not match ``rho_inf`` of the exact one: Optax's float32 ``rho_t`` is
off by 0.04, which changes ``r_t`` by 1% at ``t = 6``. Here ``1 - b2`` is taken
in full precision and ``b2^t / (1 - b2^t) = 1 / expm1(-t log b2)``, which
keeps the error at the cancellation's own ~4e-4. float64 is unaffected.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax.numpy as jnp

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

BelowThreshold = Literal["momentum", "skip"]
_BELOW_THRESHOLD = ("momentum", "skip")


class ScaleByRadamState(NamedTuple):
    """State of :func:`scale_by_radam`."""

    count: Array  # int32 scalar: t.
    mu: Updates  # m: EMA of g, in mu_dtype.
    nu: Updates  # v: EMA of |g|^2, real.


def sma_length(b2: Any, count: Array, dtype: Any) -> Array:
    """``rho_t``, the length of the approximated SMA after ``t = count`` steps.

    ``rho_inf - 2 t b2^t / (1 - b2^t)`` evaluated as
    ``rho_inf - 2 t / expm1(-t log b2)`` with ``1 - b2`` in full precision when
    ``b2`` is a Python number (see the module docstring).

    Args:
      b2: ``beta_2`` in [0, 1) (a number or a tracer).
      count: the int32 step ``t >= 1``.
      dtype: the real dtype to compute in.
    """
    one_minus_b2 = 1 - b2  # float64 for a Python b2: it is the small number that matters
    rho_inf = 2 / one_minus_b2 - 1
    t = count.astype(dtype)
    log_b2 = jnp.log1p(-jnp.asarray(one_minus_b2, dtype))  # -inf for b2 = 0: rho_t = 1
    return rho_inf - 2 * t / jnp.expm1(-t * log_b2)


def rectification(b2: Any, count: Array, threshold: Any, dtype: Any) -> tuple[Array, Array]:
    """Whether step ``t`` is rectified, and the rectification term ``r_t``.

    .. math::
        r_t = \\sqrt{\\frac{(\\rho_t - 4)(\\rho_t - 2)\\rho_\\infty}
                         {(\\rho_\\infty - 4)(\\rho_\\infty - 2)\\rho_t}}
        \\quad \\text{if } \\rho_t > \\text{threshold}

    ``r_t`` is 1 on the steps that are not rectified (its formula is undefined
    there for ``rho_t < 4``; the guard also keeps gradients through the
    hyperparameters finite).
    """
    rho = sma_length(b2, count, dtype)
    rho_inf = 2 / (1 - b2) - 1
    rectified = rho > threshold
    numerator = jnp.where(rectified, (rho - 4) * (rho - 2) * rho_inf, 1)
    denominator_ = jnp.where(rectified, (rho_inf - 4) * (rho_inf - 2) * rho, 1)
    return rectified, jnp.sqrt(numerator / denominator_).astype(dtype)


def _check_radam_args(owner, b1, b2, eps, eps_root, threshold, below_threshold, mu_dtype, nu_dtype):
    check_adam_args(owner, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    # r_t takes the root of (rho-4)(rho-2): negative for 2 < rho < 4.
    _checks.in_range(owner, "threshold", threshold, 4.0, float("inf"))
    if below_threshold not in _BELOW_THRESHOLD:
        raise ValueError(
            f"{owner}: below_threshold must be one of {_BELOW_THRESHOLD}, got {below_threshold!r}."
        )


def scale_by_radam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
    below_threshold: BelowThreshold = "momentum",
    eps_hat: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """RAdam's scaling: Adam's, rectified, or momentum while ``rho_t`` is small.

    .. math::
        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        v \\leftarrow \\beta_2 v + (1-\\beta_2) |g|^2, \\quad
        \\hat m = \\frac{m}{1-\\beta_1^t}, \\quad
        \\text{out} = \\begin{cases}
            r_t \\, \\hat m / (\\sqrt{\\hat v + \\epsilon_{root}} + \\epsilon)
                & \\rho_t > \\text{threshold} \\\\
            \\hat m \\text{ (or 0)} & \\text{otherwise}
        \\end{cases}

    with ``v_hat = v / (1 - beta_2^t)`` and ``rho_t, r_t`` as in the module
    docstring (Liu et al. 2020, Alg. 2). The defaults are Optax's
    ``scale_by_radam``.

    Args:
      b1: ``beta_1`` in [0, 1).
      b2: ``beta_2`` in [0, 1). ``rho_inf = 2 / (1 - b2) - 1`` must exceed the
        threshold for any step to be rectified (``b2 > 0.6`` for threshold 4).
      eps: >= 0, added outside the root.
      eps_root: >= 0, added inside the root.
      threshold: rectify when ``rho_t > threshold``; >= 4 (where ``r_t`` is
        defined). 5 (default) as Optax, PyTorch and the authors' code; 4 is the
        paper's Alg. 2.
      nesterov: use the Nesterov ``m_hat = b1 m / (1 - b1^{t+1}) + (1 - b1) g /
        (1 - b1^t)`` in both branches, as Optax's ``nesterov=True``.
      below_threshold: the step while ``rho_t < threshold``: ``"momentum"``
        (default; the paper, PyTorch, Optax) outputs ``m_hat``; ``"skip"`` (the
        authors' code by default) outputs zeros.
      eps_hat: add ``eps`` to the uncorrected root,
        ``r_t m_hat sqrt(1 - b2^t) / (sqrt(v + eps_root (1 - b2^t)) + eps)``, as
        PyTorch and the authors' code. ``False`` (default): Optax's form.
      mu_dtype: dtype of ``m``; ``None`` keeps the params'.
      nu_dtype: dtype of ``v``; ``None`` keeps the params' (real part).

    Raises:
      ValueError: ``b1`` or ``b2`` outside [0, 1); negative ``eps``/``eps_root``;
        ``threshold`` below 4 or not finite; an unknown ``below_threshold``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.optimizers.radam import scale_by_radam
      >>> tx = scale_by_radam()  # threshold 5: rho_5 = 4.996, rho_6 = 5.994
      >>> state = tx.init(jnp.zeros(1))
      >>> for t in range(1, 8):  # a constant gradient: m_hat = 1, Adam's step = 1
      ...     out, state = tx.update(jnp.ones(1), state)
      ...     print(t, round(float(out[0]), 4))
      1 1.0
      2 1.0
      3 1.0
      4 1.0
      5 1.0
      6 0.0258
      7 0.0327
    """
    _check_radam_args(
        "scale_by_radam", b1, b2, eps, eps_root, threshold, below_threshold, mu_dtype, nu_dtype
    )

    def leaf(g, mu, nu, shared):
        c = tree.compute_dtype(g.dtype)
        r = tree.real_dtype(c)
        new_mu = tree.moment_leaf(g, mu, b1, 1)
        new_nu = tree.moment_leaf(g, nu, b2, 2)
        (bc1, bc2, bc1_next), (rectified, r_t) = shared(c)
        mu_c = tree.as_dtype(new_mu, c)
        if nesterov:
            mu_hat = b1 * mu_c / bc1_next + (1 - b1) * tree.as_dtype(g, c) / bc1
        else:
            mu_hat = mu_c / bc1
        nu_c = tree.as_dtype(new_nu, r)
        if eps_hat:
            adam = normalise(mu_hat * jnp.sqrt(bc2), nu_c, eps, eps_root * bc2)
        else:
            adam = normalise(mu_hat, nu_c / bc2, eps, eps_root)
        fallback = mu_hat if below_threshold == "momentum" else jnp.zeros_like(mu_hat)
        out = jnp.where(rectified, r_t * adam, fallback)
        return tree.as_dtype(out, g.dtype), new_mu, new_nu

    corrections = bias_corrections(b1, b2, nesterov)

    def scalars(count, dtype):
        r = tree.real_dtype(dtype)
        return corrections(count, dtype), rectification(b2, count, threshold, r)

    return moment_transformation(
        "scale_by_radam", ScaleByRadamState, leaf, mu_dtype, nu_dtype, scalars
    )


def radam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
    below_threshold: BelowThreshold = "momentum",
    eps_hat: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """Rectified Adam (Liu et al. 2020, Alg. 2).

    .. math::
        \\theta \\leftarrow \\theta - \\alpha_t \\begin{cases}
            r_t \\, \\hat m_t \\, l_t & \\rho_t > \\text{threshold} \\\\
            \\hat m_t & \\text{otherwise}
        \\end{cases}

    with the SMA length ``rho_t``, the rectification ``r_t`` and the adaptive
    rate ``l_t = 1 / (sqrt(v_hat) + eps)`` of :func:`scale_by_radam`.
    Composition: ``chain(scale_by_radam(...), scale_by_learning_rate(lr))``.
    The defaults reproduce Optax's ``radam``; ``eps_hat=True`` is PyTorch's
    ``RAdam``; ``threshold=4`` is the paper; ``eps_hat=True,
    below_threshold="skip"`` is the authors' released code.

    Args:
      learning_rate: ``alpha_t``, a number or a schedule.
      b1, b2, eps, eps_root, threshold: see :func:`scale_by_radam`.
      nesterov, below_threshold, eps_hat, mu_dtype, nu_dtype: see :func:`scale_by_radam`.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> from gradtx.optimizers.radam import radam
      >>> loss = lambda w: jnp.sum(w**2)
      >>> tx = radam(0.1)
      >>> w = jnp.array([1.0, -2.0]); state = tx.init(w)
      >>> for _ in range(200):
      ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
      ...     w = gradtx.apply_updates(w, updates)
      >>> bool(loss(w) < 1e-3)
      True

    References:
      Liu, Jiang, He, Chen, Liu, Gao & Han (2020), On the Variance of the
      Adaptive Learning Rate and Beyond (ICLR), Alg. 2.
    """
    _checks.learning_rate("radam", learning_rate)
    return chain(
        scale_by_radam(
            b1,
            b2,
            eps,
            eps_root,
            threshold,
            nesterov=nesterov,
            below_threshold=below_threshold,
            eps_hat=eps_hat,
            mu_dtype=mu_dtype,
            nu_dtype=nu_dtype,
        ),
        scale_by_learning_rate(learning_rate),
    )
