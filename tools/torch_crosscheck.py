"""Cross-check against torch.optim, for developers who have torch installed.

Not part of the test suite (torch is not a test dependency). Run with
``python tools/torch_crosscheck.py``: it prints the largest absolute
parameter deviation over 300 float64 steps on a quadratic with condition number
100, for each gradtx configuration that selects PyTorch's convention.
"""

import jax
import jax.numpy as jnp
import numpy as np
import torch

import gradtx

STEPS = 300

CASES = [
    (
        "nadam (Dozat schedule)",
        lambda: gradtx.nadam(0.01),
        lambda p: torch.optim.NAdam([p], lr=0.01, momentum_decay=0.004),
    ),
    ("adamax", lambda: gradtx.adamax(0.01), lambda p: torch.optim.Adamax([p], lr=0.01)),
    (
        "amsgrad (max before correction)",
        lambda: gradtx.amsgrad(0.01, max_before_bias_correction=True),
        lambda p: torch.optim.Adam([p], lr=0.01, amsgrad=True),
    ),
    (
        "rmsprop (centered, momentum, eps outside)",
        lambda: gradtx.rmsprop(0.01, decay=0.99, eps_in_sqrt=False, centered=True, momentum=0.9),
        lambda p: torch.optim.RMSprop([p], lr=0.01, alpha=0.99, centered=True, momentum=0.9),
    ),
    (
        "adagrad (r0 = 0, eps outside)",
        lambda: gradtx.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-10, eps_in_sqrt=False),
        lambda p: torch.optim.Adagrad([p], lr=0.1),
    ),
    ("adadelta", lambda: gradtx.adadelta(1.0), lambda p: torch.optim.Adadelta([p], lr=1.0)),
    (
        "sgd (nesterov)",
        lambda: gradtx.sgd(0.01, momentum=0.9, nesterov=True),
        lambda p: torch.optim.SGD([p], lr=0.01, momentum=0.9, nesterov=True),
    ),
]


def max_deviation(make_gradtx, make_torch) -> float:
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=5)
    hessian = np.diag(np.logspace(0, 2, 5))
    p = torch.tensor(x0.copy(), requires_grad=True, dtype=torch.float64)
    opt = make_torch(p)
    tx = make_gradtx()
    w = jnp.asarray(x0)
    state = tx.init(w)
    worst = 0.0
    for _ in range(STEPS):
        opt.zero_grad()
        (0.5 * p @ torch.tensor(hessian) @ p).backward()
        opt.step()
        updates, state = tx.update(jnp.asarray(hessian @ np.asarray(w)), state, w)
        w = gradtx.apply_updates(w, updates)
        worst = max(worst, float(np.max(np.abs(np.asarray(w) - p.detach().numpy()))))
    return worst


def main() -> None:
    with jax.enable_x64(True):
        for name, make_gradtx, make_torch in CASES:
            print(f"{name:45s} {max_deviation(make_gradtx, make_torch):.1e}")


if __name__ == "__main__":
    main()
