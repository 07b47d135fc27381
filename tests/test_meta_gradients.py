"""Derivatives through optimizer steps (meta-gradients) where they are finite.

* The adaptive methods divide by a square root of a second moment. When a
  gradient coordinate is exactly 0 at every step, that moment is 0, and
  ``jnp.sqrt``'s derivative there (``inf``) times the moment's (0) would make
  the derivative of the whole trajectory NaN. gradtx's roots use
  :func:`gradtx.tree.sqrt`, whose derivative at 0 is 0: the meta-gradient is
  finite and matches finite differences in float64. The clippings' norms have
  the same guard.
* The second-order methods run ``while_loop``s (conjugate gradient, line
  searches): JAX differentiates them in forward mode only. ``jax.jacfwd``
  through a step works and matches finite differences; reverse mode raises
  JAX's error for ``while_loop``, as their docstrings say.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

# The gradient of leaf "b" and of the last coordinate of "a" is 0 at every step
# (they start at 0 and their update is 0): every second moment is exactly 0
# there, and so is the norm of leaf "b" (for the per-leaf clippings).
_START = {"a": (1.0, -2.0, 0.0), "b": (0.0, 0.0)}
_STEPS = 2


def _loss(p):
    return 0.5 * jnp.sum(jnp.asarray([1.0, 3.0, 2.0]) * p["a"] ** 2) + jnp.sum(p["b"] ** 2)


def _final_loss(make, h):
    """The loss after a few steps of ``make(h)`` from ``_START``: a function of h."""
    tx = make(h)
    p = {k: jnp.asarray(v, jnp.float64) for k, v in _START.items()}
    state = tx.init(p)
    for _ in range(_STEPS):
        updates, state = tx.update(jax.grad(_loss)(p), state, p)
        p = gradtx.apply_updates(p, updates)
    return _loss(p)


# Each method with the option that puts a root of a moment that can be 0 in the
# step (eps outside the root, no initial accumulator), and the per-leaf clippings.
FIRST_ORDER = {
    "adam": lambda h: gradtx.adam(h),
    "adamw": lambda h: gradtx.adamw(h, weight_decay=0.1),
    "amsgrad": lambda h: gradtx.amsgrad(h),
    "nadam": lambda h: gradtx.nadam(h),
    "radam": lambda h: gradtx.radam(h),
    "adabound": lambda h: gradtx.adabound(h),
    "rmsprop_eps_outside": lambda h: gradtx.chain(
        gradtx.scale_by_rms(eps_in_sqrt=False), gradtx.scale_by_learning_rate(h)
    ),
    "rmsprop_centered": lambda h: gradtx.rmsprop(h, centered=True, momentum=0.9),
    "adagrad_book": lambda h: gradtx.adagrad(h, initial_accumulator_value=0.0, eps_in_sqrt=False),
    "adadelta": lambda h: gradtx.adadelta(h),
    "clip_by_leaf_norm": lambda h: gradtx.chain(gradtx.clip_by_leaf_norm(0.5), gradtx.sgd(h)),
    "clip_by_block_rms": lambda h: gradtx.chain(gradtx.clip_by_block_rms(0.5), gradtx.sgd(h)),
}


@pytest.mark.parametrize("name", sorted(FIRST_ORDER))
def test_meta_gradient_is_finite_and_right_with_a_zero_gradient_coordinate(name):
    make, h, eps = FIRST_ORDER[name], 0.05, 1e-6
    with jax.enable_x64(True):
        # One compiled program: the derivative and the two points of the central difference.
        def probe(h):
            loss = lambda h: _final_loss(make, h)  # noqa: E731
            return jax.grad(loss)(h), loss(h + eps), loss(h - eps)

        derivative, above, below = map(float, jax.jit(probe)(h))
        central = (above - below) / (2 * eps)
    assert np.isfinite(derivative), name
    np.testing.assert_allclose(derivative, central, rtol=1e-5, atol=1e-8, err_msg=name)


def test_the_safe_root_has_jnp_sqrt_values_bit_for_bit():
    x = jnp.asarray([0.0, 1e-30, 0.5, 2.0, 1e30, jnp.inf], jnp.float32)
    np.testing.assert_array_equal(gradtx.tree.sqrt(x), jnp.sqrt(x))
    slopes = jax.vmap(jax.grad(gradtx.tree.sqrt))(jnp.asarray([0.0, 4.0]))
    np.testing.assert_array_equal(slopes, [0.0, 0.25])


# ---------------------------------------------------------------- second order


def _quadratic(p):
    return 0.5 * jnp.sum(jnp.asarray([1.0, 3.0, 2.0]) * (p - 1.0) ** 2)


def _after_second_order_steps(make, h):
    tx = make(h)
    p = jnp.asarray([0.5, -1.0, 2.0], jnp.float64)
    state = tx.init(p)
    # Two steps: the second one's inner loops (CG, line search) start from a point
    # that depends on h.
    for _ in range(2):
        updates, state = tx.update(jax.grad(_quadratic)(p), state, p, value_fn=_quadratic)
        p = gradtx.apply_updates(p, updates)
    return _quadratic(p)


SECOND_ORDER = {
    "hessian_free": lambda h: gradtx.hessian_free(h),
    "nonlinear_cg": lambda h: gradtx.nonlinear_cg(h),
    "bfgs": lambda h: gradtx.bfgs(h),
    "lbfgs": lambda h: gradtx.lbfgs(h),
}


@pytest.mark.parametrize("name", sorted(SECOND_ORDER))
def test_second_order_meta_gradients_work_forward_and_refuse_reverse(name):
    make, h, eps = SECOND_ORDER[name], 0.5, 1e-6
    loss = lambda h: _after_second_order_steps(make, h)  # noqa: E731
    with jax.enable_x64(True):
        # One compiled forward-mode program, vmapped over h - eps, h, h + eps: the
        # derivative at h and the values for the central difference.
        values, slopes = jax.jit(jax.vmap(lambda h: jax.jvp(loss, (h,), (1.0,))))(
            jnp.asarray([h - eps, h, h + eps])
        )
        derivative, below, above = float(slopes[1]), float(values[0]), float(values[2])
        with pytest.raises(ValueError, match="Reverse-mode differentiation does not work"):
            jax.jit(jax.grad(loss))(h)  # fails when traced: nothing is compiled
    assert np.isfinite(derivative), name
    np.testing.assert_allclose(derivative, (above - below) / (2 * eps), rtol=1e-5, atol=1e-8)
