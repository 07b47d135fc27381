"""RMSProp: AdaGrad with a decaying average, plain, centered and with momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import chain
from gradtx.optimizers.sgd import nesterov as nesterov_velocity
from gradtx.optimizers.sgd import trace, velocity_and_step
from gradtx.transforms.scale import scale_by_learning_rate

# As in Optax, the step count is kept only with bias_correction=True, in the
# "WithCount" states (the only option that reads it); the field names are Optax's.


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms` (``bias_correction=False``)."""

    nu: Updates  # r in Goodfellow Alg. 8.5; real dtype, shaped like the params.


class ScaleByRmsWithCountState(NamedTuple):
    """State of :func:`scale_by_rms` with ``bias_correction=True``."""

    count: Array  # int32 scalar: t, for the bias correction 1 - rho^t.
    nu: Updates  # r, as in ScaleByRmsState.


class ScaleByRStdDevState(NamedTuple):
    """State of :func:`scale_by_stddev` (``bias_correction=False``)."""

    mu: Updates  # The EMA of g (Graves 2013's g_bar), shaped like the params.
    nu: Updates  # The EMA of |g|^2 (r), real dtype.


class ScaleByRStdDevWithCountState(NamedTuple):
    """State of :func:`scale_by_stddev` with ``bias_correction=True``."""

    count: Array  # int32 scalar: t, for the bias correction 1 - rho^t.
    mu: Updates  # g_bar, as in ScaleByRStdDevState.
    nu: Updates  # r, as in ScaleByRStdDevState.


def _normalise(g, second, eps, eps_in_sqrt):
    """``g / sqrt(second + eps)`` or ``g / (sqrt(second) + eps)``, in float32 or wider."""
    denom = tree.sqrt(second + eps) if eps_in_sqrt else tree.sqrt(second) + eps
    return tree.divide_by_root(g, denom)


def _check_rms_args(owner, decay, eps, initial_scale, nu_dtype):
    _checks.in_range(owner, "decay", decay, 0.0, 1.0)
    _checks.non_negative(owner, "eps", eps)
    _checks.non_negative(owner, "initial_scale", initial_scale)
    _checks.dtype_or_none(owner, "nu_dtype", nu_dtype)


def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
    *,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """Divides by the root of a decaying average of squared gradients.

    .. math::
        r \\leftarrow \\rho r + (1 - \\rho) g \\odot g, \\qquad
        \\text{out} = \\frac{g}{\\sqrt{\\delta + r}}

    (Goodfellow et al. 2016, Alg. 8.5; Hinton 2012, lecture 6e).

    Symbols: ``rho`` = ``decay``, ``delta`` = ``eps``, ``r_0`` = ``initial_scale``.

    Args:
      decay: ``rho`` in [0, 1).
      eps: ``delta`` >= 0.
      initial_scale: the starting ``r`` (>= 0). 0 in the book and PyTorch;
        TensorFlow 1 started at 1.
      eps_in_sqrt: ``True`` (default) puts ``delta`` inside the root, as the book's
        Alg. 8.5 and Optax; ``False`` outside, ``g / (sqrt(r) + delta)``, as
        PyTorch and Keras.
      bias_correction: divide ``r`` by ``1 - rho^t`` before the root (not in the
        book; Optax's option).
      nu_dtype: dtype of ``r``; ``None`` keeps the params' (real part).

    Raises:
      ValueError: ``decay`` outside [0, 1); negative ``eps`` or ``initial_scale``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_rms(decay=0.0, eps=0.0)
      >>> tx.update(jnp.array([-4.0]), tx.init(jnp.zeros(1)))[0]
      Array([-1.], dtype=float32)
    """
    _check_rms_args("scale_by_rms", decay, eps, initial_scale, nu_dtype)

    def leaf(g, nu, count):
        c = tree.compute_dtype(g.dtype)
        new_nu = tree.moment_leaf(g, nu, decay, 2)
        nu_hat = tree.as_dtype(new_nu, tree.real_dtype(c))
        if bias_correction:
            nu_hat = nu_hat / tree.bias_correction_factor(decay, count, c)
        out = _normalise(tree.as_dtype(g, c), nu_hat, eps, eps_in_sqrt)
        return tree.as_dtype(out, g.dtype), new_nu

    def init_fn(params):
        nu = tree.full_like(params, initial_scale, nu_dtype, real=True)
        if bias_correction:
            return ScaleByRmsWithCountState(tree.zero_count(), nu)
        return ScaleByRmsState(nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.nu, updates, owner="scale_by_rms")
        count = tree.safe_increment(state.count) if bias_correction else None
        out, nu = tree.map_unzip(lambda g, v: leaf(g, v, count), 2, updates, state.nu)
        if bias_correction:
            return out, ScaleByRmsWithCountState(count, nu)
        return out, ScaleByRmsState(nu)

    return GradientTransformation(init_fn, update_fn)


