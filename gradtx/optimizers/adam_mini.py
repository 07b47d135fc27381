"""Adam-mini: one second moment per block of parameters (Zhang et al. 2024, Alg. 1).

Sharding: ``mu`` is shaped like its parameter and follows its sharding. A
leaf's ``v`` keeps the parameter's axes, those averaged over of length 1, and
each kept axis is split as the parameter's is (when its devices divide it); with
``"heads"`` on a ``(dim, heads * head_dim)`` leaf, the heads axis is split as
the parameter's last axis. ``v`` with the parameter's shape (``"adam"``) is
placed like the parameter. This is the rule registered with
``gradtx.sharding``, which ``state_shardings`` applies
(``zero1_state_shardings`` splits ``v`` along its first divisible dimension,
as a moment); an eager ``init`` places ``v`` so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _checks, sharding, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import Mask, chain
from gradtx.optimizers.adam import check_adam_args
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate

Layout = str | tuple[int, ...]
"""How a leaf is cut into blocks: ``"adam"``, ``"whole"``, ``"heads"`` or kept axes."""
Partition = Callable[[str, tuple[int, ...]], Layout]
"""``partition(path, shape) -> Layout``, ``path`` the leaf's keys joined by ``/``."""

# The authors' name lists (Adam-mini 1.1.1, adam_mini/adam_mini.py), matched as
# substrings of the lower-cased path.
_QUERY_KEY = ("k_proj", "q_proj", "wq", "wk", "query", "key")
_PER_TOKEN = ("embed", "embd", "wte")
_PER_NEURON = (
    ("lm_head", "output", "final_layer")  # output layers: one per token = output neuron
    + ("v_proj", "wv", "value")
    + ("o_proj", "wo", "attn/proj", "attn.proj")
    + ("feed_forward", "linear", "mlp")
)


def adam_mini_partition(path: str, shape: tuple[int, ...]) -> Layout:
    """The default block layout of :func:`adam_mini`: the authors' name rules (v1.1.1).

    The first rule that matches the lower-cased ``path`` decides:

    1. ``bias`` in the path: ``"adam"``, one second moment per entry.
    2. ``q_proj``, ``k_proj``, ``wq``, ``wk``, ``query`` or ``key``: ``"heads"``,
       one per attention head (the authors' query and key rule).
    3. a leaf of fewer than 2 dimensions: ``"whole"``, one for the leaf (norm
       scales; the authors' "other blocks").
    4. ``embed``, ``embd`` or ``wte``: ``(0,)``, one per token, i.e. per row of a
       ``(vocab, dim)`` embedding table.
    5. ``lm_head``, ``output``, ``final_layer`` (the output layer), ``v_proj``,
       ``wv``, ``value``, ``o_proj``, ``wo``, ``attn/proj`` (the attention
       output), ``feed_forward``, ``linear`` or ``mlp``: ``(-1,)``, one per
       output neuron, i.e. per entry of the last axis of a Flax ``(in, out)``
       kernel (PyTorch's ``(out, in)`` weights reduce over their last axis: the
       same neurons, transposed).
    6. anything else: ``"whole"``.

    Args:
      path: the leaf's keys joined by ``/`` (``"layers_0/attn/q_proj/kernel"``).
      shape: the leaf's shape.

    Returns:
      The leaf's layout (see :func:`scale_by_adam_mini`).

    Examples:
      >>> import gradtx
      >>> gradtx.adam_mini_partition("blocks_0/mlp/fc1/kernel", (8, 32))
      (-1,)
      >>> gradtx.adam_mini_partition("embed/embedding", (100, 8))
      (0,)
    """
    name = path.lower()
    if "bias" in name:
        return "adam"
    if any(k in name for k in _QUERY_KEY):
        return "heads"
    if len(shape) < 2:
        return "whole"
    if any(k in name for k in _PER_TOKEN):
        return (0,)
    if any(k in name for k in _PER_NEURON):
        return (-1,)
    return "whole"


class ScaleByAdamMiniState(NamedTuple):
    """State of :func:`scale_by_adam_mini`."""

    count: Array  # int32 scalar: t, the number of steps taken.
    mu: Updates  # like the params: m, the first moment.
    # Per leaf, one entry per block (its view's shape with the averaged axes of
    # size 1): v, the second moment of each block (real dtype).
    nu: Updates


