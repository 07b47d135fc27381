"""Schedule-Free learning (Defazio et al. 2024, The Road Less Scheduled, Alg. 1).

Three sequences replace momentum and the learning-rate decay: ``z``, moved by
the base optimizer's step; ``x``, a weighted running average of the ``z``'s (the
point to evaluate); and ``y``, the interpolation between them at which the
gradient is taken:

.. math::
    y_t = (1-\\beta) z_t + \\beta x_t, \\quad
    z_{t+1} = z_t + u_t(\\nabla f(y_t)), \\quad
    x_{t+1} = (1-c_{t+1}) x_t + c_{t+1} z_{t+1}, \\quad
    c_{t+1} = \\frac{\\bar\\gamma_t^{\\,r}}{\\sum_{i \\le t} \\bar\\gamma_i^{\\,r}}

Symbols: ``beta`` = ``b1``; ``u_t`` the base optimizer's update (``-gamma_t g``
for SGD); ``gamma_t`` = ``learning_rate`` at step ``t``; ``bar gamma_t`` the
largest learning rate so far; ``r`` = ``weight_lr_power`` (2 in the paper).

**The params are y.** As in Optax and the authors' ``schedulefree`` package, the
user's params are ``y`` (the gradient point); the state keeps ``z`` and the
update returns ``y_{t+1} - y_t``; ``x`` is recovered as ``(y - (1-beta) z) /
beta`` by :func:`schedule_free_eval_params` (the package's ``optimizer.eval()``).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, _tree_utils, tree
from gradtx.base import (
    Array,
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
    ScalarOrSchedule,
)
from gradtx.combine import accepts_extra_args, chain
from gradtx.optimizers.averaging import find_state
from gradtx.optimizers.rmsprop import scale_by_rms
from gradtx.optimizers.sgd import sgd
from gradtx.schedules import warmup_constant_schedule
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate

WarmupForm = Literal["paper", "optax"]


class ScheduleFreeState(NamedTuple):
    """State of :func:`schedule_free` (Optax's fields, in Optax's order)."""

    b1: Array  # real scalar: beta, kept for schedule_free_eval_params.
    weight_sum: Array  # real scalar: sum_{i<=t} bar gamma_i^r.
    step_count: Array  # int32 scalar: t + 1, the 1-based number of the next step.
    max_lr: Array  # real scalar: bar gamma_t, the largest learning rate so far.
    base_optimizer_state: OptState  # the base optimizer's state.
    z: Params  # z_t, like the params, in state_dtype (default: theirs, >= float32).


def _step_leaf(y, z, u, c, b1):
    r"""One leaf of Alg. 1: the update ``y_{t+1} - y_t`` and ``z_{t+1}``.

    With ``x_t = (y_t - (1-beta) z_t) / beta``, ``z_{t+1} = z_t + u`` and
    ``x_{t+1} = x_t + c (z_{t+1} - x_t)``, the interpolation moves by

    .. math::
        y_{t+1} - y_t = c\,(z_{t+1} - y_t) + (1 - \beta)(1 - c)\, u

    which is computed as written: no ``x`` (its division by ``beta`` and a
    difference of two params-sized values would cost a few ulps of the
    params), and only the new ``z`` (as stored), so that a step donating the
    params and the state updates both in place. Returns the update in ``u``'s
    dtype and ``z_{t+1}`` in ``z``'s.
    """
    dtype = tree.compute_dtype(jnp.result_type(y, z, u))
    u_c = tree.as_dtype(u, dtype)
    new_z = tree.as_dtype(tree.as_dtype(z, dtype) + u_c, z.dtype)
    out = c * (tree.as_dtype(new_z, dtype) - tree.as_dtype(y, dtype)) + (1 - b1) * (1 - c) * u_c
    return tree.as_dtype(out, u.dtype), new_z


def _z_dtype(param: Any) -> Any:
    """``z``'s default dtype: the param's, at least float32 (complex stays complex)."""
    return tree.compute_dtype(jnp.asarray(param).dtype)


def _scalar_dtype(params: Params) -> Any:
    """The averaging scalars' dtype: the params' lowest real dtype, at least float32."""
    lowest = _tree_utils.dtype(params, "lowest")
    return tree.real_dtype(tree.compute_dtype(lowest))


def schedule_free(
    base_optimizer: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    weight_lr_power: float = 2.0,
    state_dtype: Any | None = None,
) -> GradientTransformationExtraArgs:
    """Schedule-Free wrapper: replaces the base optimizer's momentum and decay.

    With ``u_t`` the base optimizer's update at ``y_t``:

    .. math::
        x_t = \\frac{y_t - (1-\\beta) z_t}{\\beta}, \\quad
        z_{t+1} = z_t + u_t, \\quad
        x_{t+1} = (1-c_{t+1}) x_t + c_{t+1} z_{t+1}, \\quad
        \\text{out} = \\beta x_{t+1} + (1-\\beta) z_{t+1} - y_t

    with ``c_{t+1} = bar gamma_t^r / sum_{i<=t} bar gamma_i^r``, ``bar gamma_t
    = max_{i<=t} learning_rate(i)`` (``i`` 1-based, as ``state.step_count``)
    and ``r`` = ``weight_lr_power``. The base optimizer must have no momentum of
    its own (``sgd`` without momentum, Adam with ``b1 = 0``) and should use the
    same learning rate (warmup included, no decay). Evaluate at
    :func:`schedule_free_eval_params`.

    The paper takes ``c_{t+1}`` from ``gamma_t``; the authors' package, Optax
    and this use the running maximum ``bar gamma_t``, which is the same for a
    non-decreasing schedule (a warmup then a constant).

    Low-precision params: ``z`` accumulates every step, so by default it is kept
    in at least float32 (bfloat16 or float16 params get a float32 ``z``), and so
    are the scalars ``weight_sum`` and ``max_lr``; Optax keeps ``z`` in the
    params' dtype (pass ``state_dtype=jnp.bfloat16`` for that) and the scalars
    in the params' lowest dtype. For float32 and float64 params the two agree.

    Args:
      base_optimizer: the transformation whose updates move ``z`` (gradtx or
        Optax), a complete step without momentum.
      learning_rate: ``gamma``, a number or a schedule of the 1-based step.
      b1: ``beta`` in (0, 1]; ``x`` is recovered by dividing by it.
      weight_lr_power: ``r``, the power of the learning rate in the weights.
      state_dtype: dtype of ``z``; ``None``: the params', at least float32.

    Returns:
      A transformation whose ``update`` needs the params (``y_t``) and whose
      state is :class:`ScheduleFreeState`.

    Raises:
      ValueError: ``b1`` outside (0, 1], a non-finite ``learning_rate`` or
        ``weight_lr_power``, a non-float ``state_dtype``, or ``update`` called
        without the params.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.schedule_free(gradtx.sgd(0.5), 0.5)
      >>> y = jnp.array([1.0]); state = tx.init(y)
      >>> tx.update(jnp.array([2.0]), state, y)[0]  # the first step is SGD's
      Array([-1.], dtype=float32)

    References:
      Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky (2024), The Road Less
      Scheduled, NeurIPS, Alg. 1.
    """
    owner = "schedule_free"
    _checks.learning_rate(owner, learning_rate)
    _checks.positive(owner, "b1", b1)
    _checks.in_range(owner, "b1", b1, 0.0, 1.0, closed_high=True)
    _checks.finite(owner, "weight_lr_power", weight_lr_power)
    _checks.dtype_or_none(owner, "state_dtype", state_dtype)
    base_update = accepts_extra_args(base_optimizer.update)

    def init_fn(params):
        dtype = _scalar_dtype(params)
        z = jax.tree.map(
            lambda p: jnp.array(p, dtype=state_dtype or _z_dtype(p), copy=True), params
        )
        return ScheduleFreeState(
            b1=jnp.asarray(b1, dtype),
            weight_sum=jnp.zeros([], dtype),
            step_count=jnp.ones([], jnp.int32),
            max_lr=jnp.zeros([], dtype),
            base_optimizer_state=base_optimizer.init(params),
            z=z,
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(f"{owner}: update needs the params (y, the gradient point).")
        tree.check_structure(state.z, params, owner=owner, what="params")
        lr = learning_rate(state.step_count) if callable(learning_rate) else learning_rate
        max_lr = jnp.maximum(state.max_lr, jnp.asarray(lr, state.max_lr.dtype))
        weight = max_lr**weight_lr_power
        weight_sum = state.weight_sum + weight
        c = jnp.where(weight_sum == 0, jnp.zeros_like(weight), weight / weight_sum)
        base_updates, base_state = base_update(
            updates, state.base_optimizer_state, params, **extra_args
        )
        out, z = tree.map_unzip(
            lambda y, z_i, u: _step_leaf(y, z_i, u, c, b1), 2, params, state.z, base_updates
        )
        new_state = ScheduleFreeState(
            b1=state.b1,
            weight_sum=weight_sum,
            step_count=tree.safe_increment(state.step_count),
            max_lr=max_lr,
            base_optimizer_state=base_state,
            z=z,
        )
        return out, new_state

    return GradientTransformationExtraArgs(init_fn, update_fn)


def schedule_free_eval_params(state: OptState, params: Params) -> Params:
    """The evaluation point ``x_t = (y_t - (1-beta) z_t) / beta`` of :func:`schedule_free`.

    The same as the authors' ``optimizer.eval()``. ``state`` is a
    :class:`ScheduleFreeState` or any state holding exactly one (a chain's).

    Args:
      state: the optimizer state after the last update.
      params: ``y_t``, the params the training loop holds.

    Returns:
      ``x_t``, shaped like the params, in their dtypes.

    Raises:
      ValueError: ``state`` holds no :class:`ScheduleFreeState`, or several.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.schedule_free_sgd(1.0)
      >>> y = jnp.array([1.0]); state = tx.init(y)
      >>> gradtx.schedule_free_eval_params(state, y)  # x_0 = y_0 = z_0
      Array([1.], dtype=float32)
    """
    found = find_state(state, ScheduleFreeState, "schedule_free_eval_params")
    b1 = found.b1

    def leaf(y, z):
        dtype = tree.compute_dtype(jnp.result_type(y, z))
        x = (tree.as_dtype(y, dtype) - (1 - b1) * tree.as_dtype(z, dtype)) / b1
        return tree.as_dtype(x, jnp.asarray(y).dtype)

    return jax.tree.map(leaf, params, found.z)


def _warmed_up(
    owner: str, learning_rate: Any, warmup_steps: int | None, warmup_form: WarmupForm
) -> tuple[Any, Any]:
    """The learning rates of the base step and of the averaging weights.

    The wrapper reads its schedule at the 1-based step ``t``; the base
    optimizer's own counter is 0-based. ``"paper"`` shifts the base optimizer's
    read by one so that both see ``gamma_t``; ``"optax"`` gives both the same
    schedule, so the base step sees ``gamma_{t-1}`` (0 on the first step).
    """
    if warmup_form not in ("paper", "optax"):
        _checks._fail(owner, "warmup_form", warmup_form, "'paper' or 'optax'")
    if warmup_steps is None:
        return learning_rate, learning_rate
    _checks.positive_int(owner, "warmup_steps", warmup_steps)
    schedule = warmup_constant_schedule(0.0, learning_rate, warmup_steps)
    if warmup_form == "optax":
        return schedule, schedule
    return (lambda count: schedule(count + 1)), schedule


def schedule_free_sgd(
    learning_rate: float = 1.0,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    weight_decay: float | None = None,
    weight_lr_power: float = 2.0,
    state_dtype: Any | None = None,
    *,
    warmup_form: WarmupForm = "paper",
) -> GradientTransformationExtraArgs:
    """Schedule-Free SGD (Defazio et al. 2024, Alg. 1 with an SGD step).

    .. math::
        z_{t+1} = z_t - \\gamma_t (\\nabla f(y_t) + \\lambda y_t)

    Composition: :func:`schedule_free` around ``sgd(gamma)``, preceded by
    ``add_decayed_weights(lambda)`` when ``weight_decay`` is given; ``gamma``
    warms up linearly from 0 over ``warmup_steps`` steps when given.

    Args:
      learning_rate: ``gamma``, the peak learning rate.
      warmup_steps: length of the linear warmup, an integer >= 1, or ``None``.
      b1, weight_lr_power, state_dtype: see :func:`schedule_free`.
      weight_decay: ``lambda`` >= 0, added to the gradient at ``y`` (so scaled
        by the learning rate, as Optax and the authors' package), or ``None``.
      warmup_form: which warmup value the SGD step reads at step ``t``.
        ``"paper"`` (default): ``gamma_t = lr * min(1, t / warmup_steps)`` for
        both the step and the weight ``c_{t+1}``, as Alg. 1 and the authors'
        ``schedulefree.SGDScheduleFree`` (PyTorch). ``"optax"``: Optax 0.2.8's
        ``schedule_free_sgd``, whose SGD step reads the schedule one step
        behind the weight (``gamma_{t-1}``, 0 on the first step). The default
        departs from Optax because Alg. 1 weighs each ``z_{t+1}`` by the rate
        that made it; without warmup the two agree.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.schedule_free_sgd(0.1, b1=0.5)
      >>> y = jnp.array([1.0]); state = tx.init(y)
      >>> round(float(tx.update(jnp.array([1.0]), state, y)[0][0]), 6)  # SGD's first step
      -0.1

    References:
      Defazio et al. (2024), The Road Less Scheduled, NeurIPS, Alg. 1.
    """
    owner = "schedule_free_sgd"
    _checks.finite(owner, "learning_rate", learning_rate)
    _checks.non_negative(owner, "weight_decay", weight_decay, optional=True)
    step_lr, weight_lr = _warmed_up(owner, learning_rate, warmup_steps, warmup_form)
    base = sgd(step_lr)
    if weight_decay is not None:
        base = chain(add_decayed_weights(weight_decay), base)
    return schedule_free(base, weight_lr, b1, weight_lr_power, state_dtype)


def schedule_free_adamw(
    learning_rate: float = 0.0025,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
    state_dtype: Any | None = None,
    *,
    warmup_form: WarmupForm = "paper",
) -> GradientTransformationExtraArgs:
    """Schedule-Free AdamW (Defazio et al. 2024, Alg. 1).

    .. math::
        v \\leftarrow \\beta_2 v + (1-\\beta_2) |g|^2, \\quad
        z_{t+1} = z_t - \\gamma_t \\left( \\frac{g}{\\sqrt{v / (1-\\beta_2^t)} + \\epsilon}
            + \\lambda y_t \\right)

    Composition: :func:`schedule_free` around ``chain(scale_by_rms(b2, eps,
    eps_in_sqrt=False, bias_correction=True), add_decayed_weights(lambda),
    scale_by_learning_rate(gamma))``: Adam with ``beta_1 = 0``, its first
    moment replaced by the averaging. The paper's Alg. 1 puts the bias
    correction into the rate, ``gamma_t = gamma sqrt(1-beta_2^t)`` (so it enters
    the weights ``c`` too; the authors' ``AdamWScheduleFreePaper``); Optax and
    the authors' ``AdamWScheduleFree`` divide ``v`` by ``1-beta_2^t`` instead
    and leave the weights alone, as here.

    Args:
      learning_rate: ``gamma``, the peak learning rate.
      warmup_steps: length of the linear warmup, an integer >= 1, or ``None``.
      b1, weight_lr_power, state_dtype: see :func:`schedule_free`.
      b2: ``beta_2`` in [0, 1).
      eps: ``epsilon`` >= 0, added outside the root.
      weight_decay: ``lambda`` >= 0, decoupled: added to the normalised
        gradient, times the learning rate.
      warmup_form: see :func:`schedule_free_sgd` (``"paper"``: the authors'
        ``schedulefree.AdamWScheduleFree``; ``"optax"``: Optax 0.2.8's).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.schedule_free_adamw(0.1, eps=0.0)
      >>> y = jnp.array([1.0]); state = tx.init(y)
      >>> round(float(tx.update(jnp.array([3.0]), state, y)[0][0]), 5)  # -gamma sign(g)
      -0.1

    References:
      Defazio et al. (2024), The Road Less Scheduled, NeurIPS, Alg. 1.
    """
    owner = "schedule_free_adamw"
    _checks.finite(owner, "learning_rate", learning_rate)
    step_lr, weight_lr = _warmed_up(owner, learning_rate, warmup_steps, warmup_form)
    base = chain(
        scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(step_lr),
    )
    return schedule_free(base, weight_lr, b1, weight_lr_power, state_dtype)
