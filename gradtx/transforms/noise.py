"""Annealed Gaussian gradient noise (Neelakantan et al. 2015).

Neelakantan et al. (2015) list gradient noise of decreasing variance among the
strategies that help SGD on deep networks: Gaussian noise whose variance decays
over the steps is added to every gradient, so early steps explore and later
ones settle.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, GradientTransformation

# The noise is drawn in float32 (complex64 for complex leaves) whatever the
# gradient's dtype, then scaled and added in the compute dtype: one key gives the
# same noise, up to the final rounding, in bfloat16, float32 and float64 runs.
_SAMPLE_DTYPE = {False: jnp.float32, True: jnp.complex64}


class AddNoiseState(NamedTuple):
    """State of :func:`add_noise`."""

    count: Array  # int32 scalar: t, the number of noisy steps taken so far.
    rng_key: Array  # uint32: the raw data of the PRNG key for the next step.


def _key_and_impl(key: Any, seed: Any) -> tuple[Array, Any]:
    """The raw data of the key and its PRNG implementation, from a seed or a key."""
    if key is not None and seed is not None:
        raise ValueError("add_noise: pass key or seed, not both.")
    key = seed if key is None else key
    if key is None:
        raise ValueError(
            "add_noise: key must be an int seed or a PRNG key (the noise must be reproducible), "
            "got None."
        )
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        key = jax.random.key(key)
    elif isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        pass
    elif isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32:
        key = jax.random.wrap_key_data(key)  # a raw key, as jax.random.PRNGKey makes
    else:
        raise ValueError(f"add_noise: key must be an int seed or a PRNG key, got {key!r}.")
    if key.shape != ():
        raise ValueError(f"add_noise: key must be a single PRNG key, got shape {key.shape}.")
    return jax.random.key_data(key), jax.random.key_impl(key)


def _noisy_leaf(g: Array, key: Array, count: Array, eta: Any, gamma: Any) -> Array:
    c = tree.compute_dtype(g.dtype)
    real = tree.real_dtype(c)
    variance = eta / (1 + count.astype(real)) ** gamma
    # A complex sample has E|z|^2 = 1 (real and imaginary parts of variance 1/2):
    # the noise's variance E|n|^2 is sigma_t^2, as for a real leaf.
    z = jax.random.normal(key, g.shape, _SAMPLE_DTYPE[bool(jnp.iscomplexobj(g))])
    return (g.astype(c) + jnp.sqrt(variance) * z.astype(c)).astype(g.dtype)


def add_noise(
    eta: float | Array, gamma: float | Array, key: Any = None, *, seed: int | None = None
) -> GradientTransformation:
    """Adds annealed Gaussian noise to the updates (Neelakantan et al. 2015).

    .. math::
        g_t \\leftarrow g_t + n_t, \\qquad n_t \\sim \\mathcal{N}(0, \\sigma_t^2),
        \\qquad \\sigma_t^2 = \\frac{\\eta}{(1 + t)^\\gamma}

    with ``t = 0, 1, 2, ...`` the step (the first step has variance ``eta``, as
    in Optax). Each leaf gets independent noise of its shape. Chain it in front
    of the optimizer, on the raw gradient, as in the paper.

    **Reproducible.** The PRNG key is part of the state: the same key and the
    same gradients give the same noise, under ``jit`` or not, and a restored state
    continues the same noise sequence. Each step splits the key as Optax's
    ``add_noise`` does (one split for the next key, then one key per leaf, in
    ``jax.tree`` order), so with the same key both add the same numbers to
    float32 and complex64 gradients.

    **Dtypes.** The update keeps the gradient's dtype. The noise is drawn in
    float32 and added in the compute dtype (at least float32), so a bfloat16 run
    gets the float32 noise rounded once, and a float64 run the same noise as a
    float32 run. (Optax draws in the leaf's dtype: a different sample in
    float64, a coarse one in bfloat16.) A complex leaf gets circular complex
    noise with ``E|n|^2 = sigma_t^2``: real and imaginary parts independent, each
    of variance ``sigma_t^2 / 2`` (jax.random's complex normal, as Optax).

    Args:
      eta: the initial variance ``eta`` >= 0 (the paper tries 0.01, 0.3 and 1).
      gamma: the decay exponent ``gamma`` >= 0 (the paper uses 0.55).
      key: an int seed, or a PRNG key (``jax.random.key`` or a raw
        ``jax.random.PRNGKey``). Required: the noise must be reproducible.
      seed: an int seed, for code written for Optax's older ``seed=`` argument;
        give ``key`` or ``seed``, not both.

    Raises:
      ValueError: ``eta`` or ``gamma`` negative or not finite; no ``key`` (or
        both ``key`` and ``seed``); a key that is not one PRNG key.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.add_noise(eta=0.01, gamma=0.55, key=0)
      >>> state = tx.init(jnp.zeros(3))
      >>> noisy, state = tx.update(jnp.zeros(3), state)
      >>> again, _ = tx.update(jnp.zeros(3), tx.init(jnp.zeros(3)))
      >>> bool(jnp.all(noisy == again)), bool(jnp.all(noisy != 0))  # same key, same noise
      (True, True)

    References:
      Neelakantan, Vilnis, Le, Sutskever, Kaiser, Kurach & Martens (2015), Adding
      Gradient Noise Improves Learning for Very Deep Networks, Sec. 2.
    """
    _checks.non_negative("add_noise", "eta", eta)
    _checks.non_negative("add_noise", "gamma", gamma)
    key_data, impl = _key_and_impl(key, seed)

    def init_fn(params):
        tree.check_inexact(params, "add_noise")
        # A copy: a donated state would otherwise delete the key every init hands out.
        return AddNoiseState(tree.zero_count(), jnp.array(key_data, copy=True))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        next_key, sample_key = jax.random.split(jax.random.wrap_key_data(state.rng_key, impl=impl))
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(sample_key, len(leaves))
        noisy = [
            _noisy_leaf(g, k, state.count, eta, gamma) for g, k in zip(leaves, keys, strict=True)
        ]
        new_state = AddNoiseState(tree.safe_increment(state.count), jax.random.key_data(next_key))
        return jax.tree.unflatten(treedef, noisy), new_state

    return GradientTransformation(init_fn, update_fn)
