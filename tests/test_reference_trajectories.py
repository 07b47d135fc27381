"""Every optimizer reproduces its independent numpy reference, step by step.

Each case drives a jitted gradtx optimizer (one ``jax.lax.scan`` over all steps)
with a fixed sequence of random gradients on a pytree of several leaves of
different shapes, and compares the parameters after *every* step with a plain
float64 numpy loop written from the paper's pseudo-code (``tests/reference``).
Run ``python -m tests.reference.report_deviations`` for the table of the largest
deviations.

Tolerances (stated once, used everywhere):

* float64 (x64 enabled): ``rtol = 1e-10``; float32: ``rtol = 1e-5``.
* Both are measured against ``|reference| + SCALE``, i.e. ``atol = rtol * SCALE``
  with ``SCALE = 1``, the standard deviation of the initial parameters. The
  reason: a coordinate that crosses zero has a relative error that means
  nothing; its absolute error is set by the rounding of the *steps* that took it
  there, which are of the parameters' scale. In float32 each step rounds at
  ~6e-8 of that scale and 120 steps accumulate ~1e-6 of it, so a
  coordinate passing near zero would fail any pure relative test while being
  exactly as accurate as the others.

The float32 run is fed the same numbers as the float64 reference: initial
parameters and gradients are drawn in float64 and rounded to float32 for both,
so the comparison measures gradtx's float32 arithmetic (and its float32
rounding of the hyperparameters) only.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests import reference as R

NUM_STEPS = 120
RTOL = {"float64": 1e-10, "float32": 1e-5}
SCALE = 1.0  # see the module docstring: atol = RTOL * SCALE

# A pytree with leaves of several shapes, a scalar leaf and nesting. ``jax.tree``
# flattens it in sorted-key order; the references see that list of leaves. (Each
# more leaf adds ~0.15 s of XLA compilation to each of the ~130 runs below.)
SHAPES = {"layer": {"b": (5,), "w": (3, 4)}, "temperature": ()}
# The decay mask for AdamW: the weights and the scalar are decayed, the bias is
# not (the seeds: "typically not applied on bias terms").
DECAY_MASK = {"layer": {"b": False, "w": True}, "temperature": True}
TREEDEF = jax.tree.structure(SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def _unflatten(leaves):
    return jax.tree.unflatten(TREEDEF, list(leaves))


def _make_data(seed: int = 20160101):
    """Initial parameters and ``NUM_STEPS`` gradients, float32-representable float64.

    Each leaf has its own gradient scale (0.1 to 3: the adaptive methods must
    track each coordinate), and the scale also changes over time (large early,
    a burst at steps 60-69), so that running maxima (AMSGrad, AdaMax) and the
    bias corrections are exercised rather than idle.
    """
    rng = np.random.default_rng(seed)
    shapes = jax.tree.leaves(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
    k = np.arange(NUM_STEPS)
    in_time = 1 + 3 * np.exp(-k / 10) + 2 * ((k >= 60) & (k < 70))
    theta0, grads = [], []
    for i, shape in enumerate(shapes):
        per_leaf = (0.1, 3.0, 1.0)[i % 3]
        g = rng.normal(size=(NUM_STEPS, *shape)) * per_leaf
        g = g * in_time.reshape((NUM_STEPS,) + (1,) * len(shape))
        theta0.append(rng.normal(size=shape).astype(np.float32).astype(np.float64))
        grads.append(g.astype(np.float32).astype(np.float64))
    return theta0, grads


THETA0, GRADS = _make_data()
GRADS_BY_STEP = [[g[k] for g in GRADS] for k in range(NUM_STEPS)]


# ---------------------------------------------------------------- schedules
# Plain arithmetic in k, so one function serves gradtx (an int32 array) and the
# references (a Python int).


def reciprocal(eps0: float) -> Callable:
    """``eps0 / (1 + k / 20)``: the rate falls to ~1/7 of itself over the run.

    Written ``0.05 * k``, not ``k / 20``: JAX divides an int32 array in float32
    even with x64 enabled, which would make the float64 run's rate float32.
    """
    return lambda k: eps0 / (1 + 0.05 * k)


def exponential(eps0: float) -> Callable:
    """``eps0 * 0.98^k``."""
    return lambda k: eps0 * 0.98**k


# ---------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
    """One gradtx configuration and the reference run it must reproduce."""

    id: str
    optimizer: str  # the row of the report
    reference: str  # the algorithm it is checked against
    make: Callable[[], gradtx.GradientTransformation]
    run_reference: Callable[[list, list], list]  # (theta0, grads by step) -> trajectory
    dtypes: tuple[str, ...] = ("float64", "float32")


def interim(theta_and_v, alpha):
    """``theta + alpha v``, the point at which Alg. 8.3 / 8.6 takes its next gradient."""
    theta, v = theta_and_v
    return [t + alpha * v_i for t, v_i in zip(theta, v, strict=True)]


A81, A82, A83 = "Goodfellow Alg. 8.1", "Goodfellow Alg. 8.2", "Goodfellow Alg. 8.3 (literal)"
A84, A85, A86 = "Goodfellow Alg. 8.4", "Goodfellow Alg. 8.5", "Goodfellow Alg. 8.6 (literal)"
A87, ZEILER = "Goodfellow Alg. 8.7 / Kingma & Ba Alg. 1", "Zeiler 2012 Alg. 1"
DOZAT = "Dozat 2016 Alg. 2"

CASES = [
    # SGD, Alg. 8.1
    Case("sgd", "sgd", A81, lambda: gradtx.sgd(0.05), lambda th, g: R.sgd.sgd(th, g, 0.05)),
    Case(
        "sgd-schedule",
        "sgd",
        A81,
        lambda: gradtx.sgd(reciprocal(0.1)),
        lambda th, g: R.sgd.sgd(th, g, reciprocal(0.1)),
    ),
    # Momentum, Alg. 8.2: both placements of the rate
    Case(
        "momentum-book",
        "momentum",
        A82,
        lambda: gradtx.momentum(0.05, 0.9),
        lambda th, g: R.sgd.momentum(th, g, 0.05, 0.9, learning_rate_in_velocity=True),
    ),
    Case(
        "momentum-rate-outside",
        "momentum",
        A82 + ", rate outside",
        lambda: gradtx.momentum(0.05, 0.9),
        lambda th, g: R.sgd.momentum(th, g, 0.05, 0.9, learning_rate_in_velocity=False),
    ),
    Case(
        "momentum-schedule-rate-outside",
        "momentum",
        A82 + ", rate outside",
        lambda: gradtx.sgd(exponential(0.05), momentum=0.9),
        lambda th, g: R.sgd.momentum(
            th, g, exponential(0.05), 0.9, learning_rate_in_velocity=False
        ),
    ),
    Case(
        "momentum-schedule-rate-inside",
        "momentum",
        A82,
        lambda: gradtx.momentum(exponential(0.05), 0.9, learning_rate_in_velocity=True),
        lambda th, g: R.sgd.momentum(th, g, exponential(0.05), 0.9, learning_rate_in_velocity=True),
    ),
    Case(
        "momentum-zero",
        "momentum",
        A82,
        lambda: gradtx.sgd(0.05, momentum=0.0),
        lambda th, g: R.sgd.momentum(th, g, 0.05, 0.0),
    ),
    Case(
        "momentum-0.99",
        "momentum",
        A82,
        lambda: gradtx.momentum(0.01, 0.99, learning_rate_in_velocity=True),
        lambda th, g: R.sgd.momentum(th, g, 0.01, 0.99),
    ),
    # Nesterov, Alg. 8.3: gradtx holds phi = theta + alpha v of the literal run
    Case(
        "nesterov-literal",
        "nesterov_momentum",
        A83,
        lambda: gradtx.nesterov_momentum(0.05, 0.9),
        lambda th, g: interim(R.sgd.nesterov_literal(th, g, 0.05, 0.9), 0.9),
    ),
    Case(
        "nesterov-reparametrised",
        "nesterov_momentum",
        "Alg. 8.3 reparametrised (Sutskever 2013)",
        lambda: gradtx.nesterov_momentum(0.05, 0.9),
        lambda th, g: R.sgd.nesterov_reparametrised(th, g, 0.05, 0.9),
    ),
    Case(
        "nesterov-chain",
        "nesterov_momentum",
        A83,
        lambda: gradtx.chain(gradtx.nesterov(0.9), gradtx.scale_by_learning_rate(0.05)),
        lambda th, g: interim(R.sgd.nesterov_literal(th, g, 0.05, 0.9), 0.9),
    ),
    Case(
        "nesterov-schedule-rate-outside",
        "nesterov_momentum",
        "Alg. 8.3 reparametrised (Sutskever 2013)",
        lambda: gradtx.sgd(reciprocal(0.05), momentum=0.9, nesterov=True),
        lambda th, g: R.sgd.nesterov_reparametrised(th, g, reciprocal(0.05), 0.9),
    ),
    Case(
        "nesterov-schedule-rate-inside",
        "nesterov_momentum",
        A83,
        lambda: gradtx.nesterov_momentum(reciprocal(0.05), 0.9, learning_rate_in_velocity=True),
        lambda th, g: interim(R.sgd.nesterov_literal(th, g, reciprocal(0.05), 0.9), 0.9),
    ),
    Case(
        "nesterov-zero-momentum",
        "nesterov_momentum",
        A83,
        lambda: gradtx.nesterov_momentum(0.05, 0.0),
        lambda th, g: interim(R.sgd.nesterov_literal(th, g, 0.05, 0.0), 0.0),
    ),
    # AdaGrad, Alg. 8.4
    Case(
        "adagrad-optax-defaults",
        "adagrad",
        A84 + ", delta in root",
        lambda: gradtx.adagrad(0.1),
        lambda th, g: R.adagrad.adagrad(th, g, 0.1, 1e-7, delta_in_sqrt=True, r0=0.1),
    ),
    Case(
        "adagrad-book",
        "adagrad",
        A84,
        lambda: gradtx.adagrad(0.1, initial_accumulator_value=0.0, eps_in_sqrt=False),
        lambda th, g: R.adagrad.adagrad(th, g, 0.1, 1e-7),
    ),
    Case(
        "adagrad-large-delta-outside-schedule",
        "adagrad",
        A84,
        lambda: gradtx.adagrad(reciprocal(0.2), 0.0, eps=0.5, eps_in_sqrt=False),
        lambda th, g: R.adagrad.adagrad(th, g, reciprocal(0.2), 0.5),
    ),
    Case(
        "adagrad-large-delta-inside",
        "adagrad",
        A84 + ", delta in root",
        lambda: gradtx.adagrad(0.2, 0.3, eps=0.5),
        lambda th, g: R.adagrad.adagrad(th, g, 0.2, 0.5, delta_in_sqrt=True, r0=0.3),
    ),
    # RMSProp, Alg. 8.5
    Case(
        "rmsprop-book",
        "rmsprop",
        A85,
        lambda: gradtx.rmsprop(0.01, decay=0.9, eps=1e-6),
        lambda th, g: R.rmsprop.rmsprop(th, g, 0.01, 0.9, 1e-6),
    ),
    Case(
        "rmsprop-delta-outside",
        "rmsprop",
        A85 + ", delta outside (PyTorch)",
        lambda: gradtx.rmsprop(0.01, decay=0.99, eps=0.1, eps_in_sqrt=False),
        lambda th, g: R.rmsprop.rmsprop(th, g, 0.01, 0.99, 0.1, delta_in_sqrt=False),
    ),
    Case(
        "rmsprop-initial-scale-schedule",
        "rmsprop",
        A85,
        lambda: gradtx.rmsprop(reciprocal(0.01), eps=1e-2, initial_scale=1.0),
        lambda th, g: R.rmsprop.rmsprop(th, g, reciprocal(0.01), 0.9, 1e-2, r0=1.0),
    ),
    Case(
        "rmsprop-bias-correction",
        "rmsprop",
        A85,
        lambda: gradtx.rmsprop(0.01, decay=0.95, eps=1e-3, bias_correction=True),
        lambda th, g: R.rmsprop.rmsprop(th, g, 0.01, 0.95, 1e-3, bias_correction=True),
    ),
    Case(
        "rmsprop-decay-zero",
        "rmsprop",
        A85,
        lambda: gradtx.rmsprop(0.01, decay=0.0, eps=1e-6),
        lambda th, g: R.rmsprop.rmsprop(th, g, 0.01, 0.0, 1e-6),
    ),
    # Centered RMSProp (Graves 2013)
    Case(
        "rmsprop-centered",
        "rmsprop(centered)",
        "Graves 2013 eq. 38-41",
        lambda: gradtx.rmsprop(0.01, decay=0.95, eps=1e-4, centered=True),
        lambda th, g: R.rmsprop.rmsprop(th, g, 0.01, 0.95, 1e-4, centered=True),
    ),
    Case(
        "rmsprop-centered-delta-outside",
        "rmsprop(centered)",
        "Graves 2013 eq. 38-41",
        lambda: gradtx.rmsprop(0.01, decay=0.9, eps=1e-2, eps_in_sqrt=False, centered=True),
        lambda th, g: R.rmsprop.rmsprop(th, g, 0.01, 0.9, 1e-2, delta_in_sqrt=False, centered=True),
    ),
    Case(
        "rmsprop-centered-graves-momentum-schedule",
        "rmsprop(centered)",
        "Graves 2013 eq. 38-41",
        lambda: gradtx.rmsprop(
            exponential(0.01),
            decay=0.95,
            eps=1e-4,
            centered=True,
            momentum=0.9,
            learning_rate_in_velocity=True,
        ),
        lambda th, g: R.rmsprop.rmsprop(
            th, g, exponential(0.01), 0.95, 1e-4, centered=True, alpha=0.9
        ),
    ),
    Case(
        "rmsprop-centered-bias-correction-initial-scale",
        "rmsprop(centered)",
        "Graves 2013 eq. 38-41",
        lambda: gradtx.rmsprop(
            0.01, decay=0.9, eps=1e-3, initial_scale=1.0, centered=True, bias_correction=True
        ),
        lambda th, g: R.rmsprop.rmsprop(
            th, g, 0.01, 0.9, 1e-3, r0=1.0, centered=True, bias_correction=True
        ),
    ),
    # Centered and bias-corrected from r = 0, the first step's variance estimate is
    # r_hat - g_bar_hat^2 = g^2 - g^2 = 0 exactly: the step is g / sqrt(eps + the
    # rounding error of g^2), float32's ~1e-7 g^2 against eps. That is the
    # formula's conditioning, not an error of either side, so only float64 (error
    # ~1e-16 g^2, far below eps = 0.1) can compare it at a tolerance that means
    # anything. (Started from r0 = 1, as in the case above, the variance is 9.)
    Case(
        "rmsprop-centered-bias-correction",
        "rmsprop(centered)",
        "Graves 2013 eq. 38-41",
        lambda: gradtx.rmsprop(0.01, decay=0.9, eps=0.1, centered=True, bias_correction=True),
        lambda th, g: R.rmsprop.rmsprop(th, g, 0.01, 0.9, 0.1, centered=True, bias_correction=True),
        dtypes=("float64",),
    ),
    # RMSProp with heavy-ball momentum
    Case(
        "rmsprop-momentum-schedule-rate-outside",
        "rmsprop(momentum)",
        A85 + " + heavy ball",
        lambda: gradtx.rmsprop(reciprocal(0.01), eps=1e-6, momentum=0.9),
        lambda th, g: R.rmsprop.rmsprop(
            th, g, reciprocal(0.01), 0.9, 1e-6, alpha=0.9, learning_rate_in_velocity=False
        ),
    ),
    Case(
        "rmsprop-momentum-schedule-rate-inside",
        "rmsprop(momentum)",
        A85 + " + heavy ball",
        lambda: gradtx.rmsprop(
            reciprocal(0.01), eps=1e-6, momentum=0.9, learning_rate_in_velocity=True
        ),
        lambda th, g: R.rmsprop.rmsprop(th, g, reciprocal(0.01), 0.9, 1e-6, alpha=0.9),
    ),
    Case(
        "rmsprop-momentum-zero",
        "rmsprop(momentum)",
        A85 + " + heavy ball",
        lambda: gradtx.rmsprop(0.01, eps=1e-6, momentum=0.0),
        lambda th, g: R.rmsprop.rmsprop(th, g, 0.01, 0.9, 1e-6, alpha=0.0),
    ),
    # RMSProp with Nesterov momentum, Alg. 8.6
    Case(
        "rmsprop-nesterov-book-no-delta",
        "rmsprop(nesterov)",
        A86,
        lambda: gradtx.rmsprop(0.01, decay=0.9, eps=0.0, momentum=0.9, nesterov=True),
        lambda th, g: interim(R.rmsprop.rmsprop_nesterov(th, g, 0.01, 0.9, 0.9), 0.9),
    ),
    Case(
        "rmsprop-nesterov-delta-schedule-rate-inside",
        "rmsprop(nesterov)",
        A86,
        lambda: gradtx.rmsprop(
            reciprocal(0.01),
            eps=1e-3,
            momentum=0.9,
            nesterov=True,
            learning_rate_in_velocity=True,
        ),
        lambda th, g: interim(
            R.rmsprop.rmsprop_nesterov(th, g, reciprocal(0.01), 0.9, 0.9, 1e-3), 0.9
        ),
    ),
    Case(
        "rmsprop-nesterov-centered-delta-outside",
        "rmsprop(nesterov)",
        A86,
        lambda: gradtx.rmsprop(
            0.01, eps=1e-2, eps_in_sqrt=False, centered=True, momentum=0.5, nesterov=True
        ),
        lambda th, g: interim(
            R.rmsprop.rmsprop_nesterov(
                th, g, 0.01, 0.9, 0.5, 1e-2, delta_in_sqrt=False, centered=True
            ),
            0.5,
        ),
    ),
    # AdaDelta
    Case(
        "adadelta-defaults",
        "adadelta",
        ZEILER,
        lambda: gradtx.adadelta(),
        lambda th, g: R.adadelta.adadelta(th, g, 0.9, 1e-6),
    ),
    Case(
        "adadelta-zeiler-values",
        "adadelta",
        ZEILER,
        lambda: gradtx.adadelta(rho=0.95, eps=1e-6),
        lambda th, g: R.adadelta.adadelta(th, g, 0.95, 1e-6),
    ),
    Case(
        "adadelta-schedule-weight-decay",
        "adadelta",
        ZEILER,
        lambda: gradtx.adadelta(reciprocal(0.5), rho=0.9, eps=1e-4, weight_decay=0.01),
        lambda th, g: R.adadelta.adadelta(th, g, 0.9, 1e-4, eta=reciprocal(0.5), weight_decay=0.01),
    ),
    Case(
        "adadelta-rho-zero",
        "adadelta",
        ZEILER,
        lambda: gradtx.adadelta(rho=0.0, eps=1e-3),
        lambda th, g: R.adadelta.adadelta(th, g, 0.0, 1e-3),
    ),
    # Adam, Alg. 8.7
    Case(
        "adam-defaults",
        "adam",
        A87,
        lambda: gradtx.adam(0.01),
        lambda th, g: R.adam.adam(th, g, 0.01, 0.9, 0.999, 1e-8),
    ),
    Case(
        "adam-b1-zero",
        "adam",
        A87,
        lambda: gradtx.adam(0.01, b1=0.0),
        lambda th, g: R.adam.adam(th, g, 0.01, 0.0, 0.999, 1e-8),
    ),
    Case(
        "adam-schedule-large-eps",
        "adam",
        A87,
        lambda: gradtx.adam(reciprocal(0.02), b1=0.5, b2=0.99, eps=1e-2),
        lambda th, g: R.adam.adam(th, g, reciprocal(0.02), 0.5, 0.99, 1e-2),
    ),
    Case(
        "adam-eps-root-only",
        "adam",
        A87 + ", delta in root",
        lambda: gradtx.adam(0.01, eps=0.0, eps_root=1e-3),
        lambda th, g: R.adam.adam(th, g, 0.01, 0.9, 0.999, 0.0, delta_root=1e-3),
    ),
    Case(
        "adam-eps-and-eps-root",
        "adam",
        A87 + ", delta in root",
        lambda: gradtx.adam(0.01, eps=1e-3, eps_root=1e-3),
        lambda th, g: R.adam.adam(th, g, 0.01, 0.9, 0.999, 1e-3, delta_root=1e-3),
    ),
    Case(
        "adam-eps-hat",
        "adam(eps_hat)",
        "Kingma & Ba 2015 Sec. 2 (eps-hat)",
        lambda: gradtx.adam(0.01, eps=1e-2, eps_hat=True),
        lambda th, g: R.adam.adam_eps_hat(th, g, 0.01, 0.9, 0.999, 1e-2),
    ),
    Case(
        "adam-eps-hat-schedule-b1-zero",
        "adam(eps_hat)",
        "Kingma & Ba 2015 Sec. 2 (eps-hat)",
        lambda: gradtx.adam(exponential(0.02), b1=0.0, b2=0.9, eps=1e-3, eps_hat=True),
        lambda th, g: R.adam.adam_eps_hat(th, g, exponential(0.02), 0.0, 0.9, 1e-3),
    ),
    Case(
        "adam-nesterov",
        "adam(nesterov)",
        DOZAT + ", constant mu_t",
        lambda: gradtx.adam(0.01, nesterov=True),
        lambda th, g: R.nadam.nadam(th, g, 0.01, 0.9, 0.999, 1e-8, psi=None),
    ),
    # AdamW: Optax's/PyTorch's adamw(lr, weight_decay) is Alg. 2 with alpha=1, eta_t=lr_t
    Case(
        "adamw",
        "adamw",
        "Loshchilov & Hutter 2019 Alg. 2",
        lambda: gradtx.adamw(0.01, weight_decay=0.1),
        lambda th, g: R.adam.adamw(th, g, 1.0, 0.9, 0.999, 1e-8, 0.1, eta=0.01),
    ),
    Case(
        "adamw-schedule-mask",
        "adamw",
        "Loshchilov & Hutter 2019 Alg. 2",
        lambda: gradtx.adamw(reciprocal(0.02), b1=0.5, weight_decay=0.5, mask=DECAY_MASK),
        lambda th, g: R.adam.adamw(
            th,
            g,
            1.0,
            0.5,
            0.999,
            1e-8,
            0.5,
            eta=reciprocal(0.02),
            mask=jax.tree.leaves(DECAY_MASK),
        ),
    ),
    Case(
        "adamw-zero-decay",
        "adamw",
        "Loshchilov & Hutter 2019 Alg. 2",
        lambda: gradtx.adamw(0.01, weight_decay=0.0),
        lambda th, g: R.adam.adamw(th, g, 1.0, 0.9, 0.999, 1e-8, 0.0, eta=0.01),
    ),
    # AMSGrad: three conventions for the maximum
    Case(
        "amsgrad-defaults",
        "amsgrad",
        "Reddi 2018 + bias correction, max after it (Optax)",
        lambda: gradtx.amsgrad(0.01),
        lambda th, g: R.amsgrad.amsgrad(th, g, 0.01, 0.9, 0.999, 1e-8),
    ),
    Case(
        "amsgrad-eps-root",
        "amsgrad",
        "Reddi 2018 + bias correction, max after it (Optax)",
        lambda: gradtx.amsgrad(0.01, b2=0.99, eps=0.0, eps_root=1e-4),
        lambda th, g: R.amsgrad.amsgrad(th, g, 0.01, 0.9, 0.99, 0.0, epsilon_root=1e-4),
    ),
    Case(
        "amsgrad-max-before-correction",
        "amsgrad(max_before_bias_correction)",
        "Reddi 2018 + bias correction, max of raw v (PyTorch)",
        lambda: gradtx.amsgrad(0.01, max_before_bias_correction=True),
        lambda th, g: R.amsgrad.amsgrad(th, g, 0.01, 0.9, 0.999, 1e-8, maximum_of="raw"),
    ),
    Case(
        "amsgrad-max-before-correction-b1-zero",
        "amsgrad(max_before_bias_correction)",
        "Reddi 2018 + bias correction, max of raw v (PyTorch)",
        lambda: gradtx.amsgrad(reciprocal(0.02), b1=0.0, b2=0.9, max_before_bias_correction=True),
        lambda th, g: R.amsgrad.amsgrad(th, g, reciprocal(0.02), 0.0, 0.9, 1e-8, maximum_of="raw"),
    ),
    Case(
        "amsgrad-reddi",
        "amsgrad(no bias correction)",
        "Reddi 2018 Alg. 2",
        lambda: gradtx.amsgrad(0.01, eps=0.0, bias_correction_mu=False, bias_correction_nu=False),
        lambda th, g: R.amsgrad.amsgrad_reddi(th, g, 0.01, 0.9, 0.999),
    ),
    Case(
        "amsgrad-reddi-eps-schedule",
        "amsgrad(no bias correction)",
        "Reddi 2018 Alg. 2",
        lambda: gradtx.amsgrad(
            reciprocal(0.01),
            b2=0.99,
            eps=1e-3,
            bias_correction_mu=False,
            bias_correction_nu=False,
        ),
        lambda th, g: R.amsgrad.amsgrad_reddi(th, g, reciprocal(0.01), 0.9, 0.99, 1e-3),
    ),
    # AdaMax
    Case(
        "adamax-defaults",
        "adamax",
        "Kingma & Ba 2015 Alg. 2",
        lambda: gradtx.adamax(0.01),
        lambda th, g: R.adamax.adamax(th, g, 0.01, 0.9, 0.999, 1e-8),
    ),
    Case(
        "adamax-paper-no-eps",
        "adamax",
        "Kingma & Ba 2015 Alg. 2",
        lambda: gradtx.adamax(0.01, eps=0.0),
        lambda th, g: R.adamax.adamax(th, g, 0.01, 0.9, 0.999),
    ),
    Case(
        "adamax-schedule-b1-zero",
        "adamax",
        "Kingma & Ba 2015 Alg. 2",
        lambda: gradtx.adamax(reciprocal(0.02), b1=0.0, b2=0.9, eps=1e-3),
        lambda th, g: R.adamax.adamax(th, g, reciprocal(0.02), 0.0, 0.9, 1e-3),
    ),
    # NAdam: Dozat's schedule (psi = momentum_decay) and the constant mu_t = b1
    Case(
        "nadam-defaults",
        "nadam",
        DOZAT + ", mu_t schedule",
        lambda: gradtx.nadam(0.01),
        lambda th, g: R.nadam.nadam(th, g, 0.01, 0.9, 0.999, 1e-8, psi=0.004),
    ),
    Case(
        "nadam-fast-warmup-schedule",
        "nadam",
        DOZAT + ", mu_t schedule",
        lambda: gradtx.nadam(reciprocal(0.02), b2=0.99, momentum_decay=0.1),
        lambda th, g: R.nadam.nadam(th, g, reciprocal(0.02), 0.9, 0.99, 1e-8, psi=0.1),
    ),
    Case(
        "nadam-b1-zero",
        "nadam",
        DOZAT + ", mu_t schedule",
        lambda: gradtx.nadam(0.01, b1=0.0),
        lambda th, g: R.nadam.nadam(th, g, 0.01, 0.0, 0.999, 1e-8),
    ),
    Case(
        "nadam-momentum-decay-zero",
        "nadam",
        DOZAT + ", mu_t schedule",
        lambda: gradtx.nadam(0.01, momentum_decay=0.0),
        lambda th, g: R.nadam.nadam(th, g, 0.01, 0.9, 0.999, 1e-8, psi=0.0),
    ),
    Case(
        "nadam-constant-momentum",
        "nadam(momentum_decay=None)",
        DOZAT + ", constant mu_t",
        lambda: gradtx.nadam(0.01, momentum_decay=None),
        lambda th, g: R.nadam.nadam(th, g, 0.01, 0.9, 0.999, 1e-8, psi=None),
    ),
    Case(
        "nadam-constant-momentum-eps-root",
        "nadam(momentum_decay=None)",
        DOZAT + ", constant mu_t",
        lambda: gradtx.nadam(0.01, eps=0.0, eps_root=1e-4, momentum_decay=None),
        lambda th, g: R.nadam.nadam(th, g, 0.01, 0.9, 0.999, 0.0, psi=None, epsilon_root=1e-4),
    ),
    # DoG (layer-wise): the step is -global_scale times DoG's scaled gradient.
    Case(
        # The default reps_rel=1e-6 barely moves in 120 steps: a larger start.
        "dog-reps-1e-2",
        "scale_by_distance_over_gradients",
        "Ivgi et al. 2023 Alg. 1 (LDoG)",
        lambda: gradtx.scale_by_distance_over_gradients(1e-2, global_scale=-1.0, param_dtype=None),
        lambda th, g: R.dog.ldog(th, g, 1e-2),
    ),
    Case(
        "dog-args",
        "scale_by_distance_over_gradients",
        "Ivgi et al. 2023 Alg. 1 (LDoG)",
        lambda: gradtx.scale_by_distance_over_gradients(
            0.1, 1e-4, param_dtype=None, global_scale=-0.5
        ),
        lambda th, g: R.dog.ldog(th, g, 0.1, 1e-4, scale=0.5),
    ),
]
CASES_BY_ID = {case.id: case for case in CASES}


# ---------------------------------------------------------------- running


def _scan(tx, params, grads_stacked, grad_fn=None):
    """Parameters after every step of ``tx``, one ``lax.scan`` (to be traced by jit)."""

    def step(carry, g):
        p, state = carry
        if grad_fn is not None:
            g = grad_fn(p)
        updates, state = tx.update(g, state, p)
        p = gradtx.apply_updates(p, updates)
        return (p, state), p

    return jax.lax.scan(step, (params, tx.init(params)), grads_stacked)[1]


def scan_trajectory(tx, params, grads_stacked, grad_fn=None):
    """Parameters after every step of ``tx``, the whole run one jitted scan.

    ``grads_stacked`` holds one gradient per step (leading axis); with
    ``grad_fn`` it is ignored except for its length and the gradient is
    ``grad_fn(params)`` at the parameters gradtx holds.
    """
    return jax.jit(lambda p, g: _scan(tx, p, g, grad_fn))(params, grads_stacked)


def with_start(theta0, trajectory_tree):
    """The per-leaf float64 trajectories, the initial parameters as row 0."""
    rows = jax.tree.leaves(trajectory_tree)
    return [
        np.concatenate([np.asarray(t0, np.float64)[None], np.asarray(r, np.float64)])
        for t0, r in zip(theta0, rows, strict=True)
    ]


def gradtx_trajectory(case: Case, dtype: str) -> list[np.ndarray]:
    """Runs ``case`` in ``dtype`` ("float32" or "float64") on the shared data."""
    return gradtx_trajectories((case,), dtype)[case.id]


def gradtx_trajectories(cases, dtype: str) -> dict[str, list[np.ndarray]]:
    """Runs ``cases`` in ``dtype`` on the shared data, all in one jitted function.

    The runs are independent scans side by side in one program: one compilation
    instead of one per case (XLA's fixed cost per compilation dominates these
    small programs), the same arithmetic per scan.
    """
    with jax.enable_x64(dtype == "float64"):
        params = _unflatten([jnp.asarray(t, dtype) for t in THETA0])
        grads = _unflatten([jnp.asarray(g, dtype) for g in GRADS])
        txs = [case.make() for case in cases]
        trajectories = jax.jit(lambda p, g: [_scan(tx, p, g) for tx in txs])(params, grads)
        found = {}
        for case, trajectory in zip(cases, trajectories, strict=True):
            for leaf in jax.tree.leaves(trajectory):
                assert leaf.dtype == jnp.dtype(dtype), case.id
            found[case.id] = with_start(THETA0, trajectory)
        return found


@functools.cache
def reference_trajectory(case_id: str) -> tuple[np.ndarray, ...]:
    return tuple(CASES_BY_ID[case_id].run_reference(THETA0, GRADS_BY_STEP))


def deviation(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """``max |got - want| / (|want| + SCALE)`` over every leaf, element and step."""
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape, (g.shape, w.shape)
        worst = max(worst, float(np.max(np.abs(g - w) / (np.abs(w) + SCALE))))
    return worst


def case_deviation(case: Case, dtype: str) -> float:
    """The largest deviation of gradtx from the reference over the whole run."""
    return deviation(gradtx_trajectory(case, dtype), list(reference_trajectory(case.id)))


# ---------------------------------------------------------------- tests


RUNS = [(case, dtype) for case in CASES for dtype in case.dtypes]

# The runs of one dtype are compiled in groups of GROUP consecutive cases (see
# gradtx_trajectories); a test computes its group the first time one of its
# members runs in this process, and neighbouring tests usually share a worker.
GROUP = 8


@functools.cache
def _group_trajectories(dtype: str, index: int) -> dict[str, list[np.ndarray]]:
    members = [case for case, d in RUNS if d == dtype][index * GROUP : (index + 1) * GROUP]
    return gradtx_trajectories(members, dtype)


def grouped_gradtx_trajectory(case: Case, dtype: str) -> list[np.ndarray]:
    """``gradtx_trajectory(case, dtype)``, compiled together with its group."""
    ids = [c.id for c, d in RUNS if d == dtype]
    return _group_trajectories(dtype, ids.index(case.id) // GROUP)[case.id]


@pytest.mark.parametrize("case, dtype", RUNS, ids=[f"{c.id}-{d}" for c, d in RUNS])
def test_trajectory_matches_reference(case, dtype):
    want = list(reference_trajectory(case.id))
    got = grouped_gradtx_trajectory(case, dtype)
    assert np.all(np.isfinite(np.concatenate([w.ravel() for w in want])))
    # The run must go somewhere, or matching it proves nothing. (AdaDelta with
    # Zeiler's eps = 1e-6 starts with steps of ~sqrt(eps) = 1e-3 and moves ~0.03.)
    moved = max(float(np.max(np.abs(w[-1] - w[0]))) for w in want)
    assert moved > 0.02, f"{case.id}: the reference barely moved ({moved})"
    worst = deviation(got, want)
    assert worst <= RTOL[dtype], f"{case.id} [{dtype}]: deviation {worst:.3e} > {RTOL[dtype]}"


def test_every_optimizer_family_has_a_reference_case():
    named = {
        "sgd", "momentum", "nesterov_momentum", "adagrad", "rmsprop", "adadelta",
        "adam", "adamw", "amsgrad", "adamax", "nadam",
    }  # fmt: skip
    covered = {case.optimizer.split("(")[0] for case in CASES}
    assert named <= covered, named - covered


# A tolerance that passes any two conventions proves nothing: at the settings
# used above, each pair of conventions the cases choose between must differ by
# orders of magnitude more than the float32 tolerance.
DISTINCT = [
    (
        "rate inside vs outside the velocity, with a schedule",
        lambda th, g: R.sgd.momentum(th, g, exponential(0.05), 0.9),
        lambda th, g: R.sgd.momentum(
            th, g, exponential(0.05), 0.9, learning_rate_in_velocity=False
        ),
    ),
    (
        "Nesterov literal vs heavy ball",
        lambda th, g: interim(R.sgd.nesterov_literal(th, g, 0.05, 0.9), 0.9),
        lambda th, g: R.sgd.momentum(th, g, 0.05, 0.9),
    ),
    (
        "AdaGrad delta inside vs outside the root",
        lambda th, g: R.adagrad.adagrad(th, g, 0.2, 0.5, delta_in_sqrt=True),
        lambda th, g: R.adagrad.adagrad(th, g, 0.2, 0.5),
    ),
    (
        "RMSProp delta inside vs outside the root",
        lambda th, g: R.rmsprop.rmsprop(th, g, 0.01, 0.99, 0.1),
        lambda th, g: R.rmsprop.rmsprop(th, g, 0.01, 0.99, 0.1, delta_in_sqrt=False),
    ),
    (
        "RMSProp centered vs not",
        lambda th, g: R.rmsprop.rmsprop(th, g, 0.01, 0.95, 1e-4, centered=True),
        lambda th, g: R.rmsprop.rmsprop(th, g, 0.01, 0.95, 1e-4),
    ),
    (
        "Adam eps vs eps-hat",
        lambda th, g: R.adam.adam(th, g, 0.01, 0.9, 0.999, 1e-2),
        lambda th, g: R.adam.adam_eps_hat(th, g, 0.01, 0.9, 0.999, 1e-2),
    ),
    (
        "AdamW decay times lr vs decay alone",
        lambda th, g: R.adam.adamw(th, g, 1.0, 0.9, 0.999, 1e-8, 0.1, eta=0.01),
        lambda th, g: R.adam.adamw(th, g, 0.01, 0.9, 0.999, 1e-8, 0.1),
    ),
    (
        "AMSGrad max after vs before bias correction",
        lambda th, g: R.amsgrad.amsgrad(th, g, 0.01, 0.9, 0.999, 1e-8),
        lambda th, g: R.amsgrad.amsgrad(th, g, 0.01, 0.9, 0.999, 1e-8, maximum_of="raw"),
    ),
    (
        "AMSGrad vs Adam",
        lambda th, g: R.amsgrad.amsgrad(th, g, 0.01, 0.9, 0.999, 1e-8),
        lambda th, g: R.adam.adam(th, g, 0.01, 0.9, 0.999, 1e-8),
    ),
    (
        "NAdam schedule vs constant mu_t",
        lambda th, g: R.nadam.nadam(th, g, 0.01, 0.9, 0.99, 1e-8, psi=0.1),
        lambda th, g: R.nadam.nadam(th, g, 0.01, 0.9, 0.99, 1e-8, psi=None),
    ),
    (
        "NAdam default schedule vs constant mu_t",
        lambda th, g: R.nadam.nadam(th, g, 0.01, 0.9, 0.999, 1e-8),
        lambda th, g: R.nadam.nadam(th, g, 0.01, 0.9, 0.999, 1e-8, psi=None),
    ),
]


@pytest.mark.parametrize("name, first, second", DISTINCT, ids=[d[0] for d in DISTINCT])
def test_the_conventions_compared_are_far_apart(name, first, second):
    gap = deviation(first(THETA0, GRADS_BY_STEP), second(THETA0, GRADS_BY_STEP))
    assert gap > 100 * RTOL["float32"], f"{name}: only {gap:.2e} apart"


def test_references_import_nothing_from_gradtx_or_optax():
    """The oracles must be independent: numpy and the standard library only."""
    allowed = {"__future__", "collections", "numpy"}
    folder = pathlib.Path(R.__file__).parent
    checked = 0
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("report_"):  # the reports drive gradtx on purpose
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [] if node.level > 0 else [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
        checked += 1
    assert checked >= 9


# ---------------------------------------------------------------- Nesterov on a quadratic
# Alg. 8.3 and 8.6 run literally, the gradient of a real loss taken at the
# interim point theta + alpha v; gradtx runs on the same loss with the gradient
# at the parameters it holds. The reparametrisation says gradtx's parameters are
# exactly theta_t + alpha v_t of the literal run, at every step.

QUAD_STEPS = 300
QUAD_SHAPES = {"u": (4,), "w": (2, 3)}
QUAD_TREEDEF = jax.tree.structure(QUAD_SHAPES, is_leaf=lambda x: isinstance(x, tuple))
QUAD_LEAF_SHAPES = jax.tree.leaves(QUAD_SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def _quadratic(condition=1e3, seed=7):
    """``J(x) = 1/2 x^T A x - b^T x`` on 10 coordinates, ``A`` rotated, cond(A) = 1e3."""
    rng = np.random.default_rng(seed)
    n = sum(int(np.prod(shape)) for shape in QUAD_LEAF_SHAPES)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = q @ np.diag(np.logspace(0, np.log10(condition), n)) @ q.T
    a = (a + a.T) / 2
    b = rng.normal(size=n)
    x0 = rng.normal(size=n) * 3
    return a, b, x0


QUAD_A, QUAD_B, QUAD_X0 = _quadratic()


def _split(x):
    leaves, start = [], 0
    for shape in QUAD_LEAF_SHAPES:
        size = int(np.prod(shape))
        leaves.append(x[start : start + size].reshape(shape))
        start += size
    return leaves


def _join(leaves, xp):
    return xp.concatenate([xp.reshape(leaf, (-1,)) for leaf in leaves])


def quad_loss(leaves):
    x = _join(leaves, np)
    return 0.5 * x @ QUAD_A @ x - QUAD_B @ x


def quad_grad_numpy(leaves):
    return _split(QUAD_A @ _join(leaves, np) - QUAD_B)


def quad_grad_jax(params):
    leaves = jax.tree.leaves(params)
    x = _join(leaves, jnp)
    g = jnp.asarray(QUAD_A) @ x - jnp.asarray(QUAD_B)
    return jax.tree.unflatten(QUAD_TREEDEF, [jnp.asarray(p) for p in _split(g)])


def gradtx_on_quadratic(tx):
    """gradtx's parameter trajectory on the quadratic, float64, gradients at its params."""
    with jax.enable_x64(True):
        params = jax.tree.unflatten(QUAD_TREEDEF, [jnp.asarray(p) for p in _split(QUAD_X0)])
        steps = jnp.zeros((QUAD_STEPS,))
        trajectory = scan_trajectory(tx, params, steps, grad_fn=quad_grad_jax)
        return with_start(_split(QUAD_X0), trajectory)


