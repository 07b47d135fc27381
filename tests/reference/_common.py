"""Plumbing shared by the reference loops: float64 inputs, gradients, trajectories.

Nothing here knows any optimizer. Every loop in this package reads

    gradients = Gradients(grads, num_steps)
    for k in range(gradients.num_steps):
        g = gradients(k, point)   # the k-th gradient, evaluated at ``point``

so one loop serves both uses the tests need: a recorded sequence of random
gradients (``point`` is ignored: step k always sees the same numbers, whatever
the parameters) and a gradient function (the k-th gradient is the function at
``point``, which is how Nesterov's "gradient at the interim point" is written).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Leaves = list[np.ndarray]
"""The parameters (or a gradient) as a flat list of float64 arrays, one per leaf."""


def as_float64(leaves: Sequence[np.ndarray]) -> Leaves:
    """Fresh float64 copies of ``leaves`` (scalars become 0-d arrays)."""
    return [np.array(x, dtype=np.float64) for x in leaves]


def rate(value: float | Callable[[int], float]) -> Callable[[int], float]:
    """A hyperparameter as a function of the 0-based step ``k``.

    Goodfellow et al. write the learning rate of iteration k as ``epsilon_k``
    (Alg. 8.1); a constant is the schedule that ignores ``k``.
    """
    if callable(value):
        return lambda k: float(value(k))
    constant = float(value)
    return lambda k: constant


class Gradients:
    """The gradient of step ``k`` at a point: recorded, or computed by a function.

    Args:
      grads: either a sequence whose ``k``-th item is the list of leaves of the
        k-th gradient, or a function ``f(point) -> leaves``.
      num_steps: how many steps to take; required with a function, and at most
        ``len(grads)`` with a sequence (default: all of them).
    """

    def __init__(self, grads, num_steps: int | None = None):
        if callable(grads):
            if num_steps is None:
                raise ValueError("a gradient function needs num_steps")
            self._function, self._recorded = grads, None
            self.num_steps = num_steps
        else:
            self._function, self._recorded = None, [as_float64(g) for g in grads]
            self.num_steps = len(self._recorded) if num_steps is None else num_steps
            if self.num_steps > len(self._recorded):
                raise ValueError(f"{num_steps} steps but only {len(self._recorded)} gradients")

    def __call__(self, k: int, point: Leaves) -> Leaves:
        if self._recorded is not None:
            return self._recorded[k]
        return as_float64(self._function([p.copy() for p in point]))


class Trajectory:
    """Records the parameters after every step, starting with the initial ones."""

    def __init__(self, start: Leaves):
        self._steps = [[x.copy() for x in start]]

    def record(self, point: Leaves) -> None:
        self._steps.append([x.copy() for x in point])

    def stacked(self) -> Leaves:
        """One array per leaf, shaped ``(num_steps + 1, *leaf.shape)``: row t is step t."""
        return [np.stack(column) for column in zip(*self._steps, strict=True)]
