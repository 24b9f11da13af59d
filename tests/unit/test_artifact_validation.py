"""A damaged or edited FairSteer artifact is refused on load, naming the file and the field
(never loaded to misbehave later), and the smaller bad inputs of the steering path fail in one
line: a right-padded batch under a last-column steerer, a multi-token appended answer."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from fairlens.data import split_by_template
from fairlens.errors import ArtifactError, ConfigError
from fairlens.fairsteer.config import FairSteerConfig
from fairlens.fairsteer.estimator import FairSteer
from fairlens.testing import tiny_hooked
from tests.conftest import synthetic_items


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hooked, _, _ = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=10, per_template=12, categories=("Age", "SES", "Religion"))
    splits = split_by_template(items, {"probe": 0.6, "dsv": 0.2, "eval": 0.2}, seed=0)
    fs = FairSteer(FairSteerConfig(scoring="loglik", selection="probe", C=1.0, layers=(0, 1, 2)))
    fs.fit(hooked, list(splits["probe"].items), list(splits["dsv"].items))
    return fs.save(tmp_path_factory.mktemp("fs") / "fs")


def _copy(saved: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "fs"
    shutil.copytree(saved, folder)
    return folder


def _edit_meta(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        change(meta)
        (folder / "meta.json").write_text(json.dumps(meta))

    return apply


def _edit_tensor(
    name: str, change: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        tensors = load_file(str(folder / "tensors.safetensors"))
        tensors[name] = change(tensors[name])
        save_file(tensors, str(folder / "tensors.safetensors"))

    return apply


def _truncate(folder: Path) -> None:
    data = (folder / "tensors.safetensors").read_bytes()
    (folder / "tensors.safetensors").write_bytes(data[: len(data) // 2])


DAMAGE = {
    "truncated tensors": (_truncate, r"tensors\.safetensors.*truncated or corrupted"),
    "meta not JSON": (
        lambda f: (f / "meta.json").write_text('{"kind": "fairsteer", '),
        r"meta\.json.*not readable JSON",
    ),
    "layer 999": (_edit_meta(lambda m: m.update(layer=999)), r"meta\.json.*'layer' is 999"),
    "layer as text": (_edit_meta(lambda m: m.update(layer="1")), r"'layer' is '1', not a int"),
    "missing dsv": (_edit_meta(lambda m: m.pop("dsv")), r"the field 'dsv' is missing"),
    "infinite alpha": (
        _edit_meta(lambda m: m.update(alpha=float("inf"))),
        r"'alpha' is inf, not a finite number",
    ),
    "hook of another layer": (
        _edit_meta(lambda m: m.update(hook_name="blocks.7.hook_resid_post")),
        r"not a hook the DSV was fitted at",
    ),
    "newer fairlens": (
        _edit_meta(lambda m: m.update(fairlens_version="99.0.0")),
        r"saved by fairlens 99\.0\.0, newer",
    ),
    "NaN in the DSV": (
        _edit_tensor("dsv", lambda t: t.index_fill(1, torch.tensor([0]), float("nan"))),
        r"tensors\.safetensors.*'dsv' contains NaN",
    ),
    "DSV of another width": (
        _edit_tensor("dsv", lambda t: t[:, :-1].contiguous()),
        r"'dsv' has shape \(3, 63\), the metadata says \(3, 64\)",
    ),
    "gate weights missing": (
        lambda f: save_file(
            {
                k: v
                for k, v in load_file(str(f / "tensors.safetensors")).items()
                if not k.endswith("_coef")
            },
            str(f / "tensors.safetensors"),
        ),
        r"the tensor 'gate_\w+_coef' is missing",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_artifact_is_refused_naming_file_and_field(saved, tmp_path, case) -> None:
    damage, message = DAMAGE[case]
    folder = _copy(saved, tmp_path)
    FairSteer.load(folder)  # intact: loads
    damage(folder)
    with pytest.raises(ArtifactError, match=message) as info:
        FairSteer.load(folder)
    assert "\n" not in info.value.one_line() and "Fix:" in info.value.one_line()


def test_right_padded_batch_under_a_last_column_steerer_is_refused(tiny) -> None:
    from fairlens.scoring.letters import score_items
    from fairlens.steer.steerer import Steerer, SteeringConfig

    _, hf, tok = tiny
    items = synthetic_items(n_templates=1, per_template=4, categories=("Age",))
    steerer = Steerer(
        "blocks.1.hook_resid_post", torch.ones(64), torch.zeros(64), 0.0, SteeringConfig(alpha=1.0)
    )
    with steerer.apply(hf):
        score_items(hf, items, tokenizer=tok, padding_side="left")  # the default: fine
        with pytest.raises(ConfigError, match="padded on the right"):
            score_items(hf, items, tokenizer=tok, padding_side="right")
    everywhere = steerer.with_config(positions="all")
    with everywhere.apply(hf):  # every position is steered: the padding side does not matter
        score_items(hf, items, tokenizer=tok, padding_side="right")


def test_dsv_refuses_an_answer_letter_of_several_tokens(tiny) -> None:
    from fairlens.data.prompts import contrastive_pairs
    from fairlens.directions.core import compute_dsv

    _, hf, tok = tiny
    items = [it for it in synthetic_items(n_templates=2, per_template=4) if it.is_ambiguous]
    pairs = contrastive_pairs(items)
    compute_dsv(hf, pairs, tokenizer=tok, layers=[0])  # " A" / " C" are one token each: fine
    broken = [replace(p, unbiased=p.unbiased + "x", biased=p.biased + "x") for p in pairs]
    with pytest.raises(ConfigError, match="is 2 tokens"):
        compute_dsv(hf, broken, tokenizer=tok, layers=[0])
