"""Adam and the methods that change one of its pieces.

Adam (Kingma & Ba 2015; Goodfellow et al. 2016, Alg. 8.7) and AdamW (decoupled
decay); the variants that change one piece live beside it: ``amsgrad.py`` (a
running maximum of the second moment), ``adamax.py`` (the infinity norm) and
``nadam.py`` (Nesterov momentum). The helpers below are shared with them.

Symbols: ``rho_1, rho_2`` (book) = ``beta_1, beta_2`` (paper) = ``b1, b2``;
``delta`` = ``eps``; ``s, r`` (book) = ``m, v`` (paper) = ``mu, nu``.

**Where eps goes.** ``eps`` is added outside the root, ``m_hat / (sqrt(v_hat) +
eps)``, as in the paper, the book's Alg. 8.7, Optax and PyTorch; ``eps_root`` is
added inside, ``sqrt(v_hat + eps_root)``, which is how some transcriptions of
Alg. 8.7 read it (``sqrt(r_hat + delta)``: use ``eps=0,
eps_root=delta``). ``eps_hat=True`` is Kingma & Ba's "eps-hat" form (end of their
Sec. 2) used by TensorFlow/Keras, where eps meets the *uncorrected* root.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import Mask, chain
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`, :func:`gradtx.scale_by_adamax` and
    :func:`gradtx.scale_by_yogi`."""

    count: Array  # int32 scalar: t.
    mu: Updates  # s (book) / m (paper): EMA of g, in mu_dtype.
    nu: Updates  # r (book) / v (paper): EMA of |g|^2 (AdaMax: u, the max norm), real.


def check_adam_args(owner, b1, b2, eps, eps_root, mu_dtype, nu_dtype):
    """Validates the hyperparameters every Adam variant shares."""
    _checks.in_range(owner, "b1", b1, 0.0, 1.0)
    _checks.in_range(owner, "b2", b2, 0.0, 1.0)
    _checks.non_negative(owner, "eps", eps)
    _checks.non_negative(owner, "eps_root", eps_root)
    _checks.dtype_or_none(owner, "mu_dtype", mu_dtype)
    _checks.dtype_or_none(owner, "nu_dtype", nu_dtype)


def init_moments(params, mu_dtype, nu_dtype):
    """Zero first and (real) second moments shaped like the params."""
    return tree.zeros_like(params, mu_dtype), tree.zeros_like(params, nu_dtype, real=True)


def denominator(nu_hat, eps, eps_root):
    """``sqrt(nu_hat + eps_root) + eps``: eps inside and outside the root."""
    return tree.sqrt(nu_hat + eps_root) + eps


def normalise(numerator, nu_hat, eps, eps_root):
    """``numerator / (sqrt(nu_hat + eps_root) + eps)``, 0 where the denominator is
    0 (only when ``eps = eps_root = 0`` and every gradient so far was 0)."""
    return tree.divide_by_root(numerator, denominator(nu_hat, eps, eps_root))


def moment_transformation(
    owner, state_type, leaf, mu_dtype, nu_dtype, scalars=None
) -> GradientTransformation:
    """A block whose state is ``(count, mu, nu)`` and whose step is per leaf.

    The scaffold shared by Adam, AdaMax and RAdam: ``leaf(g, mu, nu, shared)``
    returns the leaf's output and its new moments. ``shared(dtype)`` is
    ``scalars(t, dtype)``, ``t`` the step number after this one.
    """

    def init_fn(params):
        return state_type(tree.zero_count(), *init_moments(params, mu_dtype, nu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, owner=owner)
        count = tree.safe_increment(state.count)

        def shared(dtype):
            return scalars(count, dtype)

        out, mu, nu = tree.map_unzip(
            lambda g, m, v: leaf(g, m, v, shared), 3, updates, state.mu, state.nu
        )
        return out, state_type(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)


def bias_corrections(b1: Any, b2: Any, nesterov: bool):
    """``scalars(t, dtype)`` for :func:`moment_transformation`: ``1 - b1^t``,
    ``1 - b2^t`` and, with ``nesterov``, ``1 - b1^(t+1)`` (else None)."""

    def scalars(count, dtype):
        return (
            tree.bias_correction_factor(b1, count, dtype),
            tree.bias_correction_factor(b2, count, dtype),
            tree.bias_correction_factor(b1, count + 1, dtype) if nesterov else None,
        )

    return scalars


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
    check_adam_args("scale_by_adam", b1, b2, eps, eps_root, mu_dtype, nu_dtype)

    def leaf(g, mu, nu, shared):
        c = tree.compute_dtype(g.dtype)
        new_mu = tree.moment_leaf(g, mu, b1, 1)
        new_nu = tree.moment_leaf(g, nu, b2, 2)
        bc1, bc2, bc1_next = shared(c)
        mu_c = tree.as_dtype(new_mu, c)
        if nesterov:
            mu_hat = b1 * mu_c / bc1_next + (1 - b1) * tree.as_dtype(g, c) / bc1
        else:
            mu_hat = mu_c / bc1
        nu_c = tree.as_dtype(new_nu, tree.real_dtype(c))
        if eps_hat:
            out = normalise(mu_hat * jnp.sqrt(bc2), nu_c, eps, eps_root * bc2)
        else:
            out = normalise(mu_hat, nu_c / bc2, eps, eps_root)
        return tree.as_dtype(out, g.dtype), new_mu, new_nu

    scalars = bias_corrections(b1, b2, nesterov)
    return moment_transformation(
        "scale_by_adam", ScaleByAdamState, leaf, mu_dtype, nu_dtype, scalars
    )


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
