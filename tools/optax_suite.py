"""Run Optax's own test files against gradtx.

Usage::

    python tools/optax_suite.py              # the files in FILES
    python tools/optax_suite.py -k adam      # extra arguments go to pytest
    python tools/optax_suite.py --files _src/alias_test.py transforms/_clipping_test.py

Optax 0.2.8 installs its tests beside its code (``optax/_src/alias_test.py`` and so
on). This runner executes those files where they are installed, nothing is copied
into this project, with their imports of Optax redirected to gradtx.

How the redirection works
-------------------------
``builtins.__import__`` is wrapped for the length of the run. The wrapper does the
ordinary import first (so every module really loads), then looks at the importing
module's ``__file__`` (import statements pass their globals): when it is one of
Optax's test files (``*_test.py`` inside the installed ``optax`` package), the
value handed back is a *shim* in place of the Optax package or module.
Only the test files see shims: Optax's own modules, which bound their
imports when ``optax`` was first imported, keep calling Optax, and ``test_utils``
(Optax's assertion helpers) is handed back unchanged.

A shim stands for one Optax module. Looking a name up on it

1. returns gradtx's object of that name (an explicit entry in ``RENAMES``, else
   the same name in the gradtx namespace that matches the module: ``gradtx.tree``
   for ``optax.tree``/``optax.tree_utils``, ``gradtx.projections`` for
   ``optax.projections``, the flat ``gradtx`` namespace for the rest; Optax's
   ``tree_utils.tree_<op>`` is ``gradtx.tree.<op>``), recorded as
   *substituted*;
2. returns a shim of the submodule when the name is an Optax submodule
   (``optax.transforms``, ``optax._src.alias``, ...);
3. otherwise falls through to Optax's own object and records the name as *not
   substituted*; the summary lists these per file, so a pass that only exercised
   Optax is visible as such.

Every deliberate difference from Optax that makes one of its tests fail is a named
skip in ``SKIPS`` (pattern on the test id -> reason); everything else that fails is
an unexplained failure and makes the exit status non-zero.

This file is not a test module: the default ``python -m pytest`` (testpaths
``tests``, ``gradtx``, ``gradtx_cli``) and ``.ci/run`` do not collect it. It needs
the ``optax-suite`` extra (``pip install -e ".[optax-suite]"``).
"""

from __future__ import annotations

import argparse
import builtins
import collections
import fnmatch
import os
import sys
import types

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import optax  # noqa: E402

import gradtx  # noqa: E402

OPTAX_DIR = os.path.dirname(optax.__file__)

# The files run by default, most valuable first (paths inside the optax package).
FILES = [
    "_src/alias_test.py",
    "_src/transform_test.py",
    "_src/combine_test.py",
    "transforms/_clipping_test.py",
    "schedules/_schedule_test.py",
    "tree_utils/_tree_math_test.py",
    "_src/linesearch_test.py",
    "_src/lookahead_test.py",
    "transforms/_accumulation_test.py",
    "transforms/_adding_test.py",
    "transforms/_conditionality_test.py",
    "transforms/_constraining_test.py",
    "transforms/_masking_test.py",
    "transforms/_combining_test.py",
    "transforms/_freezing_test.py",
    "transforms/_layouts_test.py",
    "transforms/_monitoring_test.py",
    "schedules/_inject_test.py",
    "projections/_projections_test.py",
    "assignment/_hungarian_algorithm_test.py",
    "contrib/_common_test.py",
    "contrib/_complex_valued_test.py",
    "contrib/_galore_test.py",
    "contrib/_mechanic_test.py",
    "contrib/_muon_test.py",
    "contrib/_privacy_test.py",
    "contrib/_reduce_on_plateau_test.py",
    "contrib/_sam_test.py",
    "contrib/_schedule_free_test.py",
]

# Names whose gradtx home is not the same name in the matching namespace:
# (optax module, name) -> gradtx object path (dotted, from ``gradtx``).
RENAMES: dict[tuple[str, str], str] = {
    ("optax.contrib._reduce_on_plateau", "ReduceLROnPlateauState"): "ReduceOnPlateauState",
    ("optax.contrib", "ReduceLROnPlateauState"): "ReduceOnPlateauState",
}

# Optax modules that are test infrastructure: handed back untouched, not counted.
_PASSTHROUGH = {"optax._src.test_utils"}

# Deliberate differences: fnmatch pattern on "file::Class::test" -> reason.
_OPTIMISTIC_ADAM = (
    "the optimistic_adam cases: Optax's test wraps it in assertWarnsRegex("
    "DeprecationWarning, 'use `optimistic_adam_v2` instead'); gradtx keeps "
    "optimistic_adam as a supported interface (it takes schedules) and does not "
    "warn (optimistic_adam's docstring)"
)

