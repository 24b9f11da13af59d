"""Scoring steering variants on BBQ prompts: the interface both scorers share, the full-prompt
reference scorer (any model, whole prompts re-run under hooks), and the exact composition of
dynamic results from static and base ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from fairlens.backend import (
    HookHandle,
    PaddingSide,
    add_hooks,
    is_hooked,
    last_token_logits,
    length_sorted_chunks,
    model_device,
    n_layers_of,
    pad_id,
    pad_sequences,
    parse_hook_name,
)
from fairlens.errors import ConfigError
from fairlens.model_types import Model, Tokenizer

Edit = Mapping[str, Tensor]

__all__ = [
    "Edit",
    "FullPromptScorer",
    "VariantScorer",
    "compose_dynamic",
    "gate_fires",
]


@runtime_checkable
class VariantScorer(Protocol):
    """What the steering search needs from a scorer (cached or full-prompt)."""

    n: int
    uids: tuple[str, ...] | None
    base_logits: Float[Tensor, "n k"]
    base_acts: dict[str, Float[Tensor, "n d"]]

    def logits(
        self, edits: Sequence[Edit], *, progress: bool = False
    ) -> Float[Tensor, "variant n k"]: ...


def _check_edits(edits: Sequence[Edit], n: int, d: int, n_layers: int) -> list[str]:
    """Validate every edit; return the sorted union of their hook names."""
    hooks: set[str] = set()
    for v, edit in enumerate(edits):
        for name, delta in edit.items():
            _, layer = parse_hook_name(name)
            if not 0 <= layer < n_layers:
                raise ConfigError(
                    f"edit {v} targets layer {layer}, outside the model's 0..{n_layers - 1}.",
                    "use layers the model has.",
                )
            if delta.shape not in ((d,), (n, d)):
                raise ConfigError(
                    f"edit {v} at {name} has shape {tuple(delta.shape)}; expected ({d},) or ({n}, {d}).",
                    "pass one vector for all items or one per item.",
                )
            if not bool(torch.isfinite(delta).all()):
                raise ConfigError(
                    f"edit {v} at {name} contains NaN or infinite values.",
                    "check the steering vector and alpha.",
                )
            hooks.add(name)
    return sorted(hooks, key=lambda h: (parse_hook_name(h)[1], h))


def _rows_delta(
    edits: Sequence[Edit], hook: str, rows: Tensor, d: int, device: torch.device, dtype: torch.dtype
) -> Tensor | None:
    """``[len(edits) * len(rows), d]`` deltas of ``hook`` (variant-major rows), None if all zero."""
    b = len(rows)
    out: Tensor | None = None
    for v, edit in enumerate(edits):
        delta = edit.get(hook)
        if delta is None:
            continue
        if out is None:
            out = torch.zeros(len(edits) * b, d, device=device, dtype=dtype)
        part = delta if delta.ndim == 1 else delta[rows]
        out[v * b : (v + 1) * b] = part.to(device=device, dtype=dtype)
    return out


def _capture_last(store: dict[str, Tensor], name: str) -> Callable[[Tensor], Tensor]:
    def fn(act: Tensor) -> Tensor:
        store[name] = act[:, -1].detach().float().cpu()
        return act

    return fn


def _hooks(model: Model, fns: Mapping[str, Callable[[Tensor], Tensor]]) -> HookHandle:
    """Add ``fn(act) -> act`` at each hook (TL or HF); the handle removes exactly those hooks."""
    return add_hooks(model, list(fns.items()))


class _Scorer:
    """What both scorers share: the prompts' count and ids, the read tokens, the captured hooks."""

    n: int
    uids: tuple[str, ...] | None
    base_logits: Tensor
    base_acts: dict[str, Tensor]

    def _common(
        self,
        model: Model,
        sequences: Sequence[Sequence[int]],
        read_ids: Sequence[int],
        capture: Sequence[str],
        uids: Sequence[str] | None,
        tokenizer: Tokenizer | None,
    ) -> None:
        if len(sequences) == 0:
            raise ConfigError("no prompts to score.", "pass at least one prompt.")
        self.model = model
        self.n = len(sequences)
        self.uids = _uids(uids, self.n)
        self.n_layers = n_layers_of(model)
        self.d_model = int(model.cfg.d_model if is_hooked(model) else model.config.hidden_size)
        self.read_ids = tuple(int(i) for i in read_ids)
        self.capture = tuple(capture)
        _check_edits(
            [dict.fromkeys(self.capture, torch.zeros(self.d_model))],
            self.n,
            self.d_model,
            self.n_layers,
        )
        self._pad = pad_id(
            tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        )

    @property
    def base_predictions(self) -> Tensor:
        """``[n]`` the unsteered answer (argmax over the read tokens)."""
        return self.base_logits.argmax(-1)


