"""Rprop+, Rprop-, iRprop+ and iRprop-, written from Igel & Huesken's pseudo-code.

Igel & Huesken (2000), "Improving the Rprop learning algorithm", give the four
algorithms as per-weight pseudo-code; Rprop+ is Riedmiller & Braun's (1993)
original. Symbols, as there: ``w`` the weights (``w_ij``), ``Delta`` the
step sizes ("update-values", ``Delta_ij``), ``Delta_w`` the last weight update
(``Delta w_ij``), ``dE`` the partial derivative ``dE/dw_ij`` at iteration t and
``dE_prev`` the one stored from t-1, ``E`` the error, ``eta_plus``,
``eta_minus``, ``Delta_min``, ``Delta_max``, ``Delta_0`` the initial step size.

Every function loops over iterations t and, inside, over every weight of every
leaf, one ``if / elif`` per case of the pseudo-code. ``loss_and_grad(t, w)``
returns ``(E(t), [dE/dw leaves])`` at the weights ``w`` (a copy): a real loss
for the closed-loop tests, or recorded numbers that ignore ``w``. The result is
the trajectory, one float64 array per leaf, row t the weights after t steps.

The stored derivative starts at 0 (so the first iteration takes the ``= 0``
case: ``w <- w - sign(dE) * Delta_0``) and ``E(t-1)`` at +inf.
"""

from __future__ import annotations

import numpy as np

from ._common import Trajectory, as_float64


def _sign(x):
    return float(np.sign(x))


def _start(w, delta_0):
    w = as_float64(w)
    Delta = [np.full_like(w_i, delta_0) for w_i in w]
    Delta_w = [np.zeros_like(w_i) for w_i in w]
    dE_prev = [np.zeros_like(w_i) for w_i in w]
    return w, Delta, Delta_w, dE_prev


def _evaluate(loss_and_grad, t, w):
    E, dE = loss_and_grad(t, [w_i.copy() for w_i in w])
    return float(E), as_float64(dE)


def rprop_plus(w, loss_and_grad, num_steps, delta_0, eta_minus, eta_plus, Delta_min, Delta_max):
    """Rprop with weight backtracking (Riedmiller & Braun 1993)::

    if dE_prev * dE > 0:
        Delta = min(Delta * eta_plus, Delta_max)
        Delta_w = -sign(dE) * Delta
        w = w + Delta_w
    elif dE_prev * dE < 0:
        Delta = max(Delta * eta_minus, Delta_min)
        w = w - Delta_w            # revert the previous update
        dE = 0
    elif dE_prev * dE == 0:
        Delta_w = -sign(dE) * Delta
        w = w + Delta_w
    dE_prev = dE
    """
    w, Delta, Delta_w, dE_prev = _start(w, delta_0)
    trajectory = Trajectory(w)
    for t in range(num_steps):
        _, dE = _evaluate(loss_and_grad, t, w)
        for i in range(len(w)):
            for j in np.ndindex(w[i].shape):
                if dE_prev[i][j] * dE[i][j] > 0:
                    Delta[i][j] = min(Delta[i][j] * eta_plus, Delta_max)
                    Delta_w[i][j] = -_sign(dE[i][j]) * Delta[i][j]
                    w[i][j] = w[i][j] + Delta_w[i][j]
                elif dE_prev[i][j] * dE[i][j] < 0:
                    Delta[i][j] = max(Delta[i][j] * eta_minus, Delta_min)
                    w[i][j] = w[i][j] - Delta_w[i][j]
                    dE[i][j] = 0.0
                else:
                    Delta_w[i][j] = -_sign(dE[i][j]) * Delta[i][j]
                    w[i][j] = w[i][j] + Delta_w[i][j]
                dE_prev[i][j] = dE[i][j]
        trajectory.record(w)
    return trajectory.stacked()


