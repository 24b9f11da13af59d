"""Activation extraction at chosen hook points and token positions.

Only the requested positions are kept (one vector per row and hook, never full sequences), and the
forward pass stops after the last layer any requested hook lives in (TL's ``stop_at_layer``), so
extracting the last-token residual stream of every layer costs one forward pass and ``n x hooks x d``
floats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from fairlens.artifacts import load_artifact, save_artifact
from fairlens.backend import (
    Batch,
    PaddingSide,
    add_hooks,
    check_context,
    decoder_of,
    hook_name,
    is_hooked,
    length_sorted_chunks,
    model_device,
    pad_id,
    pad_sequences,
    parse_hook_name,
    resolve_hooks,
)
from fairlens.distributed import agree, merge_rows, shared, show, world
from fairlens.errors import ConfigError
from fairlens.model_types import Model


@dataclass(frozen=True)
class Activations:
    """Activations of ``n`` inputs at several hook points, one token position each.

    Attributes:
        acts: ``[n, hook, d]`` float32 activations (``hook_z`` flattened to ``n_heads * d_head``).
        hook_names: The TL hook of each slot on axis 1.
        uids: One id per row (BBQ item uid, or ``"row{i}"``).
        labels: Optional ``[n]`` int labels (FairSteer: 1 unbiased, 0 biased).
        position: How the read position was chosen (e.g. ``"last_prompt_token"``).
        meta: Free-form settings recorded with the artifact.
    """

    acts: Float[Tensor, "n hook d"]
    hook_names: tuple[str, ...]
    uids: tuple[str, ...]
    labels: Int[Tensor, " n"] | None = None
    position: str = "last"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.acts.ndim != 3 or self.acts.shape[1] != len(self.hook_names):
            raise ConfigError(
                f"acts must be [n, hooks={len(self.hook_names)}, d], got {tuple(self.acts.shape)}.",
                "pass acts as [n, hook, d] with one hook slice per entry of hook_names.",
            )
        if self.acts.shape[0] != len(self.uids):
            raise ConfigError(
                f"{self.acts.shape[0]} rows but {len(self.uids)} uids.",
                "pass one uid per row of acts.",
            )
        if self.labels is not None and self.labels.shape != (len(self.uids),):
            raise ConfigError(
                f"labels must have shape ({len(self.uids)},), got {tuple(self.labels.shape)}.",
                "pass one 0/1 label per row of acts, or labels=None.",
            )

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(parse_hook_name(h)[1] for h in self.hook_names)

    def at(self, hook: str) -> Float[Tensor, "n d"]:
        """Activations at one hook (full name)."""
        if hook not in self.hook_names:
            raise ConfigError(
                f"{hook!r} was not extracted; available: {', '.join(self.hook_names)}.",
                "pass one of the available hook names, or extract that hook too (hooks=...).",
            )
        return self.acts[:, self.hook_names.index(hook)]

    def of_kind(self, kind: str) -> Activations:
        """The hooks of one kind (``"resid_post"``, ``"mlp_out"``...), in layer order: e.g. one
        probe sweep or PCA grid per kind from a pass that extracted several."""
        keep = [i for i, h in enumerate(self.hook_names) if parse_hook_name(h)[0] == kind]
        if not keep:
            kinds = sorted({parse_hook_name(h)[0] for h in self.hook_names})
            raise ConfigError(
                f"no {kind!r} hooks were extracted.", f"extracted kinds: {', '.join(kinds)}."
            )
        keep.sort(key=lambda i: parse_hook_name(self.hook_names[i])[1])
        return Activations(
            self.acts[:, keep],
            tuple(self.hook_names[i] for i in keep),
            self.uids,
            self.labels,
            self.position,
            dict(self.meta),
        )

    def with_labels(
        self, labels: Int[Tensor, " n"], keep: Sequence[int] | None = None
    ) -> Activations:
        """A copy restricted to rows ``keep`` (all if None) carrying ``labels`` (for the kept rows)."""
        idx = torch.as_tensor(
            list(range(len(self.uids))) if keep is None else list(keep), dtype=torch.long
        )
        return Activations(
            self.acts[idx],
            self.hook_names,
            tuple(self.uids[i] for i in idx.tolist()),
            torch.as_tensor(labels, dtype=torch.long),
            self.position,
            dict(self.meta),
        )

    def save(self, path: str | Path) -> Path:
        tensors = {"acts": self.acts}
        if self.labels is not None:
            tensors["labels"] = self.labels
        meta = {
            "hook_names": list(self.hook_names),
            "uids": list(self.uids),
            "position": self.position,
            **self.meta,
        }
        return save_artifact(path, "activations", tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> Activations:
        tensors, meta = load_artifact(path, "activations")
        extra = {
            k: v
            for k, v in meta.items()
            if k not in {"hook_names", "uids", "position", "kind", "fairlens_version"}
        }
        return cls(
            tensors["acts"],
            tuple(meta["hook_names"]),
            tuple(meta["uids"]),
            tensors.get("labels"),
            meta["position"],
            extra,
        )


class _StopForward(Exception):
    """Raised by the last needed hook of a plain HF model to skip the remaining layers."""


@contextmanager
def _capturing(
    model: Model,
    names: Sequence[str],
    capture: Callable[[str], Callable[[Tensor], Tensor]],
    stop: int,
) -> Iterator[None]:
    """Capture hooks for ``names``; on HF models also a hook that stops after layer ``stop - 1``."""
    hooks = [(name, capture(name)) for name in names]
    if not is_hooked(model):  # TL stops by itself (stop_at_layer)

        def halt(act: Tensor) -> Tensor:
            raise _StopForward

        hooks.append((hook_name("resid_post", stop - 1), halt))
    with add_hooks(model, hooks):
        yield


def _forward_until(model: Model, batch: Batch, stop: int) -> None:
    """Run the model up to (and including) layer ``stop - 1``; skip the unembedding."""
    check_context(model, batch)
    if is_hooked(model):
        model(batch.input_ids, attention_mask=batch.attention_mask, stop_at_layer=stop)
        return
    with suppress(_StopForward):
        decoder_of(model)(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        )


def extract_activations(
    model: Model,
    sequences: Sequence[Sequence[int]],
    *,
    hooks: str | Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    read_index: Sequence[int] | None = None,
    uids: Sequence[str] | None = None,
    batch_size: int = 16,
    padding_side: PaddingSide = "left",
    position: str = "last",
    progress: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Activations:
    """Read activations at one position per sequence, for a TL or a plain HF model.

    On a ``HookedTransformer`` any hook point works; on a plain transformers model of any registered family (the lean,
    fast path) ``resid_pre``, ``resid_post``, ``attn_out`` and ``mlp_out`` do, and the forward pass
    is cut after the last needed layer by raising from a hook. Both read the same numbers.

    Args:
        model: A ``HookedTransformer`` or a plain HF causal LM.
        sequences: Token ids per input (BOS included if the tokenizer adds one).
        hooks: Hook kind(s) (``"resid_post"``...) applied to ``layers``, or full hook names.
        layers: Layers for hook kinds (default: all).
        read_index: Per sequence, the token index (into the unpadded sequence) to read; default the
            last token. Negative values count from the end.
        uids: Row ids (default ``row{i}``).
        batch_size: Sequences per forward pass.
        padding_side: Padding side (results do not depend on it).
        position: A label describing ``read_index`` for the artifact.
        progress: Show a progress bar.
        dtype: Storage dtype (float32 default; float16 halves memory for large runs).
    """
    if len(sequences) == 0:
        raise ConfigError(
            "No sequences to extract activations from.", "pass at least one token sequence."
        )
    names = resolve_hooks(model, hooks, layers)
    stop = max(parse_hook_name(n)[1] for n in names) + 1
    lengths = [len(s) for s in sequences]
    if read_index is None:
        read = [n - 1 for n in lengths]
    else:
        if len(read_index) != len(sequences):
            raise ConfigError(
                f"read_index has {len(read_index)} entries for {len(sequences)} sequences.",
                "pass one read_index per sequence, or read_index=None (the last token).",
            )
        read = [i if i >= 0 else n + i for i, n in zip(read_index, lengths, strict=True)]
        bad = [k for k, (i, n) in enumerate(zip(read, lengths, strict=True)) if not 0 <= i < n]
        if bad:
            raise ConfigError(
                f"read_index out of range for sequence {bad[0]} (length {lengths[bad[0]]}).",
                "keep each read_index within its sequence (negative values count from the end).",
            )
    device = model_device(model)
    store: dict[str, Tensor] = {}
    state = {"rows": torch.empty(0, dtype=torch.long)}

    def capture(name: str) -> Callable[[Tensor], Tensor]:
        def fn(act: Tensor) -> Tensor:
            rows = torch.arange(act.shape[0], device=act.device)
            picked = act[rows, state["rows"].to(act.device)]
            store[name] = picked.reshape(act.shape[0], -1).to("cpu", dtype)
            return act

        return fn

    out: Tensor | None = None
    chunks = list(length_sorted_chunks(lengths, batch_size))
    tokenizer = getattr(model, "tokenizer", None)
    with _capturing(model, names, capture, stop), torch.no_grad(), shared(chunks) as mine:
        for rows in tqdm(
            mine, desc="extracting activations", disable=not show(progress), unit="batch"
        ):
            batch = pad_sequences(
                [sequences[r] for r in rows],
                pad_token_id=pad_id(tokenizer),
                padding_side=padding_side,
            ).to(device)
            offset = (
                batch.input_ids.shape[1] - batch.lengths
                if padding_side == "left"
                else torch.zeros_like(batch.lengths)
            )
            state["rows"] = torch.as_tensor([read[r] for r in rows], device=device) + offset
            _forward_until(model, batch, stop)
            stacked = torch.stack([store[n] for n in names], dim=1)
            if out is None:
                out = torch.empty((len(sequences), len(names), stacked.shape[-1]), dtype=dtype)
            out[torch.as_tensor(rows)] = stacked
    if world().active:  # a process that ran no batch takes the width from the others
        widths = [w for w in agree(None if out is None else out.shape[-1]) if w is not None]
        if out is None and widths:
            out = torch.empty((len(sequences), len(names), widths[0]), dtype=dtype)
        if out is not None:
            merge_rows(out, chunks)
    if out is None:
        raise RuntimeError(
            "extract_activations: no process produced rows (a bug: empty input is refused above)."
        )
    ids = tuple(uids) if uids is not None else tuple(f"row{i}" for i in range(len(sequences)))
    return Activations(out, tuple(names), ids, None, position, {"padding_side": padding_side})
