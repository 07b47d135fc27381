"""Clipping: the numpy references, Optax, zeros, complex leaves, overflow, the cliff.

* Every clipping rule, followed by an SGD step, reproduces its float64 numpy
  reference (``tests/reference/clipping.py``, from Pascanu et al. 2013, Alg. 1 and
  Brock et al. 2021, eq. 3) at every one of 120 steps on a pytree of four leaves
  (a 4-D filter bank, a vector, a matrix and a scalar), with thresholds at which
  the clipping is active on some steps and idle on others.
* The same runs against Optax's ``clip``, ``clip_by_global_norm``,
  ``clip_by_block_rms`` and ``adaptive_grad_clip``.
* Zero gradients and zero maxima give zeros (Optax: NaN); complex leaves clip
  magnitudes (a common phase rotates the result); a float32 gradient whose squares
  overflow is clipped to the right length (Optax: to zero); the clipping of a zero
  gradient has a finite derivative.
* The cliff of Goodfellow et al. (2016), Sec. 8.2.4 (seed 001): one unclipped SGD
  step at the cliff throws the parameters far away; the clipped step does not.

Tolerances as in tests/test_reference_trajectories.py: ``max |gradtx - ref| /
(|ref| + 1) <= 1e-10`` in float64 and ``1e-5`` in float32 (the parameters are of
order 1, where float32 rounds at ~1e-7 per step).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.transforms.clipping import (
    adaptive_grad_clip,
    clip,
    clip_by_block_rms,
    clip_by_global_norm,
    clip_by_leaf_norm,
)
from tests.reference import clipping as ref

NUM_STEPS = 120
RTOL = {"float64": 1e-10, "float32": 1e-5}
LR = 0.05

SHAPES = {"conv": (2, 2, 2, 3), "layer": {"b": (5,), "w": (3, 4)}, "temperature": ()}
TREEDEF = jax.tree.structure(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
LEAF_SHAPES = jax.tree.leaves(SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def _make_data(seed=2013):
    """Initial parameters and gradients (float32-representable float64).

    Each leaf has its own gradient scale and the scale changes over time (a burst
    at steps 40-49), so every clipping rule is active on some steps and idle on
    others at the thresholds below.
    """
    rng = np.random.default_rng(seed)
    k = np.arange(NUM_STEPS)
    in_time = 1 + 2 * np.exp(-k / 15) + 4 * ((k >= 40) & (k < 50))
    theta0, grads = [], []
    for i, shape in enumerate(LEAF_SHAPES):
        scale = (0.3, 2.0, 1.0, 0.5)[i]
        g = rng.normal(size=(NUM_STEPS, *shape)) * scale
        g *= in_time.reshape((NUM_STEPS,) + (1,) * len(shape))
        theta0.append(rng.normal(size=shape).astype(np.float32).astype(np.float64))
        grads.append(g.astype(np.float32).astype(np.float64))
    return theta0, grads


THETA0, GRADS = _make_data()
GRADS_BY_STEP = [[g[k] for g in GRADS] for k in range(NUM_STEPS)]
_NORMS = np.array([np.sqrt(sum(np.sum(x**2) for x in g)) for g in GRADS_BY_STEP])
GLOBAL_MAX = float(np.float32(np.median(_NORMS)))  # clips about half of the steps


def _unflatten(leaves):
    return jax.tree.unflatten(TREEDEF, list(leaves))


def _scan(tx, params, gs):
    """``chain(tx, sgd(LR))`` as one ``lax.scan``: the params after every step."""
    full = gradtx.chain(tx, gradtx.sgd(LR))

    def body(carry, g):
        p, state = carry
        updates, state = full.update(g, state, p)
        p = gradtx.apply_updates(p, updates)
        return (p, state), p

    return jax.lax.scan(body, (params, full.init(params)), gs)[1]


def gradtx_trajectories(makes, dtype: str, theta0=THETA0, grads=GRADS) -> list[list[np.ndarray]]:
    """``[trajectory of chain(make(), sgd(LR)) for make in makes]``, traced into one
    jitted function: independent scans side by side in one program (one compilation
    instead of one per case, the same arithmetic per scan). Each trajectory is a
    list of leaves, ``(NUM_STEPS + 1, *shape)`` float64 arrays, the start first."""
    with jax.enable_x64(dtype == "float64"):
        params = _unflatten([jnp.asarray(t, dtype) for t in theta0])
        gs = _unflatten([jnp.asarray(g, dtype) for g in grads])
        paths = jax.jit(lambda p, g: [_scan(make(), p, g) for make in makes])(params, gs)
        return [
            [
                np.concatenate([np.asarray(t, np.float64)[None], np.asarray(p, np.float64)])
                for t, p in zip(theta0, jax.tree.leaves(path), strict=True)
            ]
            for path in paths
        ]


def gradtx_trajectory(tx, dtype: str, theta0=THETA0, grads=GRADS) -> list[np.ndarray]:
    """``chain(tx, sgd(LR))`` in one jitted scan; the params after every step."""
    return gradtx_trajectories([lambda: tx], dtype, theta0, grads)[0]


def deviation(got, want) -> float:
    """``max |got - want| / (|want| + 1)`` over every leaf, element and step."""
    return max(
        float(np.max(np.abs(g - w) / (np.abs(w) + 1))) for g, w in zip(got, want, strict=True)
    )


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    method: str
    reference: str
    make: Callable[[], gradtx.GradientTransformation]
    clip: Callable  # (g leaves, theta leaves) -> clipped leaves, numpy


PASCANU = "Pascanu et al. 2013 Alg. 1"
CASES = [
    Case(
        "clip", "clip", "element-wise clip", lambda: clip(1.5), lambda g, th: ref.value_clip(g, 1.5)
    ),
    Case(
        "global-norm",
        "clip_by_global_norm",
        PASCANU,
        lambda: clip_by_global_norm(GLOBAL_MAX),
        lambda g, th: ref.global_norm_clip(g, GLOBAL_MAX),
    ),
    Case(
        "leaf-norm",
        "clip_by_leaf_norm",
        PASCANU + ", per leaf",
        lambda: clip_by_leaf_norm(2.0),
        lambda g, th: ref.leaf_norm_clip(g, 2.0),
    ),
    Case(
        "block-rms",
        "clip_by_block_rms",
        "rms per leaf",
        lambda: clip_by_block_rms(1.2),
        lambda g, th: ref.block_rms_clip(g, 1.2),
    ),
    Case(
        "agc",
        "adaptive_grad_clip",
        "Brock et al. 2021 eq. 3",
        lambda: adaptive_grad_clip(0.4),
        lambda g, th: ref.agc_clip(g, th, 0.4, 1e-3),
    ),
    Case(
        "agc-large-eps",
        "adaptive_grad_clip",
        "Brock et al. 2021 eq. 3",
        lambda: adaptive_grad_clip(0.3, eps=0.8),
        lambda g, th: ref.agc_clip(g, th, 0.3, 0.8),
    ),
]
RUNS = [(c, d) for c in CASES for d in ("float64", "float32")]
CASE = {c.id: c for c in CASES}


def reference_run(case):
    return ref.clipped_sgd(THETA0, GRADS_BY_STEP, LR, case.clip)


def case_deviation(case, dtype):
    return deviation(gradtx_trajectory(case.make(), dtype), reference_run(case)[0])


@pytest.mark.parametrize("case, dtype", RUNS, ids=[f"{c.id}-{d}" for c, d in RUNS])
def test_trajectory_matches_reference(case, dtype):
    want, changed = reference_run(case)
    # Not vacuous: the clipping changed some of the gradients and left others alone.
    assert 0.1 < np.mean(changed) < 0.9, f"{case.id}: changed {np.mean(changed):.0%}"
    worst = deviation(all_trajectories(dtype)[case.make], want)
    assert worst <= RTOL[dtype], f"{case.id} [{dtype}]: deviation {worst:.3e}"


def test_unclipped_run_is_far_from_the_clipped_ones():
    """The tolerance above could not pass a run that ignored the clipping."""
    plain = ref.clipped_sgd(THETA0, GRADS_BY_STEP, LR, lambda g, th: g)[0]
    for case in CASES:
        assert deviation(plain, reference_run(case)[0]) > 1e3 * RTOL["float32"], case.id


# ---------------------------------------------------------------- Optax

# As tests/test_optax_parity.py: same formulas, evaluated in a different order
# now and then (``t / n * v`` against ``t * (v / n)``), so a few ulps of the
# trajectory's scale.
OPTAX_TOL = {"float32": dict(rtol=1e-6, atol=5e-7), "float64": dict(rtol=1e-12, atol=1e-13)}
# Ours: the factory of the reference case with the same bound (the same run).
OPTAX_CASES = [
    ("clip", CASE["clip"].make, lambda: optax.clip(1.5)),
    (
        "clip_by_global_norm",
        CASE["global-norm"].make,
        lambda: optax.clip_by_global_norm(GLOBAL_MAX),
    ),
    ("clip_by_block_rms", CASE["block-rms"].make, lambda: optax.clip_by_block_rms(1.2)),
    ("adaptive_grad_clip", CASE["agc"].make, lambda: optax.adaptive_grad_clip(0.4)),
    (
        "adaptive_grad_clip-eps",
        CASE["agc-large-eps"].make,
        lambda: optax.adaptive_grad_clip(0.3, eps=0.8),
    ),
]
OPTAX_RUNS = [(c, d) for c in OPTAX_CASES for d in ("float64", "float32")]


@functools.cache
def all_trajectories(dtype: str) -> dict[Callable, list[np.ndarray]]:
    """``{make: gradtx_trajectory(make(), dtype)}`` for every reference case and every
    Optax clipping above, computed together in one jitted program per dtype and
    process (the parametrized tests each assert on their own trajectory)."""
    makes = [c.make for c in CASES] + [theirs for _, _, theirs in OPTAX_CASES]
    return dict(zip(makes, gradtx_trajectories(makes, dtype), strict=True))


def optax_deviation(ours, theirs, dtype):
    a = gradtx_trajectory(ours(), dtype)
    b = gradtx_trajectory(theirs(), dtype)  # optax's clip inside gradtx's chain + sgd
    return a, b


@pytest.mark.parametrize("case, dtype", OPTAX_RUNS, ids=[f"{c[0]}-{d}" for c, d in OPTAX_RUNS])
def test_same_trajectory_as_optax(case, dtype):
    _, ours, theirs = case
    a, b = all_trajectories(dtype)[ours], all_trajectories(dtype)[theirs]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, **OPTAX_TOL[dtype])
    assert max(float(np.max(np.abs(x[-1] - x[0]))) for x in a) > 0.1  # it moved


# ---------------------------------------------------------------- zeros and edges

ALL = {
    "clip": lambda m: clip(m),
    "clip_by_global_norm": lambda m: clip_by_global_norm(m),
    "clip_by_leaf_norm": lambda m: clip_by_leaf_norm(m),
    "clip_by_block_rms": lambda m: clip_by_block_rms(m),
    "adaptive_grad_clip": lambda m: adaptive_grad_clip(m),
}
DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64]


def _tree(dtype, fill=None, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"w": (3, 4), "b": (4,), "s": ()}
    if fill is not None:
        # Built in numpy: no compilation of a fill per shape and dtype.
        return {k: jnp.asarray(np.full(s, fill, dtype)) for k, s in shapes.items()}
    out = {}
    for k, s in shapes.items():
        x = rng.normal(size=s)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            x = x + 1j * rng.normal(size=s)
        out[k] = jnp.asarray(x, dtype)
    return out


@pytest.mark.parametrize("name", sorted(ALL))
def test_zero_gradients_and_zero_maxima_give_zeros_not_nan(name):
    # The bound is an argument of the jitted function: one compile per dtype.
    clipped = jax.jit(lambda m, g, p: ALL[name](m).update(g, EMPTY, p)[0])
    for dtype in DTYPES:
        params = _tree(dtype)
        for maximum in (0.0, 1.0):
            updates = clipped(maximum, _tree(dtype, fill=0), params)
            for u in jax.tree.leaves(updates):
                assert u.dtype == dtype
                assert np.all(np.asarray(u) == 0), (dtype, maximum)
        # A zero bound also zeroes a non-zero gradient.
        updates = clipped(0.0, _tree(dtype, seed=1), params)
        assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates)), dtype


def test_optax_returns_nan_where_gradtx_returns_zeros():
    """The documented difference: Optax forms 0/0 for a zero gradient and a zero bound."""
    zeros = _tree(jnp.float32, fill=0)
    for theirs, ours in [
        (optax.clip_by_global_norm(0.0), clip_by_global_norm(0.0)),
        (optax.clip_by_block_rms(0.0), clip_by_block_rms(0.0)),
    ]:
        # Optax's side jitted (one compilation instead of one per eager operation).
        got = jax.jit(lambda z, theirs=theirs: theirs.update(z, theirs.init(z))[0])(zeros)
        assert all(np.all(np.isnan(np.asarray(u))) for u in jax.tree.leaves(got))
        got = ours.update(zeros, ours.init(zeros))[0]
        assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(got))


@pytest.mark.parametrize("name", sorted(ALL))
def test_infinite_maximum_clips_nothing_and_none_leaves_and_empty_trees_pass(name):
    tx = ALL[name](np.inf)
    g = _tree(jnp.float32, seed=3)
    out, _ = tx.update(g, tx.init(g), g)
    jax.tree.map(np.testing.assert_array_equal, out, g)
    with_none = {"a": None, "b": jnp.full(3, 10.0)}
    out, _ = ALL[name](1.0).update(with_none, EMPTY, {"a": None, "b": jnp.ones(3)})
    assert out["a"] is None and bool(jnp.all(jnp.abs(out["b"]) <= 10.0))
    assert ALL[name](1.0).update({}, EMPTY, {})[0] == {}


EMPTY = gradtx.EmptyState()


@pytest.mark.parametrize("name", sorted(ALL))
def test_bfloat16_gradients_of_float32_params_keep_their_dtype(name):
    params = _tree(jnp.float32)
    g = jax.tree.map(lambda x: (4 * x).astype(jnp.bfloat16), _tree(jnp.float32, seed=4))
    out, _ = ALL[name](0.5).update(g, EMPTY, params)
    expected, _ = ALL[name](0.5).update(
        jax.tree.map(lambda x: x.astype(jnp.float32), g), EMPTY, params
    )
    for u, e in zip(jax.tree.leaves(out), jax.tree.leaves(expected), strict=True):
        assert u.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(u, np.float32), e, rtol=1e-2, atol=1e-3)


def test_clip_bounds_every_element_and_is_jnp_clip_on_reals():
    g = _tree(jnp.float32, seed=5)
    out, _ = clip(0.7).update(g, EMPTY)
    jax.tree.map(lambda o, x: np.testing.assert_array_equal(o, jnp.clip(x, -0.7, 0.7)), out, g)


def test_norm_clippings_give_the_bound_and_keep_the_direction():
    g = jax.tree.map(lambda x: 10 * x, _tree(jnp.float32, seed=6))
    out, _ = clip_by_global_norm(1.5).update(g, EMPTY)
    np.testing.assert_allclose(gradtx.tree.global_norm(out), 1.5, rtol=1e-6)
    scale = gradtx.tree.global_norm(g) / 1.5
    jax.tree.map(lambda o, x: np.testing.assert_allclose(o * scale, x, rtol=1e-5), out, g)
    out, _ = clip_by_leaf_norm(1.5).update(g, EMPTY)
    for o in jax.tree.leaves(out):
        np.testing.assert_allclose(jnp.linalg.norm(o.ravel()), 1.5, rtol=1e-6)
    out, _ = clip_by_block_rms(0.5).update(g, EMPTY)
    for o in jax.tree.leaves(out):
        np.testing.assert_allclose(jnp.sqrt(jnp.mean(o**2)), 0.5, rtol=1e-6)


# ---------------------------------------------------------------- complex leaves


@pytest.mark.parametrize("name", sorted(ALL))
def test_complex_clipping_is_the_real_clipping_rotated(name):
    """A common phase on gradients (and params) turns the result by the same phase:
    only magnitudes enter, ``|g|^2`` in the norms and the modulus in ``clip``."""
    phase = np.exp(0.7j)
    g = jax.tree.map(lambda x: 3 * x, _tree(jnp.float32, seed=7))
    params = _tree(jnp.float32, seed=8)
    rotate = lambda t: jax.tree.map(lambda x: (x * phase).astype(jnp.complex64), t)
    tx = ALL[name](0.8)
    real, _ = tx.update(g, EMPTY, params)
    turned, _ = tx.update(rotate(g), EMPTY, rotate(params))
    assert any(
        not np.allclose(a, b)
        for a, b in zip(jax.tree.leaves(real), jax.tree.leaves(g), strict=True)
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), turned, rotate(real)
    )


def test_complex_clip_limits_the_modulus_and_keeps_the_phase():
    g = jnp.asarray([3 + 4j, 0.3 - 0.4j, 0j, -6j], jnp.complex64)
    out, _ = clip(1.0).update(g, EMPTY)
    np.testing.assert_allclose(out, [0.6 + 0.8j, 0.3 - 0.4j, 0, -1j], rtol=1e-6)


def test_complex_global_norm_is_the_norm_of_real_and_imaginary_parts():
    g = _tree(jnp.complex64, seed=9)
    stacked = jax.tree.map(lambda x: jnp.stack([x.real, x.imag]), g)
    out, _ = clip_by_global_norm(1.0).update(g, EMPTY)
    out_real, _ = clip_by_global_norm(1.0).update(stacked, EMPTY)
    jax.tree.map(
        lambda c, r: np.testing.assert_allclose(jnp.stack([c.real, c.imag]), r, rtol=1e-6),
        out,
        out_real,
    )


# ---------------------------------------------------------------- overflow, derivatives


def test_gradient_whose_squares_overflow_is_clipped_in_its_direction():
    """float32 squares overflow above ~1.8e19: gradtx rescales and clips to the bound
    in the gradient's direction; Optax's norm is inf and its update 0 (a lost step)."""
    direction = np.array([3.0, -4.0, 0.0, 12.0], np.float32) / 13
    g = {"a": jnp.asarray(direction[:2] * 1e25), "b": jnp.asarray(direction[2:] * 1e25)}
    out, _ = clip_by_global_norm(2.0).update(g, EMPTY)
    got = np.concatenate([out["a"], out["b"]])
    np.testing.assert_allclose(got, 2.0 * direction, rtol=1e-6, atol=1e-7)
    theirs = optax.clip_by_global_norm(2.0).update(g, optax.EmptyState())[0]
    assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(theirs))
    for tx, bound in [(clip_by_leaf_norm(2.0), 2.0), (clip_by_block_rms(2.0), 2.0 * np.sqrt(2))]:
        out, _ = tx.update(g, EMPTY)
        for leaf in jax.tree.leaves(out):
            assert np.isclose(float(jnp.linalg.norm(leaf)), bound, rtol=1e-6) or not jnp.any(leaf)
    w = {"a": jnp.ones((2, 1)), "b": jnp.ones((2, 1))}
    out, _ = adaptive_grad_clip(0.5).update(jax.tree.map(lambda x: x[:, None], g), EMPTY, w)
    assert np.isclose(float(jnp.linalg.norm(out["a"])), 0.5 * np.sqrt(2), rtol=1e-6)
    # A non-finite gradient stays non-finite: hiding it is apply_if_finite's job.
    out, _ = clip_by_global_norm(2.0).update({"a": jnp.asarray([jnp.inf, 1.0])}, EMPTY)
    assert not bool(jnp.all(jnp.isfinite(out["a"])))


@pytest.mark.parametrize("dtypes", [("float32",), ("float64",), ("float32", "float64")])
def test_overflow_rescue_under_jit_gives_the_norm_to_rounding(dtypes):
    """The jitted rescue (``m ||x / m||``, ``m = max |x|``) against numpy's norm of
    the same values, scaled by their largest magnitude in float64: huge, moderate
    and tiny elements together, in every leaf dtype of ``dtypes`` (the widest
    one's squares overflow), a one-element leaf and a large leaf."""
    with jax.enable_x64(True):
        widest = np.dtype(dtypes[-1])
        big = float(np.sqrt(np.finfo(widest).max)) * 4  # its square overflows widest
        leaves = {
            name: np.asarray([big, -big / 3, 1e-3, 7.0], dtype)
            if np.dtype(dtype) == widest
            else np.asarray([1e15, -2.0, 3e-20], dtype)
            for name, dtype in zip("ab", dtypes, strict=False)
        }
        leaves["c"] = np.asarray([-big / 2], widest)
        leaves["d"] = np.linspace(-big / 5, big / 7, 2**14).astype(widest)
        values = np.concatenate([leaf.astype(np.float64) for leaf in leaves.values()])
        scale = np.max(np.abs(values))
        norm = scale * np.linalg.norm(values / scale)  # no overflow in float64
        out = jax.jit(lambda g: clip_by_global_norm(2.0).update(g, EMPTY)[0])(
            jax.tree.map(jnp.asarray, leaves)
        )
        for name, leaf in leaves.items():
            assert out[name].dtype == leaf.dtype
            # Rounded to the leaf's dtype (a float32 leaf beside a huge float64 one
            # underflows to 0, as it should).
            expected = (leaf.astype(np.float64) * (2.0 / norm)).astype(leaf.dtype)
            rtol = 4 * float(np.finfo(leaf.dtype).eps)
            np.testing.assert_allclose(np.asarray(out[name]), expected, rtol=rtol)


@pytest.mark.parametrize("name", sorted(ALL))
def test_derivative_through_the_clipping_of_a_zero_gradient_is_finite(name):
    params = _tree(jnp.float32)
    tx = ALL[name](1.0)

    @jax.jit
    @jax.grad
    def derivative(g):
        return sum(jnp.sum(u) for u in jax.tree.leaves(tx.update(g, EMPTY, params)[0]))

    for g in (_tree(jnp.float32, fill=0), jax.tree.map(lambda x: 10 * x, _tree(jnp.float32, 1))):
        grads = derivative(g)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grads)), name


