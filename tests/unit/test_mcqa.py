"""Multiple-choice QA: the ARC / OpenBookQA loaders, the MMLU-reference prompts, letter scoring and
the panel's utility suites (accuracy, side-effect rate, paired comparison with base)."""

from __future__ import annotations

import json

import pytest
import torch

from fairlens.backend import encode
from fairlens.data import split_by_template
from fairlens.data.mcqa import MCItem, load_arc, load_openbookqa, sample_mc
from fairlens.errors import ConfigError, DataError
from fairlens.evaluate.panel import evaluate_panel
from fairlens.evaluate.suites import PanelConfig
from fairlens.fairsteer.estimator import FairSteer
from fairlens.scoring.multiple_choice import mc_letter_ids, mc_prompts, score_mc
from fairlens.testing import tiny_hooked
from tests.conftest import rejects_ill_typed, synthetic_items


def _row(qid: str, labels: str | list[str], key: str, stem: str = "Why?") -> str:
    choices = [{"text": f"option {lab}", "label": lab} for lab in labels]
    return json.dumps({"id": qid, "question": {"stem": stem, "choices": choices}, "answerKey": key})


def _write_arc(tmp_path, lines: list[str], n_expected: int, monkeypatch) -> None:
    folder = tmp_path / "arc" / "ARC-Easy"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ARC-Easy-Dev.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setitem(
        __import__("fairlens.data.mcqa", fromlist=["x"]).ARC_OFFICIAL_COUNTS,
        ("easy", "dev"),
        n_expected,
    )


def test_arc_labels_map_by_position_whatever_their_form(tmp_path, monkeypatch):
    lines = [
        _row("q1", ["1", "2", "3", "4"], "3"),
        _row("q2", "ABC", "A"),
        _row("q3", "ABCDE", "E"),
    ]
    _write_arc(tmp_path, lines, 3, monkeypatch)
    items = load_arc(tmp_path, "easy", "dev")
    assert [it.answer for it in items] == [2, 0, 4]
    assert [len(it.choices) for it in items] == [4, 3, 5] and items[0].uid == "arc_easy/dev/q1"


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"id": "q9", "question": {"stem": "x", "choi', r"line 2: not JSON"),
        (_row("q9", "ABCD", "F"), r"line 2: field 'answerKey' 'F' is not one of the labels"),
        (_row("q9", "ABCD", "A", stem=""), r"line 2: field 'stem' is missing, empty"),
        (_row("q1", "ABCD", "A"), r"line 2: id 'q1' appears twice"),
        (_row("q9", "A", "A"), r"line 2: field 'choices' has 1 options"),
    ],
)
def test_a_malformed_line_is_named(tmp_path, monkeypatch, line, needle):
    _write_arc(tmp_path, [_row("q1", "ABCD", "B"), line], 2, monkeypatch)
    with pytest.raises(DataError, match=r"ARC-Easy-Dev\.jsonl " + needle):
        load_arc(tmp_path, "easy", "dev")


def test_counts_and_missing_files_are_refused(tmp_path, monkeypatch):
    _write_arc(tmp_path, [_row("q1", "ABCD", "B")], 2, monkeypatch)
    with pytest.raises(DataError, match=r"has 1 questions .* the release has 2"):
        load_arc(tmp_path, "easy", "dev")
    with pytest.raises(DataError, match="no openbookqa test file"):
        load_openbookqa(tmp_path, "test")


@pytest.mark.ill_typed
def test_an_unknown_arc_subset_is_refused(tmp_path):
    with rejects_ill_typed(DataError, "unknown ARC subset"):
        load_arc(tmp_path, "hard", "test")  # type: ignore[arg-type]


def _mc(uid: str, subject: str | None, answer: int = 0, n: int = 4) -> MCItem:
    return MCItem("mmlu" if subject else "arc_easy", "test", uid, f"Q {uid}?",
                  tuple(f"c{i}" for i in range(n)), answer, subject)  # fmt: skip


def test_sampling_is_seeded_per_subject_and_keeps_order():
    items = [_mc(f"{s}{i}", s) for s in ("law", "math") for i in range(10)]
    picked = sample_mc(items, 3, seed=1)
    assert len(picked) == 6 and {it.subject for it in picked} == {"law", "math"}
    assert picked == [it for it in items if it in picked]  # release order
    assert sample_mc(items, 3, seed=1) == picked and sample_mc(items, 3, seed=2) != picked
    assert sample_mc(items, None) == items


def test_prompts_follow_the_mmlu_reference_and_drop_shots_to_fit():
    _, _, tok = tiny_hooked(seed=0)
    shots = [_mc(f"s{i}", "high_school_math", answer=i % 4) for i in range(5)]
    item = _mc("t", "high_school_math", answer=2)
    (prompt,) = mc_prompts([item], tok, shots)
    head = "The following are multiple choice questions (with answers) about high school math.\n\n"
    first = "Q s0?\nA. c0\nB. c1\nC. c2\nD. c3\nAnswer: A\n\n"
    assert prompt.startswith(head + first) and prompt.endswith(
        "Q t?\nA. c0\nB. c1\nC. c2\nD. c3\nAnswer:"
    )
    assert prompt.count("Answer:") == 6
    n_full = len(tok.encode(prompt))
    (short,) = mc_prompts([item], tok, shots, max_tokens=n_full - 1)
    assert short.count("Answer:") == 5 and short.startswith(head + first)  # the last shot dropped
    (zero,) = mc_prompts([_mc("z", None, n=3)], tok)
    assert zero == "Q z?\nA. c0\nB. c1\nC. c2\nAnswer:"


