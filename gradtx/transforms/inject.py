"""Hyperparameters as state: read, log, overwrite, schedule and vmap them.

``inject_hyperparams(factory)(**kwargs)`` builds the same optimizer as
``factory(**kwargs)``, except that its numeric hyperparameters live in the state
(``state.hyperparams["learning_rate"]``) instead of in the closure. The inner
optimizer is rebuilt from those values on every ``update``, so a value the user
writes into the state is the one the next step uses, a schedule is evaluated at
the step count and its value stored, and ``jax.vmap`` over states whose
hyperparameters differ trains a batch of settings in one compiled program.

**Which arguments are injected.** The rule is decided once, at construction:

* a real floating-point value (a Python ``float``, a numpy float, a float
  ``numpy``/JAX array or tracer) is *injected*: stored in the state;
* a callable is a *schedule* ``count -> value``: evaluated at the step count on
  every update, and its value stored (and logged) like an injected number;
  writing a scheduled entry has no effect, the schedule overwrites it;
* everything else is *static*, passed to the factory unchanged: ``None``,
  booleans (``nesterov``), integers (in gradtx integer arguments are counts,
  such as sync periods and memory sizes, that shape the computation: write
  ``1.0``, not ``1``, to inject a rate of one), strings, dtypes (``mu_dtype``;
  a dtype class is callable but is never a schedule), pytrees (a mask tree),
  transformations, and a callable passed for a parameter named ``mask`` or
  ending in ``_mask`` (a mask function of the params, never a schedule);
* ``static_args`` names parameters to keep static whatever their value (Optax's
  rule, for other callables that are not schedules);
* a float the factory cannot take as a traced array stays static too, found by
  tracing the factory once at construction: a Python ``if`` on the value, or a
  value that changes which blocks the optimizer is made of (``adadelta``'s
  ``weight_decay=0.0`` drops the decay block, so it is not injected; ``0.1``
  is). A schedule that the factory cannot trace raises ``ValueError``.

**Dtype.** Injected values are stored in ``hyperparam_dtype``, by default the
widest floating dtype of the params, and never narrower than float32: in
bfloat16, ``b2 = 0.999`` rounds to ``1.0`` and Adam's bias correction
``1 - b2**t`` divides by zero (Optax's ``inject_hyperparams`` stores them in the
params' dtype and returns NaN for bfloat16 params).

**Same numbers as the plain optimizer.** With float32 or float64 params the
trajectory is the plain ``factory(**kwargs)``'s, up to float rounding of
expressions that Python evaluates in double precision on a float but the
injected optimizer evaluates in the stored dtype (``1 - b1`` for a float32
``b1``; identical in float64). For bfloat16/float16 leaves the injected value
enters the arithmetic as float32 where the plain Python float would first be
rounded to the leaf's dtype (``u * lr`` in :func:`gradtx.scale`), so the
injected optimizer rounds once where the plain one rounds twice.

**Validation.** The factory is called once at construction with the concrete
values (a schedule with its value at step 0), so a bad hyperparameter fails
there with gradtx's usual ``ValueError``. Inside ``update`` the factory gets
arrays: under ``jit``/``vmap`` they are tracers and the checks skip them; run
eagerly, a value the user wrote into the state is checked when the inner
optimizer is rebuilt.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree
from gradtx.base import (
    Array,
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
)
from gradtx.combine import accepts_extra_args, accepts_named_kwargs


class InjectHyperparamsState(NamedTuple):
    """State of a transformation built by :func:`inject_hyperparams`."""

    count: Array  # int32 scalar: updates so far, the step fed to the schedules.
    hyperparams: dict[str, Array]  # Injected values; scheduled ones hold the last value used.
    inner_state: OptState  # The inner optimizer's state.


def _is_mask_name(name: str) -> bool:
    return name == "mask" or name.endswith("_mask")


def _is_float_value(value: Any) -> bool:
    """A real floating-point number or array (tracers included): an injectable value."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, float):  # Python float and np.float64
        return True
    dtype = getattr(value, "dtype", None)
    if dtype is None or not isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return False
    return bool(jnp.issubdtype(dtype, jnp.floating))


