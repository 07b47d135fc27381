"""Runs every ```python block of one guide, in order, in one fresh namespace.

Usage: ``python docs/_ext/run_guide.py docs/guides/<name>.md``. The docs build
(docs/_ext/gradtx_jobs.py) runs it in a subprocess with a timeout. On an
exception it prints the guide's name, the failing block (its number and first
line in the file) with its code, and the traceback, and exits with status 1.
"""

from __future__ import annotations

import re
import sys
import traceback
from pathlib import Path

BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(text: str) -> list[tuple[int, str]]:
    """``(first line of the code in the file, code)`` for each ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def main(path: str) -> int:
    guide = Path(path)
    namespace: dict = {"__name__": "__main__"}
    found = blocks(guide.read_text(encoding="utf-8"))
    for number, (line, code) in enumerate(found, 1):
        # Line numbers in tracebacks are the guide's own.
        source = "\n" * (line - 1) + code
        try:
            exec(compile(source, str(guide), "exec"), namespace)  # noqa: S102 (our own guides)
        except BaseException:  # noqa: BLE001 (reported, then the build fails)
            print(
                f"{guide.name}: python block {number} of {len(found)} (line {line}) failed:\n"
                f"{code}\n{traceback.format_exc()}",
                file=sys.stderr,
            )
            return 1
    print(f"{guide.name}: {len(found)} python blocks ran")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
