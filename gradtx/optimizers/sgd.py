"""Stochastic gradient descent, heavy-ball momentum, Nesterov momentum, noisy SGD.

Goodfellow, Bengio & Courville (2016), Alg. 8.1-8.3; Neelakantan et al. (2015).

**Where the learning rate sits.** The book (Alg. 8.2, 8.3), Sutskever et al.
(2013) and Keras keep the rate *inside* the velocity, ``v <- alpha v - eps g``;
Optax and PyTorch keep it *outside*, ``b <- alpha b + g``, ``theta <- theta - eps b``.
With a constant rate the two give the same parameters (``v = -eps b``); once the
rate changes they differ. Every optimizer here takes
``learning_rate_in_velocity`` (default ``False``: Optax/PyTorch); ``True`` is the
book's form, and is literally the same blocks in the other order:
``chain(scale_by_learning_rate(eps), trace(alpha))``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from gradtx import _checks, tree
from gradtx.base import GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import chain
from gradtx.transforms.noise import add_noise
from gradtx.transforms.scale import scale_by_learning_rate


class TraceState(NamedTuple):
    """State of :func:`trace` and :func:`nesterov`."""

    trace: Updates  # The velocity (v in Goodfellow Alg. 8.2), shaped like the params.


def _trace_leaf(g, v, decay, use_nesterov):
    c = tree.compute_dtype(jax.numpy.result_type(g, v))
    g_c = tree.as_dtype(g, c)
    new_v = g_c + decay * tree.as_dtype(v, c)
    out = g_c + decay * new_v if use_nesterov else new_v
    return tree.as_dtype(out, g.dtype), tree.as_dtype(new_v, v.dtype)


def trace(
    decay: float, nesterov: bool = False, accumulator_dtype: Any | None = None
) -> GradientTransformation:
    """Heavy-ball velocity (Polyak 1964; Goodfellow et al. 2016, Alg. 8.2).

    .. math::
        v \\leftarrow \\alpha v + g, \\qquad \\text{out} = v

    followed by a step ``-epsilon * out`` this is Alg. 8.2 with the learning rate
    outside the velocity (see the module docstring). With ``nesterov=True`` the
    output is ``g + alpha v`` (the look-ahead form, see :func:`nesterov`).

    Args:
      decay: the momentum ``alpha`` in [0, 1).
      nesterov: output the Nesterov look-ahead ``g + alpha v`` instead of ``v``.
      accumulator_dtype: dtype of ``v``; ``None`` keeps the params'.

    Raises:
      ValueError: ``decay`` outside [0, 1); a non-float ``accumulator_dtype``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.trace(0.5)
      >>> state = tx.init(jnp.zeros(1))
      >>> _, state = tx.update(jnp.ones(1), state)
      >>> tx.update(jnp.ones(1), state)[0]  # 1 + 0.5 * 1
      Array([1.5], dtype=float32)
    """
    _checks.in_range("trace", "decay", decay, 0.0, 1.0)
    _checks.dtype_or_none("trace", "accumulator_dtype", accumulator_dtype)

    def init_fn(params):
        return TraceState(tree.zeros_like(params, accumulator_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.trace, updates, owner="trace")
        out, new_trace = tree.map_unzip(
            lambda g, v: _trace_leaf(g, v, decay, nesterov), 2, updates, state.trace
        )
        return out, TraceState(new_trace)

    return GradientTransformation(init_fn, update_fn)


def nesterov(decay: float, accumulator_dtype: Any | None = None) -> GradientTransformation:
    """Nesterov momentum in its reparametrised form (Goodfellow et al. 2016, Alg. 8.3).

    Alg. 8.3 evaluates the gradient at the interim point
    ``theta~ = theta + alpha v``. Tracking ``phi = theta + alpha v`` instead of
    ``theta`` (Sutskever et al. 2013; Bengio et al. 2013), the gradient is taken
    at the current parameters and the update becomes

    .. math::
        b \\leftarrow \\alpha b + g, \\qquad \\text{out} = g + \\alpha b

    so that ``chain(nesterov(alpha), scale_by_learning_rate(eps))`` moves
    ``phi`` exactly as Alg. 8.3 moves ``theta + alpha v`` (``v = -eps b`` for a
    constant rate). The parameters a user holds are ``phi``.

    Args:
      decay: the momentum ``alpha`` in [0, 1).
      accumulator_dtype: dtype of ``b``; ``None`` keeps the params'.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.nesterov(0.5)
      >>> tx.update(jnp.ones(1), tx.init(jnp.zeros(1)))[0]  # 1 + 0.5 * 1
      Array([1.5], dtype=float32)
    """
    return trace(decay, nesterov=True, accumulator_dtype=accumulator_dtype)


def velocity_and_step(
    velocity: GradientTransformation,
    step: GradientTransformation,
    learning_rate_in_velocity: bool,
) -> tuple[GradientTransformation, GradientTransformation]:
    """The velocity and the step in chain order: the step first puts the rate inside."""
    return (step, velocity) if learning_rate_in_velocity else (velocity, step)


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
    *,
    learning_rate_in_velocity: bool = False,
) -> GradientTransformation:
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    ``theta <- theta - epsilon_k g`` (Goodfellow et al. 2016, Alg. 8.1); with
    ``momentum`` it is :func:`momentum` (Alg. 8.2), with ``nesterov=True`` too it is
    :func:`nesterov_momentum` (Alg. 8.3).

    Composition: ``chain(trace(momentum, nesterov), scale_by_learning_rate(lr))``,
    or ``scale_by_learning_rate(lr)`` alone without momentum.

    Args:
      learning_rate: ``epsilon``, a number or a schedule ``k -> epsilon_k``.
      momentum: ``alpha`` in [0, 1), or ``None`` for plain SGD.
      nesterov: use Nesterov momentum (needs ``momentum``).
      accumulator_dtype: dtype of the velocity; ``None`` keeps the params'.
      learning_rate_in_velocity: ``True`` for the book's ``v <- alpha v - eps g``
        (also Keras); ``False`` (default) for Optax/PyTorch, ``b <- alpha b + g``.
        Same parameters for a constant rate (module docstring).

    Raises:
      ValueError: a non-finite learning rate; momentum outside [0, 1);
        ``nesterov=True`` without momentum.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda w: jnp.sum(w**2)
      >>> tx = gradtx.sgd(0.1, momentum=0.9)
      >>> w = jnp.array([1.0, -2.0]); state = tx.init(w)
      >>> for _ in range(200):
      ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
      ...     w = gradtx.apply_updates(w, updates)
      >>> bool(loss(w) < 1e-6)
      True

    References:
      Robbins & Monro (1951); Goodfellow, Bengio & Courville (2016), Alg. 8.1-8.3.
    """
    _checks.learning_rate("sgd", learning_rate)
    _checks.dtype_or_none("sgd", "accumulator_dtype", accumulator_dtype)
    if momentum is None:
        if nesterov:
            raise ValueError("sgd: nesterov=True needs a momentum, got momentum=None.")
        return chain(scale_by_learning_rate(learning_rate))
    _checks.in_range("sgd", "momentum", momentum, 0.0, 1.0)
    velocity = trace(momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype)
    step = scale_by_learning_rate(learning_rate)
    return chain(*velocity_and_step(velocity, step, learning_rate_in_velocity))


