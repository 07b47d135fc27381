"""Adam and the methods that change one of its pieces.

Adam (Kingma & Ba 2015; Goodfellow et al. 2016, Alg. 8.7), AdamW (decoupled
decay), AMSGrad (a running maximum of the second moment), AdaMax (the infinity
norm) and NAdam (Nesterov momentum). Symbols: ``rho_1, rho_2`` (book) =
``beta_1, beta_2`` (paper) = ``b1, b2``; ``delta`` = ``eps``; ``s, r`` (book) =
``m, v`` (paper) = ``mu, nu``.

**Where eps goes.** ``eps`` is added outside the root, ``m_hat / (sqrt(v_hat) +
eps)``, as in the paper, the book's Alg. 8.7, Optax and PyTorch; ``eps_root`` is
added inside, ``sqrt(v_hat + eps_root)``, which is how the transcription of
Alg. 8.7 in the seeds reads (``sqrt(r_hat + delta)``: use ``eps=0,
eps_root=delta``). ``eps_hat=True`` is Kingma & Ba's "eps-hat" form (end of their
Sec. 2) used by TensorFlow/Keras, where eps meets the *uncorrected* root.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import chain
from gradtx.transforms.regularize import Mask, add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam` and :func:`scale_by_adamax`."""

    count: Array  # int32 scalar: t.
    mu: Updates  # s (book) / m (paper): EMA of g, in mu_dtype.
    nu: Updates  # r (book) / v (paper): EMA of |g|^2 (AdaMax: u, the max norm), real.


class ScaleByAmsgradState(NamedTuple):
    """State of :func:`scale_by_amsgrad`."""

    count: Array  # int32 scalar: t.
    mu: Updates  # m: EMA of g.
    nu: Updates  # v: EMA of |g|^2.
    nu_max: Updates  # v_hat (Reddi et al.): the running maximum of v (see options).


class ScaleByNadamState(NamedTuple):
    """State of :func:`scale_by_nadam`."""

    count: Array  # int32 scalar: t.
    mu_product: Array  # prod_{i<=t} mu_i, a scalar in the default float dtype.
    mu: Updates  # m: EMA of g with the constant b1.
    nu: Updates  # v: EMA of |g|^2.


def _check_adam_args(owner, b1, b2, eps, eps_root, mu_dtype, nu_dtype):
    _checks.in_range(owner, "b1", b1, 0.0, 1.0)
    _checks.in_range(owner, "b2", b2, 0.0, 1.0)
    _checks.non_negative(owner, "eps", eps)
    _checks.non_negative(owner, "eps_root", eps_root)
    _checks.dtype_or_none(owner, "mu_dtype", mu_dtype)
    _checks.dtype_or_none(owner, "nu_dtype", nu_dtype)


def _init_moments(params, mu_dtype, nu_dtype):
    return tree.zeros_like(params, mu_dtype), tree.zeros_like(params, nu_dtype, real=True)