def rprop_minus(w, loss_and_grad, num_steps, delta_0, eta_minus, eta_plus, Delta_min, Delta_max):
    """Rprop without weight backtracking::

    if dE_prev * dE > 0:
        Delta = min(Delta * eta_plus, Delta_max)
    elif dE_prev * dE < 0:
        Delta = max(Delta * eta_minus, Delta_min)
    w = w - sign(dE) * Delta
    dE_prev = dE
    """
    w, Delta, _, dE_prev = _start(w, delta_0)
    trajectory = Trajectory(w)
    for t in range(num_steps):
        _, dE = _evaluate(loss_and_grad, t, w)
        for i in range(len(w)):
            for j in np.ndindex(w[i].shape):
                if dE_prev[i][j] * dE[i][j] > 0:
                    Delta[i][j] = min(Delta[i][j] * eta_plus, Delta_max)
                elif dE_prev[i][j] * dE[i][j] < 0:
                    Delta[i][j] = max(Delta[i][j] * eta_minus, Delta_min)
                w[i][j] = w[i][j] - _sign(dE[i][j]) * Delta[i][j]
                dE_prev[i][j] = dE[i][j]
        trajectory.record(w)
    return trajectory.stacked()


def irprop_minus(w, loss_and_grad, num_steps, delta_0, eta_minus, eta_plus, Delta_min, Delta_max):
    """Improved Rprop without weight backtracking::

    if dE_prev * dE > 0:
        Delta = min(Delta * eta_plus, Delta_max)
    elif dE_prev * dE < 0:
        Delta = max(Delta * eta_minus, Delta_min)
        dE = 0
    w = w - sign(dE) * Delta
    dE_prev = dE
    """
    w, Delta, _, dE_prev = _start(w, delta_0)
    trajectory = Trajectory(w)
    for t in range(num_steps):
        _, dE = _evaluate(loss_and_grad, t, w)
        for i in range(len(w)):
            for j in np.ndindex(w[i].shape):
                if dE_prev[i][j] * dE[i][j] > 0:
                    Delta[i][j] = min(Delta[i][j] * eta_plus, Delta_max)
                elif dE_prev[i][j] * dE[i][j] < 0:
                    Delta[i][j] = max(Delta[i][j] * eta_minus, Delta_min)
                    dE[i][j] = 0.0
                w[i][j] = w[i][j] - _sign(dE[i][j]) * Delta[i][j]
                dE_prev[i][j] = dE[i][j]
        trajectory.record(w)
    return trajectory.stacked()


def irprop_plus(w, loss_and_grad, num_steps, delta_0, eta_minus, eta_plus, Delta_min, Delta_max):
    """Improved Rprop with weight backtracking::

        if dE_prev * dE > 0:
            Delta = min(Delta * eta_plus, Delta_max)
            Delta_w = -sign(dE) * Delta
            w = w + Delta_w
        elif dE_prev * dE < 0:
            Delta = max(Delta * eta_minus, Delta_min)
            if E(t) > E(t-1):
                w = w - Delta_w        # revert only if the error went up
            dE = 0
        elif dE_prev * dE == 0:
            Delta_w = -sign(dE) * Delta
            w = w + Delta_w
        dE_prev = dE

    ``E(t)`` is the error at the weights the derivative was taken at; one number
    for the whole network, compared with the previous iteration's.
    """
    w, Delta, Delta_w, dE_prev = _start(w, delta_0)
    E_prev = np.inf
    trajectory = Trajectory(w)
    for t in range(num_steps):
        E, dE = _evaluate(loss_and_grad, t, w)
        for i in range(len(w)):
            for j in np.ndindex(w[i].shape):
                if dE_prev[i][j] * dE[i][j] > 0:
                    Delta[i][j] = min(Delta[i][j] * eta_plus, Delta_max)
                    Delta_w[i][j] = -_sign(dE[i][j]) * Delta[i][j]
                    w[i][j] = w[i][j] + Delta_w[i][j]
                elif dE_prev[i][j] * dE[i][j] < 0:
                    Delta[i][j] = max(Delta[i][j] * eta_minus, Delta_min)
                    if E > E_prev:
                        w[i][j] = w[i][j] - Delta_w[i][j]
                    dE[i][j] = 0.0
                else:
                    Delta_w[i][j] = -_sign(dE[i][j]) * Delta[i][j]
                    w[i][j] = w[i][j] + Delta_w[i][j]
                dE_prev[i][j] = dE[i][j]
        E_prev = E
        trajectory.record(w)
    return trajectory.stacked()


VARIANTS = {
    "rprop+": rprop_plus,
    "rprop-": rprop_minus,
    "irprop+": irprop_plus,
    "irprop-": irprop_minus,
}
"""The four references by the name gradtx's ``variant`` uses."""
