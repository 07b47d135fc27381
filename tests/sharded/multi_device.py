"""Checks on 8 simulated CPU devices, run by tests/test_sharding.py in a subprocess.

The parent sets ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before
this process imports jax (the pytest process has imported it with 1 device).
Everything runs in this one process and the facts come back as one JSON object
on the last line of stdout; the assertions live in tests/test_sharding.py.

One parameter tree holds both styles on a 2 x 4 mesh ``('data', 'model')``:
``fsdp/*`` is split over all 8 devices along its first axis (FSDP), ``tp/*`` is
Megatron's tensor parallelism over ``model`` (the first kernel split by
columns, the second by rows, the last bias replicated) and the scalar
``scale`` is replicated. The gradient of a small network on a batch split over
``data`` is computed once, sharded (and on one device, to compare); each
optimizer's step (``update``, ``apply_updates``) on it is then its own jitted
program, sharded and on one device.

Run by hand from the repository root::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 PYTHONPATH=. \\
        python tests/sharded/multi_device.py
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx
from gradtx.checkpoint import restore_state
from gradtx.second_order.linesearch import linesearch_states
from gradtx.sharding import mirror_indices, state_shardings, zero1_state_shardings
from tests.registry import NAMED_OPTIMIZERS

N_DEVICES = 8
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
# An HLO instruction "%name = f32[4,8]{1,0} all-gather(...)": its result shape (a tuple
# "(f32[], f32[])" where XLA combined several) and its op, or the op's async "-start" half.
_HLO_OP = re.compile(
    r"^\s*%?\S+ = (?P<shape>[^=\n]*?) (?P<op>" + "|".join(COLLECTIVES) + r")(?:-start)?\(",
    re.MULTILINE,
)

ALL = ("data", "model")
SPECS = {
    "fsdp": {"kernel": P(ALL), "bias": P(ALL)},
    "tp": {
        "kernel1": P(None, "model"),
        "bias1": P("model"),
        "kernel2": P("model", None),
        "bias2": P(),
    },
    "scale": P(),
}


# ---------------------------------------------------------------- the problem


def make_params() -> dict[str, Any]:
    rng = np.random.default_rng(0)

    def normal(*shape, scale):
        return (rng.normal(size=shape) * scale).astype(np.float32)

    return {
        "fsdp": {"kernel": normal(8, 16, scale=0.3), "bias": normal(16, scale=0.1)},
        "tp": {
            "kernel1": normal(16, 16, scale=0.25),
            "bias1": normal(16, scale=0.1),
            "kernel2": normal(16, 8, scale=0.25),
            "bias2": normal(8, scale=0.1),
        },
        "scale": np.float32(1.1),
    }


def make_batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(16, 8)).astype(np.float32), rng.normal(size=(16, 8)).astype(np.float32)


def loss(params, x, y):
    hidden = jnp.tanh(x @ params["fsdp"]["kernel"] + params["fsdp"]["bias"])
    tp = params["tp"]
    hidden = jnp.tanh(hidden @ tp["kernel1"] + tp["bias1"])
    return jnp.mean((params["scale"] * (hidden @ tp["kernel2"] + tp["bias2"]) - y) ** 2)


def optimizer_step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    return step


# ---------------------------------------------------------------- measuring


def _keystr(path: Any) -> str:
    return jax.tree_util.keystr(path)


def _where(sharding: Any) -> str:
    """A sharding in a few words: its PartitionSpec, or its kind and devices."""
    if isinstance(sharding, NamedSharding):
        return str(sharding.spec)
    return f"{type(sharding).__name__}({sorted(d.id for d in sharding.device_set)})"


def collective_counts(compiled_text: str) -> dict[str, Any]:
    """The collectives of a compiled HLO module: a count per kind, and each result shape."""
    counts = dict.fromkeys(COLLECTIVES, 0)
    shapes: dict[str, list[str]] = {op: [] for op in COLLECTIVES}
    for match in _HLO_OP.finditer(compiled_text):
        counts[match["op"]] += 1
        shapes[match["op"]].append(match["shape"])
    return {"counts": counts, "shapes": shapes}


def _max_diff(a: Any, b: Any) -> float:
    """The largest ``|a - b|`` over the leaves (in float64)."""
    return max(
        (
            float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        ),
        default=0.0,
    )


def _max_rel_diff(a: Any, b: Any) -> float:
    """The largest ``|a - b| / max(|b|, tiny)`` over the leaves."""
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        scale = np.maximum(np.abs(y), np.finfo(np.float32).tiny)
        worst = max(worst, float(np.max(np.abs(x - y) / scale, initial=0.0)))
    return worst


def _scale(tree: Any) -> float:
    """The largest magnitude in the tree (1 if it is empty or all zeros)."""
    biggest = [
        float(np.max(np.abs(np.asarray(x, np.float64)), initial=0)) for x in jax.tree.leaves(tree)
    ]
    return max([*biggest, 0.0]) or 1.0


def _coarsest_epsilon(state: Any) -> float:
    """The largest machine epsilon among the state's floating leaves (float32's if none)."""
    eps = [
        float(jnp.finfo(leaf.dtype).eps)
        for leaf in jax.tree.leaves(state)
        if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    return max([float(jnp.finfo(jnp.float32).eps), *eps])


# ---------------------------------------------------------------- placement oracle


def expected_placement(state_path: str, shape: tuple[int, ...], param_shapes: dict[str, Any]):
    """The param a state leaf should be placed like: the one whose path ends its path.

    Independent of gradtx.sharding's structure matching: ``[0].mu['tp']['bias1']``
    ends with the param path ``['tp']['bias1']`` (the longest such wins) and its
    shape ends with the param's (a stack of copies, as L-BFGS's memory, has
    leading dimensions). ``None``: a leaf that mirrors no param.
    """
    matches = [
        path
        for path, param_shape in param_shapes.items()
        if state_path.endswith(path)
        and tuple(shape[len(shape) - len(param_shape) :]) == param_shape
    ]
    return max(matches, key=len) if matches else None


def quantized_placement(state_path: str, leaf, param_shapes, param_sharding):
    """Where the codes or scales of a block-quantized moment (gradtx.quantize_state)
    should be, or ``None`` for any other leaf.

    The codes have the param's shape (the last axis halved, 4-bit) and take its
    spec, the last axis whole where its length is not divisible; the scales, shape
    ``param.shape[:k] + (n_blocks,)``, take the spec of the ``k`` leading axes and,
    on the blocks axis, axis ``k``'s entry when no later axis is split and it
    divides the number of blocks. Rank-1 scales (``.scales[a]``, a vector of
    ``param.shape[a]``) take the param's entry for axis ``a``.
    """
    rank1 = re.fullmatch(r"(.*)\.scales\[(\d+)\]", state_path)
    if rank1:
        state_path, axis = rank1.group(1) + ".scales", int(rank1.group(2))
    field = state_path.rsplit(".", 1)[-1]
    if field not in ("codes", "scales") or leaf.dtype not in (jnp.uint8, jnp.float32):
        return None
    owner = expected_placement(state_path[: -len(field) - 1], (), {p: () for p in param_shapes})
    if owner is None:
        return None
    like = param_sharding[owner]
    spec = tuple(like.spec) + (None,) * (len(param_shapes[owner]) - len(tuple(like.spec)))

    def devices(entry):
        names = (entry,) if isinstance(entry, str) else tuple(entry)
        return int(np.prod([like.mesh.shape[n] for n in names]))

    def kept(entry, length):
        return entry if entry is None or length % devices(entry) == 0 else None

    if field == "codes":
        return NamedSharding(like.mesh, P(*spec[:-1], kept(spec[-1], leaf.shape[-1])))
    if rank1:
        return NamedSharding(like.mesh, P(kept(spec[axis], leaf.shape[0])))
    k = leaf.ndim - 1
    blocks = kept(spec[k], leaf.shape[-1]) if all(e is None for e in spec[k + 1 :]) else None
    return NamedSharding(like.mesh, P(*spec[:k], blocks))


def _devices(mesh, entry) -> int:
    names = (entry,) if isinstance(entry, str) else tuple(entry)
    return int(np.prod([mesh.shape[n] for n in names]))


def _fitted(mesh, entries, shape):
    """``P(*entries)``, an entry dropped where its devices do not divide the length."""
    pairs = zip(entries, shape, strict=True)
    return P(*(e if e is None or n % _devices(mesh, e) == 0 else None for e, n in pairs))


def _soap_factor(k, leaf, param_shape, spec):
    # The rows of L_k, Q_k split as axis k of the param (no merge_dims here).
    return (spec[k], None)


def _shampoo_blocks(k, leaf, param_shape, spec):
    # Matrices only here: the blocks axis over the rows' mesh axes, then the columns'.
    names = []
    for entry in (spec[0], spec[-1]):
        names += [] if entry is None else [entry] if isinstance(entry, str) else list(entry)
    return (None if not names else names[0] if len(names) == 1 else tuple(names), None, None)


def _adam_mini_v(k, leaf, param_shape, spec):
    # No "heads" leaf here: the kept axes (the param's length) split as the param's.
    return tuple(
        e if n == m else None for e, n, m in zip(spec, leaf.shape, param_shape, strict=True)
    )


# Per named optimizer, the state fields that hold per-parameter statistics not
# shaped like their param, and where their leaves go (each module's docstring):
# rule(index in the param's tuple or None, leaf, param shape, param spec entries).
STATISTICS = {
    "soap": {"stats": _soap_factor, "bases": _soap_factor},
    "shampoo": {"preconditioners": _shampoo_blocks},
    "adam_mini": {"nu": _adam_mini_v},
}
_FIELD = re.compile(r"\.(?P<field>\w+)(?P<param>(?:\['[^']*'\])*)(?:\[(?P<k>\d+)\])?$")


def statistics_placement(rules, state_path: str, leaf, param_shapes, param_sharding):
    """Where a statistic leaf of ``rules`` (an entry of STATISTICS) should be, or None."""
    match = _FIELD.search(state_path)
    if not rules or match is None or match["field"] not in rules:
        return None
    param = match["param"]
    if param not in param_shapes or tuple(leaf.shape) == param_shapes[param]:
        return None  # a leaf shaped like its param: the mirror oracle's
    like = param_sharding[param]
    shape = param_shapes[param]
    spec = tuple(like.spec) + (None,) * (len(shape) - len(tuple(like.spec)))
    k = None if match["k"] is None else int(match["k"])
    entries = rules[match["field"]](k, leaf, shape, spec)
    return NamedSharding(like.mesh, _fitted(like.mesh, entries, leaf.shape))


def placement_problems(state, params_sharded, statistics=None) -> list[str]:
    """Each state leaf that is not where the oracle says, as a sentence.

    ``statistics``: the optimizer's entry of STATISTICS, if it has one.
    """
    param_shapes, param_sharding = {}, {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params_sharded)[0]:
        param_shapes[_keystr(path)] = tuple(leaf.shape)
        param_sharding[_keystr(path)] = leaf.sharding
    problems = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        quantized = quantized_placement(_keystr(path), leaf, param_shapes, param_sharding)
        if quantized is None:
            quantized = statistics_placement(
                statistics, _keystr(path), leaf, param_shapes, param_sharding
            )
        if quantized is not None:
            if not leaf.sharding.is_equivalent_to(quantized, leaf.ndim):
                problems.append(f"{_keystr(path)}: {_where(leaf.sharding)}, expected {quantized}")
            continue
        mirrored = expected_placement(_keystr(path), tuple(leaf.shape), param_shapes)
        if mirrored is None:
            if not leaf.sharding.is_fully_replicated:
                problems.append(f"{_keystr(path)}: {_where(leaf.sharding)}, expected replicated")
            continue
        like = param_sharding[mirrored]
        stack = leaf.ndim - len(param_shapes[mirrored])
        expected = NamedSharding(like.mesh, P(*([None] * stack), *like.spec))
        if not leaf.sharding.is_equivalent_to(expected, leaf.ndim):
            problems.append(
                f"{_keystr(path)}: {_where(leaf.sharding)}, expected {_where(expected)} "
                f"like {mirrored}"
            )
    return problems


def param_problems(params, mesh) -> list[str]:
    """Each param not placed as SPECS says."""
    problems = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        spec = SPECS
        for key in path:
            spec = spec[key.key]
        if not leaf.sharding.is_equivalent_to(NamedSharding(mesh, spec), leaf.ndim):
            problems.append(f"{_keystr(path)}: {_where(leaf.sharding)}, expected {spec}")
    return problems


def unmirrored_leaves(state, params) -> list[str]:
    """State leaves that gradtx.sharding.mirror_indices ties to no param."""
    flat = jax.tree_util.tree_flatten_with_path(mirror_indices(state, params))[0]
    return [_keystr(path) for path, i in flat if i < 0]


# ---------------------------------------------------------------- the checks


def check_named_optimizers(mesh, params, params_one, grads, grads_one):
    """Per named optimizer: init placement (jit and eager), one step vs one device.

    Every init runs in one program (no collectives). Each sharded step is its own
    program: on a CPU with fewer cores than simulated devices, one program
    holding many independent collectives can starve XLA's rendezvous of threads.
    """
    txs = [entry.make() for entry in NAMED_OPTIMIZERS]
    param_shardings = jax.tree.map(lambda p: p.sharding, params)
    shardings = [state_shardings(tx, params) for tx in txs]
    init_all = lambda p: [tx.init(p) for tx in txs]  # noqa: E731
    states = jax.jit(init_all, out_shardings=shardings)(params)
    # The one-device reference steps, all in one program (nothing is sharded there,
    # so there is no collective to starve): one compilation instead of one each.
    steps_one = jax.jit(
        lambda p, ss, g: [optimizer_step(tx)(p, s, g) for tx, s in zip(txs, ss, strict=True)]
    )(params_one, [tx.init(params_one) for tx in txs], grads_one)
    results = {}
    for entry, tx, state, sharding, (ref_params, ref_state) in zip(
        NAMED_OPTIMIZERS, txs, states, shardings, steps_one, strict=True
    ):
        compiled = (
            jax.jit(
                optimizer_step(tx),
                in_shardings=(param_shardings, sharding, param_shardings),
                out_shardings=(param_shardings, sharding),
            )
            .lower(params, state, grads)
            .compile()
        )
        new_params, new_state = compiled(params, state, grads)
        rules = STATISTICS.get(entry.name)
        results[entry.name] = {
            "jit_init_problems": placement_problems(state, params, rules),
            "eager_init_problems": placement_problems(tx.init(params), params, rules),
            "step_state_problems": placement_problems(new_state, params, rules),
            "step_param_problems": param_problems(new_params, mesh),
            "params_diff": _max_diff(new_params, ref_params),
            "state_diff": _max_diff(new_state, ref_state),
            "state_epsilon": _coarsest_epsilon(new_state),
            "params_scale": _scale(ref_params),
            "state_scale": _scale(ref_state),
            "params_change": _max_diff(new_params, params_one),
            "unmirrored": unmirrored_leaves(state, params),
            "collectives": collective_counts(compiled.as_text()),
        }
    return results


def check_collectives(params, grads, batch):
    """Collectives of compiled steps besides the named optimizers' (see check_named_optimizers).

    ``clip_by_global_norm`` and ``chain(clip_by_global_norm, adam)`` take the
    gradient as input; ``adam_train_step`` is the whole step (forward, backward,
    update), whose forward pass all-gathers the FSDP kernel by design.
    """
    param_shardings = jax.tree.map(lambda p: p.sharding, params)
    out = {}
    for name, tx in {
        "clip_by_global_norm": gradtx.clip_by_global_norm(1.0),
        "clip_then_adam": gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(0.1)),
    }.items():
        sharding = state_shardings(tx, params)
        state = jax.jit(tx.init, out_shardings=sharding)(params)
        jitted = jax.jit(
            optimizer_step(tx),
            in_shardings=(param_shardings, sharding, param_shardings),
            out_shardings=(param_shardings, sharding),
        )
        out[name] = collective_counts(jitted.lower(params, state, grads).compile().as_text())
    tx = gradtx.adam(0.1)
    sharding = state_shardings(tx, params)
    state = jax.jit(tx.init, out_shardings=sharding)(params)

    def train_step(params, state, x, y):
        return optimizer_step(tx)(params, state, jax.grad(loss)(params, x, y))

    jitted = jax.jit(
        train_step,
        in_shardings=(param_shardings, sharding, *(b.sharding for b in batch)),
        out_shardings=(param_shardings, sharding),
    )
    out["adam_train_step"] = collective_counts(
        jitted.lower(params, state, *batch).compile().as_text()
    )
    return out


def check_zero1(devices):
    """ZeRO-1: params replicated on a data axis of 8, the state split 8 ways."""
    mesh = Mesh(np.asarray(devices), ("data",))
    replicated = NamedSharding(mesh, P())
    rng = np.random.default_rng(2)
    params_one = {
        "kernel": jnp.asarray(rng.normal(size=(16, 24)).astype(np.float32)),
        "proj": jnp.asarray(rng.normal(size=(3, 16)).astype(np.float32)),
        "odd": jnp.asarray(rng.normal(size=(5,)).astype(np.float32)),
    }
    grads_one = jax.tree.map(lambda p: jnp.sin(3 * p), params_one)
    params, grads = jax.device_put((params_one, grads_one), replicated)
    tx = gradtx.adam(0.1)
    shardings = zero1_state_shardings(tx, params, mesh, "data")
    state = jax.jit(tx.init, out_shardings=shardings)(params)
    param_shardings = jax.tree.map(lambda _: replicated, params)
    jitted = jax.jit(
        optimizer_step(tx),
        in_shardings=(param_shardings, shardings, param_shardings),
        out_shardings=(param_shardings, shardings),
    )
    compiled = jitted.lower(params, state, grads).compile()
    new_params, new_state = compiled(params, state, grads)
    ref_params, ref_state = jax.jit(optimizer_step(tx))(params_one, tx.init(params_one), grads_one)
    leaves = {
        _keystr(path): {
            "shape": list(leaf.shape),
            "per_device": {str(s.device.id): list(s.data.shape) for s in leaf.addressable_shards},
        }
        for path, leaf in jax.tree_util.tree_flatten_with_path(new_state)[0]
    }
    bytes_per_device = dict.fromkeys((str(d.id) for d in devices), 0)
    for leaf in jax.tree.leaves(new_state):
        for shard in leaf.addressable_shards:
            bytes_per_device[str(shard.device.id)] += shard.data.nbytes
    return {
        "leaves": leaves,
        "state_bytes_total": sum(leaf.nbytes for leaf in jax.tree.leaves(new_state)),
        "state_bytes_per_device": bytes_per_device,
        "params_replicated": all(
            p.sharding.is_fully_replicated for p in jax.tree.leaves(new_params)
        ),
        "params_diff": _max_diff(new_params, ref_params),
        "state_diff": _max_diff(new_state, ref_state),
        "params_change": _max_diff(new_params, params_one),
        "params_scale": _scale(ref_params),
        "state_scale": _scale(ref_state),
        "step_collectives": collective_counts(compiled.as_text()),
    }


# Params for SOAP, Shampoo and Adam-mini's statistics on the 2 x 4 mesh: names
# that Adam-mini's default partition reads (per output neuron, per token, per
# head, whole), shapes whose statistics are of full rank after one gradient
# (an eigenbasis of a rank-deficient one is arbitrary), and lm_head, whose 3 x 3
# Shampoo blocks the 2 devices of 'data' do not divide.
STATISTICS_SPECS = {
    "mlp": {"kernel": P("data", "model")},
    "embed": {"embedding": P(ALL, None)},
    "attn": {"q_proj": {"kernel": P(None, "model")}},
    "lm_head": {"kernel": P("data", None)},
    "norm": {"scale": P("model")},
}


def make_statistics_params() -> dict[str, Any]:
    rng = np.random.default_rng(5)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return {
        "mlp": {"kernel": normal(8, 8)},
        "embed": {"embedding": normal(16, 8)},
        "attn": {"q_proj": {"kernel": normal(8, 16)}},
        "lm_head": {"kernel": normal(6, 6)},
        "norm": {"scale": normal(8)},
    }


STATISTICS_OPTIMIZERS = {
    # max_precond_dim=8: no statistic of a 16-long side (rank 8 after one gradient).
    "soap": lambda: gradtx.soap(0.1, precondition_frequency=2, max_precond_dim=8),
    "shampoo": lambda: gradtx.shampoo(0.1, block_size=2, matrix_epsilon=1e-3),
    "adam_mini": lambda: gradtx.adam_mini(0.1, num_heads=4),
}
STATISTICS_FIELDS = {
    "soap": ("stats", "bases"),
    "shampoo": ("preconditioners",),
    "adam_mini": ("nu",),
}


def check_statistics(mesh, devices, num_steps: int = 4):
    """SOAP's and Shampoo's factors and Adam-mini's block moments, split like their params.

    Per optimizer: the specs ``state_shardings`` and ``zero1_state_shardings``
    give the statistics; whether the eager ``init`` on placed params and each
    step's state are placed so; and ``num_steps`` jitted steps with those in/out
    shardings against the same steps on one device (the same gradients).
    """
    params_one = make_statistics_params()
    rng = np.random.default_rng(6)
    grads_one = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params_one)
        for _ in range(num_steps)
    ]
    param_shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), STATISTICS_SPECS)
    data_mesh = Mesh(np.asarray(devices), ("data",))
    replicated = NamedSharding(data_mesh, P())

    def run(step, params, state, grads_list):
        for grads in grads_list:
            params, state = step(params, state, grads)
        return params, state

    def statistic(path, name):
        return any(_keystr(path).startswith(f"[0].{f}") for f in STATISTICS_FIELDS[name])

    def statistics_specs(shardings, name):
        flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
        return {_keystr(path): str(s.spec) for path, s in flat if statistic(path, name)}

    def misplaced(state, shardings, only=None):
        """The leaves of ``state`` (those of the statistics of ``only``) not as ``shardings``."""
        pairs = zip(
            jax.tree_util.tree_flatten_with_path(state)[0], jax.tree.leaves(shardings), strict=True
        )
        return [
            f"{_keystr(path)}: {_where(leaf.sharding)}, expected {_where(s)}"
            for (path, leaf), s in pairs
            if (only is None or statistic(path, only))
            and not leaf.sharding.is_equivalent_to(s, leaf.ndim)
        ]

    def compare(params, state, ref_params, ref_state):
        return {
            "params_diff": _max_diff(params, ref_params),
            "params_scale": _scale(ref_params),
            "state_diff": _max_diff(state, ref_state),
            "state_scale": _scale(ref_state),
            "params_change": _max_diff(ref_params, params_one),
        }

    out = {}
    for name, make in STATISTICS_OPTIMIZERS.items():
        tx = make()
        step = optimizer_step(tx)
        ref_params, ref_state = run(jax.jit(step), params_one, tx.init(params_one), grads_one)

        params = jax.device_put(params_one, param_shardings)
        shardings = state_shardings(tx, params)
        state = tx.init(params)  # eager: the statistics placed by the optimizer itself
        init_problems = misplaced(state, shardings, only=name)
        sharded_step = jax.jit(
            step,
            in_shardings=(param_shardings, shardings, param_shardings),
            out_shardings=(param_shardings, shardings),
        )
        grads = [jax.device_put(g, param_shardings) for g in grads_one]
        new_params, new_state = run(sharded_step, params, state, grads)

        zero1 = zero1_state_shardings(tx, params_one, data_mesh, "data")
        whole = jax.tree.map(lambda _: replicated, params_one)
        zero1_step = jax.jit(step, in_shardings=(whole, zero1, whole), out_shardings=(whole, zero1))
        z_params = jax.device_put(params_one, replicated)
        z_state = jax.device_put(tx.init(params_one), zero1)
        z_grads = [jax.device_put(g, replicated) for g in grads_one]
        z_params, z_state = run(zero1_step, z_params, z_state, z_grads)
        out[name] = {
            "specs": statistics_specs(shardings, name),
            "init_problems": init_problems,
            "step_problems": misplaced(new_state, shardings),
            **compare(new_params, new_state, ref_params, ref_state),
            "zero1": {
                "specs": statistics_specs(zero1, name),
                "step_problems": misplaced(z_state, zero1),
                **compare(z_params, z_state, ref_params, ref_state),
            },
        }
    return out


def check_shard_map_clip(devices):
    """clip_by_global_norm(axis_name=...) inside shard_map vs the unsharded computation."""
    rng = np.random.default_rng(3)
    base = {
        "a": rng.normal(size=(16, 3)).astype(np.float32),
        "b": rng.normal(size=(8,)).astype(np.float32),
    }
    cases = {
        "clipped": (base, 1.0),
        "unclipped": (base, 100.0),
        # The squares overflow float32: the rescued second pass, psum-med across devices.
        "overflow": (jax.tree.map(lambda x: x * np.float32(1e20), base), 1.0),
        "zeros": (jax.tree.map(np.zeros_like, base), 0.0),
    }
    meshes = {
        "data": (Mesh(np.asarray(devices), ("data",)), "data"),
        "x_y": (Mesh(np.asarray(devices).reshape(2, 4), ("x", "y")), ("x", "y")),
    }
    out = {}
    for mesh_name, (mesh, axis) in meshes.items():
        spec = P(axis)
        clips = {}
        for label, axis_name in (("with_axis", axis), ("local_only", None)):

            def clip(grads, max_norm, axis_name=axis_name):
                tx = gradtx.clip_by_global_norm(max_norm, axis_name=axis_name)
                return tx.update(grads, tx.init(grads))[0]

            # max_norm is traced, so one program serves every case.
            clips[label] = jax.jit(
                jax.shard_map(clip, mesh=mesh, in_specs=(spec, P()), out_specs=spec)
            )
        for case, (grads, max_norm) in cases.items():
            whole = gradtx.clip_by_global_norm(max_norm)
            expected = whole.update(grads, whole.init(grads))[0]
            sharded = jax.device_put(grads, NamedSharding(mesh, spec))
            bound = jax.device_put(jnp.float32(max_norm), NamedSharding(mesh, P()))
            got = {label: fn(sharded, bound) for label, fn in clips.items()}
            out[f"{mesh_name}/{case}"] = {
                "rel_diff": _max_rel_diff(got["with_axis"], expected),
                "local_only_rel_diff": _max_rel_diff(got["local_only"], expected),
                "finite": all(
                    bool(np.isfinite(x).all()) for x in jax.tree.leaves(got["with_axis"])
                ),
            }
    return out


def _block_loss(params, curvature):
    """A separable loss: every term reads elements that the same device holds.

    An ill-conditioned quadratic ``0.5 sum h w^2`` (``h`` from 1 to 1e3) plus
    Rosenbrock's valley per element pair, ``sum 100 (v - u^2)^2 + (1 - u)^2``.
    """
    quadratic = 0.5 * jnp.sum(curvature * params["w"] ** 2)
    u, v = params["u"], params["v"]
    return quadratic + jnp.sum(100.0 * (v - u * u) ** 2 + (1.0 - u) ** 2)


def _linesearch_run(tx, loss, num_steps: int, reuse: bool):
    """``num_steps`` steps of ``tx`` in one ``lax.scan``: each step's params and the
    line search's accepted step, evaluation count and success flag."""

    def run(params, curvature):
        value_fn = lambda p: loss(p, curvature)  # noqa: E731
        if reuse:
            value_and_grad = gradtx.value_and_grad_from_state(value_fn)
        else:
            value_and_grad = lambda p, _: jax.value_and_grad(value_fn)(p)  # noqa: E731

        def step(carry, _):
            params, state = carry
            value, grad = value_and_grad(params, state)
            updates, state = tx.update(
                grad, state, params, value=value, grad=grad, value_fn=value_fn
            )
            params = gradtx.apply_updates(params, updates)
            (search,) = linesearch_states(state)
            # Succeeded: every error of the search's info within the default tolerance 0.
            ok = jnp.all(jnp.stack([e <= 0 for e in search.info[1:]]))
            facts = (search.learning_rate, search.info.num_linesearch_steps, ok, search.value)
            return (params, state), (params, *facts)

        return jax.lax.scan(step, (params, tx.init(params)), length=num_steps)[1]

    return run


