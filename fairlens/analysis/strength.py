"""Strength against utility: how far the steering strength can go before it costs the model.

For each strength ``alpha`` (in the fitted FairSteer's unit) and each mode (``static``: the vector
at every answer position; ``dynamic``: where FairSteer's gate fires), the curve records BBQ
ambiguous and disambiguated accuracy and multiple-choice accuracy (MMLU 5-shot, ARC, OpenBookQA)
with Wilson intervals, and the share of multiple-choice answers that changed from the unsteered
model's. The *safe range* is read off it: the strengths whose multiple-choice accuracy stays
within its unsteered interval while ambiguous accuracy rises.

Everything is read off prefix caches on the plain transformers model (every strength is one
one-token forward per item; the gate decides on the unsteered activation, so the dynamic answers
are composed exactly from the static and unsteered ones), so a dense grid of strengths costs
about one extra pass per strength over the answer tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fairlens.backend import encode, is_hooked
from fairlens.data import BBQItem
from fairlens.data.mcqa import MCItem
from fairlens.errors import ConfigError
from fairlens.fairsteer.estimator import FairSteer
from fairlens.model_types import Model, Tokenizer
from fairlens.scoring.letters import build_prompts, letter_token_ids
from fairlens.scoring.multiple_choice import mc_letter_ids, mc_prompts
from fairlens.scoring.prefix_cache import make_scorer
from fairlens.stats import proportion

__all__ = ["StrengthCurve", "strength_utility_curve"]

MODES = ("static", "dynamic")


@dataclass(frozen=True)
class StrengthCurve:
    """Accuracies per strength and mode (``alpha = 0`` is the unsteered model).

    Attributes:
        alphas: Strengths, in the FairSteer's unit (``alpha_unit``), ascending, 0 first.
        relative: ``||alpha v|| / mean ||h||`` at the steered layer for each strength.
        rows: One dict per (mode, alpha): ``acc_ambig``, ``acc_disambig``, ``mc`` (per suite:
            accuracy, Wilson ``ci``, ``changed`` share, ``gate_rate``) and ``gate_rate`` on BBQ
            (dynamic; ``None`` for static, which steers every answer).
        n: Items per measure (``bbq_ambig``, ``bbq_disambig`` and each suite).
        hook: The steered hook.
        alpha_unit: The unit of ``alphas``.
    """

    alphas: tuple[float, ...]
    relative: tuple[float, ...]
    rows: tuple[dict[str, Any], ...]
    n: dict[str, int]
    hook: str
    alpha_unit: str

    def series(self, mode: str, key: str, suite: str | None = None) -> list[Any]:
        """One measure along the strengths (``key`` of a row, or of ``mc[suite]``)."""
        out = []
        for a in self.alphas:
            row = next(r for r in self.rows if r["mode"] == mode and r["alpha"] == a)
            out.append(row["mc"][suite][key] if suite is not None else row[key])
        return out

    @property
    def suites(self) -> list[str]:
        """The multiple-choice suites on the curve."""
        return [s for s in self.n if s not in ("bbq_ambig", "bbq_disambig")]

    def safe_alphas(self, mode: str = "dynamic") -> list[float]:
        """Strengths whose every multiple-choice accuracy stays inside the unsteered Wilson
        interval (the curve's safe range, as a list)."""
        base = next(r for r in self.rows if r["alpha"] == 0.0 and r["mode"] == mode)
        safe = []
        for a in self.alphas:
            row = next(r for r in self.rows if r["mode"] == mode and r["alpha"] == a)
            if all(
                base["mc"][s]["ci"][0] <= row["mc"][s]["accuracy"] <= base["mc"][s]["ci"][1]
                for s in row["mc"]
            ):
                safe.append(a)
        return safe

    def to_dict(self) -> dict[str, Any]:
        return {
            "alphas": list(self.alphas),
            "relative": [round(r, 4) for r in self.relative],
            "rows": list(self.rows),
            "n": self.n,
            "hook": self.hook,
            "alpha_unit": self.alpha_unit,
        }


def _pick(logits: list[torch.Tensor], fire: torch.Tensor, i: int, mode: str) -> np.ndarray:
    """Answers at strength ``i`` (0: unsteered): steered everywhere (static), or where the gate
    fired on the unsteered activation (dynamic)."""
    if i == 0 or mode == "static":
        return logits[i].argmax(-1).numpy()
    return torch.where(fire[:, None], logits[i], logits[0]).argmax(-1).numpy()


def strength_utility_curve(
    model: Model,
    tokenizer: Tokenizer,
    fairsteer: FairSteer,
    bbq_items: Sequence[BBQItem],
    mc: dict[str, Sequence[MCItem]],
    alphas: Sequence[float],
    *,
    mc_shots: Sequence[MCItem] = (),
    bbq_shots: Sequence[BBQItem] | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> StrengthCurve:
    """The strength-vs-utility curve of a fitted FairSteer (see the module docstring).

    Args:
        model: The plain transformers model the FairSteer was fitted on (prefix caches).
        tokenizer: Its tokenizer.
        fairsteer: The fitted FairSteer (its layer, direction, gate and alpha unit are used).
        bbq_items: BBQ items to score (an eval split, template-disjoint from the fit).
        mc: Multiple-choice questions per suite name (``mmlu`` uses ``mc_shots`` as its 5 shots).
        alphas: Strengths to try (0 is added: the unsteered model).
        mc_shots: MMLU's dev examples.
        bbq_shots: The 8 solved BBQ examples, when the FairSteer was fitted on few-shot prompts
            (its prompt format is used for BBQ).
    """
    if is_hooked(model):
        raise ConfigError(
            "the strength curve reads prefix caches of the plain transformers model.",
            "pass the fast-path model: hf, tokenizer, _ = fairlens.load_hf(spec).",
        )
    values = sorted({0.0, *(float(a) for a in alphas)})
    if any(not np.isfinite(a) or a < 0 for a in values):
        raise ConfigError(
            f"strengths must be finite and >= 0; got {list(alphas)}.",
            "pass alphas that are finite and >= 0.",
        )
    if not bbq_items or not any(mc.values()):
        raise ConfigError(
            "the strength curve needs BBQ items and at least one multiple-choice suite.",
            "pass bbq_items=<eval split> and mc={'mmlu': ...} (load_mc_inputs).",
        )
    fitted = getattr(fairsteer, "fitted_templates_", None) or set()
    shared = sum(1 for it in bbq_items if f"{it.category}/{it.question_index}" in fitted)
    if shared:
        raise ConfigError(
            f"{shared} BBQ item(s) share templates with the FairSteer's fit.",
            "score a template-disjoint split (fairlens.data.split_by_template).",
        )
    hook = fairsteer.hook_name_
    edits = [fairsteer.last_position_edit(a) for a in values[1:]]

    def read(prompts: list[str], read_ids: list[int], uids: list[str], desc: str):
        scorer = make_scorer(
            model, encode(tokenizer, prompts), read_ids=read_ids, capture=[hook],
            tokenizer=tokenizer, batch_size=batch_size, progress=progress, desc=desc, uids=uids,
        )  # fmt: skip
        steered = scorer.logits(edits, progress=progress) if edits else None
        logits = [scorer.base_logits, *(steered if steered is not None else [])]
        return logits, fairsteer.gate_fires(scorer.base_acts).cpu()

    fmt = fairsteer.config.prompt_format
    if fmt == "few_shot" and not bbq_shots:
        raise ConfigError(
            "this FairSteer was fitted on few-shot prompts: the BBQ prompts need its 8 shots.",
            "pass bbq_shots=few_shot_examples(...) (the run's shots split).",
        )
    bbq_prompts = build_prompts(bbq_items, fmt, tokenizer, bbq_shots)
    bbq_logits, bbq_fire = read(
        bbq_prompts, letter_token_ids(tokenizer), [it.uid for it in bbq_items], "BBQ prefix pass"
    )
    gold = np.array([it.label for it in bbq_items])
    amb = np.array([it.is_ambiguous for it in bbq_items])
    mc_reads = {}
    for name, items in mc.items():
        if not items:
            continue
        shots = mc_shots if name == "mmlu" else ()
        k = max(len(it.choices) for it in items)
        logits, fire = read(
            mc_prompts(items, tokenizer, shots),
            mc_letter_ids(tokenizer, k),
            [it.uid for it in items],
            f"{name} prefix pass",
        )
        n_opt = torch.tensor([len(it.choices) for it in items])
        mask = torch.arange(k)[None, :] >= n_opt[:, None]
        mc_reads[name] = (
            [x.float().masked_fill(mask, float("-inf")) for x in logits],
            fire,
            np.array([it.answer for it in items]),
        )
    rows = []
    for mode in MODES:
        for i, a in enumerate(values):
            preds = _pick(bbq_logits, bbq_fire, i, mode)
            row: dict[str, Any] = {
                "mode": mode,
                "alpha": a,
                "acc_ambig": proportion(preds[amb] == gold[amb])["accuracy"],
                "acc_disambig": proportion(preds[~amb] == gold[~amb])["accuracy"],
                "gate_rate": float(bbq_fire.float().mean()) if mode == "dynamic" else None,
                "mc": {},
            }
            for name, (logits, fire, answers) in mc_reads.items():
                p = _pick(logits, fire, i, mode)
                base = logits[0].argmax(-1).numpy()
                row["mc"][name] = {
                    **proportion(p == answers),
                    "changed": float((p != base).mean()),
                    "gate_rate": float(fire.float().mean()) if mode == "dynamic" else None,
                }
            rows.append(row)
    relative = tuple(0.0 if a == 0 else float(fairsteer.relative_strength(a)) for a in values)
    n = {"bbq_ambig": int(amb.sum()), "bbq_disambig": int((~amb).sum())}
    n.update({name: len(items) for name, items in mc.items() if items})
    return StrengthCurve(
        tuple(values),
        relative,
        tuple(rows),
        n,
        hook,
        fairsteer.config.alpha_unit,
    )