# ---------------------------------------------------------------- units of AGC


def test_adaptive_grad_clip_units():
    """Dense kernel ``(in, out)``: one unit per column; ``HWIO``: one per output
    channel; a vector (or a ``(1, n)`` row) is one unit; ``axis`` overrides."""
    w = jnp.asarray([[3.0, 1.0], [4.0, 0.0]])  # column norms 5 and 1
    g = jnp.asarray([[30.0, 0.1], [40.0, 0.0]])  # column norms 50 and 0.1
    conv_w = jnp.ones((3, 3, 2, 4))
    conv_g = jnp.full((3, 3, 2, 4), 0.05).at[..., 0].set(100.0)
    tree_w = {"k": w, "c": conv_w, "s": jnp.asarray(2.0)}
    tree_g = {"k": g, "c": conv_g, "s": jnp.asarray(5.0)}
    axes = ((0, 1), (-1, -2), (np.int64(1), np.int32(0)))

    # Every update of this test in one jitted program (one compilation, not one per
    # eager operation): the units are decided at trace time from the shapes and
    # ``axis``, as eagerly; the eager update is checked leaf by leaf against the
    # reference in test_leaves_of_one_kind_are_clipped_as_their_references.
    @jax.jit
    def updates():
        return dict(
            default=adaptive_grad_clip(0.5).update(g, EMPTY, w)[0],
            rows=adaptive_grad_clip(0.5, axis=1).update(g, EMPTY, w)[0],
            conv=adaptive_grad_clip(0.1).update(conv_g, EMPTY, conv_w)[0],
            tree=adaptive_grad_clip(0.3, axis=-1).update(tree_g, EMPTY, tree_w)[0],
            optax=optax.adaptive_grad_clip(0.3, axis=-1).update(
                {"k": g, "c": conv_g}, optax.EmptyState(), {"k": w, "c": conv_w}
            )[0],
            row=adaptive_grad_clip(0.1).update(jnp.full((1, 4), 5.0), EMPTY, jnp.ones((1, 4)))[0],
            whole=[adaptive_grad_clip(0.1, axis=axis).update(g, EMPTY, w)[0] for axis in axes],
            eps=adaptive_grad_clip(0.5, eps=0.1).update(jnp.ones(4), EMPTY, jnp.zeros(4))[0],
        )

    out = jax.device_get(updates())
    g, w, conv_g = np.asarray(g), np.asarray(w), np.asarray(conv_g)
    np.testing.assert_allclose(out["default"], [[1.5, 0.1], [2.0, 0.0]], rtol=1e-6)
    # axis=1, rows: norms 3.16, 4
    np.testing.assert_allclose(out["rows"][1], g[1] * 2.0 / np.linalg.norm(g[1]), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out["conv"][..., 0]), 0.1 * np.sqrt(18), rtol=1e-6)
    np.testing.assert_array_equal(out["conv"][..., 1:], conv_g[..., 1:])
    # An explicit axis applies to every leaf with that axis, as in Optax; a scalar
    # leaf is one unit whatever the axis.
    np.testing.assert_allclose(out["tree"]["k"], out["optax"]["k"], rtol=1e-6)
    np.testing.assert_allclose(out["tree"]["c"], out["optax"]["c"], rtol=1e-6)
    np.testing.assert_allclose(out["tree"]["s"], 0.6, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out["row"]), 0.2, rtol=1e-6)
    # An axis that spans the whole leaf, however spelled, makes the leaf one unit.
    whole = g * (0.1 * np.linalg.norm(w) / np.linalg.norm(g))
    for got in out["whole"]:
        assert got.shape == g.shape and got.dtype == g.dtype
        np.testing.assert_allclose(got, whole, rtol=1e-6)
    # eps: a zero-initialised unit may still move by clipping * eps.
    np.testing.assert_allclose(np.linalg.norm(out["eps"]), 0.05, rtol=1e-6)


