"""Small linear-algebra routines under Optax's names.

The dominant eigenpair by power iteration, a matrix's inverse p-th root by the
coupled Newton iteration (what Shampoo-style preconditioners need), non-negative
least squares by fast projected gradient, and the diagonal Gaussian that Optax's
gradient estimators sample from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradtx import _checks, tree

__all__ = [
    "MultiNormalDiagFromLogScale",
    "matrix_inverse_pth_root",
    "multi_normal",
    "nnls",
    "power_iteration",
]


def _unit(v: Any) -> Any:
    return tree.scale(1.0 / tree.norm(v), v)


def power_iteration(
    matrix: Any | Callable[[Any], Any],
    *,
    v0: Any | None = None,
    num_iters: Any = 100,
    error_tolerance: Any = 1e-6,
    precision: lax.Precision = lax.Precision.HIGHEST,
    key: jax.Array | None = None,
) -> tuple[jax.Array, Any]:
    """The dominant eigenvalue and its eigenvector, by power iteration.

    From a unit start ``v_0``, repeat

    .. math::
        z_k = A v_k, \\qquad \\lambda_k = v_k^\\top z_k, \\qquad
        v_{k+1} = z_k / \\|z_k\\|

    until ``||z_k - lambda_k v_k|| / |lambda_k| < error_tolerance`` or
    ``num_iters`` products. ``v_k`` converges to the eigenvector of the
    eigenvalue of largest modulus (at the rate ``|lambda_2 / lambda_1|``) when that
    eigenvalue is unique and ``v_0`` is not orthogonal to it (Golub & Van Loan
    2013, Matrix Computations, Section 7.3.1).

    Args:
      matrix: a square ``(n, n)`` array, or a function ``v -> A v`` on pytrees.
      v0: the start (a vector, or a pytree for a function ``matrix``); ``None``:
        uniform in [-1, 1] from ``key`` (an array ``matrix`` only).
      num_iters: the most matrix-vector products.
      error_tolerance: the relative residual at which to stop.
      precision: the precision of the products ``A v`` (an array ``matrix``).
      key: the PRNG key for ``v0``; ``None``: ``jax.random.PRNGKey(0)``.

    Returns:
      ``(eigenvalue, eigenvector)``, the eigenvector of unit norm.

    Raises:
      ValueError: ``matrix`` is a function and ``v0`` is missing, or an array
        ``matrix`` is not square; ``num_iters`` or ``error_tolerance`` negative.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> value, vector = gradtx.power_iteration(jnp.array([[2.0, 0.0], [0.0, 5.0]]))
      >>> round(float(value), 4)
      5.0
    """
    owner = "power_iteration"
    _checks.non_negative(owner, "num_iters", num_iters)
    _checks.non_negative(owner, "error_tolerance", error_tolerance)
    if callable(matrix):
        product = matrix
        if v0 is None:
            raise ValueError(f"{owner}: v0 is required when matrix is a function.")
    else:
        matrix = jnp.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"{owner}: matrix must be square, got shape {matrix.shape}.")

        def product(v):
            return jnp.matmul(matrix, v, precision=precision)

        if v0 is None:
            key = jax.random.PRNGKey(0) if key is None else key
            v0 = jax.random.uniform(key, matrix.shape[-1:], matrix.dtype, -1.0, 1.0)
    v0 = _unit(v0)

    def keep_going(carry):
        v, z, value, k = carry
        residual = tree.norm(tree.sub(z, tree.scale(value, v)))
        return (jnp.abs(residual / value) >= error_tolerance) & (k < num_iters)

    def step(carry):
        _, z, _, k = carry
        v = _unit(z)
        z = product(v)
        return v, z, tree.vdot(v, z), k + 1

    z0 = product(v0)
    start = (v0, z0, jnp.zeros([], jnp.result_type(tree.vdot(v0, z0))), jnp.asarray(0))
    _, z, value, _ = lax.while_loop(keep_going, step, start)
    return value, _unit(z)


def _power(m: jax.Array, p: int, precision: Any) -> jax.Array:
    """``m^p`` for a positive integer ``p``, by repeated squaring."""
    result, base = None, m
    while p:
        if p & 1:
            result = base if result is None else jnp.matmul(result, base, precision=precision)
        p >>= 1
        if p:
            base = jnp.matmul(base, base, precision=precision)
    return result


def matrix_inverse_pth_root(
    matrix: Any,
    p: Any,
    num_iters: Any = 100,
    ridge_epsilon: Any = 1e-6,
    error_tolerance: Any = 1e-6,
    precision: lax.Precision = lax.Precision.HIGHEST,
) -> tuple[jax.Array, jax.Array]:
    """``(A + eps * lambda_max I)^(-1/p)`` of a symmetric PSD matrix, by coupled Newton.

    With ``A_eps = A + epsilon lambda_max(A) I`` (``epsilon`` = ``ridge_epsilon``,
    ``lambda_max`` by :func:`power_iteration`), ``z = (1 + p) / (2 ||A_eps||_F)``,
    ``M_0 = z A_eps`` and ``H_0 = z^{1/p} I``, the coupled Newton iteration
    (Higham 2008, Functions of Matrices, eq. 7.18; Guo & Higham 2006) is

    .. math::
        T_k = \\tfrac{1}{p}\\big((p + 1) I - M_k\\big), \\qquad
        H_{k+1} = H_k T_k, \\qquad M_{k+1} = T_k^{\\,p} M_k,

    with ``M_k -> I`` and ``H_k -> A_eps^{-1/p}``. It stops when
    ``max |M_k - I| <= error_tolerance``, after ``num_iters`` steps, or when the
    error grows past 1.2 times the last one (rounding has taken over), returning
    the ``H`` before that step. A 1x1 matrix is raised to ``-1/p`` directly.

    Args:
      matrix: a symmetric positive semi-definite ``(n, n)`` matrix.
      p: the root, a positive integer.
      num_iters: the most Newton steps.
      ridge_epsilon: the ridge, relative to the largest eigenvalue.
      error_tolerance: the bound on ``max |M - I|`` at which to stop.
      precision: the precision of the matrix products.

    Returns:
      ``(root, error)``: the inverse p-th root, in ``matrix``'s dtype, and the
      final ``max |M - I|``.

    Raises:
      ValueError: ``p`` not a positive integer; ``matrix`` not square;
        ``num_iters``, ``ridge_epsilon`` or ``error_tolerance`` negative.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> a = jnp.diag(jnp.array([4.0, 16.0]))
      >>> root, _ = gradtx.matrix_inverse_pth_root(a, 2, ridge_epsilon=0.0)
      >>> jnp.round(jnp.diag(root), 4)
      Array([0.5 , 0.25], dtype=float32)

    Note:
      ``p`` must be a concrete Python integer (it sets how many products a step
      takes); Optax accepts 1, 2, 4 and 8 only and silently computes a wrong
      power for other values (it rounds ``log2 p``); every positive integer
      works here.
    """
    owner = "matrix_inverse_pth_root"
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
        if isinstance(p, (float, np.floating)) and float(p).is_integer() and p >= 1:
            p = int(p)
        else:
            raise ValueError(f"{owner}: p must be a positive integer, got {p!r}.")
    p = int(p)
    _checks.non_negative(owner, "num_iters", num_iters)
    _checks.non_negative(owner, "ridge_epsilon", ridge_epsilon)
    _checks.non_negative(owner, "error_tolerance", error_tolerance)
    matrix = jnp.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{owner}: matrix must be square, got shape {matrix.shape}.")
    n = matrix.shape[0]
    c = tree.compute_dtype(matrix.dtype)
    a = matrix.astype(c)
    largest, _ = power_iteration(a, num_iters=100, error_tolerance=1e-6, precision=precision)
    ridge = ridge_epsilon * jnp.maximum(largest, 1e-16)
    if n == 1:
        return ((a + ridge) ** (-1.0 / p)).astype(matrix.dtype), jnp.zeros([], c)
    eye = jnp.eye(n, dtype=c)
    damped = a + ridge * eye
    z = (1 + p) / (2 * jnp.linalg.norm(damped))
    m0 = z * damped
    h0 = z ** (1.0 / p) * eye

    def keep_going(carry):
        k, _, _, _, error, improving = carry
        return (k < num_iters) & (error > error_tolerance) & improving

    def step(carry):
        k, m, h, _, error, _ = carry
        t = ((p + 1) * eye - m) / p
        new_m = jnp.matmul(_power(t, p, precision), m, precision=precision)
        new_h = jnp.matmul(h, t, precision=precision)
        new_error = jnp.max(jnp.abs(new_m - eye))
        return k + 1, new_m, new_h, h, new_error, new_error < 1.2 * error

    start = (0, m0, h0, h0, jnp.max(jnp.abs(m0 - eye)), jnp.asarray(True))
    _, m, h, previous, _, improving = lax.while_loop(keep_going, step, start)
    root = jnp.where(improving, h, previous)
    return root.astype(matrix.dtype), jnp.max(jnp.abs(m - eye))


def nnls(
    A: jax.Array,  # noqa: N803 (Optax's name)
    b: jax.Array,
    iters: int,
    unroll: int | bool = 1,
    L: Any | None = None,  # noqa: N803 (Optax's name)
) -> jax.Array:
    """Non-negative least squares, ``argmin_{x >= 0} ||A x - b||``, by fast projected gradient.

    With ``Q = A^T A``, ``q = A^T b`` and ``L`` >= the largest eigenvalue of
    ``Q`` (default: ``min(||Q||_F, ||Q||_1)``), from ``x_0 = y_0 = 0``, ``c_0 = 0``:

    .. math::
        x_{k+1} = \\max\\big(0,\\; y_k - (Q y_k - q) / L\\big), \\quad
        c_{k+1} = \\tfrac12\\big(1 + \\sqrt{1 + 4 c_k^2}\\big), \\quad
        y_{k+1} = x_{k+1} + \\frac{c_k - 1}{c_{k+1}} (x_{k+1} - x_k)

    (Polyak 2015, the fast projected gradient method: Nesterov's momentum on the
    projected gradient step), run for exactly ``iters`` steps.

    Args:
      A: the ``(M, N)`` matrix.
      b: an ``(M,)`` vector, or ``(M, K)`` for ``K`` right-hand sides.
      iters: the number of steps.
      unroll: passed to ``jax.lax.scan``.
      L: an upper bound on the largest eigenvalue of ``A^T A``.

    Returns:
      ``x`` >= 0, of shape ``(N,)`` or ``(N, K)``.

    Raises:
      ValueError: ``A`` not 2-D, ``b`` not 1-D or 2-D, or their first sizes
        differ; ``iters`` negative.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> x = gradtx.nnls(jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.array([5.0, 6.0]), 1000)
      >>> [round(float(v), 2) for v in x]
      [0.0, 1.7]

    References:
      Polyak (2015), Projected gradient method for non-negative least square,
      Contemporary Mathematics 636.
    """
    owner = "nnls"
    A, b = jnp.asarray(A), jnp.asarray(b)  # noqa: N806
    if A.ndim != 2 or b.ndim not in (1, 2) or b.shape[0] != A.shape[0]:
        raise ValueError(
            f"{owner}: A must be (M, N) and b (M,) or (M, K), got {A.shape} and {b.shape}."
        )
    if not isinstance(iters, (int, np.integer)) or iters < 0:
        raise ValueError(f"{owner}: iters must be an integer >= 0, got {iters!r}.")
    Q = A.mT @ A  # noqa: N806
    q = A.mT @ b
    if L is None:
        L = jnp.minimum(jnp.linalg.norm(Q, "fro"), jnp.linalg.norm(Q, 1) if Q.size else 0.0)  # noqa: N806
    L = jnp.where(L == 0, 1, L)  # noqa: N806

    def step(carry, _):
        x, y, c = carry
        x_next = jnp.maximum(y - (Q @ y - q) / L, 0)
        c_next = (1 + jnp.sqrt(1 + 4 * c**2)) / 2
        y_next = x_next + (c - 1) / c_next * (x_next - x)
        return (x_next, y_next, c_next), None

    x0 = jnp.zeros(A.shape[-1:] + b.shape[1:], jnp.result_type(A, b))
    (x, _, _), _ = lax.scan(step, (x0, x0, jnp.zeros([], x0.dtype)), length=iters, unroll=unroll)
    return x


class MultiNormalDiagFromLogScale:
    """A Gaussian with diagonal covariance, parametrised by its mean and log std.

    ``x ~ N(mu, diag(sigma^2))`` elementwise over the parameter shape (the
    broadcast of ``loc`` and ``log_scale``), ``sigma = exp(log_scale)``.
    """

    def __init__(self, loc: Any, log_scale: Any):
        self._mean = jnp.asarray(loc)
        self._log_scale = jnp.asarray(log_scale)
        self._scale = jnp.exp(self._log_scale)
        self._param_shape = jax.lax.broadcast_shapes(self._mean.shape, self._scale.shape)

    def sample(self, shape: Sequence[int], key: jax.Array) -> jax.Array:
        """``shape + param_shape`` draws ``mu + sigma * N(0, 1)``."""
        draws = jax.random.normal(key, tuple(shape) + self._param_shape)
        return draws * self._scale + self._mean

    def log_prob(self, x: Any) -> jax.Array:
        """``sum_i log N(x_i; mu_i, sigma_i^2)`` over the parameter axes."""
        z = (jnp.asarray(x) - self._mean) / self._scale
        per_element = -0.5 * z**2 - jnp.log(self._scale) - 0.5 * math.log(2 * math.pi)
        return jnp.sum(per_element, axis=tuple(range(-len(self._param_shape), 0)))

    @property
    def log_scale(self) -> jax.Array:
        """``log sigma``, as given."""
        return self._log_scale

    @property
    def params(self) -> list[jax.Array]:
        """``[loc, log_scale]``."""
        return [self._mean, self._log_scale]


def multi_normal(loc: Any, log_scale: Any) -> MultiNormalDiagFromLogScale:
    """The diagonal Gaussian ``N(loc, diag(exp(log_scale))^2)``, Optax's ``multi_normal``.

    .. math::
        \\log p(x) = \\sum_i \\Big(-\\tfrac12 \\big(\\tfrac{x_i - \\mu_i}{\\sigma_i}\\big)^2
            - \\log \\sigma_i - \\tfrac12 \\log 2\\pi\\Big), \\qquad
        \\sigma_i = e^{\\text{log\\_scale}_i}

    Args:
      loc: the mean ``mu``.
      log_scale: ``log sigma`` (broadcast against ``loc``).

    Returns:
      A :class:`MultiNormalDiagFromLogScale` with ``sample(shape, key)``,
      ``log_prob(x)``, ``log_scale`` and ``params``.

    Examples:
      >>> import gradtx, jax.numpy as jnp
      >>> dist = gradtx.multi_normal(jnp.zeros(2), jnp.zeros(2))
      >>> dist.log_prob(jnp.zeros(2))  # -log(2 pi)
      Array(-1.837877, dtype=float32)
    """
    return MultiNormalDiagFromLogScale(loc, log_scale)
