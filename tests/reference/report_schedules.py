"""Prints how far each gradtx schedule and reduce_on_plateau stray from their references.

Run from the repository root (a few seconds)::

    python -m tests.reference.report_schedules

The table is the one of ``python -m tests.test_schedules``: every case of
``tests/test_schedules.py`` (closed forms, float64 and float32, and Optax) and
of ``tests/test_plateau.py`` (the numpy state machine, and Optax on positive
losses), with the same measure as the tests.
"""

from __future__ import annotations

import pathlib
import sys


def main() -> None:
    root = str(pathlib.Path(__file__).resolve().parents[2])
    if root not in sys.path:  # run as a script: python tests/reference/report_schedules.py
        sys.path.insert(0, root)
    from tests import test_schedules

    test_schedules.report()


if __name__ == "__main__":
    main()
