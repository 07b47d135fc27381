"""Sharded optimizer state: where each state leaf lives, on 1 device here and on 8 in a subprocess.

The 8-device checks (tests/sharded/multi_device.py) need
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before jax is imported,
and this process has imported it with one device, so they run once in a
subprocess that reports JSON; the tests below read that report. The rules of
:mod:`gradtx.sharding` (which leaves mirror a parameter, the ZeRO-1 split, the
errors) are tested in this process.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

import gradtx
from gradtx.sharding import mirror_indices, split_spec, state_shardings, zero1_state_shardings
from tests.registry import BY_NAME, NAMED_OPTIMIZERS

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "sharded" / "multi_device.py"
# The subprocess compiles ~40 small programs; LLVM's expensive passes would add
# to its time and change no tested number. (It inherits the run's other compile
# flags from conftest.py, which keeps the default optimisation level: level 0
# with XLA:CPU's classic emitters miscompiled one of the suite's programs.)
FAST_COMPILE = "--xla_llvm_disable_expensive_passes=true"
F32_EPS = float(jnp.finfo(jnp.float32).eps)


def _mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()[:1]), ("data",))


# ---------------------------------------------------------------- which leaves mirror a param


def test_moments_mirror_their_params_and_the_count_does_not():
    params = {"b": jnp.zeros(3), "w": jnp.zeros((2, 3))}
    state = gradtx.adam(0.1).init(params)
    indices = mirror_indices(state, params)
    assert indices[0].count == -1
    assert indices[0].mu == {"b": 0, "w": 1} and indices[0].nu == {"b": 0, "w": 1}


def test_masked_out_params_keep_their_place():
    # The inner state holds None where the mask is off: still the params' structure.
    params = {"b": jnp.zeros(3), "w": jnp.zeros((2, 3))}
    tx = gradtx.masked(gradtx.adam(0.1), {"b": False, "w": True})
    indices = mirror_indices(tx.init(params), params)
    assert indices.inner_state[0].mu == {"b": None, "w": 1}


def test_partition_mirrors_each_part():
    params = {"b": jnp.zeros(3), "w": jnp.zeros((2, 3))}
    tx = gradtx.partition(
        {"adam": gradtx.adam(0.1), "sgd": gradtx.sgd(0.1, 0.9)}, {"b": "sgd", "w": "adam"}
    )
    indices = mirror_indices(tx.init(params), params)
    assert indices.inner_states["adam"][0].nu == {"b": None, "w": 1}
    assert indices.inner_states["sgd"][0].trace == {"b": 0, "w": None}


def test_a_stack_of_copies_mirrors_its_param():
    # L-BFGS keeps the m last steps of each param: shape (m, *param.shape).
    params = {"b": jnp.zeros(3), "w": jnp.zeros((2, 3))}
    state = gradtx.lbfgs(memory_size=4).init(params)
    indices = mirror_indices(state, params)
    shapes = jax.tree.map(lambda s: s.shape, state[0].diff_params_memory)
    assert shapes == {"b": (4, 3), "w": (4, 2, 3)}
    assert indices[0].diff_params_memory == {"b": 0, "w": 1}


def test_leaves_of_another_structure_or_shape_mirror_nothing():
    params = {"b": jnp.zeros(3), "w": jnp.zeros((2, 3))}
    # flat's buffers, inject_hyperparams' scalars and a same-shaped sub-tree of other
    # keys are not per parameter.
    flat_state = gradtx.flat(gradtx.adam(0.1)).init(params)
    assert set(jax.tree.leaves(mirror_indices(flat_state, params))) == {-1}
    injected = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=0.1).init(params)
    assert set(jax.tree.leaves(mirror_indices(injected.hyperparams, params))) == {-1}
    other_keys = {"a": jnp.zeros(3), "w": jnp.zeros((2, 3))}
    assert jax.tree.leaves(mirror_indices(other_keys, params)) == [-1, -1]
    wrong_shape = {"b": jnp.zeros(3), "w": jnp.zeros((3, 2))}
    assert mirror_indices(wrong_shape, params) == {"b": 0, "w": -1}


def test_a_single_array_param_is_mirrored_by_every_leaf_of_its_shape():
    params = jnp.zeros(4)
    state = gradtx.adam(0.1).init(params)
    indices = mirror_indices(state, params)
    assert (indices[0].count, indices[0].mu, indices[0].nu) == (-1, 0, 0)


# ---------------------------------------------------------------- state_shardings


def test_state_shardings_follow_the_params():
    mesh = _mesh()
    params = {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}
    shardings = {"w": NamedSharding(mesh, P(None, "data")), "b": NamedSharding(mesh, P("data"))}
    out = state_shardings(gradtx.amsgrad(0.1), params, shardings)
    for moment in (out[0].mu, out[0].nu, out[0].nu_max):
        assert moment == shardings
    assert out[0].count == NamedSharding(mesh, P())


def test_state_shardings_read_placed_params_and_abstract_ones():
    mesh = _mesh()
    sharding = NamedSharding(mesh, P("data"))
    placed = {"w": jax.device_put(jnp.zeros((4, 2)), sharding)}
    abstract = {"w": jax.ShapeDtypeStruct((4, 2), jnp.float32, sharding=sharding)}
    for params in (placed, abstract):
        out = state_shardings(gradtx.momentum(0.1), params)
        assert out[0].trace == {"w": sharding}


def test_one_sharding_for_every_param():
    sharding = NamedSharding(_mesh(), P("data"))
    params = {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}
    out = state_shardings(gradtx.adagrad(0.1), params, sharding)
    assert out[0].sum_of_squares == {"w": sharding, "b": sharding}


def test_stacked_leaves_keep_the_stack_dimension_whole():
    mesh = _mesh()
    params = {"w": jnp.zeros((4, 2))}
    out = state_shardings(
        gradtx.lbfgs(memory_size=3), params, {"w": NamedSharding(mesh, P("data"))}
    )
    assert out[0].diff_params_memory["w"].spec == P(None, "data")


def test_single_device_params_give_single_device_state():
    device = jax.devices()[0]
    params = {"w": jnp.zeros(3)}
    out = state_shardings(gradtx.adam(0.1), params)
    assert jax.tree.leaves(out) == [SingleDeviceSharding(device)] * 3


def test_init_under_jit_places_the_state():
    mesh = _mesh()
    params = {"w": jnp.ones((4, 2))}
    shardings = {"w": NamedSharding(mesh, P("data"))}
    tx = gradtx.adam(0.1)
    state = jax.jit(tx.init, out_shardings=state_shardings(tx, params, shardings))(params)
    assert state[0].mu["w"].sharding == shardings["w"]
    assert state[0].count.sharding.is_fully_replicated


def test_params_without_a_sharding_need_param_shardings():
    params = {"w": np.zeros(2, np.float32), "b": jnp.zeros(2)}
    with pytest.raises(ValueError, match=r"the params \['w'\] carry no sharding"):
        state_shardings(gradtx.adam(0.1), params)


def test_param_shardings_of_another_structure_are_refused():
    params = {"w": jnp.zeros(2), "b": jnp.zeros(2)}
    sharding = NamedSharding(_mesh(), P())
    with pytest.raises(ValueError, match="param_shardings must have the tree structure"):
        state_shardings(gradtx.adam(0.1), params, {"w": sharding})


# ---------------------------------------------------------------- statistics: SOAP, Shampoo, ...


def _two_axis_mesh() -> Mesh:
    # Both axes of length 1: every entry divides, so the specs show the rules alone.
    return Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "model"))


def _specs(shardings):
    return jax.tree.map(lambda s: s.spec, shardings)


def test_soap_factors_are_split_by_rows_as_their_dimension():
    mesh = _two_axis_mesh()
    params = {"w": jnp.zeros((4, 6)), "b": jnp.zeros(6)}
    shardings = {"w": NamedSharding(mesh, P("model", "data")), "b": NamedSharding(mesh, P("data"))}
    out = state_shardings(gradtx.soap(0.1), params, shardings)[0]
    for factors in (out.stats, out.bases):
        assert _specs(factors) == {"w": (P("model", None), P("data", None)), "b": (None,)}
    assert out.mu["w"] == shardings["w"]


def test_soap_merged_dimensions_follow_their_first_axis():
    # (2, 3, 8, 5) with max_precond_dim 6: work shape (6, 8, 5), the 6 from axes 0 and 1.
    mesh = _two_axis_mesh()
    params = {"k": jnp.zeros((2, 3, 8, 5))}
    tx = gradtx.soap(0.1, max_precond_dim=6, merge_dims=True)
    first = state_shardings(tx, params, NamedSharding(mesh, P("data", None, None, "model")))
    assert _specs(first[0].stats["k"]) == (P("data", None), None, P("model", None))
    # An axis after the first of a run is split: the merged rows are not contiguous.
    second = state_shardings(tx, params, NamedSharding(mesh, P(None, "data")))
    assert _specs(second[0].stats["k"]) == (P(None, None), None, P(None, None))


def test_shampoo_blocks_are_split_over_the_rows_then_the_columns():
    mesh = _two_axis_mesh()
    params = {"w": jnp.zeros((4, 6)), "t": jnp.zeros((2, 2, 4)), "b": jnp.zeros(6)}
    shardings = {
        "w": NamedSharding(mesh, P("data", "model")),
        "t": NamedSharding(mesh, P(None, "data", "model")),  # a merged row axis split
        "b": NamedSharding(mesh, P("data")),
    }
    out = state_shardings(gradtx.shampoo(0.1, block_size=2), params, shardings)[0]
    blocks = _specs(out.preconditioners)
    assert blocks["w"] == (P(("data", "model"), None, None),) * 4
    assert blocks["t"] == (P("model", None, None),) * 4
    assert blocks["b"] == ()


def test_adam_mini_block_moments_keep_the_split_of_their_kept_axes():
    mesh = _two_axis_mesh()
    params = {
        "mlp": jnp.zeros((4, 6)),  # one v per output neuron: (1, 6)
        "embed": jnp.zeros((8, 4)),  # one per token: (8, 1)
        "q_proj": jnp.zeros((4, 6)),  # one per head: (1, 2, 1), the heads from the last axis
        "bias": jnp.zeros(6),  # Adam's v, shaped like the param
    }
    sharding = NamedSharding(mesh, P("data", "model"))
    one = {**{k: sharding for k in params}, "bias": NamedSharding(mesh, P("model"))}
    out = state_shardings(gradtx.adam_mini(0.1, num_heads=2), params, one)[0]
    assert _specs(out.nu) == {
        "mlp": P(None, "model"),
        "embed": P("data", None),
        "q_proj": P(None, "model", None),
        "bias": P("model"),
    }


def test_statistics_placed_eagerly_where_state_shardings_puts_them():
    mesh = _two_axis_mesh()
    params = {"w": jnp.ones((4, 6)), "b": jnp.ones(6)}
    shardings = {"w": NamedSharding(mesh, P("data", "model")), "b": NamedSharding(mesh, P())}
    params = jax.device_put(params, shardings)
    for tx in (gradtx.soap(0.1), gradtx.shampoo(0.1, block_size=2), gradtx.adam_mini(0.1)):
        expected = state_shardings(tx, params)
        state = tx.init(params)
        for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
            if sharding.spec != P():  # the count is made on the default device
                assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)


def test_zero1_splits_statistics_as_their_own_shape_allows():
    mesh = _mesh()
    params = {"w": jnp.zeros((3, 4))}
    out = zero1_state_shardings(gradtx.soap(0.1), params, mesh, "data")[0]
    assert _specs(out.stats["w"]) == (P("data"), P("data"))
    out = zero1_state_shardings(gradtx.adam_mini(0.1), params, mesh, "data")[0]
    assert out.nu["w"].spec == P("data")  # (1, 1): the first axis, of length 1


def test_statistics_of_another_structure_stay_replicated():
    # flat() hands SOAP one vector: its factors are not per parameter of these params.
    mesh = _mesh()
    params = {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}
    tx = gradtx.flat(gradtx.soap(0.1, precondition_1d=True))
    out = state_shardings(tx, params, NamedSharding(mesh, P("data")))
    assert {s.spec for s in jax.tree.leaves(out)} == {P()}


class _CoverState(NamedTuple):
    count: jax.Array
    cover: Any  # per param, the sums of |g| over the columns: (rows,)


def test_register_statistics_places_a_state_of_ones_own():
    from gradtx.sharding import place_statistics, register_statistics

    rows = lambda shape, entries, node: (entries[0],)  # noqa: E731
    register_statistics(_CoverState, "cover", rows)
    tx = gradtx.GradientTransformation(
        lambda p: _CoverState(jnp.zeros([], jnp.int32), jax.tree.map(lambda x: x[:, 0], p)),
        lambda u, s, p=None: (u, s),
    )
    mesh = _two_axis_mesh()
    params = {"w": jnp.zeros((4, 6))}
    out = state_shardings(tx, params, NamedSharding(mesh, P("model", "data")))
    assert out.cover["w"].spec == P("model")
    placed = jax.device_put(jnp.ones((4, 6)), NamedSharding(mesh, P("model", "data")))
    assert place_statistics(placed, jnp.ones(4), rows).sharding.spec == P("model")
    unplaced = np.ones((4, 6), np.float32)  # no NamedSharding: left as it is
    assert isinstance(place_statistics(unplaced, np.ones(4), rows), np.ndarray)


# ---------------------------------------------------------------- ZeRO-1


@pytest.mark.parametrize(
    "shape, skip, expected",
    [
        ((16, 24), 0, P("data")),
        ((3, 16), 0, P(None, "data")),
        ((5,), 0, P()),
        ((), 0, P()),
        ((0, 8), 0, P(None, "data")),
        ((8, 3, 16), 1, P(None, None, "data")),
        ((8, 3), 1, P()),
    ],
)
def test_split_spec_takes_the_first_divisible_dimension(shape, skip, expected):
    assert split_spec(shape, "data", 8, skip=skip) == expected


def test_zero1_splits_mirrored_leaves_and_replicates_the_rest():
    mesh = _mesh()
    params = {"w": jnp.zeros((3, 4))}
    out = zero1_state_shardings(gradtx.adam(0.1), params, mesh, "data")
    assert out[0].mu["w"] == NamedSharding(mesh, P("data"))
    assert out[0].count == NamedSharding(mesh, P())


@pytest.mark.parametrize("axis_name", ["model", ("data", "model"), ()])
def test_zero1_refuses_an_axis_the_mesh_lacks(axis_name):
    with pytest.raises(ValueError, match="axis_name must name axes of the mesh"):
        zero1_state_shardings(gradtx.adam(0.1), {"w": jnp.zeros(2)}, _mesh(), axis_name)


# ---------------------------------------------------------------- clip_by_global_norm(axis_name)


@pytest.mark.parametrize("axis_name", [3, (), ("data", 1), ["data"]])
def test_clip_by_global_norm_refuses_a_bad_axis_name(axis_name):
    with pytest.raises(ValueError, match=r"clip_by_global_norm: axis_name must be"):
        gradtx.clip_by_global_norm(1.0, axis_name=axis_name)


@pytest.mark.parametrize("scale", [1.0, 1e20])  # 1e20: the rescued pass after an overflow
def test_clip_by_global_norm_with_an_axis_on_one_device_is_unchanged(scale):
    grads = {"a": jnp.arange(6.0).reshape(3, 2) * scale, "b": jnp.ones(2) * scale}
    plain = gradtx.clip_by_global_norm(2.0)
    expected = plain.update(grads, plain.init(grads))[0]
    tx = gradtx.clip_by_global_norm(2.0, axis_name="data")
    clip = jax.shard_map(
        lambda g: tx.update(g, tx.init(g))[0], mesh=_mesh(), in_specs=P(), out_specs=P()
    )
    got = jax.jit(clip)(grads)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------- 8 devices, in a subprocess


def _xla_flags() -> str:
    inherited = re.sub(
        r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", "")
    )
    return f"{inherited} --xla_force_host_platform_device_count=8 {FAST_COMPILE}".strip()


def _run_multi_device() -> dict:
    """Runs the 8-device script; its JSON report, or ``{"error": ...}``."""
    env = {**os.environ, "XLA_FLAGS": _xla_flags(), "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        return {"error": result.stderr[-4000:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _shared_run(directory: pathlib.Path) -> dict:
    """One run for all xdist workers: the first to claim it runs it, the others wait.

    The claim is an exclusively created file, the report is renamed into place
    whole, so a worker never reads half a report.
    """
    report_file, claim = directory / "multi_device.json", directory / "multi_device.claim"
    try:
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        deadline = time.monotonic() + 660
        while not report_file.exists():
            assert time.monotonic() < deadline, "the 8-device run of another worker never ended"
            time.sleep(0.2)
        return json.loads(report_file.read_text())
    report = _run_multi_device()
    partial = report_file.with_name(report_file.name + ".partial")
    partial.write_text(json.dumps(report))
    os.replace(partial, report_file)
    return report


@pytest.fixture(scope="module")
def report(request, tmp_path_factory) -> dict:
    if hasattr(request.config, "workerinput"):  # an xdist worker: share the run
        facts = _shared_run(tmp_path_factory.getbasetemp().parent)
    else:
        facts = _run_multi_device()
    assert "error" not in facts, facts.get("error")
    return facts


def test_every_named_optimizer_was_run(report):
    assert set(report["named"]) == {entry.name for entry in NAMED_OPTIMIZERS}


@pytest.mark.parametrize("entry", NAMED_OPTIMIZERS, ids=str)
def test_init_under_jit_places_state_like_params(report, entry):
    assert report["named"][entry.name]["jit_init_problems"] == []


@pytest.mark.parametrize("entry", NAMED_OPTIMIZERS, ids=str)
def test_a_sharded_step_keeps_every_placement(report, entry):
    facts = report["named"][entry.name]
    assert facts["step_state_problems"] == []
    assert facts["step_param_problems"] == []


@pytest.mark.parametrize("entry", NAMED_OPTIMIZERS, ids=str)
def test_a_sharded_step_matches_one_device(report, entry):
    # Both steps get the same gradient: what differs is how XLA fuses the two
    # programs, a few float32 ulps of the params and state, plus (for a state held
    # in a coarser dtype, e.g. a bfloat16 mu) one rounding of that dtype.
    # Eigenvectors (entry.holds_eigenvectors) move by ulp / eigengap: 1e-3 of their scale.
    facts = report["named"][entry.name]
    assert facts["params_change"] > 0, "the step moved nothing: the comparison would be empty"
    coarse = 2 * facts["state_epsilon"]
    assert (
        facts["params_diff"]
        <= 8 * F32_EPS * facts["params_scale"] + coarse * facts["params_change"]
    )
    state_rtol = 1e-3 if entry.holds_eigenvectors else 8 * F32_EPS + coarse
    assert facts["state_diff"] <= state_rtol * facts["state_scale"]


def test_the_sharded_gradient_matches_one_device(report):
    # The batch is split over 'data': the sums over it are reordered (float32).
    assert report["grads_diff"] <= 1e-5 * report["grads_scale"]


def test_eager_init_places_state_like_params(report):
    # tx.init(params) on placed params, outside jit, should create each moment
    # where its param lives, as jnp.zeros_like does.
    problems = {
        name: facts["eager_init_problems"][:3]
        for name, facts in report["named"].items()
        if facts["eager_init_problems"]
    }
    assert problems == {}


def _no_gather(collectives: dict) -> None:
    counts = collectives["counts"]
    assert counts["all-gather"] == counts["reduce-scatter"] == counts["all-to-all"] == 0
    assert counts["collective-permute"] == 0


@pytest.mark.perf
def test_adam_step_needs_no_collective(report):
    collectives = report["named"][BY_NAME["adam"].name]["collectives"]
    assert sum(collectives["counts"].values()) == 0


@pytest.mark.perf
@pytest.mark.parametrize("name", ["clip_by_global_norm", "clip_then_adam"])
def test_global_norm_clipping_all_reduces_scalars_only(report, name):
    collectives = report["collectives"][name]
    _no_gather(collectives)
    assert collectives["counts"]["all-reduce"] >= 1
    for shape in collectives["shapes"]["all-reduce"]:
        # One scalar, or a tuple of scalars where XLA combined the per-leaf sums.
        assert re.fullmatch(r"\(?f32\[\](?:, f32\[\])*\)?", shape), shape


def test_zero1_each_device_holds_an_eighth_of_the_split_state(report):
    zero1 = report["zero1"]
    expected_per_device = 0
    for path, leaf in zero1["leaves"].items():
        shape = leaf["shape"]
        split = [d for d, n in enumerate(shape) if n % 8 == 0 and n > 0]
        size = int(np.prod(shape)) * 4  # float32 moments, int32 count
        if ".count" in path or not split:
            assert all(s == shape for s in leaf["per_device"].values()), path
            expected_per_device += size
        else:
            eighth = list(shape)
            eighth[split[0]] //= 8
            assert all(s == eighth for s in leaf["per_device"].values()), path
            expected_per_device += size // 8
    assert set(zero1["state_bytes_per_device"].values()) == {expected_per_device}
    assert expected_per_device < zero1["state_bytes_total"] / 4
    assert zero1["params_replicated"]


def test_zero1_step_matches_one_device(report):
    zero1 = report["zero1"]
    # The same arithmetic in two fusions: a few float32 ulps.
    assert 0 < zero1["params_change"]
    assert zero1["params_diff"] <= 8 * F32_EPS * zero1["params_scale"]
    assert zero1["state_diff"] <= 8 * F32_EPS * zero1["state_scale"]


# Where the statistics of tests/sharded/multi_device.py's STATISTICS_SPECS params go
# on the 2 x 4 mesh ("data", "model"): mlp/kernel (8, 8) P("data", "model"),
# embed/embedding (16, 8) P(("data", "model")), attn/q_proj/kernel (8, 16)
# P(None, "model"), lm_head/kernel (6, 6) P("data"), norm/scale (8,) P("model").
ALL = ("data", "model")
SOAP_FACTORS = {  # the rows of L_i and Q_i split as axis i; no statistic of a side of 16
    "['attn']['q_proj']['kernel'][0]": P(None, None),
    "['embed']['embedding'][1]": P(None, None),
    "['lm_head']['kernel'][0]": P("data", None),
    "['lm_head']['kernel'][1]": P(None, None),
    "['mlp']['kernel'][0]": P("data", None),
    "['mlp']['kernel'][1]": P("model", None),
}
SHAMPOO_BLOCKS = {  # 2 x 2 blocks, stacked: over the rows' mesh axes, then the columns'
    "['attn']['q_proj']['kernel']": P("model", None, None),  # 32 blocks
    "['embed']['embedding']": P(ALL, None, None),  # 32 blocks
    "['lm_head']['kernel']": P(None, None, None),  # 9 blocks: 'data' (2) does not divide
    "['mlp']['kernel']": P(ALL, None, None),  # 16 blocks
}
ADAM_MINI_V = {  # the kept axes split as the param's
    "['attn']['q_proj']['kernel']": P(None, "model", None),  # (1, 4 heads, 1)
    "['embed']['embedding']": P(ALL, None),  # one per token: (16, 1)
    "['lm_head']['kernel']": P(None, None),  # one per output neuron: (1, 6), 6 not split
    "['mlp']['kernel']": P(None, "model"),  # one per output neuron: (1, 8)
    "['norm']['scale']": P(None),  # one for the whole leaf
}
EXPECTED_STATISTICS = {
    "soap": {f"[0].{f}{k}": v for f in ("stats", "bases") for k, v in SOAP_FACTORS.items()},
    "shampoo": {
        f"[0].preconditioners{k}[{i}]": v for k, v in SHAMPOO_BLOCKS.items() for i in range(4)
    },
    "adam_mini": {f"[0].nu{k}": v for k, v in ADAM_MINI_V.items()},
}
# ZeRO-1 (params whole on a "data" axis of 8): each statistic along its first
# dimension that 8 divides, as a moment.
ZERO1_SOAP = {  # 8 x 8 factors split, 6 x 6 whole
    "['attn']['q_proj']['kernel'][0]": P("data"),
    "['embed']['embedding'][1]": P("data"),
    "['lm_head']['kernel'][0]": P(),
    "['lm_head']['kernel'][1]": P(),
    "['mlp']['kernel'][0]": P("data"),
    "['mlp']['kernel'][1]": P("data"),
}
EXPECTED_ZERO1_STATISTICS = {
    "soap": {f"[0].{f}{k}": v for f in ("stats", "bases") for k, v in ZERO1_SOAP.items()},
    "shampoo": {
        f"[0].preconditioners{k}[{i}]": P() if "lm_head" in k else P("data")
        for k in SHAMPOO_BLOCKS
        for i in range(4)
    },
    "adam_mini": {
        "[0].nu['attn']['q_proj']['kernel']": P(),  # (1, 4, 1)
        "[0].nu['embed']['embedding']": P("data"),  # (16, 1)
        "[0].nu['lm_head']['kernel']": P(),  # (1, 6)
        "[0].nu['mlp']['kernel']": P(None, "data"),  # (1, 8)
        "[0].nu['norm']['scale']": P(),  # (1,)
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED_STATISTICS))
def test_statistics_are_split_like_their_params_on_8_devices(report, name):
    facts = report["statistics"][name]
    expected = {path: str(spec) for path, spec in EXPECTED_STATISTICS[name].items()}
    assert facts["specs"] == expected
    zero1 = {path: str(spec) for path, spec in EXPECTED_ZERO1_STATISTICS[name].items()}
    assert facts["zero1"]["specs"] == zero1
    # The eager init places them so, and every step keeps every state leaf where it is.
    assert facts["init_problems"] == []
    assert facts["step_problems"] == facts["zero1"]["step_problems"] == []


@pytest.mark.parametrize("name", sorted(EXPECTED_STATISTICS))
@pytest.mark.parametrize("layout", ["like_params", "zero1"])
def test_steps_with_split_statistics_match_one_device(report, name, layout):
    # Four jitted steps with the state's in/out shardings against the same steps
    # on one device: the sums are reordered, and SOAP's eigenbases carry that
    # rounding divided by the eigengaps (measured: 6e-7 of the scale, SOAP).
    facts = report["statistics"][name]
    facts = facts if layout == "like_params" else facts["zero1"]
    assert facts["params_change"] > 0
    assert facts["params_diff"] <= 1e-6 * facts["params_scale"]
    assert facts["state_diff"] <= 1e-6 * facts["state_scale"]


@pytest.mark.parametrize("mesh", ["data", "x_y"])
@pytest.mark.parametrize("case", ["clipped", "unclipped", "overflow", "zeros"])
def test_clip_inside_shard_map_matches_the_unsharded_clip(report, mesh, case):
    facts = report["shard_map_clip"][f"{mesh}/{case}"]
    # The sum of squares is added in another order across devices: float32 ulps.
    assert facts["rel_diff"] <= 4 * F32_EPS
    assert facts["finite"]
    if case in ("clipped", "overflow"):
        # Without axis_name each device clips by the norm of its own block.
        assert facts["local_only_rel_diff"] > 0.1


def test_restore_state_places_leaves_like_the_template(report):
    assert report["restore_sharded"] == {"placement_problems": [], "values_equal": True}


# ---------------------------------------------------------------- line searches (axis_name)

AXIS_NAME_OWNERS = {
    "scale_by_backtracking_linesearch": lambda a: gradtx.scale_by_backtracking_linesearch(
        10, axis_name=a
    ),
    "scale_by_zoom_linesearch": lambda a: gradtx.scale_by_zoom_linesearch(10, axis_name=a),
    "scale_by_lbfgs": lambda a: gradtx.scale_by_lbfgs(axis_name=a),
    "lbfgs": lambda a: gradtx.lbfgs(axis_name=a),
    "scale_by_nonlinear_cg": lambda a: gradtx.scale_by_nonlinear_cg(axis_name=a),
    "nonlinear_cg": lambda a: gradtx.nonlinear_cg(axis_name=a),
    "scale_by_hessian_free": lambda a: gradtx.scale_by_hessian_free(axis_name=a),
    "hessian_free": lambda a: gradtx.hessian_free(axis_name=a),
}


@pytest.mark.parametrize("owner", AXIS_NAME_OWNERS)
@pytest.mark.parametrize("axis_name", [3, (), ("data", 1), ["data"]])
def test_second_order_blocks_refuse_a_bad_axis_name(owner, axis_name):
    with pytest.raises(ValueError, match=rf"^{owner}: axis_name must be None, a mesh axis name"):
        AXIS_NAME_OWNERS[owner](axis_name)


@pytest.mark.parametrize("owner", AXIS_NAME_OWNERS)
def test_second_order_blocks_accept_an_axis_name_or_a_tuple(owner):
    for axis_name in (None, "data", ("data", "model")):
        AXIS_NAME_OWNERS[owner](axis_name)


@pytest.mark.parametrize("name", ["backtracking", "zoom", "lbfgs", "nonlinear_cg"])
def test_linesearch_inside_shard_map_matches_the_unsharded_run(report, name):
    # 8 steps, every leaf split over 8 devices, value_fn the psum of the blocks' losses
    # (tests/sharded/multi_device.py, check_shard_map_linesearch).
    facts = report["shard_map_linesearch"][name]
    # The same decisions: every search made as many evaluations and met its
    # conditions exactly as the unsharded one.
    assert facts["evaluations"] == facts["reference_evaluations"]
    assert facts["succeeded"] == facts["reference_succeeded"] == [True] * len(facts["etas"])
    # The same numbers up to rounding. The psum adds the blocks' losses and slopes
    # in another order than one device does: a few float32 ulps each. The cubic
    # step of the zoom (and of CG's search) divides the difference of two nearly
    # equal losses by the gap between the trials, which turns those ulps into ~40
    # ulps of eta (measured 4.6e-6 on CPU); 1e-4 leaves a margin of 20. The params,
    # carried through 8 such steps, differ by at most 6.5 ulps of their scale
    # (measured), 32 leaves a margin of 5.
    assert facts["eta_rel_diff"] <= 1e-4
    assert facts["value_rel_diff"] <= 64 * F32_EPS
    assert facts["params_diff"] <= 32 * F32_EPS * facts["params_scale"]
    # The run went somewhere: the loss fell to under a quarter of its start.
    assert facts["values"][-1] < 0.25 * facts["initial_value"]


def test_hessian_free_inside_shard_map_takes_the_unsharded_decisions(report):
    # Truncated CG on psum-ed Hessian-vector products, then Armijo backtracking, 8
    # steps. The decisions are the same: every search made as many evaluations
    # and accepted the same step sizes, bit for bit.
    facts = report["shard_map_linesearch"]["hessian_free"]
    assert facts["evaluations"] == facts["reference_evaluations"]
    assert facts["succeeded"] == facts["reference_succeeded"] == [True] * len(facts["etas"])
    assert facts["eta_rel_diff"] == 0.0
    # The directions are not equal to a few ulps: CG's iterates carry the rounding
    # of each dot product (here summed in another order) amplified by the
    # condition number of the system, whose curvatures span 1 to 1e3 (forward
    # error ~ kappa * eps). The constant depends on how XLA orders the sums:
    # losses 2.5e-4 relative with XLA:CPU's fusion emitters, 4.8e-4 with its
    # classic ones (the suite's), params 1.6e-4; 8 * kappa * eps = 9.5e-4 leaves
    # a margin of about 2 over both.
    kappa_eps = 1e3 * F32_EPS
    assert facts["params_diff"] <= 8 * kappa_eps * facts["params_scale"]
    assert facts["value_rel_diff"] <= 8 * kappa_eps
    assert facts["values"][-1] < 0.25 * facts["initial_value"]


def test_backtracking_inside_shard_map_takes_the_same_steps_bit_for_bit(report):
    # Its steps are eta_0 times powers of the decrease factor, chosen by the
    # decisions alone: the same decisions give the same bits.
    facts = report["shard_map_linesearch"]["backtracking"]
    assert facts["eta_rel_diff"] == 0.0
    assert max(facts["evaluations"]) > 1  # it did backtrack


@pytest.mark.parametrize("name", ["lbfgs", "zoom"])
def test_without_axis_name_shard_map_refuses_the_loop(report, name):
    # The control: L-BFGS's direction, or the zoom's slopes, on one block each. The
    # carried state then differs between devices, which shard_map's check_vma
    # refuses while tracing the scan (or the search's while_loop): a forgotten
    # axis_name is an error, not a silently different step.
    message = report["shard_map_linesearch"][f"{name}_without_axis_name"]
    assert message != "ran"
    assert "carry input and carry output must have equal types" in message
