"""Reduce-on-plateau as a plain state machine over a list of losses.

The rule as Keras and PyTorch document ``ReduceLROnPlateau`` and the seeds put
it ("fixed eta until the validation loss stops improving, then halve eta"),
counted as Optax counts (a reduction on the ``patience``-th evaluation without
improvement), with the improvement test written for losses of either sign:

    improved  <=>  v < best - (rtol |best| + atol)      (any v < inf improves on inf)

``optax_rule=True`` swaps in Optax's test ``v < (1 - rtol) best - atol``, the same
for ``best >= 0``, so that the tests can show what it does to negative losses.
Imports nothing from gradtx or Optax.
"""

from __future__ import annotations

import numpy as np


def improves(v, best, rtol, atol, *, optax_rule=False):
    """Whether ``v`` is an improvement on ``best`` (NaN never is)."""
    if np.isnan(v):
        return False
    if np.isinf(best):
        return v < best
    if optax_rule:
        return v < (1 - rtol) * best - atol
    return v < best - (rtol * abs(best) + atol)


def reduce_on_plateau(
    losses,
    *,
    factor,
    patience,
    rtol=1e-4,
    atol=0.0,
    cooldown=0,
    accumulation_size=1,
    min_scale=0.0,
    optax_rule=False,
):
    """The scale in force after each loss is received (one float per loss).

    Every ``accumulation_size`` losses, their mean is evaluated: an improvement
    stores it as the best and clears the count of bad evaluations; otherwise the
    count grows. In a cooldown, the count is held at 0 while the cooldown runs
    down. Outside it, ``patience`` bad evaluations in a row multiply the scale
    by ``factor`` (not below ``min_scale``) and start a cooldown.
    """
    scale, best = 1.0, np.inf
    num_bad, cooldown_left = 0, 0
    pending = []
    scales = []
    for loss in losses:
        pending.append(float(loss))
        if len(pending) == accumulation_size:
            v = sum(pending) / len(pending)
            pending = []
            if improves(v, best, rtol, atol, optax_rule=optax_rule):
                best, num_bad = v, 0
            else:
                num_bad += 1
            if cooldown_left > 0:
                cooldown_left -= 1
                num_bad = 0
            elif num_bad >= patience:
                scale = max(scale * factor, min_scale)
                num_bad, cooldown_left = 0, cooldown
        scales.append(scale)
    return scales
