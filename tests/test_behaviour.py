"""How every transformation behaves as a JAX citizen, over the whole registry.

jit equals eager; a batch of hyperparameters under ``vmap`` equals separate runs;
the state is a plain pytree of arrays (``tree.map``, donation, flatten/unflatten);
float32, float64, bfloat16, float16 and complex64 parameters; scalar leaves,
``None`` leaves and the empty tree. Complex Adam and RMSProp are checked against
numpy loops written here from the update rules, with ``|g|^2`` second moments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests.registry import (
    BY_NAME,
    COMPLEX,
    DTYPE_MATRIX,
    REGISTRY,
    WITH_HYPERPARAMETER,
    reference_run,
    run,
    run_entry,
    slow_eagerly,
    tiny_grads,
    tiny_params,
)

# Two steps, as in tests/test_contract.py: the second reads the state the first
# wrote (a moment, a curvature pair, a count), and the registry's periodic blocks
# (lookahead, accumulate) have period 2 or less, so it is also a sync or an
# emission. Every property below (dtypes, jit against eager, vmap, scalar and None
# leaves) shows there as it would after more steps.
STEPS = 2
# The eager float32 run of each entry (STEPS steps on tiny_params and tiny_grads)
# is the reference of several tests below; tests.registry.reference_run computes
# it once per process. The dtype and tree tests run each entry with
# tests.registry.run_entry: eagerly, or compiled where the update runs loops.

# The same arithmetic compiled as one XLA program (jit, vmap) or op by op (eager)
# may fuse and reassociate differently: a few float32 ulps, never more.
RTOL = 1e-5
ATOL = 1e-6


def _close(a, b, rtol=RTOL, atol=ATOL):
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(
            np.asarray(x, np.float64) if not jnp.iscomplexobj(x) else np.asarray(x),
            np.asarray(y, np.float64) if not jnp.iscomplexobj(y) else np.asarray(y),
            rtol=rtol,
            atol=atol,
        ),
        a,
        b,
    )


_SEARCH_INFOS = (gradtx.BacktrackingLinesearchInfo, gradtx.ZoomLinesearchInfo)


def _state_is_finite(state):
    """Every state leaf is finite, but a line search's ``info``: its errors are inf, as
    Optax's, after a search that made no trial (an uphill or a zero direction)."""
    leaves = jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, _SEARCH_INFOS))
    return all(bool(jnp.all(jnp.isfinite(x))) for x in leaves if not isinstance(x, _SEARCH_INFOS))


def _grads(dtype=jnp.float32, steps=STEPS):
    return [tiny_grads(i, dtype) for i in range(steps)]


# ---------------------------------------------------------------- jit and vmap


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_jit_with_donated_state_equals_no_jit_and_deletes_nothing_else(entry):
    """One compiled step, fed its own output state (donated, as a training loop does).

    Its updates and state are the eager run's; and ``init`` returns buffers of its
    own, so donating the state deletes neither the params nor a later ``init``'s
    state (a restart, a second run).
    """
    tx, params = BY_NAME[entry.name].make(), tiny_params()
    step = jax.jit(lambda g, s: tx.update(g, s, params), donate_argnums=1)
    eager, eager_state = reference_run(entry, STEPS)  # run(tx, params, _grads())
    params_before = jax.tree.map(np.array, params)

    state = tx.init(params)
    init_before = jax.tree.map(np.array, state)
    for i, expected in enumerate(eager):
        updates, state = step(tiny_grads(i), state)
        _close(updates, expected)
    _close(state, eager_state)
    _close(params, params_before, rtol=0, atol=0)
    _close(tx.init(params), init_before, rtol=0, atol=0)


@pytest.mark.parametrize("entry", WITH_HYPERPARAMETER, ids=str)
def test_vmap_over_a_batch_of_hyperparameters_equals_separate_runs(entry):
    """The factory is called *inside* the vmapped function: the value is a tracer."""
    params = tiny_params()
    grads = _grads(steps=2)

    def final_updates(h):
        outputs, state = run(entry.make(**{entry.hyperparameter: h}), params, grads)
        return outputs[-1], state

    values = jnp.asarray(entry.hyperparameter_values, jnp.float32)
    batched_updates, batched_state = jax.vmap(final_updates)(values)
    # The separate runs are eager, or one jitted function where eager costs seconds.
    separate = jax.jit(final_updates) if slow_eagerly(entry.name) else final_updates
    for i, h in enumerate(entry.hyperparameter_values):
        separate_updates, separate_state = separate(h)
        _close(jax.tree.map(lambda x, i=i: x[i], batched_updates), separate_updates)
        _close(jax.tree.map(lambda x, i=i: x[i], batched_state), separate_state)


