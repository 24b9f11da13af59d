"""A run's folder: the resolved config, each finished stage's outputs and the resume rules (a rerun
continues after the last finished stage, or refuses a changed config).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from fairlens.apps.run_config import RunConfig
from fairlens.errors import ConfigError


def _split_summary(items: list[Any]) -> dict[str, Any]:
    return {
        "n": len(items),
        "n_ambig": sum(it.is_ambiguous for it in items),
        "n_templates": len({it.template_id for it in items}),
        "per_category": dict(sorted(Counter(it.category for it in items).items())),
    }


_RESUME_KEYS = (
    "model",
    "data_dir",
    "categories",
    "probe_per_category",
    "dsv_per_category",
    "select_per_category",
    "eval_per_category",
    "limit",
    "scoring",
    "prompt_format",
    "hook_kind",
    "layer",
    "direction",
    "gate",
    "scope",
    "band_width",
    "selection",
    "alpha",
    "alphas",
    "alpha_unit",
    "tau",
    "margin",
    "C",
    "seed",
    "fractions",
    "paper_few_shot",
    "mmlu_anchors",
)


class _RunDir:
    """The run folder: what each finished stage left, and a guard against mixing settings."""

    def __init__(self, cfg: RunConfig, restart: bool) -> None:
        self.path = Path(cfg.out_dir) / cfg.name
        if restart and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        ident = {k: getattr(cfg, k) for k in _RESUME_KEYS}
        digest = hashlib.sha256(
            json.dumps(ident, sort_keys=True, default=list).encode()
        ).hexdigest()
        state = self.path / "run_state.json"
        if state.exists():
            old = json.loads(state.read_text()).get("fit_settings_sha")
            if old != digest:
                raise ConfigError(
                    f"{str(self.path)!r} holds a run with other fit settings, so it cannot be resumed.",
                    "use another --name, or pass --restart to start it again.",
                )
        state.write_text(
            json.dumps({"fit_settings_sha": digest, "fit_settings": ident}, indent=2, default=list)
        )

    def panel_done(self) -> dict[str, dict[str, Any]]:
        folder = self.path / "panel"
        done: dict[str, dict[str, Any]] = {}
        if folder.is_dir():
            for f in folder.glob("*.json"):
                suite, method = f.stem.split("__")
                try:
                    done[f"{suite}/{method}"] = json.loads(f.read_text())
                except json.JSONDecodeError:
                    f.unlink()  # cut by an interruption: compute it again
        return done

    def save_panel(self, suite: str, method: str, result: dict[str, Any]) -> None:
        folder = self.path / "panel"
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{suite}__{method}.tmp"
        tmp.write_text(json.dumps(result))
        tmp.replace(folder / f"{suite}__{method}.json")