def test_adaptive_grad_clip_needs_params_and_matching_trees():
    tx = adaptive_grad_clip(0.1)
    with pytest.raises(ValueError, match="params"):
        tx.update(jnp.ones(2), EMPTY)
    with pytest.raises(ValueError, match="tree structure"):
        tx.update({"a": jnp.ones(2)}, EMPTY, {"b": jnp.ones(2)})


# ---------------------------------------------------------------- the cliff


def _cliff(w, height=50.0, steepness=2000.0):
    """A bowl ``|w|^2 / 2`` with a cliff: the loss drops by ``height`` across a band
    of width ~1/steepness at ``w_0 = 1`` (a sigmoid step), the shape Goodfellow et
    al. (2016, Fig. 8.3) draw for recurrent networks; the gradient on the cliff face
    is ~ height * steepness / 4 = 25000, fifty thousand times the bowl's."""
    return 0.5 * jnp.sum(w**2) + height * jax.nn.sigmoid(steepness * (w[0] - 1.0))


def test_cliff_unclipped_step_is_thrown_far_away_the_clipped_one_is_not():
    w0 = jnp.asarray([1.0005, 0.5])  # on the cliff face
    grad = jax.grad(_cliff)(w0)
    assert float(jnp.linalg.norm(grad)) > 1e4
    before = float(_cliff(w0))

    @functools.partial(jax.jit, static_argnums=0)
    def step(tx, w):
        updates, _ = tx.update(jax.grad(_cliff)(w), tx.init(w), w)
        return gradtx.apply_updates(w, updates)

    thrown = step(gradtx.sgd(0.1), w0)
    assert float(jnp.linalg.norm(thrown - w0)) > 1000  # thrown ~1500 units away
    assert float(_cliff(thrown)) > 1e4 * before  # into a region far worse than the cliff

    clipped_tx = gradtx.chain(clip_by_global_norm(1.0), gradtx.sgd(0.1))
    w1 = step(clipped_tx, w0)
    np.testing.assert_allclose(jnp.linalg.norm(w1 - w0), 0.1, rtol=1e-5)  # lr * max_norm
    cosine = jnp.dot(w0 - w1, grad) / (jnp.linalg.norm(w0 - w1) * jnp.linalg.norm(grad))
    np.testing.assert_allclose(cosine, 1.0, rtol=1e-6)  # down the cliff, as the gradient says
    assert float(_cliff(w1)) < before  # went down the cliff, not away
    optax_tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1))
    np.testing.assert_allclose(step(optax_tx, w0), w1, rtol=1e-6)

    # Clipped SGD then settles at the bottom of the bowl below the cliff.
    w = jax.lax.fori_loop(0, 150, lambda _, w: step(clipped_tx, w), w1)
    assert float(jnp.linalg.norm(w)) < 1e-3


