"""Optax's ``optax.contrib`` names, so that ``optax.contrib.X`` becomes ``gradtx.contrib.X``.

Every method here also lives at the top level (``gradtx.contrib.dpsgd is
gradtx.dpsgd``) and is documented there; this module only mirrors the
namespace Optax users already write. Its ``__all__`` lists exactly the names
it holds, each of which Optax 0.2.8 has under ``optax.contrib`` with the same
arguments.

Examples:
    >>> import gradtx
    >>> gradtx.contrib.reduce_on_plateau is gradtx.reduce_on_plateau
    True
"""

from gradtx.optimizers.acprop import acprop, scale_by_acprop
from gradtx.optimizers.ademamix import (
    ScaleByAdemamixState,
    ScaleBySimplifiedAdEMAMixState,
    ademamix,
    scale_by_ademamix,
    scale_by_simplified_ademamix,
    simplified_ademamix,
)
from gradtx.optimizers.adopt import adopt, scale_by_adopt
from gradtx.optimizers.cocob import COCOBState, cocob, scale_by_cocob
from gradtx.optimizers.dadapt_adamw import DAdaptAdamWState, dadapt_adamw
from gradtx.optimizers.dog import DoGState, DoWGState, dog, dowg
from gradtx.optimizers.galore import GaLoreDimensionNumbers, GaLoreState, galore, scale_by_galore
from gradtx.optimizers.madgrad import MadgradState, madgrad, scale_by_madgrad
from gradtx.optimizers.mechanic import MechanicState, mechanize
from gradtx.optimizers.momo import MomoAdamState, MomoState, momo, momo_adam
from gradtx.optimizers.muon import MuonDimensionNumbers, MuonState, muon, scale_by_muon
from gradtx.optimizers.prodigy import ProdigyState, prodigy
from gradtx.optimizers.sam import SAMState, sam
from gradtx.optimizers.schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
)
from gradtx.optimizers.sophia import (
    HutchinsonState,
    SophiaState,
    hutchinson_estimator_diag_hessian,
    sophia,
)
from gradtx.transforms.complex_valued import SplitRealAndImaginaryState, split_real_and_imaginary
from gradtx.transforms.normalize import NormalizeState, normalize
from gradtx.transforms.plateau import ReduceOnPlateauState as ReduceLROnPlateauState
from gradtx.transforms.plateau import reduce_on_plateau
from gradtx.transforms.privacy import (
    DifferentiallyPrivateAggregateState,
    differentially_private_aggregate,
    dpsgd,
)

__all__ = [
    "COCOBState",
    "DAdaptAdamWState",
    "DifferentiallyPrivateAggregateState",
    "DoGState",
    "DoWGState",
    "GaLoreDimensionNumbers",
    "GaLoreState",
    "HutchinsonState",
    "MadgradState",
    "MechanicState",
    "MomoAdamState",
    "MomoState",
    "MuonDimensionNumbers",
    "MuonState",
    "NormalizeState",
    "ProdigyState",
    "ReduceLROnPlateauState",
    "SAMState",
    "ScaleByAdemamixState",
    "ScaleBySimplifiedAdEMAMixState",
    "ScheduleFreeState",
    "SophiaState",
    "SplitRealAndImaginaryState",
    "acprop",
    "ademamix",
    "adopt",
    "cocob",
    "dadapt_adamw",
    "differentially_private_aggregate",
    "dog",
    "dowg",
    "dpsgd",
    "galore",
    "hutchinson_estimator_diag_hessian",
    "madgrad",
    "mechanize",
    "momo",
    "momo_adam",
    "muon",
    "normalize",
    "prodigy",
    "reduce_on_plateau",
    "sam",
    "scale_by_acprop",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_cocob",
    "scale_by_galore",
    "scale_by_madgrad",
    "scale_by_muon",
    "scale_by_simplified_ademamix",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "simplified_ademamix",
    "sophia",
    "split_real_and_imaginary",
]
