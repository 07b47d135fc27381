"""Differentially private SGD (Abadi et al. 2016, Alg. 1).

DP-SGD bounds what one training example can change: each example's gradient
is clipped to a norm of at most ``C``, the clipped gradients are summed, Gaussian
noise of standard deviation ``sigma * C`` is added to the sum, and the result is
divided by the batch size. The blocks here take **per-example gradients**: every
leaf has a leading batch axis (``jax.vmap(jax.grad(loss), in_axes=(None, 0))``
gives them), and the update has the params' shapes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule
from gradtx.combine import chain
from gradtx.optimizers.sgd import sgd

# The noise is drawn in float32 (complex64 for complex leaves) and added in the
# compute dtype, as gradtx.add_noise does: a float32 run draws Optax's numbers.
_SAMPLE_DTYPE = {False: jnp.float32, True: jnp.complex64}


class DifferentiallyPrivateAggregateState(NamedTuple):
    """State of :func:`differentially_private_aggregate`."""

    rng_key: Array  # uint32: the raw data of the PRNG key for the next step.


def _check_clip(owner: str, value: Any, name: str = "l2_norm_clip") -> None:
    array = _checks.scalar(owner, name, value)
    if array is not None and not array >= 0:  # inf (no clipping) is allowed; nan is not
        raise ValueError(f"{owner}: {name} must be a number >= 0 (or inf), got {value!r}.")


def _batch_size(owner: str, leaves: list[Array]) -> int:
    """The common leading axis of per-example gradients; raises naming the shapes if none."""
    shapes = [np.shape(g) for g in leaves]
    if any(len(s) == 0 or s[0] != shapes[0][0] for s in shapes):
        raise ValueError(
            f"{owner}: expects per-example gradients, every leaf with the same leading batch "
            f"axis; got leaf shapes {shapes}."
        )
    return shapes[0][0]


def _check_inexact_gradients(owner: str, grads: Any) -> None:
    """Refuses integer or boolean per-example gradients: the update keeps the gradient's dtype."""
    bad = [
        f"{jax.tree_util.keystr(path) or 'the root'} ({g.dtype}, examples of shape "
        f"{tuple(np.shape(g)[1:])})"
        for path, g in jax.tree_util.tree_leaves_with_path(grads)
        if not jnp.issubdtype(jnp.result_type(g), jnp.inexact)
    ]
    if bad:
        raise ValueError(
            f"{owner}: per-example gradients must be floating-point or complex, got "
            f"{tree.name_paths(bad)}."
        )


def per_example_global_norm_clip(grads: Any, l2_norm_clip: Any) -> tuple[Any, Array]:
    """Clips each example's gradient to global norm ``l2_norm_clip`` and sums them.

    For examples ``i = 1..B`` (the leading axis of every leaf), with ``g_i`` the
    whole tree of example ``i`` and ``C`` = ``l2_norm_clip``:

    .. math::
        \\bar g_i = g_i \\min\\Big(1, \\frac{C}{\\|g_i\\|_2}\\Big), \\qquad
        \\text{output} = \\sum_{i=1}^{B} \\bar g_i

    (Abadi et al. 2016, Alg. 1, "clip gradient"; the sum is the "add noise"
    line before its noise). A zero gradient is kept as is (factor 1). The
    norms and the sum are computed in at least float32; each leaf is returned
    in its gradient's dtype (float32 for integer gradients).

    Args:
      grads: per-example gradients: every leaf of shape ``(B, *param_shape)``.
      l2_norm_clip: the bound ``C`` >= 0 on each example's norm (``inf``: none).

    Returns:
      ``(clipped_sum, num_clipped)``: a tree of the params' shapes, and the int32
      count of examples whose norm exceeded ``C``.

    Raises:
      ValueError: leaves without a common leading axis, or ``l2_norm_clip``
        negative or NaN.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> grads = [jnp.array([[0.0, 0.0], [3.0, 4.0], [1.5, 2.0]])]  # norms 0, 5, 2.5
      >>> gradtx.per_example_global_norm_clip(grads, 2.5)
      ([Array([3., 4.], dtype=float32)], Array(1, dtype=int32))

    References:
      Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar & Zhang (2016), Deep
      Learning with Differential Privacy, CCS, Alg. 1.
    """
    owner = "per_example_global_norm_clip"
    _check_clip(owner, l2_norm_clip)
    leaves, treedef = jax.tree.flatten(grads)
    if not leaves:
        return grads, jnp.zeros([], jnp.int32)
    _batch_size(owner, leaves)
    c = jnp.result_type(*[tree.compute_dtype(jnp.result_type(g)) for g in leaves])
    norms = tree.sqrt(
        sum(
            jnp.sum(tree.abs_sq(jnp.asarray(g).astype(c)).reshape(np.shape(g)[0], -1), axis=1)
            for g in leaves
        )
    )
    factors = jnp.nan_to_num(jnp.minimum(l2_norm_clip / norms, 1), nan=1.0)
    factors = factors.astype(tree.real_dtype(c))

    def clipped_sum(g):
        g = jnp.asarray(g)
        out = g.dtype if jnp.issubdtype(g.dtype, jnp.inexact) else c
        return jnp.tensordot(factors, g.astype(c), axes=1).astype(out)

    clipped = treedef.unflatten([clipped_sum(g) for g in leaves])
    return clipped, jnp.sum(factors < 1).astype(jnp.int32)


