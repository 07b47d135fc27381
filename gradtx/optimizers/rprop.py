"""Rprop: per-weight step sizes adapted from the sign of the derivative alone.

Riedmiller & Braun (1993) give every weight ``w_ij`` its own step size
``Delta_ij`` ("update-value"), grown by ``eta+`` while ``dE/dw_ij`` keeps its
sign and shrunk by ``eta-`` when it flips, kept in ``[Delta_min, Delta_max]``;
the weight moves by ``-sign(dE/dw_ij) * Delta_ij``. The size of the derivative is
never used. Igel & Huesken (2000) name and define four variants, all offered
here through ``variant``:

==============  ==============================================================
``variant``     on a sign flip of ``dE/dw_ij`` (the step size shrinks in all four)
==============  ==============================================================
``"rprop+"``    the original (Riedmiller & Braun 1993): *weight backtracking*,
                the previous step of that weight is undone
                (``Delta w = -Delta w_prev``) and the stored derivative is set
                to 0, so the next step neither grows nor shrinks.
``"rprop-"``    no backtracking: the weight steps by ``-sign(g) * Delta`` at once
                and the derivative is stored as it is.
``"irprop-"``   no step this time (the stored derivative is set to 0, and so is
                its sign): the next step uses the shrunk size without shrinking
                it again. **The default.**
``"irprop+"``   backtracking only if the loss went up, ``E(t) > E(t-1)``;
                otherwise no step, as ``irprop-``. Needs the loss:
                ``tx.update(grads, state, params, value=loss)``.
==============  ==============================================================

**Why iRprop- is the default.** It is what PyTorch's ``torch.optim.Rprop``
computes (its clamp also applies on the steps where the size is unchanged,
which only matters for a ``learning_rate`` outside ``[min_step_size,
max_step_size]``, refused here), and what Optax's ``rprop`` computes one step
late (below). Igel & Huesken (2000, 2003) report their improved variants
learning faster than the originals, and of the two iRprop- needs neither the
loss nor the previous update, so it fits any training loop.

**The first step moves; Optax's does not.** Every variant here steps by
``-learning_rate * sign(g)`` on the first call, as the pseudo-code and PyTorch
do. Optax's ``scale_by_rprop`` returns the update it computed on the *previous*
call (zero on the first), withheld when the new gradient disagrees with it:
given the same gradients, Optax's output at step t is gradtx's iRprop- output
at step t-1, or 0 where ``g_t`` has the opposite sign. Its step sizes are the
same as ours; its steps arrive late, and on a real loss (where the gradient
depends on the weights) its trajectory is not iRprop-'s.

**Sign convention.** Like every ``scale_by_*`` block (and Optax's
``scale_by_rprop``), :func:`scale_by_rprop` returns a vector pointing *uphill*,
``sign(g) * Delta``; :func:`rprop` negates it. The step sizes are the learning
rate: there is no other rate to multiply by. Backtracking reverts the block's own
previous output, so put nothing that rescales between it and the parameters if
the revert must be exact.

**Complex parameters are refused** (at ``init``). The sign of a complex number
is not defined; PyTorch treats real and imaginary parts as two weights, but on a
JAX gradient, which for a real loss is ``dL/dx - i dL/dy`` (the conjugate of the
steepest-ascent direction), doing that would push every imaginary part uphill.
Keep real and imaginary parts as two real leaves instead.

Rprop is a full-batch method: with mini-batch gradients the signs are noisy and
the step sizes shrink toward ``min_step_size``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, Updates
from gradtx.combine import chain
from gradtx.transforms.scale import scale

VARIANTS = ("irprop-", "rprop-", "rprop+", "irprop+")
"""The names accepted by ``variant``, after Igel & Huesken (2000)."""


class ScaleByRpropState(NamedTuple):
    """State of :func:`scale_by_rprop`."""

    step_sizes: Updates  # Delta_ij (Igel & Huesken), real, in step_size_dtype or the params'.
    prev_sign: Updates  # int8 sign of dE/dw_ij(t-1) as the variant stores it (0 after a flip).
    prev_value: Array  # E(t-1), the last loss (iRprop+ only; else, and at first, the max float).


# ---------------------------------------------------------------------- validation


def _check_args(owner, learning_rate, eta_minus, eta_plus, min_step_size, max_step_size, variant):
    if variant not in VARIANTS:
        raise ValueError(
            f"{owner}: variant must be one of {', '.join(repr(v) for v in VARIANTS)}, "
            f"got {variant!r}."
        )
    if callable(learning_rate):
        raise ValueError(
            f"{owner}: learning_rate is Rprop's initial step size Delta_0, a number; got a "
            "schedule (Rprop adapts its step sizes itself)."
        )
    _checks.positive(owner, "learning_rate", learning_rate)
    _checks.non_negative(owner, "min_step_size", min_step_size)
    _checks.positive(owner, "max_step_size", max_step_size)
    minus = _checks.scalar(owner, "eta_minus", eta_minus)
    plus = _checks.scalar(owner, "eta_plus", eta_plus)
    if minus is not None and not (_holds(minus > 0) and _holds(minus < 1)):
        _checks._fail(owner, "eta_minus", eta_minus, "in (0, 1)")
    if plus is not None and not (_holds(plus > 1) and _holds(plus < float("inf"))):
        _checks._fail(owner, "eta_plus", eta_plus, "a finite number > 1")
    low, high = _checks._concrete(min_step_size), _checks._concrete(max_step_size)
    if low is not None and high is not None and not _holds(low <= high):
        _checks._fail(owner, "min_step_size", min_step_size, f"<= max_step_size = {max_step_size}")
    rate = _checks._concrete(learning_rate)
    if rate is not None and low is not None and not _holds(rate >= low):
        _checks._fail(owner, "learning_rate", learning_rate, f">= min_step_size = {min_step_size}")
    if rate is not None and high is not None and not _holds(rate <= high):
        _checks._fail(owner, "learning_rate", learning_rate, f"<= max_step_size = {max_step_size}")


def _holds(condition) -> bool:
    """Whether a comparison of concrete (numpy) hyperparameters holds everywhere."""
    return bool(condition.all())


def _refuse_complex(owner: str, params: Any) -> None:
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    complex_paths = [jax.tree_util.keystr(p) for p, x in leaves if jnp.iscomplexobj(x)]
    if complex_paths:
        raise ValueError(
            f"{owner}: Rprop steps by the sign of each partial derivative, which a complex "
            f"number does not have (complex leaves: {tree.name_paths(complex_paths)}); keep "
            "the real and imaginary parts as two real leaves."
        )


# ---------------------------------------------------------------------- the step


def _sign_int8(g: Array) -> Array:
    """``sign(g)`` as int8; NaN counts as 0, so it cannot reach the stored signs."""
    return (g > 0).astype(jnp.int8) - (g < 0).astype(jnp.int8)


def _rprop_leaf(g, step_size, prev_sign, backtrack, variant, hyper):
    """One leaf of one step: the output (uphill), the new step size, the stored sign.

    ``backtrack`` is True (Rprop+), False (Rprop-, iRprop-) or, for iRprop+, the
    scalar ``E(t) > E(t-1)``.
    """
    if jnp.iscomplexobj(g):
        raise ValueError("scale_by_rprop: complex gradients have no sign (see the module doc).")
    eta_minus, eta_plus, min_step_size, max_step_size = hyper
    # The hyperparameters take part: a float64 array among them computes in float64.
    c = tree.compute_dtype(jnp.result_type(g.dtype, step_size.dtype, *hyper))
    sign = _sign_int8(g)
    agreement = sign * prev_sign  # the sign of dE/dw(t-1) * dE/dw(t), without underflow
    old = tree.as_dtype(step_size, c)
    flipped = agreement < 0
    new = jnp.where(
        agreement > 0,
        jnp.minimum(old * eta_plus, max_step_size),
        jnp.where(flipped, jnp.maximum(old * eta_minus, min_step_size), old),
    ).astype(c)
    # jnp.sign keeps a NaN gradient visible in the output (the stored state ignores it).
    step = jnp.sign(tree.as_dtype(g, c)) * new
    if variant == "rprop-":
        return tree.as_dtype(step, g.dtype), tree.as_dtype(new, step_size.dtype), sign
    # The previous output was prev_sign * old; undoing it outputs its negation.
    if backtrack is False:  # iRprop-: no step on a flip
        undo = jnp.zeros_like(step)
    else:
        undo = -prev_sign.astype(c) * old
        if backtrack is not True:  # iRprop+: undo only if the loss went up
            undo = jnp.where(backtrack, undo, 0).astype(c)
    out = jnp.where(flipped, undo, step)
    stored = jnp.where(flipped, 0, sign).astype(sign.dtype)
    return tree.as_dtype(out, g.dtype), tree.as_dtype(new, step_size.dtype), stored


def _loss_went_up(owner: str, extra_args: dict, prev_value: Array) -> tuple[Array, Array]:
    """iRprop+'s test ``E(t) > E(t-1)``, and ``E(t)`` to keep."""
    value = extra_args.get("value")
    if value is None:
        raise ValueError(
            f"{owner}: variant='irprop+' backtracks only when the loss went up, so update needs "
            "the loss at the current params as the extra argument `value`: "
            "tx.update(grads, state, params, value=loss). (Inside optax.chain, wrap the "
            "block in optax.GradientTransformationExtraArgs so that it receives `value`.)"
        )
    value = jnp.asarray(value)
    if value.ndim != 0 or jnp.iscomplexobj(value):
        raise ValueError(
            f"{owner}: value must be the loss, a real scalar; got shape {value.shape} "
            f"and dtype {value.dtype}."
        )
    value = value.astype(prev_value.dtype)
    return value > prev_value, value


