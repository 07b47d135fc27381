"""GaLore (Zhao et al. 2024, Alg. 2) against its float64 reference and optax.contrib.galore."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gradtx
from tests import contrib_harness as H
from tests.reference import galore as R
from tests.test_optax_parity import TOL, assert_trees_close


# (id, gradtx kwargs, reference kwargs). The separable problem has a tall (4, 3)
# matrix, a wide (2, 5) one, a vector and a scalar (plain Adam). By default
# (Optax's "reverse_std") the tall one is projected on the left, the wide one on
# the right; "std" (the paper's) the other way round. svd_dtype=None: the SVD in
# the run's own dtype.
def _case(name, rank, gap, scale=1.0, projection_type=None, weight_decay=0.0, after=None):
    kw = dict(rank=rank, update_proj_gap=gap, scale=scale)
    ref = dict(r=rank, T=gap, alpha=scale)
    if projection_type is not None:
        kw["projection_type"] = ref["projection_type"] = projection_type
    if weight_decay:
        kw["weight_decay"] = ref["weight_decay"] = weight_decay
    if after is not None:
        kw["decay_form"] = "authors" if after else "optax"
        ref["decay_after_step"] = after
    return name, kw, ref


REFERENCE_CASES = [
    _case("rank-2-gap-7", 2, 7, 0.5),
    _case("full-rank-gap-1", 10, 1),
    _case("reverse_std-rank-1-gap-9", 1, 9, 1.0, "reverse_std"),
    _case("std-rank-2-gap-7", 2, 7, 0.5, "std"),
    _case("std-rank-1-gap-5", 1, 5, 1.0, "std"),
    _case("left-rank-2-gap-5", 2, 5, 1.0, "left"),
    _case("left-rank-1-gap-6", 1, 6, 0.25, "left"),
    _case("right-rank-1-gap-8", 1, 8, 1.0, "right"),
    _case("full-rank-2-gap-7", 2, 7, 0.5, "full"),
    _case("full-rank-1-gap-4", 1, 4, 2.0, "full"),
    _case("std-decay-optax", 2, 7, 1.0, "std", weight_decay=0.5, after=False),
    _case("std-decay-authors", 2, 7, 1.0, "std", weight_decay=0.5, after=True),
    _case("reverse_std-decay-authors", 2, 7, 0.5, weight_decay=0.5, after=True),
]

# Cases checked in float64 only. Singular vectors are defined up to sign, and at
# some refreshes JAX's float32 SVD picks the other sign than numpy's float64 one
# for the tall leaf's vector: the flipped basis turns Adam's moments (built in
# the old one) against the gradient, and the run parts by 0.1 to 0.3 from there.
# A float64 run with svd_dtype=float32 parts at the same steps, so the SVD's
# precision alone does it. Measured first parting step (0-based) in brackets.
FLOAT64_ONLY = {
    "full-rank-gap-1": "an SVD every step, signs flip from step 21 on",
    "reverse_std-rank-1-gap-9": "the refresh at step 108",
    "std-rank-1-gap-5": "the refresh at step 65",
    "left-rank-1-gap-6": "the refresh at step 54",
    # "full", rank 2: R = P^T G Q is diagonal up to rounding at step 1, and Adam
    # divides those ~1e-16 (float64) or ~1e-7 (float32) off-diagonal entries by
    # their own root plus eps = 1e-8: in float64 rounding grows to 1.4e-9 of
    # the step, in float32 it becomes a full +-1 step along a rounding-chosen
    # sign (the runs part by 2e-2 at step 0).
    "full-rank-2-gap-7": "rounding on the off-diagonal of P^T G Q, from step 0",
}
FLOAT64_BOUND = {"full-rank-2-gap-7": 1e-8}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_galore_follows_the_reference(dtype):
    """Every projection_type against the float64 reference: 120 steps, a tall and a
    wide matrix, a vector and a scalar, all cases in one jitted program."""
    makers = [
        lambda kw=kw: gradtx.galore(0.05, svd_dtype=None, **kw) for _, kw, _ in REFERENCE_CASES
    ]
    with jax.enable_x64(dtype == "float64"):
        paths = H.reference_paths(makers, jnp.dtype(dtype))
    checked = set()
    for (name, _, ref), got in zip(REFERENCE_CASES, paths, strict=True):
        if dtype == "float32" and name in FLOAT64_ONLY:
            continue
        bound = FLOAT64_BOUND.get(name, 1e-10) if dtype == "float64" else 1e-4
        reference = R.galore_adam(
            H.THETA0,
            H.noisy_grad_np,
            eta=0.05,
            beta_1=0.9,
            beta_2=0.999,
            epsilon=1e-8,
            num_steps=H.STEPS,
            **ref,
        )
        worst = H.deviation(got, reference)
        assert worst <= bound, f"{name} [{dtype}]: {worst:.2e}"
        checked.add(ref.get("projection_type", "reverse_std"))
    assert checked == {"reverse_std", "std", "left", "right", "full"}


def test_the_two_decay_forms_part():
    """A control for the decay cases above: the two references differ well past the
    float32 bound (measured 0.23), so each gradtx form matches its own only."""
    kw = dict(eta=0.05, beta_1=0.9, beta_2=0.999, epsilon=1e-8, num_steps=H.STEPS)
    kw.update(r=2, T=7, alpha=1.0, projection_type="std", weight_decay=0.5)
    after = R.galore_adam(H.THETA0, H.noisy_grad_np, decay_after_step=True, **kw)
    before = R.galore_adam(H.THETA0, H.noisy_grad_np, **kw)
    assert H.deviation([x[1:] for x in after], before) > 1e-2


@pytest.mark.parametrize(
    "projection_type, tall, wide",
    [
        # (projector shape, base optimizer's shape) of a (6, 4) and a (3, 5) leaf, rank 2
        ("reverse_std", ((6, 2), (2, 4)), ((5, 2), (3, 2))),
        ("std", ((4, 2), (6, 2)), ((3, 2), (2, 5))),
        ("left", ((6, 2), (2, 4)), ((3, 2), (2, 5))),
        ("right", ((4, 2), (6, 2)), ((5, 2), (3, 2))),
        ("full", ((10, 2), (2, 2)), ((8, 2), (2, 2))),
    ],
)
def test_projection_type_picks_the_side(projection_type, tall, wide):
    tx = gradtx.scale_by_galore(rank=2, projection_type=projection_type)
    state = tx.init({"tall": jnp.zeros((6, 4)), "wide": jnp.zeros((3, 5)), "b": jnp.zeros(4)})
    for name, (projector, low) in [("tall", tall), ("wide", wide)]:
        assert state.projector[name].shape == projector
        assert state.base_optimizer_state.mu[name].shape == low
    assert state.base_optimizer_state.mu["b"].shape == (4,)


@pytest.mark.parametrize("projection_type", ["reverse_std", "std", "left", "right", "full"])
def test_every_side_gives_the_rank_r_truncation_at_a_refresh(projection_type):
    """With the identity as base optimizer, each side returns ``alpha`` times G's best
    rank-r approximation at a refresh step (the sides differ only in between)."""
    rng = np.random.default_rng(5)
    grads = {k: rng.normal(size=s) for k, s in [("tall", (6, 4)), ("wide", (3, 5)), ("sq", (4, 4))]}
    tx = gradtx.scale_by_galore(
        rank=2, scale=0.5, base_optimizer=gradtx.identity(), projection_type=projection_type
    )
    with jax.enable_x64(True):
        g = jax.tree.map(jnp.asarray, grads)
        out, _ = tx.update(g, tx.init(g))
    for name, x in grads.items():
        u, s, vh = np.linalg.svd(x, full_matrices=False)
        np.testing.assert_allclose(out[name], 0.5 * (u[:, :2] * s[:2]) @ vh[:2], atol=1e-6)


def _quad_only(namespace):
    """Dimension numbers as a function of the params: only the (2, 3) matrix is projected."""
    return lambda params: {
        "w": None,
        "b": None,
        "quad": [namespace.GaLoreDimensionNumbers(), None],
    }


OPTAX_CASES = [
    (
        lambda: gradtx.galore(0.05, rank=2, update_proj_gap=7, weight_decay=0.01),
        lambda: optax.contrib.galore(0.05, rank=2, update_proj_gap=7, weight_decay=0.01),
    ),
    (
        lambda: gradtx.galore(
            0.02,
            1,
            5,
            0.5,
            gradtx.scale_by_lion(),
            weight_dimension_numbers=gradtx.GaLoreDimensionNumbers(1, 0),
        ),
        lambda: optax.contrib.galore(
            0.02,
            1,
            5,
            0.5,
            optax.scale_by_lion(),
            weight_dimension_numbers=optax.contrib.GaLoreDimensionNumbers(1, 0),
        ),
    ),
    (
        lambda: gradtx.chain(
            gradtx.scale_by_galore(2, 4, 0.1, weight_dimension_numbers=_quad_only(gradtx)),
            gradtx.scale_by_learning_rate(0.02),
        ),
        lambda: optax.chain(
            optax.contrib.scale_by_galore(
                2, 4, 0.1, weight_dimension_numbers=_quad_only(optax.contrib)
            ),
            optax.scale_by_learning_rate(0.02),
        ),
    ),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_galore_same_trajectories_as_optax(dtype):
    """120 steps, three configurations (Adam and Lion inside; dimension numbers as one
    spec, transposed, and as a function), one program. Both take the SVD in float32."""
    with jax.enable_x64(dtype == "float64"):
        runs = H.optax_paths(OPTAX_CASES, jnp.dtype(dtype))
        for ours, theirs in runs:
            assert jax.tree.leaves(ours)[0].dtype == jnp.dtype(dtype)
            # float32: the projections add matrix products whose sums XLA may order
            # differently in the two programs; measured at most 7.2e-7 (params ~2).
            tol = TOL[dtype] if dtype == "float64" else {"rtol": 1e-6, "atol": 1e-6}
            assert_trees_close(ours, theirs, **tol)


def test_a_three_axis_leaf_is_projected_as_optax_projects_it():
    """An attention-like (embed, heads, head_dim) leaf seen as (embed, heads * head_dim)."""
    rng = np.random.default_rng(2)
    grads = jnp.asarray(rng.normal(size=(30, 6, 2, 3)), jnp.float32)
    params = {"attn": jnp.zeros((6, 2, 3)), "v": jnp.zeros(4)}
    dims = {"attn": gradtx.GaLoreDimensionNumbers(0, (1, 2)), "v": None}
    optax_dims = {"attn": optax.contrib.GaLoreDimensionNumbers(0, (1, 2)), "v": None}
    ours = gradtx.galore(0.1, rank=2, update_proj_gap=4, weight_dimension_numbers=dims)
    theirs = optax.contrib.galore(
        0.1, rank=2, update_proj_gap=4, weight_dimension_numbers=optax_dims
    )

    @jax.jit
    def run(grads):
        def body(carry, g):
            s1, s2 = carry
            tree = {"attn": g, "v": jnp.sum(g, axis=(1, 2))[:4]}
            u1, s1 = ours.update(tree, s1, params)
            u2, s2 = theirs.update(tree, s2, params)
            return (s1, s2), (u1, u2)

        return jax.lax.scan(body, (ours.init(params), theirs.init(params)), grads)[1]

    u1, u2 = run(grads)
    assert ours.init(params)[0].projector["attn"].shape == (6, 2)
    assert_trees_close(u1, u2, rtol=1e-6, atol=1e-7)


def test_state_is_low_rank():
    tx = gradtx.galore(0.1, rank=4)
    state = tx.init({"w": jnp.zeros((64, 32)), "u": jnp.zeros((8, 40)), "b": jnp.zeros(32)})
    inner = state[0]
    assert inner.projector["w"].shape == (64, 4) and inner.projector["u"].shape == (40, 4)
    assert inner.projector["b"].shape == ()  # a placeholder (Optax's: (0, 0))
    mu = inner.base_optimizer_state.mu
    assert mu["w"].shape == (4, 32) and mu["u"].shape == (8, 4) and mu["b"].shape == (32,)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"rank": 0}, ValueError, r"scale_by_galore: rank must be an integer >= 1"),
        ({"rank": 2.5}, ValueError, r"scale_by_galore: rank must be an integer >= 1"),
        ({"update_proj_gap": 0}, ValueError, r"scale_by_galore: update_proj_gap must be"),
        ({"scale": float("nan")}, ValueError, r"scale_by_galore: scale must be finite"),
        ({"svd_dtype": "int8"}, ValueError, r"scale_by_galore: svd_dtype must be None or"),
        (
            {"projection_type": "paper"},
            ValueError,
            r"scale_by_galore: projection_type must be one of \('reverse_std', 'std', 'left', "
            r"'right', 'full'\), got 'paper'",
        ),
        ({"projection_type": None}, ValueError, r"scale_by_galore: projection_type must be"),
        ({"projection_type": "STD"}, ValueError, r"scale_by_galore: projection_type must be"),
        (
            {"decay_form": "paper"},
            ValueError,
            r"galore: decay_form must be one of \('optax', 'authors'\), got 'paper'",
        ),
        (
            {"decay_form": "authors", "weight_decay": -1.0},
            ValueError,
            r"galore: weight_decay must be a finite number >= 0",
        ),
        ({"learning_rate": None}, TypeError, r"galore: learning_rate must be"),
    ],
)
def test_galore_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        gradtx.galore(**{"learning_rate": 0.1, **kwargs})
    if "learning_rate" not in kwargs and "decay_form" not in kwargs:  # from scale_by_galore
        with pytest.raises(error, match=message):
            gradtx.scale_by_galore(**kwargs)


def test_dimension_numbers_that_do_not_split_the_axes_are_refused():
    tx = gradtx.galore(0.1, weight_dimension_numbers=gradtx.GaLoreDimensionNumbers(0, 0))
    with pytest.raises(ValueError, match="disjoint"):
        tx.init({"w": jnp.zeros((3, 2))})
