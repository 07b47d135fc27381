"""``flat(tx)`` gives ``tx``'s numbers for every registered transformation.

Per-leaf methods are element-wise, so running them on one buffer per dtype must
not change the math. Left out by their flags, as :func:`gradtx.flat` documents:
entries whose mask or labels are functions of the params (the function would see
the buffers), per-leaf reductions (one "leaf" per dtype inside), and random noise
(drawn per buffer: the same distribution, other samples).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests.registry import REFERENCE_STEPS, REGISTRY, reference_run, run, tiny_grads, tiny_params

# Three steps: the second reaches the sync of a period-2 block (lookahead,
# accumulate) and the third runs on the state it left; the leaf-by-leaf run is
# the cached float32 reference of tests/registry.py.
STEPS = REFERENCE_STEPS
FLATTENABLE = [e for e in REGISTRY if not (e.selects_by_tree or e.reduces_per_leaf or e.stochastic)]


@pytest.mark.parametrize("entry", FLATTENABLE, ids=str)
def test_flat_gives_the_same_updates_as_leaf_by_leaf(entry):
    params = tiny_params()
    grads = [tiny_grads(step) for step in range(STEPS)]
    expected, _ = reference_run(entry, STEPS)  # run(entry.make(), params, grads)
    got, _ = run(gradtx.flat(entry.make()), params, grads)
    for want, have in zip(expected, got, strict=True):
        for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(have), strict=True):
            assert a.dtype == b.dtype
            # Same element-wise arithmetic; global reductions (norms, inner products)
            # may sum in another order, hence a few float32 ulps of the largest
            # element: one that cancels (nonlinear CG's g + beta u) can be small.
            largest = float(np.max(np.abs(np.asarray(a, np.float64)), initial=0.0))
            np.testing.assert_allclose(
                np.asarray(b), np.asarray(a), rtol=2e-6, atol=max(1e-7, 1e-6 * largest)
            )


def test_flat_refuses_a_mask_tree_it_cannot_apply():
    params = tiny_params()
    tx = gradtx.flat(gradtx.add_decayed_weights(0.1, mask={"w": True, "b": False}))
    with pytest.raises(ValueError, match="mask"):
        run(tx, params, [jax.tree.map(jnp.zeros_like, params)])
