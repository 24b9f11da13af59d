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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fairlens.activations.extraction import Activations
from fairlens.data import BBQItem, content_hash
from fairlens.detect.condition_gate import ConditionGate
from fairlens.detect.gates import gate_labels, get_gate
from fairlens.detect.layer_sweep import MIN_PER_CLASS, SweepResult, probe_sweep
from fairlens.directions import Directions, get_direction_method
from fairlens.errors import ConfigError
from fairlens.model_types import Model, Tokenizer
from fairlens.scoring.metrics import probe_labels
from fairlens.steer.fit_passes import FitPasses
from fairlens.steer.fit_settings import FitSettings, check_disjoint

__all__ = ["FitData", "check_disjoint"]


class FitData(FitPasses):
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

    def condition_gate(
        self,
        hook: str,
        select_items: Sequence[BBQItem],
        *,
        desc: str = "condition gate: selection pass",
    ) -> ConditionGate:
        """The CAST-style gate of the panel's ``cast`` baseline at ``hook``: its direction from
        this fit split's BAD rows, its threshold on ``select_items``' BAD labels (the unsteered
        model's answers there) by the rule of :mod:`fairlens.detect.condition_gate`.

        Args:
            hook: The steering hook (one this fit captured).
            select_items: The selection split (template-disjoint from the fit split; refused
                otherwise).
        """
        if hook not in self.hooks:
            raise ConfigError(
                f"the fit data has no activations at {hook}.", f"use one of {self.hooks}."
            )
        check_disjoint({"fit": [*self.probe_items, *self.dsv_items], "select": select_items})
        x, y = self.bad_rows(hook)
        gate = ConditionGate(hook).fit(x, y)
        scorer = self.build_scorer(select_items, keep_cache=False, desc=desc)
        keep, y_sel = probe_labels(select_items, self.predictions_of(select_items, scorer))
        gate.select_threshold(
            scorer.base_acts[hook][torch.as_tensor(keep, dtype=torch.long)], y_sel
        )
        gate.selection_["split_hash"] = content_hash(list(select_items))
        return gate

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
        raise ConfigError(
            f"recipe {name!r} has no activation data (it runs the model).",
            "call .direction(<method name>) instead, e.g. .direction('optimised').",
        )

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
        model: Model,
        probe_items: Sequence[BBQItem],
        dsv_items: Sequence[BBQItem] = (),
        *,
        tokenizer: Tokenizer | None = None,
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
