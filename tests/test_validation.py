"""Bad input fails early and says what is wrong; traced input is left alone.

* Every invalid hyperparameter raises ``ValueError`` at construction, naming the
  argument, the value given and the range allowed (the table below).
* Hyperparameters that are tracers (under ``jit``, ``vmap``, ``grad``) or
  schedules are not checked, so those uses keep working.
* Gradients whose tree differs from the one the state was built from raise a
  ``ValueError`` naming the paths that differ, for every registry entry that
  holds per-leaf state.
"""

from __future__ import annotations

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests.registry import STRUCTURE_CHECKED, WITH_HYPERPARAMETER, run, tiny_grads, tiny_params

NAN, INF = math.nan, math.inf
UNIT = r"in \[0, 1\)"  # the range every decay rate must lie in

# (factory, bad keyword arguments, regex the message must match). Each regex
# names the argument and the value given; most also the allowed range.
BAD_HYPERPARAMETERS = [
    # The 2024-26 methods (fuller tables beside each in tests/test_contrib_*.py,
    # tests/test_soap.py and tests/test_shampoo.py).
    (gradtx.shampoo, dict(learning_rate=0.1, b1=1.5), rf"scale_by_shampoo: b1 must be {UNIT}"),
    (gradtx.scale_by_shampoo, dict(b1=1.5), rf"scale_by_shampoo: b1 must be {UNIT}"),
    (gradtx.soap, dict(b1=1.5), rf"scale_by_soap: b1 must be {UNIT}"),
    (gradtx.scale_by_soap, dict(b1=1.5), rf"scale_by_soap: b1 must be {UNIT}"),
    # Quantized state (fuller table in tests/test_quantized_state.py).
    (gradtx.adamw_8bit, dict(learning_rate=0.1, b1=1.5), rf"scale_by_adam: b1 must be {UNIT}"),
    (gradtx.adamw_4bit, dict(learning_rate=0.1, b2=1.0), rf"scale_by_adam: b2 must be {UNIT}"),
    (gradtx.lion_8bit, dict(learning_rate=0.1, block_size=0), r"quantize_state: block_size must"),
    (
        functools.partial(gradtx.quantize_state, gradtx.adam(0.1)),
        dict(bits=3),
        r"quantize_state: bits must be 8 or 4, got 3",
    ),
    (
        gradtx.adamw_4bit,
        dict(learning_rate=0.1, nu_normalization="rank-1"),
        r"adamw_4bit: nu_normalization must be 'rank1' or 'block', got 'rank-1'",
    ),
    (
        functools.partial(gradtx.quantize_state, gradtx.adam(0.1)),
        dict(rank1_fields="nu"),
        r"quantize_state: rank1_fields must be a collection of names, not a str",
    ),
    (gradtx.adam_mini, dict(b1=1.5), rf"scale_by_adam_mini: b1 must be {UNIT}, got 1\.5"),
    (gradtx.adam_mini, dict(num_heads=0), r"scale_by_adam_mini: num_heads must be"),
    (gradtx.scale_by_adam_mini, dict(b2=1.0), rf"scale_by_adam_mini: b2 must be {UNIT}"),
    (
        gradtx.acprop,
        dict(learning_rate=0.1, b1=1.5),
        rf"scale_by_acprop: b1 must be {UNIT}, got 1\.5",
    ),
    (gradtx.scale_by_acprop, dict(b1=1.5), rf"scale_by_acprop: b1 must be {UNIT}"),
    (gradtx.ademamix, dict(learning_rate=0.1, b1=1.5), rf"scale_by_ademamix: b1 must be {UNIT}"),
    (gradtx.scale_by_ademamix, dict(b1=1.5), rf"scale_by_ademamix: b1 must be {UNIT}"),
    (
        gradtx.simplified_ademamix,
        dict(learning_rate=0.1, b1=1.5),
        rf"scale_by_simplified_ademamix: b1 must be {UNIT}",
    ),
    (gradtx.scale_by_simplified_ademamix, dict(b1=1.5), r"scale_by_simplified_ademamix: b1"),
    (gradtx.adopt, dict(learning_rate=0.1, b1=1.5), rf"scale_by_adopt: b1 must be {UNIT}"),
    (gradtx.scale_by_adopt, dict(b1=1.5), rf"scale_by_adopt: b1 must be {UNIT}"),
    (gradtx.cocob, dict(eps=-1.0), r"scale_by_cocob: eps must be a finite number > 0"),
    (gradtx.scale_by_cocob, dict(eps=-1.0), r"scale_by_cocob: eps must be a finite number > 0"),
    (gradtx.dadapt_adamw, dict(eps=-1.0), r"dadapt_adamw: eps must be a finite number >= 0"),
    (gradtx.prodigy, dict(eps=-1.0), r"prodigy: eps must be a finite number >= 0"),
    (gradtx.dog, dict(eps=-1.0), r"dog: eps must be a finite number >= 0"),
    (gradtx.dowg, dict(eps=-1.0), r"dowg: eps must be a finite number >= 0"),
    (
        gradtx.galore,
        dict(learning_rate=0.1, weight_decay=-1.0),
        r"weight_decay must be a finite number >= 0",
    ),
    (gradtx.scale_by_galore, dict(scale=float("nan")), r"scale_by_galore: scale must be finite"),
    (gradtx.madgrad, dict(learning_rate=0.1, momentum=1.5), rf"madgrad: momentum must be {UNIT}"),
    (
        gradtx.scale_by_madgrad,
        dict(learning_rate=0.1, momentum=1.5),
        rf"scale_by_madgrad: momentum must be {UNIT}",
    ),
    (gradtx.momo, dict(beta=1.5), rf"momo: beta must be {UNIT}"),
    (gradtx.momo_adam, dict(b1=1.5), rf"momo_adam: b1 must be {UNIT}"),
    (gradtx.scale_by_muon, dict(beta=1.5), rf"scale_by_muon: beta must be {UNIT}"),
    (gradtx.sophia, dict(learning_rate=0.1, b1=1.5), rf"scale_by_sophia: b1 must be {UNIT}"),
    (gradtx.scale_by_sophia, dict(b1=1.5), rf"scale_by_sophia: b1 must be {UNIT}"),
    (gradtx.schedule_free_sgd, dict(b1=1.5), r"schedule_free: b1 must be in \[0, 1\], got 1\.5"),
    (gradtx.schedule_free_adamw, dict(b1=1.5), r"schedule_free: b1 must be in \[0, 1\]"),
    (
        functools.partial(gradtx.schedule_free, gradtx.sgd(0.1), 0.1),
        dict(b1=1.5),
        r"schedule_free: b1 must be in \[0, 1\]",
    ),
    (
        functools.partial(gradtx.mechanize, gradtx.sgd(0.1)),
        dict(s_init=-1.0),
        r"mechanize: s_init must be a finite number > 0",
    ),
    (
        functools.partial(gradtx.sam, gradtx.sgd(0.1), gradtx.sgd(0.1)),
        dict(sync_period=0),
        r"sam: sync_period must be an integer >= 1",
    ),
    # Muon checks its block's numbers under the block's name (more rows: test_contrib_muon.py).
    (gradtx.muon, dict(learning_rate=0.1, beta=1.5), r"scale_by_muon: beta must be in \[0, 1\)"),
    # Decay rates outside [0, 1).
    (gradtx.ema, dict(decay=1.0), rf"decay must be {UNIT}, got 1\.0"),
    (gradtx.ema, dict(decay=-0.1), rf"decay must be {UNIT}, got -0\.1"),
    (gradtx.bias_correction, dict(decay=1.5), rf"decay must be {UNIT}, got 1\.5"),
    (gradtx.trace, dict(decay=1.0), rf"decay must be {UNIT}, got 1\.0"),
    (gradtx.nesterov, dict(decay=-0.5), rf"decay must be {UNIT}, got -0\.5"),
    (gradtx.scale_by_rms, dict(decay=1.0), rf"decay must be {UNIT}, got 1\.0"),
    (gradtx.scale_by_stddev, dict(decay=1.2), rf"decay must be {UNIT}, got 1\.2"),
    (gradtx.scale_by_adadelta, dict(rho=1.0), rf"rho must be {UNIT}, got 1\.0"),
    (gradtx.scale_by_adam, dict(b1=1.5), rf"b1 must be {UNIT}, got 1\.5"),
    (gradtx.scale_by_adam, dict(b2=-3.0), rf"b2 must be {UNIT}, got -3\.0"),
    (gradtx.scale_by_adam, dict(b1=NAN), rf"b1 must be {UNIT}, got nan"),
    (gradtx.scale_by_amsgrad, dict(b2=1.0), rf"b2 must be {UNIT}, got 1\.0"),
    (gradtx.scale_by_adamax, dict(b1=INF), rf"b1 must be {UNIT}, got inf"),
    (gradtx.scale_by_nadam, dict(b1=1.0), rf"b1 must be {UNIT}, got 1\.0"),
    (gradtx.sgd, dict(learning_rate=0.1, momentum=1.0), rf"momentum must be {UNIT}, got 1\.0"),
    (gradtx.momentum, dict(learning_rate=0.1, momentum=-0.1), r"momentum must be .*got -0\.1"),
    (gradtx.nesterov_momentum, dict(learning_rate=0.1, momentum=2.0), r"momentum.*got 2\.0"),
    (gradtx.rmsprop, dict(learning_rate=0.1, decay=1.0), rf"decay must be {UNIT}, got 1\.0"),
    (gradtx.rmsprop, dict(learning_rate=0.1, momentum=1.5), rf"momentum must be {UNIT}, got 1\.5"),
    (gradtx.adadelta, dict(rho=-0.1), rf"rho must be {UNIT}, got -0\.1"),
    (gradtx.adam, dict(b1=1.5), rf"b1 must be {UNIT}, got 1\.5"),
    (gradtx.adam, dict(b2=-3.0), rf"b2 must be {UNIT}, got -3\.0"),
    (gradtx.adamw, dict(b2=1.0), rf"b2 must be {UNIT}, got 1\.0"),
    (gradtx.amsgrad, dict(b1=1.0), rf"b1 must be {UNIT}, got 1\.0"),
    (gradtx.adamax, dict(b2=1.0), rf"b2 must be {UNIT}, got 1\.0"),
    (gradtx.nadam, dict(b1=-0.1), rf"b1 must be {UNIT}, got -0\.1"),
    # RAdam and AdaBound.
    (gradtx.radam, dict(threshold=3.0), r"threshold must be in \[4, inf\), got 3\.0"),
    (gradtx.radam, dict(below_threshold="none"), r"below_threshold must be one of .*got 'none'"),
    (gradtx.scale_by_radam, dict(b2=1.0), rf"b2 must be {UNIT}, got 1\.0"),
    (gradtx.adabound, dict(final_lr=-1.0), r"final_lr must be .*> 0, got -1\.0"),
    (gradtx.adabound, dict(gamma=-1.0), r"gamma must be .*>= 0, got -1\.0"),
    (gradtx.amsbound, dict(b1=1.5), rf"b1 must be {UNIT}, got 1\.5"),
    (gradtx.scale_by_adabound, dict(form="x"), r"form must be one of .*got 'x'"),
    # NAdamW, AdaMaxW, AdaBelief, Yogi.
    (gradtx.nadamw, dict(b1=1.0), rf"b1 must be {UNIT}, got 1\.0"),
    (gradtx.nadamw, dict(weight_decay=-1.0), r"weight_decay must be .*>= 0, got -1\.0"),
    (gradtx.adamaxw, dict(b2=-0.1), rf"b2 must be {UNIT}, got -0\.1"),
    (gradtx.adamaxw, dict(learning_rate=NAN), r"learning_rate must be finite, got nan"),
    (gradtx.adabelief, dict(learning_rate=0.1, b1=1.0), rf"b1 must be {UNIT}, got 1\.0"),
    (gradtx.adabelief, dict(learning_rate=INF), r"learning_rate must be finite, got inf"),
    (gradtx.scale_by_belief, dict(eps_root=-1.0), r"eps_root must be .*>= 0, got -1\.0"),
    (gradtx.yogi, dict(learning_rate=0.1, b2=1.5), rf"b2 must be {UNIT}, got 1\.5"),
    (gradtx.yogi, dict(learning_rate=0.1, eps=-1.0), r"eps must be .*>= 0, got -1\.0"),
    (
        gradtx.scale_by_yogi,
        dict(initial_accumulator_value=-1.0),
        r"initial_accumulator_value must be .*>= 0, got -1\.0",
    ),
    (gradtx.scale_by_yogi, dict(initial_mu_value=INF), r"initial_mu_value must be finite, got inf"),
    # Sign methods and noisy SGD.
    (gradtx.lion, dict(learning_rate=0.1, b1=1.5), r"b1 must be in \[0, 1\], got 1\.5"),
    (gradtx.lion, dict(learning_rate=0.1, b2=1.0), rf"b2 must be {UNIT}, got 1\.0"),
    (gradtx.lion, dict(learning_rate=NAN), r"learning_rate must be finite, got nan"),
    (gradtx.lion, dict(learning_rate=0.1, weight_decay=-1.0), r"weight_decay must be .*got -1\.0"),
    (gradtx.scale_by_lion, dict(mode="soft"), r"mode must be one of .*got 'soft'"),
    (gradtx.scale_by_lion, dict(smooth_beta=0.0), r"smooth_beta must be .*> 0, got 0\.0"),
    (gradtx.scale_by_lion, dict(mu_dtype="int32"), r"mu_dtype.*got 'int32'"),
    (gradtx.sign_sgd, dict(learning_rate=INF), r"learning_rate must be finite, got inf"),
    (gradtx.signum, dict(learning_rate=0.1, beta=1.0), rf"beta must be {UNIT}, got 1\.0"),
    (
        gradtx.signum,
        dict(learning_rate=0.1, accumulator_dtype="int32"),
        r"accumulator_dtype.*got 'int32'",
    ),
    (gradtx.noisy_sgd, dict(learning_rate=0.1, eta=-1.0, key=0), r"eta must be .*>= 0, got -1\.0"),
    (gradtx.noisy_sgd, dict(learning_rate=0.1), r"key must be an int seed or a PRNG key"),
    (gradtx.noisy_sgd, dict(learning_rate=NAN, key=0), r"learning_rate must be finite, got nan"),
    # Optimistic methods.
    (gradtx.scale_by_optimistic_gradient, dict(alpha=NAN), r"alpha must be finite, got nan"),
    (
        gradtx.optimistic_gradient_descent,
        dict(learning_rate=0.1, beta=INF),
        r"beta must be finite, got inf",
    ),
    (gradtx.optimistic_adam_v2, dict(learning_rate=0.1, b1=1.0), rf"b1 must be {UNIT}, got 1\.0"),
    (gradtx.optimistic_adam, dict(learning_rate=0.1, optimism=NAN), r"optimism must be finite"),
    (gradtx.optimistic_adam, dict(learning_rate=INF), r"learning_rate must be finite, got inf"),
    # Performance-dependent scaling.
    (gradtx.reduce_on_plateau, dict(factor=1.5), r"factor must be in \(0, 1\), got 1\.5"),
    (gradtx.reduce_on_plateau, dict(patience=0), r"patience must be an integer >= 1, got 0"),
    # Lookahead and parameter averaging.
    (
        gradtx.lookahead,
        dict(fast_optimizer=gradtx.sgd(0.1), sync_period=0),
        r"sync_period must be an integer >= 1, got 0",
    ),
    (
        gradtx.lookahead,
        dict(fast_optimizer=gradtx.sgd(0.1), slow_step_size=1.5),
        r"slow_step_size must be in .*got 1\.5",
    ),
    (gradtx.ranger, dict(sync_period=0), r"sync_period must be an integer >= 1, got 0"),
    (gradtx.average_params, dict(decay=1.0), rf"decay must be {UNIT}, got 1\.0"),
    # Wrappers.
    (
        gradtx.accumulate,
        dict(inner=gradtx.sgd(0.1), every_k=0),
        r"every_k must be an integer >= 1, got 0",
    ),
    (
        gradtx.apply_if_finite,
        dict(inner=gradtx.sgd(0.1), raise_after=0),
        r"raise_after must be an integer >= 1, got 0",
    ),
    (
        gradtx.apply_if_finite,
        dict(inner=gradtx.sgd(0.1), max_consecutive_errors=-1),
        r"max_consecutive_errors must be an integer >= 0 or None, got -1",
    ),
    (
        gradtx.MultiSteps,
        dict(opt=gradtx.sgd(0.1), every_k_schedule=0),
        r"every_k_schedule must be an integer >= 1, got 0",
    ),
    (
        gradtx.MultiSteps,
        dict(opt=gradtx.sgd(0.1), every_k_schedule=2, should_skip_update_fn=1),
        r"should_skip_update_fn must be None or callable, got 1",
    ),
    (gradtx.partition, dict(transforms={}, param_labels={}), r"transforms is empty"),
    (gradtx.multi_transform, dict(transforms={}, param_labels={}), r"transforms is empty"),
    # Optax's utilities: DoG, the EMA of a measurement, the safe numerics, DP.
    (
        gradtx.scale_by_distance_over_gradients,
        dict(reps_rel=-1.0),
        r"scale_by_distance_over_gradients: reps_rel must be a finite number >= 0, got -1\.0",
    ),
    (
        gradtx.scale_by_distance_over_gradients,
        dict(eps=NAN),
        r"eps must be a finite number >= 0, got nan",
    ),
    (
        gradtx.scale_by_distance_over_gradients,
        dict(global_scale=INF),
        r"global_scale must be finite, got inf",
    ),
    (
        gradtx.measure_with_ema,
        dict(measure=jnp.abs, decay=1.5),
        rf"decay must be {UNIT}, got 1\.5",
    ),
    (
        gradtx.safe_norm,
        dict(x=jnp.ones(2), min_norm=-1.0),
        r"safe_norm: min_norm must be a finite number >= 0, got -1\.0",
    ),
    (
        gradtx.safe_root_mean_squares,
        dict(x=jnp.ones(2), min_rms=NAN),
        r"safe_root_mean_squares: min_rms must be a finite number >= 0, got nan",
    ),
    (
        gradtx.safe_increment,
        dict(count=jnp.asarray(1 + 1j)),
        r"safe_increment: count must have an integer or floating-point dtype, got complex64",
    ),
    (
        gradtx.power_iteration,
        dict(matrix=jnp.eye(2), error_tolerance=-1.0),
        r"power_iteration: error_tolerance must be a finite number >= 0, got -1\.0",
    ),
    (
        gradtx.matrix_inverse_pth_root,
        dict(matrix=jnp.eye(2), p=0),
        r"matrix_inverse_pth_root: p must be a positive integer, got 0",
    ),
    (
        gradtx.matrix_inverse_pth_root,
        dict(matrix=jnp.eye(2), p=2, ridge_epsilon=-1e-6),
        r"ridge_epsilon must be a finite number >= 0, got -1e-06",
    ),
    (
        gradtx.nnls,
        dict(A=jnp.eye(2), b=jnp.ones(2), iters=-1),
        r"nnls: iters must be an integer >= 0, got -1",
    ),
    (
        gradtx.per_example_layer_norm_clip,
        dict(grads=[jnp.ones((2, 3))], global_l2_norm_clip=-1.0),
        r"per_example_layer_norm_clip: global_l2_norm_clip must be a number >= 0 \(or inf\), "
        r"got -1\.0",
    ),
    (
        gradtx.inject_hyperparams,
        dict(inner_factory=gradtx.adam, hyperparam_dtype=jnp.float16),
        r"hyperparam_dtype must be None or a real floating dtype of at least 32 bits",
    ),
    # Optax catalogue: blocks, wrappers and functions on values.
    (
        gradtx.normalize_by_update_norm,
        dict(scale_factor=NAN),
        r"scale_factor must be finite, got nan",
    ),
    (gradtx.normalize_by_update_norm, dict(eps=-1.0), r"eps must be .*>= 0, got -1\.0"),
    (gradtx.scale_by_param_block_rms, dict(min_scale=-1.0), r"min_scale must be .*got -1\.0"),
    (gradtx.scale_by_param_block_norm, dict(min_scale=NAN), r"min_scale must be .*got nan"),
    (gradtx.apply_every, dict(k=0), r"k must be an integer >= 1, got 0"),
    (gradtx.apply_every, dict(k=1.5), r"k must be an integer >= 1, got 1\.5"),
    (
        gradtx.inject_stateful_hyperparams,
        dict(inner_factory=gradtx.adam, hyperparam_dtype=jnp.bfloat16),
        r"inject_stateful_hyperparams: hyperparam_dtype must be None or a real floating dtype",
    ),
    (
        gradtx.inject_stateful_hyperparams,
        dict(inner_factory=gradtx.adam, static_args="lr"),
        r"inject_stateful_hyperparams: static_args names \['lr'\]",
    ),
    (
        gradtx.incremental_update,
        dict(new_tensors=jnp.ones(2), old_tensors=jnp.zeros(2), step_size=1.5),
        r"step_size must be in \[0, 1\], got 1\.5",
    ),
    (
        gradtx.periodic_update,
        dict(new_tensors=jnp.ones(2), old_tensors=jnp.zeros(2), steps=3, update_period=0),
        r"update_period must be an integer >= 1, got 0",
    ),
    (gradtx.scale_gradient, dict(inputs=jnp.ones(2), scale=INF), r"scale must be finite, got inf"),
    (
        gradtx.skip_large_updates,
        dict(updates=jnp.ones(2), gradient_step=0, params=None, max_squared_norm=-1.0),
        r"max_squared_norm must be a number >= 0 \(or inf\), got -1\.0",
    ),
    (
        gradtx.microbatch,
        dict(fun=jnp.sum, argnums=0, microbatch_size=0),
        r"microbatch_size must be an integer >= 1, got 0",
    ),
    # Penalties, clipping and noise.
    (gradtx.add_l1_penalty, dict(l1_strength=-1.0), r"l1_strength must be .*>= 0, got -1\.0"),
    (gradtx.add_elastic_net, dict(strength=0.1, alpha=1.5), r"alpha must be in \[0, 1\], got 1\.5"),
    (gradtx.proximal_l1, dict(l1_strength=-1.0), r"l1_strength must be .*got -1\.0"),
    (gradtx.proximal_elastic_net, dict(strength=-1.0), r"strength must be .*got -1\.0"),
    (gradtx.decoupled_weight_decay, dict(weight_decay=-1.0), r"weight_decay must be .*got -1\.0"),
    (gradtx.clip, dict(max_delta=-1.0), r"max_delta must be a number >= 0.*got -1\.0"),
    (gradtx.clip_by_global_norm, dict(max_norm=NAN), r"max_norm must be .*got nan"),
    (gradtx.clip_by_leaf_norm, dict(max_norm=-1.0), r"max_norm must be .*got -1\.0"),
    (gradtx.clip_by_block_rms, dict(threshold=-1.0), r"threshold must be .*got -1\.0"),
    (gradtx.adaptive_grad_clip, dict(clipping=-1.0), r"clipping must be .*got -1\.0"),
    (gradtx.add_noise, dict(eta=-1.0, gamma=0.55, key=0), r"eta must be .*>= 0, got -1\.0"),
    (
        gradtx.stochastic_rounding,
        dict(key="a"),
        r"stochastic_rounding: key must be an int seed or one PRNG key, got 'a'",
    ),
    (gradtx.stochastic_rounding, dict(key=1.5), r"stochastic_rounding: key must be .*got 1\.5"),
    # DP-SGD: the per-example norm bound and the noise scale.
    (
        gradtx.differentially_private_aggregate,
        dict(l2_norm_clip=-1.0, noise_multiplier=1.0, key=0),
        r"l2_norm_clip must be a number >= 0 \(or inf\), got -1\.0",
    ),
    (
        gradtx.differentially_private_aggregate,
        dict(l2_norm_clip=1.0, noise_multiplier=-1.0, key=0),
        r"noise_multiplier must be a finite number >= 0, got -1\.0",
    ),
    (
        gradtx.dpsgd,
        dict(learning_rate=0.1, l2_norm_clip=NAN, noise_multiplier=1.0, seed=0),
        r"l2_norm_clip must be .*got nan",
    ),
    (
        gradtx.dpsgd,
        dict(learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.0, seed=0, momentum=1.0),
        rf"momentum must be {UNIT}, got 1\.0",
    ),
    # Rprop's step-size factors and bounds.
    (
        gradtx.rprop,
        dict(learning_rate=0.1, eta_minus=1.5),
        r"eta_minus must be in \(0, 1\), got 1\.5",
    ),
    (gradtx.rprop, dict(learning_rate=0.1, eta_plus=0.9), r"eta_plus must be .*> 1, got 0\.9"),
    (
        gradtx.rprop,
        dict(learning_rate=0.1, variant="rprop"),
        r"variant must be one of .*got 'rprop'",
    ),
    (gradtx.scale_by_rprop, dict(learning_rate=-1.0), r"learning_rate must be .*> 0, got -1\.0"),
    # Concrete arrays are checked like numbers.
    (gradtx.adam, dict(b1=jnp.asarray(1.5)), rf"b1 must be {UNIT}, got 1\.5"),
    (gradtx.scale_by_rms, dict(decay=np.float32(1.0)), rf"decay must be {UNIT}"),
    # Negative epsilons and accumulators.
    (gradtx.scale_by_rss, dict(eps=-1e-7), r"eps must be a finite number >= 0, got -1e-07"),
    (
        gradtx.scale_by_rss,
        dict(initial_accumulator_value=-0.1),
        r"initial_accumulator_value.*-0\.1",
    ),
    (
        gradtx.adagrad,
        dict(learning_rate=0.1, initial_accumulator_value=-1.0),
        r"initial_acc.*-1\.0",
    ),
    (gradtx.adagrad, dict(learning_rate=0.1, eps=-1.0), r"eps must be .*>= 0, got -1\.0"),
    (gradtx.scale_by_rms, dict(eps=-1e-8), r"eps must be .*>= 0, got -1e-08"),
    (gradtx.scale_by_rms, dict(initial_scale=-1.0), r"initial_scale must be .*>= 0, got -1\.0"),
    (gradtx.scale_by_stddev, dict(eps=INF), r"eps must be a finite number >= 0, got inf"),
    (gradtx.rmsprop, dict(learning_rate=0.1, eps=-1.0), r"eps must be .*>= 0, got -1\.0"),
    (gradtx.scale_by_adam, dict(eps=-1e-8), r"eps must be .*>= 0, got -1e-08"),
    (gradtx.scale_by_adam, dict(eps_root=-1.0), r"eps_root must be .*>= 0, got -1\.0"),
    (gradtx.scale_by_amsgrad, dict(eps=NAN), r"eps must be .*>= 0, got nan"),
    (gradtx.scale_by_adamax, dict(eps=-1.0), r"eps must be .*>= 0, got -1\.0"),
    (gradtx.scale_by_nadam, dict(eps_root=-1.0), r"eps_root must be .*>= 0, got -1\.0"),
    (gradtx.scale_by_nadam, dict(momentum_decay=-0.004), r"momentum_decay.*>= 0, got -0\.004"),
    (gradtx.adam, dict(eps=-1.0), r"eps must be .*>= 0, got -1\.0"),
    (gradtx.nadam, dict(momentum_decay=-1.0), r"momentum_decay.*got -1\.0"),
    # AdaDelta's eps is the whole numerator of the first step: it must be > 0.
    (gradtx.scale_by_adadelta, dict(eps=0.0), r"eps must be a finite number > 0, got 0\.0"),
    (gradtx.scale_by_adadelta, dict(eps=-1e-6), r"eps must be .*> 0, got -1e-06"),
    (gradtx.adadelta, dict(eps=0.0), r"eps must be .*> 0, got 0\.0"),
    # Learning rates and step sizes that are not finite.
    (gradtx.scale, dict(step_size=INF), r"step_size must be finite, got inf"),
    (
        gradtx.scale_by_learning_rate,
        dict(learning_rate=NAN),
        r"learning_rate must be finite, got nan",
    ),
    (gradtx.sgd, dict(learning_rate=NAN), r"learning_rate must be finite, got nan"),
    (gradtx.sgd, dict(learning_rate=-INF), r"learning_rate must be finite, got -inf"),
    (gradtx.momentum, dict(learning_rate=INF), r"learning_rate must be finite, got inf"),
    (gradtx.nesterov_momentum, dict(learning_rate=NAN), r"learning_rate.*got nan"),
    (gradtx.adagrad, dict(learning_rate=INF), r"learning_rate must be finite, got inf"),
    (gradtx.rmsprop, dict(learning_rate=NAN), r"learning_rate must be finite, got nan"),
    (gradtx.adadelta, dict(learning_rate=INF), r"learning_rate must be finite, got inf"),
    (gradtx.adam, dict(learning_rate=NAN), r"learning_rate must be finite, got nan"),
    (gradtx.adam, dict(learning_rate=np.float32(INF)), r"learning_rate must be finite.*inf"),
    (gradtx.adamw, dict(learning_rate=INF), r"learning_rate must be finite, got inf"),
    (gradtx.amsgrad, dict(learning_rate=NAN), r"learning_rate must be finite, got nan"),
    (gradtx.adamax, dict(learning_rate=-INF), r"learning_rate must be finite, got -inf"),
    (gradtx.nadam, dict(learning_rate=NAN), r"learning_rate must be finite, got nan"),
    # Weight decay: >= 0 and finite.
    (
        gradtx.add_decayed_weights,
        dict(weight_decay=-1e-4),
        r"weight_decay must be .*>= 0, got -0\.0001",
    ),
    (gradtx.add_decayed_weights, dict(weight_decay=NAN), r"weight_decay must be .*got nan"),
    (gradtx.adamw, dict(weight_decay=-1e-4), r"weight_decay must be .*>= 0, got -0\.0001"),
    (gradtx.adadelta, dict(weight_decay=-1.0), r"weight_decay must be .*>= 0, got -1\.0"),
    # Dtypes that are not floating-point dtypes.
    (
        gradtx.ema,
        dict(decay=0.9, accumulator_dtype="int32"),
        r"accumulator_dtype must be None or a floating-point dtype, got 'int32'",
    ),
    (
        gradtx.trace,
        dict(decay=0.9, accumulator_dtype="no_such_dtype"),
        r"accumulator_dtype.*got 'no_such_dtype'",
    ),
    (
        gradtx.sgd,
        dict(learning_rate=0.1, momentum=0.9, accumulator_dtype=jnp.int8),
        r"accumulator_dtype.*int8",
    ),
    (
        gradtx.scale_by_rss,
        dict(nu_dtype="bool"),
        r"nu_dtype must be None or a floating-point dtype, got 'bool'",
    ),
    (gradtx.scale_by_rms, dict(nu_dtype="int32"), r"nu_dtype.*got 'int32'"),
    (gradtx.scale_by_stddev, dict(nu_dtype="uint8"), r"nu_dtype.*got 'uint8'"),
    (gradtx.scale_by_adadelta, dict(nu_dtype="int16"), r"nu_dtype.*got 'int16'"),
    (gradtx.scale_by_adam, dict(mu_dtype="int32"), r"mu_dtype.*got 'int32'"),
    (gradtx.scale_by_adam, dict(nu_dtype="bogus"), r"nu_dtype.*got 'bogus'"),
    (gradtx.scale_by_amsgrad, dict(mu_dtype="int32"), r"mu_dtype.*got 'int32'"),
    (gradtx.scale_by_adamax, dict(nu_dtype="int32"), r"nu_dtype.*got 'int32'"),
    (gradtx.scale_by_nadam, dict(mu_dtype="int64"), r"mu_dtype.*got 'int64'"),
    (gradtx.adam, dict(mu_dtype="int32"), r"mu_dtype.*got 'int32'"),
    (gradtx.adamw, dict(nu_dtype="int32"), r"nu_dtype.*got 'int32'"),
    (gradtx.amsgrad, dict(nu_dtype="int32"), r"nu_dtype.*got 'int32'"),
    (gradtx.adamax, dict(mu_dtype="int32"), r"mu_dtype.*got 'int32'"),
    (gradtx.nadam, dict(nu_dtype="int32"), r"nu_dtype.*got 'int32'"),
    # Options that contradict each other.
    (
        gradtx.sgd,
        dict(learning_rate=0.1, nesterov=True),
        r"nesterov=True needs a momentum, got momentum=None",
    ),
    (gradtx.rmsprop, dict(learning_rate=0.1, nesterov=True), r"nesterov=True needs a momentum"),
    # Learning curves.
    (
        gradtx.record_curves,
        dict(inner=gradtx.sgd(0.1), num_steps=0),
        r"num_steps must be an integer >= 1, got 0",
    ),
    (
        gradtx.record_curves,
        dict(inner=gradtx.sgd(0.1), num_steps=4, every=0),
        r"every must be an integer >= 1, got 0",
    ),
    # Trust ratios, NovoGrad, Adan, SM3, Adafactor and Polyak's step.
    (gradtx.scale_by_trust_ratio, dict(min_norm=-1.0), r"min_norm must be .*>= 0, got -1\.0"),
    (gradtx.scale_by_trust_ratio, dict(eps=NAN), r"eps must be .*>= 0, got nan"),
    (
        gradtx.scale_by_trust_ratio,
        dict(trust_coefficient=INF),
        r"trust_coefficient must be finite, got inf",
    ),
    (gradtx.lamb, dict(learning_rate=0.1, b1=1.0), rf"b1 must be {UNIT}, got 1\.0"),
    (gradtx.lamb, dict(learning_rate=NAN), r"learning_rate must be finite, got nan"),
    (gradtx.lamb, dict(learning_rate=0.1, weight_decay=-1.0), r"weight_decay must be .*-1\.0"),
    (gradtx.lars, dict(learning_rate=0.1, momentum=1.0), rf"decay must be {UNIT}, got 1\.0"),
    (gradtx.lars, dict(learning_rate=INF), r"learning_rate must be finite, got inf"),
    (gradtx.lars, dict(learning_rate=0.1, eps=-1.0), r"eps must be .*>= 0, got -1\.0"),
    (gradtx.fromage, dict(learning_rate=NAN), r"learning_rate must be finite, got nan"),
    (gradtx.fromage, dict(learning_rate=0.1, min_norm=-1.0), r"min_norm must be .*-1\.0"),
    (gradtx.scale_by_novograd, dict(b2=1.0), rf"b2 must be {UNIT}, got 1\.0"),
    (gradtx.scale_by_novograd, dict(eps_root=-1.0), r"eps_root must be .*>= 0, got -1\.0"),
    (gradtx.scale_by_novograd, dict(mu_dtype="int32"), r"mu_dtype.*got 'int32'"),
    (gradtx.novograd, dict(learning_rate=0.1, b1=-0.1), rf"b1 must be {UNIT}, got -0\.1"),
    (gradtx.novograd, dict(learning_rate=0.1, weight_decay=-1.0), r"weight_decay must be .*-1"),
    (gradtx.scale_by_adan, dict(b3=1.0), rf"b3 must be {UNIT}, got 1\.0"),
    (gradtx.scale_by_adan, dict(eps=-1.0), r"eps must be .*>= 0, got -1\.0"),
    (gradtx.adan, dict(learning_rate=0.1, b2=1.5), rf"b2 must be {UNIT}, got 1\.5"),
    (gradtx.adan, dict(learning_rate=INF), r"learning_rate must be finite, got inf"),
    (gradtx.scale_by_sm3, dict(b1=1.0), rf"b1 must be {UNIT}, got 1\.0"),
    (gradtx.scale_by_sm3, dict(b2=0.0), r"b2 must be in \(0, 1\], got 0\.0"),
    (gradtx.scale_by_sm3, dict(b2=1.5), r"b2 must be in \(0, 1\], got 1\.5"),
    (gradtx.scale_by_sm3, dict(eps=-1.0), r"eps must be .*>= 0, got -1\.0"),
    (gradtx.sm3, dict(learning_rate=0.1, momentum=1.0), rf"b1 must be {UNIT}, got 1\.0"),
    (gradtx.sm3, dict(learning_rate=NAN), r"learning_rate must be finite, got nan"),
    (gradtx.scale_by_factored_rms, dict(decay_rate=0.0), r"decay_rate must be .*> 0, got 0\.0"),
    (gradtx.scale_by_factored_rms, dict(epsilon=-1.0), r"epsilon must be .*>= 0, got -1\.0"),
    (gradtx.scale_by_factored_rms, dict(step_offset=-1), r"step_offset must be .*>= 0, got -1"),
    (
        gradtx.scale_by_factored_rms,
        dict(min_dim_size_to_factor=0),
        r"min_dim_size_to_factor must be an integer >= 1, got 0",
    ),
    (gradtx.adafactor, dict(momentum=1.0), rf"momentum must be {UNIT}, got 1\.0"),
    (gradtx.adafactor, dict(learning_rate=NAN), r"learning_rate must be finite, got nan"),
    (gradtx.adafactor, dict(clipping_threshold=-1.0), r"threshold must be .*got -1\.0"),
    (gradtx.adafactor, dict(weight_decay_rate=-1.0), r"weight_decay must be .*>= 0, got -1\.0"),
    (gradtx.adafactor, dict(dtype_momentum="int32"), r"dtype_momentum.*got 'int32'"),
    (gradtx.adafactor, dict(eps=-1.0), r"epsilon must be .*>= 0, got -1\.0"),
    (gradtx.scale_by_polyak, dict(max_learning_rate=0.0), r"max_learning_rate must be .*> 0"),
    (gradtx.scale_by_polyak, dict(eps=-1.0), r"eps must be .*>= 0, got -1\.0"),
    (gradtx.scale_by_polyak, dict(f_min=NAN), r"f_min must be finite, got nan"),
    (gradtx.scale_by_polyak, dict(variant="sps++"), r"variant must be one of .*got 'sps\+\+'"),
    (gradtx.polyak_sgd, dict(scaling=INF), r"scaling must be finite, got inf"),
    (gradtx.polyak_sgd, dict(variant="polyak"), r"variant must be one of .*got 'polyak'"),
    # Second-order methods and line searches.
    (gradtx.scale_by_newton, dict(damping=-1.0), r"damping must be a finite number >= 0"),
    (gradtx.scale_by_newton, dict(on_indefinite="skip"), r"on_indefinite must be one of"),
    (gradtx.newton, dict(damping=NAN), r"damping must be a finite number >= 0, got nan"),
    (gradtx.newton, dict(learning_rate=INF), r"learning_rate must be finite"),
    (gradtx.scale_by_hessian_free, dict(max_cg_steps=0), r"max_cg_steps must be an integer"),
    (gradtx.scale_by_hessian_free, dict(cg_tol=1.5), r"cg_tol must be in \[0, 1\), got 1\.5"),
    (gradtx.scale_by_hessian_free, dict(cg_tol=0.0), r"cg_tol must be None or in \(0, 1\)"),
    (gradtx.hessian_free, dict(damping=-0.1), r"damping must be a finite number >= 0"),
    (gradtx.scale_by_nonlinear_cg, dict(method="hestenes"), r"method must be one of"),
    (gradtx.scale_by_nonlinear_cg, dict(restart_period=0), r"restart_period must be an integer"),
    (gradtx.nonlinear_cg, dict(learning_rate=NAN), r"learning_rate must be finite"),
    (gradtx.scale_by_lbfgs, dict(memory_size=0), r"memory_size must be an integer >= 1, got 0"),
    (gradtx.lbfgs, dict(memory_size=2.5), r"memory_size must be an integer >= 1, got 2\.5"),
    (gradtx.bfgs, dict(learning_rate=NAN), r"learning_rate must be finite"),
    (
        gradtx.scale_by_backtracking_linesearch,
        dict(max_backtracking_steps=0),
        r"max_backtracking_steps must be an integer >= 1",
    ),
    (
        gradtx.scale_by_backtracking_linesearch,
        dict(max_backtracking_steps=5, slope_rtol=1.5),
        r"slope_rtol must be in \[0, 1\), got 1\.5",
    ),
    (
        gradtx.scale_by_backtracking_linesearch,
        dict(max_backtracking_steps=5, decrease_factor=0.0),
        r"decrease_factor must be in \(0, 1\), got 0\.0",
    ),
    (
        gradtx.scale_by_backtracking_linesearch,
        dict(max_backtracking_steps=5, increase_factor=0.5),
        r"increase_factor must be a number >= 1 \(or math\.inf\), got 0\.5",
    ),
    (
        gradtx.scale_by_backtracking_linesearch,
        dict(max_backtracking_steps=5, max_learning_rate=0.0),
        r"max_learning_rate must be a finite number > 0",
    ),
    (
        gradtx.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=10, curv_rtol=1e-5),
        r"curv_rtol must be greater than slope_rtol=0\.0001, got 1e-05",
    ),
    (
        gradtx.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=10, increase_factor=1.0),
        r"increase_factor must be a finite number > 1, got 1\.0",
    ),
    (
        gradtx.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=10, initial_guess_strategy="zero"),
        r"initial_guess_strategy must be one of",
    ),
    (
        gradtx.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=10, max_learning_rate=-1.0),
        r"max_learning_rate must be a finite number > 0",
    ),
    (
        gradtx.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=10, tol=-1.0),
        r"tol must be a finite number >= 0, got -1\.0",
    ),
    (
        gradtx.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=10, approx_dec_rtol=-1e-6),
        r"approx_dec_rtol must be a finite number >= 0, got -1e-06",
    ),
    (
        gradtx.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=10, stepsize_precision=NAN),
        r"stepsize_precision must be a finite number >= 0, got nan",
    ),
    (
        gradtx.scale_by_backtracking_linesearch,
        dict(max_backtracking_steps=5, atol=-1.0),
        r"atol must be a finite number >= 0, got -1\.0",
    ),
    (
        gradtx.scale_by_backtracking_linesearch,
        dict(max_backtracking_steps=5, rtol=-0.5),
        r"rtol must be a finite number >= 0, got -0\.5",
    ),
]


