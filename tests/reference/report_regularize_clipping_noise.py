"""Prints how far gradtx's penalties, clippings and gradient noise stray from their
references: the numpy loops, the closed forms of seed 003, scikit-learn and Optax.

Run from the repository root (about a minute on two cores)::

    python -m tests.reference.report_regularize_clipping_noise

It runs the cases of ``tests/test_regularize.py``, ``tests/test_clipping.py`` and
``tests/test_noise.py`` with the same data, hyperparameters and measures:

* trajectories: ``max |gradtx - reference| / (|reference| + 1)`` over 120 steps,
  every leaf and element (the numpy loops of ``regularize.py``, ``clipping.py``,
  ``noise.py`` in this folder);
* closed forms and scikit-learn: the largest absolute error of the final
  parameters or coefficients;
* Optax: the same trajectory measure, gradtx against Optax.

Like ``report_deviations``, this module drives gradtx on purpose; the references
it checks against import numpy only.
"""

from __future__ import annotations

import pathlib
import sys


def _import_tests():
    root = str(pathlib.Path(__file__).resolve().parents[2])
    if root not in sys.path:  # run as a script
        sys.path.insert(0, root)
    from tests import test_clipping, test_noise, test_regularize

    return test_regularize, test_clipping, test_noise


def _fmt(value: float) -> str:
    return f"{value:.1e}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    )


def _trajectories(reg, clip, noise) -> str:
    rows = []
    for module in (reg, clip):
        by_method: dict[tuple[str, str], list[float]] = {}
        for case in module.CASES:
            f64 = module.case_deviation(case, "float64")
            f32 = module.case_deviation(case, "float32")
            worst = by_method.setdefault((case.method, case.reference), [0.0, 0.0])
            worst[0], worst[1] = max(worst[0], f64), max(worst[1], f32)
        rows += [[m, r, _fmt(a), _fmt(b)] for (m, r), (a, b) in by_method.items()]
    rows.append(
        [
            "add_noise",
            "Neelakantan et al. 2015 Sec. 2",
            _fmt(noise.case_deviation("float64")),
            _fmt(noise.case_deviation("float32")),
        ]
    )
    return _table(["method", "reference", "max deviation f64", "f32"], rows)


def _closed_forms(reg) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np

    rows = []
    alpha, w_star = 2.0, np.array([1.0, -2.0, 3.0])
    closed = np.linalg.solve(reg.SEED_H + alpha * np.eye(3), reg.SEED_H @ w_star)
    cells = []
    for dtype in ("float64", "float32"):
        with jax.enable_x64(dtype == "float64"):
            h, target = jnp.asarray(reg.SEED_H, dtype), jnp.asarray(w_star, dtype)
            w = reg._descend(
                lambda: reg.gradtx.chain(reg.add_decayed_weights(alpha), reg.gradtx.sgd(0.15)),
                lambda w, h=h, target=target: h @ (w - target),
                jnp.zeros(3, dtype),
                300,
            )
        cells.append(_fmt(float(np.max(np.abs(np.asarray(w, np.float64) - closed)))))
    rows.append(["L2: (H + aI)^-1 H w* (seed H, a=2)", "add_decayed_weights + sgd", *cells])

    closed = reg._l1_closed()
    cells, zeros = [], []
    for dtype in ("float64", "float32"):
        w = reg._l1_run(
            lambda: reg.gradtx.chain(
                reg.gradtx.sgd(reg.L1_LR), reg.proximal_l1(reg.L1_ALPHA, reg.L1_LR)
            ),
            dtype,
        )
        cells.append(_fmt(max(float(np.max(np.abs(w[k] - closed[k]))) for k in closed)))
        exact = all(np.array_equal(w[k] == 0, closed[k] == 0) for k in closed)
        zeros.append(exact)
    count = sum(int(np.sum(closed[k] == 0)) for k in closed)
    rows.append(
        [
            f"L1: sign(w*) max(|w*| - a/H, 0) ({count} exact zeros: {all(zeros)})",
            "sgd + proximal_l1 (ISTA)",
            *cells,
        ]
    )

    want = reg.sklearn_coefficients()
    for l2_as_gradient, how in [(False, "proximal_elastic_net"), (True, "decay + proximal_l1")]:
        got64 = reg.elastic_net_by_ista("float64", l2_as_gradient=l2_as_gradient)
        got32 = reg.elastic_net_by_ista("float32", l2_as_gradient=l2_as_gradient)
        for (a, r), w64, w32, ref in zip(reg.SKLEARN_SETTINGS, got64, got32, want, strict=True):
            same_zeros = np.array_equal(w64 == 0, ref == 0)
            rows.append(
                [
                    f"sklearn ElasticNet(alpha={a}, l1_ratio={r}), zeros equal: {same_zeros}",
                    f"ISTA, {how}",
                    _fmt(float(np.max(np.abs(w64 - ref)))),
                    _fmt(float(np.max(np.abs(w32 - ref)))),
                ]
            )
    return _table(["closed form", "gradtx", "max abs error f64", "f32"], rows)


def _optax(reg, clip, noise) -> str:
    rows = []
    for name, ours, theirs in clip.OPTAX_CASES:
        cells = []
        for dtype in ("float64", "float32"):
            a, b = clip.optax_deviation(ours, theirs, dtype)
            cells.append(_fmt(clip.deviation(a, b)))
        rows.append([f"{name} + sgd", f"optax.{name.split('-')[0]} + sgd", *cells])
    for lr, label in [(0.02, "lr 0.02"), (reg.lr_schedule, "lr schedule")]:
        cells = []
        for dtype in ("float64", "float32"):
            a = reg.gradtx_trajectory(reg._decoupled_adamw(lr, 0.1, reg.MASK), dtype)
            b = reg.gradtx_trajectory(reg.optax.adamw(lr, weight_decay=0.1, mask=reg.MASK), dtype)
            cells.append(_fmt(reg.deviation(a, b)))
        rows.append([f"adam + decoupled_weight_decay, {label}", "optax.adamw", *cells])
    a = noise.trajectory(noise.add_noise(noise.ETA, noise.GAMMA, key=noise.SEED), "float32")
    b = noise.trajectory(noise.optax.add_noise(noise.ETA, noise.GAMMA, key=noise.SEED), "float32")
    rows.append(
        [
            "add_noise + sgd",
            "optax.add_noise + sgd",
            "n/a (draws differ)",
            _fmt(noise.deviation(a, b)),
        ]
    )
    return _table(["gradtx", "optax", "max deviation f64", "f32"], rows)


def main() -> int:
    reg, clip, noise = _import_tests()
    print("Trajectories (120 steps; max |gradtx - ref| / (|ref| + 1)):\n")
    print(_trajectories(reg, clip, noise))
    print("\nClosed forms (seed 003) and scikit-learn (final parameters):\n")
    print(_closed_forms(reg))
    print("\ngradtx vs Optax (same trajectory measure):\n")
    print(_optax(reg, clip, noise))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