def _is_schedule(name: str, value: Any) -> bool:
    if not callable(value) or _is_mask_name(name):
        return False
    # A dtype class such as ``jnp.float32`` is callable but names a dtype.
    return not isinstance(value, (type, np.dtype))


def _storage_dtype(hyperparam_dtype: Any | None, like: Any) -> jnp.dtype:
    """``hyperparam_dtype``, or the widest real float dtype of ``like``, >= float32."""
    if hyperparam_dtype is not None:
        return jnp.dtype(hyperparam_dtype)
    dtype = jnp.dtype(jnp.float32)
    for leaf in jax.tree.leaves(like):
        leaf_dtype = jnp.result_type(leaf)
        if jnp.issubdtype(leaf_dtype, jnp.inexact):
            dtype = jnp.promote_types(dtype, tree.real_dtype(leaf_dtype))
    return dtype


def _check_hyperparam_dtype(
    hyperparam_dtype: Any | None, owner: str = "inject_hyperparams"
) -> None:
    if hyperparam_dtype is None:
        return
    try:
        dtype = jnp.dtype(hyperparam_dtype)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating) or dtype.itemsize < 4:
        raise ValueError(
            f"{owner}: hyperparam_dtype must be None or a real floating dtype of "
            f"at least 32 bits (in bfloat16, b2=0.999 rounds to 1.0), got {hyperparam_dtype!r}."
        )


def _split(
    bound: inspect.BoundArguments, static_args: set[str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Callable[[Array], Any]]]:
    """Sorts the bound arguments into static values, injected floats and schedules."""
    static, numeric, schedules = {}, {}, {}
    for name, value in bound.arguments.items():
        if name in static_args:
            static[name] = value
        elif _is_float_value(value):
            numeric[name] = value
        elif _is_schedule(name, value):
            schedules[name] = value
        else:
            static[name] = value
    return static, numeric, schedules


def _probe_static(build, static, values, scheduled, owner="inject_hyperparams") -> set[str]:
    """The injected names the factory cannot take as tracers: they must stay static.

    ``build(**kwargs)`` returns the inner transformation. The inner state built
    for a scalar probe parameter with every candidate traced must have the tree
    structure it has with the concrete values; when it does not (or tracing hits
    a Python branch on a value), each candidate is traced alone to find which.
    """
    probe = jax.ShapeDtypeStruct((), jnp.float32)

    def structure(traced):
        fixed = {k: v for k, v in values.items() if k not in traced}

        def init(hyper, params):
            return build(**static, **fixed, **hyper).init(params)

        try:
            shapes = jax.eval_shape(init, {k: values[k] for k in traced}, probe)
        except jax.errors.ConcretizationTypeError:
            return None
        return jax.tree.structure(shapes)

    try:
        reference = structure(set())
    except Exception:
        # An init that refuses a scalar parameter (it wants a matrix, or a tree that
        # matches a mask) says nothing about the hyperparameters: nothing to learn.
        return set()
    if reference is None:
        return set()

    def accepted(traced):
        got = structure(traced)
        return got is not None and got == reference

    if accepted(set(values)):
        return set()
    refused = {name for name in values if not accepted({name})}
    bad_schedules = sorted(refused & scheduled)
    if bad_schedules:
        raise ValueError(
            f"{owner}: {', '.join(bad_schedules)} cannot be scheduled: the inner "
            "factory needs a concrete value there (it branches on it in Python)."
        )
    return refused


