"""bfloat16 parameters that keep small updates: stochastic rounding and Kahan summation.

A bfloat16 parameter has 8 significant bits: near 1 its spacing is 2^-7, so an
update smaller than 2^-9 is lost to round-to-nearest when it is added, every
step, and a long run of small steps leaves the parameter where it was. The two
blocks here are chained *last*, after any optimizer, and turn the optimizer's
update ``u`` into the step ``d`` that lands a bfloat16 parameter ``p`` exactly
on a better-rounded ``p + u``:

* :func:`stochastic_rounding` rounds ``p + u`` up or down at random, with
  probabilities that make the rounding unbiased (Gupta et al. 2015; Zamirai et
  al. 2020, Sec. 4).
* :func:`kahan_summation` keeps what rounding lost in a bfloat16 buffer and
  adds it back at the next step (Kahan 1965; Zamirai et al. 2020, Sec. 4).

For a bfloat16 leaf, the returned step is ``float32(new_p) - float32(p)`` (in
float64 where ``u`` is float64). The difference of two bfloat16 numbers is
exact in float32 unless their exponents are more than 16 apart, and then the
larger one dominates the sum; either way ``gradtx.apply_updates(p, d)``
(which adds in float32 and rounds to nearest) gives ``new_p`` bit for bit.
A bfloat16 step could not promise that (``300 - 1`` has 9 significant bits),
so for bfloat16 parameters the update is float32 even where ``u`` is bfloat16:
a deliberate exception to "updates keep the gradient's dtype". Leaves of any
other dtype (float32, float16, float64, complex) pass through unchanged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradtx import tree
from gradtx.base import Array, GradientTransformation


def _is_none(x: Any) -> bool:
    return x is None


def _is_bf16(p: Any) -> bool:
    return p is not None and jnp.result_type(p) == jnp.bfloat16


def _step_to(new_p: Array, p: Array, u: Array) -> Array:
    """``new_p - p`` in float32 (float64 for a float64 ``u``): what apply_updates adds."""
    out = jnp.promote_types(u.dtype, jnp.float32)
    return new_p.astype(out) - p.astype(out)


def _need_params(owner: str, updates: Any, params: Any) -> None:
    if params is None:
        raise ValueError(f"{owner}: update needs the params (the bfloat16 values to round).")
    tree.check_structure(params, updates, owner=owner)


# ---------------------------------------------------------------- stochastic rounding


class StochasticRoundingState(NamedTuple):
    """State of :func:`stochastic_rounding`."""

    key: Array  # uint32[2]: the raw data of the PRNG key for the next step.


def _raw_key(key: Any) -> Array:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key_data(jax.random.key(int(key)))
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape == ():
            return jax.random.key_data(key)
    elif isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32 and key.shape == (2,):
        return jnp.asarray(key)
    raise ValueError(f"stochastic_rounding: key must be an int seed or one PRNG key, got {key!r}.")


def _stochastic_round(x: Array, bits: Array) -> Array:
    """Rounds float32 ``x`` to bfloat16 at random, given 16 random bits per entry.

    ``x``'s bit pattern plus ``bits`` (integers in ``[0, 2^16)``), with the low
    16 bits then cleared: the 16 bits that bfloat16 drops, read as an integer
    ``k``, carry into the kept bits with probability ``k / 2^16`` for uniform
    ``bits``, so the magnitude rounds up with probability proportional to the
    distance from the value below and ``E[result] = x`` exactly. Non-finite
    entries are rounded to nearest (an infinity stays one, a NaN stays NaN).
    """
    x = jnp.asarray(x, jnp.float32)
    pattern = lax.bitcast_convert_type(x, jnp.uint32)
    kept = (pattern + jnp.asarray(bits, jnp.uint32)) & jnp.uint32(0xFFFF0000)
    rounded = lax.bitcast_convert_type(kept, jnp.float32)
    return jnp.where(jnp.isfinite(x), rounded, x).astype(jnp.bfloat16)


def stochastic_rounding(key: Any = 0) -> GradientTransformation:
    """Stochastic rounding of bfloat16 parameters; chain it last, after any optimizer.

    For each bfloat16 parameter ``p`` and incoming update ``u``:

    .. math::
        x = \\mathrm{fl}_{32}(p + u), \\qquad
        p' = \\mathrm{SR}(x) = \\begin{cases}
            \\lceil x \\rceil & \\text{with probability }
                (x - \\lfloor x \\rfloor) / (\\lceil x \\rceil - \\lfloor x \\rfloor) \\\\
            \\lfloor x \\rfloor & \\text{otherwise}
        \\end{cases}, \\qquad
        d = p' - p

    with :math:`\\lfloor x \\rfloor, \\lceil x \\rceil` the bfloat16 neighbours
    of ``x`` (toward zero and away from it), so :math:`E[p'] = x` (Gupta et
    al. 2015, Eq. 4). An update far below bfloat16's spacing still moves the
    parameter on average, where round-to-nearest would drop it every step.
    ``gradtx.apply_updates(p, d)`` gives ``p'`` bit for bit (see the module).

    **Random bits.** Each step splits the key in the state:
    ``key, sub = jax.random.split(key)``, then ``keys = jax.random.split(sub, n)``
    for the ``n`` leaves of the updates in ``jax.tree`` order, and leaf ``i``
    draws ``jax.random.bits(keys[i], shape, jnp.uint32) >> 16`` and is rounded
    by adding them to the low 16 bits of float32 ``x``'s bit
    pattern and clearing those bits (a carry rounds the magnitude up, with
    probability ``k / 2^16`` for low bits ``k``). The same key and the same updates give
    the same trajectory; the key is a plain ``uint32[2]`` array, so a state
    checkpoints and restores like any other, and continues the same sequence.

    **Dtypes.** Only bfloat16 leaves are rounded; every other leaf's update
    passes through. ``x`` is computed in float32 (rounded to nearest there, an
    error 2^16 times smaller than the stochastic rounding's). A bfloat16 leaf's
    step is float32 (float64 for a float64 ``u``), see the module.

    Args:
      key: an int seed, or a PRNG key (``jax.random.key(s)`` or the raw
        ``jax.random.PRNGKey(s)``).

    Raises:
      ValueError: a key that is not an int or one PRNG key; ``update`` without
        the params.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> p = jnp.ones(4, jnp.bfloat16)
      >>> tx = gradtx.chain(gradtx.sgd(1e-3), gradtx.stochastic_rounding(key=0))
      >>> d, _ = tx.update(jnp.ones(4), tx.init(p), p)
      >>> new_p = gradtx.apply_updates(p, d)  # each entry is 1 or 1 - 2^-8
      >>> bool(jnp.all((new_p == 1) | (new_p == 1 - 2**-8)))
      True

    References:
      Gupta, Agrawal, Gopalakrishnan & Narayanan (2015), Deep Learning with
      Limited Numerical Precision, Sec. 3 (Eq. 4); Zamirai, Zhang, De Sa &
      Aberger (2020), Revisiting BFloat16 Training, Sec. 4.
    """
    raw = _raw_key(key)

    def init_fn(params):
        tree.check_inexact(params, "stochastic_rounding")
        # A copy: a donated state would otherwise delete the key every init hands out.
        return StochasticRoundingState(jnp.array(raw, copy=True))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _need_params("stochastic_rounding", updates, params)
        next_key, sample_key = jax.random.split(state.key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(sample_key, len(leaves))
        out = []
        for u, p, k in zip(leaves, treedef.flatten_up_to(params), keys, strict=True):
            if not _is_bf16(p):
                out.append(u)
                continue
            bits = jax.random.bits(k, jnp.shape(p), jnp.uint32) >> 16
            new_p = _stochastic_round(p.astype(jnp.float32) + u.astype(jnp.float32), bits)
            out.append(_step_to(new_p, p, u))
        return jax.tree.unflatten(treedef, out), StochasticRoundingState(next_key)

    return GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------- Kahan summation


class KahanSummationState(NamedTuple):
    """State of :func:`kahan_summation`."""

    # Per bfloat16 parameter, a bfloat16 array of its shape: c, the part of the
    # updates so far that rounding left out of the parameter. None for every
    # other leaf (no buffer).
    compensation: Any


def _kahan_leaf(u: Array, p: Array, c: Array) -> tuple[Array, Array]:
    y = u.astype(jnp.float32) + c.astype(jnp.float32)
    new_p = (p.astype(jnp.float32) + y).astype(jnp.bfloat16)
    new_c = (y - (new_p.astype(jnp.float32) - p.astype(jnp.float32))).astype(jnp.bfloat16)
    return _step_to(new_p, p, u), new_c


def kahan_summation() -> GradientTransformation:
    """Kahan-compensated bfloat16 parameters; chain it last, after any optimizer.

    For each bfloat16 parameter ``p``, with its bfloat16 compensation ``c``
    (zero at ``init``) and the incoming update ``u``:

    .. math::
        y = u + c, \\qquad
        p' = \\mathrm{bf16}(p + y), \\qquad
        c \\leftarrow \\mathrm{bf16}\\big(y - (p' - p)\\big), \\qquad
        d = p' - p

    with ``bf16`` round-to-nearest-even, and ``y``, ``p + y`` and
    ``y - (p' - p)`` computed in float32 (``p' - p``, two bfloat16 numbers, is
    exact there). ``c`` is what the rounding of ``p + y`` dropped: it is added
    back at the next step, so updates far below bfloat16's spacing accumulate
    in ``c`` until they move ``p``. This is Kahan's compensated sum (Kahan 1965)
    with the sign of ``c`` flipped (Kahan stores ``-c`` and subtracts it), as
    Zamirai et al. (2020, Sec. 4) apply it to the weight update, with ``c`` in
    bfloat16 as theirs. ``gradtx.apply_updates(p, d)`` gives ``p'`` bit for bit
    (see the module).

    **Dtypes.** Only bfloat16 leaves are compensated; every other leaf's update
    passes through and has no buffer (``None`` in the state). A bfloat16 leaf's
    step is float32 (float64 for a float64 ``u``).

    Raises:
      ValueError: ``update`` without the params, or updates whose tree or
        shapes differ from the params'.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> p = jnp.ones(1, jnp.bfloat16)
      >>> tx = gradtx.kahan_summation()
      >>> state = tx.init(p)
      >>> for _ in range(4):  # a quarter of the spacing at 1: round-to-nearest drops it
      ...     d, state = tx.update(jnp.full(1, 2.0**-9), state, p)
      ...     p = gradtx.apply_updates(p, d)
      >>> p
      Array([1.00781], dtype=bfloat16)

    References:
      Kahan (1965), Further Remarks on Reducing Truncation Errors, Comm. ACM
      8(1); Zamirai, Zhang, De Sa & Aberger (2020), Revisiting BFloat16
      Training, Sec. 4.
    """

    def init_fn(params):
        tree.check_inexact(params, "kahan_summation")

        def buffer(p):
            return jnp.zeros(jnp.shape(p), jnp.bfloat16) if _is_bf16(p) else None

        return KahanSummationState(jax.tree.map(buffer, params, is_leaf=_is_none))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _need_params("kahan_summation", updates, params)
        treedef = jax.tree.structure(updates, is_leaf=_is_none)
        if jax.tree.structure(state.compensation, is_leaf=_is_none) != treedef:
            raise ValueError(
                "kahan_summation: the updates do not have the tree structure of the params "
                "the state was initialised with."
            )
        out, comp = [], []
        leaves = zip(
            treedef.flatten_up_to(updates),
            treedef.flatten_up_to(params),
            treedef.flatten_up_to(state.compensation),
            strict=True,
        )
        for u, p, c in leaves:
            if c is None or u is None:
                out.append(u)
                comp.append(c)
                continue
            d, c = _kahan_leaf(u, p, c)
            out.append(d)
            comp.append(c)
        return treedef.unflatten(out), KahanSummationState(treedef.unflatten(comp))

    return GradientTransformation(init_fn, update_fn)