SKIPS: dict[str, str] = {
    "_muon_test.py::MuonTest::test_dim_nums_combinations_*": (
        "reads Optax's muon state by position (state[0]['muon'][0][0][1]); gradtx's "
        "muon chains its blocks in another order (muon's docstring gives the state)"
    ),
    "_schedule_free_test.py::ScheduleFreeTest::test_explicit_dtype3": (
        "bfloat16 params with state_dtype=None: gradtx keeps z in float32 (at least "
        "the compute dtype; schedule_free's docstring), Optax in bfloat16"
    ),
    "*combin*_test.py::ExtraArgsTest::test_extra_args": (
        "the test's params are Python ints: gradtx refuses integer params at init, "
        "naming the leaves (README: bad input gets a clear error)"
    ),
    "_combining_test.py::PartitionTest::test_labels_mismatch*": (
        "builds transform.trace(1.0): gradtx checks hyperparameters when built and "
        "trace's decay must lie in [0, 1) (trace's docstring)"
    ),
    "_freezing_test.py::*::test_*bad_structure*": (
        "a mask missing leaves: gradtx raises the ValueError too, naming every "
        "differing path, where Optax's regex expects 'Dict key mismatch'"
    ),
    "_inject_test.py::InjectHyperparamsTest::test_hyperparam_dtypes_bf16hyp*": (
        "hyperparam_dtype=bfloat16: gradtx refuses it when built (b2=0.999 rounds "
        "to 1.0 in bfloat16; inject_hyperparams' docstring)"
    ),
    "_inject_test.py::InjectHyperparamsTest::test_hyperparam_default_dtype*": (
        "gradtx stores injected values in float32 or wider by default, not in the "
        "params' dtype (inject_hyperparams' docstring: a bfloat16 decay rounds to 1)"
    ),
    "_schedule_test.py::WarmupCosineDecayTest::test_zero_peak_value": (
        "peak_value=0 with end_value=-3: gradtx's cosine decays from the peak to "
        "end_value as its docstring's formula says; Optax's alpha = end / peak "
        "falls back to a constant 0 when the peak is 0"
    ),
    "_masking_test.py::MaskedTest::test_masked_state_structure": (
        "gradtx's masked puts None in the inner state where Optax puts MaskedNode() "
        "(gradtx.MaskedNode's docstring: the sharding helpers and apply_updates read "
        "None as 'no parameter here')"
    ),
    "_masking_test.py::MaskedTest::test_tree_map_params*": (
        "the masked_with_extra_args subtest's is_leaf looks for MaskedNode() in the "
        "state, where gradtx's masked holds None (see test_masked_state_structure)"
    ),
    "_adding_test.py::AddingTest::test_none_argument": (
        "update(None, 0, params): gradtx checks the updates' tree against the params' "
        "and names what is missing (README: bad input gets a clear error)"
    ),
    "alias_test.py::AliasTest::test_gradient_accumulation40": _OPTIMISTIC_ADAM,
    "alias_test.py::AliasTest::test_gradient_accumulation41": _OPTIMISTIC_ADAM,
    "alias_test.py::AliasTest::test_optimization80": _OPTIMISTIC_ADAM,
    "alias_test.py::AliasTest::test_optimization82": _OPTIMISTIC_ADAM,
    "alias_test.py::AliasTest::test_optimizers_accept_extra_args20": _OPTIMISTIC_ADAM,
    "alias_test.py::AliasTest::test_optimizers_can_be_wrapped_in_inject_hyperparams20": (
        _OPTIMISTIC_ADAM
    ),
    "alias_test.py::AliasTest::test_preserve_dtype40": _OPTIMISTIC_ADAM,
    "alias_test.py::AliasTest::test_preserve_dtype41": _OPTIMISTIC_ADAM,
    "alias_test.py::AliasTest::test_state_shape_dtype_shard_stability120": _OPTIMISTIC_ADAM,
    "alias_test.py::AliasTest::test_state_shape_dtype_shard_stability121": _OPTIMISTIC_ADAM,
    "alias_test.py::AliasTest::test_state_shape_dtype_shard_stability122": _OPTIMISTIC_ADAM,
    "alias_test.py::AliasTest::test_state_shape_dtype_shard_stability123": _OPTIMISTIC_ADAM,
    "combine_test.py::PartitionTest::test_labels_mismatch*": (
        "builds transform.trace(1.0): gradtx checks hyperparameters when built and "
        "trace's decay must lie in [0, 1) (README 'Differences from Optax'; trace's "
        "docstring)"
    ),
    "_schedule_test.py::PolynomialTest::test_zero_steps_schedule": (
        "transition_steps=-1: gradtx refuses a non-positive length when the schedule "
        "is built (README: hyperparameters are checked when built); Optax falls back "
        "to a constant"
    ),
    "_schedule_test.py::ExponentialTest::test_nonvalid_*": (
        "decay_rate=0 / transition_steps<=0: refused by gradtx when built (README: "
        "hyperparameters are checked when built); Optax warns or returns a constant"
    ),
    "transform_test.py::TransformTest::test_lion_invalid_mode_raises": (
        "gradtx raises the ValueError for mode='invalid_mode' when scale_by_lion is "
        "built (README: hyperparameters are checked when built); the test expects "
        "it from update"
    ),
    "lookahead_test.py::LookaheadTest::test_lookahead_edge_cases1": (
        "slow_step_size=0 (slow weights that never move): gradtx refuses it when built, "
        "slow_step_size must lie in (0, 1] (lookahead's docstring; README: hyperparameters "
        "are checked when built)"
    ),
    "alias_test.py::AliasTest::test_explicit_dtype2[4-9]": (
        "complex64 params with a real mu_dtype / accumulator_dtype: Optax builds a real "
        "moment and drops the imaginary part at the first step; gradtx refuses it at init "
        "and says to pass a complex dtype or None (gradtx.tree.full_like's docstring; "
        "tests/test_optax_gaps.py)"
    ),
    "alias_test.py::LBFGSTest::test_against_plain_implementation[23]": (
        "Himmelblau with a fixed step: the test's plain L-BFGS keeps every curvature "
        "pair; gradtx's L-BFGS drops a pair with s'y <= 0.02 |s| |y| (gradtx.second_order"
        ".bfgs module docstring), and on this non-convex start that changes the path "
        "(with the safeguard off gradtx gives the plain solution)"
    ),
    "_clipping_test.py::ClippingTest::test_clip_by_block_rms": (
        "fails against Optax itself on this CPU: the clipped block's RMS is 1 ulp below "
        "the threshold (0.9999999 != 1.0 to 7 places) for Optax as for gradtx "
        "(tests/test_optax_gaps.py checks gradtx to 3 float32 epsilons)"
    ),
    "_clipping_test.py::ClippingTest::test_unitwise_norm_with_axis": (
        "a rank-6 array without axis: Optax raises ValueError; gradtx's unitwise_norm "
        "takes every axis but the last, as its adaptive_grad_clip does for rank 4 and "
        "above (gradtx.unitwise_norm's docstring; tests/test_optax_gaps.py); the rest of "
        "the test's checks pass"
    ),
    "linesearch_test.py::*::test_*raises_on_unused_extra_args": (
        "an extra argument that value_fn does not take: Optax raises TypeError; gradtx's "
        "protocol ignores unknown extra arguments, in line searches too "
        "(docs: ARCHITECTURE 'One protocol'; tests/test_contract.py::"
        "test_unknown_extra_args_are_ignored)"
    ),
    "linesearch_test.py::ZoomLinesearchTest::test_failure_descent_direction": (
        "the search fails and gradtx's update is 0, but state.learning_rate keeps the last "
        "accepted step (ScaleByZoomLinesearchState: 'eta accepted by the last search that "
        "moved'), "
        "where Optax stores the failed trial's; and the verbose message is gradtx's "
        "wording, not Optax's FLAG_* strings"
    ),
    "linesearch_test.py::ZoomLinesearchTest::test_failure_flat_fun": (
        "checks Optax's verbose FLAG_* strings: gradtx's verbose message says what failed "
        "in its own words (scale_by_zoom_linesearch's docstring, verbose)"
    ),
    "linesearch_test.py::ZoomLinesearchTest::test_failure_too_small_max_stepsize": (
        "checks Optax's verbose FLAG_* strings: gradtx's verbose message says what failed "
        "in its own words (scale_by_zoom_linesearch's docstring, verbose)"
    ),
    "linesearch_test.py::ZoomLinesearchTest::test_value_and_grad_from_state": (
        "a state without a line search: Optax raises ValueError; gradtx's "
        "value_and_grad_from_state evaluates the loss instead (its docstring's Note)"
    ),
    "linesearch_test.py::*::test_dtype_stability*": (
        "the test passes increase_factor=1e-5 (< 1): gradtx refuses it when built "
        "(an increase factor below 1 shrinks the step it should grow; README: "
        "hyperparameters are checked when built)"
    ),
}