def _checked_arguments(
    owner: str, inner_factory: Any, static_args: Any, hyperparam_dtype: Any
) -> tuple[set[str], inspect.Signature]:
    """The names in ``static_args`` and the factory's signature, once both are checked."""
    if not callable(inner_factory):
        raise TypeError(
            f"{owner}: inner_factory must be callable, got {type(inner_factory).__name__}."
        )
    static_names = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    unknown = sorted(static_names - set(signature.parameters))
    if unknown:
        raise ValueError(
            f"{owner}: static_args names {unknown}, which are not parameters of "
            f"{getattr(inner_factory, '__name__', inner_factory)!r} "
            f"(it takes {sorted(signature.parameters)})."
        )
    _check_hyperparam_dtype(hyperparam_dtype, owner)
    return static_names, signature


def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any | None = None,
) -> Callable[..., GradientTransformation]:
    """Moves the numeric hyperparameters of an optimizer into its state.

    ``inject_hyperparams(factory)`` takes the same arguments as ``factory`` and
    returns a transformation whose state is :class:`InjectHyperparamsState`:
    ``state.hyperparams`` maps each injected argument's name to its current
    value (read it, log it, or replace it between steps), and every update
    rebuilds ``factory`` from those values, so the trajectory is the plain
    optimizer's. A callable argument is a schedule of the step count, evaluated
    on each update; the value used is stored in ``state.hyperparams``. The rule
    for which arguments are injected, static or scheduled, the storage dtype
    and when values are validated are in the module docstring.

    Args:
      inner_factory: a function returning a transformation (a gradtx or Optax
        optimizer such as ``gradtx.adam``).
      static_args: a name or names of ``inner_factory``'s parameters to pass
        unchanged whatever their value (callables that are not schedules).
      hyperparam_dtype: the dtype injected values are stored and used in; ``None``
        (default) takes the widest floating dtype of the params, at least
        float32. Must be a real floating dtype of 32 bits or more.

    Returns:
      A function with ``inner_factory``'s parameters returning the injected
      transformation; extra arguments of ``update`` reach the inner optimizer.
      Given a :class:`StatefulSchedule` for any argument it returns
      :func:`inject_stateful_hyperparams`'s transformation (as Optax's
      ``inject_hyperparams`` accepts them), whose state has a fourth field.

    Raises:
      TypeError: ``inner_factory`` is not callable.
      ValueError: ``static_args`` names a parameter ``inner_factory`` does not
        have; ``hyperparam_dtype`` is narrower than 32 bits or not a float; and,
        when the returned function is called, whatever ``inner_factory`` raises
        for the concrete values (e.g. ``b2`` outside [0, 1)).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> from gradtx.transforms.inject import inject_hyperparams
      >>> tx = inject_hyperparams(gradtx.adam)(learning_rate=0.1)
      >>> state = tx.init(jnp.zeros(2))
      >>> state.hyperparams["learning_rate"]
      Array(0.1, dtype=float32)
      >>> state.hyperparams["learning_rate"] = 0.01  # the next steps use 0.01
      >>> tx.update(jnp.ones(2), state)[0]
      Array([-0.01, -0.01], dtype=float32)

    References:
      Optax's ``inject_hyperparams`` has the same call shape; gradtx stores the
      values in float32 or wider and validates them at construction.
    """
    static_names, signature = _checked_arguments(
        "inject_hyperparams", inner_factory, static_args, hyperparam_dtype
    )

    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        if any(
            name not in static_names and _is_stateful_schedule(value)
            for name, value in bound.arguments.items()
        ):
            # Optax's inject_hyperparams takes stateful schedules too; their states
            # need inject_stateful_hyperparams's fourth field.
            stateful = inject_stateful_hyperparams(inner_factory, static_args, hyperparam_dtype)
            return stateful(*args, **kwargs)

        def build(**values: Any) -> GradientTransformation:
            call = inspect.BoundArguments(signature, {**bound.arguments, **values})
            return inner_factory(*call.args, **call.kwargs)

        static, numeric, schedules = _split(bound, static_names)
        first = {name: s(tree.zero_count()) for name, s in schedules.items()}
        build(**static, **numeric, **first)  # Validation of the concrete values.
        refused = _probe_static(build, static, {**numeric, **first}, set(schedules))
        static.update({name: numeric.pop(name) for name in refused})
        return _injected(build, static, numeric, schedules, hyperparam_dtype)

    wrapped.__name__ = f"inject_hyperparams({getattr(inner_factory, '__name__', 'factory')})"
    wrapped.__doc__ = inner_factory.__doc__
    wrapped.__signature__ = signature  # type: ignore[attr-defined]
    return wrapped