def _case_id(case):
    factory, kwargs, _ = case

    # A transformation is shown by its type and a function by its name: their
    # reprs hold addresses, which differ between pytest-xdist workers.
    def show(v):
        if callable(getattr(v, "update", None)):
            return type(v).__name__
        return getattr(v, "__name__", None) or repr(v)

    shown = ",".join(f"{k}={show(v)}" for k, v in kwargs.items())
    return f"{getattr(factory, 'func', factory).__name__}({shown})"


@pytest.mark.parametrize("case", BAD_HYPERPARAMETERS, ids=_case_id)
def test_bad_hyperparameter_raises_at_construction(case):
    factory, kwargs, message = case
    with pytest.raises(ValueError, match=message) as info:
        factory(**kwargs)
    # The message starts with the public function that complained: the one
    # called, or the block of its chain that owns the argument.
    owner = str(info.value).split(":", 1)[0]
    assert owner in gradtx.__all__, str(info.value)


def test_validation_table_covers_every_validating_public_factory():
    """Every public factory with a hyperparameter is in the table at least once."""
    in_table = {getattr(f, "func", f).__name__ for f, _, _ in BAD_HYPERPARAMETERS}
    takes_no_checkable_number = {
        "identity",
        "stateless",
        "stateless_with_tree_map",  # a function only
        "chain",
        "named_chain",
        "scale_by_schedule",
        "masked",  # a transformation and a mask: its mask is checked against the params
        "flat",  # a transformation only
        "flatten",  # a transformation only
        # A transformation with a mask or a condition of the step count.
        "selective_transform",
        "conditionally_mask",
        "conditionally_transform",
        "with_extra_args_support",  # a transformation only
        "split_real_and_imaginary",  # a transformation only
    }
    public = {e.public for e in WITH_HYPERPARAMETER} | {"adadelta"}
    assert public - takes_no_checkable_number <= in_table, public - in_table


