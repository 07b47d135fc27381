"""AdaGrad: per-coordinate rates from the root of the summed squared gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

from gradtx import _checks, tree
from gradtx.base import GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import chain
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleByRssState(NamedTuple):
    """State of :func:`scale_by_rss`."""

    sum_of_squares: Updates  # r in Goodfellow Alg. 8.4; real dtype, shaped like the params.


def _rss_leaf(g, r, eps, eps_in_sqrt):
    c = tree.compute_dtype(g.dtype)
    gc = tree.as_dtype(g, c)
    r_new = tree.as_dtype(r, tree.real_dtype(c)) + tree.abs_sq(gc)
    denom = tree.sqrt(r_new + eps) if eps_in_sqrt else tree.sqrt(r_new) + eps
    out = tree.divide_by_root(gc, denom)
    return tree.as_dtype(out, g.dtype), tree.as_dtype(r_new, r.dtype)


def scale_by_rss(
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
    *,
    eps_in_sqrt: bool = True,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """Divides by the root of the sum of squared gradients (AdaGrad's scaling).

    .. math::
        r \\leftarrow r + g \\odot g, \\qquad
        \\text{out} = \\frac{g}{\\delta + \\sqrt{r}} \\; (\\text{book}) \\quad\\text{or}\\quad
        \\frac{g}{\\sqrt{r + \\delta}} \\; (\\text{Optax})

    Args:
      initial_accumulator_value: the starting ``r`` (>= 0). The book and Duchi et
        al. start at 0; Optax at 0.1 (the default, for compatibility); PyTorch at 0.
      eps: ``delta`` >= 0. Book: 1e-7 outside the root; PyTorch: 1e-10 outside.
      eps_in_sqrt: ``True`` (default, Optax) puts ``delta`` inside the root;
        ``False`` outside, as Goodfellow et al. Alg. 8.4 and PyTorch.
      nu_dtype: dtype of ``r``; ``None`` keeps the params' (real part).

    Raises:
      ValueError: a negative ``initial_accumulator_value`` or ``eps``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
      >>> tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))[0]
      Array([1.], dtype=float32)
    """
    _checks.non_negative("scale_by_rss", "initial_accumulator_value", initial_accumulator_value)
    _checks.non_negative("scale_by_rss", "eps", eps)
    _checks.dtype_or_none("scale_by_rss", "nu_dtype", nu_dtype)

    def init_fn(params):
        return ScaleByRssState(
            tree.full_like(params, initial_accumulator_value, nu_dtype, real=True)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.sum_of_squares, updates, owner="scale_by_rss")
        out, r = tree.map_unzip(
            lambda g, r: _rss_leaf(g, r, eps, eps_in_sqrt), 2, updates, state.sum_of_squares
        )
        return out, ScaleByRssState(r)

    return GradientTransformation(init_fn, update_fn)


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
    *,
    eps_in_sqrt: bool = True,
) -> GradientTransformation:
    """AdaGrad (Duchi, Hazan & Singer 2011; Goodfellow et al. 2016, Alg. 8.4).

    .. math::
        r \\leftarrow r + g \\odot g, \\qquad
        \\theta \\leftarrow \\theta - \\frac{\\epsilon}{\\delta + \\sqrt{r}} \\odot g

    Composition: ``chain(scale_by_rss(...), scale_by_learning_rate(epsilon))``.
    The defaults are Optax's (``r_0 = 0.1``, ``delta = 1e-7`` inside the root);
    the book's Alg. 8.4 is ``adagrad(lr, initial_accumulator_value=0.0,
    eps_in_sqrt=False)``.

    Args:
      learning_rate: ``epsilon``, a number or a schedule ``k -> epsilon_k``.
      initial_accumulator_value, eps, eps_in_sqrt: see :func:`scale_by_rss`.

    Examples:
      >>> import gradtx, jax, jax.numpy as jnp
      >>> loss = lambda w: jnp.sum(w**2)
      >>> tx = gradtx.adagrad(0.5)
      >>> w = jnp.array([1.0, -2.0]); state = tx.init(w)
      >>> for _ in range(100):
      ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
      ...     w = gradtx.apply_updates(w, updates)
      >>> bool(loss(w) < 1e-3)
      True

    References:
      Duchi, Hazan & Singer (2011); Goodfellow, Bengio & Courville (2016), Alg. 8.4.
    """
    _checks.learning_rate("adagrad", learning_rate)
    return chain(
        scale_by_rss(initial_accumulator_value, eps, eps_in_sqrt=eps_in_sqrt),
        scale_by_learning_rate(learning_rate),
    )
