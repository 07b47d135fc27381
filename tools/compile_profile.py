"""Where the test suite's time goes: XLA compilations, counted and timed per program.

Used as a pytest plugin, it wraps JAX's backend compile and, when the session ends,
writes one JSON file per process (``GRADTX_COMPILE_PROFILE_DIR``, default the
system's temporary directory): for each program name (``jit_<function>``), the
number of compilations and their CPU seconds, and the process's CPU seconds; the
CPU seconds of the persistent compilation cache's key, reads and writes, and its
hits (a hit is not a compilation and is not counted as one); and for each test
function (all its parametrizations together) its CPU seconds, the part spent
compiling and the number of compilations. Then
``python tools/compile_profile.py summary [DIR]`` adds the files up.

    python -m pytest -p tools.compile_profile -p no:cacheprovider
    python tools/compile_profile.py summary

``python tools/compile_profile.py entries [N]`` compiles the step of the first
``N`` registry entries (default 40) one program each, then all in one program,
and prints the CPU seconds of lowering and of compiling both ways, under the
``XLA_FLAGS`` of the environment (compare flags by running it twice).

The wrapped functions are private ones of JAX (``jax._src.compiler``); a JAX that
renames them makes the plugin fail at start, not give wrong numbers.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import sys
import tempfile
import time

import pytest

_DIR_VARIABLE = "GRADTX_COMPILE_PROFILE_DIR"
_SECONDS: collections.Counter = collections.Counter()
_COUNTS: collections.Counter = collections.Counter()
# Per test function (``path::name``, parameters dropped): CPU seconds of the whole
# test (setup, call and teardown), of its compilations, and their number.
_TEST_CPU: collections.Counter = collections.Counter()
_TEST_COMPILE: collections.Counter = collections.Counter()
_TEST_COMPILES: collections.Counter = collections.Counter()
_CURRENT = ["(collection)"]
_ITEM_CPU: collections.Counter = collections.Counter()  # per test id, parameters kept


def _directory() -> pathlib.Path:
    return pathlib.Path(os.environ.get(_DIR_VARIABLE, tempfile.gettempdir()))


def _program_name(module) -> str:
    try:
        return str(module.operation.attributes["sym_name"]).strip('"')
    except (AttributeError, KeyError):
        return "?"


def pytest_configure(config):
    from jax._src import compiler  # noqa: PLC0415

    compile_and_load = compiler.backend_compile_and_load

    def timed(backend, module, *args, **kwargs):
        start = time.process_time()
        try:
            return compile_and_load(backend, module, *args, **kwargs)
        finally:
            name, spent = _program_name(module), time.process_time() - start
            _SECONDS[name] += spent
            _COUNTS[name] += 1
            _TEST_COMPILE[_CURRENT[0]] += spent
            _TEST_COMPILES[_CURRENT[0]] += 1

    compiler.backend_compile_and_load = timed

    # The persistent compilation cache's own costs: the key (a hash of the
    # serialized program), reads (hits and misses) and writes.
    for name in ("_resolve_compilation_strategy", "_cache_read", "_cache_write"):
        setattr(compiler, name, _timed_cache_step(name, getattr(compiler, name)))


_CACHE_SECONDS: collections.Counter = collections.Counter()
_CACHE_COUNTS: collections.Counter = collections.Counter()


def _timed_cache_step(name, function):
    def timed(*args, **kwargs):
        start = time.process_time()
        result = function(*args, **kwargs)
        _CACHE_SECONDS[name] += time.process_time() - start
        _CACHE_COUNTS[name] += 1
        if name == "_cache_read" and result[0] is not None:
            _CACHE_COUNTS["hits"] += 1
        return result

    return timed


def _test_function(item) -> str:
    return item.nodeid.split("[", 1)[0]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _CURRENT[0] = _test_function(item)
    start = time.process_time()
    yield
    spent = time.process_time() - start
    _TEST_CPU[_CURRENT[0]] += spent
    _ITEM_CPU[item.nodeid] += spent
    _CURRENT[0] = "(between tests)"


def pytest_sessionfinish(session):
    report = {
        "seconds": _SECONDS,
        "counts": _COUNTS,
        "process_cpu": time.process_time(),
        "test_cpu": _TEST_CPU,
        "test_compile": _TEST_COMPILE,
        "test_compiles": _TEST_COMPILES,
        "item_cpu": _ITEM_CPU,
        "cache_seconds": _CACHE_SECONDS,
        "cache_counts": _CACHE_COUNTS,
    }
    path = _directory() / f"gradtx-compile-profile-{os.getpid()}.json"
    path.write_text(json.dumps(report))


def summary(directory: pathlib.Path, top: int = 30) -> None:
    seconds, counts, cpu = collections.Counter(), collections.Counter(), 0.0
    test_cpu, test_compile, test_compiles = (collections.Counter() for _ in range(3))
    cache_seconds, cache_counts = collections.Counter(), collections.Counter()
    for path in sorted(directory.glob("gradtx-compile-profile-*.json")):
        report = json.loads(path.read_text())
        seconds.update(report["seconds"])
        counts.update(report["counts"])
        cpu += report["process_cpu"]
        test_cpu.update(report.get("test_cpu", {}))
        test_compile.update(report.get("test_compile", {}))
        test_compiles.update(report.get("test_compiles", {}))
        cache_seconds.update(report.get("cache_seconds", {}))
        cache_counts.update(report.get("cache_counts", {}))
    total = sum(seconds.values())
    print(f"CPU of the profiled processes: {cpu:.1f} s; compiling: {total:.1f} s")
    print(f"({sum(counts.values())} compilations of {len(counts)} program names)")
    for name, spent in seconds.most_common(top):
        print(f"{spent:8.1f} s {counts[name]:6d}  {name}")
    if cache_counts:
        hits, reads = cache_counts["hits"], cache_counts["_cache_read"]
        print(f"\nPersistent cache: {hits} hits in {reads} reads")
        for name in ("_resolve_compilation_strategy", "_cache_read", "_cache_write"):
            print(f"{cache_seconds[name]:8.1f} s {cache_counts[name]:6d}  {name}")
    if test_cpu:
        print(f"\nTest functions by CPU (all parametrizations; {sum(test_cpu.values()):.1f} s):")
        print("     CPU  compiling  compilations  test")
        for name, spent in test_cpu.most_common(top):
            print(f"{spent:8.1f} {test_compile[name]:10.1f} {test_compiles[name]:13d}  {name}")


def entries(number: int) -> None:
    import jax  # noqa: PLC0415

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    import gradtx  # noqa: PLC0415
    from tests.registry import REGISTRY, tiny_grads, tiny_params  # noqa: PLC0415

    params, grads = tiny_params(), tiny_grads(0)
    txs = [entry.make() for entry in REGISTRY[:number]]

    def step_of(tx):
        def step(p, s, g):
            updates, s = tx.update(g, s, p)
            return gradtx.apply_updates(p, updates), s

        return step

    def lower_and_compile(fn, *args) -> tuple[float, float]:
        start = time.process_time()
        lowered = jax.jit(fn).lower(*args)
        lowered_at = time.process_time()
        lowered.compile()
        return lowered_at - start, time.process_time() - lowered_at

    apart = [lower_and_compile(step_of(tx), params, tx.init(params), grads) for tx in txs]
    states = [tx.init(params) for tx in txs]
    steps = [step_of(tx) for tx in txs]
    together = lower_and_compile(
        lambda p, ss, g: [step(p, s, g) for step, s in zip(steps, ss, strict=True)],
        params,
        states,
        grads,
    )
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    lowering, compiling = (sum(part) for part in zip(*apart, strict=True))
    n = len(txs)
    print(f"{n} entries, one program each: lower {lowering:.2f} s, compile {compiling:.2f} s")
    print(f"{n} entries, one program: lower {together[0]:.2f} s, compile {together[1]:.2f} s")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "summary"
    if command == "summary":
        summary(pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else _directory())
    elif command == "entries":
        entries(int(sys.argv[2]) if len(sys.argv) > 2 else 40)
    else:
        sys.exit(f"unknown command {command!r}: summary [DIR] or entries [N]")
