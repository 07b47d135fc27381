"""The contract every public transformation keeps, checked over the whole registry.

Each test is generic: it reads the entry's flags, never its name, so a new entry
in tests/registry.py is held to all of it. The meta-test at the top fails when a
public transformation is exported without a registry entry.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import gradtx
from tests.registry import (
    BY_NAME,
    DTYPE_MATRIX,
    NAMED_OPTIMIZERS,
    NOT_TRANSFORMATIONS,
    REGISTRY,
    reference_run,
    run,
    run_entry,
    tiny_grads,
    tiny_params,
)

# Transformations composed with neutral blocks must give bit-identical numbers on
# CPU; the same program traced twice is deterministic. A small tolerance is kept
# only where a different compiled program (jit vs a chain) may fuse differently.
RTOL = 1e-6
ATOL = 1e-7


def _public_functions():
    for name in gradtx.__all__:
        obj = getattr(gradtx, name)
        if inspect.isfunction(obj):
            yield name, obj


def _returns_transformation(fn) -> bool:
    """Whether ``fn`` makes a GradientTransformation: by its annotation, else by a call.

    The annotation is read as text (the package uses postponed annotations). An
    unannotated factory is called with no arguments, then with one number, the
    shape of every hyperparameter-only factory in the package.
    """
    annotation = inspect.signature(fn).return_annotation
    if annotation is not inspect.Signature.empty:
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        return "GradientTransformation" in str(text)
    for args in ((), (0.5,)):
        try:
            result = fn(*args)
        except Exception:  # noqa: BLE001 - a factory that needs other arguments
            continue
        return isinstance(result, gradtx.GradientTransformation)
    return False


# ---------------------------------------------------------------- the registry itself


def test_registry_covers_every_public_transformation():
    registered = {entry.public for entry in REGISTRY}
    missing = sorted(
        name
        for name, fn in _public_functions()
        if _returns_transformation(fn) and name not in registered
    )
    assert not missing, f"public transformations without a tests/registry.py entry: {missing}"


def test_the_detector_recognises_every_registered_factory():
    """Guards the meta-test above: it must not pass by failing to see factories."""
    registered = {entry.public for entry in REGISTRY}
    for name, fn in _public_functions():
        if name in registered:
            assert _returns_transformation(fn), name


def test_every_public_function_is_either_registered_or_known_not_a_transformation():
    registered = {entry.public for entry in REGISTRY}
    for name, fn in _public_functions():
        if name in NOT_TRANSFORMATIONS:
            assert not _returns_transformation(fn), f"{name} returns a transformation"
        else:
            assert name in registered, f"{name} is neither registered nor listed as a non-factory"
    stale = sorted({e.public for e in REGISTRY} - set(gradtx.__all__))
    assert not stale, f"registry entries for names gradtx does not export: {stale}"


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_entry_builds_a_plain_pair_of_functions(entry):
    tx = entry.make()
    assert isinstance(tx, gradtx.GradientTransformation)
    # Flax's nnx.Optimizer rejects a tx that is a pytree with array leaves.
    assert all(callable(leaf) for leaf in jax.tree.leaves(tx))
    if entry.hyperparameter is not None:
        assert entry.hyperparameter_values, entry.name
    if entry.is_named_optimizer:
        # The Flax and vmap tests vary the learning rate of every named optimizer.
        assert entry.hyperparameter == "learning_rate" and entry.descends, entry.name


@pytest.mark.parametrize("entry", [e for e in REGISTRY if e.blocks], ids=str)
def test_an_entry_said_to_chain_blocks_holds_their_states_in_order(entry):
    """``Entry.blocks`` takes an entry out of the dtype matrix: the claim must hold.

    Its state is the tuple of the named blocks' states (the same types, fields and
    leaf dtypes), so its per-leaf arithmetic is theirs plus nothing.
    """
    state = entry.make().init(tiny_params())
    parts = [BY_NAME[name].make().init(tiny_params()) for name in entry.blocks]
    assert isinstance(state, tuple) and len(state) == len(parts), entry.name
    for got, expected in zip(state, parts, strict=True):
        assert type(got) is type(expected), (entry.name, type(got), type(expected))
        assert jax.tree.structure(got) == jax.tree.structure(expected), entry.name
        assert [x.dtype for x in jax.tree.leaves(got)] == [
            x.dtype for x in jax.tree.leaves(expected)
        ], entry.name


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_needs_params_flag_is_honest(entry):
    tx = entry.make()
    params = tiny_params()
    state = tx.init(params)
    if entry.needs_params:
        with pytest.raises(ValueError, match="params"):
            tx.update(tiny_grads(0), state, None)
    else:
        with_params, _ = tx.update(tiny_grads(0), state, params)
        without, _ = tx.update(tiny_grads(0), state, None)
        jax.tree.map(np.testing.assert_array_equal, with_params, without)


@pytest.mark.parametrize("entry", [e for e in REGISTRY if not e.checks_structure], ids=str)
def test_entries_without_structure_checks_hold_no_per_leaf_state(entry):
    """``checks_structure=False`` is only honest for a state with nothing per leaf."""
    tx = entry.make()
    state = tx.init(tiny_params())
    for leaf in jax.tree.leaves(state):
        # A stochastic block's PRNG key is one array for the whole tree, not per leaf.
        assert jnp.ndim(leaf) == 0 or (entry.stochastic and leaf.dtype == jnp.uint32)
    other = {"z": jnp.ones(4)}
    updates, _ = tx.update(other, state, other)
    assert jax.tree.structure(updates) == jax.tree.structure(other)


# ---------------------------------------------------------------- the contract


def _leaf_types(tree):
    return [(jnp.shape(x), jnp.result_type(x), getattr(x, "weak_type", False)) for x in tree]


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_unknown_extra_args_are_ignored(entry):
    tx = entry.make()
    params = tiny_params()
    state = tx.init(params)
    outputs, after_one = reference_run(entry, steps=1)  # tx.update(tiny_grads(0), state, params)
    plain = (outputs[0], after_one)
    # Extra args the method does not read; the ones it needs (entry.extra_args) keep
    # the values make() supplies.
    unknown = {"foo": 1, "value": jnp.float32(2.0), "key": None}
    unknown = {k: v for k, v in unknown.items() if k not in entry.extra_args}
    extra = tx.update(tiny_grads(0), state, params, **unknown)
    jax.tree.map(np.testing.assert_array_equal, plain, extra)


# bfloat16 params with bfloat16 gradients are not repeated here: every entry runs
# them in tests/test_behaviour.py (test_bfloat16_params_track_the_float32_run),
# which asserts the same dtype and finiteness and compares the values too. The
# mixed case, where float32 state and params meet low-precision gradients and
# promote, is only here.
DTYPE_CASES = [
    (jnp.float32, jnp.float32),
    (jnp.float32, jnp.bfloat16),  # low-precision gradients of float32 master weights
]


@pytest.mark.parametrize("param_dtype, grad_dtype", DTYPE_CASES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("entry", DTYPE_MATRIX, ids=str)
def test_update_dtype_equals_gradient_dtype(entry, param_dtype, grad_dtype):
    if param_dtype == grad_dtype == jnp.float32:
        outputs, _ = reference_run(entry, steps=2)
    else:
        outputs, _ = run_entry(
            entry, tiny_params(param_dtype), [tiny_grads(i, grad_dtype) for i in range(2)]
        )
    for updates in outputs:
        expected = jax.tree.leaves(tiny_grads(0, grad_dtype))
        for u, g in zip(jax.tree.leaves(updates), expected, strict=True):
            assert u.dtype == g.dtype and u.shape == g.shape, entry.name
            assert bool(jnp.all(jnp.isfinite(u.astype(jnp.float32)))), entry.name


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_state_structure_and_dtypes_are_stable_across_steps(entry):
    initial = entry.make().init(tiny_params())
    _, later = reference_run(entry, steps=2)
    assert jax.tree.structure(initial) == jax.tree.structure(later)
    assert _leaf_types(jax.tree.leaves(initial)) == _leaf_types(jax.tree.leaves(later))
    for leaf in jax.tree.leaves(later):
        assert isinstance(leaf, jax.Array), f"{entry.name}: state leaf {leaf!r} is not an array"


def _updates_of(tx, steps=2):
    params = tiny_params()
    outputs, _ = run(tx, params, [tiny_grads(i) for i in range(steps)])
    return outputs


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_works_inside_gradtx_chain(entry):
    alone, _ = reference_run(entry, steps=2)  # _updates_of(entry.make())
    chained = _updates_of(gradtx.chain(gradtx.identity(), entry.make(), gradtx.scale(1.0)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL), alone, chained)
    named = _updates_of(gradtx.named_chain(("tx", entry.make())))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL), alone, named)


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_a_jitted_step_inside_optax_chain_traces_once_and_matches_eager(entry):
    """One compiled training step per entry, for three checks at once.

    Inside ``optax.chain`` (Optax's composition takes gradtx blocks), under
    ``jax.jit``, fed its own output state: it traces once (the state keeps its
    types between steps, so a training loop never recompiles), and its updates are
    the eager run's.
    """
    alone, _ = reference_run(entry, steps=2)  # _updates_of(entry.make())
    tx = optax.chain(optax.identity(), entry.make(), optax.scale(1.0))
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(None)  # runs once per trace, not per call
        updates, state = tx.update(grads, state, params)
        return updates, gradtx.apply_updates(params, updates), state

    fixed = tiny_params()
    params, state = fixed, tx.init(fixed)
    for i in range(4):
        # The first two steps at the reference's fixed params, the next two at
        # params moved by apply_updates (which must keep their types too).
        updates, moved, state = step(params, state, tiny_grads(i))
        if i < len(alone):
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL), alone[i], updates
            )
        if i >= len(alone) - 1:
            params = moved
    assert len(traces) == 1, f"{entry.name} retraced: the state changed type between steps"
    # And Optax's apply_updates accepts gradtx updates.
    moved = optax.apply_updates(fixed, alone[0])
    jax.tree.map(np.testing.assert_array_equal, moved, gradtx.apply_updates(fixed, alone[0]))


class _Tiny(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
        return self.linear(x)


@pytest.mark.parametrize("entry", NAMED_OPTIMIZERS, ids=str)
def test_one_flax_nnx_optimizer_step(entry):
    model = _Tiny(nnx.Rngs(0))
    # The smallest registered rate: one step of every method then descends.
    tx = entry.make(**{entry.hyperparameter: min(entry.hyperparameter_values)})
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    y = jnp.ones((4, 2))

    def loss_fn(m):
        return jnp.mean((m(x) - y) ** 2)

    before_params = nnx.as_pure(nnx.state(model, nnx.Param))
    before = loss_fn(model)
    grads = nnx.grad(loss_fn)(model)
    updates = optimizer.update(model, grads)
    after_params = nnx.as_pure(nnx.state(model, nnx.Param))
    expected = jax.tree.map(lambda p, u: p + u, before_params, updates)
    jax.tree.map(np.testing.assert_array_equal, expected, after_params)
    assert int(optimizer.step[...]) == 1
    assert loss_fn(model) < before, entry.name
