"""Schedules: pure functions from the step count to a hyperparameter value.

A schedule is ``count -> value``: give it to any hyperparameter that accepts one
(``gradtx.sgd(learning_rate=gradtx.schedules.linear_decay(0.1, 10_000))``) or to
:func:`gradtx.scale_by_schedule`. The count is the 0-based number of steps
taken, an int32 array (Python ints and float counts work too).

Every schedule here

* checks its arguments when it is built: a ``ValueError`` names the argument
  and the value (a negative number of steps, ``decay_rate <= 0``, boundaries
  that do not increase, mismatched lengths);
* is pure and jit-able, and element-wise in the count, so it takes an array of
  counts or runs under ``jax.vmap``;
* computes in the session's default float (float32, float64 under
  ``jax.enable_x64``), with the integer parts (``count - transition_begin``,
  ``count >= boundary``, the cycle of a warm restart) done exactly on the
  integer count, so boundaries land on the right step at any count.

Where Optax has the schedule, the name, the arguments and their defaults are
Optax's, and so are the values except where a docstring says otherwise (Optax
quietly turns ``transition_steps <= 0`` or ``decay_rate == 0`` into a constant;
here they are errors).

The usual schedules and where they are:

* the book's linear decay to ``epsilon_tau`` (Goodfellow et al. 2016, eq. 8.14):
  :func:`linear_schedule`, and :func:`linear_decay` with ``epsilon_tau = 1%
  epsilon_0`` as the book advises;
* piecewise constant: :func:`piecewise_constant_schedule` (scales),
  :func:`piecewise_constant_values` (values);
* exponential: :func:`exponential_decay`; reciprocal ``eta_0 (1 + t/r)^-c``:
  :func:`inverse_time_decay`; also :func:`polynomial_schedule`,
  :func:`cosine_decay_schedule`, :func:`cosine_restarts_schedule` (SGDR);
* linear warmup: :func:`warmup_constant_schedule`, or before any schedule:
  :func:`warmup_schedule`; joining schedules: :func:`join_schedules`;
* performance-dependent halving: a transformation, not a schedule, since it
  reads the loss: :func:`gradtx.transforms.plateau.reduce_on_plateau`.
"""

from gradtx.base import Schedule
from gradtx.schedules.compose import (
    cosine_restarts_schedule,
    join_schedules,
    sgdr_schedule,
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
    warmup_schedule,
)
from gradtx.schedules.decay import (
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    inverse_time_decay,
    linear_decay,
    linear_schedule,
    polynomial_schedule,
)
from gradtx.schedules.piecewise import (
    cosine_onecycle_schedule,
    linear_onecycle_schedule,
    piecewise_constant_schedule,
    piecewise_constant_values,
    piecewise_interpolate_schedule,
)
from gradtx.transforms.inject import (
    InjectHyperparamsState,
    InjectStatefulHyperparamsState,
    StatefulSchedule,
    WrappedSchedule,
    inject_hyperparams,
    inject_stateful_hyperparams,
)

__all__ = [
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "Schedule",
    "StatefulSchedule",
    "WrappedSchedule",
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "cosine_restarts_schedule",
    "exponential_decay",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "inverse_time_decay",
    "join_schedules",
    "linear_decay",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_constant_values",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "warmup_schedule",
]
