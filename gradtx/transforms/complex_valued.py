"""Complex parameters as pairs of real ones: :func:`split_real_and_imaginary`.

gradtx's methods take complex params as they are (second moments use ``|g|^2``,
so a step turns with a common phase). This wrapper is the other convention,
Optax's ``optax.contrib.split_real_and_imaginary``: a complex leaf ``z = x + iy``
is seen by the inner transformation as two real leaves ``x`` and ``y``, each with
its own moments, and the two real updates are joined back into one complex one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.base import Array, GradientTransformation, OptState
from gradtx.combine import accepts_extra_args


class _RealPair(NamedTuple):
    """The real and imaginary parts of one complex leaf, two real leaves for ``inner``."""

    real: Array
    imaginary: Array


class SplitRealAndImaginaryState(NamedTuple):
    """State of :func:`split_real_and_imaginary`."""

    inner_state: OptState  # inner's state, built on the tree with complex leaves split in two.


def _split(x: Any) -> Any:
    """A complex leaf as a :class:`_RealPair`; anything else as it is."""
    if x is not None and jnp.iscomplexobj(x):
        return _RealPair(jnp.real(x), jnp.imag(x))
    return x


def _join(pair: Any, like: Any) -> Any:
    """``real + i imaginary`` in the dtype of ``like`` (the incoming update) for a pair."""
    if isinstance(pair, _RealPair):
        return tree.as_dtype(pair.real + 1j * pair.imaginary, like.dtype)
    return pair


def split_real_and_imaginary(inner: GradientTransformation) -> GradientTransformation:
    """Runs ``inner`` on complex leaves as pairs of real ones, ``z = x + iy -> (x, y)``.

    .. math::
        (u_x, u_y), s \\leftarrow T\\big((g_x, g_y), s\\big), \\qquad
        u = u_x + i\\, u_y

    with ``T`` = ``inner``, ``g = g_x + i g_y`` a complex update and ``u`` its
    output. Real leaves pass to ``inner`` unsplit. ``inner`` treats ``x`` and
    ``y`` as independent real coordinates: an adaptive method scales each by its
    own moment, so the step no longer turns with a common phase of the params
    (gradtx's direct treatment of complex leaves, with ``|g|^2``, does). The
    params, when given, are split the same way; extra arguments are passed to
    ``inner`` unchanged. Same name and numbers as
    ``optax.contrib.split_real_and_imaginary``.

    For a real loss of complex params, ``jax.grad`` returns the conjugate of
    what PyTorch returns (the steepest-ascent direction ``g_x + i g_y``): pass
    ``jnp.conj(grad)`` to ``update`` to descend, as Optax's documentation says.

    Args:
      inner: the transformation to run on the real pairs.

    Returns:
      A transformation whose state is :class:`SplitRealAndImaginaryState`.

    Raises:
      TypeError: ``inner`` is not a transformation.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.split_real_and_imaginary(gradtx.sign_sgd(1.0))
      >>> z = jnp.array([0.5 - 3.0j])
      >>> tx.update(z, tx.init(z))[0]  # -sign(x) - i sign(y)
      Array([-1.+1.j], dtype=complex64)
    """
    if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "update", None))):
        raise TypeError(
            "split_real_and_imaginary: inner must be a transformation with init and update, "
            f"got {type(inner).__name__}."
        )
    inner_update = accepts_extra_args(inner.update)

    def init_fn(params):
        return SplitRealAndImaginaryState(inner.init(jax.tree.map(_split, params)))

    def update_fn(updates, state, params=None, **extra_args):
        split_params = None if params is None else jax.tree.map(_split, params)
        out, inner_state = inner_update(
            jax.tree.map(_split, updates), state.inner_state, split_params, **extra_args
        )
        joined = jax.tree.map(_join, out, updates, is_leaf=lambda x: isinstance(x, _RealPair))
        return joined, SplitRealAndImaginaryState(inner_state)

    return GradientTransformation(init_fn, update_fn)