def per_example_layer_norm_clip(
    grads: Any, global_l2_norm_clip: Any, uniform: bool = True
) -> tuple[Any, Any]:
    """Clips each example's gradient layer by layer (per leaf) and sums them.

    With ``K`` leaves (layers), ``D_k`` the size of layer ``k`` per example,
    ``D = \\sum_k D_k`` and ``C`` = ``global_l2_norm_clip``, layer ``k`` of each
    example is clipped to its own bound

    .. math::
        C_k = C / \\sqrt{K} \\;\\text{(uniform)} \\quad\\text{or}\\quad
        C_k = C \\sqrt{D_k / D}, \\qquad
        \\text{output}_k = \\sum_{i=1}^{B} g_{i,k}
            \\min\\Big(1, \\frac{C_k}{\\|g_{i,k}\\|_2}\\Big)

    so that, since :math:`\\sum_k C_k^2 = C^2`, each example's whole gradient has
    norm at most ``C`` (McMahan et al. 2018, Section 3, per-layer clipping). Each
    layer is :func:`per_example_global_norm_clip` with bound ``C_k``; with one
    leaf the two functions agree.

    Args:
      grads: per-example gradients: every leaf of shape ``(B, *param_shape)``.
      global_l2_norm_clip: the overall bound ``C`` >= 0.
      uniform: equal bounds per layer; ``False``: bounds by layer size.

    Returns:
      ``(clipped_sum, num_clipped)``: a tree of the params' shapes, and a tree of
      the same structure holding, per layer, the int32 count of examples clipped.

    Raises:
      ValueError: leaves without a common leading axis, or
        ``global_l2_norm_clip`` negative or NaN.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> grads = [jnp.array([[0.0, 3.0, 4.0], [4.0, 0.0, 3.0]])]  # norms 5, 5
      >>> gradtx.per_example_layer_norm_clip(grads, 2.5)
      ([Array([2. , 1.5, 3.5], dtype=float32)], [Array(2, dtype=int32)])

    References:
      McMahan, Ramage, Talwar & Zhang (2018), Learning Differentially Private
      Recurrent Language Models, ICLR, Section 3.
    """
    owner = "per_example_layer_norm_clip"
    _check_clip(owner, global_l2_norm_clip, "global_l2_norm_clip")
    leaves, treedef = jax.tree.flatten(grads)
    if not leaves:
        return grads, grads
    _batch_size(owner, leaves)
    sizes = [int(np.prod(np.shape(g)[1:])) for g in leaves]
    if uniform:
        fractions = [1.0 / len(leaves)] * len(leaves)
    else:
        total = sum(sizes)
        fractions = [size / total if total else 0.0 for size in sizes]
    pairs = [
        per_example_global_norm_clip(g, global_l2_norm_clip * f**0.5)
        for g, f in zip(leaves, fractions, strict=True)
    ]
    return (
        treedef.unflatten([clipped for clipped, _ in pairs]),
        treedef.unflatten([count for _, count in pairs]),
    )