EPS, ALPHA = 1e-3, 0.9  # epsilon = 1 / lambda_max: the fast mode is stable
# RMSProp's decay. With rho = 0.9 the identity holds to 1e-15 for ~240 steps and
# then the two runs part exponentially: once the stiff coordinates reach the
# minimum, r forgets their history within ~10 steps and g / sqrt(r) acts like
# sign(g), a chaotic hover in which the last-bit difference between two exact
# formulas doubles every few steps. rho = 0.999 keeps r's memory and the run
# regular, so agreement to rounding over all 300 steps is the test.
RHO = 0.999
NESTEROV_ON_QUADRATIC = [
    ("nesterov_momentum", lambda: gradtx.nesterov_momentum(EPS, ALPHA), EPS),
    (
        "chain(nesterov, scale_by_learning_rate)",
        lambda: gradtx.chain(gradtx.nesterov(ALPHA), gradtx.scale_by_learning_rate(EPS)),
        EPS,
    ),
    ("sgd(nesterov=True)", lambda: gradtx.sgd(EPS, momentum=ALPHA, nesterov=True), EPS),
    (
        # With the rate inside the velocity the identity holds for a schedule too.
        "nesterov_momentum(schedule, rate in velocity)",
        lambda: gradtx.nesterov_momentum(
            reciprocal(2 * EPS), ALPHA, learning_rate_in_velocity=True
        ),
        reciprocal(2 * EPS),
    ),
    (
        "chain(scale_by_learning_rate(schedule), nesterov)",
        lambda: gradtx.chain(
            gradtx.scale_by_learning_rate(reciprocal(2 * EPS)), gradtx.nesterov(ALPHA)
        ),
        reciprocal(2 * EPS),
    ),
]


