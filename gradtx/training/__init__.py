"""Around the optimizer: early stopping, random hyperparameter search, learning curves.

Every name has one home in a submodule; this package re-exports them.
"""

from __future__ import annotations

from gradtx.training.curves import (
    RecordCurvesState,
    StepMetrics,
    learning_curves,
    record_curves,
    step_metrics,
)
from gradtx.training.early_stopping import (
    ContinueResult,
    EarlyStopping,
    EarlyStoppingState,
    continue_until_target,
    early_stopping,
    retrain_for_best_steps,
    run_early_stopping,
)
from gradtx.training.plot import plot_learning_curves
from gradtx.training.search import (
    SearchBorderWarning,
    SearchResult,
    Trial,
    choice,
    integer,
    log_uniform,
    random_search,
    refine,
    uniform,
)

__all__ = [
    "ContinueResult",
    "EarlyStopping",
    "EarlyStoppingState",
    "RecordCurvesState",
    "SearchBorderWarning",
    "SearchResult",
    "StepMetrics",
    "Trial",
    "choice",
    "continue_until_target",
    "early_stopping",
    "integer",
    "learning_curves",
    "log_uniform",
    "plot_learning_curves",
    "random_search",
    "record_curves",
    "refine",
    "retrain_for_best_steps",
    "run_early_stopping",
    "step_metrics",
    "uniform",
]