def _key_data(owner: str, key: Any, seed: Any) -> tuple[Array, Any]:
    """The raw data of a PRNG key and its implementation, from an int seed or a key."""
    if key is not None and seed is not None:
        raise ValueError(f"{owner}: pass key or seed, not both.")
    key = seed if key is None else key
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        key = jax.random.key(key)
    elif isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32:
        key = jax.random.wrap_key_data(key)  # a raw key, as jax.random.PRNGKey makes
    elif not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise ValueError(
            f"{owner}: key must be an int seed or a PRNG key (the noise must be reproducible, "
            f"and should be kept secret), got {key!r}."
        )
    if key.shape != ():
        raise ValueError(f"{owner}: key must be a single PRNG key, got shape {key.shape}.")
    return jax.random.key_data(key), jax.random.key_impl(key)


def differentially_private_aggregate(
    l2_norm_clip: Any, noise_multiplier: Any, key: Any = None, *, seed: int | None = None
) -> GradientTransformation:
    """Aggregates per-example gradients as DP-SGD does: clip, sum, add noise, average.

    With ``B`` examples (the leading axis of every leaf), ``C`` =
    ``l2_norm_clip`` and ``sigma`` = ``noise_multiplier``:

    .. math::
        \\bar g_i = g_i \\min\\Big(1, \\frac{C}{\\|g_i\\|_2}\\Big), \\qquad
        \\tilde g = \\frac{1}{B}\\Big(\\sum_{i=1}^{B} \\bar g_i
        + \\mathcal{N}(0, \\sigma^2 C^2 I)\\Big)

    (Abadi et al. 2016, Alg. 1, with the lot of size ``L`` = ``B``). The norm
    ``||g_i||`` is over the whole tree of example ``i``
    (:func:`per_example_global_norm_clip`). Chain it first, on the
    per-example gradients; what follows sees an ordinary gradient.

    **Noise.** The PRNG key is part of the state. Each step splits it into
    ``1 + (number of leaves)`` keys, as Optax does: the first is the next
    state's, the others draw each leaf's noise in ``jax.tree`` order. The noise
    is drawn in float32 (complex64 for a complex leaf, circular with
    ``E|n|^2 = sigma^2 C^2``) and added in at least float32, so the same key
    gives Optax's numbers on float32 gradients; Optax draws in the leaf's dtype
    (another sample in float64, a coarse one in bfloat16).

    Args:
      l2_norm_clip: the bound ``C`` >= 0 on each example's gradient norm.
      noise_multiplier: ``sigma`` >= 0: the noise's standard deviation over ``C``.
      key: an int seed, or a PRNG key (``jax.random.key`` or a raw
        ``jax.random.PRNGKey``). Required.
      seed: an int seed, for code written for Optax's older ``seed=``; give
        ``key`` or ``seed``, not both.

    Returns:
      A :class:`GradientTransformation` whose update has the params' shapes.

    Raises:
      ValueError: a negative or NaN ``l2_norm_clip``, a negative or non-finite
        ``noise_multiplier``, no key (or both ``key`` and ``seed``), or, at
        ``update``, gradients without a common leading batch axis or with an
        integer or boolean leaf.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.differentially_private_aggregate(2.5, noise_multiplier=0.0, key=0)
      >>> per_example = jnp.array([[3.0, 4.0], [0.75, 1.0]])  # norms 5 and 1.25
      >>> tx.update(per_example, tx.init(jnp.zeros(2)))[0]
      Array([1.125, 1.5  ], dtype=float32)

    References:
      Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar & Zhang (2016), Deep
      Learning with Differential Privacy, CCS, Alg. 1.

    Note:
      Optax draws its noise from ``jax.random.key(0)`` (with a warning) when no
      key is given; gradtx requires one, as :func:`add_noise` does. With
      ``noise_multiplier=0`` no noise is added even when ``l2_norm_clip`` is
      ``inf`` (Optax's ``inf * 0`` noise makes every update NaN). Wrappers that
      sum or average updates over steps (:func:`accumulate`) see the already
      averaged, noised gradient of each step.
    """
    owner = "differentially_private_aggregate"
    _check_clip(owner, l2_norm_clip)
    _checks.non_negative(owner, "noise_multiplier", noise_multiplier)
    key_data, impl = _key_data(owner, key, seed)

    def init_fn(params):
        tree.check_inexact(params, owner)
        # A copy: a donated state would otherwise delete the key every init hands out.
        return DifferentiallyPrivateAggregateState(jnp.array(key_data, copy=True))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        leaves, treedef = jax.tree.flatten(updates)
        if not leaves:
            return updates, state
        batch = _batch_size(owner, leaves)
        _check_inexact_gradients(owner, updates)
        clipped, _ = per_example_global_norm_clip(leaves, l2_norm_clip)
        next_key, *leaf_keys = jax.random.split(
            jax.random.wrap_key_data(state.rng_key, impl=impl), len(leaves) + 1
        )
        noiseless = _checks.is_zero(noise_multiplier)  # a constant 0: draw nothing
        std = jnp.where(jnp.asarray(noise_multiplier) == 0, 0.0, l2_norm_clip * noise_multiplier)

        def noised(g, k):
            c = tree.compute_dtype(g.dtype)
            if noiseless:
                return (g.astype(c) / batch).astype(g.dtype)
            z = jax.random.normal(k, g.shape, _SAMPLE_DTYPE[bool(jnp.iscomplexobj(g))])
            return ((g.astype(c) + std * z.astype(c)) / batch).astype(g.dtype)

        out = [noised(g, k) for g, k in zip(clipped, leaf_keys, strict=True)]
        new_state = DifferentiallyPrivateAggregateState(jax.random.key_data(next_key))
        return treedef.unflatten(out), new_state

    return GradientTransformation(init_fn, update_fn)


