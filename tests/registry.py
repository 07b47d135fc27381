"""Every public transformation of gradtx, with default arguments and capability flags.

The contract, behaviour and validation tests are parametrized over ``REGISTRY``;
generic tests branch on the flags below, never on an entry's name. A meta-test
(tests/test_contract.py) walks ``gradtx.__all__`` and fails when a public function
that returns a ``GradientTransformation`` has no entry here, so a new optimizer
is covered by every contract test the moment it is exported.

An entry is one *configuration*: a public factory may have several entries when
an option changes the state or the arithmetic (``rmsprop(centered=True,
momentum=...)``, ``scale_by_adam(nesterov=True, eps_hat=True)``), and each entry
names the public function it exercises in ``public``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gradtx


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered configuration of a public transformation.

    Attributes:
      name: the test id (unique).
      public: the name in ``gradtx.__all__`` that this entry exercises.
      factory: builds the transformation; called as ``factory(**kwargs)``.
      kwargs: the default arguments of this configuration.
      is_named_optimizer: a named optimizer of gradtx (a complete method, run in
        the Flax test).
      descends: a complete method: its update is a step to add to the params,
        pointing downhill (a named optimizer, or a chain ending in the step).
      needs_params: ``update`` must be given the params.
      supports_complex: complex params work: second moments use ``|g|^2``, so the
        update is equivariant under a common phase of gradients and params.
      checks_structure: ``update`` raises when the gradient's tree differs from
        the tree the state was built from (every block holding per-leaf state).
      hyperparameter: a scalar argument that may be a tracer (jit, vmap, grad):
        the learning rate where there is one, else a decay or a scale.
      hyperparameter_values: a few valid values of it, for vmap.
      linear_in_hyperparameter: the update is proportional to ``hyperparameter``
        (a learning rate or a step size), so ``d update / d h = update / h``.
      selects_by_tree: chooses leaves by a function of the params (a mask or
        labels), so it cannot run inside ``flat``, which hands it one buffer.
      reduces_per_leaf: reduces over each leaf (a norm per layer), so inside
        ``flat`` (one leaf per dtype) its numbers change by design.
      stochastic: adds random noise (from a PRNG key in its state): a zero
        gradient gives a nonzero update, and the key is a state leaf that is not
        per parameter.
      searches_line: ends in a line search, which picks the step by comparing loss
        values at trial points: rounding the trial points to bfloat16 may change
        which trial is accepted, so the bfloat16 run is not compared with the
        float32 one step for step (the line-search tests check the conditions).
      accepts_integer_params: ``init`` accepts integer and boolean parameters
        (documented by the block); every other entry refuses them, naming the leaf.
      holds_eigenvectors: the state holds eigenvectors of statistics of the
        gradients (SOAP's bases): a rounding difference in the statistic (a
        sharded reduction summed in another order) moves them by about
        ``ulp / eigengap``, so two programs agree on them to ~1e-4 of their
        scale, not to a few ulps (tests/test_sharding.py).
      rounds_params: returns, for a bfloat16 parameter, the step to its rounded new
        value (stochastic rounding, Kahan summation): that step is float32, so that
        ``apply_updates`` lands on the rounded value exactly, and it differs from the
        float32 run by the parameter's rounding (tests/test_bf16_params.py checks
        those numbers); every other leaf's update passes through.
      extra_args: extra arguments the method needs on every ``update`` (e.g. the
        loss ``value`` for iRprop+ or reduce_on_plateau); :meth:`make` supplies
        them as defaults, so generic tests need not know about them.
      blocks: the registered entries this one is a ``chain`` of, in order, when it
        adds no arithmetic of its own (``adam`` is ``scale_by_adam`` then
        ``scale_by_learning_rate``). Its dtype behaviour is theirs, so the dtype
        matrix (float64, bfloat16, float16, mixed) runs on the blocks only
        (``DTYPE_MATRIX``); every other test runs on it too. tests/test_contract.py
        checks that its state is the chain of the blocks' states.
    """

    name: str
    public: str
    factory: Callable[..., gradtx.GradientTransformation]
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    is_named_optimizer: bool = False
    descends: bool = False
    needs_params: bool = False
    supports_complex: bool = True
    checks_structure: bool = True
    hyperparameter: str | None = None
    hyperparameter_values: tuple[float, ...] = ()
    linear_in_hyperparameter: bool = False
    stochastic: bool = False
    selects_by_tree: bool = False
    reduces_per_leaf: bool = False
    searches_line: bool = False
    accepts_integer_params: bool = False
    holds_eigenvectors: bool = False
    rounds_params: bool = False
    extra_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    blocks: tuple[str, ...] = ()

    def make(self, **overrides: Any) -> gradtx.GradientTransformation:
        """The transformation with the default arguments, updated by ``overrides``."""
        tx = self.factory(**{**self.kwargs, **overrides})
        if not self.extra_args:
            return tx
        defaults = dict(self.extra_args)

        def update(updates, state, params=None, **extra_args):
            return tx.update(updates, state, params, **{**defaults, **extra_args})

        return gradtx.GradientTransformation(tx.init, update)

    def __str__(self) -> str:
        return self.name


# ---------------------------------------------------------------- combinators
# ``chain``, ``named_chain`` and ``stateless`` take transformations or a function
# rather than hyperparameters; these wrap a representative use in a factory.


def _stateless_example(factor: float = 0.5) -> gradtx.GradientTransformation:
    return gradtx.stateless(lambda u, p: jax.tree.map(lambda x: (factor * x).astype(x.dtype), u))


def _chain_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.chain(gradtx.trace(0.9), gradtx.scale_by_learning_rate(learning_rate))


def _named_chain_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.named_chain(
        ("adam", gradtx.scale_by_adam()), ("step", gradtx.scale_by_learning_rate(learning_rate))
    )