def test_scale_by_schedule_rejects_a_non_callable():
    with pytest.raises(TypeError, match="step_size_fn must be callable, got float"):
        gradtx.scale_by_schedule(0.1)


def test_valid_edge_values_are_accepted():
    # The closed ends of the ranges, and the documented special values.
    gradtx.adam(0.0, b1=0.0, b2=0.0, eps=0.0)
    gradtx.scale_by_rms(decay=0.0, eps=0.0, initial_scale=0.0)
    gradtx.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
    gradtx.sgd(-0.1)  # a negative rate is ascent: the user's call
    gradtx.adadelta(learning_rate=None, rho=0.0, eps=1e-30)
    gradtx.scale_by_nadam(momentum_decay=None)
    gradtx.adamw(weight_decay=0.0, mu_dtype="bfloat16", nu_dtype=jnp.float32)


# ---------------------------------------------------------------- traced hyperparameters
# A hyperparameter built under jit and differentiated: tests/test_tracing.py.


def test_a_traced_value_is_not_checked_even_when_it_is_out_of_range():
    """Checks need concrete numbers; under jit the value is the caller's responsibility."""

    @jax.jit
    def build_and_step(b1):
        tx = gradtx.scale_by_adam(b1=b1)
        return tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]

    assert build_and_step(jnp.float32(1.5)).shape == (2,)
    with pytest.raises(ValueError, match="b1"):
        gradtx.scale_by_adam(b1=1.5)