# ---------------------------------------------------------------- the state as a pytree


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_state_survives_tree_map_and_flatten_round_trip(entry):
    """Donation is in :func:`test_jit_with_donated_state_equals_no_jit`."""
    tx = entry.make()
    params = tiny_params()
    _, state = reference_run(entry, steps=2)  # run(tx, params, _grads(steps=2))
    g = tiny_grads(5)
    expected = tx.update(g, state, params)

    leaves, treedef = jax.tree.flatten(state)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves), entry.name
    round_trip = jax.tree.unflatten(treedef, leaves)
    _close(tx.update(g, round_trip, params), expected, rtol=0, atol=0)

    copied = jax.tree.map(lambda x: jnp.array(x, copy=True), state)
    assert jax.tree.structure(copied) == treedef
    _close(tx.update(g, copied, params), expected, rtol=0, atol=0)


# ---------------------------------------------------------------- dtypes


@pytest.mark.parametrize("entry", DTYPE_MATRIX, ids=str)
def test_float64_params_with_x64_enabled(entry):
    outputs32, state32 = reference_run(entry, STEPS)
    with jax.enable_x64(True):
        outputs64, state64 = run_entry(entry, tiny_params(jnp.float64), _grads(jnp.float64))
        for updates in outputs64:
            assert all(u.dtype == jnp.float64 for u in jax.tree.leaves(updates)), entry.name
        # State leaves that follow the params' float32 become float64; explicitly
        # chosen dtypes (a bfloat16 mu, the int32 count) stay what they were. (No
        # registry entry pins a state dtype to float32, which would stay float32.)
        for s32, s64 in zip(jax.tree.leaves(state32), jax.tree.leaves(state64), strict=True):
            want = jnp.float64 if s32.dtype == jnp.float32 else s32.dtype
            assert s64.dtype == want, (entry.name, s32.dtype, s64.dtype)
        # float32 rounding of the float32 run bounds the difference.
        _close(outputs64, outputs32, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("entry", DTYPE_MATRIX, ids=str)
def test_bfloat16_params_track_the_float32_run(entry):
    expected, _ = reference_run(entry, STEPS)
    params16 = tiny_params(jnp.bfloat16)
    outputs, state = run_entry(entry, params16, _grads(jnp.bfloat16))
    # A block that rounds bfloat16 params returns float32 steps onto the rounded
    # values (see Entry.rounds_params); tests/test_bf16_params.py checks their numbers.
    want = jnp.float32 if entry.rounds_params else jnp.bfloat16
    for updates in outputs:
        # The bfloat16 case of tests/test_contract.py's dtype test is this one.
        for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(params16), strict=True):
            assert u.dtype == want and u.shape == g.shape, entry.name
            assert bool(jnp.all(jnp.isfinite(u.astype(jnp.float32)))), entry.name
    # bfloat16 keeps 8 significant bits (relative rounding 2^-9 per value); the
    # inputs, the stored moments and the output are each rounded once per step,
    # so a few steps stay within a few percent of the float32 run. (A line search
    # may accept another trial step on rounded losses: see Entry.searches_line.)
    if not (entry.searches_line or entry.rounds_params):
        _close(outputs, expected, rtol=3e-2, atol=3e-3)
    assert _state_is_finite(state), entry.name


# With a zero gradient, an entry driven by the gradient alone holds zeros and its
# constants (eps, counts): only the dtype's range matters, and float16's range lies
# inside bfloat16's, so float16 is the case where such a constant under- or
# overflows. Entries that read the params (weight decay, second-order methods,
# whose line searches and curvature pairs divide differences of rounded params) or
# draw noise compute with nonzero numbers, where bfloat16's coarser rounding
# differs from float16's: they run in both dtypes.
_LOW_PRECISION_CASES = [
    pytest.param(entry, dtype, id=f"{entry.name}-{jnp.dtype(dtype).name}")
    for entry in DTYPE_MATRIX
    for dtype in (jnp.float16, jnp.bfloat16)
    if dtype == jnp.float16 or entry.needs_params or entry.stochastic
]