# --------------------------------------------------------------------------- shims


def _gradtx_namespace(optax_name: str):
    """The gradtx namespace that holds the equivalents of an Optax module's names."""
    if optax_name.startswith(("optax.tree", "optax._src.tree")):
        return gradtx.tree
    if optax_name.startswith("optax.projections"):
        return gradtx.projections
    if optax_name.startswith("optax.assignment"):
        return gradtx.assignment
    return gradtx


def _is_public_gradtx(ns, name: str) -> bool:
    if name.startswith("_") or not hasattr(ns, name):
        return False
    if ns is gradtx:
        return name in gradtx.__all__
    value = getattr(ns, name)
    if isinstance(value, types.ModuleType):
        return False
    return getattr(value, "__module__", "").startswith("gradtx")


class _Record:
    """Which names the test files looked up, per test id (or file at import)."""

    def __init__(self):
        self.current = "<import>"
        self.substituted = collections.defaultdict(set)
        self.fell_through = collections.defaultdict(set)

    def note(self, kind: str, optax_name: str, name: str):
        target = self.substituted if kind == "sub" else self.fell_through
        target[self.current].add(f"{optax_name}.{name}")


RECORD = _Record()


class Shim(types.ModuleType):
    """Stands in for one Optax module inside Optax's test files (see module doc)."""

    def __init__(self, real: types.ModuleType):
        super().__init__(real.__name__)
        object.__setattr__(self, "_real", real)

    def __repr__(self):
        return f"<gradtx shim of {object.__getattribute__(self, '_real').__name__}>"

    def __getattr__(self, name):
        real = object.__getattribute__(self, "_real")
        if name.startswith("__") and name.endswith("__"):
            return getattr(real, name)
        key = (real.__name__, name)
        if key in RENAMES:
            obj = gradtx
            for part in RENAMES[key].split("."):
                obj = getattr(obj, part)
            RECORD.note("sub", real.__name__, name)
            return obj
        value = getattr(real, name)
        if isinstance(value, types.ModuleType) and value.__name__.startswith("optax."):
            return _shim_for(value)
        ns = _gradtx_namespace(real.__name__)
        gname = name
        if ns is gradtx.tree and name.startswith("tree_"):
            gname = name[len("tree_") :]  # optax.tree_utils.tree_add is optax.tree.add
        if _is_public_gradtx(ns, gname):
            RECORD.note("sub", real.__name__, name)
            return getattr(ns, gname)
        RECORD.note("fall", real.__name__, name)
        return value


