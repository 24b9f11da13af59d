"""The fit split run through the unsteered model once: settings, prompt scorers (prefix-cached on
the fast path), answers, activations at every candidate hook, and the extra passes some
directions and gates need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fairlens.activations.extraction import Activations, extract_activations
from fairlens.backend import encode, hook_name, is_hooked, n_layers_of, resolve_tokenizer
from fairlens.data import BBQItem, PromptFormat, content_hash, contrastive_pairs
from fairlens.detect.gates import gate_labels
from fairlens.detect.layer_sweep import SweepResult
from fairlens.errors import ConfigError
from fairlens.model_types import Model, Tokenizer
from fairlens.scoring.letters import ScoringMode, build_prompts, letter_token_ids
from fairlens.scoring.prefix_cache import PrefixCache, make_scorer
from fairlens.steer.fit_settings import FitSettings, check_disjoint, content_hash_texts, model_id
from fairlens.steer.interventions import DEBIAS_INSTRUCTION


class FitPasses:
    """The model passes over the fit split, each run once and kept (the base of FitData)."""

    def __init__(
        self,
        model: Model,
        probe_items: Sequence[BBQItem],
        dsv_items: Sequence[BBQItem] = (),
        *,
        tokenizer: Tokenizer | None = None,
        progress: bool = False,
        **settings: Any,
    ) -> None:
        self._setup(model, probe_items, dsv_items, tokenizer, progress, FitSettings.of(**settings))
        self.scorer: Any = self.build_scorer(self.probe_items, desc="BAD pass (probe items)")
        self.predictions = self.predictions_of(self.probe_items, self.scorer)
        stacked = torch.stack([self.scorer.base_acts[h] for h in self.hooks], dim=1)
        self.acts = Activations(
            stacked,
            tuple(self.hooks),
            tuple(it.uid for it in self.probe_items),
            position="last_prompt_token",
            meta={"prompt_format": self.prompt_format},
        )
        self.residual_norms = stacked.norm(dim=-1).mean(0)

    def _setup(
        self,
        model: Model,
        probe_items: Sequence[BBQItem],
        dsv_items: Sequence[BBQItem],
        tokenizer: Tokenizer | None,
        progress: bool,
        settings: FitSettings,
    ) -> None:
        """Validate and store the settings (shared by ``__init__`` and :meth:`load`)."""
        if not probe_items:
            raise ConfigError("no probe items to fit on.", "pass the fit split's items.")
        check_disjoint({"probe": probe_items, "dsv": dsv_items})
        self.settings = settings
        self.model = model
        self.tokenizer = resolve_tokenizer(model, tokenizer)
        self.n_layers = n_layers_of(model)
        layers = settings.layers
        self.layers = list(range(self.n_layers)) if layers is None else [int(v) for v in layers]
        self.hook_kind = settings.hook_kind
        self.hooks = [hook_name(self.hook_kind, v, n_layers=self.n_layers) for v in self.layers]
        self.probe_items = list(probe_items)
        self.dsv_items = list(dsv_items)
        self.prompt_format: PromptFormat = settings.prompt_format
        self.shots = list(settings.shots) if settings.shots else None
        self.batch_size = settings.batch_size
        self.n_dsv_per_category = settings.n_dsv_per_category
        self.C = settings.C
        self.seed = settings.seed
        self.scoring: ScoringMode = settings.scoring
        self.progress = progress
        self.letter_ids = letter_token_ids(self.tokenizer)
        self.extra_bad = list(settings.extra_bad)  # (prompt, label) anchors added to the BAD data
        self.few_shot_too = list(settings.few_shot_too) if settings.few_shot_too else None
        self._directions: dict[str, dict[int, tuple[Tensor, tuple[int, int]]]] = {}
        self._scorers: dict[str, Any] = {}
        self._gates: dict[str, SweepResult | str] = {}
        self._instruction: Tensor | None = None
        self._pairs: tuple[Tensor, np.ndarray, np.ndarray] | None = None
        self._extra_acts: Tensor | None = None
        self._few_shot: tuple[Tensor, np.ndarray] | None = None

    def build_scorer(
        self,
        items: Sequence[BBQItem],
        *,
        instruction: str | None = None,
        prompt_format: PromptFormat | None = None,
        shots: Sequence[BBQItem] | None = None,
        keep_cache: bool = True,
        desc: str = "prefix pass",
    ) -> Any:
        """A scorer of ``items`` (this fit's prompts, or another format / an instruction) that
        records the ``:`` activation at every candidate hook."""
        fmt = self.prompt_format if prompt_format is None else prompt_format
        prompts = build_prompts(
            items, fmt, self.tokenizer, self.shots if prompt_format is None else shots, instruction
        )
        return self.scorer_of_texts(
            prompts, keep_cache=keep_cache, desc=desc, uids=[it.uid for it in items]
        )

    def scorer_of_texts(
        self,
        texts: Sequence[str],
        *,
        keep_cache: bool = True,
        desc: str = "prefix pass",
        uids: Sequence[str] | None = None,
    ) -> Any:
        """A scorer of raw prompt texts (letter logits, ``:`` activations at every candidate hook)."""
        return make_scorer(
            self.model,
            encode(self.tokenizer, texts),
            read_ids=self.letter_ids,
            capture=self.hooks,
            tokenizer=self.tokenizer,
            batch_size=self.batch_size,
            progress=self.progress,
            desc=desc,
            uids=uids,
            keep_cache=keep_cache,
        )

    # ------------------------------------------------------------------ summaries
    @property
    def templates(self) -> set[tuple[str, str]]:
        return {it.template_id for it in [*self.probe_items, *self.dsv_items]}

    def split_hashes(self) -> dict[str, str | None]:
        return {
            "probe": content_hash(self.probe_items),
            "dsv": content_hash(self.dsv_items) if self.dsv_items else None,
        }

    def norm_at(self, hook: str) -> float:
        return float(self.residual_norms[self.hooks.index(hook)])

    def bad_rows(self, hook: str) -> tuple[Tensor, np.ndarray]:
        """The BAD probe's training rows at ``hook``: ``(X [n, d], y)`` (1 unbiased, 0 biased)."""
        x, y, _ = self._bad_rows()
        return x[:, self.hooks.index(hook)], y

    def predictions_of(self, items: Sequence[BBQItem], scorer: Any) -> np.ndarray:
        """The unsteered answers to ``items`` (whose base pass is ``scorer``) under this fit's
        scoring mode, as the BAD labels of the probe items were read."""
        if self.scoring == "letter":
            return scorer.base_predictions.numpy()
        from fairlens.scoring.letters import score_items

        return score_items(
            self.model,
            items,
            mode=self.scoring,
            prompt_format=self.prompt_format,
            shots=self.shots,
            tokenizer=self.tokenizer,
            batch_size=self.batch_size,
            progress=self.progress,
        ).predictions.numpy()

    def _bad_rows(self) -> tuple[Tensor, np.ndarray, list[tuple[str, str]]]:
        """The BAD data: labelled zero-shot rows, plus 8-shot rows and anchors when configured."""
        keep, y = gate_labels("bad", self.probe_items, self.predictions)
        xs = [self.acts.acts[torch.as_tensor(keep, dtype=torch.long)]]
        ys = [y]
        groups = [self.probe_items[i].template_id for i in keep]
        if self.few_shot_too:
            acts, preds = self._few_shot_pass()
            keep_fs, y_fs = gate_labels("bad", self.probe_items, preds)
            xs.append(acts[torch.as_tensor(keep_fs, dtype=torch.long)])
            ys.append(y_fs)
            groups += [
                self.probe_items[i].template_id for i in keep_fs
            ]  # same template, same group
        if self.extra_bad:
            xs.append(self._extra_bad_acts())
            ys.append(np.array([lab for _, lab in self.extra_bad], dtype=np.int64))
            groups += [("anchor", str(i // 10)) for i in range(len(self.extra_bad))]
        return torch.cat(xs), np.concatenate(ys).astype(np.int64), groups

    def _few_shot_pass(self) -> tuple[Tensor, np.ndarray]:
        """``:`` activations and answers of the probe items with the 8-shot prompts (once)."""
        if self._few_shot is None:
            assert self.few_shot_too is not None
            scorer = self.build_scorer(
                self.probe_items,
                prompt_format="few_shot",
                shots=self.few_shot_too,
                keep_cache=False,
                desc="BAD pass (8-shot prompts)",
            )
            acts = torch.stack([scorer.base_acts[h] for h in self.hooks], dim=1)
            self._few_shot = (acts, scorer.base_predictions.numpy())
        return self._few_shot

    def _extra_bad_acts(self) -> Tensor:
        if self._extra_acts is None:
            scorer = self.scorer_of_texts(
                [text for text, _ in self.extra_bad], keep_cache=False, desc="BAD anchors"
            )
            self._extra_acts = torch.stack([scorer.base_acts[h] for h in self.hooks], dim=1)
        return self._extra_acts

    def instruction_acts(self) -> Tensor:
        """``[n, layer, d]`` ``:`` activations of the probe prompts with the debiasing instruction."""
        if self._instruction is None:
            scorer = self.build_scorer(
                self.probe_items,
                instruction=DEBIAS_INSTRUCTION,
                keep_cache=False,
                desc="instruction pass (probe items)",
            )
            self._instruction = torch.stack([scorer.base_acts[h] for h in self.hooks], dim=1)
        return self._instruction

    def _pair_acts(self) -> tuple[Tensor, np.ndarray, np.ndarray]:
        if self._pairs is None:
            if not self.dsv_items:
                raise ConfigError(
                    "the 'pairs' recipe (the DSV) needs dsv_items.",
                    "pass the DSV split's items to FitData / FairSteer.fit.",
                )
            pairs = contrastive_pairs(
                self.dsv_items,
                self.prompt_format,
                tokenizer=self.tokenizer,
                shots=self.shots,
                n_per_category=self.n_dsv_per_category,
                seed=self.seed,
            )
            if self.few_shot_too:
                pairs += contrastive_pairs(
                    self.dsv_items,
                    "few_shot",
                    shots=self.few_shot_too,
                    n_per_category=self.n_dsv_per_category,
                    seed=self.seed,
                )
            prompts = encode(self.tokenizer, [p.prompt for p in pairs])
            seqs: list[list[int]] = []
            letters: list[str] = []
            for ids, pair in zip(prompts, pairs, strict=True):
                target = pair.item.bias_target_loc
                assert target is not None  # contrastive_pairs keeps only items with a target
                for k in (pair.item.label, target):
                    seqs.append([*ids, self.letter_ids[k]])  # one token each (checked)
                    letters.append("ABC"[k])
            extracted = extract_activations(
                self.model,
                seqs,
                hooks=self.hooks,
                batch_size=self.batch_size,
                progress=self.progress,
                position="answer_letter",
            )
            y = np.array([1, 0] * len(pairs))
            self._pairs = (extracted.acts, y, np.array(letters))
        return self._pairs

    def _optimise_cache(self) -> PrefixCache:
        if self.scorer is None:  # loaded from disk: run the BAD pass again for its cache
            self.scorer = self.build_scorer(self.probe_items, desc="probe-items prefix cache")
        if not isinstance(self.scorer, PrefixCache):
            raise ConfigError(
                "the 'optimised' direction needs the prefix cache of the plain transformers model.",
                "fit on the fast-path twin (fairlens.load_hf) instead of a HookedTransformer.",
            )
        return self.scorer

    def scorer_for(self, items: Sequence[BBQItem], *, desc: str = "prefix pass") -> Any:
        """A scorer (prefix cache) of ``items``' plain prompts capturing every candidate hook.

        The last one built is kept, so fitting the layer on the selection split and searching on
        it run the prefix pass once.
        """
        key = content_hash(items)
        if key not in self._scorers:
            self._scorers.clear()
            self._scorers[key] = self.build_scorer(items, desc=desc)
        return self._scorers[key]

    def release(self) -> None:
        """Drop the KV caches held (keep activations, labels and fitted results)."""
        self.scorer = None
        self._scorers.clear()

    # ------------------------------------------------------------------ persistence
    def _identity(self) -> dict[str, Any]:
        return {
            "probe_uids": [it.uid for it in self.probe_items],
            "dsv_uids": [it.uid for it in self.dsv_items],
            "hooks": self.hooks,
            "prompt_format": self.prompt_format,
            "shots": [it.uid for it in self.shots] if self.shots else None,
            "n_dsv_per_category": self.n_dsv_per_category,
            "C": self.C,
            "seed": self.seed,
            "scoring": self.scoring,
            "extra_bad": content_hash_texts([t for t, _ in self.extra_bad]),
            "few_shot_too": [it.uid for it in self.few_shot_too] if self.few_shot_too else None,
            "model": model_id(self.model),
        }

    @property
    def is_fast_path(self) -> bool:
        return not is_hooked(self.model)
