"""Penalties as transformations: closed forms, scikit-learn, references, Optax, masks.

* **L2** (seed 003): gradient descent with ``add_decayed_weights(alpha)`` on the
  quadratic ``J(w) = 1/2 (w - w*)^T H (w - w*)`` reaches the closed form
  ``w = (H + alpha I)^-1 H w*`` (Goodfellow et al. 2016, eq. 7.10), for the seed's
  own H and alpha = 2, whose shrinking matrix the seed prints.
* **L1** (seed 003): ISTA, ``chain(sgd(eta), proximal_l1(alpha, eta))``, on a
  diagonal quadratic reaches ``w_i = sign(w*_i) max(|w*_i| - alpha / H_ii, 0)``
  (eq. 7.22) with *exact* zeros; the subgradient of ``add_l1_penalty`` does not.
* **Elastic net**: the proximal gradient method with ``proximal_elastic_net`` in
  the seeds' parametrisation, mapped from scikit-learn's ``(alpha, l1_ratio)``,
  matches ``sklearn.linear_model.ElasticNet`` on the standardised diabetes data.
* Every block followed by (or following) SGD / Adam reproduces a float64 numpy
  loop (``tests/reference/regularize.py``: the penalties, ISTA, and Loshchilov &
  Hutter's Alg. 1 SGDW and Alg. 2 AdamW with a schedule multiplier) at each of 120
  steps, and the AdamW composition equals ``optax.adamw``.
* Masks (``exclude_bias_and_norm``), complex leaves, dtypes, validation.

Trajectory tolerances as in tests/test_reference_trajectories.py: ``max |gradtx -
ref| / (|ref| + 1)`` at most 1e-10 (float64) and 1e-5 (float32).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.transforms.regularize import (
    add_decayed_weights,
    add_elastic_net,
    add_l1_penalty,
    decoupled_weight_decay,
    exclude_bias_and_norm,
    proximal_elastic_net,
    proximal_l1,
)
from tests.reference import regularize as ref

EMPTY = gradtx.EmptyState()


def _descend(make_tx, grad_fn, w0, steps):
    """``steps`` jitted steps of ``make_tx()`` on ``grad_fn``, in the current x64 mode."""
    tx = make_tx()

    @jax.jit
    def run(w):
        def body(_, carry):
            w, state = carry
            updates, state = tx.update(grad_fn(w), state, w)
            return gradtx.apply_updates(w, updates), state

        return jax.lax.fori_loop(0, steps, body, (w, tx.init(w)))[0]

    return run(w0)


# ---------------------------------------------------------------- L2: the closed form

SEED_H = np.array([[2.0, -1.0, 0.0], [-1.0, 2.0, -1.0], [0.0, -1.0, 2.0]])


def test_the_seeds_shrinking_matrix():
    """Seed 003 prints ``Q (Lambda + 2 I)^-1 Lambda Q^T`` for its H to two decimals."""
    printed = [[0.46, -0.14, -0.04], [-0.14, 0.43, -0.14], [-0.04, -0.14, 0.46]]
    shrink = np.linalg.solve(SEED_H + 2 * np.eye(3), SEED_H)
    np.testing.assert_allclose(shrink, printed, atol=0.005)
    lam, q = np.linalg.eigh(SEED_H)  # the eigen-form: each direction by lam / (lam + alpha)
    np.testing.assert_allclose(q @ np.diag(lam / (lam + 2)) @ q.T, shrink, atol=1e-14)


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 2e-6)])
def test_l2_gradient_descent_reaches_the_closed_form(dtype, tol):
    alpha, w_star = 2.0, np.array([1.0, -2.0, 3.0])
    closed = np.linalg.solve(SEED_H + alpha * np.eye(3), SEED_H @ w_star)
    with jax.enable_x64(dtype == "float64"):
        h, target = jnp.asarray(SEED_H, dtype), jnp.asarray(w_star, dtype)
        # Contraction max |1 - 0.15 (lambda_i + alpha)| = 0.61 per step: 300 steps
        # are far past float64's resolution.
        w = _descend(
            lambda: gradtx.chain(add_decayed_weights(alpha), gradtx.sgd(0.15)),
            lambda w: h @ (w - target),
            jnp.zeros(3, dtype),
            300,
        )
        assert w.dtype == dtype
    np.testing.assert_allclose(np.asarray(w, np.float64), closed, rtol=0, atol=tol)
    # Not the unregularised answer: the penalty shrank it.
    assert np.max(np.abs(closed - w_star)) > 0.5


# ---------------------------------------------------------------- L1: soft-thresholding

L1_H = {"a": np.array([0.5, 1.0, 2.0, 4.0]), "b": np.array([[1.5, 3.0], [0.8, 2.5]])}
L1_STAR = {"a": np.array([1.0, -0.2, 0.1, 2.0]), "b": np.array([[-0.05, -1.0], [0.3, 0.0]])}
L1_ALPHA, L1_LR = 0.4, 0.2  # eta <= 1 / max H_ii; contraction <= 0.9 per step


def _l1_closed(mask=None):
    """Goodfellow et al. (2016) eq. 7.22: ``sign(w*) max(|w*| - alpha / H_ii, 0)``."""
    mask = mask or {"a": True, "b": True}
    return {
        k: np.sign(L1_STAR[k]) * np.maximum(np.abs(L1_STAR[k]) - L1_ALPHA / L1_H[k], 0)
        if mask[k]
        else L1_STAR[k]
        for k in L1_H
    }


def _l1_run(make_tx, dtype, steps=500):
    with jax.enable_x64(dtype == "float64"):
        h = {k: jnp.asarray(v, dtype) for k, v in L1_H.items()}
        star = {k: jnp.asarray(v, dtype) for k, v in L1_STAR.items()}
        w0 = {"a": jnp.full(4, 0.7, dtype), "b": jnp.full((2, 2), -0.6, dtype)}
        grad = lambda w: jax.tree.map(lambda hi, wi, si: hi * (wi - si), h, w, star)
        w = _descend(make_tx, grad, w0, steps)
        return jax.tree.map(lambda x: np.asarray(x, np.float64), w)


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-6)])
def test_ista_reaches_the_soft_threshold_closed_form_with_exact_zeros(dtype, tol):
    closed = _l1_closed()
    w = _l1_run(
        lambda: gradtx.chain(gradtx.sgd(L1_LR), proximal_l1(L1_ALPHA, learning_rate=L1_LR)),
        dtype,
    )
    for k in closed:
        zero = closed[k] == 0
        assert zero.sum() >= 2 if k == "b" else zero.sum() >= 2
        assert np.all(w[k][zero] == 0.0), f"{k}: not exactly zero: {w[k][zero]}"
        assert np.all(w[k][~zero] != 0.0)
        np.testing.assert_allclose(w[k], closed[k], rtol=0, atol=tol)


def test_ista_with_a_mask_leaves_the_unmasked_leaf_unpenalised():
    mask = {"a": True, "b": False}
    w = _l1_run(
        lambda: gradtx.chain(gradtx.sgd(L1_LR), proximal_l1(L1_ALPHA, L1_LR, mask=mask)),
        "float64",
    )
    closed = _l1_closed(mask)
    for k in closed:
        np.testing.assert_allclose(w[k], closed[k], rtol=0, atol=1e-12)


def test_subgradient_l1_hovers_around_zero_without_reaching_it():
    """The subgradient method never lands exactly on 0: the coordinates the closed
    form zeroes oscillate within ``eta (alpha + H_ii |w*_i|)`` of it instead."""
    closed = _l1_closed()
    w = _l1_run(
        lambda: gradtx.chain(add_l1_penalty(L1_ALPHA), gradtx.sgd(L1_LR)), "float64", steps=501
    )
    for k in closed:
        zero = closed[k] == 0
        assert np.all(w[k][zero] != 0.0)
        bound = L1_LR * (L1_ALPHA + L1_H[k] * np.abs(L1_STAR[k]))
        assert np.all(np.abs(w[k][zero]) <= bound[zero])
        np.testing.assert_allclose(w[k][~zero], closed[k][~zero], atol=1e-12)


# ---------------------------------------------------------------- elastic net vs scikit-learn


def _diabetes():
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x, y - y.mean()  # centred: the intercept is 0, so fit_intercept=False


def _sklearn_elastic_net(x, y, alpha, l1_ratio):
    from sklearn.linear_model import ElasticNet

    model = ElasticNet(
        alpha=alpha, l1_ratio=l1_ratio, fit_intercept=False, tol=1e-14, max_iter=1_000_000
    )
    return model.fit(x, y).coef_


def seed_parameters(alpha, l1_ratio):
    """scikit-learn's ``(alpha, l1_ratio)`` as the seeds' ``(lambda, alpha)``
    (the mapping documented in :func:`add_elastic_net`)."""
    return alpha * (1 + l1_ratio) / 2, (1 - l1_ratio) / (1 + l1_ratio)


SKLEARN_SETTINGS = [(1.0, 0.9), (2.0, 1.0), (0.5, 0.5), (0.05, 0.7)]
ISTA_STEPS = 20_000  # the last setting has condition number ~170


def elastic_net_by_ista(dtype, settings=SKLEARN_SETTINGS, l2_as_gradient=False):
    """Coefficients from the proximal gradient method for every setting.

    The loss is scikit-learn's ``1/(2n) ||y - X w||^2``; the step ``1 / L``. The
    hyperparameters are arguments of one jitted function (tracers inside), so
    the four settings share one compilation.
    """
    x, y = _diabetes()
    n = len(y)
    with jax.enable_x64(dtype == "float64"):
        xj, yj = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
        grad = lambda w: xj.T @ (xj @ w - yj) / n
        top = float(np.linalg.eigvalsh(x.T @ x / n)[-1])

        @jax.jit
        def solve(strength, mix, lr):
            if l2_as_gradient:  # L2 in the smooth part, L1 by its proximal map
                tx = gradtx.chain(
                    add_decayed_weights(2 * strength * mix),
                    gradtx.sgd(lr),
                    proximal_l1(strength * (1 - mix), lr),
                )
            else:
                tx = gradtx.chain(gradtx.sgd(lr), proximal_elastic_net(strength, mix, lr))

            def body(_, carry):
                w, state = carry
                updates, state = tx.update(grad(w), state, w)
                return gradtx.apply_updates(w, updates), state

            w0 = jnp.zeros(x.shape[1], dtype)
            return jax.lax.fori_loop(0, ISTA_STEPS, body, (w0, tx.init(w0)))[0]

        out = []
        for alpha, l1_ratio in settings:
            strength, mix = seed_parameters(alpha, l1_ratio)
            smooth = top + (2 * strength * mix if l2_as_gradient else 0.0)
            out.append(np.asarray(solve(strength, mix, 1.0 / smooth), np.float64))
        return out


def sklearn_coefficients(settings=SKLEARN_SETTINGS):
    x, y = _diabetes()
    return [_sklearn_elastic_net(x, y, a, r) for a, r in settings]


# The issue asks for 1e-4; measured <= 5e-12 in float64
# (tests/reference/report_regularize_clipping_noise.py). In float32 the gradient
# X^T (X w - y) / n rounds at ~1e-7 of |X^T y| / n ~ 40, and the ill-conditioned
# setting (condition ~170) amplifies that: measured up to 1.0e-4 on coefficients
# of size 0.2 to 26, hence 5e-4 there.
SKLEARN_TOL = {"float64": 1e-4, "float32": 5e-4}


@pytest.mark.parametrize("l2_as_gradient", [False, True], ids=["prox-elastic", "prox-l1"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_elastic_net_matches_scikit_learn(dtype, l2_as_gradient):
    ours = elastic_net_by_ista(dtype, l2_as_gradient=l2_as_gradient)
    for (alpha, l1_ratio), w, want in zip(
        SKLEARN_SETTINGS, ours, sklearn_coefficients(), strict=True
    ):
        np.testing.assert_allclose(w, want, rtol=0, atol=SKLEARN_TOL[dtype])
        # The same exact zeros as coordinate descent (in float64 at least).
        if dtype == "float64":
            np.testing.assert_array_equal(w == 0, want == 0, err_msg=f"{alpha}, {l1_ratio}")
    assert sum(int(np.sum(w == 0)) for w in ours) >= 3  # some settings are sparse


def test_the_parametrisations_agree_on_the_penalty():
    """``lambda (alpha |w|^2 + (1 - alpha) |w|_1)`` with the mapped values is
    scikit-learn's ``a r |w|_1 + a (1 - r) / 2 |w|^2`` for every w."""
    rng = np.random.default_rng(0)
    for a, r in [*SKLEARN_SETTINGS, (3.0, 0.0)]:
        lam, mix = seed_parameters(a, r)
        for _ in range(3):
            w = rng.normal(size=5)
            seed_form = lam * (mix * np.sum(w**2) + (1 - mix) * np.sum(np.abs(w)))
            sklearn_form = a * r * np.sum(np.abs(w)) + a * (1 - r) / 2 * np.sum(w**2)
            np.testing.assert_allclose(seed_form, sklearn_form, rtol=1e-14)


