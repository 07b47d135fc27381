"""Adam-mini (Zhang et al. 2024, Alg. 1) against its float64 reference.

A small Transformer-like tree (embedding, query/key/value/output projections, a
DenseGeneral-style query, an MLP with biases, norm scales and an output head)
runs 120 steps of recorded gradients; the reference (tests/reference/adam_mini.py)
takes the partition as block labels written here from what each rule means, so
the test also checks that each layout cuts the leaf where it should.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests.reference import adam_mini as reference

D, VOCAB, HEADS, HEAD_DIM, FF = 8, 11, 2, 4, 16
STEPS = 120
TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=2e-5, atol=2e-6)}


def _per_column(shape):
    return np.broadcast_to(np.arange(shape[-1]), shape)


def _per_row(shape):
    return np.broadcast_to(np.arange(shape[0])[:, None], shape)


def _per_head(shape):
    return np.broadcast_to(np.arange(shape[-1]) // (shape[-1] // HEADS), shape)


def _per_head_3d(shape):
    return np.broadcast_to(np.arange(shape[1])[None, :, None], shape)


def _one(shape):
    return np.zeros(shape, int)


def _each(shape):
    return np.arange(int(np.prod(shape))).reshape(shape)


# path -> (shape, the blocks of the default partition, as labels)
LEAVES = {
    "embed/embedding": ((VOCAB, D), _per_row),
    "layers_0/attn/q_proj/kernel": ((D, HEADS * HEAD_DIM), _per_head),
    "layers_0/attn/k_proj/kernel": ((D, HEADS * HEAD_DIM), _per_head),
    "layers_0/attn/v_proj/kernel": ((D, HEADS * HEAD_DIM), _per_column),
    "layers_0/attn/v_proj/bias": ((HEADS * HEAD_DIM,), _each),
    "layers_0/attn/o_proj/kernel": ((HEADS * HEAD_DIM, D), _per_column),
    "layers_0/attn2/query/kernel": ((D, HEADS, HEAD_DIM), _per_head_3d),
    "layers_0/ln_1/scale": ((D,), _one),
    "layers_0/mlp/fc1/kernel": ((D, FF), _per_column),
    "layers_0/mlp/fc1/bias": ((FF,), _each),
    "layers_0/mlp/fc2/kernel": ((FF, D), _per_column),
    "final_norm/scale": ((D,), _one),
    "lm_head/kernel": ((D, VOCAB), _per_column),
}


def _nest(flat):
    out = {}
    for path, value in flat.items():
        *parents, last = path.split("/")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def _data():
    rng = np.random.default_rng(0)
    theta = {p: rng.normal(size=s).astype(np.float32) for p, (s, _) in LEAVES.items()}
    scales = {p: 10.0 ** rng.uniform(-2, 1) for p in LEAVES}
    grads = {
        p: (scales[p] * rng.normal(size=(STEPS, *s))).astype(np.float32)
        for p, (s, _) in LEAVES.items()
    }
    return theta, grads


THETA, GRADS = _data()
PATHS = jax.tree.leaves(_nest({p: p for p in LEAVES}))  # the leaves' order in jax.tree


def _labels(rule=None):
    return [(rule or LEAVES[p][1])(LEAVES[p][0]) for p in PATHS]


def _authors_v1_0(path, shape):
    """The authors' code before 1.1.0: Adam for the embedding and output layers."""
    if "embed" in path or "lm_head" in path:
        return "adam"
    return gradtx.adam_mini_partition(path, shape)


def _v1_0_labels():
    labels = _labels()
    for i, p in enumerate(PATHS):
        if "embed" in p or "lm_head" in p:
            labels[i] = _each(LEAVES[p][0])
    return labels


DECAYED = [len(LEAVES[p][0]) >= 2 for p in PATHS]  # exclude_bias_and_norm on this tree

CASES = [
    (
        "defaults",
        lambda: gradtx.adam_mini(1e-2, num_heads=HEADS),
        lambda th, g: reference.adam_mini(th, g, _labels(), 1e-2),
    ),
    (
        "decay-b1-zero-eps",
        lambda: gradtx.adam_mini(
            3e-2, 0.0, 0.9, 1e-3, 0.1, gradtx.exclude_bias_and_norm, num_heads=HEADS
        ),
        lambda th, g: reference.adam_mini(
            th, g, _labels(), 3e-2, 0.0, 0.9, 1e-3, lam=0.1, decay=DECAYED
        ),
    ),
    (
        "authors-v1.0",
        lambda: gradtx.adam_mini(1e-2, 0.8, 0.99, num_heads=HEADS, partition=_authors_v1_0),
        lambda th, g: reference.adam_mini(th, g, _v1_0_labels(), 1e-2, 0.8, 0.99),
    ),
    (
        "every-entry-is-adam",
        lambda: gradtx.adam_mini(1e-2, partition=lambda path, shape: "adam"),
        lambda th, g: reference.adam_mini(th, g, _labels(_each), 1e-2),
    ),
    (
        "every-leaf-whole",
        lambda: gradtx.chain(
            gradtx.scale_by_adam_mini(partition=lambda path, shape: "whole"),
            gradtx.scale_by_learning_rate(1e-2),
        ),
        lambda th, g: reference.adam_mini(th, g, _labels(_one), 1e-2),
    ),
]


