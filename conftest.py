"""Test-session set-up shared by the suite, the doctests and the subprocesses they start.

One XLA compilation cache per test run. Many tests compile the same program (the
same optimizer on the same small tree, in the contract, behaviour, tracing and
injection checks); with the cache, the second compile of an identical program is
read back instead of recompiled. The key is the program, the compile options, the
backend and jaxlib's version, so a hit runs the same executable. The cache lives
in a fresh temporary directory for the run (shared by the ``pytest-xdist`` workers
and by the Python subprocesses the tests start, through JAX's environment
variables) and is removed at the end, so a run never reads a program compiled by
an earlier one. Set ``GRADTX_TEST_XLA_CACHE=0`` to run without it.

Compiles are cheaper for the run: XLA:CPU's classic emitters instead of its
MLIR fusion emitters, LLVM's expensive passes off, and each program's machine
code generated as one LLVM module instead of several compiled on threads
(``--xla_cpu_use_fusion_emitters=false --xla_llvm_disable_expensive_passes=true
--xla_cpu_parallel_codegen_split_count=1``, added to ``XLA_FLAGS`` unless
``GRADTX_TEST_XLA_FLAGS=0``). Most of the suite's time is XLA compiling thousands
of tiny programs; the first two flags shorten the run by about a sixth. The third
saves the CPU time of splitting a module and joining the parts: with two
``pytest-xdist`` workers on two cores no core is idle for the parts to use (the
steps of the first 40 registry entries, compiled one by one: 1.19 s -> 0.87 s of
CPU, ``python tools/compile_profile.py entries``). They change how
fast the machine code runs, not what it computes: fast math stays off, so the
floating-point operations and their rounding are XLA's own (the suite passes with
and without them). The backend optimisation level stays at its default: level 0
together with the classic emitters miscompiled one of the suite's programs (a
centered RMSProp trajectory 20% off from the first step, plain and flattened
alike), so that pairing is not used. A jaxlib that does not know a flag would
abort every process, so the first process of the run tries the flags in a
subprocess and keeps only the ones that start. The speed checks (``-m perf``) run
with neither the cache nor these flags, as the benchmarks do.

The tests that take longest (a multi-device subprocess, the examples, whole
command-line runs) are scheduled first, so that the two ``pytest-xdist`` workers
finish together. The workers take tests in groups (``--dist loadgroup``, see
:func:`_xdist_group`): every test of one registry entry, or of one module that
computes something once for many of its tests, runs on one worker, so that the
work is done once per run rather than once per worker.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

_OWNER = "GRADTX_TEST_XLA_CACHE_OWNER"
_FAST_COMPILE = (
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_llvm_disable_expensive_passes=true",
    "--xla_cpu_parallel_codegen_split_count=1",
)
_FLAGS_CHOSEN = "GRADTX_TEST_XLA_FLAGS_CHOSEN"
# Modules whose tests take seconds each, or share one long fixture: run first.
_SLOW_FIRST = (
    "test_sharding.py",
    "test_examples.py",
    "test_examples_scripts.py",
    "test_flax_digits.py",
    "test_cli.py",
)
_SETTINGS = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def _starts_with(flags: list[str]) -> bool:
    """Whether JAX compiles with ``flags`` added to ``XLA_FLAGS`` (an unknown flag aborts)."""
    env = {**os.environ, "XLA_FLAGS": " ".join([os.environ.get("XLA_FLAGS", ""), *flags])}
    probe = "import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, check=False)
    return done.returncode == 0


def pytest_ignore_collect(collection_path, config):
    """``tests/parity`` (PyTorch and the authors' code) is collected only for ``-m parity``."""
    if "parity" in collection_path.parts:
        wanted = (config.getoption("-m", default="") or "").replace("not parity", "")
        return "parity" not in wanted
    return None


def pytest_configure(config):
    if "perf" in (config.getoption("-m", default="") or "").replace("not perf", ""):
        return  # the speed checks compile as a user's program does: no cache, default flags
    if os.environ.get("GRADTX_TEST_XLA_FLAGS") != "0" and _FLAGS_CHOSEN not in os.environ:
        # Workers and subprocesses inherit the controller's choice.
        os.environ[_FLAGS_CHOSEN] = "1"
        flags = os.environ.get("XLA_FLAGS", "")
        wanted = [flag for flag in _FAST_COMPILE if flag not in flags]
        usable = wanted if _starts_with(wanted) else [f for f in wanted if _starts_with([f])]
        os.environ["XLA_FLAGS"] = " ".join([flags, *usable]).strip()
    if os.environ.get("GRADTX_TEST_XLA_CACHE") == "0":
        return
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        # The first process of the run (the controller, or the only process
        # without xdist) makes the directory; workers and subprocesses inherit it.
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gradtx-xla-cache-")
        os.environ[_OWNER] = str(os.getpid())
        os.environ.update(_SETTINGS)
    import jax  # noqa: PLC0415  (after the environment, for a JAX imported earlier)

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    if os.environ.get(_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@functools.cache
def _shares_work(path) -> tuple[bool, bool]:
    """Whether a test module has a module-scoped fixture, and whether it caches
    results that several of its tests read (``functools.cache``)."""
    text = path.read_text() if path.suffix == ".py" else ""
    return 'scope="module"' in text, "functools.cache" in text


def _xdist_group(item) -> str | None:
    """The ``pytest-xdist`` group of a test under ``tests/``: its module where the
    module computes something once for many tests, else its registry entry (every
    test of one entry on one worker, so the per-entry caches of tests/registry.py
    fill once), else none."""
    path = item.path
    if path is None or path.parent.name != "tests" or item.get_closest_marker("xdist_group"):
        return None
    module_fixture, module_cache = _shares_work(path)
    if module_fixture:  # interleaving modules would set the fixture up again
        return f"module-{path.stem}"
    entry = getattr(getattr(item, "callspec", None), "params", {}).get("entry")
    if type(entry).__name__ == "Entry":
        return f"entry-{entry.name}"
    return f"module-{path.stem}" if module_cache else None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name if item.path is not None else ""
        return _SLOW_FIRST.index(name) if name in _SLOW_FIRST else len(_SLOW_FIRST)

    items.sort(key=rank)  # stable: the order within each module is kept
    for item in items:
        group = _xdist_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
