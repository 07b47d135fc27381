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

from gradtx.optimizers.galore import GaLoreDimensionNumbers, GaLoreState, galore, scale_by_galore
from gradtx.optimizers.sam import SAMState, sam
from gradtx.optimizers.sophia import (
    HutchinsonState,
    SophiaState,
    hutchinson_estimator_diag_hessian,
    sophia,
)
from gradtx.transforms.plateau import ReduceOnPlateauState as ReduceLROnPlateauState
from gradtx.transforms.plateau import reduce_on_plateau
from gradtx.transforms.privacy import (
    DifferentiallyPrivateAggregateState,
    differentially_private_aggregate,
    dpsgd,
)

__all__ = [
    "DifferentiallyPrivateAggregateState",
    "GaLoreDimensionNumbers",
    "GaLoreState",
    "HutchinsonState",
    "ReduceLROnPlateauState",
    "SAMState",
    "SophiaState",
    "differentially_private_aggregate",
    "dpsgd",
    "galore",
    "hutchinson_estimator_diag_hessian",
    "reduce_on_plateau",
    "sam",
    "scale_by_galore",
    "sophia",
]
