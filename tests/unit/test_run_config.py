"""RunConfig is composed of the stage configs; its flat keys, flags, config files and the resume
check are all read from those dataclasses (one place per hyper-parameter)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest

from fairlens.apps.cli import build_parser, main
from fairlens.apps.config_keys import attribute_docs
from fairlens.apps.run_config import SECTIONS, RunConfig
from fairlens.apps.run_dir import _RunDir
from fairlens.errors import ConfigError
from fairlens.fairsteer.config import FairSteerConfig

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "layout-0.1.0" / "run"


def _options(subcommand: str) -> dict[str, str]:
    """dest → first option string of every flag of a subcommand."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[subcommand]  # type: ignore[union-attr]
    return {a.dest: a.option_strings[0] for a in sub._actions if a.option_strings}


def test_every_stage_config_field_is_one_key_and_one_flag():
    specs = RunConfig.config_keys()
    keys = [s.key for s in specs]
    assert len(keys) == len(set(keys))  # no two sections share a flat key
    n_fields = sum(len(fields(kind)) for kind, _ in SECTIONS.values())
    assert len(keys) == n_fields + len(fields(RunConfig)) - len(SECTIONS)
    run = _options("run")
    for spec in specs:
        assert spec.help and not spec.help.startswith(" ")
        if spec.key != "fractions":  # a dict: config files only
            assert spec.key in run, spec.key
    assert run["prompt_format"] == "--format" and run["dsv_per_category"] == "--dsv-per-category"
    search = _options("search")
    assert "search" not in search and "search_alphas" in search and "methods" not in search


def test_a_new_hyper_parameter_is_one_field(monkeypatch):
    """A field added to a stage config (with its docstring line) becomes a flag, a config-file
    key, a report key and a resume setting, with no other edit."""

    @dataclass(frozen=True)
    class Extended(FairSteerConfig):
        """FairSteer with one more knob.

        Attributes:
            warmup: Steps of a new fitting stage.
        """

        warmup: int = field(default=3)

    monkeypatch.setitem(SECTIONS, "fit", (Extended, ""))
    assert "warmup" in _options("run")
    args = build_parser().parse_args(["run", "--warmup", "7"])
    from fairlens.apps.cli_flags import _run_config

    cfg = _run_config(args)
    assert isinstance(cfg.fit, Extended) and cfg.fit.warmup == 7
    assert cfg.flat()["warmup"] == 7 and cfg.resume_settings()["warmup"] == 7


def test_flat_keys_round_trip_and_flags_parse_every_type(tmp_path):
    argv = ["run", "--limit", "all", "--probe-per-category", "5", "--format", "few_shot",
            "--search", "--search-patching", "--search-alphas", "0.2", "0.4", "--layer", "none",
            "--no-paper-few-shot", "--positions", "last_prompt", "--eval-backend", "tl",
            "--crows-per-type", "all", "--dsv-per-category", "4"]  # fmt: skip
    from fairlens.apps.cli_flags import _run_config

    cfg = _run_config(build_parser().parse_args(argv))
    assert cfg.data.limit is None and cfg.data.probe_per_category == 5
    assert cfg.fit.prompt_format == "few_shot" and cfg.fit.n_dsv_per_category == 4
    assert cfg.fit.positions == "last_prompt" and cfg.fit.layer is None
    assert cfg.search.enabled and cfg.search.patching == () and cfg.search.alphas == (0.2, 0.4)
    assert cfg.panel.eval_backend == "tl" and cfg.panel.crows_per_type is None
    assert cfg.panel_config().prompt_format == "few_shot"  # the panel reads the fit's format
    assert RunConfig.from_keys(**cfg.flat()) == cfg
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg.flat()))
    assert RunConfig.from_file(path) == cfg
    assert RunConfig.from_file(path, limit=2).data.limit == 2  # flags win over the file
    assert cfg.replace(tau=0.3).fit.tau == 0.3 and cfg.replace(tau=0.3).data == cfg.data


def test_a_config_written_by_the_flat_layout_loads():
    old = json.loads((OLD / "report_config.json").read_text())
    cfg = RunConfig.from_file(OLD / "report_config.json")
    assert cfg.search.enabled and cfg.search.layer_stride == 6 and cfg.search.patching == ("eval",)
    assert cfg.fit.n_dsv_per_category == old["dsv_per_category"] == 10
    flat = cfg.flat()
    assert {k: flat[k] for k in old} == old  # every old key keeps its name and value


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"modle": "x"}, "Unknown keys"),
        ({"alpha": "big"}, "'alpha' must be a float"),
        ({"limit": True}, "'limit' must be a int"),
        ({"search_alphas": 0.2}, "'search_alphas' must be a list"),
        ({"scope": "everywhere"}, "'scope' takes one of 'colon', 'band', 'all'"),
        ({"seed": None}, "'seed' cannot be null"),
        ({"probe_per_category": 0}, "probe_per_category must be >= 1"),
    ],
)
def test_bad_keys_are_refused_by_name(tmp_path, data, needle):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        RunConfig.from_file(path)