def scale_by_stddev(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
    *,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """Divides by a running estimate of the gradient's standard deviation.

    Centered RMSProp (Graves 2013, eq. 38-41):

    .. math::
        \\bar g \\leftarrow \\rho \\bar g + (1 - \\rho) g, \\quad
        r \\leftarrow \\rho r + (1 - \\rho) |g|^2, \\quad
        \\text{out} = \\frac{g}{\\sqrt{r - |\\bar g|^2 + \\delta}}

    Arguments as :func:`scale_by_rms` (``eps_in_sqrt=False`` gives
    ``g / (sqrt(r - |g_bar|^2) + delta)``, PyTorch's ``centered=True``).

    The variance estimate is clamped at 0, so rounding never makes the root NaN.
    With ``bias_correction=True`` it is exactly 0 on the first step
    (``g^2 - g^2``), so that step is ``g / sqrt(delta)``: large for a small
    ``delta``. Start from ``initial_scale > 0`` or skip the correction to avoid it.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_stddev(decay=0.5, eps=0.0)
      >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]  # 2 / sqrt(2 - 1)
      Array([2.], dtype=float32)
    """
    _check_rms_args("scale_by_stddev", decay, eps, initial_scale, nu_dtype)

    def leaf(g, mu, nu, count):
        c = tree.compute_dtype(g.dtype)
        new_mu = tree.moment_leaf(g, mu, decay, 1)
        new_nu = tree.moment_leaf(g, nu, decay, 2)
        mu_hat, nu_hat = tree.as_dtype(new_mu, c), tree.as_dtype(new_nu, tree.real_dtype(c))
        if bias_correction:
            factor = tree.bias_correction_factor(decay, count, c)
            mu_hat, nu_hat = mu_hat / factor, nu_hat / factor
        # r - |g_bar|^2 >= 0 exactly, but rounding (low-precision state, or the
        # first bias-corrected step where it is g^2 - g^2) can make it negative:
        # clamp, so the root is never NaN.
        variance = jnp.maximum(nu_hat - tree.abs_sq(mu_hat), 0)
        out = _normalise(tree.as_dtype(g, c), variance, eps, eps_in_sqrt)
        return tree.as_dtype(out, g.dtype), new_mu, new_nu

    def init_fn(params):
        mu = tree.zeros_like(params)
        nu = tree.full_like(params, initial_scale, nu_dtype, real=True)
        if bias_correction:
            return ScaleByRStdDevWithCountState(tree.zero_count(), mu, nu)
        return ScaleByRStdDevState(mu, nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.nu, updates, owner="scale_by_stddev")
        count = tree.safe_increment(state.count) if bias_correction else None
        out, mu, nu = tree.map_unzip(
            lambda g, m, v: leaf(g, m, v, count), 3, updates, state.mu, state.nu
        )
        if bias_correction:
            return out, ScaleByRStdDevWithCountState(count, mu, nu)
        return out, ScaleByRStdDevState(mu, nu)

    return GradientTransformation(init_fn, update_fn)


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
    *,
    learning_rate_in_velocity: bool = False,
) -> GradientTransformation:
    """RMSProp (Hinton 2012; Goodfellow et al. 2016, Alg. 8.5 and 8.6).

    .. math::
        r \\leftarrow \\rho r + (1 - \\rho) g \\odot g, \\qquad
        \\Delta\\theta = -\\frac{\\epsilon}{\\sqrt{\\delta + r}} \\odot g

    With ``momentum=alpha`` and ``nesterov=True`` it is Alg. 8.6,
    ``v <- alpha v - eps / sqrt(r) * g`` at the interim point, built literally as
    ``chain(scale_by_rms(...), nesterov(alpha), scale_by_learning_rate(eps))``
    (see :func:`gradtx.nesterov` for the reparametrisation). ``centered=True``
    swaps :func:`scale_by_rms` for :func:`scale_by_stddev` (Graves 2013).

    Args:
      learning_rate: ``epsilon``, a number or a schedule.
      decay, eps, initial_scale, eps_in_sqrt, bias_correction: see
        :func:`scale_by_rms`.
      centered: divide by the standard deviation instead of the RMS.
      momentum: ``alpha`` in [0, 1), or ``None`` for none.
      nesterov: Nesterov momentum (Alg. 8.6); needs ``momentum``.
      learning_rate_in_velocity: put the rate inside the velocity
        (``v <- alpha v - eps * out``: the book's Alg. 8.6 literally, and Optax's
        ``rmsprop``). The default keeps it outside, as this library's ``sgd`` and
        PyTorch; the two agree for a constant rate.

    Raises:
      ValueError: as :func:`scale_by_rms`; ``momentum`` outside [0, 1);
        ``nesterov=True`` without momentum.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda w: jnp.sum(w**2)
      >>> tx = gradtx.rmsprop(0.01, momentum=0.9, nesterov=True)
      >>> w = jnp.array([1.0, -2.0]); state = tx.init(w)
      >>> for _ in range(300):
      ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
      ...     w = gradtx.apply_updates(w, updates)
      >>> bool(loss(w) < 1e-3)
      True

    References:
      Hinton, Srivastava & Swersky (2012), Neural Networks for Machine Learning,
      lecture 6e; Graves (2013), Generating Sequences with RNNs;
      Goodfellow, Bengio & Courville (2016), Alg. 8.5, 8.6.
    """
    _checks.learning_rate("rmsprop", learning_rate)
    block = scale_by_stddev if centered else scale_by_rms
    scaling = block(decay, eps, initial_scale, eps_in_sqrt, bias_correction)
    step = scale_by_learning_rate(learning_rate)
    if momentum is None:
        if nesterov:
            raise ValueError("rmsprop: nesterov=True needs a momentum, got momentum=None.")
        return chain(scaling, step)
    _checks.in_range("rmsprop", "momentum", momentum, 0.0, 1.0)
    velocity = nesterov_velocity(momentum) if nesterov else trace(momentum)
    return chain(scaling, *velocity_and_step(velocity, step, learning_rate_in_velocity))
