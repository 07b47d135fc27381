"""gradtx.projections: against optax.projections, float64 references and optimality.

Three kinds of check for every projection:

* parity with ``optax.projections`` on several pytrees (nested dicts and lists
  with ``None``, one array, 0-d leaves, float64);
* a float64 numpy reference written independently of either library: the
  simplex and l1-ball thresholds found by bisection (not by sorting), closed
  forms for the others, and ``scipy.optimize`` on small cases;
* optimality: the result lies in the set, and no point of the set sampled at
  random is closer to the input.

Deliberate differences from Optax (scalar bounds on a tree, the sign of a zero
element on the l1 sphere, the zero input of the l2 sphere and of the radius-0
ball) have their own tests.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import gradtx
from gradtx import projections as P

# float32 projections against float64 references: the inputs are of order 1 to 3,
# and the simplex threshold is a sum of up to 15 of them divided by a count, a few
# ulps of float32. Against Optax (the same formulas in float32): a few ulps too.
TOL = {"float32": 2e-6, "float64": 1e-12}


def _tree(seed: int, dtype: Any = jnp.float32, spread: float = 1.5) -> Any:
    rng = np.random.default_rng(seed)
    return {
        "a": jnp.asarray(spread * rng.normal(size=(2, 3)), dtype),
        "b": [jnp.asarray(spread * rng.normal(), dtype), None],
        "c": {"d": jnp.asarray(spread * rng.normal(size=4), dtype), "e": None},
    }


def _array(seed: int, dtype: Any = jnp.float32, n: int = 7) -> jax.Array:
    return jnp.asarray(1.5 * np.random.default_rng(seed).normal(size=n), dtype)


def _scalars(seed: int, dtype: Any = jnp.float32) -> Any:
    rng = np.random.default_rng(seed)
    return {"s": jnp.asarray(rng.normal(), dtype), "t": [jnp.asarray(rng.normal(), dtype)]}


TREES = {"nested": _tree, "array": _array, "scalars": _scalars}


def flat64(t: Any) -> np.ndarray:
    leaves = [np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(t)]
    return np.concatenate(leaves) if leaves else np.zeros(0)


def assert_close(got: Any, expected: Any, tol: float) -> None:
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert jnp.asarray(g).dtype == jnp.asarray(e).dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=tol, atol=tol)


# ---------------------------------------------------------------------- float64 references


def simplex_reference(x: np.ndarray, s: float) -> np.ndarray:
    """argmin ||x - p|| s.t. p >= 0, sum p = s: bisection on the multiplier tau.

    sum(max(x - tau, 0)) decreases from >= s at tau = min(x) - s to 0 at max(x).
    """
    lo, hi = x.min() - s, x.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.maximum(x - mid, 0).sum() > s:
            lo = mid
        else:
            hi = mid
    return np.maximum(x - 0.5 * (lo + hi), 0)


def l1_ball_reference(x: np.ndarray, s: float) -> np.ndarray:
    if np.abs(x).sum() <= s:
        return x
    return np.sign(x) * simplex_reference(np.abs(x), s)


def l2_ball_reference(x: np.ndarray, s: float) -> np.ndarray:
    n = np.linalg.norm(x)
    return x if n <= s else x * (s / n)


REFERENCES = {
    "projection_non_negative": (lambda x: np.maximum(x, 0), {}),
    "projection_hypercube": (lambda x: np.clip(x, 0, 0.8), {"scale": 0.8}),
    "projection_linf_ball": (lambda x: np.clip(x, -0.7, 0.7), {"scale": 0.7}),
    "projection_simplex": (lambda x: simplex_reference(x, 2.0), {"scale": 2.0}),
    "projection_simplex_unit": (lambda x: simplex_reference(x, 1.0), {}),
    "projection_l1_sphere": (
        lambda x: np.sign(x) * simplex_reference(np.abs(x), 1.5),
        {"scale": 1.5},
    ),
    "projection_l1_ball": (lambda x: l1_ball_reference(x, 1.5), {"scale": 1.5}),
    "projection_l2_sphere": (lambda x: 2.0 * x / np.linalg.norm(x), {"scale": 2.0}),
    "projection_l2_ball": (lambda x: l2_ball_reference(x, 2.0), {"scale": 2.0}),
}


def _function(name: str):
    return getattr(P, name.removesuffix("_unit"))


def _optax(name: str):
    return getattr(optax.projections, name.removesuffix("_unit"))


def _unravel_like(flat: np.ndarray, like: Any) -> Any:
    leaves, treedef = jax.tree.flatten(like)
    out, start = [], 0
    for x in leaves:
        size = int(np.size(x))
        out.append(jnp.asarray(flat[start : start + size].reshape(np.shape(x)), x.dtype))
        start += size
    return jax.tree.unflatten(treedef, out)


# ---------------------------------------------------------------------- the catalogue


def test_every_function_of_optax_projections_is_here_with_its_signature():
    import inspect

    names = sorted(n for n in dir(optax.projections) if not n.startswith("_"))
    assert names == sorted(n for n in vars(P) if n.startswith("projection_"))
    for name in names:
        ours = inspect.signature(getattr(P, name)).parameters
        theirs = inspect.signature(getattr(optax.projections, name)).parameters
        assert [(p.name, p.kind, p.default) for p in ours.values()] == [
            (p.name, p.kind, p.default) for p in theirs.values()
        ], name
    assert gradtx.projections is P


# ---------------------------------------------------------------------- references and Optax


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("kind", sorted(TREES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_the_float64_reference_and_optax(name, kind, dtype):
    reference, kwargs = REFERENCES[name]
    with jax.enable_x64(dtype == "float64"):
        for seed in range(3):
            x = TREES[kind](seed, jnp.dtype(dtype))
            got = _function(name)(x, **kwargs)
            expected = _unravel_like(reference(flat64(x)), x)
            assert_close(got, expected, 4 * TOL[dtype])
            if name in ("projection_hypercube", "projection_linf_ball") and kind != "array":
                continue  # Optax's box with scalar bounds takes one array only
            assert_close(got, _optax(name)(x, **kwargs), 4 * TOL[dtype])


@pytest.mark.parametrize("kind", sorted(TREES))
def test_box_with_tree_bounds_matches_optax_and_numpy(kind):
    x = TREES[kind](5)
    lower = jax.tree.map(lambda v: jnp.full_like(v, -0.5), x)
    upper = jax.tree.map(lambda v: jnp.abs(v) / 2, x)
    got = P.projection_box(x, lower, upper)
    assert_close(got, optax.projections.projection_box(x, lower, upper), 0)
    expected = np.clip(flat64(x), flat64(lower), flat64(upper))
    np.testing.assert_allclose(flat64(got), expected, rtol=1e-7)


def test_box_with_scalar_bounds_applies_them_to_every_leaf_where_optax_raises():
    x = _tree(0)
    with pytest.raises(ValueError):
        optax.projections.projection_box(x, -0.5, 0.5)
    got = P.projection_box(x, -0.5, 0.5)
    np.testing.assert_array_equal(flat64(got), np.clip(flat64(x), -0.5, 0.5))
    assert_close(P.projection_hypercube(x, 2.0), P.projection_box(x, 0.0, 2.0), 0)


@pytest.mark.parametrize("kind", sorted(TREES))
def test_vector_hyperplane_and_halfspace_match_optax_and_numpy(kind):
    with jax.enable_x64(True):
        for seed in range(3):
            x, a = TREES[kind](seed, jnp.float64), TREES[kind](seed + 10, jnp.float64)
            fx, fa = flat64(x), flat64(a)
            for b in (-1.0, 0.0, float(fa @ fx) - 0.3, float(fa @ fx) + 0.3):
                hyper = fx + (b - fa @ fx) / (fa @ fa) * fa
                half = fx if fa @ fx <= b else hyper
                for name, expected, args in (
                    ("projection_vector", (fa @ fx) / (fa @ fa) * fa, (x, a)),
                    ("projection_hyperplane", hyper, (x, a, b)),
                    ("projection_halfspace", half, (x, a, b)),
                ):
                    got = getattr(P, name)(*args)
                    np.testing.assert_allclose(flat64(got), expected, rtol=1e-12, atol=1e-12)
                    assert_close(got, getattr(optax.projections, name)(*args), 1e-12)
            # float32 against Optax: the same formulas.
            x32, a32 = TREES[kind](seed), TREES[kind](seed + 10)
            for name, args in (
                ("projection_vector", (x32, a32)),
                ("projection_hyperplane", (x32, a32, 0.5)),
                ("projection_halfspace", (x32, a32, -0.5)),
            ):
                assert_close(getattr(P, name)(*args), getattr(optax.projections, name)(*args), 4e-6)


def test_simplex_matches_scipy_on_small_problems():
    """An independent solver on the defining problem (SLSQP, float64)."""
    rng = np.random.default_rng(7)
    for _ in range(5):
        x = rng.normal(size=5) * 2
        s = float(rng.uniform(0.5, 3.0))
        result = scipy.optimize.minimize(
            lambda p, x=x: np.sum((p - x) ** 2),
            np.full(5, s / 5),
            jac=lambda p, x=x: 2 * (p - x),
            bounds=[(0, None)] * 5,
            constraints=[{"type": "eq", "fun": lambda p, s=s: p.sum() - s}],
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 500},
        )
        assert result.success
        with jax.enable_x64(True):
            got = np.asarray(P.projection_simplex(jnp.asarray(x), s))
        np.testing.assert_allclose(got, result.x, atol=1e-6)
        ball = scipy.optimize.minimize(
            lambda q, x=x: np.sum((q[:5] - q[5:] - x) ** 2),  # p = q+ - q-, q >= 0
            np.zeros(10),
            bounds=[(0, None)] * 10,
            constraints=[{"type": "ineq", "fun": lambda q, s=s: s - q.sum()}],
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 500},
        )
        with jax.enable_x64(True):
            got = np.asarray(P.projection_l1_ball(jnp.asarray(x), s))
        np.testing.assert_allclose(got, ball.x[:5] - ball.x[5:], atol=1e-5)


# ---------------------------------------------------------------------- optimality


def _feasible_samples(name: str, n: int, rng: np.random.Generator, **kw) -> np.ndarray:
    """Points of the set (rows), spread over it and its boundary."""
    s = kw.get("scale", 1.0)
    if name == "projection_simplex":
        return s * rng.dirichlet(np.full(n, 0.3), size=400)
    if name in ("projection_l1_ball", "projection_l1_sphere"):
        d = rng.dirichlet(np.full(n, 0.3), size=400) * rng.choice([-1, 1], size=(400, n))
        r = 1.0 if name.endswith("sphere") else rng.uniform(0, 1, size=(400, 1))
        return s * d * r
    if name in ("projection_l2_ball", "projection_l2_sphere"):
        d = rng.normal(size=(400, n))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        r = 1.0 if name.endswith("sphere") else rng.uniform(0, 1, size=(400, 1)) ** (1 / n)
        return s * d * r
    if name == "projection_linf_ball":
        return rng.uniform(-s, s, size=(400, n))
    if name == "projection_hypercube":
        return rng.uniform(0, s, size=(400, n))
    if name == "projection_non_negative":
        return np.abs(rng.normal(size=(400, n))) * 2
    raise AssertionError(name)


def _is_feasible(name: str, p: np.ndarray, tol: float, scale: float = 1.0) -> bool:
    checks = {
        "projection_simplex": lambda: p.min() >= -tol and abs(p.sum() - scale) <= tol,
        "projection_l1_ball": lambda: np.abs(p).sum() <= scale + tol,
        "projection_l1_sphere": lambda: abs(np.abs(p).sum() - scale) <= tol,
        "projection_l2_ball": lambda: np.linalg.norm(p) <= scale + tol,
        "projection_l2_sphere": lambda: abs(np.linalg.norm(p) - scale) <= tol,
        "projection_linf_ball": lambda: np.abs(p).max() <= scale + tol,
        "projection_hypercube": lambda: p.min() >= -tol and p.max() <= scale + tol,
        "projection_non_negative": lambda: p.min() >= -tol,
    }
    return bool(checks[name]())


@pytest.mark.parametrize(
    "name",
    [
        "projection_simplex",
        "projection_l1_ball",
        "projection_l1_sphere",
        "projection_l2_ball",
        "projection_l2_sphere",
        "projection_linf_ball",
        "projection_hypercube",
        "projection_non_negative",
    ],
)
def test_result_is_feasible_and_no_sampled_feasible_point_is_closer(name):
    rng = np.random.default_rng(11)
    kwargs = {} if name == "projection_non_negative" else {"scale": 1.3}
    with jax.enable_x64(True):
        for seed in range(6):
            # Inputs inside and outside the set: small and large spreads.
            x = _tree(seed, jnp.float64, spread=[0.05, 0.4, 3.0][seed % 3])
            p = flat64(getattr(P, name)(x, **kwargs))
            fx = flat64(x)
            assert _is_feasible(name, p, 1e-10, kwargs.get("scale", 1.0)), (name, seed)
            samples = _feasible_samples(name, fx.size, rng, **kwargs)
            assert np.linalg.norm(samples - fx, axis=1).min() >= np.linalg.norm(p - fx) - 1e-10
            if name.endswith("sphere"):
                continue  # not convex: no variational inequality
            # Convex set: <x - p, q - p> <= 0 for every q in the set (the KKT conditions).
            assert ((samples - p) @ (fx - p)).max() <= 1e-9, (name, seed)


def test_hyperplane_and_halfspace_results_satisfy_their_constraint():
    with jax.enable_x64(True):
        x, a = _tree(1, jnp.float64), _tree(2, jnp.float64)
        for b in (-2.0, 0.0, 3.0):
            on = P.projection_hyperplane(x, a, b)
            assert abs(flat64(a) @ flat64(on) - b) < 1e-12
            inside = P.projection_halfspace(x, a, b)
            assert flat64(a) @ flat64(inside) <= b + 1e-12
            # The step is along a: the residual is orthogonal to the plane.
            resid = flat64(x) - flat64(on)
            np.testing.assert_allclose(
                resid, (resid @ flat64(a)) / (flat64(a) @ flat64(a)) * flat64(a)
            )


# ---------------------------------------------------------------------- degenerate inputs


def test_l1_sphere_gives_zero_elements_a_sign_and_stays_on_the_sphere():
    x = jnp.array([0.2, 0.0, -0.1])
    got = P.projection_l1_sphere(x, 1.0)
    np.testing.assert_allclose(np.abs(np.asarray(got)).sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        got, simplex_reference(np.abs(np.asarray(x, np.float64)), 1.0) * [1, 1, -1], atol=1e-6
    )
    # Optax's sign(0) = 0 leaves that element at 0, off the sphere.
    theirs = optax.projections.projection_l1_sphere(x, 1.0)
    assert float(jnp.abs(theirs).sum()) < 0.9
    zero = P.projection_l1_sphere(jnp.zeros(4), 2.0)
    np.testing.assert_allclose(zero, np.full(4, 0.5))


def test_l2_sphere_and_zero_radius_ball_of_zero_are_points_of_the_set():
    got = P.projection_l2_sphere({"a": jnp.zeros(3), "b": jnp.zeros(1)}, 2.0)
    np.testing.assert_allclose(flat64(got), np.full(4, 1.0))
    assert bool(jnp.all(jnp.isnan(optax.projections.projection_l2_sphere(jnp.zeros(4), 2.0))))
    np.testing.assert_array_equal(P.projection_l2_ball(jnp.zeros(3), 0.0), np.zeros(3))
    np.testing.assert_array_equal(P.projection_l2_ball(jnp.ones(3), 0.0), np.zeros(3))
    np.testing.assert_array_equal(P.projection_simplex(jnp.array([1.0, -2.0]), 0.0), [0.0, 0.0])


def test_simplex_handles_ties_an_empty_tree_and_bfloat16():
    np.testing.assert_allclose(P.projection_simplex(jnp.ones(4)), np.full(4, 0.25))
    assert P.projection_simplex({}) == {}
    x = {"w": jnp.array([0.75, 1.25], jnp.bfloat16), "b": jnp.array(-2.0, jnp.float32)}
    got = P.projection_simplex(x)
    assert got["w"].dtype == jnp.bfloat16 and got["b"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got["w"], np.float32), [0.25, 0.75])


# ---------------------------------------------------------------------- jit, vmap, derivatives


def test_every_projection_runs_under_jit_and_vmap():
    x, a = _tree(3), _tree(4)
    unary = [n for n in REFERENCES if not n.endswith("_unit")]

    def all_of(x, a, scale):
        out = {n: getattr(P, n)(x) for n in unary}
        out |= {
            f"{n}_scaled": getattr(P, n)(x, scale) for n in unary if n != "projection_non_negative"
        }
        out["box"] = P.projection_box(x, -scale, scale)
        out["vector"] = P.projection_vector(x, a)
        out["hyperplane"] = P.projection_hyperplane(x, a, scale)
        out["halfspace"] = P.projection_halfspace(x, a, -scale)
        return out

    eager = all_of(x, a, 0.9)
    jitted = jax.jit(all_of)(x, a, jnp.float32(0.9))  # a traced scale passes the checks
    for name in eager:
        assert_close(jitted[name], eager[name], 4e-6)
    xs = jax.tree.map(lambda *v: jnp.stack(v), _tree(5), _tree(6))
    batched = jax.vmap(lambda x: P.projection_simplex(x, 2.0))(xs)
    for i, seed in enumerate((5, 6)):
        assert_close(
            jax.tree.map(lambda v, i=i: v[i], batched), P.projection_simplex(_tree(seed), 2.0), 0
        )


def test_simplex_derivative_matches_optax_s_closed_form_jacobian():
    with jax.enable_x64(True):
        x = _array(2, jnp.float64)
        ours = jax.jacobian(P.projection_simplex)(x, 1.5)
        theirs = jax.jacobian(optax.projections.projection_simplex)(x, 1.5)
        np.testing.assert_allclose(ours, theirs, atol=1e-12)
        # diag(m) - m m^T / k on the support m.
        m = (np.asarray(P.projection_simplex(x, 1.5)) > 0).astype(float)
        np.testing.assert_allclose(ours, np.diag(m) - np.outer(m, m) / m.sum(), atol=1e-12)


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "name",
    [
        "projection_simplex",
        "projection_l1_sphere",
        "projection_l1_ball",
        "projection_l2_sphere",
        "projection_l2_ball",
        "projection_linf_ball",
        "projection_hypercube",
    ],
)
def test_a_negative_or_non_finite_scale_is_refused(name):
    for bad, shown in ((-1.0, r"-1\.0"), (float("nan"), "nan")):
        with pytest.raises(
            ValueError, match=rf"{name}: scale must be a finite number >= 0, got {shown}"
        ):
            getattr(P, name)(jnp.ones(3), bad)


def test_complex_leaves_are_refused_by_the_order_based_sets():
    with pytest.raises(TypeError, match=r"projection_simplex: .*\['z'\] are complex"):
        P.projection_simplex({"z": jnp.ones(2, jnp.complex64)})
    with pytest.raises(TypeError, match=r"projection_l1_ball"):
        P.projection_l1_ball({"z": jnp.ones(2, jnp.complex64) * 3})
    # The l2 projections are defined for complex leaves.
    z = jnp.array([3 + 4j, 0j], jnp.complex64)
    np.testing.assert_allclose(P.projection_l2_ball(z, 1.0), z / 5, rtol=1e-6)