def momentum(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    accumulator_dtype: Any | None = None,
    *,
    learning_rate_in_velocity: bool = False,
) -> GradientTransformation:
    """SGD with heavy-ball momentum (Goodfellow et al. 2016, Alg. 8.2).

    .. math::
        v \\leftarrow \\alpha v - \\epsilon g, \\qquad \\theta \\leftarrow \\theta + v

    Composition: ``chain(trace(alpha), scale_by_learning_rate(epsilon))`` (or the
    reverse order with ``learning_rate_in_velocity=True``, the book's literal form).
    The terminal velocity under a constant gradient is ``epsilon ||g|| / (1 - alpha)``.

    Args:
      learning_rate: ``epsilon``, a number or a schedule.
      momentum: ``alpha`` in [0, 1) (default 0.9).
      accumulator_dtype: dtype of the velocity; ``None`` keeps the params'.
      learning_rate_in_velocity: see :func:`sgd`.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.momentum(0.1, momentum=0.9)
      >>> tx.update(jnp.ones(1), tx.init(jnp.zeros(1)))[0]
      Array([-0.1], dtype=float32)

    References:
      Polyak (1964); Goodfellow, Bengio & Courville (2016), Alg. 8.2.
    """
    return sgd(
        learning_rate,
        momentum,
        accumulator_dtype=accumulator_dtype,
        learning_rate_in_velocity=learning_rate_in_velocity,
    )


