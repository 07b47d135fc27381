"""What the wrapper tests share: the tree, its tolerances, the inner references.

Used by tests/test_masked_partition.py, tests/test_apply_if_finite.py and
tests/test_accumulate.py, whose numpy references (tests/reference/wrappers.py) run
around the same inner references.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tests import reference as R

RTOL = {"float64": 1e-10, "float32": 1e-5}


SHAPES = {
    "emb": (4, 2),
    "layer": {"b": (5,), "w": (3, 4)},
    "norm": {"scale": (3,)},
    "temperature": (),
}


IS_SHAPE = lambda x: isinstance(x, tuple)  # noqa: E731


TREEDEF = jax.tree.structure(SHAPES, is_leaf=IS_SHAPE)


def as_tree(leaves):
    return jax.tree.unflatten(TREEDEF, list(leaves))


def adam_ref(rate):
    return functools.partial(R.adam.adam, epsilon=rate, rho_1=0.9, rho_2=0.999, delta=1e-8)


def momentum_ref(rate):
    return functools.partial(
        R.sgd.momentum, epsilon=rate, alpha=0.9, learning_rate_in_velocity=False
    )


def rmsprop_ref(rate):
    return functools.partial(R.rmsprop.rmsprop, epsilon=rate, rho=0.9, delta=1e-8)


# Against Optax's wrappers: the bound of tests/test_optax_parity.py, a few float32
# ulps of the trajectory's scale (two different XLA programs round differently).
PARITY_TOL = {"float32": dict(rtol=1e-6, atol=5e-7), "float64": dict(rtol=1e-12, atol=1e-13)}


def paths_of_all_cases(cases, rates, inputs, scan_path, dtype) -> dict:
    """``{case.id: paths}`` for every case, at every rate, traced into one jitted function.

    Independent vmapped scans sit side by side in one program (one compilation
    instead of one per case, the same arithmetic per scan); each parametrized test
    then asserts on its own case. ``inputs(dtype)`` gives ``(theta, grads)`` and
    ``scan_path(tx, theta, grads)`` one case's path. For float64, call it inside
    ``jax.enable_x64``.
    """
    theta, grads = inputs(dtype)
    run = jax.jit(
        lambda rates: [
            jax.vmap(lambda rate, make=case.make: scan_path(make(rate), theta, grads))(rates)
            for case in cases
        ]
    )
    paths = jax.device_get(run(jnp.asarray(rates, dtype)))
    return dict(zip([case.id for case in cases], paths, strict=True))
