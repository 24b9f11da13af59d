"""fairlens: find, visualise and remove social bias inside language models.

FairSteer (biased activation detection, debiasing steering vectors, dynamic activation steering)
on TransformerLens. Importing this package is cheap and inert: the names below are resolved lazily,
so ``import fairlens`` loads no model, no torch-heavy module, no data and no plotting library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fairlens._version import __version__
from fairlens.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    # models
    "load_model": "fairlens.models",
    "load_hf": "fairlens.models",
    "get_model_info": "fairlens.models",
    "ModelInfo": "fairlens.models",
    # data
    "load_bbq": "fairlens.data",
    "split_by_template": "fairlens.data",
    "format_prompt": "fairlens.data",
    "contrastive_pairs": "fairlens.data",
    "BBQItem": "fairlens.data",
    # scoring, metrics
    "score_items": "fairlens.scoring.letters",
    "prompt_tokens": "fairlens.scoring.letters",
    "bbq_metrics": "fairlens.scoring.metrics",
    "probe_labels": "fairlens.scoring.metrics",
    # analysis
    "extract_activations": "fairlens.activations.extraction",
    "Activations": "fairlens.activations.extraction",
    "LinearProbe": "fairlens.detect.probes",
    "probe_sweep": "fairlens.detect.layer_sweep",
    "compute_dsv": "fairlens.directions",
    # steering
    "Steerer": "fairlens.steer.steerer",
    "SteeringConfig": "fairlens.steer.steerer",
    "FairSteer": "fairlens.fairsteer.estimator",
    "FairSteerConfig": "fairlens.fairsteer.config",
    "evaluate": "fairlens.evaluate.bbq",
    # the baselines panel: BBQ, CrowS-Pairs, open-ended generation, utility
    "evaluate_panel": "fairlens.evaluate.panel",
    "PanelConfig": "fairlens.evaluate.suites",
    "load_crows_pairs": "fairlens.data.crows_pairs",
    "generate_greedy": "fairlens.backend.generation",
    "RunConfig": "fairlens.apps.run_config",
    "run_pipeline": "fairlens.apps.pipeline",
    # the paper's figures for a run (what `fairlens figures` writes)
    "FigureSizes": "fairlens.apps.figures",
    "figures_for_run": "fairlens.apps.figures",
    "write_figures": "fairlens.apps.figures",
}

__all__ = [
    "Activations",
    "BBQItem",
    "FairSteer",
    "FairSteerConfig",
    "FigureSizes",
    "LinearProbe",
    "ModelInfo",
    "PanelConfig",
    "RunConfig",
    "Steerer",
    "SteeringConfig",
    "__version__",
    "bbq_metrics",
    "compute_dsv",
    "contrastive_pairs",
    "evaluate",
    "evaluate_panel",
    "extract_activations",
    "figures_for_run",
    "format_prompt",
    "generate_greedy",
    "get_model_info",
    "load_bbq",
    "load_crows_pairs",
    "load_hf",
    "load_model",
    "probe_labels",
    "probe_sweep",
    "prompt_tokens",
    "run_pipeline",
    "score_items",
    "split_by_template",
    "write_figures",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from fairlens.activations.extraction import Activations, extract_activations
    from fairlens.apps.figures import FigureSizes, figures_for_run, write_figures
    from fairlens.apps.pipeline import run_pipeline
    from fairlens.apps.run_config import RunConfig
    from fairlens.backend.generation import generate_greedy
    from fairlens.data import BBQItem, contrastive_pairs, format_prompt, load_bbq, split_by_template
    from fairlens.data.crows_pairs import load_crows_pairs
    from fairlens.detect.layer_sweep import probe_sweep
    from fairlens.detect.probes import LinearProbe
    from fairlens.directions import compute_dsv
    from fairlens.evaluate.bbq import evaluate
    from fairlens.evaluate.panel import evaluate_panel
    from fairlens.evaluate.suites import PanelConfig
    from fairlens.fairsteer.config import FairSteerConfig
    from fairlens.fairsteer.estimator import FairSteer
    from fairlens.models import ModelInfo, get_model_info, load_hf, load_model
    from fairlens.scoring.letters import prompt_tokens, score_items
    from fairlens.scoring.metrics import bbq_metrics, probe_labels
    from fairlens.steer.steerer import Steerer, SteeringConfig
