"""Muon: momentum orthogonalised by a Newton-Schulz iteration (Jordan et al. 2024).

Symbols: ``g`` the gradient of a matrix ``W`` (fan_in x fan_out); ``m`` = ``mu``
its momentum with decay ``beta``; ``m~`` the blend fed to the iteration; ``(a, b,
c)`` = ``ns_coeffs``; ``k`` = ``ns_steps``; ``O`` the orthogonalised update.
Leaves that are not matrices go to AdamW (:func:`muon`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, tree
from gradtx.base import Array, EmptyState, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import Mask, chain, is_function, partition
from gradtx.optimizers.adam import adamw
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate

_STANDARD = (3.4445, -4.7750, 2.0315)  # Jordan et al. 2024: steepest slope at 0.
_DION = (  # Ahn et al. 2025: one triple per step.
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
_PRESETS = {"standard": _STANDARD, "dion": _DION}
_PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")
_ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a leaf form the matrix Muon orthogonalises (Optax's class).

    The leaf is read as a stack of matrices ``(fan_in, fan_out)``: the reduction
    axes (the inputs of ``x @ W``) are flattened into the rows, the output axes
    into the columns, and every other axis is a batch axis, each slice
    orthogonalised on its own. The default is a plain ``(fan_in, fan_out)``
    matrix; a PyTorch-layout ``(out, in)`` weight is ``MuonDimensionNumbers(1, 0)``.
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


class MuonState(NamedTuple):
    """State of :func:`scale_by_muon` (Optax's fields)."""

    count: Array  # int32 scalar: t.
    mu: Updates  # m: EMA of g with decay beta, in mu_dtype.
    ns_coeffs: Array  # (3,) or (n, 3): (a, b, c), one row per step when 2-D.


# ---------------------------------------------------------------------- shapes


def _is_spec(x: Any) -> bool:
    return x is None or isinstance(x, MuonDimensionNumbers)


def _axes(ndim: int, dims: MuonDimensionNumbers) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if ndim < 2:
        raise ValueError(f"muon: a leaf orthogonalised by Muon must have rank >= 2, got {ndim}.")
    as_tuple = lambda a: (a,) if isinstance(a, int) else tuple(a)  # noqa: E731
    rows = tuple(a % ndim for a in as_tuple(dims.reduction_axis))
    cols = tuple(a % ndim for a in as_tuple(dims.output_axis))
    if set(rows) & set(cols):
        raise ValueError(
            f"muon: reduction and output axes must be disjoint, got {rows} and {cols} "
            f"(from {dims} on a rank-{ndim} leaf)."
        )
    return rows, cols


def _fans(shape: tuple[int, ...], dims: MuonDimensionNumbers) -> tuple[int, int]:
    rows, cols = _axes(len(shape), dims)
    return math.prod(shape[a] for a in rows), math.prod(shape[a] for a in cols)


def _leaf_dims(owner: str, spec: Any, updates: Any, *, only_2d: bool) -> list[Any]:
    """One :class:`MuonDimensionNumbers` (or None: not Muon's) per array leaf of ``updates``.

    ``spec``: None, a (prefix) tree of them and None, or a function of the updates
    returning one. None means every 2-D leaf (``only_2d``) or every leaf.
    """
    if is_function(spec):
        spec = spec(updates)
    leaves = jax.tree.leaves(updates)
    if spec is None:
        default = MuonDimensionNumbers()
        return [default if not only_2d or jnp.ndim(x) == 2 else None for x in leaves]
    spec_leaves, spec_def = jax.tree.flatten(spec, is_leaf=_is_spec)
    try:
        subtrees = spec_def.flatten_up_to(updates)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{owner}: the weight dimension numbers must have the params' tree structure "
            f"or a prefix of it ({error})."
        ) from None
    return [s for s, sub in zip(spec_leaves, subtrees, strict=True) for _ in jax.tree.leaves(sub)]


def _spec_tree(spec: Any, updates: Any) -> Any:
    """The updates' tree with each array leaf replaced by its dimension numbers (or None)."""
    treedef = jax.tree.structure(updates)
    return treedef.unflatten(_leaf_dims("muon", spec, updates, only_2d=True))


# ---------------------------------------------------------------------- Newton-Schulz