def _injected(build, static, numeric, schedules, hyperparam_dtype) -> GradientTransformation:
    """The transformation whose state carries ``numeric`` and the scheduled values."""
    names = sorted([*numeric, *schedules])

    def values_at(count, stored, dtype):
        values = {name: jnp.asarray(stored[name], dtype) for name in numeric}
        values.update({name: jnp.asarray(s(count), dtype) for name, s in schedules.items()})
        return values

    def init_fn(params: Params) -> InjectHyperparamsState:
        count = tree.zero_count()
        values = values_at(count, numeric, _storage_dtype(hyperparam_dtype, params))
        inner_state = build(**static, **values).init(params)
        return InjectHyperparamsState(count, values, inner_state)

    def update_fn(updates, state, params=None, **extra_args):
        stored = state.hyperparams
        if not isinstance(stored, Mapping) or sorted(stored) != names:
            got = sorted(stored) if isinstance(stored, Mapping) else type(stored).__name__
            raise ValueError(
                f"inject_hyperparams: state.hyperparams must hold exactly {names}, got {got}."
            )
        dtype = _storage_dtype(hyperparam_dtype, updates if params is None else params)
        values = values_at(state.count, state.hyperparams, dtype)
        inner = accepts_extra_args(build(**static, **values).update)
        updates, inner_state = inner(updates, state.inner_state, params, **extra_args)
        return updates, InjectHyperparamsState(
            tree.safe_increment(state.count), values, inner_state
        )

    return GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------- stateful schedules


class InjectStatefulHyperparamsState(NamedTuple):
    """State of a transformation built by :func:`inject_stateful_hyperparams`."""

    count: Array  # int32 scalar: updates so far, the step fed to the plain schedules.
    hyperparams: dict[str, Array]  # Injected values; scheduled ones hold the last value used.
    hyperparams_states: dict[str, OptState]  # Each stateful schedule's state, by argument.
    inner_state: OptState  # The inner optimizer's state.


@runtime_checkable
class StatefulSchedule(Protocol):
    """A schedule with a state of its own: ``init() -> s``, ``update(s) -> s``, ``s -> value``.

    Optax's protocol, which :func:`inject_stateful_hyperparams` accepts for any
    hyperparameter. The state may follow what each step sees (the extra
    arguments of ``update``, the loss ``value`` say), not only the step count.
    """

    def init(self) -> Any:
        """The schedule's first state."""

    def update(self, state: Any, **extra_args: Any) -> Any:
        """The state after one step."""

    def __call__(self, state: Any, **extra_args: Any) -> Any:
        """The value at ``state``."""


class WrappedScheduleState(NamedTuple):
    """State of a :class:`WrappedSchedule`: the step count."""

    count: Array  # int32 scalar


