"""Where the test suite's time goes: XLA compilations, counted and timed per program.

Used as a pytest plugin, it wraps JAX's backend compile and, when the session ends,
writes one JSON file per process (``GRADTX_COMPILE_PROFILE_DIR``, default the
system's temporary directory): for each program name (``jit_<function>``), the
number of compilations and their CPU seconds, and the process's CPU seconds. A
cache hit of the persistent compilation cache is not a compilation and is not
counted. Then ``python tools/compile_profile.py summary [DIR]`` adds the files up.

    python -m pytest -p tools.compile_profile -p no:cacheprovider
    python tools/compile_profile.py summary

``python tools/compile_profile.py entries [N]`` compiles the step of the first
``N`` registry entries (default 40) one program each, then all in one program,
and prints the CPU seconds of lowering and of compiling both ways, under the
``XLA_FLAGS`` of the environment (compare flags by running it twice).

The wrapped function is a private one of JAX (``jax._src.compiler``); a JAX that
renames it makes the plugin fail at import, not give wrong numbers.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import sys
import tempfile
import time

_DIR_VARIABLE = "GRADTX_COMPILE_PROFILE_DIR"
_SECONDS: collections.Counter = collections.Counter()
_COUNTS: collections.Counter = collections.Counter()


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
            name = _program_name(module)
            _SECONDS[name] += time.process_time() - start
            _COUNTS[name] += 1

    compiler.backend_compile_and_load = timed


def pytest_sessionfinish(session):
    report = {"seconds": _SECONDS, "counts": _COUNTS, "process_cpu": time.process_time()}
    path = _directory() / f"gradtx-compile-profile-{os.getpid()}.json"
    path.write_text(json.dumps(report))


def summary(directory: pathlib.Path, top: int = 30) -> None:
    seconds, counts, cpu = collections.Counter(), collections.Counter(), 0.0
    for path in sorted(directory.glob("gradtx-compile-profile-*.json")):
        report = json.loads(path.read_text())
        seconds.update(report["seconds"])
        counts.update(report["counts"])
        cpu += report["process_cpu"]
    total = sum(seconds.values())
    print(f"CPU of the profiled processes: {cpu:.1f} s; compiling: {total:.1f} s")
    print(f"({sum(counts.values())} compilations of {len(counts)} program names)")
    for name, spent in seconds.most_common(top):
        print(f"{spent:8.1f} s {counts[name]:6d}  {name}")


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