def dpsgd(
    learning_rate: ScalarOrSchedule,
    l2_norm_clip: Any,
    noise_multiplier: Any,
    seed: int,
    momentum: float | None = None,
    nesterov: bool = False,
) -> GradientTransformation:
    """DP-SGD: SGD on privatized per-example gradients (Abadi et al. 2016, Alg. 1).

    ``chain(differentially_private_aggregate(l2_norm_clip, noise_multiplier,
    seed), sgd(learning_rate, momentum, nesterov))``: each step clips every
    example's gradient to norm ``C``, sums, adds ``N(0, sigma^2 C^2)`` noise,
    divides by the batch size (:func:`differentially_private_aggregate`, which
    holds the math), then takes the SGD step ``theta <- theta - eta_t g~``
    (with heavy-ball or Nesterov momentum if ``momentum`` is given, as
    :func:`sgd`).

    The privacy guarantee, ``(epsilon, delta)``, depends on ``sigma``, the
    sampling rate and the number of steps; compute it with a privacy accountant
    (the paper's moments accountant), which is not part of gradtx.

    Args:
      learning_rate: the step size ``eta_t``, a number or a schedule.
      l2_norm_clip: the per-example norm bound ``C`` >= 0.
      noise_multiplier: ``sigma`` >= 0, the noise's standard deviation over ``C``.
      seed: an int seed (or a PRNG key) for the noise.
      momentum: the heavy-ball decay in [0, 1), or ``None`` for plain SGD.
      nesterov: Nesterov momentum instead of heavy ball.

    Returns:
      A :class:`GradientTransformation` taking per-example gradients (a leading
      batch axis on every leaf) and returning updates of the params' shapes.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> params = jnp.array([1.0, -2.0])
      >>> per_example = jax.vmap(jax.grad(lambda p, x: jnp.sum((p - x) ** 2)), (None, 0))
      >>> grads = per_example(params, jnp.zeros((4, 2)))  # 4 examples
      >>> tx = gradtx.dpsgd(0.1, l2_norm_clip=1.0, noise_multiplier=0.0, seed=0)
      >>> updates, state = tx.update(grads, tx.init(params))
      >>> updates  # each clipped to norm 1 and averaged: -0.1 * (1, -2) / sqrt(5)
      Array([-0.04472136,  0.08944272], dtype=float32)

    References:
      Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar & Zhang (2016), Deep
      Learning with Differential Privacy, CCS, Alg. 1.
    """
    return chain(
        differentially_private_aggregate(l2_norm_clip, noise_multiplier, key=seed),
        sgd(learning_rate, momentum, nesterov),
    )
