"""AdaDelta: RMSProp whose numerator is the RMS of past steps (no rate needed)."""

from __future__ import annotations

from typing import Any, NamedTuple

from gradtx import _checks, tree
from gradtx.base import GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import Mask, chain
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByAdaDeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`."""

    e_g: Updates  # E[g^2], the decaying average of squared gradients (real dtype).
    e_x: Updates  # E[dx^2], the decaying average of squared steps (real dtype).


def _adadelta_leaf(g, e_g, e_x, rho, eps):
    """One leaf of AdaDelta: its step ``d``, and the new averages.

    The textbook step ``d = sqrt(E[dx^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) g``
    reads the old ``E[dx^2]``, which the new one overwrites in place when the state
    is donated: XLA then keeps a copy of it (or of the roots) as large as the
    params at every step. The step is computed from the *new* averages instead,
    the same number up to rounding: since ``|d|^2 = (E[dx^2]_{t-1} + eps) |g|^2 /
    (E[g^2]_t + eps)``,

        E[dx^2]_t + rho eps = (E[dx^2]_{t-1} + eps) (rho + (1 - rho) |g|^2 / (E[g^2]_t + eps)),

    so ``d = sqrt(E[dx^2]_t + rho eps) / sqrt(rho (E[g^2]_t + eps) + (1 - rho) |g|^2) g``
    and ``E[dx^2]_t`` takes ``|d|^2`` in its root-free form. Every term is >= 0:
    no cancellation. The last denominator is 0 only for ``rho = 0`` and ``g = 0``,
    where the numerator is 0 too and the step is 0 (:func:`gradtx.tree.divide_by_root`).
    """
    dtype = g.dtype
    c = tree.compute_dtype(dtype)
    r = tree.real_dtype(c)
    g = tree.as_dtype(g, c)
    g_sq = tree.abs_sq(g)
    new_e_g = tree.moment_leaf(g, e_g, rho, 2)
    e_g_eps = tree.as_dtype(new_e_g, r) + eps
    old_e_x = tree.as_dtype(e_x, r)
    step_sq = (old_e_x + eps) / e_g_eps * g_sq
    new_e_x = tree.as_dtype(rho * old_e_x + (1 - rho) * step_sq, e_x.dtype)
    numerator = tree.sqrt(tree.as_dtype(new_e_x, r) + rho * eps) * g
    denominator = tree.sqrt(rho * e_g_eps + (1 - rho) * g_sq)
    step = tree.divide_by_root(numerator, denominator)
    return tree.as_dtype(step, dtype), new_e_g, new_e_x


def scale_by_adadelta(
    rho: float = 0.9, eps: float = 1e-6, *, nu_dtype: Any | None = None
) -> GradientTransformation:
    """AdaDelta's scaling (Zeiler 2012, Alg. 1), returned as a descent direction.

    .. math::
        E[g^2] \\leftarrow \\rho E[g^2] + (1-\\rho) g^2, \\quad
        d = \\frac{\\mathrm{RMS}[\\Delta x]_{t-1}}{\\mathrm{RMS}[g]_t} g, \\quad
        E[\\Delta x^2] \\leftarrow \\rho E[\\Delta x^2] + (1-\\rho) d^2

    with ``RMS[y] = sqrt(E[y^2] + eps)``. The output is ``d`` (pointing uphill, like a
    gradient); Zeiler's ``Delta x = -d`` is made by the step that follows.

    ``d`` is evaluated from the new averages, ``d = sqrt(E[dx^2]_t + rho eps) /
    sqrt(rho (E[g^2]_t + eps) + (1 - rho) g^2) g``, which is the same number up to
    rounding (derivation in the source): a donated step then keeps no copy of the old
    ``E[dx^2]`` and no params-sized temporary at all, where Optax's step keeps
    two (``python benchmarks/every_method.py``).

    Args:
      rho: decay ``rho`` in [0, 1) (Zeiler: 0.95; Optax and PyTorch: 0.9).
      eps: ``epsilon`` > 0 (Zeiler: 1e-6). It must be positive: it is the
        whole numerator on the first step.
      nu_dtype: dtype of both averages; ``None`` keeps the params' (real part).

    Raises:
      ValueError: ``rho`` outside [0, 1); ``eps`` not > 0.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_adadelta(rho=0.0, eps=1e-6)
      >>> u = tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))[0]
      >>> bool(jnp.allclose(u, 1e-3, rtol=1e-3))  # sqrt(eps) / sqrt(1 + eps)
      True
    """
    _checks.in_range("scale_by_adadelta", "rho", rho, 0.0, 1.0)
    _checks.positive("scale_by_adadelta", "eps", eps)
    _checks.dtype_or_none("scale_by_adadelta", "nu_dtype", nu_dtype)

    def init_fn(params):
        # Two buffers, not one shared: a state whose leaves alias cannot be donated.
        e_g = tree.zeros_like(params, nu_dtype, real=True)
        e_x = tree.zeros_like(params, nu_dtype, real=True)
        return ScaleByAdaDeltaState(e_g=e_g, e_x=e_x)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.e_g, updates, owner="scale_by_adadelta")
        out, e_g, e_x = tree.map_unzip(
            lambda g, a, b: _adadelta_leaf(g, a, b, rho, eps), 3, updates, state.e_g, state.e_x
        )
        return out, ScaleByAdaDeltaState(e_g, e_x)

    return GradientTransformation(init_fn, update_fn)


def adadelta(
    learning_rate: ScalarOrSchedule | None = None,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    weight_decay_mask: Mask | None = None,
) -> GradientTransformation:
    """AdaDelta (Zeiler 2012): per-coordinate steps with no learning rate needed.

    .. math::
        \\Delta x_t = -\\frac{\\mathrm{RMS}[\\Delta x]_{t-1}}{\\mathrm{RMS}[g]_t} g_t,
        \\qquad x_{t+1} = x_t + \\eta \\, \\Delta x_t

    Composition: ``chain(add_decayed_weights(weight_decay, weight_decay_mask),
    scale_by_adadelta(rho, eps), scale_by_learning_rate(eta))``, as Optax's: the
    decay block is there whatever ``weight_decay`` is (0 adds nothing), so the
    state tree is the same for a constant, a traced or an injected decay, and
    ``update`` needs the params.

    Args:
      learning_rate: ``eta``; ``None`` (default) is Zeiler's method, a rate of
        exactly 1.0 in the descent direction. (Optax's ``adadelta`` with no rate
        does not descend: it returns the ascent direction; gradtx does.)
      rho, eps: see :func:`scale_by_adadelta`.
      weight_decay: coupled L2 coefficient added to the gradient (>= 0).
      weight_decay_mask: which leaves are decayed (see
        :func:`add_decayed_weights`).

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda w: jnp.sum(w**2)
      >>> tx = gradtx.adadelta()
      >>> w = jnp.array([1.0, -2.0]); state = tx.init(w)
      >>> updates, state = tx.update(jax.grad(loss)(w), state, w)
      >>> bool(loss(gradtx.apply_updates(w, updates)) < loss(w))
      True

    References:
      Zeiler (2012), ADADELTA: an adaptive learning rate method, Alg. 1.
    """
    rate = 1.0 if learning_rate is None else learning_rate
    _checks.learning_rate("adadelta", rate)
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_adadelta(rho, eps),
        scale_by_learning_rate(rate),
    )