def test_schedules_are_not_checked_at_construction():
    decay_schedule = lambda count: 1e-3 / (1.0 + count)
    tx = gradtx.adamw(lambda count: 0.1 * 0.5**count, weight_decay=decay_schedule)
    params = tiny_params()
    outputs, _ = run(tx, params, [tiny_grads(0), tiny_grads(1)])
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(outputs))


# ---------------------------------------------------------------- mismatched trees


def _pair(keys):
    shapes = {"a": (2,), "b": (3,), "c": (1,)}
    return {k: jnp.full(shapes[k], 0.5, jnp.float32) for k in keys}


MISMATCHES = [
    # (gradient keys, patterns the message must contain)
    (("a",), [r"missing from updates: \['b'\]"]),
    (("a", "b", "c"), [r"\['c'\]", r"not in the state"]),
    (("a", "c"), [r"missing from updates: \['b'\]", r"not in the state: \['c'\]"]),
]


@pytest.mark.parametrize("keys, patterns", MISMATCHES, ids=["missing_b", "extra_c", "b_renamed_c"])
@pytest.mark.parametrize("entry", STRUCTURE_CHECKED, ids=str)
def test_gradients_with_another_tree_structure_name_the_differing_paths(entry, keys, patterns):
    params = _pair("ab")
    tx = entry.make()
    state = tx.init(params)
    with pytest.raises(ValueError) as info:
        tx.update(_pair(keys), state, params)
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), (entry.name, message)


def test_chain_rejects_a_state_from_another_chain():
    tx = gradtx.adam(0.1)
    with pytest.raises(ValueError, match="expected a state tuple of 2 members"):
        tx.update(jnp.ones(2), (tx.init(jnp.zeros(2)),) * 3, None)
    named = gradtx.named_chain(("adam", gradtx.scale_by_adam()))
    with pytest.raises(ValueError, match=r"expected a state dict with keys \['adam'\]"):
        named.update(jnp.ones(2), {"other": None}, None)