_SHIMS: dict[str, Shim] = {}


def _shim_for(module):
    if module.__name__ in _PASSTHROUGH or module.__name__.endswith("_test"):
        return module
    if module.__name__ not in _SHIMS:
        _SHIMS[module.__name__] = Shim(module)
    return _SHIMS[module.__name__]


_real_import = builtins.__import__


def _is_optax_test(globals_) -> bool:
    # pytest may import a test file under a bare name (``combine_test``), so the
    # file, not the module name, says whether the importer is one of Optax's tests.
    file = (globals_ or {}).get("__file__") or ""
    return file.startswith(OPTAX_DIR + os.sep) and file.endswith("_test.py")


def _import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
    module = _real_import(name, globals, locals, fromlist, level)
    if level == 0 and name.split(".")[0] == "optax" and _is_optax_test(globals):
        return _shim_for(module)
    return module


# --------------------------------------------------------------------------- plugin


def _short_id(nodeid: str) -> str:
    path, _, rest = nodeid.partition("::")
    return f"{os.path.basename(path)}::{rest}" if rest else os.path.basename(path)


def _file_of(nodeid: str) -> str:
    path = nodeid.partition("::")[0]
    full = os.path.abspath(path) if not os.path.isabs(path) else path
    return os.path.relpath(full, OPTAX_DIR) if full.startswith(OPTAX_DIR) else path


def _skip_reason(nodeid: str):
    short = _short_id(nodeid)
    for pattern, reason in SKIPS.items():
        if fnmatch.fnmatchcase(short, pattern):
            return pattern, reason
    return None


