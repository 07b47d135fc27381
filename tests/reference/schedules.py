"""Learning-rate schedules as closed forms, one Python float per step.

Each function takes the 0-based iteration ``k`` (a Python int, so exact at any
size) and returns the value in float64, written from the source's formula with
its symbols rather than from gradtx's code:

* Goodfellow, Bengio & Courville (2016), Sec. 8.3.1, eq. 8.14: ``epsilon_k``,
  ``tau``, ``alpha = k / tau``;
* the seeds' survey (002): piecewise constant, exponential ``eta_0
  decay^(t/r)``, reciprocal ``eta_0 (1 + t/r)^-c``, linear warmup;
* Loshchilov & Hutter (2017), SGDR, eq. 5: ``eta_min, eta_max, T_cur, T_i``,
  ``T_mult``;
* Smith & Topin (2017): the one-cycle policy's phases.

Imports numpy only.
"""

from __future__ import annotations

import numpy as np


def book_linear_decay(k, epsilon_0, epsilon_tau, tau):
    """Eq. 8.14: ``epsilon_k = (1 - alpha) epsilon_0 + alpha epsilon_tau``, ``alpha = k/tau``.

    "until iteration tau"; after it the rate is left constant at ``epsilon_tau``.
    """
    if k >= tau:
        return float(epsilon_tau)
    alpha = k / tau
    return (1 - alpha) * epsilon_0 + alpha * epsilon_tau


def polynomial(k, init, end, power, steps, begin=0):
    """``init`` until ``begin``, then ``(init - end) (1 - t/T)^power + end``, then ``end``."""
    if k <= begin:
        return float(init)
    if k >= begin + steps:
        return float(end)
    return (init - end) * (1 - (k - begin) / steps) ** power + end


def exponential(k, eta_0, r, decay_rate, begin=0, staircase=False, end=None):
    """``eta_0 decay_rate^(t / r)`` with ``t = k - begin`` (whole periods for a staircase).

    ``end`` bounds it: from below when decaying, from above when growing.
    """
    t = max(k - begin, 0)
    periods = t // r if staircase else t / r
    with np.errstate(over="ignore"):  # growth past the float64 range: inf, then the bound
        value = eta_0 * np.float64(decay_rate) ** periods
    if end is not None:
        value = max(value, end) if decay_rate < 1 else min(value, end)
    return value


def reciprocal(k, eta_0, r, decay_rate=1.0, c=1.0, begin=0, staircase=False):
    """The seeds' reciprocal decay ``eta_0 (1 + decay_rate t / r)^(-c)``."""
    t = max(k - begin, 0)
    periods = t // r if staircase else t / r
    return eta_0 * (1 + decay_rate * periods) ** (-c)


def cosine(k, eta_max, T, alpha=0.0, exponent=1.0):
    """One SGDR cycle, eq. 5, with ``eta_min = alpha eta_max`` and an exponent on the bracket."""
    T_cur = min(k, T)
    eta_min = alpha * eta_max
    return eta_min + (eta_max - eta_min) * (0.5 * (1 + np.cos(np.pi * T_cur / T))) ** exponent


def sgdr(k, eta_max, T_0, T_mult=1, alpha=0.0, m_mul=1.0):
    """SGDR (eq. 5) with restarts: cycle ``i`` lasts ``T_i = T_0 T_mult^i`` steps.

    ``m_mul`` scales the cosine's amplitude at each restart above the fixed
    floor ``eta_min = alpha eta_max``.
    """
    if T_mult == 1:
        i, T_cur, T_i = k // T_0, k % T_0, T_0
    else:
        i, start, T_i = 0, 0, T_0
        while k >= start + T_i:  # walk the restarts
            start, T_i, i = start + T_i, T_i * T_mult, i + 1
        T_cur = k - start
    eta_min = alpha * eta_max
    amplitude = m_mul**i * (eta_max - eta_min)
    return eta_min + 0.5 * amplitude * (1 + np.cos(np.pi * T_cur / T_i))


def piecewise_scales(k, init, boundaries_and_scales):
    """``init`` times every scale whose boundary has been reached (``k >= b``)."""
    value = float(init)
    for b, s in boundaries_and_scales.items():
        if k >= b:
            value *= s
    return value


def piecewise_values(k, init, boundaries_and_values):
    """The value of the latest boundary reached, ``init`` before the first."""
    reached = [b for b in boundaries_and_values if k >= b]
    return float(boundaries_and_values[max(reached)]) if reached else float(init)


def piecewise_interpolate(k, kind, init, boundaries_and_scales):
    """Between boundaries, move from one cumulative value to the next (linear or cosine)."""
    knots = [(0, float(init))]
    for b in sorted(boundaries_and_scales):
        knots.append((b, knots[-1][1] * boundaries_and_scales[b]))
    for (b_0, v_0), (b_1, v_1) in zip(knots, knots[1:], strict=False):
        if b_0 <= k < b_1:
            pct = (k - b_0) / (b_1 - b_0)
            if kind == "linear":
                return v_0 + (v_1 - v_0) * pct
            return v_1 + (v_0 - v_1) * 0.5 * (1 + np.cos(np.pi * pct))
    return knots[-1][1]


def linear_warmup(k, init, peak, warmup_steps):
    """The seeds' linear warmup: ``init + (peak - init) k / W`` for ``k < W``, then ``peak``."""
    if k >= warmup_steps:
        return float(peak)
    return init + (peak - init) * k / warmup_steps


def warmup_then(k, init, warmup_steps, after):
    """Linear warmup to ``after(0)``, then ``after(k - W)``."""
    if k < warmup_steps:
        return linear_warmup(k, init, after(0), warmup_steps)
    return after(k - warmup_steps)


def one_cycle_linear(k, T, peak, pct_start, pct_final, div, final_div):
    """Smith's three phases: up to ``peak``, down to ``peak/div``, then to ``peak/div/final``."""
    low, b_1, b_2 = peak / div, int(pct_start * T), int(pct_final * T)
    if k < b_1:
        return low + (peak - low) * k / b_1
    if k < b_2:
        return peak + (low - peak) * (k - b_1) / (b_2 - b_1)
    if k < T:
        return low + (low / final_div - low) * (k - b_2) / (T - b_2)
    return low / final_div


def one_cycle_cosine(k, T, peak, pct_start, div, final_div):
    """Up to ``peak`` then down to ``peak / (div final)``, each along a half cosine."""
    low, last, b_1 = peak / div, peak / (div * final_div), int(pct_start * T)

    def half_cosine(start, end, pct):
        return end + (start - end) * 0.5 * (1 + np.cos(np.pi * pct))

    if k < b_1:
        return half_cosine(low, peak, k / b_1)
    if k < T:
        return half_cosine(peak, last, (k - b_1) / (T - b_1))
    return last
