"""Stateful measurements of the updates, recorded in the state (Optax's monitoring)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, OptState, Updates, stateless
from gradtx.combine import chain
from gradtx.transforms.moments import ema


class MonitorState(NamedTuple):
    """State of :func:`monitor`."""

    measurements: dict[str, Any]
    """``{name: the measure's latest output}``; zeros of its shape before the first step."""
    measure_states: tuple[OptState, ...]
    """The measures' own states, in the order of ``measures``."""


def _as_transformation(owner: str, name: str, measure: Any) -> GradientTransformation:
    if hasattr(measure, "init") and hasattr(measure, "update"):
        return measure
    if callable(measure):
        return stateless(lambda updates, params, m=measure: m(updates))
    raise TypeError(
        f"{owner}: measures[{name!r}] must be a callable or a transformation, "
        f"got {type(measure).__name__}."
    )


def monitor(measures: dict[str, Any]) -> GradientTransformation:
    """Records named measurements of the updates in the state; passes them through.

    .. math::
        (m_k, s_k) \\leftarrow T_k(u, s_k) \\quad \\text{for each name } k, \\qquad
        u' = u

    Each measure ``T_k`` is a function of the updates (a stateless measurement,
    such as a norm) or a transformation whose output is the measurement and whose
    state carries what it needs (such as :func:`measure_with_ema`). The outputs
    are stored in ``state.measurements[k]``, for logging; the updates themselves
    leave unchanged. Same arguments as ``optax.monitor``.

    Args:
      measures: ``{name: function of the updates, or transformation}``.

    Returns:
      A transformation whose state is :class:`MonitorState`.

    Raises:
      TypeError: ``measures`` is not a dict of callables or transformations.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.monitor({"norm": gradtx.global_norm})
      >>> _, state = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
      >>> state.measurements["norm"]
      Array(5., dtype=float32)

    Note:
      Optax's ``init`` leaves ``measurements`` empty (``{}``) until the first
      ``update``, so the state changes structure after one step; here ``init``
      stores zeros shaped like each measurement (found by tracing the measure on
      the params, nothing computed), so the state keeps one structure and can be
      carried through ``jax.lax.scan`` or a ``fori_loop``.
    """
    owner = "monitor"
    if not isinstance(measures, dict):
        raise TypeError(f"{owner}: measures must be a dict, got {type(measures).__name__}.")
    for name in measures:
        if not isinstance(name, str):
            raise TypeError(f"{owner}: measure names must be strings, got {name!r}.")
    names = tuple(measures)
    transforms = tuple(_as_transformation(owner, n, measures[n]) for n in names)

    def init_fn(params):
        states = tuple(t.init(params) for t in transforms)

        def first(t, s):
            shapes = jax.eval_shape(lambda: t.update(params, s, params)[0])
            return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)

        measurements = {n: first(t, s) for n, t, s in zip(names, transforms, states, strict=True)}
        return MonitorState(measurements, states)

    def update_fn(updates: Updates, state, params=None, **extra_args):
        measurements, states = {}, []
        for n, t, s in zip(names, transforms, state.measure_states, strict=True):
            measurements[n], s = t.update(updates, s, params, **extra_args)
            states.append(s)
        return updates, MonitorState(measurements, tuple(states))

    return GradientTransformation(init_fn, update_fn)


def measure_with_ema(
    measure: Callable[[Updates], Any],
    decay: Any,
    debias: bool = True,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    """The exponential moving average of a measurement of the updates.

    .. math::
        m_t = f(u_t), \\qquad
        \\bar m_t = \\beta \\bar m_{t-1} + (1 - \\beta) m_t, \\qquad
        \\text{out}_t = \\bar m_t / (1 - \\beta^t) \\text{ if debias else } \\bar m_t

    with ``f`` = ``measure`` and ``\\beta`` = ``decay``: ``chain`` of the
    measurement and :func:`ema`, whose accumulator is shaped like ``f(params)``.
    Its output is the averaged measurement (not the updates): use it as a measure
    of :func:`monitor`. Same arguments as ``optax.measure_with_ema``.

    Args:
      measure: a function of the updates returning a pytree of arrays, of the
        same structure for the params (``init`` calls it on them).
      decay: the EMA decay ``\\beta`` in [0, 1].
      debias: divide by ``1 - \\beta^t``.
      accumulator_dtype: the dtype of the accumulator (``None``: the measurement's).

    Returns:
      A transformation whose output is the averaged measurement.

    Raises:
      TypeError: ``measure`` is not callable.
      ValueError: ``decay`` outside [0, 1] (from :func:`ema`).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.monitor({"norm": gradtx.measure_with_ema(gradtx.global_norm, 0.5)})
      >>> state = tx.init(jnp.zeros(2))
      >>> _, state = tx.update(jnp.array([3.0, 4.0]), state)
      >>> _, state = tx.update(jnp.array([0.0, 2.0]), state)
      >>> state.measurements["norm"]  # (0.5 * 0.5 * 5 + 0.5 * 2) / (1 - 0.25)
      Array(3., dtype=float32)
    """
    if not callable(measure):
        raise TypeError(
            f"measure_with_ema: measure must be callable, got {type(measure).__name__}."
        )
    average = ema(decay, debias, accumulator_dtype)
    measured = GradientTransformation(lambda params: average.init(measure(params)), average.update)
    return chain(stateless(lambda updates, params: measure(updates)), measured)