def check_shard_map_linesearch(devices, num_steps: int = 8):
    """The line searches, L-BFGS, nonlinear CG and Hessian-free Newton with
    axis_name inside shard_map vs the same optimizers on the whole arrays.

    Every leaf is split into 8 blocks over ``data``; ``value_fn`` is the psum of
    the blocks' losses. L-BFGS reads its value and gradient back from the line
    search's state (``value_and_grad_from_state``), the others evaluate them.
    """
    mesh = Mesh(np.asarray(devices), ("data",))
    rng = np.random.default_rng(4)
    params = {
        "w": rng.normal(size=(16, 3)).astype(np.float32),
        "u": (-1.2 + 0.1 * rng.normal(size=(16,))).astype(np.float32),
        "v": (1.0 + 0.1 * rng.normal(size=(16,))).astype(np.float32),
    }
    curvature = np.logspace(0, 3, 48).reshape(16, 3).astype(np.float32)
    optimizers = {
        "backtracking": lambda axis: gradtx.chain(
            gradtx.sgd(1e-2),
            gradtx.scale_by_backtracking_linesearch(
                30, increase_factor=2.0, store_grad=True, axis_name=axis
            ),
        ),
        # A first trial of 1 along -g overshoots (curvatures up to 1e3): every
        # search brackets and zooms.
        "zoom": lambda axis: gradtx.chain(
            gradtx.sgd(1.0),
            gradtx.scale_by_zoom_linesearch(20, initial_guess_strategy="one", axis_name=axis),
        ),
        "lbfgs": lambda axis: gradtx.lbfgs(memory_size=4, axis_name=axis),
        "nonlinear_cg": lambda axis: gradtx.nonlinear_cg(axis_name=axis),
        # Truncated CG on Hessian-vector products of the psum-ed loss, then Armijo.
        "hessian_free": lambda axis: gradtx.hessian_free(
            axis_name=axis,
            linesearch=gradtx.scale_by_backtracking_linesearch(30, store_grad=True, axis_name=axis),
        ),
    }
    whole_loss = lambda p, h: jax.lax.psum(_block_loss(p, h), "data")  # noqa: E731
    split, stacked = P("data"), P(None, "data")
    placed = jax.device_put((params, curvature), NamedSharding(mesh, split))

    def compare(sharded_tx, reference_tx, reuse):
        sharded = jax.shard_map(
            _linesearch_run(sharded_tx, whole_loss, num_steps, reuse),
            mesh=mesh,
            in_specs=(split, split),
            out_specs=(stacked, P(), P(), P(), P()),
        )
        got = jax.jit(sharded)(*placed)
        expected = jax.jit(_linesearch_run(reference_tx, _block_loss, num_steps, reuse))(
            params, curvature
        )
        (got_params, *got_facts), (ref_params, *ref_facts) = got, expected
        got_eta, got_evals, got_ok, got_value = (np.asarray(x) for x in got_facts)
        ref_eta, ref_evals, ref_ok, ref_value = (np.asarray(x) for x in ref_facts)
        return {
            "params_diff": _max_diff(got_params, ref_params),
            "params_scale": _scale(ref_params),
            "eta_rel_diff": float(np.max(np.abs(got_eta / ref_eta - 1.0))),
            "value_rel_diff": float(np.max(np.abs(got_value / ref_value - 1.0))),
            "etas": ref_eta.tolist(),
            "evaluations": got_evals.tolist(),
            "reference_evaluations": ref_evals.tolist(),
            "succeeded": got_ok.tolist(),
            "reference_succeeded": ref_ok.tolist(),
            "initial_value": float(_block_loss(params, curvature)),
            "values": ref_value.tolist(),
        }

    out = {
        name: compare(make("data"), make(None), reuse=name == "lbfgs")
        for name, make in optimizers.items()
    }
    # The controls: without axis_name, L-BFGS's direction (or the zoom's slope)
    # would be computed on each device's block alone; shard_map's check_vma sees
    # the state become device-varying and refuses the program while tracing it.
    for name, tx in {
        "lbfgs": gradtx.chain(
            gradtx.scale_by_lbfgs(4),
            gradtx.scale_by_learning_rate(1.0),
            gradtx.scale_by_zoom_linesearch(20, initial_guess_strategy="one", axis_name="data"),
        ),
        "zoom": optimizers["zoom"](None),
    }.items():
        try:
            compare(tx, optimizers[name](None), reuse=False)
            out[f"{name}_without_axis_name"] = "ran"
        except TypeError as error:
            out[f"{name}_without_axis_name"] = str(error).splitlines()[0]
    return out