def nesterov_momentum(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    accumulator_dtype: Any | None = None,
    *,
    learning_rate_in_velocity: bool = False,
) -> GradientTransformation:
    """SGD with Nesterov momentum (Goodfellow et al. 2016, Alg. 8.3).

    .. math::
        \\tilde\\theta = \\theta + \\alpha v, \\quad
        v \\leftarrow \\alpha v - \\epsilon \\nabla J(\\tilde\\theta), \\quad
        \\theta \\leftarrow \\theta + v

    run in the reparametrised form of :func:`nesterov`, which needs the gradient
    at the parameters the user holds only. Composition:
    ``chain(nesterov(alpha), scale_by_learning_rate(epsilon))``.

    Args:
      learning_rate: ``epsilon``, a number or a schedule.
      momentum: ``alpha`` in [0, 1) (default 0.9).
      accumulator_dtype: dtype of the velocity; ``None`` keeps the params'.
      learning_rate_in_velocity: see :func:`sgd`.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.nesterov_momentum(0.1, momentum=0.9)
      >>> tx.update(jnp.ones(1), tx.init(jnp.zeros(1)))[0]  # -0.1 * (1 + 0.9)
      Array([-0.19], dtype=float32)

    References:
      Nesterov (1983); Sutskever et al. (2013); Goodfellow et al. (2016), Alg. 8.3.
    """
    return sgd(
        learning_rate,
        momentum,
        nesterov=True,
        accumulator_dtype=accumulator_dtype,
        learning_rate_in_velocity=learning_rate_in_velocity,
    )


def noisy_sgd(
    learning_rate: ScalarOrSchedule,
    eta: float = 0.01,
    gamma: float = 0.55,
    key: Any = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    """SGD on gradients with annealed Gaussian noise (Neelakantan et al. 2015).

    .. math::
        \\theta \\leftarrow \\theta - \\epsilon_k (g + n_k), \\qquad
        n_k \\sim \\mathcal{N}\\left(0, \\frac{\\eta}{(1 + k)^\\gamma}\\right)

    with ``k = 0, 1, ...`` the step. Composition: ``chain(add_noise(eta, gamma,
    key, seed=seed), scale_by_learning_rate(epsilon))``; the noise, its key
    schedule and its dtypes are :func:`add_noise`'s.

    Args:
      learning_rate: ``epsilon``, a number or a schedule.
      eta, gamma, key, seed: see :func:`add_noise` (a ``key`` or ``seed`` is
        required: the noise must be reproducible).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.noisy_sgd(0.1, eta=0.0, key=0)  # eta = 0: plain SGD
      >>> tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))[0]
      Array([-0.1,  0.2], dtype=float32)

    References:
      Neelakantan, Vilnis, Le, Sutskever, Kaiser, Kurach & Martens (2015), Adding
      Gradient Noise Improves Learning for Very Deep Networks, Sec. 2.
    """
    _checks.learning_rate("noisy_sgd", learning_rate)
    return chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate))
