"""A full-batch driver: iterate a transformation to a minimum in one compiled loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, apply_updates
from gradtx.combine import accepts_extra_args, check_members
from gradtx.second_order.linesearch import linesearch_states


class MinimizeResult(NamedTuple):
    """What :func:`minimize` returns."""

    params: Any  # the last iterate.
    value: Array  # fun(params).
    grad: Any  # its gradient.
    num_steps: Array  # int32: the updates applied.
    converged: Array  # bool: |grad|_2 <= tol.
    state: Any  # the transformation's final state.


class _Carry(NamedTuple):
    params: Any
    state: Any
    value: Array
    grad: Any
    step: Array
    moved: Array  # the last update changed the params (False: the method stalled)


def _stores_gradient(state: Any) -> bool:
    searches = linesearch_states(state)
    return len(searches) == 1 and searches[0].grad is not None


def minimize(
    fun: Callable[[Any], Array],
    params: Any,
    tx: GradientTransformation,
    max_steps: int = 500,
    tol: float = 1e-6,
) -> MinimizeResult:
    r"""Minimises ``fun`` from ``params`` with ``tx``, inside one ``jax.lax.while_loop``.

    Each step calls ``tx.update(grad, state, params, value=value, grad=grad,
    value_fn=fun)`` and applies the update, so second-order methods and line
    searches get what they read. When the state holds one line search that stores
    the gradient, the loop reuses its value and gradient at the new params instead
    of evaluating ``fun`` again. The loop stops when ``|grad f|_2 <= tol``, after
    ``max_steps`` updates, when the loss is not finite, or when an update leaves
    the params unchanged (a line search that found no decrease). The whole loop is
    jit-compiled; ``minimize`` can itself be called under ``jit`` or ``vmap``.

    Args:
      fun: the loss, ``params -> scalar``; close over the data.
      params: the starting point, any pytree of real arrays.
      tx: any transformation (gradtx or Optax), e.g. :func:`gradtx.lbfgs`.
      max_steps: the cap on updates, an integer >= 1.
      tol: the gradient-norm tolerance, >= 0.

    Returns:
      A :class:`MinimizeResult`: ``params``, ``value``, ``grad``, ``num_steps``,
      ``converged`` (the gradient test passed) and the final ``state``.

    Raises:
      ValueError: ``max_steps`` is not an integer >= 1 or ``tol`` is negative.
      TypeError: ``tx`` has no ``init`` / ``update``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> rosenbrock = lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2
      >>> result = gradtx.minimize(rosenbrock, jnp.array([-1.2, 1.0]), gradtx.lbfgs(),
      ...                          tol=1e-4)
      >>> bool(result.converged), result.params.round(3)
      (True, Array([1., 1.], dtype=float32))

    References:
      Nocedal & Wright (2006), Numerical Optimization, 2nd ed., Ch. 3 (line
      search methods) and Sec. 6.1 (the stopping test on the gradient).
    """
    _checks.positive_int("minimize", "max_steps", max_steps)
    _checks.non_negative("minimize", "tol", tol)
    check_members("minimize", (tx,))
    update = accepts_extra_args(tx.update)
    value_and_grad = jax.value_and_grad(fun)

    def run(start):
        state = tx.init(start)
        value, grad = value_and_grad(start)
        reuse = _stores_gradient(state)

        def keep_going(carry):
            small = tree.global_norm(carry.grad) <= tol
            return (carry.step < max_steps) & ~small & jnp.isfinite(carry.value) & carry.moved

        def step(carry):
            updates, state = update(
                carry.grad,
                carry.state,
                carry.params,
                value=carry.value,
                grad=carry.grad,
                value_fn=fun,
            )
            params = apply_updates(carry.params, updates)
            if reuse:
                (search,) = linesearch_states(state)
                value = search.value.astype(jnp.result_type(carry.value))
                grad = tree.cast_like(search.grad, carry.grad)
            else:
                value, grad = value_and_grad(params)
            moved = tree.global_norm(updates) > 0
            return _Carry(params, state, value, grad, carry.step + 1, moved)

        first = _Carry(start, state, value, grad, jnp.int32(0), jnp.asarray(True))
        final = jax.lax.while_loop(keep_going, step, first)
        converged = tree.global_norm(final.grad) <= tol
        return MinimizeResult(
            final.params, final.value, final.grad, final.step, converged, final.state
        )

    return jax.jit(run)(params)