# ---------------------------------------------------------------- the penalties' maps


def test_add_elastic_net_is_the_gradient_of_the_seed_penalty():
    w = {"a": jnp.asarray([0.5, -1.5, 2.0]), "b": jnp.asarray([[-0.3]])}
    zeros = jax.tree.map(jnp.zeros_like, w)
    for lam, alpha in [(0.3, 0.0), (0.3, 0.25), (1.2, 1.0)]:
        penalty = lambda w, lam=lam, alpha=alpha: (
            lam
            * sum(
                alpha * jnp.sum(x**2) + (1 - alpha) * jnp.sum(jnp.abs(x))
                for x in jax.tree.leaves(w)
            )
        )
        got, _ = add_elastic_net(lam, alpha).update(zeros, EMPTY, w)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, jax.grad(penalty)(w)
        )
    # The two ends: the lasso and (unhalved) ridge.
    l1, _ = add_l1_penalty(0.3).update(zeros, EMPTY, w)
    jax.tree.map(
        np.testing.assert_array_equal, add_elastic_net(0.3, 0.0).update(zeros, EMPTY, w)[0], l1
    )
    l2, _ = add_decayed_weights(2 * 0.3).update(zeros, EMPTY, w)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
        add_elastic_net(0.3, 1.0).update(zeros, EMPTY, w)[0],
        l2,
    )
    # The subgradient at 0 is 0.
    at_zero, _ = add_l1_penalty(0.3).update(jnp.zeros(2), EMPTY, jnp.zeros(2))
    np.testing.assert_array_equal(at_zero, 0.0)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_proximal_map_satisfies_its_optimality_condition(alpha):
    """``x = prox(v)`` minimises ``|x - v|^2 / (2 t) + lam (alpha x^2 + (1 - alpha)|x|)``:
    ``(x - v)/t + lam (2 alpha x + (1 - alpha) sign x) = 0`` where ``x != 0``,
    ``|v| / t <= lam (1 - alpha)`` where ``x = 0``. Checked in float64."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        v = jnp.asarray(rng.normal(size=200) * 2)
        lam, t = 0.7, 0.6
        tx = proximal_elastic_net(lam, alpha, learning_rate=t)
        # The step lands on v from w = 0.3: the block sees w and u = v - w.
        w = jnp.full(200, 0.3)
        x = np.asarray(w + tx.update(v - w, tx.init(w), w)[0])
        v = np.asarray(v)
        zero = x == 0
        assert 0 < zero.sum() < 200 or alpha == 1.0
        residual = (x - v) / t + lam * (2 * alpha * x + (1 - alpha) * np.sign(x))
        np.testing.assert_allclose(residual[~zero], 0, atol=1e-13)
        assert np.all(np.abs(v[zero]) / t <= lam * (1 - alpha) + 1e-15)
        if alpha == 0.0:  # proximal_l1 is the same map
            l1 = proximal_l1(lam, learning_rate=t)
            np.testing.assert_array_equal(w + l1.update(v - w, EMPTY, w)[0], x)


def test_proximal_step_gives_exact_zeros_in_every_real_dtype():
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        w = jnp.asarray([1.0, 0.1, -0.2, -3.0], dtype)
        tx = gradtx.chain(gradtx.sgd(0.5), proximal_l1(0.5, learning_rate=0.5))
        updates, _ = tx.update(jnp.asarray([0.1, 0.1, -0.1, 0.0], dtype), tx.init(w), w)
        assert updates.dtype == dtype
        new = gradtx.apply_updates(w, updates)
        np.testing.assert_array_equal(np.asarray(new, np.float32)[1:3], 0.0)
        assert bool(jnp.all(new[jnp.asarray([0, 3])] != 0))


# ---------------------------------------------------------------- trajectories

NUM_STEPS = 120
RTOL = {"float64": 1e-10, "float32": 1e-5}
SHAPES = {"layer": {"b": (5,), "w": (3, 4)}, "temperature": ()}
TREEDEF = jax.tree.structure(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
LEAF_SHAPES = jax.tree.leaves(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
MASK = {"layer": {"b": False, "w": True}, "temperature": True}
MASK_LEAVES = jax.tree.leaves(MASK)


def _make_data(seed=2019):
    rng = np.random.default_rng(seed)
    theta0 = [rng.normal(size=s).astype(np.float32).astype(np.float64) for s in LEAF_SHAPES]
    grads = [
        (rng.normal(size=(NUM_STEPS, *s)) * scale).astype(np.float32).astype(np.float64)
        for s, scale in zip(LEAF_SHAPES, (0.5, 1.0, 0.3), strict=True)
    ]
    return theta0, grads


THETA0, GRADS = _make_data()
GRADS_BY_STEP = [[g[k] for g in GRADS] for k in range(NUM_STEPS)]


def eta(k):
    """A schedule multiplier (Loshchilov & Hutter's eta_t): cosine from 1 to 0.1.

    numpy for the references' Python ints, jnp for gradtx's int32 count (written
    ``k * (pi / N)``: an int32 array divided by an int is float32 even with x64).
    """
    cos = np.cos if isinstance(k, (int, np.integer)) else jnp.cos
    return 0.1 + 0.45 * (1 + cos(k * (np.pi / NUM_STEPS)))


def lr_schedule(k):
    return 0.08 / (1 + 0.02 * k)


def _as_numpy_rate(schedule):
    return lambda k: float(schedule(k))


def gradtx_trajectory(tx, dtype):
    """``tx`` (a full optimizer) on the recorded gradients in one jitted scan."""
    with jax.enable_x64(dtype == "float64"):
        params = jax.tree.unflatten(TREEDEF, [jnp.asarray(t, dtype) for t in THETA0])
        gs = jax.tree.unflatten(TREEDEF, [jnp.asarray(g, dtype) for g in GRADS])

        @jax.jit
        def run(params, gs):
            def body(carry, g):
                p, state = carry
                updates, state = tx.update(g, state, p)
                p = gradtx.apply_updates(p, updates)
                return (p, state), p

            return jax.lax.scan(body, (params, tx.init(params)), gs)[1]

        path = jax.tree.leaves(run(params, gs))
        return [
            np.concatenate([np.asarray(t, np.float64)[None], np.asarray(p, np.float64)])
            for t, p in zip(THETA0, path, strict=True)
        ]


def deviation(got, want):
    return max(
        float(np.max(np.abs(g - w) / (np.abs(w) + 1))) for g, w in zip(got, want, strict=True)
    )


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    method: str
    reference: str
    make: Callable[[], gradtx.GradientTransformation]
    run_reference: Callable[[], list]


LH = "Loshchilov & Hutter 2019"
CASES = [
    Case(
        "l1-subgradient-schedule",
        "add_l1_penalty",
        "subgradient SGD (eq. 7.20)",
        lambda: gradtx.chain(
            add_l1_penalty(lambda k: 0.2 / (1 + 0.01 * k), MASK), gradtx.sgd(0.05)
        ),
        lambda: ref.elastic_net_sgd(
            THETA0, GRADS_BY_STEP, 0.05, lambda k: 0.2 / (1 + 0.01 * k), 0.0, masks=MASK_LEAVES
        ),
    ),
    Case(
        "elastic-net-subgradient",
        "add_elastic_net",
        "subgradient SGD, seeds' penalty",
        lambda: gradtx.chain(add_elastic_net(0.3, 0.4, MASK), gradtx.sgd(lr_schedule)),
        lambda: ref.elastic_net_sgd(
            THETA0, GRADS_BY_STEP, _as_numpy_rate(lr_schedule), 0.3, 0.4, masks=MASK_LEAVES
        ),
    ),
    Case(
        "ista-schedule",
        "proximal_l1",
        "ISTA",
        lambda: gradtx.chain(gradtx.sgd(lr_schedule), proximal_l1(1.5, lr_schedule, MASK)),
        lambda: ref.proximal_gradient(
            THETA0, GRADS_BY_STEP, _as_numpy_rate(lr_schedule), 1.5, 0.0, masks=MASK_LEAVES
        ),
    ),
    Case(
        "prox-elastic-net",
        "proximal_elastic_net",
        "proximal gradient, seeds' penalty",
        lambda: gradtx.chain(gradtx.sgd(0.06), proximal_elastic_net(2.0, 0.3, 0.06, MASK)),
        lambda: ref.proximal_gradient(THETA0, GRADS_BY_STEP, 0.06, 2.0, 0.3, masks=MASK_LEAVES),
    ),
    Case(
        "sgdw",
        "decoupled_weight_decay",
        LH + " Alg. 1 (SGDW)",
        lambda: gradtx.chain(
            gradtx.sgd(lambda k: 0.05 * eta(k), 0.9, learning_rate_in_velocity=True),
            decoupled_weight_decay(0.05, learning_rate=eta, mask=MASK),
        ),
        lambda: ref.sgdw(
            THETA0, GRADS_BY_STEP, 0.05, 0.9, 0.05, _as_numpy_rate(eta), masks=MASK_LEAVES
        ),
    ),
    Case(
        "adamw-paper",
        "decoupled_weight_decay",
        LH + " Alg. 2 (AdamW)",
        lambda: gradtx.chain(
            gradtx.scale_by_adam(0.9, 0.999, 1e-8),
            gradtx.scale_by_learning_rate(lambda k: 0.02 * eta(k)),
            decoupled_weight_decay(0.1, learning_rate=eta, mask=MASK),
        ),
        lambda: ref.adamw(
            THETA0,
            GRADS_BY_STEP,
            0.02,
            0.9,
            0.999,
            1e-8,
            0.1,
            _as_numpy_rate(eta),
            masks=MASK_LEAVES,
        ),
    ),
    Case(
        "decay-per-step",
        "decoupled_weight_decay",
        "decay not scaled by the rate",
        lambda: gradtx.chain(gradtx.sgd(0.05), decoupled_weight_decay(0.01)),
        lambda: ref.sgd_decay_per_step(THETA0, GRADS_BY_STEP, 0.05, 0.01),
    ),
]
RUNS = [(c, d) for c in CASES for d in ("float64", "float32")]


def case_deviation(case, dtype):
    return deviation(gradtx_trajectory(case.make(), dtype), case.run_reference())


@pytest.mark.parametrize("case, dtype", RUNS, ids=[f"{c.id}-{d}" for c, d in RUNS])
def test_trajectory_matches_reference(case, dtype):
    want = case.run_reference()
    assert max(float(np.max(np.abs(w[-1] - w[0]))) for w in want) > 0.05
    worst = deviation(gradtx_trajectory(case.make(), dtype), want)
    assert worst <= RTOL[dtype], f"{case.id} [{dtype}]: deviation {worst:.3e}"


def test_the_penalties_change_the_trajectories():
    """The tolerances above could not pass a run that dropped the penalty or its mask."""
    plain = ref.elastic_net_sgd(THETA0, GRADS_BY_STEP, 0.05, 0.0, 0.0)
    unmasked = ref.proximal_gradient(THETA0, GRADS_BY_STEP, 0.06, 2.0, 0.3)
    for case in CASES:
        assert deviation(plain, case.run_reference()) > 1e3 * RTOL["float32"], case.id
    assert deviation(unmasked, CASES[3].run_reference()) > 1e3 * RTOL["float32"]
    # SGDW with step 1 * eta, eta = 0.05, decay eta * 0.2 = 0.01: a constant rate
    # makes "scaled by the rate" and "per step" the same thing.
    scaled = ref.sgdw(THETA0, GRADS_BY_STEP, 1.0, 0.0, 0.2, 0.05)
    per_step = CASES[-1].run_reference()
    for a, b in zip(scaled, per_step, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


# ---------------------------------------------------------------- Optax

OPTAX_TOL = {"float32": dict(rtol=1e-6, atol=5e-7), "float64": dict(rtol=1e-12, atol=1e-13)}


def _decoupled_adamw(lr, wd, mask):
    return gradtx.chain(
        gradtx.scale_by_adam(),
        gradtx.scale_by_learning_rate(lr),
        decoupled_weight_decay(wd, learning_rate=lr, mask=mask),
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("lr", [0.02, lr_schedule], ids=["constant", "schedule"])
def test_decoupled_decay_after_adam_is_optax_adamw(dtype, lr):
    ours = gradtx_trajectory(_decoupled_adamw(lr, 0.1, MASK), dtype)
    theirs = gradtx_trajectory(optax.adamw(lr, weight_decay=0.1, mask=MASK), dtype)
    composed = gradtx_trajectory(gradtx.adamw(lr, weight_decay=0.1, mask=MASK), dtype)
    for a, b, c in zip(ours, theirs, composed, strict=True):
        np.testing.assert_allclose(a, b, **OPTAX_TOL[dtype])
        np.testing.assert_allclose(a, c, **OPTAX_TOL[dtype])


def test_decay_not_scaled_by_the_rate_differs_from_optax_adamw():
    """``learning_rate=None``: the decay per step is lambda itself, whatever the rate."""
    ours = gradtx_trajectory(
        gradtx.chain(
            gradtx.scale_by_adam(),
            gradtx.scale_by_learning_rate(lr_schedule),
            decoupled_weight_decay(0.1 * 0.08, mask=MASK),  # lr_0 * lambda, then held
        ),
        "float64",
    )
    theirs = gradtx_trajectory(optax.adamw(lr_schedule, weight_decay=0.1, mask=MASK), "float64")
    assert deviation(ours, theirs) > 1e-3


# ---------------------------------------------------------------- masks


def test_exclude_bias_and_norm_on_the_usual_layouts():
    params = {
        "Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
        "LayerNorm_0": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
        "Conv_0": {"kernel": jnp.ones((3, 3, 2, 4))},
        "embed": {"embedding": jnp.ones((10, 4))},
        # Layers stacked by scan/vmap: biases and norm scales become 2-D.
        "layers": {
            "mlp": {"kernel": jnp.ones((2, 4, 4)), "bias": jnp.ones((2, 4))},
            "ln_1": {"scale": jnp.ones((2, 4))},
            "RMSNorm": {"weight": jnp.ones((2, 4))},
            "bn1": {"mean_like": jnp.ones((2, 4))},
        },
        # Haiku's names: linear/~/w and b, layer_norm scale and offset.
        "linear": {"w": jnp.ones((4, 2)), "b": jnp.ones((1, 2))},
        "temperature": jnp.ones(()),
        "unused": None,
        "blocks": [jnp.ones((2, 2)), jnp.ones(2)],
    }
    assert exclude_bias_and_norm(params) == {
        "Dense_0": {"kernel": True, "bias": False},
        "LayerNorm_0": {"scale": False, "bias": False},
        "Conv_0": {"kernel": True},
        "embed": {"embedding": True},
        "layers": {
            "mlp": {"kernel": True, "bias": False},
            "ln_1": {"scale": False},
            "RMSNorm": {"weight": False},
            "bn1": {"mean_like": False},
        },
        "linear": {"w": True, "b": False},
        "temperature": False,
        "unused": None,
        "blocks": [True, False],
    }


def test_exclude_bias_and_norm_drives_a_flax_nnx_optimizer():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(3, 4, rngs=rngs)
            self.norm = nnx.LayerNorm(4, rngs=rngs)

        def __call__(self, x):
            return self.norm(self.dense(x))

    model = Model(nnx.Rngs(0))
    tx = gradtx.chain(add_l1_penalty(0.5, mask=exclude_bias_and_norm), gradtx.sgd(0.1))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    before = nnx.state(model, nnx.Param)
    kernel, bias = (
        np.asarray(before["dense"]["kernel"][...]),
        np.asarray(before["dense"]["bias"][...]),
    )
    zero_grads = jax.tree.map(jnp.zeros_like, before)
    optimizer.update(model, zero_grads)
    # Only the kernel felt the penalty: -0.1 * 0.5 * sign(w).
    np.testing.assert_allclose(model.dense.kernel[...], kernel - 0.05 * np.sign(kernel), rtol=1e-6)
    np.testing.assert_array_equal(model.dense.bias[...], bias)
    np.testing.assert_array_equal(model.norm.scale[...], np.ones(4))


BLOCKS = {
    "add_l1_penalty": lambda mask: add_l1_penalty(0.3, mask),
    "add_elastic_net": lambda mask: add_elastic_net(0.3, 0.5, mask),
    "proximal_l1": lambda mask: proximal_l1(0.3, 0.5, mask),
    "proximal_elastic_net": lambda mask: proximal_elastic_net(0.3, 0.5, 0.5, mask),
    "decoupled_weight_decay": lambda mask: decoupled_weight_decay(0.3, 0.5, mask),
    "decoupled_weight_decay_unscaled": lambda mask: decoupled_weight_decay(0.3, None, mask),
}


def _small_tree(dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 2)), dtype),
        "b": jnp.asarray(rng.normal(size=2), dtype),
        "s": jnp.asarray(rng.normal(), dtype),
    }


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_masked_leaves_pass_untouched_and_a_mask_function_works(name):
    params, g = _small_tree(), _small_tree(seed=1)
    mask = {"w": True, "b": False, "s": False}
    out, _ = BLOCKS[name](mask).update(g, EMPTY, params)
    np.testing.assert_array_equal(out["b"], g["b"])
    np.testing.assert_array_equal(out["s"], g["s"])
    assert not np.allclose(out["w"], g["w"])
    by_function, _ = BLOCKS[name](exclude_bias_and_norm).update(g, EMPTY, params)
    jax.tree.map(np.testing.assert_array_equal, by_function, out)
    everything, _ = BLOCKS[name](None).update(g, EMPTY, params)
    assert not np.allclose(everything["b"], g["b"])


# ---------------------------------------------------------------- complex, dtypes, contract


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_complex_leaves_are_the_real_run_rotated(name):
    """sign(w) = w/|w| and the proximal maps shrink moduli: a common phase on params
    and updates turns the output by the same phase."""
    phase = np.exp(1.1j)
    rotate = lambda t: jax.tree.map(lambda x: (x * phase).astype(jnp.complex64), t)
    params, g = _small_tree(), _small_tree(seed=1)
    real, _ = BLOCKS[name](None).update(g, EMPTY, params)
    turned, _ = BLOCKS[name](None).update(rotate(g), EMPTY, rotate(params))
    assert all(x.dtype == jnp.complex64 for x in jax.tree.leaves(turned))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), turned, rotate(real)
    )


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_low_precision_updates_keep_their_dtype_and_need_params(name):
    tx = BLOCKS[name](None)
    params = _small_tree()
    g16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _small_tree(seed=1))
    out, _ = jax.jit(tx.update)(g16, tx.init(params), params)
    expected, _ = tx.update(jax.tree.map(lambda x: x.astype(jnp.float32), g16), EMPTY, params)
    for u, e in zip(jax.tree.leaves(out), jax.tree.leaves(expected), strict=True):
        assert u.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(u, np.float32), e, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="params"):
        tx.update(g16, tx.init(params))
    with pytest.raises(ValueError, match="tree structure"):
        tx.update({"other": jnp.ones(2)}, tx.init(params), params)


def test_schedules_add_a_count_and_constants_keep_no_state():
    assert add_l1_penalty(0.1).init(jnp.ones(2)) == EMPTY
    tx = proximal_l1(0.5, learning_rate=lambda k: 1.0 / (1 + k))
    state = tx.init(jnp.ones(3))
    w = jnp.asarray([1.0, 0.2, -2.0])
    out1, state = tx.update(jnp.zeros(3), state, w)  # threshold 0.5
    out2, state = tx.update(jnp.zeros(3), state, w)  # threshold 0.25
    np.testing.assert_allclose(w + out1, [0.5, 0.0, -1.5])
    np.testing.assert_allclose(w + out2, [0.75, 0.0, -1.75])
    assert int(state.count) == 2


def test_vmap_over_a_traced_strength_equals_separate_runs():
    params, g = _small_tree(), _small_tree(seed=2)
    strengths = jnp.asarray([0.0, 0.1, 0.7])
    for make in [
        lambda s: add_l1_penalty(s),
        lambda s: proximal_elastic_net(s, 0.4, 0.3),
        lambda s: decoupled_weight_decay(s, learning_rate=0.3),
    ]:
        batched = jax.vmap(lambda s, make=make: make(s).update(g, EMPTY, params)[0])(strengths)
        for i, s in enumerate([0.0, 0.1, 0.7]):
            separate = make(s).update(g, EMPTY, params)[0]
            jax.tree.map(
                lambda b, x, i=i: np.testing.assert_allclose(
                    b[i], x, rtol=1e-6, atol=1e-7, err_msg=str(strengths)
                ),
                batched,
                separate,
            )


BAD = [
    (
        add_l1_penalty,
        dict(l1_strength=-0.1),
        r"add_l1_penalty: l1_strength must be a finite number >= 0, got -0\.1",
    ),
    (add_l1_penalty, dict(l1_strength=np.nan), r"l1_strength must be .*got nan"),
    (add_elastic_net, dict(strength=-1.0), r"add_elastic_net: strength must be .*got -1\.0"),
    (add_elastic_net, dict(strength=0.1, alpha=1.5), r"alpha must be in \[0, 1\], got 1\.5"),
    (add_elastic_net, dict(strength=0.1, alpha=-0.1), r"alpha must be in \[0, 1\], got -0\.1"),
    (proximal_l1, dict(l1_strength=-1.0), r"proximal_l1: l1_strength must be .*got -1\.0"),
    (proximal_l1, dict(l1_strength=0.1, learning_rate=-0.1), r"learning_rate must be .*got -0\.1"),
    (proximal_l1, dict(l1_strength=0.1, learning_rate=None), r"learning_rate must be .*got None"),
    (proximal_elastic_net, dict(strength=0.1, alpha=2.0), r"alpha must be in \[0, 1\], got 2\.0"),
    (proximal_elastic_net, dict(strength=np.inf), r"strength must be .*got inf"),
    (proximal_elastic_net, dict(strength=0.1, learning_rate=np.nan), r"learning_rate .*got nan"),
    (decoupled_weight_decay, dict(weight_decay=-1e-4), r"weight_decay must be .*got -0\.0001"),
    (
        decoupled_weight_decay,
        dict(weight_decay=1e-4, learning_rate=np.inf),
        r"learning_rate must be finite",
    ),
]


@pytest.mark.parametrize(
    "factory, kwargs, message", BAD, ids=[f"{f.__name__}-{sorted(k.items())}" for f, k, _ in BAD]
)
def test_bad_hyperparameters_are_refused_at_construction(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)