def _block_moment_entries(shape: tuple[int, ...], entries: tuple[Any, ...], nu: Any) -> Any:
    """Where a leaf's ``v`` is split: each axis kept from the parameter (same length)
    as the parameter's; the rule of ``nu`` (:func:`gradtx.sharding.register_statistics`)."""
    if jnp.ndim(nu) == len(shape) + 1:  # "heads": the last axis seen as (heads, head_dim)
        heads = jnp.shape(nu)[-2]
        shape, entries = (*shape[:-1], heads, shape[-1] // heads), (*entries, None)
    return tuple(
        e if n == m else None for e, n, m in zip(entries, jnp.shape(nu), shape, strict=True)
    )


sharding.register_statistics(ScaleByAdamMiniState, "nu", _block_moment_entries)


def _path_name(path: tuple[Any, ...]) -> str:
    """The keys of ``path`` joined by ``/``, less a last attribute ``value``: the
    array inside a Flax NNX ``Variable``, which names no layer (else every NNX
    leaf would match the ``value`` projection's rule)."""
    if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
        path = path[:-1]
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _blocks(owner: str, layout: Any, path: str, shape: tuple[int, ...], num_heads: int | None):
    """``(view shape, averaged axes)`` of one leaf's layout."""
    nd = len(shape)
    if layout == "adam":
        return shape, ()
    if layout == "whole":
        return shape, tuple(range(nd))
    if layout == "heads":
        if num_heads is None:
            raise ValueError(
                f"{owner}: {path!r} is split per attention head: pass num_heads (or a partition "
                "that gives it another layout)."
            )
        if nd >= 3 and shape[-2] == num_heads:  # (in, heads, head_dim), a DenseGeneral kernel
            return shape, tuple(a for a in range(nd) if a != nd - 2)
        if nd >= 1 and shape[-1] % num_heads == 0:  # (in, heads * head_dim)
            view = (*shape[:-1], num_heads, shape[-1] // num_heads)
            return view, tuple(a for a in range(nd + 1) if a != nd - 1)
        raise ValueError(
            f"{owner}: {path!r} of shape {shape} cannot be split into num_heads={num_heads} "
            "heads along its last axis."
        )
    if isinstance(layout, tuple) and all(isinstance(a, int) for a in layout):
        if any(not -nd <= a < nd for a in layout):
            raise ValueError(f"{owner}: {path!r} of shape {shape} has no axes {layout}.")
        kept = {a % nd for a in layout}
        return shape, tuple(a for a in range(nd) if a not in kept)
    raise ValueError(
        f"{owner}: the partition gave {path!r} the layout {layout!r}; expected 'adam', "
        "'whole', 'heads' or a tuple of the axes to keep."
    )


def _adam_mini_leaf(g, mu, nu, view, axes, b1, b2, eps, bc1, bc2):
    """One leaf of Alg. 1: ``m`` per entry, ``v`` per block from the mean of ``g^2``."""
    c = tree.compute_dtype(g.dtype)
    new_mu = tree.moment_leaf(g, mu, b1, 1)
    g_sq = tree.abs_sq(g.astype(c)).reshape(view)
    block_mean = jnp.mean(g_sq, axis=axes, keepdims=True) if axes else g_sq
    real = tree.real_dtype(c)
    new_nu = b2 * nu.astype(real) + (1 - b2) * block_mean
    m_hat = new_mu.astype(c).reshape(view) / bc1
    out = tree.divide_by_root(m_hat, tree.sqrt(new_nu / bc2) + eps)
    return out.reshape(g.shape).astype(g.dtype), new_mu, new_nu.astype(nu.dtype)


def scale_by_adam_mini(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    num_heads: int | None = None,
    partition: Partition | None = None,
    mu_dtype: Any | None = None,
) -> GradientTransformation:
    """Adam-mini's scaling: Adam with one second moment per block (Zhang et al. 2024, Alg. 1).

    For each block ``b`` of entries of a leaf:

    .. math::
        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        v_b \\leftarrow \\beta_2 v_b + (1-\\beta_2)\\, \\mathrm{mean}_{i \\in b} |g_i|^2,
        \\quad
        \\text{out}_i = \\frac{m_i / (1-\\beta_1^t)}{\\sqrt{v_b / (1-\\beta_2^t)} + \\epsilon}

    Alg. 1 of the paper is this update for a given partition into blocks; its
    principle is one block per dense sub-block of the Hessian, which for a
    Transformer the paper states as: query and key per head, everything else
    by its layer. The partition the authors' code applies (version 1.1.1,
    ``adam_mini/adam_mini.py``) is finer, and is the default here
    (:func:`adam_mini_partition`): biases get Adam's per-entry ``v``, query and
    key one per head, the embedding one per token, the output layer, value,
    attention output and MLP one per output neuron, norm scales and any other
    leaf one for the whole leaf. (Before version 1.1.0 the authors' code gave
    the embedding and output layers full Adam; ``partition`` returning
    ``"adam"`` for them restores that.) ``v`` is then as small as the number of
    blocks: the state is about half of Adam's.

    A leaf's layout, as ``partition(path, shape)`` returns it:

    * ``"adam"``: every entry a block (Adam).
    * ``"whole"``: the leaf one block.
    * ``"heads"``: one block per attention head, ``num_heads`` required: the
      last axis is split as ``(num_heads, head_dim)`` (a ``(dim, heads * head_dim)``
      kernel), or, for a leaf with ``num_heads`` at axis ``-2`` (a Flax
      ``DenseGeneral`` kernel ``(dim, heads, head_dim)``), that axis is kept.
    * a tuple of ints: the axes to keep, one block per index along them, the
      mean taken over the others (``(-1,)``: per output neuron of an
      ``(in, out)`` kernel; ``(0,)``: per row of an embedding table).

    ``path`` is the leaf's keys joined by ``/``, as in ``"layers_0/attn/q_proj/kernel"``.
    The default rules go by the authors' layer names: a matrix whose path holds
    none of them (a fused ``qkv``, an ``out`` or ``head`` layer, a ``dense_0``)
    gets one second moment for the whole matrix, coarser than the paper's
    partition; for such a model pass a ``partition`` that names its layers'
    roles, or one that sends unnamed matrices to ``(-1,)``.

    Args:
      b1: ``beta_1`` in [0, 1).
      b2: ``beta_2`` in [0, 1).
      eps: ``epsilon`` >= 0, outside the root (as the authors' code and Adam).
      num_heads: the number of attention heads, for the ``"heads"`` layout
        (the authors' ``n_heads``; their ``dim`` is the leaf's width here).
      partition: ``partition(path, shape) -> layout``; default
        :func:`adam_mini_partition`. Evaluated at ``init`` and ``update`` trace
        time, on static paths and shapes only.
      mu_dtype: dtype of ``m``; ``None`` keeps the params'.

    Raises:
      ValueError: a hyperparameter out of range; a leaf whose layout is
        ``"heads"`` without ``num_heads`` or not divisible by it; a layout that
        is not one of the above.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_adam_mini(num_heads=2)
      >>> params = {"q_proj": {"kernel": jnp.ones((4, 6))}}  # two heads of width 3
      >>> tx.init(params).nu["q_proj"]["kernel"].shape  # one v per head
      (1, 2, 1)

    References:
      Zhang, Chen, Li, Ding, Chen, Kingma, Sun & Luo (2024), Adam-mini: Use Fewer
      Learning Rates To Gain More, Alg. 1; the authors' code,
      github.com/zyushun/Adam-mini, version 1.1.1.
    """
    owner = "scale_by_adam_mini"
    check_adam_args(owner, b1, b2, eps, 0.0, mu_dtype, None)
    if num_heads is not None:
        _checks.positive_int(owner, "num_heads", num_heads)
    rule = adam_mini_partition if partition is None else partition

    def layouts(params):
        """Per leaf of ``params`` (in ``jax.tree`` order), its ``(view, averaged axes)``."""
        specs = []
        for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
            name, shape = _path_name(path), tuple(jnp.shape(p))
            specs.append(_blocks(owner, rule(name, shape), name, shape, num_heads))
        return specs

    def init_fn(params):
        tree.check_inexact(params, owner)
        leaves, treedef = jax.tree.flatten(params)
        nu = []
        for p, (view, axes) in zip(leaves, layouts(params), strict=True):
            shape = tuple(1 if a in axes else n for a, n in enumerate(view))
            dtype = tree.real_dtype(jnp.result_type(p))
            if shape == tuple(jnp.shape(p)):  # a full second moment: placed like the param
                nu.append(tree.zeros_like(p, dtype))
            else:  # one value per block: split along the kept axes as the param
                zeros = jnp.zeros(shape, dtype)
                nu.append(sharding.place_statistics(p, zeros, _block_moment_entries))
        mu = tree.zeros_like(params, mu_dtype)
        return ScaleByAdamMiniState(tree.zero_count(), mu, treedef.unflatten(nu))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, owner=owner)
        count = tree.safe_increment(state.count)
        treedef = jax.tree.structure(state.mu)
        out, mu, nu = [], [], []
        for g, m, v, (view, axes) in zip(
            treedef.flatten_up_to(updates),
            treedef.flatten_up_to(state.mu),
            treedef.flatten_up_to(state.nu),
            layouts(state.mu),
            strict=True,
        ):
            c = tree.compute_dtype(g.dtype)
            bc1 = tree.bias_correction_factor(b1, count, c)
            bc2 = tree.bias_correction_factor(b2, count, tree.real_dtype(c))
            o, m, v = _adam_mini_leaf(g, m, v, view, axes, b1, b2, eps, bc1, bc2)
            out.append(o)
            mu.append(m)
            nu.append(v)
        new_state = ScaleByAdamMiniState(count, treedef.unflatten(mu), treedef.unflatten(nu))
        return treedef.unflatten(out), new_state

    return GradientTransformation(init_fn, update_fn)


def adam_mini(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
    *,
    num_heads: int | None = None,
    partition: Partition | None = None,
    mu_dtype: Any | None = None,
) -> GradientTransformation:
    """Adam-mini (Zhang et al. 2024, Alg. 1): Adam with one second moment per block.

    .. math::
        \\theta \\leftarrow \\theta - \\alpha \\left(
            \\frac{m / (1-\\beta_1^t)}{\\sqrt{v_b / (1-\\beta_2^t)} + \\epsilon}
            + \\lambda \\theta \\right)

    Composition: ``chain(scale_by_adam_mini(...), add_decayed_weights(lambda, mask),
    scale_by_learning_rate(alpha))``; the blocks ``b`` and their second moments
    ``v_b`` are :func:`scale_by_adam_mini`'s. Defaults are the authors' code's
    (``lr=1e-3``, ``betas=(0.9, 0.999)``, ``eps=1e-8``, ``weight_decay=0``).
    The decay is decoupled and multiplied by the learning rate, as theirs
    (``p *= 1 - lr * weight_decay``). Their code exempts from it every
    parameter whose name contains ``norm``, ``ln`` or ``bias``; here ``mask``
    chooses, and ``None`` decays every leaf (as :func:`adamw`):
    ``mask=gradtx.exclude_bias_and_norm`` is the nearest to theirs.

    Args:
      learning_rate: ``alpha``, a number or a schedule.
      b1, b2, eps, num_heads, partition, mu_dtype: see :func:`scale_by_adam_mini`.
      weight_decay: ``lambda`` >= 0, a number or a schedule.
      mask: which leaves are decayed (see :func:`add_decayed_weights`).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> params = {"mlp": {"kernel": jnp.ones((2, 3))}, "norm": {"scale": jnp.ones(3)}}
      >>> tx = gradtx.adam_mini(0.1)
      >>> grads = {"mlp": {"kernel": jnp.ones((2, 3))}, "norm": {"scale": jnp.ones(3)}}
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> jax.tree.map(jnp.shape, state[0].nu)  # one v per output neuron; one for the norm
      {'mlp': {'kernel': (1, 3)}, 'norm': {'scale': (1,)}}

    References:
      Zhang, Chen, Li, Ding, Chen, Kingma, Sun & Luo (2024), Adam-mini: Use Fewer
      Learning Rates To Gain More, Alg. 1; github.com/zyushun/Adam-mini (v1.1.1).
    """
    _checks.learning_rate("adam_mini", learning_rate)
    return chain(
        scale_by_adam_mini(
            b1, b2, eps, num_heads=num_heads, partition=partition, mu_dtype=mu_dtype
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