@pytest.mark.parametrize("entry, dtype", _LOW_PRECISION_CASES)
def test_low_precision_params_with_zero_gradient_give_finite_updates(entry, dtype):
    """eps must not underflow: 1e-8 is 0 in float16, so the root and division run in float32."""
    params = tiny_params(dtype)
    zeros = jax.tree.map(jnp.zeros_like, params)
    outputs, state = run_entry(entry, params, [zeros] * STEPS)
    want = jnp.float32 if entry.rounds_params and dtype == jnp.bfloat16 else dtype
    for updates in outputs:
        for u in jax.tree.leaves(updates):
            assert u.dtype == want
            assert bool(jnp.all(jnp.isfinite(u))), entry.name
            if not (entry.needs_params or entry.stochastic):
                # Nothing but the gradient drives these: no gradient, no step.
                assert bool(jnp.all(u == 0)), entry.name
    assert _state_is_finite(state), entry.name


def test_centered_rmsprop_bias_corrected_first_step_is_finite_in_bfloat16():
    """r_hat - g_bar_hat^2 is exactly 0 at t=1; rounding must not take the root of < 0."""
    tx = gradtx.scale_by_stddev(bias_correction=True)
    params = tiny_params(jnp.bfloat16)
    outputs, _ = run(tx, params, _grads(jnp.bfloat16, steps=2))
    for updates in outputs:
        assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


# ---------------------------------------------------------------- complex parameters


@pytest.mark.parametrize("entry", COMPLEX, ids=str)
def test_complex_run_is_the_real_run_rotated(entry):
    """Rotating gradients and params by a common phase rotates the updates.

    Every moment is linear in ``g`` or uses ``|g|^2``, which the phase leaves
    unchanged; a ``g * g`` second moment would turn by twice the angle and fail.
    """
    phase = np.exp(1j * 0.7).astype(np.complex64)
    rotate = lambda tree: jax.tree.map(lambda x: x.astype(jnp.complex64) * phase, tree)
    expected, _ = reference_run(entry, STEPS)
    outputs, _ = run_entry(entry, rotate(tiny_params()), [rotate(g) for g in _grads()])
    for updates in outputs:
        assert all(u.dtype == jnp.complex64 for u in jax.tree.leaves(updates)), entry.name
    _close(outputs, [rotate(u) for u in expected])


def _complex_grads(steps, seed=3):
    rng = np.random.default_rng(seed)
    return [
        {
            "w": (rng.normal(size=(2, 3)) + 1j * rng.normal(size=(2, 3))).astype(np.complex64),
            "b": (rng.normal(size=2) + 1j * rng.normal(size=2)).astype(np.complex64),
        }
        for _ in range(steps)
    ]


def _adam_numpy(grads, lr, b1, b2, eps):
    """Kingma & Ba Alg. 1 on complex numbers, second moment |g|^2 (complex128 math)."""
    m = v = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.complex128)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * np.abs(g) ** 2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        out.append(-lr * m_hat / (np.sqrt(v_hat) + eps))
    return out


def _centered_rmsprop_numpy(grads, lr, decay, eps, momentum):
    """Graves (2013) centered RMSProp with heavy-ball momentum (lr outside), complex."""
    g_bar = r = b = 0.0
    out = []
    for g in grads:
        g = g.astype(np.complex128)
        g_bar = decay * g_bar + (1 - decay) * g
        r = decay * r + (1 - decay) * np.abs(g) ** 2
        b = momentum * b + g / np.sqrt(r - np.abs(g_bar) ** 2 + eps)
        out.append(-lr * b)
    return out


def _per_leaf(reference, grads, **hyper):
    names = grads[0].keys()
    columns = {k: reference([g[k] for g in grads], **hyper) for k in names}
    return [{k: columns[k][t] for k in names} for t in range(len(grads))]