# ---------------------------------------------------------------- hyperparameters


BAD = [
    (clip, dict(max_delta=-1.0), r"clip: max_delta must be a number >= 0 .*got -1\.0"),
    (clip, dict(max_delta=np.nan), r"max_delta must be .*got nan"),
    (clip_by_global_norm, dict(max_norm=-0.5), r"max_norm must be a number >= 0 .*got -0\.5"),
    (clip_by_leaf_norm, dict(max_norm=np.nan), r"max_norm must be .*got nan"),
    (clip_by_block_rms, dict(threshold=-np.inf), r"threshold must be .*got -inf"),
    (adaptive_grad_clip, dict(clipping=-0.1), r"clipping must be .*got -0\.1"),
    (adaptive_grad_clip, dict(clipping=0.1, eps=-1e-3), r"eps must be a finite number >= 0"),
]


@pytest.mark.parametrize(
    "factory, kwargs, message", BAD, ids=[f"{f.__name__}-{sorted(k.items())}" for f, k, _ in BAD]
)
def test_bad_hyperparameters_are_refused_at_construction(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


@pytest.mark.parametrize("name", sorted(ALL))
def test_vmap_over_the_bound_equals_separate_runs(name):
    params = _tree(jnp.float32)
    g = jax.tree.map(lambda x: 3 * x, _tree(jnp.float32, seed=11))
    bounds = jnp.asarray([0.0, 0.3, 2.0])
    batched = jax.jit(jax.vmap(lambda m: ALL[name](m).update(g, EMPTY, params)[0]))(bounds)
    # The separate runs share one compiled program (the bound is its argument).
    one = jax.jit(lambda m: ALL[name](m).update(g, EMPTY, params)[0])
    for i, m in enumerate([0.0, 0.3, 2.0]):
        separate = one(m)
        jax.tree.map(
            lambda b, s, i=i: np.testing.assert_allclose(b[i], s, rtol=1e-6, atol=1e-7),
            batched,
            separate,
        )


# ---------------------------------------------------------------- many small leaves


def _many_small_leaves(seed=7):
    """Leaves of a few kinds, several of each: f32 vectors (one of them with
    squares that overflow float32), bf16 vectors, scalars, ``(1, n)`` rows, and
    dense kernels (AGC: a unit per column, so never stacked for it)."""
    rng = np.random.default_rng(seed)
    g, w = {}, {}
    for i in range(5):
        scale = 1e21 if i == 2 else (0.5, 3.0, 1.0, 0.1, 2.0)[i]
        g[f"v{i}"] = jnp.asarray(rng.normal(size=7) * scale, jnp.float32)
        w[f"v{i}"] = jnp.asarray(rng.normal(size=7), jnp.float32)
    for i in range(3):
        g[f"h{i}"] = jnp.asarray(rng.normal(size=6) * (i + 1), jnp.bfloat16)
        w[f"h{i}"] = jnp.asarray(rng.normal(size=6), jnp.bfloat16)
        g[f"r{i}"] = jnp.asarray(rng.normal(size=(1, 5)) * (i + 0.5), jnp.float32)
        w[f"r{i}"] = jnp.asarray(rng.normal(size=(1, 5)), jnp.float32)
    for i in range(4):
        g[f"s{i}"] = jnp.asarray(rng.normal() * 3, jnp.float32)
        w[f"s{i}"] = jnp.asarray(rng.normal(), jnp.float32)
    for i in range(2):
        g[f"k{i}"] = jnp.asarray(rng.normal(size=(3, 4)) * 2, jnp.float32)
        w[f"k{i}"] = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    return g, w


@pytest.mark.parametrize(
    "make, reference",
    [
        (lambda: clip_by_leaf_norm(1.5), lambda g, w: ref.leaf_norm_clip(g, 1.5)),
        (lambda: clip_by_block_rms(0.7), lambda g, w: ref.block_rms_clip(g, 0.7)),
        (lambda: adaptive_grad_clip(0.2), lambda g, w: ref.agc_clip(g, w, 0.2, 1e-3)),
    ],
    ids=["clip_by_leaf_norm", "clip_by_block_rms", "adaptive_grad_clip"],
)
def test_leaves_of_one_kind_are_clipped_as_their_references(make, reference):
    """Many small leaves of a few kinds: eager, jitted and vmapped updates all
    match the float64 reference leaf by leaf, the overflowing one too."""
    g, w = _many_small_leaves()
    tx = make()
    names = sorted(g)
    as64 = [np.asarray(g[k], np.float64) for k in names]
    expected = reference(as64, [np.asarray(w[k], np.float64) for k in names])
    eager = tx.update(g, EMPTY, w)[0]
    jitted = jax.jit(lambda g: tx.update(g, EMPTY, w)[0])(g)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), g)
    vmapped = jax.jit(jax.vmap(lambda g: tx.update(g, EMPTY, w)[0]))(stacked)
    for name, want in zip(names, expected, strict=True):
        rtol = 1e-2 if g[name].dtype == jnp.bfloat16 else 1e-6
        for got in (eager[name], jitted[name], vmapped[name][1]):
            assert got.dtype == g[name].dtype and got.shape == g[name].shape, name
            np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, err_msg=name)
    # Not bit for bit eager against jit: XLA:CPU fuses a multiply into the sum that
    # follows it, with one rounding less than the eager steps (1 ulp on a unit norm).