class FullPromptScorer(_Scorer):
    """The reference: re-runs every whole prompt under each edit (works on TL and HF models).

    Same interface as :class:`PrefixCache`; use it where no KV cache is available or to check the
    cached path. Costs one full forward per item and edit.
    """

    def __init__(
        self,
        model: Model,
        sequences: Sequence[Sequence[int]],
        *,
        read_ids: Sequence[int],
        capture: Sequence[str] = (),
        tokenizer: Tokenizer | None = None,
        batch_size: int = 16,
        padding_side: PaddingSide = "left",
        progress: bool = False,
        desc: str = "full-prompt pass",
        uids: Sequence[str] | None = None,
    ) -> None:
        self._common(model, sequences, read_ids, capture, uids, tokenizer)
        self.sequences = [list(s) for s in sequences]
        self.batch_size = batch_size
        self.padding_side: PaddingSide = padding_side
        self.base_logits, self.base_acts = self._run({}, self.capture, progress=progress, desc=desc)

    def _run(
        self, edit: Edit, capture: Sequence[str], *, progress: bool = False, desc: str = ""
    ) -> tuple[Tensor, dict[str, Tensor]]:
        out = torch.empty(self.n, len(self.read_ids))
        acts = {h: torch.empty(self.n, self.d_model) for h in capture}
        device = model_device(self.model)
        chunks = list(length_sorted_chunks([len(s) for s in self.sequences], self.batch_size))
        with torch.no_grad():
            for rows in tqdm(chunks, desc=desc, disable=not progress, unit="batch"):
                batch = pad_sequences(
                    [self.sequences[r] for r in rows],
                    pad_token_id=self._pad,
                    padding_side=self.padding_side,
                )
                idx = torch.as_tensor(rows)
                last = batch.last_index.to(device)
                store: dict[str, Tensor] = {}
                fns: dict[str, Callable[[Tensor], Tensor]] = {}
                for name, delta in edit.items():
                    d = delta if delta.ndim == 1 else delta[idx]
                    fns[name] = _add_at_index(d.to(device), last)
                for name in capture:  # the gate reads the activation before any edit at that hook
                    grab = _capture_at(store, name, last)
                    fns[name] = grab if name not in fns else _compose(grab, fns[name])
                with _hooks(self.model, fns):
                    logits = last_token_logits(self.model, batch)
                out[idx] = logits[:, list(self.read_ids)].float().cpu()
                for name in capture:
                    acts[name][idx] = store[name]
        return out, acts

    def logits(
        self, edits: Sequence[Edit], *, progress: bool = False
    ) -> Float[Tensor, "variant n k"]:
        """Read logits under each static edit, one full pass over every prompt per edit."""
        _check_edits(edits, self.n, self.d_model, self.n_layers)
        out = torch.empty(len(edits), self.n, len(self.read_ids))
        for v, edit in enumerate(tqdm(edits, desc="variants (full prompts)", disable=not progress)):
            out[v] = self._run(edit, ())[0]
        return out


def _add_at_index(delta: Tensor, index: Tensor) -> Callable[[Tensor], Tensor]:
    def fn(act: Tensor) -> Tensor:
        out = act.clone()
        rows = torch.arange(act.shape[0], device=act.device)
        out[rows, index.to(act.device)] = out[rows, index.to(act.device)] + delta.to(act.dtype)
        return out

    return fn


def _capture_at(store: dict[str, Tensor], name: str, index: Tensor) -> Callable[[Tensor], Tensor]:
    def fn(act: Tensor) -> Tensor:
        rows = torch.arange(act.shape[0], device=act.device)
        store[name] = act[rows, index.to(act.device)].detach().float().cpu()
        return act

    return fn


def _compose(
    first: Callable[[Tensor], Tensor] | None, then: Callable[[Tensor], Tensor]
) -> Callable[[Tensor], Tensor]:
    if first is None:
        return then
    return lambda act: then(first(act))


def _uids(uids: Sequence[str] | None, n: int) -> tuple[str, ...] | None:
    """Row ids (checked to be one per prompt) that let callers verify what a scorer holds."""
    if uids is None:
        return None
    if len(uids) != n:
        raise ConfigError(f"{len(uids)} uids for {n} prompts.", "pass one uid per prompt.")
    return tuple(uids)


def compose_dynamic(
    base: Float[Tensor, "n k"], steered: Float[Tensor, "n k"], fire: Bool[Tensor, " n"]
) -> Float[Tensor, "n k"]:
    """Dynamic steering's logits: ``steered`` where the gate fires, ``base`` elsewhere.

    Exact for last-position steering, because the gate reads the *unsteered* activation at the
    steered layer (nothing upstream of it changes).
    """
    if base.shape != steered.shape or fire.shape != base.shape[:1]:
        raise ConfigError(
            f"shapes disagree: base {tuple(base.shape)}, steered {tuple(steered.shape)}, "
            f"gate {tuple(fire.shape)}.",
            "pass base and steered logits of the same [n, k] shape and one gate decision per row.",
        )
    return torch.where(fire[:, None], steered, base)


def gate_fires(
    acts: Float[Tensor, "n d"], coef: Float[Tensor, " d"], intercept: float | Tensor, tau: float
) -> Bool[Tensor, " n"]:
    """``P(unbiased | a) < tau`` with ``P = sigmoid(a . coef + intercept)``, as the Steerer computes it."""
    if not 0.0 <= tau <= 1.0 or math.isnan(tau):
        raise ConfigError(
            f"tau is a probability threshold in [0, 1], got {tau}.",
            "pass a tau between 0 and 1.",
        )
    p = torch.sigmoid(acts.float() @ coef.float() + torch.as_tensor(intercept).float())
    return p < tau