class WrappedSchedule:
    """A plain schedule ``count -> value`` as a :class:`StatefulSchedule` counting its own steps.

    Its state is the step count ``k`` (0 at ``init``), its value ``schedule_fn(k)``
    and ``update`` adds one, saturating at the int32 maximum (Optax's class of the
    same name).

    Args:
      schedule_fn: a schedule of the step count.

    Examples:
      >>> import gradtx
      >>> schedule = gradtx.WrappedSchedule(gradtx.schedules.linear_schedule(1.0, 0.0, 4))
      >>> state = schedule.update(schedule.update(schedule.init()))
      >>> schedule(state)
      Array(0.5, dtype=float32)
    """

    def __init__(self, schedule_fn: Callable[[Any], Any]):
        if not callable(schedule_fn):
            raise TypeError(
                f"WrappedSchedule: schedule_fn must be a schedule (count -> value), "
                f"got {schedule_fn!r}"
            )
        self.schedule_fn = schedule_fn

    def init(self) -> WrappedScheduleState:
        return WrappedScheduleState(count=jnp.zeros([], jnp.int32))

    def update(self, state: WrappedScheduleState, **extra_args: Any) -> WrappedScheduleState:
        del extra_args
        return WrappedScheduleState(count=tree.safe_increment(state.count))

    def __call__(self, state: WrappedScheduleState, **extra_args: Any) -> Any:
        del extra_args
        return self.schedule_fn(state.count)


def _is_stateful_schedule(value: Any) -> bool:
    """Optax's ``StatefulSchedule`` protocol: ``init()``, ``update(state)``, ``__call__(state)``."""
    return (
        callable(value)
        and not isinstance(value, (type, np.dtype))
        and callable(getattr(value, "init", None))
        and callable(getattr(value, "update", None))
    )


def inject_stateful_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any | None = None,
) -> Callable[..., GradientTransformationExtraArgs]:
    """:func:`inject_hyperparams`, where a hyperparameter may also be a *stateful* schedule.

    A stateful schedule is an object with ``init() -> s``, ``update(s, **extra_args)
    -> s`` and ``__call__(s, **extra_args) -> value`` (Optax's ``StatefulSchedule``
    protocol): its state lives in ``state.hyperparams_states`` and may follow
    what the step sees through the extra arguments (the loss ``value``, say), not
    just the step count. On each ``update`` the value used is ``schedule(s_k,
    **extra_args)``, stored in ``state.hyperparams``, and then ``s_{k+1} =
    schedule.update(s_k, **extra_args)``; ``init`` stores ``schedule(init())``.
    Each receives the extra arguments it names (all of them with ``**kwargs``).
    Every other argument follows :func:`inject_hyperparams`'s rules: floats are
    injected, other callables are schedules of the step count, the rest static.

    Note:
      Optax 0.2.8 keeps ``inject_stateful_hyperparams`` as a deprecated alias of its
      ``inject_hyperparams``; gradtx keeps the two apart, so that
      :func:`inject_hyperparams`'s state stays three fields. Here
      ``hyperparams_states`` holds the stateful schedules' states only: the plain
      schedules read the shared ``count`` (Optax wraps each in a state of its own
      count).

    Args:
      inner_factory: a function returning a transformation.
      static_args: names of ``inner_factory``'s parameters to pass unchanged.
      hyperparam_dtype: the dtype injected values are stored and used in (as
        :func:`inject_hyperparams`).

    Returns:
      A function with ``inner_factory``'s parameters returning a
      :class:`gradtx.GradientTransformationExtraArgs` whose state is
      :class:`InjectStatefulHyperparamsState`.

    Raises:
      TypeError: ``inner_factory`` is not callable.
      ValueError: as :func:`inject_hyperparams` (named after this function).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> class HalveOnIncrease:  # a learning rate that halves when the loss goes up
      ...     def init(self):
      ...         return {"rate": jnp.array(0.1), "last": jnp.array(jnp.inf)}
      ...     def update(self, s, value):
      ...         up = value > s["last"]
      ...         return {"rate": jnp.where(up, s["rate"] / 2, s["rate"]), "last": value}
      ...     def __call__(self, s, value=None):
      ...         return s["rate"]
      >>> tx = gradtx.inject_stateful_hyperparams(gradtx.sgd)(learning_rate=HalveOnIncrease())
      >>> state = tx.init(jnp.zeros(1))
      >>> for loss in (3.0, 4.0, 2.0):
      ...     updates, state = tx.update(jnp.ones(1), state, value=loss)
      >>> updates, state.hyperparams["learning_rate"]
      (Array([-0.05], dtype=float32), Array(0.05, dtype=float32))
    """
    owner = "inject_stateful_hyperparams"
    static_names, signature = _checked_arguments(
        owner, inner_factory, static_args, hyperparam_dtype
    )

    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformationExtraArgs:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()

        def build(**values: Any) -> GradientTransformation:
            call = inspect.BoundArguments(signature, {**bound.arguments, **values})
            return inner_factory(*call.args, **call.kwargs)

        stateful = {
            name: value
            for name, value in bound.arguments.items()
            if name not in static_names and _is_stateful_schedule(value)
        }
        static, numeric, schedules = _split(bound, static_names | set(stateful))
        for name in stateful:
            del static[name]
        first = {name: s(tree.zero_count()) for name, s in schedules.items()}
        first.update({name: s(s.init()) for name, s in stateful.items()})
        build(**static, **numeric, **first)  # Validation of the concrete values.
        scheduled = set(schedules) | set(stateful)
        refused = _probe_static(build, static, {**numeric, **first}, scheduled, owner)
        static.update({name: numeric.pop(name) for name in refused})
        return _injected_stateful(build, static, numeric, schedules, stateful, hyperparam_dtype)

    wrapped.__name__ = f"{owner}({getattr(inner_factory, '__name__', 'factory')})"
    wrapped.__doc__ = inner_factory.__doc__
    wrapped.__signature__ = signature  # type: ignore[attr-defined]
    return wrapped


