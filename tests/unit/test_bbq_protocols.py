"""BBQ protocols: the lm-eval reading (choices, prompt, answer mapping) checked by hand on the tiny
model, the 8-shot protocol's prompts, and the protocol stamped on every panel BBQ result."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fairlens.backend import encode
from fairlens.data import few_shot_examples
from fairlens.errors import ConfigError
from fairlens.evaluate.panel import evaluate_panel
from fairlens.evaluate.plan import PanelPlan
from fairlens.evaluate.suites import PanelConfig
from fairlens.scoring.bbq_protocols import (
    LM_EVAL_UNKNOWN,
    lm_eval_choices,
    lm_eval_prompt,
    score_lm_eval,
)
from fairlens.scoring.letters import score_items
from fairlens.scoring.metrics import bbq_metrics
from fairlens.testing import tiny_hooked
from tests.conftest import synthetic_item, synthetic_items


def test_lm_eval_choices_and_prompt():
    item = synthetic_item(unknown_loc=1)  # answers: old man, Unknown, young man
    choices, owners = lm_eval_choices(item)
    assert choices[:2] == [item.answers[0], item.answers[2]] and owners[:2] == [0, 2]
    assert choices[2:] == list(LM_EVAL_UNKNOWN) and set(owners[2:]) == {1}  # own phrasing once
    odd = dataclasses.replace(item, answers=(item.answers[0], "Can't tell", item.answers[2]))
    assert lm_eval_choices(odd)[0][-1] == "Can't tell" and len(lm_eval_choices(odd)[0]) == 13
    assert lm_eval_prompt(item) == f"{item.context}\n\nQ: {item.question}\nA:"
    assert lm_eval_prompt(item, "Be fair.").startswith("Be fair.\n\n")


def test_lm_eval_answers_are_the_most_likely_continuation():
    hooked, hf, tok = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=2, per_template=3)[:5]
    for model in (hooked, hf):
        preds = score_lm_eval(model, tok, items, batch_size=7)
        for i, item in enumerate(items):
            prompt = encode(tok, [lm_eval_prompt(item)])[0]
            best, answer = None, None
            for text, k in zip(*lm_eval_choices(item), strict=True):
                cont = tok.encode(" " + text, add_special_tokens=False)
                ids = torch.tensor([prompt + cont])
                with torch.no_grad():
                    out = model(ids) if model is hooked else model(ids).logits
                lp = out[0].double().log_softmax(-1)
                total = sum(float(lp[len(prompt) - 1 + t, c]) for t, c in enumerate(cont))
                if best is None or total > best + 1e-9:
                    best, answer = total, k
            assert int(preds[i]) == answer


def test_the_panel_stamps_the_protocol_on_bbq():
    _, hf, tok = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=3, per_template=4)
    shots = few_shot_examples(
        synthetic_items(n_templates=4, per_template=4, categories=("Religion",)), 8, seed=0
    )
    lm = evaluate_panel(hf, tok, None, bbq_items=items, config=PanelConfig(
        methods=("base",), suites=("bbq",), bbq_protocol="lm-eval"))  # fmt: skip
    base = lm.results["bbq"]["base"]
    assert base["protocol"] == "lm-eval"
    assert base["metrics"] == bbq_metrics(items, score_lm_eval(hf, tok, items)).to_dict()
    assert "protocol lm-eval: lm-eval answer likelihood" in lm.markdown()
    eight = evaluate_panel(hf, tok, None, bbq_items=items, shots=shots, config=PanelConfig(
        methods=("base",), suites=("bbq",), bbq_protocol="fairsteer-8shot"))  # fmt: skip
    expected = score_items(hf, items, prompt_format="few_shot", shots=shots, tokenizer=tok)
    assert (
        eight.results["bbq"]["base"]["metrics"]
        == bbq_metrics(items, expected.predictions).to_dict()
    )
    assert "protocol fairsteer-8shot: letter scoring, few_shot prompts" in eight.markdown()
    with pytest.raises(ConfigError, match="needs 8 solved BBQ examples"):
        evaluate_panel(hf, tok, None, bbq_items=items, config=PanelConfig(
            methods=("base",), suites=("bbq",), bbq_protocol="fairsteer-8shot"))  # fmt: skip


@pytest.mark.ill_typed
def test_an_unknown_protocol_is_refused():
    from tests.conftest import rejects_ill_typed

    with rejects_ill_typed(ConfigError, "unknown BBQ protocol"):
        PanelPlan(bbq_protocol="helm")  # type: ignore[arg-type]
