"""Prints gradtx's second-order methods against scipy.optimize on the four problems of issue 5.

Run from the repository root (well under a minute)::

    python -m tests.reference.report_second_order

One row per problem and method, from the runs of ``tests/test_second_order_scipy.py``
(float64, ``minimize`` with ``tol=1e-9`` on the gradient's 2-norm): gradtx's
iterations (updates applied) and whether it met the tolerance, scipy's
counterpart method and its iterations (``nit``), the largest deviation of
gradtx's parameters from that scipy answer and from the most accurate scipy
answer (the target of the tests), and the final gradient norm (numpy, float64).

Like the other ``report_*`` modules this one drives gradtx on purpose; the
references it sits beside import numpy only.
"""

from __future__ import annotations

import pathlib
import sys


def _import_tests():
    root = str(pathlib.Path(__file__).resolve().parents[2])
    if root not in sys.path:  # run as a script: python tests/reference/report_second_order.py
        sys.path.insert(0, root)
    from tests import second_order_problems, test_second_order_scipy

    return second_order_problems, test_second_order_scipy


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    )


def rows() -> list[list[str]]:
    """One row per (problem, method)."""
    import numpy as np

    problems, t = _import_tests()
    out = []
    for name, problem in problems.PROBLEMS.items():
        best = t.scipy_minimiser(name)
        for method, (_, scipy_method) in t.METHODS.items():
            result = t.run(method, name)
            x = problem.flatten(result.params)
            theirs = problems.scipy_result(name, scipy_method)
            out.append(
                [
                    name,
                    method,
                    str(int(result.num_steps)),
                    "yes" if bool(result.converged) else "no",
                    scipy_method,
                    str(int(theirs.nit)),
                    f"{np.max(np.abs(x - theirs.x)):.1e}",
                    f"{np.max(np.abs(x - best)):.1e}",
                    f"{np.linalg.norm(problem.jac(x)):.1e}",
                ]
            )
    return out


def main() -> None:
    header = [
        "problem",
        "gradtx method",
        "gradtx its",
        "|g| <= 1e-9",
        "scipy method",
        "scipy nit",
        "max |x - x_scipy(method)|",
        "max |x - x_scipy(best)|",
        "final |g|",
    ]
    print(_table(header, rows()))


if __name__ == "__main__":
    main()