def _runs(makers, dtype):
    with jax.enable_x64(dtype == "float64"):
        params = _nest({p: jnp.asarray(x, dtype) for p, x in THETA.items()})
        grads = _nest({p: jnp.asarray(x, dtype) for p, x in GRADS.items()})

        def scan(tx):
            def step(carry, g):
                p, s = carry
                u, s = tx.update(g, s, p)
                p = gradtx.apply_updates(p, u)
                return (p, s), p

            return jax.lax.scan(step, (params, tx.init(params)), grads)[1]

        txs = [make() for make in makers]
        runs = jax.jit(lambda: [scan(tx) for tx in txs])()
        return [[np.asarray(x, np.float64) for x in jax.tree.leaves(r)] for r in runs]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_trajectories_match_the_reference(dtype):
    runs = _runs([make for _, make, _ in CASES], dtype)
    theta0 = [THETA[p] for p in PATHS]
    grads = [[GRADS[p][k] for p in PATHS] for k in range(STEPS)]
    for (name, _, run_reference), got in zip(CASES, runs, strict=True):
        want = run_reference(theta0, grads)
        assert max(float(np.abs(w[-1] - w[0]).max()) for w in want) > 0.05, name
        for path, g, w in zip(PATHS, got, want, strict=True):
            np.testing.assert_allclose(g, w[1:], **TOL[dtype], err_msg=f"{name} {path} {dtype}")


def test_every_entry_a_block_is_adam():
    theta, _ = _data()
    params = _nest({p: jnp.asarray(x) for p, x in theta.items()})
    grads = jax.tree.map(lambda x: jnp.sin(x) + 0.1, params)
    ours = gradtx.adam_mini(1e-2, partition=lambda path, shape: "adam")
    adam = gradtx.adam(1e-2)
    s1, s2 = ours.init(params), adam.init(params)
    for _ in range(3):
        u1, s1 = ours.update(grads, s1, params)
        u2, s2 = adam.update(grads, s2, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), u1, u2)


def test_second_moment_shapes_follow_the_default_partition():
    params = _nest({p: jnp.zeros(s) for p, (s, _) in LEAVES.items()})
    state = gradtx.scale_by_adam_mini(num_heads=HEADS).init(params)
    shapes = dict(zip(PATHS, [x.shape for x in jax.tree.leaves(state.nu)], strict=True))
    assert shapes == {
        "embed/embedding": (VOCAB, 1),
        "layers_0/attn/q_proj/kernel": (1, HEADS, 1),
        "layers_0/attn/k_proj/kernel": (1, HEADS, 1),
        "layers_0/attn/v_proj/kernel": (1, D),
        "layers_0/attn/v_proj/bias": (D,),
        "layers_0/attn/o_proj/kernel": (1, D),
        "layers_0/attn2/query/kernel": (1, HEADS, 1),
        "layers_0/ln_1/scale": (1,),
        "layers_0/mlp/fc1/kernel": (1, FF),
        "layers_0/mlp/fc1/bias": (FF,),
        "layers_0/mlp/fc2/kernel": (1, D),
        "final_norm/scale": (1,),
        "lm_head/kernel": (1, VOCAB),
    }


def _bad_partition(value):
    return lambda path, shape: value


BAD = [
    (lambda: gradtx.adam_mini(b1=1.5), r"scale_by_adam_mini: b1 must be in \[0, 1\), got 1\.5"),
    (lambda: gradtx.scale_by_adam_mini(b2=-0.1), r"scale_by_adam_mini: b2 must be in \[0, 1\)"),
    (lambda: gradtx.adam_mini(eps=-1.0), r"scale_by_adam_mini: eps must be .*>= 0"),
    (lambda: gradtx.adam_mini(num_heads=0), r"scale_by_adam_mini: num_heads must be"),
    (lambda: gradtx.adam_mini(learning_rate=float("nan")), r"adam_mini: learning_rate"),
    (lambda: gradtx.adam_mini(weight_decay=-1.0), r"weight_decay must be"),
]


@pytest.mark.parametrize("make, message", BAD)
def test_bad_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()


BAD_LAYOUTS = [
    ({}, {"q_proj": {"kernel": jnp.zeros((4, 6))}}, r"'q_proj/kernel' is split per .*num_heads"),
    ({"num_heads": 4}, {"q_proj": {"kernel": jnp.zeros((4, 6))}}, r"cannot be split into"),
    ({"partition": _bad_partition("rows")}, {"w": jnp.zeros((2, 3))}, r"the layout 'rows'"),
    ({"partition": _bad_partition((2,))}, {"w": jnp.zeros((2, 3))}, r"has no axes \(2,\)"),
]


@pytest.mark.parametrize("kwargs, params, message", BAD_LAYOUTS)
def test_bad_layouts_fail_at_init_naming_the_leaf(kwargs, params, message):
    with pytest.raises(ValueError, match=message):
        gradtx.scale_by_adam_mini(**kwargs).init(params)


def test_an_nnx_state_is_partitioned_by_its_layer_names_not_by_variable_value():
    """An NNX leaf's path ends in the Variable's ``.value``: that attribute names no
    layer, so a plain ``fc`` kernel is one block, and a layer *called* ``value``
    (the attention value projection) still gets one block per output neuron."""
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self):
            self.fc = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
            self.value = nnx.Linear(3, 4, rngs=nnx.Rngs(1))

    nu = gradtx.adam_mini(0.1).init(nnx.state(Model(), nnx.Param))[0].nu
    assert nu["fc"]["kernel"][...].shape == (1, 1)  # "whole"
    assert nu["value"]["kernel"][...].shape == (1, 4)  # one per output neuron
    assert nu["fc"]["bias"][...].shape == (4,)  # "adam"
