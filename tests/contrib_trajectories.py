"""Shared harness of the ``tests/test_contrib_*.py`` files: many trajectories, one program.

Each test builds a list of transformations (gradtx configurations and their
``optax.contrib`` counterparts), and :func:`trajectories` runs all of them in one
jitted function, one ``lax.scan`` each, on the same recorded gradients: one
compilation per dtype. Params are a list of leaves of several shapes (the order
the float64 references in ``tests/reference`` take), stepped ``p <- p + u``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_STEPS = 120
SHAPES = ((3, 4), (5,), ())

# Parity with Optax (same formulas, maybe another order of operations): 1e-6 of
# the parameters' scale (about 1) in float32, as tests/test_optax_parity.py.
OPTAX_TOL = {"float32": dict(rtol=1e-6, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-10)}
# Against the float64 references, as tests/test_reference_trajectories.py: the
# float32 run rounds each step at ~6e-8 of the scale, 120 steps accumulate ~1e-6.
REFERENCE_TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-10)}


def make_data(seed: int = 2021, *, complex_leaves: tuple[int, ...] = ()):
    """Initial params and ``NUM_STEPS`` gradients per leaf, float32-representable float64.

    Leaves listed in ``complex_leaves`` are complex (real and imaginary parts drawn
    alike). Each leaf has its own gradient scale, and early steps are larger.
    """
    rng = np.random.default_rng(seed)
    k = np.arange(NUM_STEPS)
    in_time = 1 + 2 * np.exp(-k / 10)
    theta0, grads = [], []
    for i, shape in enumerate(SHAPES):
        scale = (0.3, 2.0, 1.0)[i]
        is_complex = i in complex_leaves
        low, high = (np.complex64, np.complex128) if is_complex else (np.float32, np.float64)

        def draw(size, is_complex=is_complex):
            x = rng.normal(size=size)
            return x + 1j * rng.normal(size=size) if is_complex else x

        g = draw((NUM_STEPS, *shape)) * scale * in_time.reshape((NUM_STEPS,) + (1,) * len(shape))
        theta0.append(draw(shape).astype(low).astype(high))
        grads.append(g.astype(low).astype(high))
    return theta0, grads


def _cast(x, dtype):
    x = jnp.asarray(x)
    if jnp.iscomplexobj(x):
        return x.astype(jnp.complex64 if dtype == "float32" else jnp.complex128)
    return x.astype(dtype)


def trajectories(transformations, theta0, grads, dtype: str):
    """Every transformation's trajectory from ``theta0``, row ``t`` after ``t`` steps.

    Call it inside ``jax.enable_x64(True)`` for float64. Returns, per
    transformation, one numpy array per leaf shaped ``(NUM_STEPS + 1, *shape)``.
    """
    params = [_cast(x, dtype) for x in theta0]
    gs = [_cast(g, dtype) for g in grads]

    def path(tx, params, gs):
        def body(carry, g):
            p, state = carry
            updates, state = tx.update(g, state, p)
            p = jax.tree.map(lambda a, u: a + u, p, updates)
            return (p, state), p

        rows = jax.lax.scan(body, (params, tx.init(params)), gs)[1]
        return [jnp.concatenate([x[None], r]) for x, r in zip(params, rows, strict=True)]

    run_all = jax.jit(lambda params, gs: [path(tx, params, gs) for tx in transformations])
    return [[np.asarray(x) for x in run] for run in run_all(params, gs)]


def assert_close(got, expected, tol, what=""):
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert np.all(np.isfinite(a)), f"{what}: leaf {i} not finite"
        np.testing.assert_allclose(a, b, err_msg=f"{what}: leaf {i}", **tol)


def assert_moved(run, at_least=0.05):
    moved = max(float(np.max(np.abs(x[-1] - x[0]))) for x in run)
    assert moved > at_least, f"the trajectory barely moved ({moved:.3g})"


def by_step(grads):
    """The per-leaf gradient arrays as the references take them: step ``k``'s leaves."""
    return [[g[k] for g in grads] for k in range(NUM_STEPS)]