@pytest.mark.parametrize(
    "make, reference, hyper",
    [
        (
            lambda: gradtx.adam(0.1, b1=0.8, b2=0.9),
            _adam_numpy,
            dict(lr=0.1, b1=0.8, b2=0.9, eps=1e-8),
        ),
        (
            lambda: gradtx.rmsprop(0.05, decay=0.8, eps=1e-6, centered=True, momentum=0.5),
            _centered_rmsprop_numpy,
            dict(lr=0.05, decay=0.8, eps=1e-6, momentum=0.5),
        ),
    ],
    ids=["adam", "rmsprop_centered_momentum"],
)
def test_complex64_matches_a_numpy_complex_reference(make, reference, hyper):
    grads = _complex_grads(6)
    params = jax.tree.map(jnp.zeros_like, grads[0])
    outputs, state = run(make(), params, [jax.tree.map(jnp.asarray, g) for g in grads])
    # Second moments are real: |g|^2 in float32, not a complex g * g.
    second = [x for x in jax.tree.leaves(state) if x.ndim and not jnp.iscomplexobj(x)]
    assert second and all(x.dtype == jnp.float32 for x in second)
    _close(outputs, _per_leaf(reference, grads, **hyper), rtol=2e-5, atol=1e-6)


def test_complex_sgd_momentum_equals_sgd_on_stacked_real_and_imaginary_parts():
    """Momentum SGD is linear in g: a complex coordinate is two independent real ones."""
    grads = _complex_grads(5)
    stack = lambda tree: jax.tree.map(lambda z: jnp.stack([z.real, z.imag]), tree)
    tx = gradtx.sgd(0.1, momentum=0.9, nesterov=True)
    complex_out, _ = run(tx, jax.tree.map(jnp.zeros_like, grads[0]), grads)
    real_out, _ = run(tx, stack(jax.tree.map(jnp.zeros_like, grads[0])), [stack(g) for g in grads])
    _close([stack(u) for u in complex_out], real_out)


# ---------------------------------------------------------------- unusual trees


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_scalar_leaves(entry):
    """A 0-d leaf behaves as the same number held in a 1-element vector."""
    scalar = lambda t: {"s": t["b"][0], "w": t["w"]}
    vector = lambda t: {"s": t["b"][:1], "w": t["w"]}
    grads = _grads()
    out_s, state_s = run_entry(entry, scalar(tiny_params()), [scalar(g) for g in grads])
    out_v, _ = run_entry(entry, vector(tiny_params()), [vector(g) for g in grads])
    for us, uv in zip(out_s, out_v, strict=True):
        assert us["s"].shape == ()
        _close(us["s"], uv["s"][0])
        _close(us["w"], uv["w"])
    params = gradtx.apply_updates(scalar(tiny_params()), out_s[-1])
    assert params["s"].shape == () and params["s"].dtype == jnp.float32
    # No leaf gains axes beyond the params' own, except L-BFGS's memory, which
    # stacks its m pairs on one leading axis.
    assert all(jnp.ndim(x) in (0, 1, 2, 3) for x in jax.tree.leaves(state_s))


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_none_leaves_pass_through(entry):
    with_none = lambda t: {**t, "frozen": None}
    params = with_none(tiny_params())
    outputs, _ = run_entry(entry, params, [with_none(g) for g in _grads()])
    expected, _ = reference_run(entry, STEPS)
    for updates, reference in zip(outputs, expected, strict=True):
        assert updates["frozen"] is None
        _close({k: v for k, v in updates.items() if k != "frozen"}, reference)
    moved = gradtx.apply_updates(params, outputs[-1])
    assert moved["frozen"] is None
    assert moved["w"].dtype == jnp.float32


@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_empty_tree(entry):
    tx = entry.make()
    state = tx.init({})
    updates, new_state = tx.update({}, state, {})
    assert updates == {}
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert gradtx.apply_updates({}, updates) == {}
    jitted_updates, _ = jax.jit(lambda s: tx.update({}, s, {}))(state)
    assert jitted_updates == {}


# ---------------------------------------------------------------- temporaries

