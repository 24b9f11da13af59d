"""Mechanistic analysis built on FairSteer's stages: separability, geometry, sweeps, ablations.

Every function returns a frozen result dataclass (with ``to_dict``); figures are made from those
results by :mod:`fairlens.plots`. Names are resolved lazily, so importing this package is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fairlens.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "HeadSweep": "heads",
    "HookTypeSweep": "separability",
    "LayerMetrics": "separability",
    "PCAResult": "separability",
    "ProjectionResult": "separability",
    "head_probe_sweep": "heads",
    "head_sweep_from_acts": "heads",
    "hook_type_sweep": "separability",
    "layer_pca": "separability",
    "projections": "separability",
    "separability_metrics": "separability",
    "CosineMatrix": "geometry",
    "MethodCosines": "geometry",
    "category_cosines": "geometry",
    "category_dsvs": "geometry",
    "cosine_matrix": "geometry",
    "layer_cosines": "geometry",
    "method_cosines": "geometry",
    "pooled_dsv": "geometry",
    "SteererFactory": "sweeps",
    "SteeringPoint": "sweeps",
    "SteeringSweep": "sweeps",
    "steering_sweep": "sweeps",
    "AblationEffect": "ablation",
    "AblationRow": "ablation",
    "ablate": "ablation",
    "ablation_effect": "ablation",
    "directional_ablation": "ablation",
    "mean_ablation": "ablation",
    "mean_activation": "ablation",
    "zero_ablation": "ablation",
    "LayerCache": "layer_cache",
    "TokenView": "tokens",
    "token_view": "tokens",
    "EntanglementResult": "entanglement",
    "category_entanglement": "entanglement",
    "StrengthCurve": "strength",
    "strength_utility_curve": "strength",
}

__all__ = [
    "AblationEffect",
    "AblationRow",
    "CosineMatrix",
    "EntanglementResult",
    "HeadSweep",
    "HookTypeSweep",
    "LayerCache",
    "LayerMetrics",
    "MethodCosines",
    "PCAResult",
    "ProjectionResult",
    "SteererFactory",
    "SteeringPoint",
    "SteeringSweep",
    "StrengthCurve",
    "TokenView",
    "ablate",
    "ablation_effect",
    "category_cosines",
    "category_dsvs",
    "category_entanglement",
    "cosine_matrix",
    "directional_ablation",
    "head_probe_sweep",
    "head_sweep_from_acts",
    "hook_type_sweep",
    "layer_cosines",
    "layer_pca",
    "mean_ablation",
    "mean_activation",
    "method_cosines",
    "pooled_dsv",
    "projections",
    "separability_metrics",
    "steering_sweep",
    "strength_utility_curve",
    "token_view",
    "zero_ablation",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from fairlens.analysis.ablation import (
        AblationEffect,
        AblationRow,
        ablate,
        ablation_effect,
        directional_ablation,
        mean_ablation,
        mean_activation,
        zero_ablation,
    )
    from fairlens.analysis.entanglement import EntanglementResult, category_entanglement
    from fairlens.analysis.geometry import (
        CosineMatrix,
        MethodCosines,
        category_cosines,
        category_dsvs,
        cosine_matrix,
        layer_cosines,
        method_cosines,
        pooled_dsv,
    )
    from fairlens.analysis.heads import HeadSweep, head_probe_sweep, head_sweep_from_acts
    from fairlens.analysis.layer_cache import LayerCache
    from fairlens.analysis.separability import (
        HookTypeSweep,
        LayerMetrics,
        PCAResult,
        ProjectionResult,
        hook_type_sweep,
        layer_pca,
        projections,
        separability_metrics,
    )
    from fairlens.analysis.strength import StrengthCurve, strength_utility_curve
    from fairlens.analysis.sweeps import (
        SteererFactory,
        SteeringPoint,
        SteeringSweep,
        steering_sweep,
    )
    from fairlens.analysis.tokens import TokenView, token_view