def check_restore_sharded(params):
    """restore_state places the restored leaves with the template's shardings."""
    tx = gradtx.adam(0.1)
    template = jax.jit(tx.init, out_shardings=state_shardings(tx, params))(params)
    raw = jax.tree.map(lambda x: np.asarray(x) + 1, template)
    restored = restore_state(template, raw)
    return {
        "placement_problems": placement_problems(restored, params),
        "values_equal": all(
            np.array_equal(np.asarray(a), b)
            for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(raw), strict=True)
        ),
    }


def main() -> dict[str, Any]:
    devices = jax.devices()
    if len(devices) != N_DEVICES:
        sys.exit(f"needs {N_DEVICES} devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
    mesh = Mesh(np.asarray(devices).reshape(2, 4), ("data", "model"))
    params_np, batch_np = make_params(), make_batch()
    params_one = jax.tree.map(jnp.asarray, params_np)
    params = jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), params_np, SPECS)
    batch_one = tuple(jnp.asarray(b) for b in batch_np)
    batch = tuple(jax.device_put(b, NamedSharding(mesh, P("data"))) for b in batch_np)
    param_shardings = jax.tree.map(lambda p: p.sharding, params)
    grads = jax.jit(
        jax.grad(loss),
        in_shardings=(param_shardings, *(b.sharding for b in batch)),
        out_shardings=param_shardings,
    )(params, *batch)
    # The steps are compared on the same gradient, gathered to one device, so that
    # a difference is the optimizer's; the two gradients are compared on their own.
    grads_one = jax.tree.map(lambda g: jnp.asarray(np.asarray(g)), grads)
    own_grads_one = jax.jit(jax.grad(loss))(params_one, *batch_one)
    return {
        "grads_diff": _max_diff(grads, own_grads_one),
        "grads_scale": _scale(own_grads_one),
        "named": check_named_optimizers(mesh, params, params_one, grads, grads_one),
        "collectives": check_collectives(params, grads, batch),
        "zero1": check_zero1(devices),
        "statistics": check_statistics(mesh, devices),
        "shard_map_clip": check_shard_map_clip(devices),
        "shard_map_linesearch": check_shard_map_linesearch(devices),
        "restore_sharded": check_restore_sharded(params),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