def _value_dtype(params: Any) -> jnp.dtype:
    """At least float32, and float64 when a leaf is (so iRprop+ compares losses exactly)."""
    dtypes = [
        tree.real_dtype(tree.compute_dtype(getattr(x, "dtype", None) or jnp.result_type(x)))
        for x in jax.tree.leaves(params)
    ]
    return jnp.result_type(jnp.float32, *dtypes)


# ---------------------------------------------------------------------- the block


def scale_by_rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
    *,
    variant: str = "irprop-",
    step_size_dtype: Any | None = None,
) -> GradientTransformation:
    """Rprop's per-weight step sizes (Riedmiller & Braun 1993; Igel & Huesken 2000).

    For every weight, with ``g = dE/dw(t)`` and ``g' = dE/dw(t-1)`` as stored:

    .. math::
        \\Delta(t) = \\begin{cases}
            \\min(\\eta^+ \\Delta(t-1), \\Delta_{max}) & g' g > 0 \\\\
            \\max(\\eta^- \\Delta(t-1), \\Delta_{min}) & g' g < 0 \\\\
            \\Delta(t-1) & g' g = 0
        \\end{cases}, \\qquad
        \\text{out} = \\operatorname{sign}(g)\\, \\Delta(t)

    and on a sign flip (``g' g < 0``) the variant decides (module docstring):
    ``"rprop-"`` keeps the output above; ``"irprop-"`` outputs 0; ``"rprop+"``
    outputs the negation of its previous output (weight backtracking); ``"irprop+"``
    does that if ``E(t) > E(t-1)`` and outputs 0 otherwise. All but ``"rprop-"``
    then store ``g = 0``. The output points uphill: :func:`rprop` negates it.

    Symbols (Igel & Huesken) to arguments: ``Delta_0`` = ``learning_rate``,
    ``eta-`` = ``eta_minus``, ``eta+`` = ``eta_plus``, ``Delta_min`` =
    ``min_step_size``, ``Delta_max`` = ``max_step_size``. Names and defaults are
    Optax's (and PyTorch's; Riedmiller & Braun use the same bounds).

    Args:
      learning_rate: the initial step size ``Delta_0`` > 0, within
        ``[min_step_size, max_step_size]`` (a number: the step sizes adapt
        themselves, so a schedule has no meaning here).
      eta_minus: the shrink factor ``eta-`` in (0, 1) (default 0.5).
      eta_plus: the growth factor ``eta+`` > 1 (default 1.2).
      min_step_size: ``Delta_min`` >= 0 (default 1e-6).
      max_step_size: ``Delta_max`` >= ``min_step_size`` (default 50).
      variant: ``"irprop-"`` (default: PyTorch's), ``"rprop-"``, ``"rprop+"`` or
        ``"irprop+"`` (needs ``value=loss`` on every update).
      step_size_dtype: dtype of the step sizes ``Delta``; ``None`` follows the
        params' (e.g. ``jnp.float32`` keeps them exact for bfloat16 params).

    Returns:
      A transformation with :class:`ScaleByRpropState`. Its ``update`` takes the
      extra argument ``value`` (the loss at ``params``) with ``variant="irprop+"``
      and ignores it otherwise.

    Raises:
      ValueError: at construction, an unknown ``variant``; ``eta_minus`` outside
        (0, 1); ``eta_plus`` <= 1; a negative ``min_step_size``; ``min_step_size
        > max_step_size``; ``learning_rate`` not in ``[min_step_size,
        max_step_size]`` or a schedule. At ``init``, complex leaves. At ``update``
        with ``"irprop+"``, a missing or non-scalar ``value``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_rprop(0.1)
      >>> state = tx.init(jnp.zeros(3))
      >>> out, state = tx.update(jnp.array([2.0, -0.5, 0.0]), state)
      >>> out  # Delta_0 * sign(g): the first step moves
      Array([ 0.1, -0.1,  0. ], dtype=float32)
      >>> out, state = tx.update(jnp.array([1.0, 0.5, 3.0]), state)
      >>> out  # same sign: grown by eta+; flipped: shrunk, no step; was 0: Delta_0
      Array([0.12, 0.  , 0.1 ], dtype=float32)
      >>> state.step_sizes
      Array([0.12, 0.05, 0.1 ], dtype=float32)

    References:
      Riedmiller & Braun (1993), A direct adaptive method for faster
      backpropagation learning: the RPROP algorithm; Igel & Huesken (2000),
      Improving the Rprop learning algorithm (Rprop+, Rprop-, iRprop+, iRprop-).
    """
    owner = "scale_by_rprop"
    _check_args(owner, learning_rate, eta_minus, eta_plus, min_step_size, max_step_size, variant)
    _checks.dtype_or_none(owner, "step_size_dtype", step_size_dtype)
    if step_size_dtype is not None and jnp.issubdtype(step_size_dtype, jnp.complexfloating):
        _checks._fail(owner, "step_size_dtype", step_size_dtype, "None or a real floating dtype")
    hyper = (eta_minus, eta_plus, min_step_size, max_step_size)

    def init_fn(params):
        _refuse_complex(owner, params)
        value_dtype = _value_dtype(params)
        return ScaleByRpropState(
            step_sizes=tree.full_like(params, learning_rate, step_size_dtype),
            prev_sign=jax.tree.map(lambda p: jnp.zeros_like(p, jnp.int8), params),
            # "No loss yet" as the largest finite number rather than +inf: a state
            # stays finite (apply_if_finite and the contract tests check it).
            prev_value=jnp.full([], jnp.finfo(value_dtype).max, value_dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params
        tree.check_structure(state.step_sizes, updates, owner=owner)
        prev_value = state.prev_value
        backtrack = variant == "rprop+"
        if variant == "irprop+":
            backtrack, prev_value = _loss_went_up(owner, extra_args, state.prev_value)
        out, step_sizes, prev_sign = tree.map_unzip(
            lambda g, s, p: _rprop_leaf(g, s, p, backtrack, variant, hyper),
            3,
            updates,
            state.step_sizes,
            state.prev_sign,
        )
        return out, ScaleByRpropState(step_sizes, prev_sign, prev_value)

    return GradientTransformation(init_fn, update_fn)


def rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
    *,
    variant: str = "irprop-",
    step_size_dtype: Any | None = None,
) -> GradientTransformation:
    """Rprop (Riedmiller & Braun 1993) in the four variants of Igel & Huesken (2000).

    .. math::
        w_{ij} \\leftarrow w_{ij} - \\operatorname{sign}\\!\\left(
            \\frac{\\partial E}{\\partial w_{ij}}\\right) \\Delta_{ij}

    with the step sizes ``Delta_ij`` and the sign-flip rule of ``variant`` from
    :func:`scale_by_rprop`. Composition: ``chain(scale_by_rprop(...),
    scale(-1.0))``: the step sizes are the learning rate, the chain only turns
    the block's uphill output into a descent step.

    Unlike Optax's ``rprop``, the first update already moves the weights by
    ``-learning_rate * sign(g)`` and no step arrives late (module docstring).

    Args:
      learning_rate: the initial step size ``Delta_0`` (see :func:`scale_by_rprop`).
      eta_minus, eta_plus, min_step_size, max_step_size, variant, step_size_dtype:
        see :func:`scale_by_rprop`.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda w: jnp.sum((w - jnp.array([1.0, -3.0])) ** 2)
      >>> tx = gradtx.rprop(0.1, variant="irprop+")
      >>> w = jnp.zeros(2); state = tx.init(w)
      >>> for _ in range(60):
      ...     value, grads = jax.value_and_grad(loss)(w)
      ...     updates, state = tx.update(grads, state, w, value=value)
      ...     w = gradtx.apply_updates(w, updates)
      >>> bool(loss(w) < 1e-6)
      True

    References:
      Riedmiller & Braun (1993); Igel & Huesken (2000), Improving the Rprop
      learning algorithm; Igel & Huesken (2003), Empirical evaluation of the
      improved Rprop learning algorithms.
    """
    return chain(
        scale_by_rprop(
            learning_rate,
            eta_minus,
            eta_plus,
            min_step_size,
            max_step_size,
            variant=variant,
            step_size_dtype=step_size_dtype,
        ),
        scale(-1.0),
    )