def test_letters_split_into_several_tokens_are_refused():
    class Split:  # a tokenizer whose " A" is two tokens
        def __call__(self, text, **kwargs):
            return {"input_ids": [1, 2]}

        def encode(self, text, add_special_tokens=False):
            return [1, 2]

        def decode(self, ids, **kwargs):
            return "?"

    with pytest.raises(ConfigError, match="cannot read one next-token logit per option"):
        mc_letter_ids(Split())  # type: ignore[arg-type]


def test_scores_are_the_best_of_each_questions_own_letters():
    hooked, hf, tok = tiny_hooked(seed=0)
    items = [
        _mc("a", None, n=3),
        _mc("b", None, n=2),
        _mc("c", None, n=3),
    ]  # the tiny vocabulary has A-C
    items = [MCItem(it.dataset, it.split, it.uid, q, it.choices, 0)
             for it, q in zip(items, ["Short?", "A much longer question here?", "Mid one?"], strict=True)]  # fmt: skip
    prompts = mc_prompts(items, tok)
    letters = torch.tensor(mc_letter_ids(tok, 3))
    for model in (hooked, hf):
        preds = score_mc(model, tok, items, prompts, batch_size=3)
        for i, (it, p) in enumerate(zip(items, prompts, strict=True)):
            ids = torch.tensor([encode(tok, [p])[0]])
            with torch.no_grad():
                out = model(ids) if model is hooked else model(ids).logits
            expected = int(out[0, -1, letters[: len(it.choices)]].argmax())
            assert int(preds[i]) == expected


def test_the_suites_report_accuracy_side_effects_and_the_paired_test():
    hooked, hf, tok = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=10, per_template=12, categories=("Age", "SES", "Religion"))
    parts = {k: list(v.items) for k, v in split_by_template(
        items, {"probe": 0.5, "dsv": 0.2, "select": 0.3}, seed=0).items()}  # fmt: skip
    fs = FairSteer(n_dsv_per_category=2, alphas=(4.0,), alpha_unit="absolute").fit(
        hf, parts["probe"], parts["dsv"], parts["select"], tokenizer=tok
    )
    questions = [_mc(f"m{i}", "law" if i % 2 else "math", answer=i % 3, n=3) for i in range(12)]
    shots = [_mc(f"s{i}", s, answer=1, n=3) for s in ("law", "math") for i in range(2)]
    arc = [_mc(f"a{i}", None, answer=i % 2, n=2 + i % 2) for i in range(9)]
    report = evaluate_panel(
        hf, tok, fs, mc={"mmlu": questions, "arc_easy": arc}, mc_shots=shots,
        config=PanelConfig(suites=("mmlu", "arc_easy")),
    )  # fmt: skip
    base = report.results["arc_easy"]["base"]
    assert base["side_effect_rate"] is None and base["vs_base"] is None and base["n"] == 9
    for method in ("prompt", "static", "fairsteer", "ablation"):
        r = report.results["arc_easy"][method]
        assert 0 <= r["side_effect_rate"] <= 1 and r["vs_base"]["n"] == 9
        assert r["vs_base"]["method"] == pytest.approx(r["accuracy"])
        assert r["vs_base"]["base"] == pytest.approx(base["accuracy"])
    mmlu = report.results["mmlu"]["static"]
    assert set(mmlu["per_subject"]) == {"law", "math"}
    assert mmlu["subject_mean"] == pytest.approx(sum(mmlu["per_subject"].values()) / 2)
    assert report.n["mmlu"] == 12 and "Multiple-choice utility" in report.markdown()
    # prefix-cached on the fast path (all but the ablation), the same answers as full TL runs
    cached = {m: report.results["arc_easy"][m]["prefix_cached"] for m in report.results["arc_easy"]}
    assert cached == {
        "base": True,
        "prompt": True,
        "static": True,
        "fairsteer": True,
        "ablation": False,
    }
    full = evaluate_panel(
        hooked, tok, fs, mc={"mmlu": questions, "arc_easy": arc}, mc_shots=shots,
        config=PanelConfig(suites=("mmlu", "arc_easy")),
    )  # fmt: skip
    for suite in ("mmlu", "arc_easy"):
        for method, r in full.results[suite].items():
            assert not r["prefix_cached"]
            got = report.results[suite][method]
            assert (got["accuracy"], got["side_effect_rate"]) == (
                r["accuracy"],
                r["side_effect_rate"],
            )
    # the side-effect rate is the share of answers that changed, recomputed here by hand
    with fs.steering(hf, mode="static"):
        steered = score_mc(hf, tok, arc, mc_prompts(arc, tok))
    plain = score_mc(hf, tok, arc, mc_prompts(arc, tok))
    assert report.results["arc_easy"]["static"]["side_effect_rate"] == pytest.approx(
        float((steered != plain).float().mean())
    )


def test_a_missing_benchmark_fails_in_one_line_before_the_model_loads(
    tmp_path, capsys, monkeypatch
):
    import fairlens.apps.pipeline as pipeline
    from fairlens.apps.cli import main

    monkeypatch.setattr(pipeline, "resolve_data_dir", lambda _: tmp_path)
    monkeypatch.setattr(pipeline, "_prepare", lambda *a: pytest.fail("the model was loaded"))
    code = main(["run", "--out-dir", str(tmp_path), "--suites", "bbq", "arc_challenge"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no arc_challenge test file" in err[0]