def _scale_by_schedule_example(peak: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.scale_by_schedule(lambda count: peak / (1.0 + count))


def _lookahead_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    # sync_period=2, so that the few steps of a contract test reach a sync.
    return gradtx.lookahead(gradtx.adam(learning_rate), sync_period=2, slow_step_size=0.5)


def _lookahead_reset_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.lookahead(gradtx.sgd(learning_rate, 0.9), sync_period=1, reset_state=True)


def _averaged_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.chain(gradtx.sgd(learning_rate), gradtx.average_params(decay=0.9))


def _record_curves_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.record_curves(gradtx.adam(learning_rate), num_steps=4)


def _by_size(params: Any) -> Any:
    return jax.tree.map(lambda x: x.size > 2, params)


def _masked_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.masked(gradtx.adam(learning_rate), _by_size)


def _masked_adamw_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.masked(gradtx.adamw(learning_rate, weight_decay=1e-2), _by_size)


def _partition_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    labels = lambda p: jax.tree.map(lambda x: "big" if x.size > 2 else "small", p)  # noqa: E731
    transforms = {"big": gradtx.adam(learning_rate), "small": gradtx.sgd(learning_rate, 0.9)}
    return gradtx.partition(transforms, labels)


def _multi_transform_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    labels = lambda p: jax.tree.map(lambda x: "big" if x.size > 2 else "small", p)  # noqa: E731
    transforms = {"big": gradtx.adam(learning_rate), "small": gradtx.sgd(learning_rate, 0.9)}
    return gradtx.multi_transform(transforms, labels)


def _stateless_with_tree_map_example(factor: float = 0.5) -> gradtx.GradientTransformation:
    return gradtx.stateless_with_tree_map(lambda u, p: (factor * u).astype(u.dtype))


def _flatten_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.flatten(gradtx.adam(learning_rate))


def _monitor_example() -> gradtx.GradientTransformation:
    return gradtx.monitor(
        {"norm": gradtx.global_norm, "norm_ema": gradtx.measure_with_ema(gradtx.global_norm, 0.9)}
    )


def _measure_with_ema_example(decay: float = 0.9) -> gradtx.GradientTransformation:
    # The measurement is the updates themselves: an EMA of them, params-shaped.
    return gradtx.measure_with_ema(lambda u: u, decay)


def _apply_if_finite_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.apply_if_finite(gradtx.adam(learning_rate), raise_after=3)


def _apply_if_finite_gives_up_example(
    learning_rate: float = 0.1,
) -> gradtx.GradientTransformation:
    return gradtx.apply_if_finite(gradtx.adam(learning_rate), 2)  # Optax's max_consecutive_errors


def _skip_not_finite(updates, gradient_step, params):
    del gradient_step, params
    finite = jnp.asarray(True)
    for u in jax.tree.leaves(updates):
        finite = finite & jnp.all(jnp.isfinite(u))
    return ~finite, ()


def _multi_steps_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    # k = 1 for the first two inner steps, then 2: a schedule of the inner step count.
    return gradtx.MultiSteps(
        gradtx.adam(learning_rate),
        every_k_schedule=lambda step: jnp.where(step < 2, 1, 2),
        should_skip_update_fn=_skip_not_finite,
    ).gradient_transformation()


def _accumulate_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.accumulate(gradtx.adam(learning_rate), 2)


def _accumulate_every_step_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.accumulate(gradtx.rmsprop(learning_rate), 1)


def _flat_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.flat(gradtx.adam(learning_rate))


def _inject_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.inject_hyperparams(gradtx.adam)(learning_rate=learning_rate)


def _factored_rms_example(decay_rate: float = 0.8) -> gradtx.GradientTransformation:
    # min_dim_size_to_factor=2 factors tiny_params' (2, 3) leaf. decay_rate_fn is a
    # function of two arguments, which inject_hyperparams would read as a schedule
    # unless named in static_args (tests/test_new_aliases_2.py does).
    return gradtx.scale_by_factored_rms(decay_rate=decay_rate, min_dim_size_to_factor=2)


# Optax catalogue: blocks and wrappers (freeze, conditions, snapshots, extra args).


def _freeze_example() -> gradtx.GradientTransformation:
    return gradtx.freeze(_by_size)


def _is_small(params: Any) -> Any:
    return jax.tree.map(lambda x: x.size <= 2, params)


def _selective_transform_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    # The small leaves are frozen: the big one trains, so adam sees (and checks) it.
    return gradtx.selective_transform(gradtx.adam(learning_rate), freeze_mask=_is_small)


def _even_step(step: jax.Array) -> jax.Array:
    return step % 2 == 0


def _conditionally_mask_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.conditionally_mask(gradtx.adam(learning_rate), _even_step)


def _conditionally_transform_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.conditionally_transform(gradtx.sgd(learning_rate, 0.9), _even_step)


def _snapshot_example() -> gradtx.GradientTransformation:
    return gradtx.snapshot("norm", gradtx.tree.global_norm)


def _with_extra_args_support_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.with_extra_args_support(gradtx.sgd(learning_rate, 0.9))


class _DecayOnStep:
    """A stateful schedule (Optax's protocol): ``b1`` from 0.5 towards 0.9 as steps pass."""

    def init(self) -> jax.Array:
        return jnp.zeros([], jnp.int32)

    def update(self, count: jax.Array, **extra_args: Any) -> jax.Array:
        return count + 1

    def __call__(self, count: jax.Array, **extra_args: Any) -> jax.Array:
        return 0.9 - 0.4 * 0.5 ** count.astype(jnp.float32)


def _inject_stateful_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.inject_stateful_hyperparams(gradtx.adam)(
        learning_rate=learning_rate, b1=_DecayOnStep()
    )


# DP-SGD takes per-example gradients (a leading batch axis on every leaf); the
# generic tests feed params-shaped ones. Its entries put a stateless block in
# front that makes a batch of two examples, g and g / 2, whose clipped mean
# points along g: dpsgd's own update then runs on true per-example gradients.
def _two_examples(updates: Any, params: Any) -> Any:
    return jax.tree.map(lambda g: jnp.stack([g, (g / 2).astype(g.dtype)]), updates)


def _dpsgd_example(learning_rate: float = 0.1, **kwargs: Any) -> gradtx.GradientTransformation:
    # Little noise (sigma C / B = 0.025): one step still descends in the Flax test.
    options = {"l2_norm_clip": 1.0, "noise_multiplier": 0.05, "seed": 0, **kwargs}
    return gradtx.chain(gradtx.stateless(_two_examples), gradtx.dpsgd(learning_rate, **options))


def _dp_aggregate_example(l2_norm_clip: float = 1.0) -> gradtx.GradientTransformation:
    dp = gradtx.differentially_private_aggregate(l2_norm_clip, noise_multiplier=0.5, key=0)
    return gradtx.chain(gradtx.stateless(_two_examples), dp)


# ADOPT's clip_value_fn is a function of the step that is not a schedule:
# inject_hyperparams needs it in static_args (Optax's too, see
# tests/test_contrib_adopt.py); these examples leave it at its default.
def _scale_by_adopt_example(b1: float = 0.9) -> gradtx.GradientTransformation:
    return gradtx.scale_by_adopt(b1)


def _adopt_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    return gradtx.adopt(learning_rate)


def _schedule_free_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    # Schedule-Free around Adam without momentum, sharing its learning rate.
    return gradtx.schedule_free(gradtx.adam(learning_rate, b1=0.0), learning_rate, b1=0.8)


def _scale_by_muon_example(beta: float = 0.95) -> gradtx.GradientTransformation:
    # Muon orthogonalises matrices; the 1-D leaves pass through untouched.
    is_matrix = lambda p: jax.tree.map(lambda x: x.ndim == 2, p)  # noqa: E731
    return gradtx.masked(gradtx.scale_by_muon(beta=beta), is_matrix)


# ---------------------------------------------------------------- the registry

_LR = dict(
    hyperparameter="learning_rate",
    hyperparameter_values=(0.01, 0.1, 0.3),
    linear_in_hyperparameter=True,
)
_OPTIMIZER = dict(is_named_optimizer=True, descends=True, **_LR)


def _mechanize_example(learning_rate: float = 0.1) -> gradtx.GradientTransformation:
    # s_init = 1e-2: Optax's 1e-6 makes the first steps too small to lower a float32 loss.
    return gradtx.mechanize(gradtx.adam(learning_rate), s_init=1e-2)


def _half_squared_norm(params: Any) -> jax.Array:
    """``|x|^2 / 2`` over any tree: the loss the second-order entries read."""
    squares = [0.5 * jnp.sum(jnp.abs(x).astype(jnp.float32) ** 2) for x in jax.tree.leaves(params)]
    return sum(squares, jnp.zeros([], jnp.float32))


_SECOND_ORDER = dict(
    needs_params=True,
    supports_complex=False,
    extra_args={"value_fn": _half_squared_norm},
)

# The line searches take complex params as Optax's: the loss is real, the slope the
# real inner product (tests/test_optax_gaps.py compares them with Optax's).
_LINESEARCH = {**_SECOND_ORDER, "supports_complex": True}


# Sophia's Hessian estimator reads the loss as obj_fn (Optax's name); with
# f = |x|^2 / 2 its Hessian is I.
_SECOND_ORDER_OBJ = dict(
    needs_params=True,
    supports_complex=False,
    extra_args={"obj_fn": _half_squared_norm},
)


def _sam_example(learning_rate: float = 0.1, **kwargs: Any) -> gradtx.GradientTransformation:
    ascent = gradtx.chain(gradtx.normalize_by_update_norm(), gradtx.sgd(0.05))
    return gradtx.sam(gradtx.sgd(learning_rate), ascent, **kwargs)


def _sam_grad_fn(params: Any, step: Any) -> Any:
    """The gradient of ``|x|^2 / 2`` at the adversarial point: SAM's opaque mode reads it."""
    del step
    return params


def _decay(name: str) -> dict[str, Any]:
    return dict(hyperparameter=name, hyperparameter_values=(0.0, 0.5, 0.9))


REGISTRY: tuple[Entry, ...] = (
    # Protocol and combinators.
    Entry(
        "identity", "identity", gradtx.identity, checks_structure=False, accepts_integer_params=True
    ),
    Entry(
        "stateless",
        "stateless",
        _stateless_example,
        checks_structure=False,
        hyperparameter="factor",
        hyperparameter_values=(0.5, 2.0),
        linear_in_hyperparameter=True,
        accepts_integer_params=True,
    ),
    Entry(
        "stateless_with_tree_map",
        "stateless_with_tree_map",
        _stateless_with_tree_map_example,
        checks_structure=False,
        accepts_integer_params=True,
        hyperparameter="factor",
        hyperparameter_values=(0.5, 2.0),
        linear_in_hyperparameter=True,
    ),
    Entry("chain", "chain", _chain_example, descends=True, **_LR),
    Entry("named_chain", "named_chain", _named_chain_example, descends=True, **_LR),
    # Scaling blocks.
    Entry(
        "scale",
        "scale",
        gradtx.scale,
        {"step_size": -0.1},
        checks_structure=False,
        hyperparameter="step_size",
        hyperparameter_values=(-0.1, 0.5, 2.0),
        linear_in_hyperparameter=True,
    ),
    Entry(
        "scale_by_learning_rate",
        "scale_by_learning_rate",
        gradtx.scale_by_learning_rate,
        {"learning_rate": 0.1},
        descends=True,
        checks_structure=False,
        **_LR,
    ),
    Entry(
        "scale_by_schedule",
        "scale_by_schedule",
        _scale_by_schedule_example,
        checks_structure=False,
        hyperparameter="peak",
        hyperparameter_values=(0.1, 1.0),
        linear_in_hyperparameter=True,
    ),
    # Momentum and averages.
    Entry("trace", "trace", gradtx.trace, {"decay": 0.9}, **_decay("decay")),
    Entry("nesterov", "nesterov", gradtx.nesterov, {"decay": 0.9}, **_decay("decay")),
    Entry("ema", "ema", gradtx.ema, {"decay": 0.9}, **_decay("decay")),
    Entry(
        "bias_correction",
        "bias_correction",
        gradtx.bias_correction,
        {"decay": 0.9},
        # Its state is a step count only: nothing per leaf to disagree with.
        checks_structure=False,
        hyperparameter="decay",
        hyperparameter_values=(0.5, 0.9),
    ),
    Entry(
        "add_decayed_weights",
        "add_decayed_weights",
        gradtx.add_decayed_weights,
        {"weight_decay": 1e-2},
        needs_params=True,
        hyperparameter="weight_decay",
        hyperparameter_values=(0.0, 1e-2, 0.5),
    ),
    # Adaptive scalings.
    Entry(
        "scale_by_rss",
        "scale_by_rss",
        gradtx.scale_by_rss,
        hyperparameter="initial_accumulator_value",
        hyperparameter_values=(0.1, 1.0),
    ),
    Entry(
        "scale_by_rss_book",
        "scale_by_rss",
        gradtx.scale_by_rss,
        {"initial_accumulator_value": 0.0, "eps_in_sqrt": False},
        **_decay("initial_accumulator_value"),
    ),
    Entry("scale_by_rms", "scale_by_rms", gradtx.scale_by_rms, **_decay("decay")),
    Entry(
        "scale_by_rms_options",
        "scale_by_rms",
        gradtx.scale_by_rms,
        {"eps_in_sqrt": False, "bias_correction": True, "initial_scale": 1.0},
        **_decay("decay"),
    ),
    Entry("scale_by_stddev", "scale_by_stddev", gradtx.scale_by_stddev, **_decay("decay")),
    Entry(
        "scale_by_adadelta",
        "scale_by_adadelta",
        gradtx.scale_by_adadelta,
        **_decay("rho"),
    ),
    Entry("scale_by_adam", "scale_by_adam", gradtx.scale_by_adam, **_decay("b1")),
    Entry(
        "scale_by_adam_nesterov_eps_hat",
        "scale_by_adam",
        gradtx.scale_by_adam,
        {"nesterov": True, "eps_hat": True, "eps_root": 1e-8},
        **_decay("b1"),
    ),
    Entry("scale_by_amsgrad", "scale_by_amsgrad", gradtx.scale_by_amsgrad, **_decay("b2")),
    Entry(
        "scale_by_amsgrad_max_before",
        "scale_by_amsgrad",
        gradtx.scale_by_amsgrad,
        {"max_before_bias_correction": True},
        **_decay("b2"),
    ),
    Entry("scale_by_adamax", "scale_by_adamax", gradtx.scale_by_adamax, **_decay("b1")),
    Entry("scale_by_nadam", "scale_by_nadam", gradtx.scale_by_nadam, **_decay("b1")),
    Entry(
        "scale_by_nadam_constant",
        "scale_by_nadam",
        gradtx.scale_by_nadam,
        {"momentum_decay": None},
        **_decay("b1"),
    ),
    # Named optimizers.
    # Plain SGD is the step alone: nothing per leaf to check the tree against.
    Entry(
        "sgd",
        "sgd",
        gradtx.sgd,
        {"learning_rate": 0.1},
        checks_structure=False,
        blocks=("scale_by_learning_rate",),
        **_OPTIMIZER,
    ),
    Entry(
        "sgd_nesterov",
        "sgd",
        gradtx.sgd,
        {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
        **_OPTIMIZER,
    ),
    Entry(
        "sgd_momentum_lr_in_velocity",
        "sgd",
        gradtx.sgd,
        {"learning_rate": 0.1, "momentum": 0.9, "learning_rate_in_velocity": True},
        **_OPTIMIZER,
    ),
    Entry(
        "momentum",
        "momentum",
        gradtx.momentum,
        {"learning_rate": 0.1},
        blocks=("trace", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "nesterov_momentum",
        "nesterov_momentum",
        gradtx.nesterov_momentum,
        {"learning_rate": 0.1},
        **_OPTIMIZER,
    ),
    Entry(
        "adagrad",
        "adagrad",
        gradtx.adagrad,
        {"learning_rate": 0.1},
        blocks=("scale_by_rss", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "rmsprop",
        "rmsprop",
        gradtx.rmsprop,
        {"learning_rate": 0.01},
        blocks=("scale_by_rms", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "rmsprop_centered_nesterov",
        "rmsprop",
        gradtx.rmsprop,
        {
            "learning_rate": 0.01,
            "centered": True,
            "momentum": 0.9,
            "nesterov": True,
        },
        **_OPTIMIZER,
    ),
    Entry(
        "rmsprop_momentum_lr_in_velocity",
        "rmsprop",
        gradtx.rmsprop,
        {"learning_rate": 0.01, "momentum": 0.9, "learning_rate_in_velocity": True},
        **_OPTIMIZER,
    ),
    Entry(
        "adadelta",
        "adadelta",
        gradtx.adadelta,
        needs_params=True,  # its decay block reads them even at weight_decay=0, as Optax's
        is_named_optimizer=True,
        descends=True,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.5, 1.0, 2.0),
        linear_in_hyperparameter=True,
    ),
    Entry(
        "adadelta_weight_decay",
        "adadelta",
        gradtx.adadelta,
        {"learning_rate": 1.0, "weight_decay": 1e-2},
        needs_params=True,
        **_OPTIMIZER,
    ),
    Entry(
        "adam",
        "adam",
        gradtx.adam,
        {"learning_rate": 0.1},
        blocks=("scale_by_adam", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "adam_bfloat16_mu",
        "adam",
        gradtx.adam,
        {"learning_rate": 0.1, "mu_dtype": jnp.bfloat16},
        # A real mu_dtype cannot hold the complex first moment of complex params.
        supports_complex=False,
        **_OPTIMIZER,
    ),
    Entry(
        "adamw",
        "adamw",
        gradtx.adamw,
        {"learning_rate": 0.1, "weight_decay": 1e-2},
        needs_params=True,
        blocks=("scale_by_adam", "add_decayed_weights", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "amsgrad",
        "amsgrad",
        gradtx.amsgrad,
        {"learning_rate": 0.1},
        blocks=("scale_by_amsgrad", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "adamax",
        "adamax",
        gradtx.adamax,
        {"learning_rate": 0.1},
        blocks=("scale_by_adamax", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "nadam",
        "nadam",
        gradtx.nadam,
        {"learning_rate": 0.1},
        blocks=("scale_by_nadam", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    # RAdam and AdaBound (issue 3).
    Entry(
        "radam",
        "radam",
        gradtx.radam,
        {"learning_rate": 0.1},
        blocks=("scale_by_radam", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "radam_threshold4_skip_eps_hat",
        "radam",
        gradtx.radam,
        {"learning_rate": 0.1, "threshold": 4.0, "below_threshold": "skip", "eps_hat": True},
        # Below the threshold it takes no step (zeros), so it is left out of the
        # tests that expect one step to descend.
        **_LR,
    ),
    Entry("scale_by_radam", "scale_by_radam", gradtx.scale_by_radam, **_decay("b1")),
    # With a constant rate AdaBound's bounds are absolute: not linear in the rate.
    Entry(
        "adabound",
        "adabound",
        gradtx.adabound,
        {"learning_rate": 0.1},
        is_named_optimizer=True,
        descends=True,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    Entry(
        "adabound_paper",
        "adabound",
        gradtx.adabound,
        {"learning_rate": 0.1, "form": "paper"},
        is_named_optimizer=True,
        descends=True,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    Entry(
        "amsbound",
        "amsbound",
        gradtx.amsbound,
        {"learning_rate": 0.1},
        is_named_optimizer=True,
        descends=True,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    Entry("scale_by_adabound", "scale_by_adabound", gradtx.scale_by_adabound, **_decay("b1")),
    # Decoupled decay on NAdam and AdaMax; AdaBelief and Yogi.
    Entry(
        "nadamw",
        "nadamw",
        gradtx.nadamw,
        {"learning_rate": 0.1, "weight_decay": 1e-2},
        needs_params=True,
        blocks=("scale_by_nadam", "add_decayed_weights", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "adamaxw",
        "adamaxw",
        gradtx.adamaxw,
        {"learning_rate": 0.1, "weight_decay": 1e-2},
        needs_params=True,
        blocks=("scale_by_adamax", "add_decayed_weights", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "adabelief",
        "adabelief",
        gradtx.adabelief,
        {"learning_rate": 0.1},
        blocks=("scale_by_belief", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry("scale_by_belief", "scale_by_belief", gradtx.scale_by_belief, **_decay("b1")),
    Entry(
        "scale_by_belief_nesterov",
        "scale_by_belief",
        gradtx.scale_by_belief,
        {"nesterov": True},
        **_decay("b1"),
    ),
    Entry(
        "yogi",
        "yogi",
        gradtx.yogi,
        {"learning_rate": 0.1},
        blocks=("scale_by_yogi", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry("scale_by_yogi", "scale_by_yogi", gradtx.scale_by_yogi, **_decay("b1")),
    Entry(
        "scale_by_yogi_paper",
        "scale_by_yogi",
        gradtx.scale_by_yogi,
        {"initial_accumulator_value": 0.0, "bias_correction": False},
        **_decay("b1"),
    ),
    # Sign methods: a complex coordinate's sign is its phase, g / |g|.
    Entry(
        "lion",
        "lion",
        gradtx.lion,
        {"learning_rate": 0.1, "weight_decay": 1e-2},
        needs_params=True,
        blocks=("scale_by_lion", "add_decayed_weights", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry("scale_by_lion", "scale_by_lion", gradtx.scale_by_lion, **_decay("b1")),
    Entry(
        "scale_by_lion_refined",
        "scale_by_lion",
        gradtx.scale_by_lion,
        {"mode": "refined"},
        **_decay("b2"),
    ),
    Entry(
        "scale_by_lion_smooth",
        "scale_by_lion",
        gradtx.scale_by_lion,
        {"mode": "smooth", "smooth_beta": 2.0},
        # tanh of a complex number is not its phase times a real number.
        supports_complex=False,
        hyperparameter="smooth_beta",
        hyperparameter_values=(0.5, 2.0),
    ),
    Entry("scale_by_sign", "scale_by_sign", gradtx.scale_by_sign, checks_structure=False),
    Entry(
        "sign_sgd",
        "sign_sgd",
        gradtx.sign_sgd,
        {"learning_rate": 0.1},
        checks_structure=False,
        **_OPTIMIZER,
    ),
    Entry("signum", "signum", gradtx.signum, {"learning_rate": 0.1}, **_OPTIMIZER),
    # Noisy SGD: add_noise's noise, then the step.
    Entry(
        "noisy_sgd",
        "noisy_sgd",
        gradtx.noisy_sgd,
        {"learning_rate": 0.1, "key": 0},
        supports_complex=False,
        checks_structure=False,
        stochastic=True,
        **_OPTIMIZER,
    ),
    # Optimistic methods.
    Entry(
        "scale_by_optimistic_gradient",
        "scale_by_optimistic_gradient",
        gradtx.scale_by_optimistic_gradient,
        hyperparameter="beta",
        hyperparameter_values=(0.0, 0.5, 1.0),
    ),
    Entry(
        "optimistic_gradient_descent",
        "optimistic_gradient_descent",
        gradtx.optimistic_gradient_descent,
        {"learning_rate": 0.1},
        blocks=("scale_by_optimistic_gradient", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "optimistic_adam_v2",
        "optimistic_adam_v2",
        gradtx.optimistic_adam_v2,
        {"learning_rate": 0.1},
        blocks=("scale_by_adam", "scale_by_optimistic_gradient", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "optimistic_adam",
        "optimistic_adam",
        gradtx.optimistic_adam,
        {"learning_rate": 0.1},
        **_OPTIMIZER,
    ),
    # Performance-dependent scaling: reads the loss from extra_args["value"].
    Entry(
        "reduce_on_plateau",
        "reduce_on_plateau",
        gradtx.reduce_on_plateau,
        {"patience": 1},
        # Its state holds scalars only: nothing per leaf to check the tree against.
        checks_structure=False,
        hyperparameter="factor",
        hyperparameter_values=(0.1, 0.5),
        extra_args={"value": 1.0},
    ),
    # Lookahead, Ranger and parameter averaging: they need the params.
    *(
        Entry(
            name,
            "lookahead",
            factory,
            needs_params=True,
            descends=True,
            hyperparameter="learning_rate",
            hyperparameter_values=(0.01, 0.1, 0.3),
        )
        for name, factory in (
            ("lookahead_adam", _lookahead_example),
            ("lookahead_momentum_reset", _lookahead_reset_example),
        )
    ),
    Entry(
        "ranger",
        "ranger",
        gradtx.ranger,
        {"learning_rate": 0.1, "sync_period": 2},
        needs_params=True,
        is_named_optimizer=True,
        descends=True,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    Entry(
        "average_params",
        "average_params",
        _averaged_example,
        needs_params=True,
        descends=True,
        **_LR,
    ),
    # Wrappers. masked passes the masked-out leaves through, so it is neither a
    # descent step nor linear in the rate; accumulate(k=2) returns zeros first.
    Entry(
        "masked",
        "masked",
        _masked_example,
        selects_by_tree=True,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    Entry(
        "masked_adamw",
        "masked",
        _masked_adamw_example,
        selects_by_tree=True,
        needs_params=True,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    Entry(
        "partition",
        "partition",
        _partition_example,
        descends=True,
        selects_by_tree=True,
        **_LR,
    ),
    Entry(
        "multi_transform",
        "multi_transform",
        _multi_transform_example,
        descends=True,
        selects_by_tree=True,
        **_LR,
    ),
    Entry("apply_if_finite", "apply_if_finite", _apply_if_finite_example, descends=True, **_LR),
    Entry(
        "apply_if_finite_gives_up",
        "apply_if_finite",
        _apply_if_finite_gives_up_example,
        descends=True,
        **_LR,
    ),
    Entry("multi_steps", "MultiSteps", _multi_steps_example, **_LR),
    Entry("accumulate", "accumulate", _accumulate_example, **_LR),
    Entry(
        "accumulate_every_step",
        "accumulate",
        _accumulate_every_step_example,
        descends=True,
        **_LR,
    ),
    # Execution wrappers: one flat buffer per dtype; hyperparameters in the state.
    Entry("flat", "flat", _flat_example, descends=True, **_LR),
    Entry("flatten", "flatten", _flatten_example, descends=True, **_LR),
    Entry("inject_hyperparams", "inject_hyperparams", _inject_example, descends=True, **_LR),
    # Optax catalogue: blocks (stateless unless noted) and wrappers.
    Entry(
        "set_to_zero",
        "set_to_zero",
        gradtx.set_to_zero,
        checks_structure=False,
        accepts_integer_params=True,
    ),
    Entry(
        "normalize_by_update_norm",
        "normalize_by_update_norm",
        gradtx.normalize_by_update_norm,
        {"scale_factor": -0.1},
        checks_structure=False,
        hyperparameter="scale_factor",
        hyperparameter_values=(-0.1, 0.5, 2.0),
        linear_in_hyperparameter=True,
    ),
    *(
        Entry(
            name,
            name,
            getattr(gradtx, name),
            needs_params=True,
            checks_structure=False,
            reduces_per_leaf=True,
            hyperparameter="min_scale",
            hyperparameter_values=(1e-3, 0.5, 2.0),
        )
        for name in ("scale_by_param_block_rms", "scale_by_param_block_norm")
    ),
    Entry(
        "centralize", "centralize", gradtx.centralize, checks_structure=False, reduces_per_leaf=True
    ),
    Entry(
        "centralize_output_last",
        "centralize",
        gradtx.centralize,
        {"output_axis": -1},
        checks_structure=False,
        reduces_per_leaf=True,
    ),
    Entry(
        "keep_params_nonnegative",
        "keep_params_nonnegative",
        gradtx.keep_params_nonnegative,
        needs_params=True,
        supports_complex=False,
        checks_structure=False,
    ),
    # Its state holds one bool scalar per leaf of the last updates, as Optax's.
    Entry("zero_nans", "zero_nans", gradtx.zero_nans, checks_structure=False),
    Entry("apply_every", "apply_every", gradtx.apply_every, {"k": 2}),
    Entry(
        "monitor", "monitor", _monitor_example, checks_structure=False, accepts_integer_params=True
    ),
    Entry(
        "measure_with_ema",
        "measure_with_ema",
        _measure_with_ema_example,
        hyperparameter="decay",
        hyperparameter_values=(0.5, 0.9),
    ),
    Entry(
        "snapshot",
        "snapshot",
        _snapshot_example,
        checks_structure=False,
        accepts_integer_params=True,
    ),
    # freeze(mask) is masked(set_to_zero()): it never reads a leaf, integer ones included.
    Entry(
        "freeze",
        "freeze",
        _freeze_example,
        checks_structure=False,
        selects_by_tree=True,
        accepts_integer_params=True,
    ),
    Entry(
        "selective_transform",
        "selective_transform",
        _selective_transform_example,
        selects_by_tree=True,
        **_LR,
    ),
    Entry("conditionally_mask", "conditionally_mask", _conditionally_mask_example, **_LR),
    Entry(
        "conditionally_transform",
        "conditionally_transform",
        _conditionally_transform_example,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    Entry(
        "with_extra_args_support",
        "with_extra_args_support",
        _with_extra_args_support_example,
        descends=True,
        **_LR,
    ),
    Entry(
        "inject_stateful_hyperparams",
        "inject_stateful_hyperparams",
        _inject_stateful_example,
        descends=True,
        **_LR,
    ),
    # Penalties (issue 4): they read the params.
    Entry(
        "add_l1_penalty",
        "add_l1_penalty",
        gradtx.add_l1_penalty,
        {"l1_strength": 1e-2},
        needs_params=True,
        hyperparameter="l1_strength",
        hyperparameter_values=(0.0, 1e-2, 0.1),
    ),
    Entry(
        "add_elastic_net",
        "add_elastic_net",
        gradtx.add_elastic_net,
        {"strength": 1e-2},
        needs_params=True,
        hyperparameter="strength",
        hyperparameter_values=(0.0, 1e-2, 0.1),
    ),
    Entry(
        "proximal_l1",
        "proximal_l1",
        gradtx.proximal_l1,
        {"l1_strength": 1e-2, "learning_rate": 0.1},
        needs_params=True,
        hyperparameter="l1_strength",
        hyperparameter_values=(0.0, 1e-2, 0.1),
    ),
    Entry(
        "proximal_elastic_net",
        "proximal_elastic_net",
        gradtx.proximal_elastic_net,
        {"strength": 1e-2, "learning_rate": 0.1},
        needs_params=True,
        hyperparameter="strength",
        hyperparameter_values=(0.0, 1e-2, 0.1),
    ),
    Entry(
        "decoupled_weight_decay",
        "decoupled_weight_decay",
        gradtx.decoupled_weight_decay,
        {"weight_decay": 1e-2, "learning_rate": 0.1},
        needs_params=True,
        hyperparameter="weight_decay",
        hyperparameter_values=(0.0, 1e-2, 0.1),
    ),
    # Clipping (stateless).
    *(
        Entry(
            name,
            name,
            getattr(gradtx, name),
            {arg: 0.5},
            checks_structure=False,
            reduces_per_leaf=per_leaf,
            hyperparameter=arg,
            hyperparameter_values=(0.1, 0.5, 2.0),
        )
        for name, arg, per_leaf in (
            ("clip", "max_delta", False),
            ("clip_by_global_norm", "max_norm", False),
            ("clip_by_leaf_norm", "max_norm", True),
            ("clip_by_block_rms", "threshold", True),
        )
    ),
    Entry(
        "adaptive_grad_clip",
        "adaptive_grad_clip",
        gradtx.adaptive_grad_clip,
        {"clipping": 0.1},
        needs_params=True,
        reduces_per_leaf=True,
        hyperparameter="clipping",
        hyperparameter_values=(0.01, 0.1, 1.0),
    ),
    # Gradient noise: random, so neither zero on a zero gradient nor phase-equivariant.
    Entry(
        "add_noise",
        "add_noise",
        gradtx.add_noise,
        {"eta": 0.01, "gamma": 0.55, "key": 0},
        supports_complex=False,
        checks_structure=False,
        stochastic=True,
        hyperparameter="eta",
        hyperparameter_values=(0.0, 0.01, 0.1),
    ),
    # DP-SGD, on a batch of two examples made from the gradient (see _two_examples).
    Entry(
        "dpsgd",
        "dpsgd",
        _dpsgd_example,
        is_named_optimizer=True,
        descends=True,
        supports_complex=False,
        checks_structure=False,
        stochastic=True,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
        linear_in_hyperparameter=True,
    ),
    Entry(
        "dpsgd_nesterov_noiseless",
        "dpsgd",
        _dpsgd_example,
        {"noise_multiplier": 0.0, "momentum": 0.9, "nesterov": True},
        **_OPTIMIZER,
    ),
    Entry(
        "differentially_private_aggregate",
        "differentially_private_aggregate",
        _dp_aggregate_example,
        supports_complex=False,
        checks_structure=False,
        stochastic=True,
        hyperparameter="l2_norm_clip",
        hyperparameter_values=(0.1, 1.0, 10.0),
    ),
    # Rprop: sign-based, so complex leaves are refused at init.
    *(
        Entry(
            f"rprop_{variant.replace('-', '_minus').replace('+', '_plus')}",
            "rprop",
            gradtx.rprop,
            {"learning_rate": 0.1, "variant": variant},
            supports_complex=False,
            extra_args={"value": 1.0} if variant == "irprop+" else {},
            **_OPTIMIZER,
        )
        for variant in ("irprop-", "rprop-", "rprop+", "irprop+")
    ),
    Entry(
        "scale_by_rprop",
        "scale_by_rprop",
        gradtx.scale_by_rprop,
        {"learning_rate": 0.1},
        supports_complex=False,
        **_LR,
    ),
    # DoG's step size: a distance and a gradient sum per leaf, and the params.
    Entry(
        "scale_by_distance_over_gradients",
        "scale_by_distance_over_gradients",
        gradtx.scale_by_distance_over_gradients,
        # param_dtype=None: x_0 kept in the params' dtype (Optax's default pins float32).
        {"global_scale": 1.0, "param_dtype": None},
        needs_params=True,
        reduces_per_leaf=True,
        hyperparameter="global_scale",
        hyperparameter_values=(0.5, 1.0, 2.0),
        linear_in_hyperparameter=True,
    ),
    # Layer-wise trust ratios (LARS, LAMB, Fromage): a norm per leaf, and the params.
    Entry(
        "scale_by_trust_ratio",
        "scale_by_trust_ratio",
        gradtx.scale_by_trust_ratio,
        {"trust_coefficient": 0.5},
        needs_params=True,
        reduces_per_leaf=True,
        hyperparameter="trust_coefficient",
        hyperparameter_values=(0.1, 0.5, 2.0),
        linear_in_hyperparameter=True,
    ),
    Entry(
        "lamb",
        "lamb",
        gradtx.lamb,
        {"learning_rate": 0.1},
        needs_params=True,
        reduces_per_leaf=True,
        **_OPTIMIZER,
    ),
    Entry(
        "lamb_weight_decay_mask",
        "lamb",
        gradtx.lamb,
        {"learning_rate": 0.1, "weight_decay": 1e-2, "mask": _by_size},
        needs_params=True,
        reduces_per_leaf=True,
        selects_by_tree=True,
        **_OPTIMIZER,
    ),
    Entry(
        "lars",
        "lars",
        gradtx.lars,
        {"learning_rate": 0.1},
        needs_params=True,
        reduces_per_leaf=True,
        **_OPTIMIZER,
    ),
    Entry(
        "lars_nesterov_masked_trust_ratio",
        "lars",
        gradtx.lars,
        {
            "learning_rate": 0.1,
            "weight_decay": 1e-2,
            "trust_coefficient": 0.1,
            "eps": 1e-6,
            "trust_ratio_mask": _by_size,
            "nesterov": True,
        },
        needs_params=True,
        reduces_per_leaf=True,
        selects_by_tree=True,
        **_OPTIMIZER,
    ),
    # Fromage's shrink 1 / sqrt(1 + lr^2) makes it nonlinear in the rate.
    Entry(
        "fromage",
        "fromage",
        gradtx.fromage,
        {"learning_rate": 0.1},
        needs_params=True,
        reduces_per_leaf=True,
        is_named_optimizer=True,
        descends=True,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    # NovoGrad: one second moment per leaf (the squared norm of its gradient).
    Entry(
        "novograd",
        "novograd",
        gradtx.novograd,
        {"learning_rate": 0.1},
        reduces_per_leaf=True,
        blocks=("scale_by_novograd", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "novograd_weight_decay",
        "novograd",
        gradtx.novograd,
        {"learning_rate": 0.1, "weight_decay": 1e-2},
        needs_params=True,
        reduces_per_leaf=True,
        **_OPTIMIZER,
    ),
    Entry(
        "scale_by_novograd",
        "scale_by_novograd",
        gradtx.scale_by_novograd,
        reduces_per_leaf=True,
        **_decay("b1"),
    ),
    # Adan: its decay block reads the params even at weight_decay=0, as Optax's.
    Entry(
        "adan",
        "adan",
        gradtx.adan,
        {"learning_rate": 0.1},
        needs_params=True,
        blocks=("scale_by_adan", "add_decayed_weights", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry("scale_by_adan", "scale_by_adan", gradtx.scale_by_adan, **_decay("b1")),
    # SM3: maxima and minima over the axes of each leaf; real params only.
    Entry(
        "sm3",
        "sm3",
        gradtx.sm3,
        {"learning_rate": 0.1},
        supports_complex=False,
        reduces_per_leaf=True,
        blocks=("scale_by_sm3", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "scale_by_sm3",
        "scale_by_sm3",
        gradtx.scale_by_sm3,
        {"b2": 0.9},
        supports_complex=False,
        reduces_per_leaf=True,
        **_decay("b1"),
    ),
    # Adafactor: min_dim_size_to_factor=2 factors tiny_params' (2, 3) leaf. Its
    # momentum follows the params (dtype_momentum=None) so that float64 and complex
    # runs keep their dtype; its weight decay is not scaled by the rate.
    Entry(
        "adafactor",
        "adafactor",
        gradtx.adafactor,
        {"learning_rate": 0.1, "min_dim_size_to_factor": 2},
        needs_params=True,
        reduces_per_leaf=True,
        **_OPTIMIZER,
    ),
    Entry(
        "adafactor_momentum_decay_unfactored",
        "adafactor",
        gradtx.adafactor,
        {
            "learning_rate": 0.1,
            "factored": False,
            "clipping_threshold": None,
            "multiply_by_parameter_scale": False,
            "momentum": 0.9,
            "dtype_momentum": None,
            "weight_decay_rate": 1e-3,
        },
        needs_params=True,
        reduces_per_leaf=True,
        is_named_optimizer=True,
        descends=True,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    Entry(
        "scale_by_factored_rms",
        "scale_by_factored_rms",
        _factored_rms_example,
        reduces_per_leaf=True,
        hyperparameter="decay_rate",
        hyperparameter_values=(0.5, 0.8, 1.0),
    ),
    # Polyak's step: reads the loss from extra_args["value"]; one norm over the
    # whole tree. polyak_sgd has no learning_rate (its rate is the Polyak step).
    Entry(
        "polyak_sgd",
        "polyak_sgd",
        gradtx.polyak_sgd,
        checks_structure=False,
        descends=True,
        hyperparameter="scaling",
        hyperparameter_values=(0.5, 1.0, 2.0),
        extra_args={"value": 1.0},
    ),
    Entry(
        "scale_by_polyak",
        "scale_by_polyak",
        gradtx.scale_by_polyak,
        checks_structure=False,
        hyperparameter="max_learning_rate",
        hyperparameter_values=(0.01, 0.1, 1.0),
        extra_args={"value": 1.0},
    ),
    Entry(
        "scale_by_polyak_sps_plus",
        "scale_by_polyak",
        gradtx.scale_by_polyak,
        {"f_min": 0.5, "eps": 1e-3, "variant": "sps+"},
        checks_structure=False,
        hyperparameter="f_min",
        hyperparameter_values=(0.0, 0.5, 2.0),
        extra_args={"value": 1.0},
    ),
    # Second-order methods and line searches: they read the loss from
    # extra_args["value_fn"]. With f = |x|^2 / 2 the Hessian is I, so Newton and
    # Hessian-free steps equal the gradient steps (the updates stay comparable
    # across dtypes); the gradients fed by the generic tests are not f's, which a
    # line search only sees as a direction that may not descend.
    Entry(
        "scale_by_newton",
        "scale_by_newton",
        gradtx.scale_by_newton,
        {"damping": 0.1},
        hyperparameter="damping",
        hyperparameter_values=(0.0, 0.1, 1.0),
        **_SECOND_ORDER,
    ),
    Entry(
        "scale_by_newton_damp",
        "scale_by_newton",
        gradtx.scale_by_newton,
        {"on_indefinite": "damp"},
        **_SECOND_ORDER,
    ),
    Entry(
        "newton",
        "newton",
        gradtx.newton,
        {"learning_rate": 1.0},
        **_SECOND_ORDER,
        blocks=("scale_by_newton", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "newton_backtracking",
        "newton",
        gradtx.newton,
        {"linesearch": gradtx.scale_by_backtracking_linesearch(10, store_grad=True)},
        searches_line=True,
        **_SECOND_ORDER,
    ),
    Entry(
        "scale_by_hessian_free",
        "scale_by_hessian_free",
        gradtx.scale_by_hessian_free,
        # CG is a while_loop: not reverse-differentiable in the damping inside it,
        # so the damping is not offered to the generic grad/vmap tests.
        {"damping": 0.1},
        **_SECOND_ORDER,
    ),
    Entry(
        "hessian_free",
        "hessian_free",
        gradtx.hessian_free,
        {"learning_rate": 1.0},
        **_SECOND_ORDER,
        blocks=("scale_by_hessian_free", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    *(
        Entry(
            f"scale_by_nonlinear_cg_{method}",
            "scale_by_nonlinear_cg",
            gradtx.scale_by_nonlinear_cg,
            {"method": method, "restart_period": 2},
            supports_complex=False,
        )
        for method in ("polak_ribiere_plus", "fletcher_reeves")
    ),
    # The named quasi-Newton and CG optimizers as fixed-step chains (a line search
    # is a discrete search: not differentiable in the learning rate, which the
    # generic tests do), and once with their default line search.
    *(
        Entry(
            f"{name}_fixed_step",
            name,
            getattr(gradtx, name),
            {"learning_rate": 0.1, "linesearch": None},
            needs_params=name != "nonlinear_cg",
            supports_complex=name == "lbfgs",
            blocks=(block, "scale_by_learning_rate"),
            **_OPTIMIZER,
        )
        for name, block in (
            ("nonlinear_cg", "scale_by_nonlinear_cg_polak_ribiere_plus"),
            ("bfgs", "scale_by_bfgs"),
            ("lbfgs", "scale_by_lbfgs"),
        )
    ),
    *(
        Entry(name, name, getattr(gradtx, name), descends=True, searches_line=True, **_SECOND_ORDER)
        for name in ("nonlinear_cg", "bfgs", "lbfgs")
    ),
    Entry(
        "scale_by_bfgs",
        "scale_by_bfgs",
        gradtx.scale_by_bfgs,
        needs_params=True,
        supports_complex=False,
    ),
    Entry(
        "scale_by_lbfgs",
        "scale_by_lbfgs",
        gradtx.scale_by_lbfgs,
        {"memory_size": 3},
        needs_params=True,
    ),
    *(
        Entry(
            f"scale_by_backtracking_linesearch{suffix}",
            "scale_by_backtracking_linesearch",
            gradtx.scale_by_backtracking_linesearch,
            {"max_backtracking_steps": 10, "store_grad": store_grad},
            searches_line=True,
            **_LINESEARCH,
        )
        for suffix, store_grad in (("", False), ("_store_grad", True))
    ),
    Entry(
        "scale_by_zoom_linesearch",
        "scale_by_zoom_linesearch",
        gradtx.scale_by_zoom_linesearch,
        {"max_linesearch_steps": 10},
        searches_line=True,
        **_LINESEARCH,
    ),
    # Learning curves recorded in the state around any optimizer; reads the loss
    # from extra_args["value"] when given.
    Entry(
        "record_curves",
        "record_curves",
        _record_curves_example,
        descends=True,
        extra_args={"value": 1.0},
        **_LR,
    ),
    # Optax contrib: MADGRAD, ACProp, normalize, split_real_and_imaginary.
    # MADGRAD's step is a move towards x_0 - s / nu^(1/3): not linear in the rate.
    Entry(
        "madgrad",
        "madgrad",
        gradtx.madgrad,
        {"learning_rate": 0.1, "weight_decay": 1e-2},
        needs_params=True,
        blocks=("add_decayed_weights", "scale_by_madgrad"),
        is_named_optimizer=True,
        descends=True,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    Entry(
        "scale_by_madgrad",
        "scale_by_madgrad",
        gradtx.scale_by_madgrad,
        {"learning_rate": 0.1},
        needs_params=True,
        descends=True,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    Entry(
        "acprop",
        "acprop",
        gradtx.acprop,
        {"learning_rate": 0.1, "weight_decay": 1e-2},
        needs_params=True,
        blocks=("scale_by_acprop", "add_decayed_weights", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry("scale_by_acprop", "scale_by_acprop", gradtx.scale_by_acprop, **_decay("b1")),
    Entry("normalize", "normalize", gradtx.normalize, checks_structure=False),
    # Adam on the real and imaginary parts apart: complex leaves work, but the
    # step does not turn with a common phase (the supports_complex test), by design.
    Entry(
        "split_real_and_imaginary",
        "split_real_and_imaginary",
        lambda learning_rate=0.1: gradtx.split_real_and_imaginary(gradtx.adam(learning_rate)),
        supports_complex=False,
        descends=True,
        **_LR,
    ),
    # Schedule-Free, ADOPT, AdEMAMix (optax.contrib): helper sfree's block.
    Entry(
        "schedule_free",
        "schedule_free",
        _schedule_free_example,
        needs_params=True,
        descends=True,
        **_LR,
    ),
    Entry(
        "schedule_free_sgd",
        "schedule_free_sgd",
        gradtx.schedule_free_sgd,
        {"learning_rate": 0.1, "warmup_steps": 2, "weight_decay": 1e-2},
        needs_params=True,
        **_OPTIMIZER,
    ),
    Entry(
        "schedule_free_adamw",
        "schedule_free_adamw",
        gradtx.schedule_free_adamw,
        {"learning_rate": 0.1, "warmup_steps": 2, "weight_decay": 1e-2},
        needs_params=True,
        **_OPTIMIZER,
    ),
    # jnp.clip of a complex coordinate is not its phase times a real number.
    Entry(
        "scale_by_adopt",
        "scale_by_adopt",
        _scale_by_adopt_example,
        supports_complex=False,
        **_decay("b1"),
    ),
    # The first step only sets v_0 and moves nothing: not a named optimizer
    # here, since the one-step Flax test could not see it descend.
    Entry(
        "adopt",
        "adopt",
        _adopt_example,
        supports_complex=False,
        descends=True,
        blocks=("scale_by_adopt", "scale_by_learning_rate"),
        **_LR,
    ),
    Entry("scale_by_ademamix", "scale_by_ademamix", gradtx.scale_by_ademamix, **_decay("b1")),
    Entry(
        "ademamix",
        "ademamix",
        gradtx.ademamix,
        {"learning_rate": 0.1, "weight_decay": 1e-2},
        needs_params=True,
        blocks=("scale_by_ademamix", "add_decayed_weights", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "scale_by_simplified_ademamix",
        "scale_by_simplified_ademamix",
        gradtx.scale_by_simplified_ademamix,
        {"alpha": 1.0},
        **_decay("b2"),
    ),
    Entry(
        "simplified_ademamix",
        "simplified_ademamix",
        gradtx.simplified_ademamix,
        {"learning_rate": 0.1, "alpha": 1.0, "weight_decay": 1e-2},
        needs_params=True,
        blocks=("scale_by_simplified_ademamix", "add_decayed_weights", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    # Muon (gradtx/optimizers/muon.py): the named optimizer sends the 2-D leaf to
    # Muon and the 1-D one to AdamW; the block orthogonalises matrices only, so its
    # entry masks it to them. Newton-Schulz normalises each leaf (reduces_per_leaf).
    Entry(
        "muon",
        "muon",
        gradtx.muon,
        {"learning_rate": 0.1},
        needs_params=True,
        selects_by_tree=True,
        reduces_per_leaf=True,
        **_OPTIMIZER,
    ),
    Entry(
        "scale_by_muon",
        "scale_by_muon",
        _scale_by_muon_example,
        selects_by_tree=True,
        reduces_per_leaf=True,
        **_decay("beta"),
    ),
    # SAM, Sophia and GaLore (Optax's contrib). SAM's ascent steps climb, so the
    # transparent entry does not descend; the opaque one reads grad_fn. Sophia
    # reads obj_fn (its Hutchinson probes come from a key in the state); GaLore
    # takes one SVD per matrix leaf.
    Entry(
        "sam",
        "sam",
        _sam_example,
        needs_params=True,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    Entry(
        "sam_opaque",
        "sam",
        functools.partial(_sam_example, opaque_mode=True),
        needs_params=True,
        descends=True,
        extra_args={"grad_fn": _sam_grad_fn},
        **_LR,
    ),
    Entry(
        "scale_by_sophia",
        "scale_by_sophia",
        gradtx.scale_by_sophia,
        {"update_interval": 2},
        stochastic=True,
        **_decay("b1"),
        **_SECOND_ORDER_OBJ,
    ),
    Entry(
        "hutchinson_estimator_diag_hessian",
        "hutchinson_estimator_diag_hessian",
        gradtx.hutchinson_estimator_diag_hessian,
        checks_structure=False,  # its state is a key; the estimate is shaped by the params
        stochastic=True,
        **_SECOND_ORDER_OBJ,
    ),
    Entry(
        "sophia",
        "sophia",
        gradtx.sophia,
        {"learning_rate": 0.1, "update_interval": 2},
        stochastic=True,
        blocks=("scale_by_sophia", "add_decayed_weights", "scale_by_learning_rate"),
        **_SECOND_ORDER_OBJ,
        **_OPTIMIZER,
    ),
    Entry(
        "scale_by_galore",
        "scale_by_galore",
        gradtx.scale_by_galore,
        {"rank": 1, "update_proj_gap": 2},
        supports_complex=False,
        reduces_per_leaf=True,
        hyperparameter="scale",
        hyperparameter_values=(0.5, 1.0, 2.0),
    ),
    Entry(
        "galore",
        "galore",
        gradtx.galore,
        {"learning_rate": 0.1, "rank": 1, "update_proj_gap": 2},
        needs_params=True,  # its decay block reads them even at weight_decay=0
        supports_complex=False,
        reduces_per_leaf=True,
        blocks=("scale_by_galore", "add_decayed_weights", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    # Parameter-free methods (Optax's contrib): prodigy, dadapt_adamw, dog, dowg,
    # mechanize, cocob, momo. Each measures the distance from the start or reads
    # the loss, so each needs the params.
    # d_0 = 1e-2: Optax's 1e-6 makes the first steps too small to lower a float32 loss.
    Entry(
        "prodigy",
        "prodigy",
        gradtx.prodigy,
        {"estim_lr0": 1e-2},
        needs_params=True,
        **_OPTIMIZER,
    ),
    Entry(
        "dadapt_adamw",
        "dadapt_adamw",
        gradtx.dadapt_adamw,
        {"estim_lr0": 1e-2},
        needs_params=True,
        **_OPTIMIZER,
    ),
    # Global DoG and DoWG: one distance and one gradient sum over the whole tree.
    Entry(
        "dog", "dog", gradtx.dog, {"init_step": ("distance", 0.1)}, needs_params=True, **_OPTIMIZER
    ),
    Entry(
        "dowg", "dowg", gradtx.dowg, {"init_estim_sq_dist": 0.01}, needs_params=True, **_OPTIMIZER
    ),
    # COCOB bets per coordinate; its learning rate scales the gradient, not the step.
    Entry(
        "scale_by_cocob",
        "scale_by_cocob",
        gradtx.scale_by_cocob,
        descends=True,
        needs_params=True,
        supports_complex=False,
        hyperparameter="alpha",
        hyperparameter_values=(10.0, 100.0, 200.0),
    ),
    Entry(
        "cocob",
        "cocob",
        gradtx.cocob,
        is_named_optimizer=True,
        descends=True,
        needs_params=True,
        supports_complex=False,
        hyperparameter="learning_rate",
        hyperparameter_values=(0.5, 1.0, 2.0),
    ),
    # MoMo reads the loss: extra_args["value"].
    Entry(
        "momo",
        "momo",
        gradtx.momo,
        {"learning_rate": 0.1},
        is_named_optimizer=True,
        descends=True,
        needs_params=True,
        extra_args={"value": 1.0},
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    Entry(
        "momo_adam",
        "momo_adam",
        gradtx.momo_adam,
        {"learning_rate": 0.1},
        is_named_optimizer=True,
        descends=True,
        needs_params=True,
        extra_args={"value": 1.0},
        hyperparameter="learning_rate",
        hyperparameter_values=(0.01, 0.1, 0.3),
    ),
    # Mechanic scales a base optimizer's summed steps (here Adam's).
    Entry(
        "mechanize",
        "mechanize",
        _mechanize_example,
        descends=True,
        needs_params=True,
        supports_complex=False,
        **_LR,
    ),
    # Shampoo (gradtx/optimizers/shampoo.py): block_size 2 cuts tiny_params' (2, 3)
    # leaf into two blocks; the grafted norm is taken per block (reduces_per_leaf);
    # real params only. Its preconditioners are not param-shaped: their blocks axis
    # is split by the rule the module registers (gradtx.sharding.register_statistics).
    # matrix_epsilon 1e-3: with the default 1e-6 the first step's roots, of rank-1
    # blocks plus 1e-6 I (eigenvalues 1e-6 beside O(1)), turn the sharded gradient's
    # reordered float32 sums into ~14 ulps of the state, past test_sharding's 8.
    Entry(
        "shampoo",
        "shampoo",
        gradtx.shampoo,
        {"learning_rate": 0.1, "block_size": 2, "matrix_epsilon": 1e-3},
        needs_params=True,
        supports_complex=False,
        reduces_per_leaf=True,
        blocks=("scale_by_shampoo", "add_decayed_weights", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "scale_by_shampoo",
        "scale_by_shampoo",
        gradtx.scale_by_shampoo,
        {"block_size": 2},
        supports_complex=False,
        reduces_per_leaf=True,
        **_decay("b1"),
    ),
    # SOAP (gradtx/optimizers/soap.py): Adam in the eigenbases of per-dimension
    # statistics, each a contraction over the whole leaf; real params only. An
    # eigenbasis is arbitrary in the null space of a rank-deficient statistic (a
    # side longer than the other after one gradient), so two runs that differ by
    # rounding (sharded and not, tests/sharded/multi_device.py's 16-wide kernels)
    # would hold different, equally valid bases: max_precond_dim=12 leaves the
    # 16-wide sides unpreconditioned, and every statistic of full rank.
    Entry(
        "soap",
        "soap",
        gradtx.soap,
        {"learning_rate": 0.1, "precondition_frequency": 2, "max_precond_dim": 12},
        needs_params=True,
        supports_complex=False,
        reduces_per_leaf=True,
        holds_eigenvectors=True,
        blocks=("scale_by_soap", "add_decayed_weights", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "scale_by_soap",
        "scale_by_soap",
        gradtx.scale_by_soap,
        {"precondition_frequency": 2},
        supports_complex=False,
        reduces_per_leaf=True,
        **_decay("b1"),
    ),
    # bfloat16 parameter aids
    Entry(
        "stochastic_rounding",
        "stochastic_rounding",
        gradtx.stochastic_rounding,
        {"key": 0},
        needs_params=True,
        checks_structure=False,
        stochastic=True,
        rounds_params=True,
    ),
    Entry(
        "kahan_summation",
        "kahan_summation",
        gradtx.kahan_summation,
        needs_params=True,
        rounds_params=True,
    ),
    # Adam-mini
    Entry(
        "adam_mini",
        "adam_mini",
        gradtx.adam_mini,
        {"learning_rate": 0.1, "weight_decay": 1e-2},
        needs_params=True,
        reduces_per_leaf=True,
        blocks=("scale_by_adam_mini", "add_decayed_weights", "scale_by_learning_rate"),
        **_OPTIMIZER,
    ),
    Entry(
        "scale_by_adam_mini",
        "scale_by_adam_mini",
        gradtx.scale_by_adam_mini,
        reduces_per_leaf=True,
        **_decay("b1"),
    ),
    # quantized state (gradtx/transforms/quantized_state.py, gradtx/optimizers/low_bit.py):
    # blocks of 2 and no minimum size, so that the tiny params are quantized. Only
    # real floating leaves are quantized: with complex params Adam's nu (real) is
    # quantized and mu (complex) is not, so the complex run is not the real run
    # rotated (supports_complex=False). adamw_4bit's v is rank-1 by default (the
    # 2x3 tiny param has two axes longer than 1): its scales are maxima over each
    # leaf's rows and columns, which flat's one buffer does not have
    # (reduces_per_leaf=True); adamw_4bit_nu_block keeps v in blocks.
    Entry(
        "adamw_8bit",
        "adamw_8bit",
        gradtx.adamw_8bit,
        {"learning_rate": 0.1, "block_size": 2, "min_size": 1},
        needs_params=True,
        supports_complex=False,
        **_OPTIMIZER,
    ),
    Entry(
        "adamw_4bit",
        "adamw_4bit",
        gradtx.adamw_4bit,
        {"learning_rate": 0.1, "block_size": 2, "min_size": 1},
        needs_params=True,
        supports_complex=False,
        reduces_per_leaf=True,
        **_OPTIMIZER,
    ),
    Entry(
        "adamw_4bit_nu_block",
        "adamw_4bit",
        gradtx.adamw_4bit,
        {"learning_rate": 0.1, "block_size": 2, "min_size": 1, "nu_normalization": "block"},
        needs_params=True,
        supports_complex=False,
        **_OPTIMIZER,
    ),
    Entry(
        "lion_8bit",
        "lion_8bit",
        gradtx.lion_8bit,
        {"learning_rate": 0.1, "weight_decay": 1e-2, "block_size": 2, "min_size": 1},
        needs_params=True,
        supports_complex=False,
        **_OPTIMIZER,
    ),
    Entry(
        "quantize_state_adam",
        "quantize_state",
        lambda learning_rate=0.1: gradtx.quantize_state(
            gradtx.adam(learning_rate), block_size=2, min_size=1
        ),
        descends=True,
        supports_complex=False,
        **_LR,
    ),
    Entry(
        "quantize_state_adam_rank1",
        "quantize_state",
        lambda learning_rate=0.1: gradtx.quantize_state(
            gradtx.adam(learning_rate), bits=4, block_size=2, min_size=1, rank1_fields=("nu",)
        ),
        descends=True,
        supports_complex=False,
        reduces_per_leaf=True,
        **_LR,
    ),
    # LAMB's PyTorch forms: one block apart from the chain, so one entry.
    Entry(
        "lamb_pytorch_optimizer_forms",
        "lamb",
        gradtx.lamb,
        {
            "learning_rate": 0.1,
            "bias_correction": "step",
            "weight_decouple": True,
            "eps_in_trust_ratio": True,
            "max_weight_norm": 1.0,
        },
        needs_params=True,
        reduces_per_leaf=True,
        **_OPTIMIZER,
    ),
    # Prodigy's growth cap: its state gains d_max (ProdigyGrowthState).
    Entry(
        "prodigy_growth_rate",
        "prodigy",
        gradtx.prodigy,
        {"estim_lr0": 1e-2, "growth_rate": 1.5},
        needs_params=True,
        **_OPTIMIZER,
    ),
)

BY_NAME: dict[str, Entry] = {entry.name: entry for entry in REGISTRY}
assert len(BY_NAME) == len(REGISTRY), "registry names must be unique"

NAMED_OPTIMIZERS = tuple(e for e in REGISTRY if e.is_named_optimizer)
DESCENDING = tuple(e for e in REGISTRY if e.descends)
COMPLEX = tuple(e for e in REGISTRY if e.supports_complex)
STRUCTURE_CHECKED = tuple(e for e in REGISTRY if e.checks_structure)
WITH_HYPERPARAMETER = tuple(e for e in REGISTRY if e.hyperparameter is not None)
# Entries with arithmetic of their own: the dtype matrix runs on these (see Entry.blocks).
DTYPE_MATRIX = tuple(e for e in REGISTRY if not e.blocks)

# Public functions that are not transformation factories; the meta-test checks
# that each of them is indeed not one.
NOT_TRANSFORMATIONS = frozenset(
    {
        "apply_updates",
        # DP-SGD's clipping of per-example gradients: a function of a batch.
        "per_example_global_norm_clip",
        "per_example_layer_norm_clip",
        # Optax's numerics, a stateless init and the state mapper: functions on values.
        "global_norm",
        "safe_norm",
        "safe_root_mean_squares",
        "safe_increment",
        "safe_int32_increment",
        "init_empty_state",
        "tree_map_params",
        # Linear algebra (Optax's): functions on matrices.
        "power_iteration",
        "matrix_inverse_pth_root",
        "nnls",
        "multi_normal",
        # Readers of a state, for evaluation or logging.
        "has_updated",
        # A mask function for the penalties.
        "exclude_bias_and_norm",
        # Adam-mini's default block layout: a function of a path and a shape.
        "adam_mini_partition",
        "lookahead_slow_params",
        "schedule_free_eval_params",
        "averaged_params",
        # Training tools around the optimizer (gradtx.training) that are not
        # transformations; record_curves is, and is registered above.
        *(n for n in gradtx.training.__all__ if n != "record_curves"),
        # The second-order driver and its helper.
        "minimize",
        "value_and_grad_from_state",
        # Functions on values (Optax's): averages of params, a backward-pass scale,
        # MultiSteps' skip predicates, and microbatched evaluation.
        "incremental_update",
        "periodic_update",
        "scale_gradient",
        "skip_large_updates",
        "skip_not_finite",
        "microbatch",
        # Schedules return count -> value functions (tests/test_schedules.py);
        # gradtx.schedules also holds Optax's inject_* wrappers, registered above.
        *(name for name in gradtx.schedules.__all__ if not name.startswith("inject_")),
        # quantized state: the maps and the block-wise (de)quantizers, functions on arrays.
        "dynamic_map",
        "linear_map",
        "zero_free_linear_map",
        "quantize_blockwise",
        "dequantize_blockwise",
        "quantize_rank1",
        "dequantize_rank1",
        # adaptive_grad_clip's unit norms and rule, functions on arrays (Optax's).
        "unitwise_norm",
        "unitwise_clip",
        # Optax's top-level names of gradtx.tree's moment updates (functions on trees).
        "update_moment",
        "update_infinity_moment",
        "update_moment_per_elem_norm",
    }
)


# ---------------------------------------------------------------- shared inputs


def tiny_params(dtype: Any = jnp.float32) -> dict[str, jax.Array]:
    """A two-leaf tree of different shapes, small enough to compile fast."""
    return {
        "w": jnp.asarray([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype),
        "b": jnp.asarray([0.3, -0.2], dtype),
    }


def tiny_grads(step: int, dtype: Any = jnp.float32) -> dict[str, jax.Array]:
    """Deterministic, step-dependent gradients shaped like :func:`tiny_params`.

    Drawn with numpy, so that building them inside a jitted test function adds
    constants, not a random-number program to compile.
    """
    rng = np.random.default_rng(1000 + step)
    return {
        "w": jnp.asarray(rng.normal(size=(2, 3)).astype(np.float32)).astype(dtype),
        "b": jnp.asarray(rng.normal(size=2).astype(np.float32)).astype(dtype),
    }


def run(
    tx: gradtx.GradientTransformation, params: Any, grads_seq: list[Any], compiled: bool = False
) -> tuple[list[Any], Any]:
    """Feeds ``grads_seq`` to ``tx`` at fixed ``params``; returns the updates and the last state.

    Eagerly, or with ``compiled=True`` through one jitted step reused for every
    gradient (as a training loop runs it).
    """
    state = tx.init(params)
    update = lambda g, s: tx.update(g, s, params)  # noqa: E731
    if compiled:
        update = jax.jit(update)
    outputs = []
    for grads in grads_seq:
        updates, state = update(grads, state)
        outputs.append(updates)
    return outputs, state


def _has_loop(jaxpr: Any) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "while":
            return True
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns") and _has_loop(inner):
                    return True
    return False


@functools.cache
def slow_eagerly(name: str) -> bool:
    """Whether the entry's eager ``update`` costs seconds where a jitted step costs one compile.

    True for the second-order methods (a Hessian, curvature pairs and their checks:
    dozens of primitives, each compiled for every new shape and dtype) and for
    every update that runs a ``lax.while_loop`` (a line search, conjugate
    gradients, a damping search: eagerly, each call compiles its loops afresh).
    The tests about dtypes and trees, not about eager execution, run these
    entries compiled (see :func:`run_entry`); eager against jit is tested on its own.
    """
    entry = BY_NAME[name]
    if entry.factory.__module__.startswith("gradtx.second_order"):
        return True
    tx = entry.make()
    params = tiny_params()
    jaxpr = jax.make_jaxpr(lambda g, s: tx.update(g, s, params))(tiny_grads(0), tx.init(params))
    return _has_loop(jaxpr.jaxpr)


def run_entry(entry: Entry, params: Any, grads_seq: list[Any]) -> tuple[list[Any], Any]:
    """:func:`run` of a fresh ``entry.make()``, compiled when it is :func:`slow_eagerly`."""
    return run(entry.make(), params, grads_seq, compiled=slow_eagerly(entry.name))


REFERENCE_STEPS = 3


@functools.cache
def _reference_run(name: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    tx = BY_NAME[name].make()
    params = tiny_params()
    state = tx.init(params)
    outputs, states = [], []
    for step in range(REFERENCE_STEPS):
        updates, state = tx.update(tiny_grads(step), state, params)
        outputs.append(updates)
        states.append(state)
    return tuple(outputs), tuple(states)


def reference_run(entry: Entry, steps: int = REFERENCE_STEPS) -> tuple[list[Any], Any]:
    """``run(entry.make(), tiny_params(), [tiny_grads(i) for i in range(steps)])``, cached.

    The eager float32 run that many generic tests compare against, computed once
    per process for each entry (an eager line search compiles its loops at every
    call, so recomputing it per test dominated the suite). Its first ``steps``
    updates and the state after them; jax arrays are immutable, so sharing them is
    safe (a test that donates a state donates one of its own ``init``).
    """
    if not 1 <= steps <= REFERENCE_STEPS:
        raise ValueError(f"reference_run keeps 1 to {REFERENCE_STEPS} steps; asked for {steps}")
    outputs, states = _reference_run(entry.name)
    return list(outputs[:steps]), states[steps - 1]
