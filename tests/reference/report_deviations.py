"""Prints how far each gradtx optimizer strays from its independent numpy reference.

Run from the repository root (about a minute on two cores)::

    python -m tests.reference.report_deviations            # one row per optimizer
    python -m tests.reference.report_deviations --cases    # one row per case
    python -m tests.reference.report_deviations --optax    # gradtx vs Optax instead

It runs exactly the cases of ``tests/test_reference_trajectories.py`` (same
data, same hyperparameters, same measure) and prints a Markdown table. The
deviation of a run is ``max |gradtx - reference| / (|reference| + 1)`` over every
step, leaf and element; a row reports the largest over its cases.

This is the one module of ``tests/reference`` that imports gradtx: the
references themselves import numpy only.
"""

from __future__ import annotations

import argparse
import pathlib
import sys


def _import_cases():
    root = str(pathlib.Path(__file__).resolve().parents[2])
    if root not in sys.path:  # run as a script: python tests/reference/report_deviations.py
        sys.path.insert(0, root)
    from tests import test_reference_trajectories

    return test_reference_trajectories


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1e}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    )


def _optax_report() -> None:
    """gradtx vs Optax on the cases of tests/test_optax_parity.py."""
    import jax
    import jax.numpy as jnp

    from tests import test_optax_parity as t

    print(
        f"gradtx vs Optax: {t.STEPS} jitted steps of a loss with noisy gradients on a "
        "4-leaf pytree, every step compared.\n"
        "deviation = max |gradtx - optax| / (|optax| + 1), as for the references.\n"
    )

    def deviation(ours, theirs):
        gaps = jax.tree.map(
            lambda a, b: float(jnp.max(jnp.abs(a - b) / (jnp.abs(b) + 1))), ours, theirs
        )
        return max(jax.tree.leaves(gaps))

    rows = []
    for case in t.CASES:
        f32 = deviation(*t.run_both(case.ours, case.theirs, jnp.float32, case.step))
        with jax.enable_x64(True):
            f64 = deviation(*t.run_both(case.ours, case.theirs, jnp.float64, case.step))
        rows.append([repr(case), _fmt(f64), _fmt(f32)])
    print(_table(["case", "max rel deviation f64", "f32"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", action="store_true", help="one row per case")
    parser.add_argument("--optax", action="store_true", help="compare with Optax instead")
    args = parser.parse_args(argv)
    if args.optax:
        _import_cases()  # puts the repository root on sys.path when run as a script
        _optax_report()
        return 0
    t = _import_cases()

    per_row: dict[tuple[str, str], dict] = {}
    case_rows = []
    for case in t.CASES:
        found = {dtype: t.case_deviation(case, dtype) for dtype in case.dtypes}
        key = (case.optimizer, case.reference)
        row = per_row.setdefault(key, {"cases": 0, "float64": None, "float32": None})
        row["cases"] += 1
        for dtype, value in found.items():
            row[dtype] = value if row[dtype] is None else max(row[dtype], value)
        case_rows.append(
            [case.id, case.reference, _fmt(found.get("float64")), _fmt(found.get("float32"))]
        )

    print(
        f"gradtx vs independent float64 numpy references: {t.NUM_STEPS} steps of random "
        f"gradients on a {len(t.THETA0)}-leaf pytree, every step compared.\n"
        f"deviation = max |gradtx - reference| / (|reference| + {t.SCALE:g}); "
        f"tolerance {t.RTOL['float64']:g} (float64, x64 enabled), "
        f"{t.RTOL['float32']:g} (float32).\n"
    )
    if args.cases:
        header = ["case", "reference", "max rel deviation f64", "f32"]
        print(_table(header, case_rows))
    else:
        header = ["optimizer", "reference", "cases", "max rel deviation f64", "f32"]
        rows = [
            [name, ref, str(r["cases"]), _fmt(r["float64"]), _fmt(r["float32"])]
            for (name, ref), r in per_row.items()
        ]
        print(_table(header, rows))

    print(
        f"\nNesterov on an ill-conditioned quadratic (cond 1e3, {t.QUAD_STEPS} steps, float64): "
        "gradtx's params vs theta_t + alpha v_t of the literal run (gradient at the interim "
        "point).\n"
    )
    theta0 = t._split(t.QUAD_X0)
    quad_rows = []
    for name, make, epsilon in t.NESTEROV_ON_QUADRATIC:
        theta, v = t.R.sgd.nesterov_literal(
            theta0, t.quad_grad_numpy, epsilon, t.ALPHA, num_steps=t.QUAD_STEPS
        )
        phi = t.gradtx_on_quadratic(make())
        quad_rows.append(
            [name, "Alg. 8.3 literal", _fmt(t.deviation(phi, t.interim((theta, v), t.ALPHA)))]
        )
    for name, make, kwargs in t.RMSPROP_NESTEROV_ON_QUADRATIC:
        theta, v = t.R.rmsprop.rmsprop_nesterov(
            theta0, t.quad_grad_numpy, rho=t.RHO, alpha=t.ALPHA, num_steps=t.QUAD_STEPS, **kwargs
        )
        phi = t.gradtx_on_quadratic(make())
        quad_rows.append(
            [name, "Alg. 8.6 literal", _fmt(t.deviation(phi, t.interim((theta, v), t.ALPHA)))]
        )
    print(_table(["gradtx", "reference", "max rel deviation f64"], quad_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
