"""Wrappers around an optimizer: masking, partitioning, skipping, accumulating.

These are not algorithms of a paper but bookkeeping around one, so each
reference is written from its definition, around an ``inner`` reference of this
package (``functools.partial(adam.adam, epsilon=0.1, ...)``): a function
``inner(theta, grads_by_step) -> trajectory`` on a list of leaves and a
*recorded* sequence of gradients (the wrappers reorder, drop or average
gradients, which a gradient function of the point could not express).

* ``masked``: the masked leaves are a smaller problem the inner optimizer runs
  on alone; the others receive their raw gradient as their update.
* ``partition``: each label's leaves are such a smaller problem for its own
  optimizer.
* ``apply_if_finite``: a step whose gradient holds NaN or inf does not happen.
* ``accumulate``: the inner optimizer steps on the mean of each group of
  ``every_k`` gradients, the parameters standing still in between.

Each returns the trajectory as the other references do: one float64 array per
leaf, row ``t`` the parameters after ``t`` steps (of the wrapper).
"""

from __future__ import annotations

import numpy as np

from ._common import as_float64


def _steps(grads):
    return [as_float64(g) for g in grads]


def _stack(rows):
    return [np.stack(column) for column in zip(*rows, strict=True)]


def masked(theta, grads, mask, inner):
    """``inner`` on the leaves ``i`` with ``mask[i]``; ``theta_i <- theta_i + g_i`` elsewhere.

    Args:
      theta: the initial parameters, a list of arrays.
      grads: the recorded gradients, one list of arrays per step.
      mask: one bool per leaf.
      inner: ``inner(theta, grads) -> trajectory`` (one of this package's loops).
    """
    return partition(theta, grads, ["inner" if m else "raw" for m in mask], {"inner": inner})


def partition(theta, grads, labels, inners):
    """Leaf ``i`` follows ``inners[labels[i]]`` run on the leaves of its label alone.

    A label missing from ``inners`` leaves its leaves to their raw gradient
    (``theta_i <- theta_i + g_i``), which is what ``masked`` needs.
    """
    theta, steps = as_float64(theta), _steps(grads)
    rows = [[None] * len(theta) for _ in range(len(steps) + 1)]
    for label in dict.fromkeys(labels):
        members = [i for i, leaf_label in enumerate(labels) if leaf_label == label]
        sub_theta = [theta[i] for i in members]
        sub_grads = [[g[i] for i in members] for g in steps]
        if label in inners:
            trajectory = inners[label](sub_theta, sub_grads)
        else:
            trajectory = [[x] for x in sub_theta]
            for g in sub_grads:
                for path, g_i in zip(trajectory, g, strict=True):
                    path.append(path[-1] + g_i)
        for j, i in enumerate(members):
            for t in range(len(steps) + 1):
                rows[t][i] = trajectory[j][t]
    return _stack(rows)


def apply_if_finite(theta, grads, inner):
    """``inner`` on the finite gradients only; a non-finite one leaves everything as it was.

    Returns:
      ``(trajectory, consecutive, total)``: the trajectory, and after each step
      the number of non-finite gradients in a row and in all.
    """
    steps = _steps(grads)
    finite = [all(np.all(np.isfinite(g_i)) for g_i in g) for g in steps]
    kept = inner(theta, [g for g, ok in zip(steps, finite, strict=True) if ok])
    rows, taken, consecutive, total, in_a_row, in_all = [], 0, [], [], 0, 0
    rows.append([x[0] for x in kept])
    for ok in finite:
        taken += ok
        in_a_row = 0 if ok else in_a_row + 1
        in_all += not ok
        rows.append([x[taken] for x in kept])
        consecutive.append(in_a_row)
        total.append(in_all)
    return _stack(rows), consecutive, total


def accumulate(theta, grads, every_k, inner, *, use_grad_mean=True):
    """``inner`` on the mean (or sum) of each group of ``every_k`` consecutive gradients.

    After ``t`` gradients the parameters are those after ``t // every_k`` inner
    steps; a last incomplete group has not stepped yet.
    """
    steps = _steps(grads)
    groups = [steps[s : s + every_k] for s in range(0, len(steps) - every_k + 1, every_k)]
    combined = []
    for group in groups:
        sums = [sum(g[i] for g in group) for i in range(len(group[0]))]
        combined.append([s / every_k for s in sums] if use_grad_mean else sums)
    outer = inner(theta, combined)
    rows = [[x[t // every_k] for x in outer] for t in range(len(steps) + 1)]
    return _stack(rows)
