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

from gradtx.optimizers.cocob import COCOBState, cocob, scale_by_cocob
from gradtx.optimizers.dadapt_adamw import DAdaptAdamWState, dadapt_adamw
from gradtx.optimizers.dog import DoGState, DoWGState, dog, dowg
from gradtx.optimizers.mechanic import MechanicState, mechanize
from gradtx.optimizers.momo import MomoAdamState, MomoState, momo, momo_adam
from gradtx.optimizers.prodigy import ProdigyState, prodigy
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
    "MechanicState",
    "MomoAdamState",
    "MomoState",
    "ProdigyState",
    "ReduceLROnPlateauState",
    "cocob",
    "dadapt_adamw",
    "differentially_private_aggregate",
    "dog",
    "dowg",
    "dpsgd",
    "mechanize",
    "momo",
    "momo_adam",
    "prodigy",
    "reduce_on_plateau",
    "scale_by_cocob",
]