def _denominator(nu_hat, eps, eps_root):
    return jnp.sqrt(nu_hat + eps_root) + eps


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any | None = None,
    eps_hat: bool = False,
) -> GradientTransformation:
    """Adam's scaling: bias-corrected first moment over the root of the second.

    .. math::
        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        v \\leftarrow \\beta_2 v + (1-\\beta_2) |g|^2, \\quad
        \\hat m = \\frac{m}{1-\\beta_1^t}, \\quad \\hat v = \\frac{v}{1-\\beta_2^t}, \\quad
        \\text{out} = \\frac{\\hat m}{\\sqrt{\\hat v + \\epsilon_{root}} + \\epsilon}

    (Goodfellow et al. 2016, Alg. 8.7; Kingma & Ba 2015, Alg. 1.)

    Args:
      b1: ``beta_1`` in [0, 1).
      b2: ``beta_2`` in [0, 1).
      eps: ``epsilon`` >= 0, added outside the root.
      eps_root: >= 0, added inside the root (see the module docstring).
      mu_dtype: dtype of ``m``; ``None`` keeps the params'.
      nesterov: use ``b1 m/(1-b1^{t+1}) + (1-b1) g/(1-b1^t)`` for ``m_hat``: NAdam
        with a constant momentum, as Optax's ``nadam``. :func:`scale_by_nadam` has
        Dozat's momentum schedule.
      nu_dtype: dtype of ``v``; ``None`` keeps the params' (real part).
      eps_hat: Kingma & Ba's eps-hat form (TensorFlow/Keras):
        ``out = sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)``, i.e. eps meets the
        uncorrected root. ``False`` (default): the paper's Alg. 1, PyTorch, Optax.

    Raises:
      ValueError: ``b1`` or ``b2`` outside [0, 1); negative ``eps``/``eps_root``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_adam()
      >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]  # ~ sign(g)
      Array([ 0.99999..., -0.99999...], dtype=float32)
    """
    _check_adam_args("scale_by_adam", b1, b2, eps, eps_root, mu_dtype, nu_dtype)

    def leaf(g, mu, nu, count):
        c = tree.compute_dtype(g.dtype)
        new_mu = tree.moment_leaf(g, mu, b1, 1)
        new_nu = tree.moment_leaf(g, nu, b2, 2)
        bc1 = tree.bias_correction_factor(b1, count, c)
        bc2 = tree.bias_correction_factor(b2, count, c)
        mu_c = new_mu.astype(c)
        if nesterov:
            bc1_next = tree.bias_correction_factor(b1, count + 1, c)
            mu_hat = b1 * mu_c / bc1_next + (1 - b1) * g.astype(c) / bc1
        else:
            mu_hat = mu_c / bc1
        nu_c = new_nu.astype(tree.real_dtype(c))
        if eps_hat:
            out = tree.divide_by_root(
                mu_hat * jnp.sqrt(bc2), _denominator(nu_c, eps, eps_root * bc2)
            )
        else:
            out = tree.divide_by_root(mu_hat, _denominator(nu_c / bc2, eps, eps_root))
        return out.astype(g.dtype), new_mu, new_nu

    def init_fn(params):
        return ScaleByAdamState(tree.zero_count(), *_init_moments(params, mu_dtype, nu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, owner="scale_by_adam")
        count = tree.safe_increment(state.count)
        out, mu, nu = tree.map_unzip(
            lambda g, m, v: leaf(g, m, v, count), 3, updates, state.mu, state.nu
        )
        return out, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)


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
    _check_adam_args("scale_by_amsgrad", b1, b2, eps, eps_root, mu_dtype, nu_dtype)

    def leaf(g, mu, nu, nu_max, count):
        c = tree.compute_dtype(g.dtype)
        r = tree.real_dtype(c)
        new_mu = tree.moment_leaf(g, mu, b1, 1)
        new_nu = tree.moment_leaf(g, nu, b2, 2)
        bc2 = tree.bias_correction_factor(b2, count, c) if bias_correction_nu else 1
        mu_hat = new_mu.astype(c)
        if bias_correction_mu:
            mu_hat = mu_hat / tree.bias_correction_factor(b1, count, c)
        if max_before_bias_correction:
            new_max = jnp.maximum(nu_max.astype(r), new_nu.astype(r))
            nu_hat = new_max / bc2
        else:
            new_max = jnp.maximum(nu_max.astype(r), new_nu.astype(r) / bc2)
            nu_hat = new_max
        out = tree.divide_by_root(mu_hat, _denominator(nu_hat, eps, eps_root))
        return out.astype(g.dtype), new_mu, new_nu, new_max.astype(nu_max.dtype)

    def init_fn(params):
        mu, nu = _init_moments(params, mu_dtype, nu_dtype)
        # nu_max gets its own buffer: a state whose leaves alias cannot be donated.
        nu_max = tree.zeros_like(params, nu_dtype, real=True)
        return ScaleByAmsgradState(tree.zero_count(), mu, nu, nu_max)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, owner="scale_by_amsgrad")
        count = tree.safe_increment(state.count)
        out, mu, nu, nu_max = tree.map_unzip(
            lambda g, m, v, vm: leaf(g, m, v, vm, count),
            4,
            updates,
            state.mu,
            state.nu,
            state.nu_max,
        )
        return out, ScaleByAmsgradState(count, mu, nu, nu_max)

    return GradientTransformation(init_fn, update_fn)


