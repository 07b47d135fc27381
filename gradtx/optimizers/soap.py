"""SOAP (Vyas et al. 2024, Alg. 3): Adam in the eigenbasis of Shampoo's preconditioner.

Shampoo keeps, for a matrix gradient ``G``, the statistics ``L = E[G G^T]`` and
``R = E[G^T G]``. SOAP takes their eigenvectors ``Q_L, Q_R``, rotates the
gradient into that basis, ``G' = Q_L^T G Q_R``, runs Adam there (its second
moment is diagonal in the rotated coordinates) and rotates the step back. The
bases are refreshed every ``precondition_frequency`` steps: by an eigendecomposition
the first time, afterwards by one step of power iteration and a QR
decomposition, which costs a matrix product where ``eigh`` would be cubic and
iterative. A tensor of any rank gets one statistic per dimension (the gradient
contracted with itself over every other dimension); a dimension larger than
``max_precond_dim`` gets none (the identity basis on that side), and so do
vectors, unless ``precondition_1d``, and scalars, which take plain Adam.

Symbols: ``beta_1, beta_2`` = ``b1, b2``; ``beta_s`` = ``shampoo_beta``;
``epsilon`` = ``eps``; ``f`` = ``precondition_frequency``; ``M, V`` = ``mu, nu``;
``L_i`` (``L, R`` of a matrix) = ``stats``; ``Q_i`` (``Q_L, Q_R``) = ``bases``.

Sharding: ``mu`` and ``nu`` are shaped like their parameter and follow its
sharding. The rows of ``L_i`` and ``Q_i`` (``d_i x d_i``) are split as
dimension ``i`` of the parameter is (over the same mesh axes), their columns
whole; a factor of a whole dimension is replicated, and a dimension merged
from several axes (``merge_dims``) is split as the first of them when the
others are whole. This is the rule registered with ``gradtx.sharding``, which
``state_shardings`` applies (``zero1_state_shardings`` splits each factor
along its first divisible dimension, as a moment); an eager ``init`` places
the factors so. Each device then stores ``1/n`` of a factor; ``eigh`` and
``qr`` want it whole, so XLA gathers it for a refresh.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradtx import _checks, sharding, tree
from gradtx.base import Array, GradientTransformation, ScalarOrSchedule, Updates
from gradtx.combine import chain
from gradtx.transforms.regularize import add_decayed_weights
from gradtx.transforms.scale import scale_by_learning_rate


class ScaleBySoapState(NamedTuple):
    """State of :func:`scale_by_soap`."""

    count: Array  # int32 []: the calls so far (the first only sets L_i and Q_i).
    mu: Updates  # M: the moving average of the gradients, params' shape, original basis.
    nu: Updates  # V: the moving average of the squared rotated gradients, params' shape.
    stats: Updates  # per leaf, a tuple with one entry per (merged) dimension: L_i, (d_i, d_i),
    # or None where the dimension is not preconditioned.
    bases: Updates  # per leaf, the eigenbases Q_i laid out as ``stats``.


def merged_shape(shape: tuple[int, ...], max_precond_dim: int) -> tuple[int, ...]:
    """The authors' ``merge_dims``: runs of adjacent dimensions joined while their
    product stays at most ``max_precond_dim`` (a dimension already above it stays alone)."""
    merged, run = [], 1
    for size in shape:
        if run * size > max_precond_dim:
            if run > 1:
                merged.append(run)
                run = size
            else:
                merged.append(size)
                run = 1
        else:
            run *= size
    if run > 1 or not merged:
        merged.append(run)
    return tuple(merged)


def _work_shape(shape, max_precond_dim, merge_dims):
    """The shape whose dimensions carry statistics (0-d and 1-d leaves are not merged)."""
    return merged_shape(shape, max_precond_dim) if merge_dims and len(shape) > 1 else shape


def _merged_axes(shape: tuple[int, ...], sides: tuple[Any, ...]) -> list[tuple[int, ...]]:
    """The axes of ``shape`` that make each dimension of the work shape.

    ``sides`` holds each work dimension's length ``d_i``, or ``None`` for one
    without a statistic. Without merging, dimension ``i`` is axis ``i``. Merged
    (:func:`merged_shape`), a dimension with a statistic is the run of axes
    whose product is ``d_i``, and one without is a single axis (longer than
    ``max_precond_dim``, which is never merged); axes of length 1, which no
    device count splits, are skipped between runs.
    """
    if len(sides) == len(shape):
        return [(axis,) for axis in range(len(shape))]
    runs, axis = [], 0
    for side in sides:
        while axis < len(shape) and shape[axis] == 1:
            axis += 1
        start, size = axis, 1
        while axis < len(shape) and (size < side if side is not None else axis == start):
            size *= shape[axis]
            axis += 1
        runs.append(tuple(range(start, axis)))
    return runs


def _factor_entries(shape: tuple[int, ...], entries: tuple[Any, ...], factors: Any) -> Any:
    """Where a parameter's ``L_i`` and ``Q_i`` are split: ``(rows, None)`` per factor.

    The rows of the factor of dimension ``i`` take the parameter's
    PartitionSpec entry for axis ``i`` (for a merged dimension, that of its
    first axis when the others are whole); the columns are whole. The rule of
    ``stats`` and ``bases`` (:func:`gradtx.sharding.register_statistics`).
    """
    sides = tuple(None if f is None else f.shape[0] for f in factors)
    placed = []
    for factor, run in zip(factors, _merged_axes(shape, sides), strict=True):
        whole_after = all(entries[a] is None for a in run[1:])
        rows = entries[run[0]] if run and whole_after else None
        placed.append(None if factor is None else (rows, None))
    return tuple(placed)


sharding.register_statistics(ScaleBySoapState, "stats", _factor_entries)
sharding.register_statistics(ScaleBySoapState, "bases", _factor_entries)


def _rotate(x: Array, bases: tuple[Any, ...], back: bool = False) -> Array:
    """``x`` times ``Q_i^T`` along each dimension ``i`` (``Q_i`` with ``back``); None: identity."""
    for axis, q in enumerate(bases):
        if q is not None:
            x = jnp.moveaxis(jnp.tensordot(x, q.T if back else q, axes=((axis,), (0,))), -1, axis)
    return x


def _eigenbasis(stat: Array) -> Array:
    """The eigenvectors of ``L_i``, by decreasing eigenvalue (the first refresh)."""
    eye = jnp.eye(stat.shape[0], dtype=stat.dtype)
    return jnp.flip(jnp.linalg.eigh(stat + 1e-30 * eye)[1], axis=1)


def _power_qr(stat: Array, basis: Array, nu: Array, axis: int, qr_dtype: Any):
    """One power-iteration step from ``Q_i``, orthonormalised by QR (the later refreshes).

    The columns of ``Q_i`` are first sorted by the eigenvalue estimate
    ``diag(Q_i^T L_i Q_i)``, decreasing, and ``V`` is permuted with them along
    ``axis``, so that each of its entries stays with its direction.
    """
    estimate = jnp.sum(basis * (stat @ basis), axis=0)
    order = jnp.argsort(-estimate)
    power = (stat @ basis[:, order]).astype(qr_dtype)
    return jnp.linalg.qr(power)[0].astype(basis.dtype), jnp.take(nu, order, axis=axis)


def soap_leaf(g, mu, nu, stats, bases, shared, hyper):
    """One leaf of SOAP: Adam in the current bases, then ``L_i`` and the bases refreshed.

    ``shared`` is ``(first, refresh, scale)``: the first call (statistics only),
    whether the bases are refreshed by power iteration, and the bias-corrected
    step size ``sqrt(1 - beta_2^t) / (1 - beta_1^t)`` (1 without correction).
    """
    b1, b2, eps, shampoo_beta, normalize_grads, qr_dtype, work_shape = hyper
    first, refresh, scale = shared
    c = tree.compute_dtype(g.dtype)
    g_w = jnp.reshape(tree.as_dtype(g, c), work_shape)
    mu_c, nu_c = tree.as_dtype(mu, c), jnp.reshape(tree.as_dtype(nu, c), work_shape)

    # The moments are selected before the step reads them, so that a donated state
    # is updated in place (the first call's zero step reads the unchanged ones).
    new_mu = jnp.where(first, mu_c, b1 * mu_c + (1 - b1) * tree.as_dtype(g, c))
    new_nu = jnp.where(first, nu_c, b2 * nu_c + (1 - b2) * _rotate(g_w, bases) ** 2)
    rotated_mu = _rotate(jnp.reshape(new_mu, work_shape), bases)
    step = _rotate(rotated_mu / (jnp.sqrt(new_nu) + eps), bases, back=True)
    if normalize_grads:
        step = step / (1e-30 + jnp.sqrt(jnp.mean(step**2)))
    out = jnp.where(first, 0, jnp.reshape(step * scale, g.shape))

    others = lambda i: tuple(j for j in range(g_w.ndim) if j != i)  # noqa: E731
    new_stats = tuple(
        None
        if s is None
        else shampoo_beta * s + (1 - shampoo_beta) * jnp.tensordot(g_w, g_w, (others(i),) * 2)
        for i, s in enumerate(stats)
    )

    def by_eigh(nu_w):
        return tuple(None if s is None else _eigenbasis(s) for s in new_stats), nu_w

    def by_power_qr(nu_w):
        fresh = []
        for axis, (s, q) in enumerate(zip(new_stats, bases, strict=True)):
            if s is not None:
                q, nu_w = _power_qr(s, q, nu_w, axis, c if qr_dtype is None else qr_dtype)
            fresh.append(q)
        return tuple(fresh), nu_w

    def kept(nu_w):
        return bases, nu_w

    if any(s is not None for s in stats):  # a leaf without statistics is Adam: nothing to refresh
        branch = jnp.where(first, 0, jnp.where(refresh, 1, 2))
        new_bases, new_nu = lax.switch(branch, (by_eigh, by_power_qr, kept), new_nu)
    else:
        new_bases = bases
    return (
        tree.as_dtype(out, g.dtype),
        tree.as_dtype(new_mu, mu.dtype),
        tree.as_dtype(jnp.reshape(new_nu, nu.shape), nu.dtype),
        new_stats,
        new_bases,
    )


def check_soap_args(owner, b1, b2, eps, shampoo_beta, frequency, max_dim, qr_dtype):
    _checks.in_range(owner, "b1", b1, 0.0, 1.0)
    _checks.in_range(owner, "b2", b2, 0.0, 1.0)
    _checks.non_negative(owner, "eps", eps)
    _checks.in_range(owner, "shampoo_beta", shampoo_beta, 0.0, 1.0, optional=True)
    _checks.positive_int(owner, "precondition_frequency", frequency)
    _checks.positive_int(owner, "max_precond_dim", max_dim)
    _checks.dtype_or_none(owner, "qr_dtype", qr_dtype)


def scale_by_soap(
    b1: float = 0.95,
    b2: float = 0.95,
    shampoo_beta: float | None = None,
    eps: float = 1e-8,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    normalize_grads: bool = False,
    correct_bias: bool = True,
    *,
    qr_dtype: Any | None = None,
) -> GradientTransformation:
    """SOAP's scaling (Vyas et al. 2024, Alg. 3), as the authors' code runs it.

    For a leaf with statistics ``L_i`` and bases ``Q_i`` on its dimensions
    (``L, R`` and ``Q_L, Q_R`` of a matrix; ``rot(X)`` is ``Q_L^T X Q_R``,
    ``rot^{-1}(X)`` is ``Q_L X Q_R^T``), the ``t``-th step (``t >= 1``) is

    .. math::
        M_t = \\beta_1 M_{t-1} + (1-\\beta_1) G_t, \\quad
        V_t = \\beta_2 V_{t-1} + (1-\\beta_2)\\, \\mathrm{rot}(G_t)^{\\odot 2}, \\quad
        \\text{out} = \\frac{\\sqrt{1-\\beta_2^t}}{1-\\beta_1^t}\\,
            \\mathrm{rot}^{-1}\\!\\left(\\frac{\\mathrm{rot}(M_t)}{\\sqrt{V_t} + \\epsilon}\\right)

    and then ``L_t = beta_s L_{t-1} + (1 - beta_s) G_t G_t^T`` (per dimension:
    ``G_t`` contracted with itself over the other dimensions). Every ``f``
    steps (``t % f == 0``) each basis is refreshed from the new statistic:
    its columns sorted by ``diag(Q^T L Q)``, decreasing (``V`` permuted with
    them), then ``Q = qr(L Q)``. The first call has no basis yet: it only
    sets ``L_0 = (1 - beta_s) G_0 G_0^T`` and ``Q = eigh(L_0)`` (eigenvectors by
    decreasing eigenvalue) and returns zeros, as the authors' code does, so
    that a gradient is never rotated by a basis built from itself.

    Departures and choices: ``M`` is kept in the original basis (Alg. 3's
    form; the authors keep ``rot(M)`` and rotate it on each refresh, which is
    the same numbers up to rounding). ``eps`` is added outside the root and
    the bias correction multiplies the step, as in the authors' code. With
    ``normalize_grads`` the step is divided by ``1e-30 + rms(step)`` (the
    authors'; ``pytorch_optimizer.SOAP`` adds ``eps`` instead of ``1e-30``).
    Complex parameters are not supported.

    Args:
      b1: ``beta_1`` in [0, 1), the first moment's decay (authors' 0.95).
      b2: ``beta_2`` in [0, 1), the second moment's decay (authors' 0.95).
      shampoo_beta: ``beta_s`` in [0, 1), the decay of ``L_i``; ``None`` uses
        ``b2`` (the authors' ``-1``).
      eps: ``epsilon`` >= 0, added to ``sqrt(V)``.
      precondition_frequency: ``f``, an integer >= 1: steps between refreshes.
      max_precond_dim: an integer >= 1: a dimension above it gets no statistic
        (the identity basis).
      merge_dims: join adjacent dimensions of a leaf of rank >= 2 while their
        product stays at most ``max_precond_dim`` (the authors' option: a
        ``(64, 3, 3, 3)`` kernel then has one ``1728 x 1728`` statistic).
      precondition_1d: give vectors a statistic too (the authors' option; off:
        vectors and scalars take Adam).
      normalize_grads: divide each leaf's step by its root mean square.
      correct_bias: Adam's bias correction (default, the authors').
      qr_dtype: the dtype of the QR refresh; ``None`` (default) computes in
        the statistics' dtype. ``jnp.float32`` is what both the authors' code
        and ``pytorch_optimizer.SOAP`` do, whatever the parameters' dtype.

    Raises:
      ValueError: ``b1``, ``b2`` or ``shampoo_beta`` outside [0, 1), a negative
        ``eps``, ``precondition_frequency`` or ``max_precond_dim`` not an
        integer >= 1, or a ``qr_dtype`` that is not a floating dtype.
      TypeError: complex or integer params (at ``init``).

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.scale_by_soap()
      >>> state = tx.init(jnp.zeros((3, 2)))
      >>> [L.shape for L in state.stats]  # L (3 x 3) and R (2 x 2)
      [(3, 3), (2, 2)]

    References:
      Vyas, Morwani, Zhao, Kwun, Shapira, Brandfonbrener, Janson & Kakade
      (2024), SOAP: Improving and Stabilizing Shampoo using Adam, Alg. 3, and
      the authors' code (github.com/nikhilvyas/SOAP).
    """
    owner = "scale_by_soap"
    check_soap_args(
        owner, b1, b2, eps, shampoo_beta, precondition_frequency, max_precond_dim, qr_dtype
    )
    beta_s = b2 if shampoo_beta is None else shampoo_beta

    def dims(p):
        shape = _work_shape(jnp.shape(p), max_precond_dim, merge_dims)
        if jnp.ndim(p) == 1 and not precondition_1d:
            return shape, (None,)
        return shape, tuple(d if d <= max_precond_dim else None for d in shape)

    def init_leaf(p):
        if jnp.iscomplexobj(p):
            raise TypeError(
                f"{owner}: complex parameters are not supported (the eigenbases are real): "
                "split them into real and imaginary parts."
            )
        c = tree.compute_dtype(jnp.asarray(p).dtype)
        sides = dims(p)[1]
        factors = tuple(None if d is None else jnp.zeros((d, d), c) for d in sides)
        return sharding.place_statistics(p, factors, _factor_entries)

    def init_fn(params):
        tree.check_inexact(params, owner)
        stats = jax.tree.map(init_leaf, params)
        bases = jax.tree.map(init_leaf, params)
        return ScaleBySoapState(
            tree.zero_count(), tree.zeros_like(params), tree.zeros_like(params), stats, bases
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, owner=owner)
        count = tree.safe_increment(state.count)
        t = count - 1  # the Adam step: 0 on the first call, which takes none

        def leaf(g, mu, nu, stats, bases):
            c = tree.compute_dtype(g.dtype)
            scale = jnp.ones([], c)
            if correct_bias:
                t_safe = jnp.maximum(t, 1)
                scale = jnp.sqrt(tree.bias_correction_factor(b2, t_safe, c))
                scale = scale / tree.bias_correction_factor(b1, t_safe, c)
            shared = (t == 0, t % precondition_frequency == 0, scale)
            hyper = (b1, b2, eps, beta_s, normalize_grads, qr_dtype, dims(g)[0])
            return soap_leaf(g, mu, nu, stats, bases, shared, hyper)

        out, mu, nu, stats, bases = tree.map_unzip(
            leaf, 5, updates, state.mu, state.nu, state.stats, state.bases
        )
        return out, ScaleBySoapState(count, mu, nu, stats, bases)

    return GradientTransformation(init_fn, update_fn)


def soap(
    learning_rate: ScalarOrSchedule = 3e-3,
    b1: float = 0.95,
    b2: float = 0.95,
    shampoo_beta: float | None = None,
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    normalize_grads: bool = False,
    correct_bias: bool = True,
    *,
    qr_dtype: Any | None = None,
) -> GradientTransformation:
    """SOAP (Vyas et al. 2024, Alg. 3): Adam in Shampoo's eigenbasis, decoupled decay.

    .. math::
        \\theta_t = \\theta_{t-1} - \\alpha_t (u_t + \\lambda \\theta_{t-1})

    with ``u_t`` from :func:`scale_by_soap`. Composition:
    ``chain(scale_by_soap(...), add_decayed_weights(lambda), scale_by_learning_rate(alpha))``.
    Optax has no SOAP: the arguments are the authors' (``betas`` split into
    ``b1, b2``, ``lr`` named ``learning_rate``), with their defaults.

    Departures from the authors' code: the decay is applied on every call,
    the first included, and to the parameter before the step (AdamW's
    ``theta - alpha (u + lambda theta)``); the authors' code skips the first
    call entirely and decays after the step, ``(theta - alpha u)(1 - alpha lambda)``,
    which differs by ``alpha^2 lambda u`` per step.

    Args:
      learning_rate: ``alpha``, a number or a schedule (authors' 3e-3).
      weight_decay: ``lambda``, decoupled (authors' 0.01).
      b1, b2, shampoo_beta, eps: see :func:`scale_by_soap`.
      precondition_frequency, max_precond_dim, merge_dims: see :func:`scale_by_soap`.
      precondition_1d, normalize_grads, correct_bias, qr_dtype: see :func:`scale_by_soap`.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> tx = gradtx.soap(0.1, weight_decay=0.0)
      >>> params = jnp.ones((2, 2))
      >>> state = tx.init(params)
      >>> g = jnp.diag(jnp.array([2.0, 1.0]))
      >>> _, state = tx.update(g, state, params)  # sets L, R and their eigenbases
      >>> u, state = tx.update(g, state, params)  # Adam's first step: -alpha sign(g')
      >>> jnp.diag(u).round(3)
      Array([-0.1, -0.1], dtype=float32)

    References:
      Vyas et al. (2024), SOAP: Improving and Stabilizing Shampoo using Adam, Alg. 3.
    """
    _checks.learning_rate("soap", learning_rate)
    _checks.non_negative("soap", "weight_decay", weight_decay)
    return chain(
        scale_by_soap(
            b1,
            b2,
            shampoo_beta,
            eps,
            precondition_frequency,
            max_precond_dim,
            merge_dims,
            precondition_1d,
            normalize_grads,
            correct_bias,
            qr_dtype=qr_dtype,
        ),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(learning_rate),
    )
