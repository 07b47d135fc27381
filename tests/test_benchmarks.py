"""The benchmark scripts run, and what they report can be read back."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.perf
_BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str, monkeypatch):
    # The scripts import each other, as they do when run from benchmarks/.
    monkeypatch.syspath_prepend(str(_BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, _BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    jax.default_backend() != "cpu",
    reason="temporary bytes are XLA:CPU's buffer assignment; other backends differ",
)
def test_every_method_reports_both_libraries_and_adadelta_keeps_no_more_than_optax(monkeypatch):
    every_method = _load("every_method", monkeypatch)
    results = {
        name: every_method.bench(name, size=1 << 16, rounds=1, steps=2)
        for name in ("adadelta", "nadam_dozat")
    }
    adadelta = results["adadelta"]
    # Both chain the decay block (as Optax's adadelta): at most Optax's temporaries.
    assert adadelta["gradtx"]["temp_bytes"] <= adadelta["optax"]["temp_bytes"]
    optax_ms = adadelta["optax"]["median_ms"]
    assert adadelta["ratio"] == pytest.approx(adadelta["gradtx"]["median_ms"] / optax_ms)
    assert "optax" not in results["nadam_dozat"]  # no such method in Optax
    table = every_method.markdown(results, 1 << 16)
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert len(rows) == 4 and rows[2].startswith("| adadelta |")  # header, rule, methods


def test_many_leaves_floor_times_every_step_and_reports_its_ratios(monkeypatch):
    limits = _load("xla_cpu_limits", monkeypatch)
    out = limits.many_leaves_floor(4, size=8, rounds=1)
    steps = ["floor"] + [
        f"{lib}_{m}" for lib in ("optax", "gradtx_flat") for m in ("sgd", "momentum", "adam")
    ]
    assert all(out[name] > 0 for name in steps)
    for method in ("sgd", "momentum", "adam"):
        assert out[f"floor / optax_{method}"] == pytest.approx(
            out["floor"] / out[f"optax_{method}"]
        )


@pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="XLA:CPU's kernels: one per output array (item 1)"
)
def test_kernel_traffic_counts_a_triad_and_a_tuple_result(monkeypatch):
    limits = _load("xla_cpu_limits", monkeypatch)
    n = 4096
    triad = jax.jit(lambda a, b: a + 0.5 * b, donate_argnums=0)
    compiled = triad.lower(jnp.ones(n), jnp.ones(n)).compile()
    assert limits.kernel_traffic(compiled) == (1, 3 * 4 * n)  # read a, b; write a
    two = jax.jit(lambda a: (a * 2.0, a.astype(jnp.bfloat16) + 1))
    kernels, moved = limits.kernel_traffic(two.lower(jnp.ones(n)).compile())
    assert kernels == 2 and moved == (4 * n + 4 * n) + (4 * n + 2 * n)  # the tuple moves nothing


@pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="XLA:CPU's kernels: one per output array (item 1)"
)
def test_least_program_cells_finds_every_elementwise_step_at_its_least(monkeypatch):
    limits = _load("xla_cpu_limits", monkeypatch)
    tiny = dataclasses.replace(
        limits.QUICK,
        one_leaf=(256, 256),
        mlp_widths=(64, 128, 32),
        d_model=32,
        layers=1,
        vocab=128,
        context=32,
    )
    out = limits.least_program_cells(tiny)
    assert out["cells"]["one_leaf/adam"]["least"] == 40.0
    assert out["cells"]["mlp/sgd"]["gradtx"] == pytest.approx(12.0)
    assert out["cells"]["many_leaves/momentum"] == {
        "gradtx": 2.0,
        "optax": 2.0,
        "least": 2,
        "best": 1.0,
    }
    # Both libraries' steps are the least program in all 24 bandwidth-bound cells,
    # so the best median of the 40 cells is Optax's time (up to scalar kernels).
    assert out["cells_at_least"] == 24
    assert out["best_median"] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="the fact measured is XLA:CPU's reduction emitter"
)
def test_small_sums_keep_their_squares_on_cpu(monkeypatch):
    limits = _load("xla_cpu_limits", monkeypatch)
    out = limits.small_sum_temporaries(leaves=8, size=1000)
    assert out["bytes_of_the_leaves"] == 8 * 4000
    assert out["one_array_of_1000"] >= 4000 and out["one_array_of_4096"] == 0
    assert out["joined"] >= out["bytes_of_the_leaves"]


def test_callback_cost_times_every_step(monkeypatch):
    limits = _load("xla_cpu_limits", monkeypatch)
    out = limits.callback_cost(4, size=8, rounds=1)
    names = ["floor", "floor_with_callback", "gradtx_apply_if_finite", "gradtx_raise_after_5"]
    assert all(out[name] > 0 for name in [*names, "optax_apply_if_finite"])
    extra = out["floor_with_callback"] - out["floor"]
    assert out["us_per_leaf_of_the_callback"] == pytest.approx(1e3 * extra / 4)


@pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="the fact measured is XLA:CPU's reduction emitter"
)
def test_one_pass_rescue_sums_sequentially_on_cpu(monkeypatch):
    limits = _load("xla_cpu_limits", monkeypatch)
    out = limits.one_pass_rescue_cost(1 << 20, leaves=4, small=1000)
    # The one-pass sum loses what a sequential sum of 2^20 terms loses, far more
    # than the tree of partial sums of sum(x * x), which is exact to a few ulps.
    assert out["sum_relative_error"] < 1e-6
    assert 1e-5 < out["one_pass_relative_error"] < 0.1
    assert out["by_one_pass_kernels_per_leaf"] < out["by_sum_kernels_per_leaf"]
    assert all(out[f"{name}_ms"] > 0 for name in ("sum", "one_pass"))


def test_state_memory_reports_every_configuration(monkeypatch):
    state_memory = _load("state_memory", monkeypatch)
    results = state_memory.measure(quick=True)
    rows = results["bytes_per_param"]
    assert set(rows) == set(state_memory.CONFIGS)
    for tree in ("MLP", "Transformer"):
        # Two float32 moments; scalar counters and keys add well under 0.1 byte.
        assert 8 <= rows["adam"][tree] < 8.1
        assert 4 <= rows["adamw, mu and nu bfloat16"][tree] < 4.1
        assert 4 <= rows["adam_mini"][tree] < 4.1  # m, and one v per block
        assert 4 <= rows["adamw + stochastic_rounding, bfloat16 params"][tree] < 4.1
        assert 6 <= rows["adamw + kahan_summation, bfloat16 params"][tree] < 6.1
        # One code byte per moment entry plus a float32 scale per block; leaves
        # under 4096 elements (biases, norm scales) stay float32.
        assert 2 < rows["adamw_8bit"][tree] < 2.2  # 2 + 8 / 256 on the quantized leaves
        assert rows["adamw_4bit"][tree] > 1 and rows["adamw_4bit"][tree] < 1.2  # 1 + 8 / 128
        # rank-1 v: 4 bytes per row and per column instead of per 128 entries:
        # more than blocks on the quick trees' narrow kernels (784 x 64 has
        # 848 row and column scales, 392 blocks), fewer on the full trees.
        rank1 = rows["adamw_4bit, nu rank-1"][tree]
        assert rank1 > 1 and rank1 < 1.25
        assert 2 < rows["quantize_state(adam), 8 bits, block 2048"][tree] < rows["adamw_8bit"][tree]
        assert 4 <= rows["lion"][tree] < 4.1
        assert rows["lion_8bit"][tree] > 1 and rows["lion_8bit"][tree] < 1.1  # 1 + 4 / 256
    table = state_memory.markdown(results)
    assert len([line for line in table.splitlines() if line.startswith("|")]) == 2 + len(rows)


def test_state_memory_train_tasks_flag_is_checked(monkeypatch):
    state_memory = _load("state_memory", monkeypatch)
    with pytest.raises(SystemExit):
        state_memory.main(["--parts", "train", "--train-tasks", "mnist"])


def test_state_memory_train_configs_flag_is_checked_and_keeps_the_reference(monkeypatch):
    state_memory = _load("state_memory", monkeypatch)
    with pytest.raises(SystemExit):
        state_memory.main(["--parts", "train", "--train-configs", "sgd"])
    ran = []

    def train_curves(task, make, dtype):
        ran.append(make)
        return np.zeros((3, 2))

    monkeypatch.setattr(state_memory, "train_curves", train_curves)
    monkeypatch.setattr(state_memory, "char_lm_task", lambda quick, lr: None)
    monkeypatch.setattr(state_memory, "digits_task", lambda quick: _FakeTask())
    out = state_memory.measure_training(True, tasks=("digits",), configs=("adam_mini",))
    assert list(out["fake"]["configs"]) == ["adamw", "adam_mini"]
    assert ran == [state_memory.TRAIN_CONFIGS[n][0] for n in ("adamw", "adam_mini")]


class _FakeTask:
    name, learning_rate, steps = "fake", 1e-3, 2

    def init(self, key):
        return {"w": np.zeros(3)}


def test_state_memory_quick_run_writes_every_part(monkeypatch, tmp_path):
    state_memory = _load("state_memory", monkeypatch)
    path = tmp_path / "state_memory.json"
    state_memory.main(["--quick", "--json", str(path)])
    results = json.loads(path.read_text())

    def finite(x):
        return isinstance(x, (int, float)) and math.isfinite(x)

    assert set(results["bytes_per_param"]) == set(state_memory.CONFIGS)
    for tree in state_memory.STEP_TREES:
        rows = results["step_time"]["trees"][tree]["configs"]
        assert set(rows) == set(state_memory.STEP_CONFIGS)
        assert all(finite(r["median_ms"]) and r["median_ms"] > 0 for r in rows.values())
        assert rows["adamw"]["ratio"] == 1.0 and rows["lion"]["ratio"] == 1.0
        assert all(finite(r["ratio"]) for r in rows.values())
    errors = results["moment_error"]["steps"]
    assert set(errors) == set(state_memory.ERROR_CONFIGS) - {"adamw"}
    assert "adamw_8bit, nu map with 0" in errors
    for per_step in errors.values():
        assert per_step  # at least one checkpoint
        for r in per_step.values():
            assert all(finite(r[k]) and r[k] >= 0 for k in ("mu", "nu", "param_drift"))
    assert set(results["training"]) == {"digits MLP", "char-LM transformer (workloads.py)"}
    # The language model is workloads.py's own (its quick size), not a copy.
    workload = state_memory.workloads.char_lm_workload(state_memory.CHAR_LM[True])
    n_params = sum(x.size for x in jax.tree.leaves(workload.init(jax.random.key(0))))
    assert results["training"]["char-LM transformer (workloads.py)"]["params"] == n_params
    for task in results["training"].values():
        assert set(task["configs"]) == set(state_memory.TRAIN_CONFIGS)
        for row in task["configs"].values():
            assert len(row["final_val_loss"]) == len(state_memory.SEEDS)
            assert all(finite(v) for v in row["final_val_loss"] + [row["mean"], row["std"]])
            assert isinstance(row["within_f32_spread"], bool)
    assert finite(results["wall_s"])
