"""The programs the documentation build runs, each in a subprocess with a timeout.

* ``gradtx compare`` on digits (:data:`COMPARE_ARGS`): its learning curves become
  ``<outdir>/_static/compare/compare-digits.png``, shown on the index page
  (``.. compare-curves::``).
* every guide's ```python blocks, concatenated in one fresh namespace per guide
  (docs/_ext/run_guide.py);
* every script of examples/, in its quickest mode (:data:`EXAMPLES`).

They start on ``builder-inited`` in a pool of :data:`WORKERS` threads, each
waiting on one subprocess, so they run while Sphinx reads and writes the pages;
``build-finished`` waits for them. A nonzero exit or a timeout fails the build
with the job's name and the tail of its output (for a guide: the failing block
and its traceback). Each runs in a fresh temporary directory, so nothing lands
in the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDES = ROOT / "docs" / "guides"
COMPARE_DIR = ("_static", "compare")
WORKERS = 2
TIMEOUT_S = 180

# The README's "The command line" picture: every optimizer of gradtx compare on
# digits, fewer steps than its default 500 to keep the build short.
COMPARE_STEPS = 100
COMPARE_ARGS = (
    "compare",
    "--problem",
    "digits",
    "--optimizers",
    "all",
    "--steps",
    str(COMPARE_STEPS),
    "--plain",
    "--no-progress",
)

# Every script of examples/, in its quick mode (``--quick``) cut down further with
# the script's own options to the fewest epochs (or trials) that still run every
# line: the build checks that the examples run, not how well they train (their
# ``--quick`` runs take 12 to 21 s each on 2 CPU cores). A script left out would
# need a line here saying why; tests/test_docs_site.py checks the table covers
# examples/.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "early_stopping.py": ("--quick", "--max-epochs", "5"),
    "linen_digits.py": ("--quick", "--epochs", "2"),
    "lr_search.py": ("--quick", "--trials", "2", "--epochs", "2"),
    "nnx_digits.py": ("--quick", "--epochs", "2"),
    "second_order_logreg.py": (),  # no quick mode: about 10 s as it is
}


def jobs(outdir: Path) -> list[tuple[str, list[str]]]:
    """``(name, argv)`` of every job, the longest first."""
    python = sys.executable
    out = str(outdir.joinpath(*COMPARE_DIR))
    compare = [python, "-m", "gradtx_cli", *COMPARE_ARGS, "--out", out]
    found = [("gradtx compare (index page's learning curves)", compare)]
    for script, args in EXAMPLES.items():
        found.append((f"examples/{script}", [python, str(ROOT / "examples" / script), *args]))
    runner = str(Path(__file__).resolve().parent / "run_guide.py")
    for guide in sorted(GUIDES.glob("*.md")):
        found.append((f"docs/guides/{guide.name}", [python, runner, str(guide)]))
    return found


def _run(name: str, argv: list[str]) -> tuple[str, int | None, str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("MPLBACKEND", "Agg")
    # One XLA thread per job: the jobs run side by side, so they share the cores.
    env["XLA_FLAGS"] = " ".join(
        filter(None, [env.get("XLA_FLAGS"), "--xla_cpu_multi_thread_eigen=false"])
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gradtx-docs-") as cwd:
        try:
            done = subprocess.run(
                argv,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as error:
            out = error.stdout or ""
            out = out.decode(errors="replace") if isinstance(out, bytes) else out
            return name, None, out, time.perf_counter() - start
    return name, done.returncode, done.stdout, time.perf_counter() - start


class Runner:
    """The build's jobs, started together and awaited together."""

    def __init__(self) -> None:
        self.pool: ThreadPoolExecutor | None = None
        self.futures: list[Future] = []

    def start(self, outdir: Path) -> None:
        outdir.joinpath(*COMPARE_DIR).mkdir(parents=True, exist_ok=True)
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="gradtx-docs")
        self.futures = [self.pool.submit(_run, name, argv) for name, argv in jobs(outdir)]

    def finish(self, cancel: bool = False) -> tuple[list[str], list[str]]:
        """``(failure messages, one timing line per job)`` once every job has ended;
        with ``cancel`` (the build failed already), the jobs not yet started never start."""
        failures, timings = [], []
        if cancel and self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        for future in self.futures:
            if future.cancelled():
                continue
            name, code, out, seconds = future.result()
            timings.append(f"{name}: {seconds:.1f} s")
            if code == 0:
                continue
            why = f"timed out after {TIMEOUT_S} s" if code is None else f"exited with {code}"
            failures.append(f"{name} {why}:\n{out[-6000:]}")
        if self.pool is not None:
            self.pool.shutdown()
        self.pool, self.futures = None, []
        return failures, timings
