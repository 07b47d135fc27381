"""Yogi: Adam with an additive second moment (Zaheer et al. 2018, Alg. 2).

Symbols: ``eta_t`` = ``learning_rate``; ``beta_1, beta_2`` = ``b1, b2``;
``epsilon`` = ``eps``; ``m, v`` = ``mu, nu`` (the state is Adam's,
:class:`gradtx.ScaleByAdamState`).

**Departures from Alg. 2.** The paper's pseudo-code starts both moments at 0
and corrects neither for bias. By default gradtx, like Optax, starts ``v`` at
``initial_accumulator_value = 1e-6`` and divides the moments by ``1 - b1^t`` and
``1 - b2^t`` as Adam does; ``bias_correction=False,
initial_accumulator_value=0`` is Alg. 2 as printed.

**Departure from Optax.** Optax also starts ``m`` at
``initial_accumulator_value``. A nonzero ``m_0`` moves every coordinate, all in
the same direction, whether or not it has a gradient (by ``2.8e-4 lr`` at the
first step with the defaults, for a coordinate whose gradient is 0), and does
not turn with the phase of complex gradients; gradtx starts ``m`` at
``initial_mu_value = 0``, as the paper.
``initial_mu_value=1e-6`` gives Optax's numbers.
"""

from __future__ import annotations

import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import GradientTransformation, ScalarOrSchedule
from gradtx.combine import chain
from gradtx.optimizers.adam import ScaleByAdamState, check_adam_args, normalise
from gradtx.transforms.scale import scale_by_learning_rate


def _yogi_leaf(g, mu, v, count, b1, b2, eps, eps_root, bias_correction):
    """One leaf of Alg. 2: ``v`` moves towards ``g^2`` by at most ``(1 - b2) g^2``."""
    c = tree.compute_dtype(g.dtype)
    r = tree.real_dtype(c)
    new_mu = tree.moment_leaf(g, mu, b1, 1)
    g2 = tree.abs_sq(tree.as_dtype(g, c))
    v_r = tree.as_dtype(v, r)
    new_v = v_r - (1 - b2) * jnp.sign(v_r - g2) * g2
    mu_hat, v_hat = tree.as_dtype(new_mu, c), new_v
    if bias_correction:
        mu_hat = mu_hat / tree.bias_correction_factor(b1, count, c)
        v_hat = v_hat / tree.bias_correction_factor(b2, count, r)
    out = normalise(mu_hat, v_hat, eps, eps_root)
    return tree.as_dtype(out, g.dtype), new_mu, tree.as_dtype(new_v, v.dtype)


def scale_by_yogi(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    eps_root: float = 0.0,
    initial_accumulator_value: float = 1e-6,
    *,
    bias_correction: bool = True,
    initial_mu_value: float = 0.0,
) -> GradientTransformation:
    """Yogi's scaling: Adam whose second moment changes by a bounded amount.

    .. math::
        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        v \\leftarrow v - (1-\\beta_2) \\operatorname{sign}(v - |g|^2) |g|^2, \\quad
        \\text{out} = \\frac{\\hat m}{\\sqrt{\\hat v + \\epsilon_{root}} + \\epsilon}

    with ``m_hat = m / (1 - beta_1^t)``, ``v_hat = v / (1 - beta_2^t)`` (or ``m``,
    ``v`` with ``bias_correction=False``). Adam's ``v`` jumps to ``(1 - b2) g^2``
    of a large gradient at once; Yogi's moves by ``(1 - b2) g^2`` towards it,
    so the effective rate grows slowly (Zaheer et al. 2018, Alg. 2 and Sec. 4).
    See the module docstring for where the defaults depart from Alg. 2.

    Args:
      b1: ``beta_1`` in [0, 1).
      b2: ``beta_2`` in [0, 1).
      eps: ``epsilon`` >= 0 (1e-3, the paper's recommended value).
      eps_root: >= 0, added inside the root.
      initial_accumulator_value: >= 0, the start of ``v`` (Optax's 1e-6; the
        paper's Alg. 2 starts at 0).
      bias_correction: divide ``m`` and ``v`` by ``1 - beta^t`` (Optax); ``False``
        is Alg. 2 as printed.
      initial_mu_value: the start of ``m``, a finite number: 0 (default) as the
        paper; Optax starts ``m`` at ``initial_accumulator_value`` too.

    Raises:
      ValueError: ``b1`` or ``b2`` outside [0, 1); a negative ``eps``,
        ``eps_root`` or ``initial_accumulator_value``; a non-finite
        ``initial_mu_value``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_yogi(eps=0.0, initial_accumulator_value=0.0)
      >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]  # sign(g) at t=1
      Array([ 0.99999..., -0.99999...], dtype=float32)
    """
    owner = "scale_by_yogi"
    check_adam_args(owner, b1, b2, eps, eps_root, None, None)
    _checks.non_negative(owner, "initial_accumulator_value", initial_accumulator_value)
    _checks.finite(owner, "initial_mu_value", initial_mu_value)

    def init_fn(params):
        mu = tree.full_like(params, initial_mu_value)
        nu = tree.full_like(params, initial_accumulator_value, real=True)
        return ScaleByAdamState(tree.zero_count(), mu, nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, owner=owner)
        count = tree.safe_increment(state.count)

        def leaf(g, mu, v):
            return _yogi_leaf(g, mu, v, count, b1, b2, eps, eps_root, bias_correction)

        out, mu, nu = tree.map_unzip(leaf, 3, updates, state.mu, state.nu)
        return out, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)


def yogi(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    *,
    eps_root: float = 0.0,
    initial_accumulator_value: float = 1e-6,
    bias_correction: bool = True,
    initial_mu_value: float = 0.0,
) -> GradientTransformation:
    """Yogi (Zaheer et al. 2018, Alg. 2): Adam with an additive second moment.

    .. math::
        \\theta \\leftarrow \\theta - \\eta_t \\frac{\\hat m}{\\sqrt{\\hat v} + \\epsilon}

    with ``v`` Yogi's second moment (:func:`scale_by_yogi`). Composition:
    ``chain(scale_by_yogi(...), scale_by_learning_rate(eta))``. The keyword-only
    arguments are gradtx's (Optax's ``yogi`` leaves them at their defaults);
    ``bias_correction=False, initial_accumulator_value=0.0`` is Alg. 2 as printed,
    and ``initial_mu_value=1e-6`` is Optax's ``yogi`` (see the module docstring).

    Args:
      learning_rate: ``eta_t``, a number or a schedule.
      b1, b2, eps, eps_root, initial_accumulator_value: see :func:`scale_by_yogi`.
      bias_correction, initial_mu_value: see :func:`scale_by_yogi`.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda w: jnp.sum(w**2)
      >>> tx = gradtx.yogi(0.1)
      >>> w = jnp.array([1.0, -2.0]); state = tx.init(w)
      >>> for _ in range(200):
      ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
      ...     w = gradtx.apply_updates(w, updates)
      >>> bool(loss(w) < 1e-2)
      True

    References:
      Zaheer, Reddi, Sachan, Kale & Kumar (2018), Adaptive Methods for Nonconvex
      Optimization, NeurIPS, Alg. 2.
    """
    _checks.learning_rate("yogi", learning_rate)
    return chain(
        scale_by_yogi(
            b1,
            b2,
            eps,
            eps_root,
            initial_accumulator_value,
            bias_correction=bias_correction,
            initial_mu_value=initial_mu_value,
        ),
        scale_by_learning_rate(learning_rate),
    )
