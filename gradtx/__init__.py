"""gradtx: composable, exact gradient transformations for JAX.

Every name has one home; this module re-exports them as a flat namespace.
"""

from gradtx import schedules, tree
from gradtx.base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    ScalarOrSchedule,
    Schedule,
    Updates,
    apply_updates,
    identity,
    stateless,
)
from gradtx.combine import MaskedState, PartitionState, chain, masked, named_chain, partition
from gradtx.optimizers.adabound import ScaleByAdaboundState, adabound, amsbound, scale_by_adabound
from gradtx.optimizers.adadelta import ScaleByAdaDeltaState, adadelta, scale_by_adadelta
from gradtx.optimizers.adagrad import ScaleByRssState, adagrad, scale_by_rss
from gradtx.optimizers.adam import ScaleByAdamState, adam, adamw, scale_by_adam
from gradtx.optimizers.adamax import adamax, scale_by_adamax
from gradtx.optimizers.amsgrad import ScaleByAmsgradState, amsgrad, scale_by_amsgrad
from gradtx.optimizers.averaging import AverageParamsState, average_params, averaged_params
from gradtx.optimizers.lookahead import LookaheadState, lookahead, lookahead_slow_params, ranger
from gradtx.optimizers.nadam import ScaleByNadamState, nadam, scale_by_nadam
from gradtx.optimizers.radam import ScaleByRadamState, radam, scale_by_radam
from gradtx.optimizers.rmsprop import (
    ScaleByRmsState,
    ScaleByStddevState,
    rmsprop,
    scale_by_rms,
    scale_by_stddev,
)
from gradtx.optimizers.rprop import ScaleByRpropState, rprop, scale_by_rprop
from gradtx.optimizers.sgd import TraceState, momentum, nesterov, nesterov_momentum, sgd, trace
from gradtx.schedules import (
    constant_schedule,
    cosine_decay_schedule,
    cosine_onecycle_schedule,
    cosine_restarts_schedule,
    exponential_decay,
    inverse_time_decay,
    join_schedules,
    linear_decay,
    linear_onecycle_schedule,
    linear_schedule,
    piecewise_constant_schedule,
    piecewise_constant_values,
    piecewise_interpolate_schedule,
    polynomial_schedule,
    sgdr_schedule,
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
    warmup_schedule,
)
from gradtx.second_order.bfgs import (
    ScaleByBfgsState,
    ScaleByLbfgsState,
    bfgs,
    lbfgs,
    scale_by_bfgs,
    scale_by_lbfgs,
)
from gradtx.second_order.hessian_free import (
    ScaleByHessianFreeState,
    hessian_free,
    scale_by_hessian_free,
)
from gradtx.second_order.linesearch import (
    LinesearchState,
    scale_by_backtracking_linesearch,
    scale_by_zoom_linesearch,
    value_and_grad_from_state,
)
from gradtx.second_order.minimize import MinimizeResult, minimize
from gradtx.second_order.newton import ScaleByNewtonState, newton, scale_by_newton
from gradtx.second_order.nonlinear_cg import (
    ScaleByNonlinearCgState,
    nonlinear_cg,
    scale_by_nonlinear_cg,
)
from gradtx.transforms.accumulate import AccumulateState, accumulate, has_updated
from gradtx.transforms.clipping import (
    adaptive_grad_clip,
    clip,
    clip_by_block_rms,
    clip_by_global_norm,
    clip_by_leaf_norm,
)
from gradtx.transforms.conditional import ApplyIfFiniteState, apply_if_finite
from gradtx.transforms.flat import FlatState, flat
from gradtx.transforms.inject import InjectHyperparamsState, inject_hyperparams
from gradtx.transforms.moments import BiasCorrectionState, EmaState, bias_correction, ema
from gradtx.transforms.noise import AddNoiseState, add_noise
from gradtx.transforms.plateau import ReduceOnPlateauState, reduce_on_plateau
from gradtx.transforms.regularize import (
    AddDecayedWeightsState,
    PenaltyState,
    add_decayed_weights,
    add_elastic_net,
    add_l1_penalty,
    decoupled_weight_decay,
    exclude_bias_and_norm,
    proximal_elastic_net,
    proximal_l1,
)
from gradtx.transforms.scale import (
    ScaleByScheduleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)

__version__ = "0.1.0"

__all__ = [
    "AccumulateState",
    "AddDecayedWeightsState",
    "AddNoiseState",
    "ApplyIfFiniteState",
    "AverageParamsState",
    "BiasCorrectionState",
    "EmaState",
    "EmptyState",
    "FlatState",
    "GradientTransformation",
    "InjectHyperparamsState",
    "LinesearchState",
    "LookaheadState",
    "MaskedState",
    "MinimizeResult",
    "OptState",
    "Params",
    "PartitionState",
    "PenaltyState",
    "ReduceOnPlateauState",
    "ScalarOrSchedule",
    "ScaleByAdaDeltaState",
    "ScaleByAdaboundState",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByBfgsState",
    "ScaleByHessianFreeState",
    "ScaleByLbfgsState",
    "ScaleByNadamState",
    "ScaleByNewtonState",
    "ScaleByNonlinearCgState",
    "ScaleByRadamState",
    "ScaleByRmsState",
    "ScaleByRpropState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "ScaleByStddevState",
    "Schedule",
    "TraceState",
    "Updates",
    "accumulate",
    "adabound",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "adaptive_grad_clip",
    "add_decayed_weights",
    "add_elastic_net",
    "add_l1_penalty",
    "add_noise",
    "amsbound",
    "amsgrad",
    "apply_if_finite",
    "apply_updates",
    "average_params",
    "averaged_params",
    "bfgs",
    "bias_correction",
    "chain",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "clip_by_leaf_norm",
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "cosine_restarts_schedule",
    "decoupled_weight_decay",
    "ema",
    "exclude_bias_and_norm",
    "exponential_decay",
    "flat",
    "has_updated",
    "hessian_free",
    "identity",
    "inject_hyperparams",
    "inverse_time_decay",
    "join_schedules",
    "lbfgs",
    "linear_decay",
    "linear_onecycle_schedule",
    "linear_schedule",
    "lookahead",
    "lookahead_slow_params",
    "masked",
    "minimize",
    "momentum",
    "nadam",
    "named_chain",
    "nesterov",
    "nesterov_momentum",
    "newton",
    "nonlinear_cg",
    "partition",
    "piecewise_constant_schedule",
    "piecewise_constant_values",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "proximal_elastic_net",
    "proximal_l1",
    "radam",
    "ranger",
    "reduce_on_plateau",
    "rmsprop",
    "rprop",
    "scale",
    "scale_by_adabound",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_amsgrad",
    "scale_by_backtracking_linesearch",
    "scale_by_bfgs",
    "scale_by_hessian_free",
    "scale_by_lbfgs",
    "scale_by_learning_rate",
    "scale_by_nadam",
    "scale_by_newton",
    "scale_by_nonlinear_cg",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "scale_by_zoom_linesearch",
    "schedules",
    "sgd",
    "sgdr_schedule",
    "stateless",
    "trace",
    "tree",
    "value_and_grad_from_state",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "warmup_schedule",
]
