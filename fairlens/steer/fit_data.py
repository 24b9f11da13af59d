"""Everything FairSteer learns from the fit split, computed once and shared.

:class:`FitData` runs the unsteered model over the probe items **once** (a prefix-cached pass on the
plain transformers model, or a full pass on a ``HookedTransformer``) and keeps, per item, the
predicted answer and the ``:`` activation at every candidate layer. From that:

* the BAD labels and the gates (:mod:`fairlens.detect.gates`): one probe sweep per gate kind;
* the direction recipes of :mod:`fairlens.directions.registry`: ``"bad"`` and ``"ambig_unknown"``
  come free; ``"pairs"`` (FairSteer's contrastive pairs, read at the appended letter) and
  ``"instruction"`` (the probe prompts again, with the debiasing instruction) run the model once more
  each, on first use; ``"optimise"`` reuses the probe items' prefix cache;
* the mean residual norm per layer at ``:`` (the unit of relative steering strengths).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fairlens.activations.extraction import Activations, extract_activations
from fairlens.backend import encode, hook_name, is_hooked, n_layers_of
from fairlens.data import BBQItem, PromptFormat, content_hash, contrastive_pairs
from fairlens.detect.gates import gate_labels, get_gate
from fairlens.detect.layer_sweep import MIN_PER_CLASS, SweepResult, probe_sweep
from fairlens.directions import Directions, get_direction_method
from fairlens.errors import ConfigError
from fairlens.scoring.letters import ScoringMode, build_prompts, letter_token_ids, resolve_tokenizer
from fairlens.scoring.prefix_cache import PrefixCache, make_scorer
from fairlens.steer.interventions import DEBIAS_INSTRUCTION

__all__ = ["FitData", "check_disjoint"]


def check_disjoint(splits: dict[str, Sequence[BBQItem]]) -> None:
    """Refuse any BBQ template shared by two named item sets (honest numbers need disjointness)."""
    seen: dict[tuple[str, str], str] = {}
    for name, items in splits.items():
        for template in {it.template_id for it in items}:
            if template in seen and seen[template] != name:
                raise ConfigError(
                    f"BBQ template {template[0]}/{template[1]} is in both the {seen[template]!r} and "
                    f"{name!r} items.",
                    "build the splits with fairlens.data.split_by_template so they are disjoint by template.",
                )
            seen[template] = name


def content_hash_texts(texts: Sequence[str]) -> str | None:
    """16 hex characters of SHA-256 over ``texts`` (None for none)."""
    if not texts:
        return None
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]


def _model_id(model: Any) -> str | None:
    info = getattr(model, "fairlens_info", None)
    return None if info is None else f"{info.name}:{info.weights_sha}"


@dataclass(frozen=True)
class FitSettings:
    """How the fit split is turned into activations, labels and direction data.

    Attributes:
        hook_kind: Residual-width hook kind (``"resid_post"``...).
        layers: Candidate layers (default: all).
        prompt_format, shots: Prompt format (and few-shot examples).
        batch_size: Prompts per forward pass.
        n_dsv_per_category: Contrastive pairs per category (FairSteer: 10).
        C, seed: Probe regularisation and seed (splits, pair choice, optimisation).
        scoring: How the model's answers (hence the BAD labels) are read: ``"letter"`` (from the
            same pass) or ``"loglik"`` (one more pass, three options per item).
        extra_bad: ``(prompt text, label)`` anchors added to the BAD data (gate and ``"bad"``
            directions) only (the paper preset's MMLU questions, label 1).
        few_shot_too: Solved examples: the BAD data and the contrastive pairs are built a second
            time with these 8-shot prompts and added (the paper preset); zero-shot prompts only.
    """

    hook_kind: str = "resid_post"
    layers: tuple[int, ...] | None = None
    prompt_format: PromptFormat = "zero_shot"
    shots: tuple[BBQItem, ...] | None = None
    batch_size: int = 16
    n_dsv_per_category: int | None = 10
    C: float = 1.0
    seed: int = 42
    scoring: ScoringMode = "letter"
    extra_bad: tuple[tuple[str, int], ...] = ()
    few_shot_too: tuple[BBQItem, ...] | None = None

    def __post_init__(self) -> None:
        if self.scoring not in ("letter", "loglik"):
            raise ConfigError(f"scoring must be 'letter' or 'loglik', got {self.scoring!r}.")
        if self.few_shot_too and self.prompt_format != "zero_shot":
            raise ConfigError(
                "few_shot_too adds 8-shot data to zero-shot fitting; use zero_shot prompts."
            )
        if self.layers is not None and not self.layers:
            raise ConfigError("no candidate layers.", "pass layers=None (all) or a list of layers.")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1.")

    @classmethod
    def of(cls, **settings: Any) -> FitSettings:
        """From keywords (sequences become tuples); an unknown keyword lists the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"unknown FitData settings {unknown}.", f"valid: {sorted(known)}.")
        for key in ("layers", "shots", "extra_bad", "few_shot_too"):
            value = settings.get(key)
            if value is not None:
                settings[key] = tuple(tuple(v) if key == "extra_bad" else v for v in value)
        if settings.get("few_shot_too") == ():
            settings["few_shot_too"] = None
        return cls(**settings)


