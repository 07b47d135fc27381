"""Prints how far Lookahead, Ranger and the parameter averages stray from their references.

Run from the repository root::

    python -m tests.reference.report_lookahead            # one row per method
    python -m tests.reference.report_lookahead --cases    # one row per case

It runs the cases of ``tests/test_lookahead.py`` and ``tests/test_averaging.py``
(same data, same measure) and prints Markdown tables. The deviation of a run is
``max |gradtx - reference| / (|reference| + 1)`` over every step, leaf and
element, for the fast weights (the params) and the slow weights alike; a row
reports the largest over its cases.

Like ``report_deviations``, this module drives gradtx on purpose; the reference
it compares with (``tests/reference/lookahead.py``) imports numpy only.
"""

from __future__ import annotations

import argparse
import pathlib
import sys


def _import_tests():
    root = str(pathlib.Path(__file__).resolve().parents[2])
    if root not in sys.path:  # run as a script: python tests/reference/report_lookahead.py
        sys.path.insert(0, root)
    from tests import test_averaging, test_lookahead

    return test_lookahead, test_averaging


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1e}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    )


def _merge(rows: dict, key: tuple[str, str], case: str, dtype: str, value: float) -> None:
    """Folds one run into its row: the largest deviation per dtype, the cases seen."""
    row = rows.setdefault(key, {"cases": set(), "float64": None, "float32": None})
    row["cases"].add(case)
    row[dtype] = value if row[dtype] is None else max(row[dtype], value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", action="store_true", help="one row per case")
    args = parser.parse_args(argv)
    t, a = _import_tests()
    import numpy as np

    per_method: dict[tuple[str, str], dict] = {}
    case_rows = []
    alg1 = "Zhang et al. 2019 Alg. 1 (numpy)"

    for case in t.CASES:
        method = "ranger" if case.whole is not None else f"lookahead({case.inner})"
        reference = alg1 + (" + Liu et al. Alg. 2" if case.whole is not None else "")
        found = {dtype: t.case_deviation(case, dtype) for dtype in case.dtypes}
        for dtype, value in found.items():
            _merge(per_method, (method, reference), case.id, dtype, value)
        case_rows.append(
            [case.id, reference, _fmt(found.get("float64")), _fmt(found.get("float32"))]
        )

    def optax_gap(run):
        fast, slow, their_fast, their_slow = t.optax_deviation(*run)
        import jax

        return max(
            t.deviation([np.asarray(x, np.float64)], [np.asarray(y, np.float64)])
            for ours, theirs in [(fast, their_fast), (slow, their_slow)]
            for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True)
        )

    key = ("lookahead (fast + slow)", "optax.lookahead + LookaheadParams")
    for run in t.OPTAX_RUNS:
        name, k, alpha, reset, dtype = run
        value = optax_gap(run)
        case_id = f"optax-{name}-k{k}-a{alpha}{'-reset' if reset else ''}"
        _merge(per_method, key, case_id, dtype, value)
        case_rows.append(
            [case_id, key[1]] + ([_fmt(value), ""] if dtype == "float64" else ["", _fmt(value)])
        )

    for inner, decay, debias, dtype in a.RUNS:
        params, average = a.gradtx_run(inner, decay, debias, dtype)
        if dtype == "float64":
            reference = a.R.run(a.THETA0, a.GRADS_BY_STEP, a.INNERS[inner][1]())
            ref_name = "numpy average of the float64 reference run"
        else:
            reference = params
            ref_name = "numpy average of gradtx's own iterates"
        want = [a.numpy_average(leaf, decay, debias) for leaf in reference]
        value = a.deviation(average, want)
        kind = "uniform" if decay is None else ("EMA debiased" if debias else "EMA")
        method = f"average_params({kind})"
        row_key = (method, "numpy mean / EMA of the iterates")
        case_id = f"{inner}-{kind}-{decay}"
        _merge(per_method, row_key, case_id, dtype, value)
        case_rows.append(
            [case_id, ref_name] + ([_fmt(value), ""] if dtype == "float64" else ["", _fmt(value)])
        )

    print(
        f"gradtx vs references: {t.NUM_STEPS} steps (averages: {a.NUM_STEPS}; Optax: "
        f"{t.OPTAX_STEPS}) on a {len(t.THETA0)}-leaf pytree, every step compared.\n"
        "deviation = max |gradtx - reference| / (|reference| + 1); tolerance 1e-10 "
        "(float64, x64 enabled), 1e-5 (float32); Optax: 1e-12 / 1e-6 (+ atol 1e-13 / 5e-7).\n"
    )
    if args.cases:
        print(_table(["case", "reference", "max rel deviation f64", "f32"], case_rows))
    else:
        header = ["method", "reference", "cases", "max rel deviation f64", "f32"]
        rows = [
            [name, ref, str(len(r["cases"])), _fmt(r["float64"]), _fmt(r["float32"])]
            for (name, ref), r in per_method.items()
        ]
        print(_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