@pytest.mark.parametrize(
    "make, epsilon",
    [c[1:] for c in NESTEROV_ON_QUADRATIC],
    ids=[c[0] for c in NESTEROV_ON_QUADRATIC],
)
def test_nesterov_is_alg_8_3_reparametrised_on_an_ill_conditioned_quadratic(make, epsilon):
    theta, v = R.sgd.nesterov_literal(
        _split(QUAD_X0), quad_grad_numpy, epsilon, ALPHA, num_steps=QUAD_STEPS
    )
    phi = gradtx_on_quadratic(make())
    assert deviation(phi, interim((theta, v), ALPHA)) <= RTOL["float64"]
    # Not a vacuous identity: phi is not theta itself, and the run converges.
    assert deviation(phi, theta) > 1e-3
    start, end = quad_loss(_split(QUAD_X0)), quad_loss([p[-1] for p in phi])
    optimum = quad_loss(_split(np.linalg.solve(QUAD_A, QUAD_B)))
    assert end - optimum < 1e-2 * (start - optimum)


def test_heavy_ball_is_not_nesterov_on_the_quadratic():
    """The same check fails for plain momentum: the test can tell the two apart."""
    theta, v = R.sgd.nesterov_literal(
        _split(QUAD_X0), quad_grad_numpy, EPS, ALPHA, num_steps=QUAD_STEPS
    )
    heavy_ball = gradtx_on_quadratic(gradtx.momentum(EPS, ALPHA))
    assert deviation(heavy_ball, interim((theta, v), ALPHA)) > 1e-3