class Plugin:
    def __init__(self):
        self.outcomes = collections.defaultdict(collections.Counter)
        self.failures: list[tuple[str, str]] = []
        self.skips_used: dict[str, list[str]] = collections.defaultdict(list)
        self.collect_errors: list[tuple[str, str]] = []

    def pytest_collection_modifyitems(self, items):
        for item in items:
            found = _skip_reason(item.nodeid)
            if found:
                pattern, reason = found
                item.add_marker(pytest.mark.skip(reason=f"gradtx: {reason}"))

    def pytest_runtest_setup(self, item):
        RECORD.current = item.nodeid

    def pytest_runtest_teardown(self, item):
        RECORD.current = "<import>"

    def pytest_collectreport(self, report):
        if report.failed:
            self.collect_errors.append((report.nodeid, str(report.longrepr)[-3000:]))

    def pytest_runtest_logreport(self, report):
        file = _file_of(report.nodeid)
        if report.when == "call" or (report.when == "setup" and not report.passed):
            if report.passed:
                self.outcomes[file]["pass"] += 1
            elif report.skipped:
                # Our skips carry "gradtx:"; the rest are Optax's own skipTest calls.
                ours = "gradtx:" in str(report.longrepr)
                self.outcomes[file]["skip" if ours else "optax-skip"] += 1
                if ours:
                    self.skips_used[_skip_reason(report.nodeid)[1]].append(_short_id(report.nodeid))
            else:
                self.outcomes[file]["fail"] += 1
                self.failures.append((report.nodeid, str(report.longrepr)[-2500:]))
        elif report.when == "teardown" and report.failed:
            self.outcomes[file]["fail"] += 1
            self.failures.append((report.nodeid + " (teardown)", str(report.longrepr)[-2500:]))

    # ------------------------------------------------------------------ summary

    def summary(self, verbose: bool) -> int:
        out = []
        out.append(f"\n=== gradtx against Optax's own tests (optax {optax.__version__}) ===")
        out.append(
            "(skip: a deliberate difference, listed below; optax-skip: skipped by "
            "Optax's test itself)"
        )
        out.append(f"{'file':42s} {'pass':>5s} {'skip':>5s} {'fail':>5s} {'optax-skip':>10s}")
        total = collections.Counter()
        for file in sorted(self.outcomes):
            c = self.outcomes[file]
            total.update(c)
            out.append(
                f"{file:42s} {c['pass']:5d} {c['skip']:5d} {c['fail']:5d} {c['optax-skip']:10d}"
            )
        out.append(
            f"{'total':42s} {total['pass']:5d} {total['skip']:5d} {total['fail']:5d} "
            f"{total['optax-skip']:10d}"
        )

        if self.skips_used:
            out.append("\n--- skips (deliberate differences) ---")
            for reason, ids in self.skips_used.items():
                out.append(f"{len(ids)} test(s): {reason}")
                out.extend(f"    {test_id}" for test_id in ids)

        subs = collections.defaultdict(set)
        falls = collections.defaultdict(set)
        for test, names in RECORD.substituted.items():
            subs[_file_of(test) if test != "<import>" else "<import>"] |= names
        for test, names in RECORD.fell_through.items():
            falls[_file_of(test) if test != "<import>" else "<import>"] |= names
        out.append("\n--- names looked up: gradtx's / Optax's own (not substituted) ---")
        for file in sorted(set(subs) | set(falls)):
            out.append(
                f"{file}: {len(subs[file])} gradtx names used, "
                f"{len(falls[file])} Optax names not substituted"
            )
            out.append("    " + ", ".join(sorted(falls[file])))

        unexplained = self.failures + self.collect_errors
        if self.collect_errors:
            out.append("\n--- collection errors ---")
            for nodeid, text in self.collect_errors:
                out.append(f"{nodeid}\n{text}")
        if self.failures:
            out.append("\n--- unexplained failures ---")
            for nodeid, text in self.failures:
                out.append(nodeid)
                if verbose:
                    out.append(text)
        print("\n".join(out))
        return 1 if unexplained else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--files", nargs="+", default=FILES, help="paths inside the installed optax package"
    )
    parser.add_argument(
        "--verbose-failures",
        action="store_true",
        help="print each unexplained failure's traceback tail",
    )
    args, extra = parser.parse_known_args(argv)
    paths = [os.path.join(OPTAX_DIR, f) for f in args.files]
    plugin = Plugin()
    builtins.__import__ = _import
    try:
        pytest.main(
            [
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:xdist",
                "-o",
                "addopts=",
                "--tb=short",
                "-rN",
                "--rootdir",
                OPTAX_DIR,
                "-c",
                os.devnull,
                *paths,
                *extra,
            ],
            plugins=[plugin],
        )
    finally:
        builtins.__import__ = _real_import
    return plugin.summary(args.verbose_failures)


if __name__ == "__main__":
    sys.exit(main())
