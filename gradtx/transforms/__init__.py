"""Generic blocks that are not optimizers, one file per theme.

The package also answers to Optax's ``optax.transforms`` names:
``gradtx.transforms.masked`` is :func:`gradtx.masked`, and so on for each name
Optax puts there, so that code written against ``optax.transforms`` runs with
``import gradtx as optax``.
"""

from __future__ import annotations

from typing import Any

# Optax 0.2.8's ``optax.transforms`` namespace; each name is gradtx's top-level one.
OPTAX_NAMES = (
    "AddNoiseState",
    "ApplyIfFiniteState",
    "ConditionFn",
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "EmaState",
    "MaskedNode",
    "MaskedState",
    "MonitorState",
    "MultiSteps",
    "MultiStepsState",
    "NonNegativeParamsState",
    "PartitionState",
    "ShouldSkipUpdateFunction",
    "SnapshotState",
    "TraceState",
    "ZeroNansState",
    "adaptive_grad_clip",
    "add_decayed_weights",
    "add_noise",
    "apply_if_finite",
    "chain",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "conditionally_mask",
    "conditionally_transform",
    "ema",
    "flatten",
    "freeze",
    "keep_params_nonnegative",
    "masked",
    "measure_with_ema",
    "monitor",
    "named_chain",
    "partition",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "selective_transform",
    "skip_large_updates",
    "skip_not_finite",
    "snapshot",
    "trace",
    "unitwise_clip",
    "unitwise_norm",
    "zero_nans",
)


def __getattr__(name: str) -> Any:
    if name in OPTAX_NAMES:
        import gradtx  # noqa: PLC0415  (the package imports this one first)

        return getattr(gradtx, name)
    raise AttributeError(f"module 'gradtx.transforms' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *OPTAX_NAMES})
