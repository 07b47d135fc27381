"""gradtx.adam_mini against ``pytorch_optimizer.AdamMini``, 300 float32 steps.

Collected only by ``python -m pytest -m parity tests/parity``. pytorch_optimizer's
AdamMini follows the authors' partition before version 1.1.0: full Adam for the
embedding and the output head (any name containing ``embed``, ``embd``, ``wte``,
or ``lm_head.weight`` / ``output.weight``), one second moment per head for the
``q_proj`` / ``k_proj`` weights, one per tensor for everything else (biases
included); decoupled decay ``p *= 1 - lr * wd`` except on names containing
``norm``. That partition is given to gradtx as a ``partition`` function, and the
decay exemption as a ``mask``. Its moments are float32 whatever the params, so
the comparison is float32. PyTorch weights are ``(out, in)``; the gradtx tree
holds them transposed, ``(in, out)``, as Flax kernels (the embedding stays
``(vocab, dim)``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_optimizer")
pytestmark = pytest.mark.parity

from pytorch_optimizer import AdamMini  # noqa: E402 (needs torch)

D, HEADS, FF, VOCAB, STEPS, LR, WD = 8, 2, 16, 11, 300, 1e-2, 0.1

# PyTorch name -> PyTorch shape.
SHAPES = {
    "embed.weight": (VOCAB, D),
    "layers.0.attn.q_proj.weight": (D, D),
    "layers.0.attn.k_proj.weight": (D, D),
    "layers.0.attn.v_proj.weight": (D, D),
    "layers.0.attn.v_proj.bias": (D,),
    "layers.0.attn.o_proj.weight": (D, D),
    "layers.0.norm_1.weight": (D,),
    "layers.0.mlp.fc1.weight": (FF, D),
    "layers.0.mlp.fc1.bias": (FF,),
    "layers.0.mlp.fc2.weight": (D, FF),
    "final_norm.weight": (D,),
    "lm_head.weight": (VOCAB, D),
}


def _transposed(name):
    return name.endswith("weight") and len(SHAPES[name]) == 2 and not name.startswith("embed")


def _to_jax(name, x):
    return x.T if _transposed(name) else x


class _Model(torch.nn.Module):
    def __init__(self, values):
        super().__init__()
        for name, value in values.items():
            *parents, last = name.split(".")
            module = self
            for part in parents:
                if not hasattr(module, part):
                    module.add_module(part, torch.nn.Module())
                module = getattr(module, part)
            module.register_parameter(last, torch.nn.Parameter(torch.tensor(value)))


def _nest(flat):
    out = {}
    for name, value in flat.items():
        *parents, last = name.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _pytorch_optimizer_partition(path, shape):
    """pytorch_optimizer's AdamMini blocks, on gradtx's ``/``-joined paths."""
    if any(k in path for k in ("embed", "embd", "wte", "lm_head/weight", "output/weight")):
        return "adam"
    if any(k in path for k in ("k_proj/weight", "q_proj/weight", "wq/weight", "wk/weight")):
        return "heads"
    return "whole"


def _decayed(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "norm" not in jax.tree_util.keystr(path), params
    )


def test_adam_mini_matches_pytorch_optimizer():
    rng = np.random.default_rng(0)
    theta = {n: rng.normal(size=s).astype(np.float32) for n, s in SHAPES.items()}
    scales = {n: np.float32(10.0 ** rng.uniform(-1, 0.5)) for n in SHAPES}
    grads = [
        {n: (scales[n] * rng.normal(size=s)).astype(np.float32) for n, s in SHAPES.items()}
        for _ in range(STEPS)
    ]

    model = _Model(theta)
    opt = AdamMini(model, lr=LR, weight_decay=WD, num_embeds=D, num_heads=HEADS)
    named = dict(model.named_parameters())
    for g in grads:
        for n, p in named.items():
            p.grad = torch.tensor(g[n])
        opt.step()
    theirs = {n: p.detach().numpy() for n, p in named.items()}

    tx = gradtx.adam_mini(
        LR, weight_decay=WD, mask=_decayed, num_heads=HEADS, partition=_pytorch_optimizer_partition
    )
    params = _nest({n: jnp.asarray(_to_jax(n, x)) for n, x in theta.items()})
    stacked = _nest({n: jnp.asarray(np.stack([_to_jax(n, g[n]) for g in grads])) for n in SHAPES})

    def step(carry, g):
        p, s = carry
        u, s = tx.update(g, s, p)
        return (gradtx.apply_updates(p, u), s), None

    final = jax.jit(lambda p, g: jax.lax.scan(step, (p, tx.init(p)), g)[0][0])(params, stacked)
    ours = {n: np.asarray(x) for n, x in zip(SHAPES, _flat(final), strict=True)}

    worst = 0.0
    for n in SHAPES:
        moved = np.max(np.abs(theirs[n] - theta[n]))
        assert moved > 0.1, n
        worst = max(worst, float(np.max(np.abs(_to_jax(n, theirs[n]) - ours[n]))))
    print(f"adam_mini vs pytorch_optimizer.AdamMini, {STEPS} float32 steps: {worst:.2e}")
    assert worst <= 1e-4


def _flat(tree):
    """The leaves of the nested tree in SHAPES' order."""
    out = []
    for name in SHAPES:
        node = tree
        for part in name.split("."):
            node = node[part]
        out.append(node)
    return out