def _injected_stateful(
    build, static, numeric, schedules, stateful, hyperparam_dtype
) -> GradientTransformationExtraArgs:
    """The transformation whose state carries the values and the stateful schedules' states."""
    names = sorted([*numeric, *schedules, *stateful])
    value_of = {name: accepts_named_kwargs(s, 1) for name, s in stateful.items()}
    advance = {name: accepts_named_kwargs(s.update, 1) for name, s in stateful.items()}

    def values_at(count, stored, schedule_states, dtype, extra_args):
        values = {name: jnp.asarray(stored[name], dtype) for name in numeric}
        values.update({name: jnp.asarray(s(count), dtype) for name, s in schedules.items()})
        values.update(
            {
                name: jnp.asarray(value_of[name](schedule_states[name], **extra_args), dtype)
                for name in stateful
            }
        )
        return values

    def init_fn(params: Params) -> InjectStatefulHyperparamsState:
        count = tree.zero_count()
        schedule_states = {name: s.init() for name, s in stateful.items()}
        dtype = _storage_dtype(hyperparam_dtype, params)
        values = values_at(count, numeric, schedule_states, dtype, {})
        inner_state = build(**static, **values).init(params)
        return InjectStatefulHyperparamsState(count, values, schedule_states, inner_state)

    def update_fn(updates, state, params=None, **extra_args):
        stored = state.hyperparams
        if not isinstance(stored, Mapping) or sorted(stored) != names:
            got = sorted(stored) if isinstance(stored, Mapping) else type(stored).__name__
            raise ValueError(
                f"inject_stateful_hyperparams: state.hyperparams must hold exactly {names}, "
                f"got {got}."
            )
        dtype = _storage_dtype(hyperparam_dtype, updates if params is None else params)
        schedule_states = state.hyperparams_states
        values = values_at(state.count, stored, schedule_states, dtype, extra_args)
        next_states = {
            name: advance[name](schedule_states[name], **extra_args) for name in stateful
        }
        inner = accepts_extra_args(build(**static, **values).update)
        updates, inner_state = inner(updates, state.inner_state, params, **extra_args)
        return updates, InjectStatefulHyperparamsState(
            tree.safe_increment(state.count), values, next_states, inner_state
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)