def test_a_run_folder_of_the_flat_layout_resumes_and_changed_settings_are_named(tmp_path):
    folder = tmp_path / "smollm2-demo"
    folder.mkdir()
    shutil.copy(OLD / "run_state.json", folder / "run_state.json")
    cfg = RunConfig.from_file(OLD / "report_config.json", out_dir=str(tmp_path))
    _RunDir(cfg, restart=False)  # the same settings (the new keys at their defaults): resumes
    state = json.loads((folder / "run_state.json").read_text())["fit_settings"]
    assert state["layers"] is None and "batch_size" not in state
    _RunDir(cfg.replace(batch_size=4, methods=("base",)), restart=False)  # no fit setting
    with pytest.raises(ConfigError, match=r"alpha_unit: 'relative' -> 'absolute'; tau: 0.5 -> 0.3"):
        _RunDir(cfg.replace(alpha_unit="absolute", tau=0.3), restart=False)
    with pytest.raises(ConfigError, match=r"layers: None -> \[2, 4\]"):
        _RunDir(cfg.replace(layers=(2, 4)), restart=False)
    (folder / "run_state.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        _RunDir(cfg, restart=False)
    _RunDir(cfg.replace(tau=0.3), restart=True)  # --restart starts it again


def test_cli_refuses_a_changed_run_folder_in_one_line(tmp_path, capsys, monkeypatch):
    import fairlens.apps.run_prepare as prepare

    folder = tmp_path / "smollm2-demo"
    folder.mkdir()
    shutil.copy(OLD / "run_state.json", folder / "run_state.json")
    monkeypatch.setattr(prepare, "resolve_data_dir", lambda _: tmp_path)  # no data needed:
    monkeypatch.setattr(prepare, "load_bbq", lambda *a, **k: [])  # the folder is checked first
    code = main(["run", "--out-dir", str(tmp_path), "--seed", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "seed: 42 -> 1" in err[0] and "--restart" in err[0]


def test_attribute_docs_read_google_style_entries():
    @dataclass
    class Doc:
        """Title.

        Attributes:
            a: First line
                continued here.
            b (int): With a ``code`` and :data:`fairlens.x.REG`.

        Returns:
            nothing
        """

        a: int = 0
        b: int = 0

    assert attribute_docs(Doc) == {"a": "First line continued here.", "b": "With a 'code' and REG."}


def test_panel_results_of_other_panel_settings_are_never_reused_per_suite(tmp_path):
    cfg = RunConfig.from_keys(out_dir=str(tmp_path))
    rundir = _RunDir(cfg, restart=False)
    assert rundir.panel_done(cfg.panel_settings()) == {}
    rundir.save_panel("bbq", "base", {"acc": 1})
    assert rundir.panel_done(cfg.panel_settings()) == {"bbq/base": {"acc": 1}}
    more = cfg.replace(suites=("bbq", "unqover"), methods=("base",))  # which ones run: kept
    assert rundir.panel_done(more.panel_settings()) == {"bbq/base": {"acc": 1}}
    rundir.save_panel("crows", "base", {"acc": 3})
    said: list[str] = []
    other = cfg.replace(crows_per_type=3)  # CrowS' size changed: only CrowS is computed again
    assert rundir.panel_done(other.panel_settings(), said.append) == {"bbq/base": {"acc": 1}}
    assert said == [
        "panel results of 'crows' in the run folder discarded (settings changed: crows_per_type)"
    ]
    assert not list((tmp_path / cfg.name / "panel").glob("crows*"))
    shared = other.replace(batch_size=3)  # a setting every suite depends on: all computed again
    assert rundir.panel_done(shared.panel_settings(), said.append) == {}
    assert "batch_size" in said[1] and not list((tmp_path / cfg.name / "panel").glob("bbq*"))
    protocol = shared.replace(bbq_protocol="lm-eval")
    rundir.save_panel("bbq", "base", {"acc": 4})
    rundir.save_panel("mmlu", "base", {"acc": 5})
    assert rundir.panel_done(protocol.panel_settings(), said.append) == {"mmlu/base": {"acc": 5}}
    assert "bbq_protocol" in said[2]
    rundir.save_panel("bbq", "base", {"acc": 2})
    (tmp_path / cfg.name / "panel" / "settings.json").unlink()  # a folder of an older fairlens
    assert rundir.panel_done(other.panel_settings(), said.append) == {}
    assert "older fairlens" in said[3]


def test_every_panel_setting_is_claimed_by_a_suite():
    """A panel setting no suite names would never invalidate a saved result (silently reused
    under another value); a suite naming an unknown key would never be invalidated by it."""
    from fairlens.evaluate.suites import SUITES, suite_settings

    keys = set(RunConfig().panel_settings())
    claimed = {k for name in SUITES for k in suite_settings(name)}
    assert claimed == keys


def test_panel_results_saved_before_a_setting_or_rule_existed(tmp_path):
    """A setting added since a folder was written counts as its default (results kept while it is
    left at the default); a missing metrics rule means the older rule (BBQ results recomputed)."""
    cfg = RunConfig.from_keys(out_dir=str(tmp_path))
    rundir = _RunDir(cfg, restart=False)
    rundir.panel_done(cfg.panel_settings())
    rundir.save_panel("bbq", "base", {"acc": 1})
    rundir.save_panel("crows", "base", {"acc": 2})
    record = tmp_path / cfg.name / "panel" / "settings.json"
    old = json.loads(record.read_text())
    record.write_text(json.dumps({k: v for k, v in old.items() if k != "dtype"}))
    assert rundir.panel_done(cfg.panel_settings()) == {
        "bbq/base": {"acc": 1},
        "crows/base": {"acc": 2},
    }
    record.write_text(json.dumps({k: v for k, v in old.items() if k != "bbq_metrics"}))
    said: list[str] = []
    assert rundir.panel_done(cfg.panel_settings(), said.append) == {"crows/base": {"acc": 2}}
    assert said == [
        "panel results of 'bbq' in the run folder discarded (settings changed: bbq_metrics)"
    ]
    bf16 = cfg.replace(dtype="bfloat16")  # the dtype changes every number: nothing is kept
    assert rundir.panel_done(bf16.panel_settings()) == {}