class FitData:
    """The fit split's activations, labels and direction data, each computed once.

    Args:
        model: The plain transformers model (fast path, prefix-cached) or a ``HookedTransformer``.
        probe_items: BAD items (labelled by the model's own answers).
        dsv_items: Items the contrastive pairs are drawn from (template-disjoint from the others).
        tokenizer: Needed for a plain transformers model.
        progress: Progress bars.
        **settings: The fields of :class:`FitSettings`.

    Attributes:
        predictions: ``[n]`` the unsteered model's answer per probe item.
        acts: ``:`` activations of every probe item at every candidate hook.
        residual_norms: ``[layer]`` mean L2 norm of those activations.
    """

    def __init__(
        self,
        model: Any,
        probe_items: Sequence[BBQItem],
        dsv_items: Sequence[BBQItem] = (),
        *,
        tokenizer: Any | None = None,
        progress: bool = False,
        **settings: Any,
    ) -> None:
        self._setup(model, probe_items, dsv_items, tokenizer, progress, FitSettings.of(**settings))
        self.scorer: Any = self.build_scorer(self.probe_items, desc="BAD pass (probe items)")
        if self.scoring == "letter":
            self.predictions = self.scorer.base_predictions.numpy()
        else:  # BAD labels from the configured scoring mode; activations stay at ':'
            from fairlens.scoring.letters import score_items

            self.predictions = score_items(
                model,
                self.probe_items,
                mode=self.scoring,
                prompt_format=self.prompt_format,
                shots=self.shots,
                tokenizer=self.tokenizer,
                batch_size=self.batch_size,
                progress=progress,
            ).predictions.numpy()
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
        model: Any,
        probe_items: Sequence[BBQItem],
        dsv_items: Sequence[BBQItem],
        tokenizer: Any | None,
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

    # ------------------------------------------------------------------ gates
    def gate(self, name: str) -> SweepResult:
        """The probe sweep of gate ``name`` (fitted once); raises if it cannot be fitted."""
        result = self.gate_or_reason(name)
        if isinstance(result, str):
            raise ConfigError(f"the {name!r} gate cannot be fitted: {result}", "use another gate.")
        return result

    def gate_or_reason(self, name: str) -> SweepResult | str:
        """The probe sweep of gate ``name``, or why it could not be fitted (too few labels...)."""
        get_gate(name)
        if name not in self._gates:
            if name == "bad":
                x, y, groups = self._bad_rows()
            else:
                keep, y = gate_labels(name, self.probe_items, self.predictions)
                x = self.acts.acts[torch.as_tensor(keep, dtype=torch.long)]
                groups = [self.probe_items[i].template_id for i in keep]
            counts = np.bincount(y, minlength=2) if len(y) else np.zeros(2, dtype=int)
            if counts.min() < MIN_PER_CLASS:
                self._gates[name] = (
                    f"{counts[1]} positive and {counts[0]} negative labels among "
                    f"{len(self.probe_items)} probe items (need >= {MIN_PER_CLASS} of each)"
                )
            else:
                try:
                    self._gates[name] = probe_sweep(
                        x,
                        y,
                        layers=self.layers,
                        hook_names=self.hooks,
                        C=self.C,
                        seed=self.seed,
                        groups=[f"{c}/{q}" for c, q in groups],
                    )
                except ConfigError as exc:
                    self._gates[name] = exc.cause
        return self._gates[name]

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

    # ------------------------------------------------------------------ directions
    def direction(self, name: str, layers: Sequence[int] | None = None) -> Directions:
        """Directions of method ``name`` at ``layers`` (default: every candidate layer).

        Each layer is fitted once, on first use (every estimator fits layers independently), so a
        search that needs an expensive method at a few layers pays only for those.
        """
        method = get_direction_method(name)
        wanted = self.layers if layers is None else [int(v) for v in layers]
        missing = [v for v in wanted if v not in self.layers]
        if missing:
            raise ConfigError(
                f"layers {missing} are not among the fitted candidate layers {self.layers}.",
                "fit with those layers, or pick among the candidates.",
            )
        done = self._directions.setdefault(name, {})
        todo = [v for v in wanted if v not in done]
        if todo:
            idx = [self.layers.index(v) for v in todo]
            hooks = tuple(self.hooks[i] for i in idx)
            est = method.make(C=self.C, seed=self.seed)
            if method.recipe == "optimise":
                cache = self._optimise_cache()
                items = self.probe_items
                y = np.array([1 if it.is_ambiguous else 0 for it in items])
                answers = torch.tensor(
                    [it.unknown_loc if it.is_ambiguous else it.label for it in items]
                )
                est.fit(
                    cache=cache,
                    y=y,
                    answers=answers,
                    hooks=hooks,
                    residual_norms=[float(self.residual_norms[i]) for i in idx],
                    progress=self.progress,
                )
            else:
                X, y, groups = self.recipe(method.recipe)
                x = X[:, idx]
                if groups is not None:
                    est.fit(x, y, groups=groups)
                else:
                    est.fit(x, y)
            counts = (int(getattr(est, "n_pos_", 0)), int(getattr(est, "n_neg_", 0)))
            for layer, vec in zip(todo, est.directions_.float(), strict=True):
                done[layer] = (vec, counts)
        vectors = torch.stack([done[v][0] for v in wanted])
        n_pos, n_neg = done[wanted[0]][1]
        hooks = tuple(self.hooks[self.layers.index(v)] for v in wanted)
        return Directions(vectors, hooks, name, method.position, n_pos, n_neg)

    def recipe(self, name: str) -> tuple[Tensor, np.ndarray, np.ndarray | None]:
        """``(X [n, layer, d], y, groups)`` of a direction recipe (see the registry)."""
        if name == "bad":
            x, y, _ = self._bad_rows()
            if len(y) == 0 or y.min() == y.max():
                raise ConfigError(
                    "the BAD labels of the probe items have a single class, so no 'bad' direction.",
                    "use more probe items or another direction method.",
                )
            return x, y, None
        if name == "ambig_unknown":
            keep = [i for i, it in enumerate(self.probe_items) if it.is_ambiguous]
            y = np.array(
                [int(self.predictions[i] == self.probe_items[i].unknown_loc) for i in keep]
            )
            if len(y) == 0 or y.min() == y.max():
                raise ConfigError(
                    f"among {len(keep)} ambiguous probe items the model answered 'unknown' "
                    f"{int(y.sum()) if len(y) else 0} times: both kinds are needed for 'say_unknown'.",
                    "use more probe items or another direction method.",
                )
            return self.acts.acts[torch.as_tensor(keep)], y, None
        if name == "instruction":
            instr = self.instruction_acts()
            n = instr.shape[0]
            return torch.cat([instr, self.acts.acts]), np.array([1] * n + [0] * n), None
        if name == "pairs":
            return self._pair_acts()
        raise ConfigError(f"recipe {name!r} has no activation data (it runs the model).")

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
            "model": _model_id(self.model),
        }

    def save(self, path: str | Path) -> Path:
        """Write activations, predictions and everything fitted so far (safetensors + JSON)."""
        from fairlens.artifacts import save_artifact

        tensors: dict[str, Tensor] = {
            "acts": self.acts.acts,
            "predictions": torch.as_tensor(self.predictions),
            "residual_norms": self.residual_norms,
        }
        if self._instruction is not None:
            tensors["instruction"] = self._instruction
        if self._extra_acts is not None:
            tensors["extra_acts"] = self._extra_acts
        if self._few_shot is not None:
            tensors["few_shot_acts"] = self._few_shot[0]
            tensors["few_shot_predictions"] = torch.as_tensor(self._few_shot[1])
        pairs_meta = None
        if self._pairs is not None:
            tensors["pair_acts"] = self._pairs[0]
            pairs_meta = {"y": self._pairs[1].tolist(), "letters": self._pairs[2].tolist()}
        directions = {}
        for name, per_layer in self._directions.items():
            layers = sorted(per_layer)
            tensors[f"direction:{name}"] = torch.stack([per_layer[v][0] for v in layers])
            directions[name] = {"layers": layers, "counts": [list(per_layer[v][1]) for v in layers]}
        gates: dict[str, Any] = {}
        for name, g in self._gates.items():
            if isinstance(g, str):
                gates[name] = {"unavailable": g}
            else:
                tensors[f"gate:{name}:coef"] = g.coef
                tensors[f"gate:{name}:intercept"] = g.intercept
                gates[name] = g.to_dict()
        meta = {
            "identity": self._identity(),
            "pairs": pairs_meta,
            "directions": directions,
            "gates": gates,
        }
        return save_artifact(path, "fit_data", tensors, meta)

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: Any,
        probe_items: Sequence[BBQItem],
        dsv_items: Sequence[BBQItem] = (),
        *,
        tokenizer: Any | None = None,
        progress: bool = False,
        **settings: Any,
    ) -> FitData:
        """Rebuild a saved FitData without running the model; refuses one saved for other settings.

        ``settings`` are :class:`FitSettings` fields; they must describe the saved fit.
        """
        from fairlens.artifacts import load_artifact
        from fairlens.errors import ArtifactError

        tensors, meta = load_artifact(path, "fit_data")
        self = cls.__new__(cls)
        self._setup(model, probe_items, dsv_items, tokenizer, progress, FitSettings.of(**settings))
        if meta["identity"] != self._identity():
            raise ArtifactError(
                f"the fit data in {str(path)!r} was computed for other items or settings.",
                "delete it to recompute, or pass the same items and settings.",
            )
        self.scorer = None
        self.predictions = tensors["predictions"].numpy()
        self.acts = Activations(
            tensors["acts"],
            tuple(self.hooks),
            tuple(it.uid for it in self.probe_items),
            position="last_prompt_token",
            meta={"prompt_format": self.prompt_format},
        )
        self.residual_norms = tensors["residual_norms"]
        self._instruction = tensors.get("instruction")
        self._extra_acts = tensors.get("extra_acts")
        if "few_shot_acts" in tensors:
            self._few_shot = (tensors["few_shot_acts"], tensors["few_shot_predictions"].numpy())
        if meta["pairs"] is not None:
            self._pairs = (
                tensors["pair_acts"],
                np.asarray(meta["pairs"]["y"]),
                np.asarray(meta["pairs"]["letters"]),
            )
        for name, d in meta["directions"].items():
            vectors = tensors[f"direction:{name}"]
            self._directions[name] = {
                int(v): (vectors[i], (int(c[0]), int(c[1])))
                for i, (v, c) in enumerate(zip(d["layers"], d["counts"], strict=True))
            }
        for name, g in meta["gates"].items():
            self._gates[name] = (
                g["unavailable"]
                if "unavailable" in g
                else SweepResult.from_dict(
                    g, tensors[f"gate:{name}:coef"], tensors[f"gate:{name}:intercept"]
                )
            )
        return self

    @property
    def is_fast_path(self) -> bool:
        return not is_hooked(self.model)