# Alg. 8.6 as printed has no delta: r is a decaying average of squared
# gradients of a quadratic away from its minimum, so it stays positive and
# ``eps=0`` reproduces the book literally. A positive delta is compared with the
# reference placing it the same way (Alg. 8.5's sqrt(delta + r), or outside).
RMSPROP_NESTEROV_ON_QUADRATIC = [
    (
        "rmsprop(eps=0): Alg. 8.6 as printed",
        lambda: gradtx.rmsprop(EPS, decay=RHO, eps=0.0, momentum=ALPHA, nesterov=True),
        dict(epsilon=EPS),
    ),
    (
        "rmsprop(eps=1e-6 in root)",
        lambda: gradtx.rmsprop(EPS, decay=RHO, eps=1e-6, momentum=ALPHA, nesterov=True),
        dict(epsilon=EPS, delta=1e-6),
    ),
    (
        "rmsprop(eps=1e-2 outside root)",
        lambda: gradtx.rmsprop(
            EPS, decay=RHO, eps=1e-2, eps_in_sqrt=False, momentum=ALPHA, nesterov=True
        ),
        dict(epsilon=EPS, delta=1e-2, delta_in_sqrt=False),
    ),
    (
        "rmsprop(schedule, rate in velocity)",
        lambda: gradtx.rmsprop(
            reciprocal(EPS),
            decay=RHO,
            eps=0.0,
            momentum=ALPHA,
            nesterov=True,
            learning_rate_in_velocity=True,
        ),
        dict(epsilon=reciprocal(EPS)),
    ),
    (
        "chain(scale_by_rms, nesterov, scale_by_learning_rate)",
        lambda: gradtx.chain(
            gradtx.scale_by_rms(RHO, 0.0),
            gradtx.nesterov(ALPHA),
            gradtx.scale_by_learning_rate(EPS),
        ),
        dict(epsilon=EPS),
    ),
]


@pytest.mark.parametrize(
    "make, kwargs",
    [c[1:] for c in RMSPROP_NESTEROV_ON_QUADRATIC],
    ids=[c[0] for c in RMSPROP_NESTEROV_ON_QUADRATIC],
)
def test_rmsprop_nesterov_is_alg_8_6_reparametrised_on_an_ill_conditioned_quadratic(make, kwargs):
    theta, v = R.rmsprop.rmsprop_nesterov(
        _split(QUAD_X0), quad_grad_numpy, rho=RHO, alpha=ALPHA, num_steps=QUAD_STEPS, **kwargs
    )
    phi = gradtx_on_quadratic(make())
    assert deviation(phi, interim((theta, v), ALPHA)) <= RTOL["float64"]
    assert deviation(phi, theta) > 1e-3
    start, end = quad_loss(_split(QUAD_X0)), quad_loss([p[-1] for p in phi])
    assert end < start