def _newton_schulz(x, coeffs, preconditioning, eps, store):
    """``k`` quintic steps ``X <- a X + (b A + c A^2) X``, ``A = X X^H``, on a wide matrix.

    ``store`` rounds what a narrower ``ns_dtype`` would hold (the normalised ``X``,
    ``A``, ``b A + c A^2`` and each new ``X``); the products in between keep the
    working precision, as bfloat16 matrix units and PyTorch's ``addmm`` do.
    """
    coeffs = coeffs.astype(x.dtype)
    if preconditioning in ("frobenius", "spectral"):
        norm = store(jnp.linalg.norm(x, ord="fro" if preconditioning == "frobenius" else 2))
        x = store(x / (norm + eps))
    for step in range(coeffs.shape[0]):
        a, b, c = coeffs[step, 0], coeffs[step, 1], coeffs[step, 2]
        gram = store(x @ x.conj().T)
        if step == 0 and preconditioning == "aol":  # rows scaled by 1/sqrt(sum_j |A_ij|)
            s = jax.lax.rsqrt(jnp.maximum(jnp.abs(gram).sum(axis=-1), eps))[:, None]
            x, gram = store(s * x), store(s * gram * s.T)
        elif step == 0 and preconditioning == "schatten":  # X / ||X X^H||_F^(1/2)
            s = jax.lax.rsqrt(jnp.maximum(jnp.linalg.norm(gram), eps))
            x, gram = store(s * x), store(s * s * gram)
        x = store(a * x + store(b * gram + c * gram @ gram) @ x)
    return x


@functools.partial(jax.jit, static_argnames=("dims", "preconditioning", "ns_dtype"))
def _orthogonalize(x, coeffs, eps, *, dims, preconditioning, ns_dtype):
    """``O = NS(X)`` per matrix of the leaf ``x`` (its ``dims``), rounded to ``ns_dtype``.

    The work runs in ``x``'s dtype or ``ns_dtype``, the wider; a narrower
    ``ns_dtype`` is applied by rounding (``reduce_precision``), which XLA keeps,
    where a cast down and back up may be removed as excess precision. Compiled as
    one program even when called eagerly, so that an eager step rounds as a
    jitted one does (the iteration amplifies any difference).
    """
    rows, cols = _axes(x.ndim, dims)
    batch = tuple(a for a in range(x.ndim) if a not in rows + cols)
    order = batch + rows + cols
    size = lambda axes: math.prod(x.shape[a] for a in axes)  # noqa: E731
    stacked = x.transpose(order).reshape(size(batch), size(rows), size(cols))
    work = jnp.promote_types(x.dtype, ns_dtype)
    if work == jnp.dtype(ns_dtype):
        store = lambda z: z  # noqa: E731
    else:
        info = jnp.finfo(ns_dtype)
        store = lambda z: jax.lax.reduce_precision(z, info.nexp, info.nmant)  # noqa: E731

    def one(m):
        wide = m.shape[0] <= m.shape[1]  # NS(X^T) = NS(X)^T: iterate on the smaller Gram
        out = _newton_schulz(store(m if wide else m.T), coeffs, preconditioning, eps, store)
        return out if wide else out.T

    out = jax.vmap(one)(stacked.astype(work)).astype(x.dtype)
    out = out.reshape(tuple(x.shape[a] for a in order))
    return out.transpose(np.argsort(order))


def _muon_leaf(g, m, dims, coeffs, t, *, beta, eps, nesterov, bias_correction, options):
    """``m <- beta m + (1 - beta) g``, the blend ``m~``, and ``O = NS(m~)``; returns (O, m)."""
    c = tree.compute_dtype(jnp.promote_types(g.dtype, m.dtype))
    g_c = g.astype(c)
    m_c = beta * m.astype(c) + (1 - beta) * g_c
    if bias_correction:  # Optax: each term divided by the mass of its EMA
        mass = tree.bias_correction_factor(beta, t, c)
        if nesterov:
            next_mass = tree.bias_correction_factor(beta, tree.safe_increment(t), c)
            blend = beta * (m_c / next_mass) + (1 - beta) * (g_c / mass)
        else:
            blend = m_c / mass
    else:  # torch.optim.Muon, Jordan et al.'s code
        blend = beta * m_c + (1 - beta) * g_c if nesterov else m_c
    preconditioning, adaptive, ns_dtype = options
    dims = MuonDimensionNumbers(*_axes(g.ndim, dims))  # checked, and hashable for jit
    if ns_dtype is not None and jnp.iscomplexobj(blend):
        raise ValueError("scale_by_muon: ns_dtype is for real leaves; leave it None for complex.")
    o = _orthogonalize(
        blend, coeffs, eps, dims=dims, preconditioning=preconditioning, ns_dtype=ns_dtype or c
    )
    o = o.astype(c)
    if adaptive:  # scaled by the dual norm <m~, O> (Bernstein & Newhouse 2024)
        o = jnp.sum(jnp.real(blend.conj() * o)) * o
    return o.astype(g.dtype), m_c.astype(m.dtype)


