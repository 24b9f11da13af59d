"""A run's folder: the resolved config, each finished stage's outputs and the resume rules (a rerun
continues after the last finished stage, or refuses a changed config).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fairlens.apps.run_config import RunConfig
from fairlens.distributed import on_main
from fairlens.errors import ConfigError
from fairlens.evaluate.suites import SUITES, suite_settings
from fairlens.runtime import write_atomic


def _split_summary(items: list[Any]) -> dict[str, Any]:
    return {
        "n": len(items),
        "n_ambig": sum(it.is_ambiguous for it in items),
        "n_templates": len({it.template_id for it in items}),
        "per_category": dict(sorted(Counter(it.category for it in items).items())),
    }


def _changed(saved: dict[str, Any], cfg: RunConfig) -> str:
    """The fit settings that differ from a run folder's (empty: it can be resumed).

    A key the folder does not record (written by an older fairlens, before the key existed)
    counts as its default value: such a folder resumes when the new key is left at its default.
    """
    now = json.loads(json.dumps(cfg.resume_settings(), default=list))
    defaults = json.loads(json.dumps(RunConfig().resume_settings(), default=list))
    diffs = [
        f"{key}: {saved.get(key, defaults[key])!r} -> {value!r}"
        for key, value in now.items()
        if saved.get(key, defaults[key]) != value
    ]
    return "; ".join(diffs)


class _RunDir:
    """The run folder: what each finished stage left, and a guard against mixing settings."""

    def __init__(self, cfg: RunConfig, restart: bool) -> None:
        self.path = Path(cfg.out_dir) / cfg.name
        on_main(lambda: self._open(cfg, restart))  # one process writes; all see it afterwards

    def _open(self, cfg: RunConfig, restart: bool) -> None:
        if restart and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        settings = json.loads(json.dumps(cfg.resume_settings(), default=list))
        state = self.path / "run_state.json"
        if state.exists():
            try:
                saved = json.loads(state.read_text())["fit_settings"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{str(state)!r} is unreadable ({exc!r}), so the run cannot be resumed.",
                    "pass --restart to start it again, or use another --name.",
                ) from exc
            changed = _changed(saved, cfg)
            if changed:
                raise ConfigError(
                    f"{str(self.path)!r} holds a run with other fit settings ({changed}), so it "
                    "cannot be resumed.",
                    "use another --name, or pass --restart to start it again.",
                )
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        write_atomic(
            state, json.dumps({"fit_settings_sha": digest, "fit_settings": settings}, indent=2)
        )

    def panel_done(
        self, settings: dict[str, Any], say: Callable[[str], None] = lambda _m: None
    ) -> dict[str, dict[str, Any]]:
        """:meth:`_panel_done` on the main process, its answer on every process."""
        return on_main(lambda: self._panel_done(settings, say))

    def _panel_done(
        self, settings: dict[str, Any], say: Callable[[str], None]
    ) -> dict[str, dict[str, Any]]:
        """The panel results a previous run of this folder left that still hold: a suite's results
        are kept when the settings it depends on (``suite_settings``: the model, backend, batch
        size and its own sizes / protocol) equal this run's; the others are discarded, so a changed
        setting never reuses a result computed under another, and changing one suite's size does
        not throw away the others' hours of scoring."""
        folder = self.path / "panel"
        folder.mkdir(exist_ok=True)
        record = folder / "settings.json"
        settings = json.loads(json.dumps(settings, default=list))
        old = json.loads(record.read_text()) if record.is_file() else None
        if old is not None:  # a run setting added since the folder was written: its default then
            defaults = json.loads(json.dumps(RunConfig().panel_settings(), default=list))
            defaults.pop("bbq_metrics")  # a rule, not a setting: absent means the older rule
            old = {**defaults, **old}
        done: dict[str, dict[str, Any]] = {}
        stale: dict[str, list[str]] = {}
        for f in sorted(folder.glob("*.json")):
            if f.name == "settings.json":
                continue
            suite, _, method = f.stem.partition("__")
            keys = suite_settings(suite) if suite in SUITES else None
            changed = (
                ["recorded by an older fairlens"]
                if old is None
                else ["suite no longer known"]
                if keys is None
                else [k for k in keys if old.get(k) != settings.get(k)]
            )
            if changed:
                stale.setdefault(suite, changed)
                f.unlink()
                continue
            try:
                done[f"{suite}/{method}"] = json.loads(f.read_text())
            except json.JSONDecodeError:
                f.unlink()  # cut by an interruption: compute it again
        for suite, changed in stale.items():
            say(
                f"panel results of {suite!r} in the run folder discarded "
                f"(settings changed: {', '.join(changed)})"
            )
        write_atomic(record, json.dumps(settings, indent=2))
        return done

    def save_panel(self, suite: str, method: str, result: dict[str, Any]) -> None:
        on_main(lambda: self._save_panel(suite, method, result))

    def _save_panel(self, suite: str, method: str, result: dict[str, Any]) -> None:
        folder = self.path / "panel"
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{suite}__{method}.tmp"
        tmp.write_text(json.dumps(result))
        tmp.replace(folder / f"{suite}__{method}.json")
