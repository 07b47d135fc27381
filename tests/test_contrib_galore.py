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

# (id, gradtx kwargs, reference kwargs). The separable problem has a (4, 3)
# matrix (projected on the left), a (2, 5) one (on the right), a vector and a
# scalar (plain Adam). svd_dtype=None: the SVD in the run's own dtype.
REFERENCE_CASES = [
    ("rank-2-gap-7", dict(rank=2, update_proj_gap=7, scale=0.5), dict(r=2, T=7, alpha=0.5)),
    ("full-rank-gap-1", dict(rank=10, update_proj_gap=1), dict(r=10, T=1, alpha=1.0)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_galore_follows_the_reference(dtype):
    makers = [
        lambda kw=kw: gradtx.galore(0.05, svd_dtype=None, **kw) for _, kw, _ in REFERENCE_CASES
    ]
    with jax.enable_x64(dtype == "float64"):
        paths = H.reference_paths(makers, jnp.dtype(dtype))
    bound = 1e-10 if dtype == "float64" else 1e-4
    for (name, _, ref), got in zip(REFERENCE_CASES, paths, strict=True):
        if dtype == "float32" and name == "full-rank-gap-1":
            # An SVD at every step: float32 LAPACK picks other signs for some
            # singular vectors than float64 does, and a flipped basis vector
            # scrambles Adam's moments along it (measured 0.25). Singular
            # vectors are only defined up to sign; float64 agrees with numpy.
            continue
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
        ({"learning_rate": None}, TypeError, r"galore: learning_rate must be"),
    ],
)
def test_galore_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        gradtx.galore(**{"learning_rate": 0.1, **kwargs})


def test_dimension_numbers_that_do_not_split_the_axes_are_refused():
    tx = gradtx.galore(0.1, weight_dimension_numbers=gradtx.GaLoreDimensionNumbers(0, 0))
    with pytest.raises(ValueError, match="disjoint"):
        tx.init({"w": jnp.zeros((3, 2))})