# ---------------------------------------------------------------------- blocks


def _check_muon(owner, ns_coeffs, ns_steps, beta, eps, mu_dtype, preconditioning, ns_dtype):
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, (int, np.integer)) or ns_steps < 0:
        raise ValueError(f"{owner}: ns_steps must be an integer >= 0, got {ns_steps!r}.")
    try:
        shape = np.shape(np.asarray(ns_coeffs, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(
            f"{owner}: ns_coeffs must be three numbers (a, b, c) or a tuple of such "
            f"triples, got {ns_coeffs!r}."
        ) from None
    if len(shape) not in (1, 2) or shape[-1] != 3:
        raise ValueError(f"{owner}: ns_coeffs must have shape (3,) or (n, 3), got {shape}.")
    if len(shape) == 2 and shape[0] > ns_steps:
        raise ValueError(
            f"{owner}: {shape[0]} rows of ns_coeffs (one per step) but ns_steps={ns_steps}: "
            f"ns_steps must be at least the number of rows, as in Optax."
        )
    _checks.in_range(owner, "beta", beta, 0.0, 1.0)
    _checks.non_negative(owner, "eps", eps)
    _checks.dtype_or_none(owner, "mu_dtype", mu_dtype)
    _checks.dtype_or_none(owner, "ns_dtype", ns_dtype)
    if preconditioning not in _PRECONDITIONINGS:
        raise ValueError(
            f"{owner}: preconditioning must be one of {_PRECONDITIONINGS}, got {preconditioning!r}."
        )


def scale_by_muon(
    ns_coeffs: tuple[float, float, float] | tuple[tuple[float, float, float], ...] = _STANDARD,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    weight_dimension_numbers: Any | Callable[[Any], Any] | None = None,
    bias_correction: bool = True,
    ns_dtype: Any | None = None,
) -> GradientTransformation:
    """Muon's scaling: the momentum of each matrix, orthogonalised by Newton-Schulz.

    .. math::
        m_t = \\beta m_{t-1} + (1-\\beta) g_t, \\qquad
        \\tilde m_t = \\frac{\\beta\\, m_t}{1-\\beta^{t+1}} + \\frac{(1-\\beta)\\, g_t}{1-\\beta^t}
        \\ \\text{(Nesterov)} \\quad\\text{or}\\quad \\tilde m_t = \\frac{m_t}{1-\\beta^t},

    .. math::
        X_0 = \\frac{\\tilde m_t}{\\lVert \\tilde m_t \\rVert_F + \\epsilon}, \\quad
        X_{j+1} = a X_j + (b A_j + c A_j^2) X_j, \\ A_j = X_j X_j^{\\mathsf H}, \\quad
        \\text{out} = O_t = X_k.

    The quintic Newton-Schulz iteration (Jordan et al. 2024, after Higham 2008,
    Ch. 8 and Bernstein & Newhouse 2024) drives every singular value of ``m~_t``
    towards 1 without an SVD: ``O_t ~ U V^H`` for ``m~_t = U S V^H``. Jordan's
    coefficients ``(3.4445, -4.7750, 2.0315)`` maximise the slope at zero, so five
    steps leave the singular values in about [0.7, 1.2] rather than at 1 exactly.
    The iteration runs on the wider orientation (``X^T`` when ``X`` is tall).

    Every leaf must be a matrix, or a stack of them described by
    ``weight_dimension_numbers``; use :func:`muon` to send the other leaves to AdamW.

    Departures from Optax, each where Optax fails: ``weight_dimension_numbers=None``
    works on any tree (Optax's only on a single array); on complex leaves the
    Gram matrix is ``X X^H`` in every preconditioning (Optax's "schatten" uses
    ``X X^T``).

    Args:
      ns_coeffs: ``(a, b, c)``, or one triple per step (an ``(n, 3)`` tuple, whose
        ``n`` steps replace ``ns_steps``, which must be >= ``n``, as in Optax).
      ns_steps: ``k``, an integer >= 0.
      beta: ``beta`` in [0, 1), the momentum decay.
      eps: ``epsilon`` >= 0 in the normalisation (and the floors of "aol" and
        "schatten").
      mu_dtype: dtype of ``m``; ``None`` keeps the params'.
      nesterov: blend the gradient into the momentum (``m~_t`` above) rather than
        orthogonalising ``m_t`` itself.
      adaptive: multiply ``O_t`` by the dual norm ``<m~_t, O_t>`` (Bernstein &
        Newhouse 2024), so the step shrinks with the gradient (the real part
        of the inner product for complex leaves, where Optax keeps it complex).
      preconditioning: how ``X_0`` is scaled: ``"frobenius"`` (above, Jordan's),
        ``"spectral"`` (by the largest singular value, an SVD), ``"aol"`` (the
        first step's rows scaled by ``1/sqrt(sum_j |A_ij|)``, Boissin et al.
        2025) or ``"schatten"`` (the first step scaled by
        ``||X X^H||_F^{-1/2}``, Grishina et al. 2025), as Optax's.
      weight_dimension_numbers: a :class:`MuonDimensionNumbers`, a tree (or a
        prefix of the params' tree) of them, or a function of the updates
        returning one; ``None``: every leaf is a ``(fan_in, fan_out)`` matrix.
      bias_correction: gradtx's switch. ``True`` (Optax's) divides each term of
        ``m~_t`` by the mass of its average, as above; ``False`` is
        ``torch.optim.Muon`` and Jordan et al.'s code:
        ``m~_t = beta m_t + (1 - beta) g_t`` with Nesterov, ``m_t`` without. The
        Frobenius normalisation makes a common factor irrelevant, so without
        Nesterov (or ``adaptive``) both agree up to ``eps``; with Nesterov the
        early steps weigh ``g_t`` differently.
      ns_dtype: gradtx's switch: the dtype the normalisation and iteration run in;
        ``None`` (Optax's) is the momentum's (at least float32); ``jnp.bfloat16``
        is ``torch.optim.Muon``'s and Jordan et al.'s. The result is cast back.

    Raises:
      ValueError: ``ns_coeffs`` not of shape (3,) or (n, 3), ``n > ns_steps``;
        ``ns_steps`` not an integer >= 0; ``beta`` outside [0, 1); ``eps`` < 0;
        an unknown ``preconditioning``; a non-float ``mu_dtype`` or
        ``ns_dtype``; when traced, a leaf of rank < 2 or without dimension
        numbers, or overlapping reduction and output axes.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_muon()
      >>> g = jnp.array([[3.0, 0.0], [0.0, 0.5]])
      >>> tx.update(g, tx.init(g))[0].round(2)  # singular values 3 and 0.5 -> near 1
      Array([[0.71, 0.  ],
             [0.  , 1.04]], dtype=float32)

    References:
      Jordan, Jin, Boza, You, Cesista, Newhouse & Bernstein (2024), Muon: an
      optimizer for hidden layers in neural networks (blog post and
      github.com/KellerJordan/Muon), the algorithm and its Newton-Schulz step;
      Bernstein & Newhouse (2024), Old Optimizer, New Norm: An Anthology.
    """
    owner = "scale_by_muon"
    _check_muon(owner, ns_coeffs, ns_steps, beta, eps, mu_dtype, preconditioning, ns_dtype)
    options = (preconditioning, adaptive, ns_dtype)

    def init_fn(params):
        tree.check_inexact(params, owner)
        return MuonState(
            tree.zero_count(), tree.zeros_like(params, mu_dtype), jnp.asarray(ns_coeffs)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, owner=owner)
        dims = _leaf_dims(owner, weight_dimension_numbers, updates, only_2d=False)
        if any(d is None for d in dims):
            raise ValueError(f"{owner}: every leaf needs dimension numbers (None given for one).")
        coeffs = state.ns_coeffs
        if coeffs.ndim == 1:
            coeffs = jnp.broadcast_to(coeffs, (ns_steps, 3))
        t = tree.safe_increment(state.count)
        leaves, treedef = jax.tree.flatten(updates)
        mus = treedef.flatten_up_to(state.mu)
        pairs = [
            _muon_leaf(
                g,
                m,
                d,
                coeffs,
                t,
                beta=beta,
                eps=eps,
                nesterov=nesterov,
                bias_correction=bias_correction,
                options=options,
            )  # fmt: skip
            for g, m, d in zip(leaves, mus, dims, strict=True)
        ]
        out = treedef.unflatten([o for o, _ in pairs])
        mu = treedef.unflatten([m for _, m in pairs])
        return out, MuonState(t, mu, state.ns_coeffs)

    return GradientTransformation(init_fn, update_fn)


def _scale_by_shape(dimension_numbers, consistent_rms) -> GradientTransformation:
    """Multiplies each matrix's update by ``sqrt(max(1, fan_out / fan_in))`` (Jordan et
    al.), or by ``consistent_rms * sqrt(max(fan_in, fan_out))`` (Liu et al. 2025)."""

    def factor(shape, dims):
        fan_in, fan_out = _fans(shape, dims)
        if consistent_rms is None:
            return math.sqrt(max(1.0, fan_out / fan_in))
        return math.sqrt(max(fan_in, fan_out)) * consistent_rms

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        leaves, treedef = jax.tree.flatten(updates)
        dims = _leaf_dims("muon", dimension_numbers, updates, only_2d=True)
        scaled = [
            tree.as_dtype(u * factor(u.shape, d), u.dtype)
            for u, d in zip(leaves, dims, strict=True)
        ]
        return treedef.unflatten(scaled), state

    return GradientTransformation(lambda params: EmptyState(), update_fn)


def _on_muon_leaves(mask: Mask | None) -> Mask | None:
    """A mask tree of the params, read on the tree Muon's group sees (AdamW's leaves None)."""
    if mask is None or is_function(mask):
        return mask
    return lambda group: jax.tree.map(lambda m, sub: jax.tree.map(lambda _: m, sub), mask, group)


def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: tuple[float, float, float]
    | tuple[tuple[float, float, float], ...]
    | str = _STANDARD,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Mask | None = None,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps_root: float = 0.0,
    adam_weight_decay: ScalarOrSchedule = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: Any | Callable[[Any], Any] | None = None,
    consistent_rms: float | None = None,
    bias_correction: bool = True,
    adjust_lr_fn: str | None = None,
    ns_dtype: Any | None = None,
) -> GradientTransformation:
    """Muon (Jordan et al. 2024): orthogonalised momentum for matrices, AdamW for the rest.

    .. math::
        W \\leftarrow W - \\eta_t \\left( s\\, O_t + \\lambda W \\right), \\qquad
        s = \\sqrt{\\max(1, \\text{fan\\_out} / \\text{fan\\_in})}
        \\ \\text{or}\\ \\rho \\sqrt{\\max(\\text{fan\\_in}, \\text{fan\\_out})}

    with ``O_t`` from :func:`scale_by_muon`, on the leaves Muon owns (by default
    the 2-D ones); every other leaf (biases, scales, embeddings given ``None``)
    gets :func:`adamw` with ``adam_*`` hyperparameters, ``eps``, ``mu_dtype`` and
    ``nesterov``. Composition: ``partition({"muon": chain(scale_by_muon(...),
    shape scale s, add_decayed_weights(lambda, weight_decay_mask),
    scale_by_learning_rate(eta)), "adam": adamw(...)})``, as Optax's. The shape
    scale ``s`` is Jordan et al.'s (default) or, with ``consistent_rms = rho``,
    Liu et al. (2025)'s, which gives the update AdamW's RMS at ``rho = 0.2``;
    the decay is not scaled by ``s``.

    Args:
      learning_rate: ``eta_t``, a number or a schedule.
      ns_coeffs: as :func:`scale_by_muon`, or a preset: ``"standard"`` (Jordan's,
        the default) or ``"dion"`` (five triples, Ahn et al. 2025).
      ns_steps, beta, eps, mu_dtype, nesterov, adaptive, preconditioning: see
        :func:`scale_by_muon` (``eps`` is AdamW's too).
      weight_decay: ``lambda`` >= 0 on Muon's leaves, multiplied by ``eta_t``.
      weight_decay_mask: which of Muon's leaves are decayed.
      adam_b1, adam_b2, adam_eps_root, adam_weight_decay: AdamW's ``b1``, ``b2``,
        ``eps_root`` and ``weight_decay`` for the other leaves.
      adam_learning_rate: AdamW's rate; ``None`` uses ``learning_rate``.
      muon_weight_dimension_numbers: which leaves are Muon's and how each is read
        as matrices: a :class:`MuonDimensionNumbers`, a (prefix) tree of them with
        ``None`` for AdamW's leaves, or a function of the params returning one;
        ``None``: the 2-D leaves, as ``(fan_in, fan_out)``.
      consistent_rms: ``rho`` > 0, or ``None`` for Jordan's scale.
      bias_correction, ns_dtype: gradtx's switches, see :func:`scale_by_muon`
        (Muon's leaves only; AdamW keeps its own correction).
      adjust_lr_fn: gradtx's switch, ``torch.optim.Muon``'s names for ``s``:
        ``"original"`` (Jordan's, = ``consistent_rms=None``) or
        ``"match_rms_adamw"`` (Moonshot's, = ``consistent_rms=0.2``); ``None``
        (Optax's) reads ``consistent_rms``. PyTorch reads ``A / B`` from a
        ``(out, in)`` weight's shape; gradtx reads ``fan_out / fan_in`` from the
        dimension numbers, so a PyTorch-layout leaf needs
        ``MuonDimensionNumbers(1, 0)``.

    Raises:
      ValueError: as :func:`scale_by_muon` and :func:`adamw`; an unknown preset or
        ``adjust_lr_fn``; ``adjust_lr_fn`` together with ``consistent_rms``;
        ``consistent_rms`` <= 0; ``weight_decay`` < 0.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(2)}
      >>> tx = gradtx.muon(0.1, nesterov=False)
      >>> grads = {"w": jnp.ones((2, 3)), "b": jnp.ones(2)}
      >>> updates, _ = tx.update(grads, tx.init(params), params)
      >>> updates["b"]  # AdamW's first step: about -eta sign(g)
      Array([-0.0999..., -0.0999...], dtype=float32)
      >>> updates["w"][0]  # -eta sqrt(3/2) 0.70 / sqrt(6): rank 1, its one singular value -> 0.70
      Array([-0.0348..., -0.0348..., -0.0348...], dtype=float32)

    References:
      Jordan et al. (2024), Muon: an optimizer for hidden layers in neural networks
      (kellerjordan.github.io/posts/muon, github.com/KellerJordan/Muon); Liu et al.
      (2025), Muon is Scalable for LLM Training, Sec. 2.2; Loshchilov & Hutter
      (2019), Decoupled Weight Decay Regularization, Alg. 2.
    """
    owner = "muon"
    _checks.learning_rate(owner, learning_rate)
    if adam_learning_rate is not None:
        _checks.finite(owner, "adam_learning_rate", adam_learning_rate, schedule=True)
    if isinstance(ns_coeffs, str):
        if ns_coeffs not in _PRESETS:
            raise ValueError(
                f"{owner}: ns_coeffs preset must be one of {tuple(_PRESETS)}, got {ns_coeffs!r}."
            )
        ns_coeffs = _PRESETS[ns_coeffs]
    _checks.positive(owner, "consistent_rms", consistent_rms, optional=True)
    if adjust_lr_fn not in _ADJUST_LR_FNS:
        raise ValueError(
            f"{owner}: adjust_lr_fn must be one of {_ADJUST_LR_FNS}, got {adjust_lr_fn!r}."
        )
    if adjust_lr_fn is not None and consistent_rms is not None:
        raise ValueError(f"{owner}: give adjust_lr_fn or consistent_rms, not both.")
    if adjust_lr_fn == "match_rms_adamw":
        consistent_rms = 0.2
    spec = muon_weight_dimension_numbers

    def labels(params):
        dims = _leaf_dims(owner, spec, params, only_2d=True)
        return jax.tree.structure(params).unflatten(["adam" if d is None else "muon" for d in dims])

    def muon_dims(updates):
        return _spec_tree(spec, updates)

    matrices = chain(
        scale_by_muon(
            ns_coeffs,
            ns_steps,
            beta,
            eps,
            mu_dtype,
            nesterov=nesterov,
            adaptive=adaptive,
            preconditioning=preconditioning,
            weight_dimension_numbers=muon_dims,
            bias_correction=bias_correction,
            ns_dtype=ns_dtype,
        ),  # fmt: skip
        _scale_by_shape(muon_dims, consistent_rms),
        add_decayed_weights(weight_decay, _on_muon_leaves(weight_decay_mask)),
        scale_by_learning_rate(learning_rate),
    )
    rest = adamw(
        learning_rate if adam_learning_rate is None else adam_learning_rate,
        adam_b1, adam_b2, eps, adam_eps_root, mu_dtype, adam_weight_decay, nesterov=nesterov,
    )  # fmt: skip
    return partition({"muon": matrices, "adam": rest}, labels)