def scale_by_adamax(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AdaMax's scaling: Adam with the infinity norm (Kingma & Ba 2015, Alg. 2).

    .. math::
        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        u \\leftarrow \\max(\\beta_2 u, |g| + \\epsilon), \\quad
        \\text{out} = \\frac{m}{(1-\\beta_1^t)\\, u}

    The limit ``p -> infinity`` of ``v <- b2^p v + (1 - b2^p) |g|^p`` (the seeds'
    derivation). The paper has no ``eps``; it is added inside the maximum, as Optax
    and PyTorch do, so an all-zero gradient gives 0, not 0/0.

    Args:
      b1: ``beta_1`` in [0, 1).
      b2: ``beta_2`` in [0, 1).
      eps: >= 0; ``eps=0`` is the paper's rule.
      mu_dtype, nu_dtype: dtypes of ``m`` and ``u``; ``None`` keeps the params'.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_adamax(eps=0.0)
      >>> tx.update(jnp.array([-3.0]), tx.init(jnp.zeros(1)))[0]  # m / ((1 - b1) |g|)
      Array([-0.99999...], dtype=float32)
    """
    _check_adam_args("scale_by_adamax", b1, b2, eps, 0.0, mu_dtype, nu_dtype)

    def leaf(g, mu, u, count):
        c = tree.compute_dtype(g.dtype)
        new_mu = tree.moment_leaf(g, mu, b1, 1)
        magnitude = jnp.abs(g.astype(c)) + eps
        new_u = jnp.maximum(b2 * u.astype(tree.real_dtype(c)), magnitude)
        bc1 = tree.bias_correction_factor(b1, count, c)
        out = jnp.where(new_u > 0, new_mu.astype(c) / (bc1 * jnp.where(new_u > 0, new_u, 1)), 0)
        return out.astype(g.dtype), new_mu, new_u.astype(u.dtype)

    def init_fn(params):
        return ScaleByAdamState(tree.zero_count(), *_init_moments(params, mu_dtype, nu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, owner="scale_by_adamax")
        count = tree.safe_increment(state.count)
        out, mu, nu = tree.map_unzip(
            lambda g, m, u: leaf(g, m, u, count), 3, updates, state.mu, state.nu
        )
        return out, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)


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
    _check_adam_args("scale_by_nadam", b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    if momentum_decay is not None:
        _checks.non_negative("scale_by_nadam", "momentum_decay", momentum_decay)

    def momentum_at(step):
        if momentum_decay is None:
            return jnp.asarray(b1, step.dtype)
        return _dozat_momentum(b1, momentum_decay, step)

    def init_fn(params):
        mu, nu = _init_moments(params, mu_dtype, nu_dtype)
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
            out = tree.divide_by_root(mixed, _denominator(nu_hat, eps, eps_root))
            return out.astype(g.dtype), new_mu, new_nu

        out, mu, nu = tree.map_unzip(leaf, 3, updates, state.mu, state.nu)
        return out, ScaleByNadamState(count, product, mu, nu)

    return GradientTransformation(init_fn, update_fn)


def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any | None = None,
    eps_hat: bool = False,
) -> GradientTransformation:
    """Adam (Kingma & Ba 2015; Goodfellow et al. 2016, Alg. 8.7).

    .. math::
        \\Delta\\theta = -\\epsilon \\frac{\\hat s}{\\sqrt{\\hat r} + \\delta}

    with ``s_hat, r_hat`` the bias-corrected moments (:func:`scale_by_adam`).
    Composition: ``chain(scale_by_adam(...), scale_by_learning_rate(lr))``.
    Defaults are the paper's (lr 1e-3, b1 0.9, b2 0.999, eps 1e-8).

    Args:
      learning_rate: ``epsilon``, a number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype, eps_hat: see
        :func:`scale_by_adam`.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda w: jnp.sum(w**2)
      >>> tx = gradtx.adam(0.1)
      >>> w = jnp.array([1.0, -2.0]); state = tx.init(w)
      >>> for _ in range(200):
      ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
      ...     w = gradtx.apply_updates(w, updates)
      >>> bool(loss(w) < 1e-3)
      True

    References:
      Kingma & Ba (2015), Adam: A Method for Stochastic Optimization, Alg. 1;
      Goodfellow, Bengio & Courville (2016), Alg. 8.7.
    """
    _checks.learning_rate("adam", learning_rate)
    return chain(
        scale_by_adam(
            b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype, eps_hat=eps_hat
        ),
        scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019, Alg. 2).

    .. math::
        \\theta \\leftarrow \\theta - \\epsilon \\left(
            \\frac{\\hat m}{\\sqrt{\\hat v} + \\delta} + \\lambda \\theta \\right)

    The decay ``lambda`` is added *after* Adam's scaling, so it is not divided by
    ``sqrt(v_hat)`` (unlike L2 in the gradient). Composition:
    ``chain(scale_by_adam(...), add_decayed_weights(lambda, mask),
    scale_by_learning_rate(epsilon))``: the decay is multiplied by the learning
    rate, as in Optax and PyTorch (the paper multiplies it by the schedule
    multiplier ``eta_t`` only).

    Args:
      learning_rate: ``epsilon``, a number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: see :func:`scale_by_adam`.
      weight_decay: ``lambda`` >= 0 (default 1e-4, Optax's).
      mask: which leaves are decayed (see :func:`add_decayed_weights`).

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> params = {"w": jnp.ones(2), "b": jnp.zeros(2)}
      >>> tx = gradtx.adamw(1e-3, weight_decay=0.01, mask={"w": True, "b": False})
      >>> updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
      >>> updates["w"]  # -lr * lambda * w with a zero gradient
      Array([-1.0...e-05, -1.0...e-05], dtype=float32)

    References:
      Loshchilov & Hutter (2019), Decoupled Weight Decay Regularization, Alg. 2.
    """
    _checks.learning_rate("adamw", learning_rate)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


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


def adamax(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AdaMax (Kingma & Ba 2015, Alg. 2): Adam with the infinity norm.

    .. math::
        \\theta \\leftarrow \\theta - \\frac{\\alpha}{1-\\beta_1^t} \\frac{m}{u}

    Composition: ``chain(scale_by_adamax(...), scale_by_learning_rate(alpha))``.
    Default rate 2e-3 as the paper (Optax requires it to be given).

    Args:
      learning_rate: ``alpha``, a number or a schedule.
      b1, b2, eps, mu_dtype, nu_dtype: see :func:`scale_by_adamax`.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.adamax(0.1)
      >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]
      Array([-0.0999...], dtype=float32)

    References:
      Kingma & Ba (2015), Sec. 7.1 and Alg. 2.
    """
    _checks.learning_rate("adamax", learning_rate)
    return chain(
        scale_by_adamax(b1, b2, eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


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
