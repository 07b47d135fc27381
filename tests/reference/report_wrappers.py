"""Prints how far gradtx's wrappers stray from their references.

Run from the repository root (about a minute on two cores)::

    python -m tests.reference.report_wrappers

It runs the trajectory cases of ``tests/test_masked_partition.py``,
``tests/test_apply_if_finite.py`` and ``tests/test_accumulate.py`` (same data,
hyperparameters and measure): ``max |gradtx - reference| / (|reference| + 1)``
over every step (120, or 240 micro-steps for ``accumulate``), both vmapped
learning rates, every leaf and element. The references (``wrappers.py``) wrap
the inner optimizer's own numpy reference; like ``report_deviations``, this
module drives gradtx on purpose.
"""

from __future__ import annotations

import pathlib
import sys


def _import_tests():
    root = str(pathlib.Path(__file__).resolve().parents[2])
    if root not in sys.path:  # run as a script: python tests/reference/report_wrappers.py
        sys.path.insert(0, root)
    from tests import test_accumulate, test_apply_if_finite, test_masked_partition

    return test_masked_partition, test_apply_if_finite, test_accumulate


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    )


def main() -> int:
    rows = []
    for module in _import_tests():
        rows.extend(module.report())
    print(_table(["method", "reference", "max deviation f64", "f32"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
