"""bfloat16 parameter updates: stochastic rounding and Kahan summation, in numpy.

Written from the papers: Gupta, Agrawal, Gopalakrishnan & Narayanan (2015), Deep
Learning with Limited Numerical Precision, Sec. 3, Eq. 4 (stochastic rounding:
round up with probability equal to the distance from the number below, over the
spacing); Kahan (1965) and Zamirai, Zhang, De Sa & Aberger (2020), Revisiting
BFloat16 Training, Sec. 4 (a compensation buffer for the weight update).

bfloat16 is float32 with the low 16 bits of the bit pattern cleared, so both
roundings are written on float32 bit patterns here. The precision each step
computes in is part of the method (``p + u`` in float32, the compensation in
bfloat16), so these loops compute in numpy float32 where the method does, and
use float64 only to check. Values are float32 arrays holding bfloat16 numbers.
"""

from __future__ import annotations

import numpy as np

_LOW = np.uint32(0xFFFF)
_HIGH = np.uint32(0xFFFF0000)


def _bits(x):
    return np.asarray(x, np.float32).view(np.uint32)


def _value(bits):
    return np.asarray(bits, np.uint32).view(np.float32)


def round_to_nearest(x):
    """float32 -> bfloat16 (as float32), round to nearest, ties to even."""
    x = np.asarray(x, np.float32)
    b = _bits(x).astype(np.uint64)
    lsb = (b >> 16) & 1
    rounded = ((b + 0x7FFF + lsb) & 0xFFFF0000).astype(np.uint32)
    return np.where(np.isfinite(x), _value(rounded), x).astype(np.float32)


def stochastic_round(x, r):
    """float32 -> bfloat16 (as float32) given ``r``, integers in [0, 2^16) (Gupta et al. Eq. 4).

    Let ``lo`` be the bfloat16 number at or toward zero from ``x`` (``x``'s bits
    with the low 16 cleared), ``hi`` the next one away from zero, and ``k`` the
    cleared bits as an integer, so ``|x| = |lo| + k / 2^16 (|hi| - |lo|)``. The
    result is ``hi`` when ``r >= 2^16 - k`` (probability ``k / 2^16`` for a
    uniform ``r``: the distance from ``lo`` over the spacing) and ``lo`` else.
    """
    x = np.asarray(x, np.float32)
    b = _bits(x)
    k = (b & _LOW).astype(np.int64)
    lo = b & _HIGH
    up = np.asarray(r, np.int64) >= (1 << 16) - k
    hi = (lo.astype(np.uint64) + (1 << 16)).astype(np.uint32)
    out = _value(np.where(up & (k > 0), hi, lo))
    return np.where(np.isfinite(x), out, round_to_nearest(x)).astype(np.float32)


def stochastic_rounding(p, updates, randoms):
    """``p_t = SR(fl32(p_{t-1} + u_t))`` for each step; rows of the trajectory.

    ``p``: bfloat16 values as float32; ``updates[t]``: float32 updates;
    ``randoms[t]``: integers in [0, 2^16), one per entry.
    """
    p = np.asarray(p, np.float32).copy()
    trajectory = [p.copy()]
    for u, r in zip(updates, randoms, strict=True):
        x = (p + np.asarray(u, np.float32)).astype(np.float32)
        p = stochastic_round(x, r)
        trajectory.append(p.copy())
    return np.stack(trajectory)


def kahan(p, updates):
    """Compensated bfloat16 parameter updates; returns the trajectories of ``p`` and ``c``.

    Per step, with ``c`` a bfloat16 buffer (zero at the start)::

        y = u + c                     (float32)
        p_new = bf16(p + y)           (float32 sum, rounded to nearest)
        c = bf16(y - (p_new - p))     (float32; p_new - p is exact there unless
                                       their exponents are over 16 apart)
        p = p_new

    Kahan (1965) keeps ``-c`` and subtracts it; the sign here is flipped.
    """
    p = np.asarray(p, np.float32).copy()
    c = np.zeros_like(p)
    ps, cs = [p.copy()], [c.copy()]
    for u in updates:
        y = (np.asarray(u, np.float32) + c).astype(np.float32)
        new_p = round_to_nearest((p + y).astype(np.float32))
        delta = (new_p - p).astype(np.float32)
        c = round_to_nearest((y - delta).astype(np.float32))
        p = new_p
        ps.append(p.copy())
        cs.append(c.copy())
    return np.stack(ps), np.stack(cs)