# A donated step (``update`` then ``apply_updates``) should need no buffer beyond
# the params, the gradient and the state: on a large leaf, each extra one costs a
# pass over memory and, on XLA:CPU, which hands large temporaries back to the
# system after every run, a page fault per 4 KB at every step. The entries below
# hold more, in leaves of the test's leaf (XLA:CPU's figures at jax 0.10.2), and
# why; every other entry holds less than an eighth of one.
_N = 1 << 16
_TEMPORARY_LEAVES = {
    # A dense n x n matrix is the method: the Hessian (Newton) or its inverse (BFGS).
    **dict.fromkeys(["newton", "scale_by_newton", "newton_backtracking"], 2.5 * _N),
    "scale_by_newton_damp": 4.5 * _N,
    **dict.fromkeys(["bfgs", "scale_by_bfgs", "bfgs_fixed_step"], 1.1 * _N),
    # Vectors held through a loop: CG's (Hessian-free), the two-loop recursion's
    # (L-BFGS), the trial point and its gradient (line searches).
    **dict.fromkeys(["hessian_free", "scale_by_hessian_free"], 4.5),
    **dict.fromkeys(["lbfgs", "scale_by_lbfgs", "lbfgs_fixed_step"], 3.1),
    **dict.fromkeys(["scale_by_backtracking_linesearch", "nonlinear_cg"], 2.1),
    "scale_by_backtracking_linesearch_store_grad": 2.1,
    "scale_by_zoom_linesearch": 1.1,
    # Optax's flatten concatenates every leaf into one vector: a params-sized copy
    # by design (gradtx.flat keeps large leaves apart); measured 1.0005.
    "flatten": 1.1,
    # The new direction is the update and the state, and its beta reads the old one.
    **dict.fromkeys(
        [
            "scale_by_nonlinear_cg_polak_ribiere_plus",
            "scale_by_nonlinear_cg_fletcher_reeves",
            "nonlinear_cg_fixed_step",
        ],
        1.1,
    ),
    # jax.random draws the normal sample through uint32 bits (Optax's: 4.06 too).
    "add_noise": 4.1,
    # DP-SGD's entries see the per-example batch of two that they build (two
    # leaves), then the clipped sum and the noise's bits (Optax's dpsgd through
    # the same batch: 5.0, noiseless too; gradtx's draws nothing without noise).
    **dict.fromkeys(["dpsgd", "differentially_private_aggregate"], 5.1),
    "dpsgd_nesterov_noiseless": 3.1,
    # ACProp's step reads m_{t-1} and s_{t-1}, whose donated buffers receive m_t
    # and s_t: XLA:CPU copies both first (measured 2.0005; Optax's 2.0005 too).
    **dict.fromkeys(["acprop", "scale_by_acprop"], 2.1),
    # A lax.cond returns the inner update as a buffer of its own; inside it,
    # RMSProp keeps the averaged gradient, which two of its kernels read.
    **dict.fromkeys(
        ["accumulate", "apply_if_finite", "apply_if_finite_gives_up", "multi_steps"], 1.1
    ),
    **dict.fromkeys(["conditionally_mask", "conditionally_transform"], 1.1),
    # XLA:CPU reduces a bool mask (jnp.any) through a stored pred array: a byte per element.
    "zero_nans": 0.3,
    "accumulate_every_step": 2.1,
    # The update feeds its own norm and the params; the squared gradient, the
    # gradient's norm and Adam's second moment.
    "record_curves": 2.1,
    # Rprop+ and iRprop+ undo a step with the old step sizes and int8 signs, read
    # after the new ones overwrite them (1.25 leaves); iRprop- keeps the old signs
    # (0.25); Rprop- two int8 arrays of signs (0.5).
    **dict.fromkeys(["rprop_rprop_plus", "rprop_irprop_plus"], 1.3),
    "rprop_rprop_minus": 0.55,
    **dict.fromkeys(["rprop_irprop_minus", "scale_by_rprop"], 0.3),
    # XLA keeps in a buffer what two kernels read: the root that scales the
    # gradient (Nesterov momentum and the step), the decayed gradient g + lambda p.
    "rmsprop_centered_nesterov": 1.1,
    # Schedule-Free: the base step u (Adam's root and division) feeds both z and
    # the params' step, and XLA keeps it in a buffer rather than recompute it
    # (measured 1.0005 to 1.0007; the SGD form recomputes g + lambda p: 0).
    **dict.fromkeys(["schedule_free", "schedule_free_adamw"], 1.1),
    # ADOPT normalises by the old v, which the same step overwrites in place:
    # XLA keeps a copy of one of them (measured 1.0003).
    **dict.fromkeys(["scale_by_adopt", "adopt"], 1.1),
    # adadelta always chains its decay block (as Optax's), so g + lambda p, with
    # lambda = 0 by default, is the same buffer with or without a decay.
    **dict.fromkeys(["adadelta", "adadelta_weight_decay"], 1.1),
    # reset_state selects between the inner state and a fresh init from the new
    # slow weights, which the landed params' sum also feeds: XLA keeps that sum.
    "lookahead_momentum_reset": 1.1,
    # Optax's figures are the same for each of these. Lion's step reads the old
    # momentum, its state the new one: XLA computes the new one into a buffer.
    **dict.fromkeys(
        ["lion", "scale_by_lion", "scale_by_lion_refined", "scale_by_lion_smooth"], 1.1
    ),
    # AdaBelief's s reads the new m, and the step computes s again from the old
    # s, of which XLA keeps a copy.
    **dict.fromkeys(["adabelief", "scale_by_belief", "scale_by_belief_nesterov"], 1.1),
    # The state takes g_t in place of g_{t-1}, which the step reads: XLA copies
    # g_{t-1} first; Optimistic Adam also keeps Adam's ratio r_t, read by both.
    **dict.fromkeys(["scale_by_optimistic_gradient", "optimistic_gradient_descent"], 1.1),
    **dict.fromkeys(["optimistic_adam", "optimistic_adam_v2"], 2.1),
    # add_noise's draw, as above.
    "noisy_sgd": 4.1,
    # A trust ratio (LAMB, LARS) and Adafactor's update clipping read the norm of
    # the whole update before scaling it, so XLA keeps the update in a buffer (Optax:
    # 2.0 for each).
    **dict.fromkeys(
        [
            "lamb",
            "lamb_weight_decay_mask",
            "lamb_pytorch_optimizer_forms",
            "lars",
            "lars_nesterov_masked_trust_ratio",
        ],
        1.1,
    ),
    "adafactor": 1.1,
    # Adan reads the previous gradient (g_k - g_{k-1}) in the kernels of its three
    # moments while its buffer takes the new gradient (Optax: 1.0).
    **dict.fromkeys(["adan", "scale_by_adan"], 1.1),
    # Hutchinson's estimate u * (H u): the probe u (drawn through uint32 bits), the
    # gradient at the params and its forward derivative H u; Sophia runs it inside
    # a lax.cond, whose buffers are the larger branch's. Measured 4.007.
    **dict.fromkeys(["hutchinson_estimator_diag_hessian", "scale_by_sophia", "sophia"], 4.1),
    # D-Adaptation's inner product <g, s_k / (sqrt(v_k) + eps)> reads s and v
    # before the step overwrites them: XLA keeps both (Optax's: 2.0 too).
    "dadapt_adamw": 2.1,
    # COCOB's step w_{t+1} - w_t: XLA keeps one params-sized buffer (Optax's: 1.0 too).
    **dict.fromkeys(["scale_by_cocob", "cocob"], 1.1),
    # MoMo-Adam's step needs a sum over the whole tree (tau) before it can use the
    # new d and v, so XLA keeps both (Optax's: 2.0 too).
    "momo_adam": 2.1,
    # Mechanic's step x_ref + S (Delta + u) - x reads x after the base optimizer's
    # kernels: XLA keeps one params-sized buffer (Optax's: 1.0 too).
    "mechanize": 1.1,
    # quantized state: the step holds each moment dequantized (float32), its new
    # value, x / N_b and the int32 index of the nearest-code search, whose table
    # gathers XLA:CPU does not fuse. Measured 13.003 (two moments), 8.001 (one).
    # The rank-1 entries: this test's params are vectors, so v is in blocks too.
    **dict.fromkeys(
        [
            "adamw_8bit",
            "adamw_4bit",
            "adamw_4bit_nu_block",
            "quantize_state_adam",
            "quantize_state_adam_rank1",
        ],
        13.1,
    ),
    "lion_8bit": 8.1,
}


@pytest.mark.perf
@pytest.mark.skipif(
    jax.default_backend() != "cpu",
    reason="XLA:CPU's buffer assignment; other backends fuse and allocate otherwise",
)
@pytest.mark.parametrize("entry", REGISTRY, ids=str)
def test_a_donated_step_holds_no_params_sized_temporary(entry):
    tx = entry.make()
    params = {"w": jnp.full((_N,), 0.5), "b": jnp.full((3,), 0.5)}
    grads = {"w": jnp.full((_N,), 0.01), "b": jnp.full((3,), -0.01)}

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return gradtx.apply_updates(p, u), s

    state = jax.eval_shape(tx.init, params)  # a dense n x n state is never allocated
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    leaves = compiled.memory_analysis().temp_size_in_bytes / (4 * _N)
    assert leaves <= _TEMPORARY_LEAVES.get(entry.name, 1 / 8), (entry.name, leaves)


@pytest.mark.perf
def test_every_temporary_allowance_names_a_registered_entry():
    assert set(_TEMPORARY_LEAVES) <= {entry.name for entry in REGISTRY}
