"""Ablations at any hook point, attention head or MLP, and their effect on BBQ bias and accuracy.

Three ways to remove information, each a context manager that adds exactly its own hooks (through
:func:`fairlens.backend.add_hooks`) and removes exactly those on exit, also on exceptions:

* :func:`directional_ablation` — project a direction out: ``a <- a - (a . u) u`` with ``u`` the
  unit DSV (or probe direction). If bias is carried linearly along ``u``, this removes it;
* :func:`mean_ablation` — replace the activation (or one head's ``z``) by its dataset mean;
* :func:`zero_ablation` — replace it by zero.

:func:`ablation_effect` scores BBQ items under each ablation and reports accuracy and bias-score
changes against the unablated model; :func:`fairlens.plots.explore_ablation` is the one-call notebook helper.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from fairlens.backend import (
    add_hooks,
    hook_name,
    is_hooked,
    length_sorted_chunks,
    model_device,
    pad_id,
    pad_sequences,
    parse_hook_name,
    resolve_tokenizer,
    validate_hook,
)
from fairlens.data import BBQItem, PromptFormat
from fairlens.directions import project_out
from fairlens.errors import ConfigError, HookPointError
from fairlens.model_types import Model
from fairlens.scoring.letters import ScoringMode, score_items
from fairlens.scoring.metrics import bbq_metrics

__all__ = [
    "AblationEffect",
    "AblationRow",
    "ablate",
    "ablation_effect",
    "ablation_row",
    "directional_ablation",
    "mean_ablation",
    "mean_activation",
    "zero_ablation",
]

AblationMethod = Literal["directional", "mean", "zero"]


def _resolve(model: Model, hook: str, head: int | None) -> str:
    """Validated full hook name; a head needs ``hook_z`` (kind ``"z"``)."""
    if "." not in hook:
        raise HookPointError(
            f"{hook!r} is a hook kind, not a hook name.",
            f"Pass a full name, e.g. {hook_name(hook, 0)!r}.",
        )
    name = validate_hook(model, hook)
    if head is not None:
        kind, _ = parse_hook_name(name)
        if kind != "z":
            raise HookPointError(
                f"Head ablation needs an attention hook_z point; received {name!r}.",
                "Use blocks.{layer}.attn.hook_z with head=...",
            )
        n_heads = int(model.cfg.n_heads) if is_hooked(model) else 0  # hook_z exists only in TL
        if not 0 <= head < n_heads:
            raise HookPointError(
                f"Head {head} out of range (0..{n_heads - 1}).",
                f"pass head within 0..{n_heads - 1}.",
            )
    return name


@contextmanager
def directional_ablation(
    model: Model, hook: str, direction: Float[Tensor, " d_model"]
) -> Iterator[None]:
    """Project ``direction`` out of ``hook``'s activation at every position.

    Args:
        model: A ``HookedTransformer``.
        hook: Full hook name of a residual-width point (e.g. ``blocks.5.hook_resid_post``).
        direction: ``[d_model]`` direction (normalised here; its scale does not matter).
    """
    name = _resolve(model, hook, None)
    project = project_out(direction, where=name)

    with add_hooks(model, [(name, project)]):
        yield


def _replace(model: Model, hook: str, head: int | None, value: Callable[[Tensor], Tensor]) -> Any:
    name = _resolve(model, hook, head)

    def fn(act: Tensor) -> Tensor:
        out = act.clone()
        if head is None:
            out[...] = value(act)
        else:
            out[..., head, :] = value(act[..., head, :])
        return out

    return add_hooks(model, [(name, fn)])


@contextmanager
def zero_ablation(model: Model, hook: str, *, head: int | None = None) -> Iterator[None]:
    """Set ``hook``'s activation (or one head's ``z``) to zero at every position."""
    with _replace(model, hook, head, torch.zeros_like):
        yield


@contextmanager
def mean_ablation(
    model: Model, hook: str, mean: Float[Tensor, "..."], *, head: int | None = None
) -> Iterator[None]:
    """Replace ``hook``'s activation (or one head's ``z``) by ``mean`` at every position.

    Args:
        model: A ``HookedTransformer``.
        hook: Full hook name.
        mean: The replacement, broadcastable to one position (``[d]``, or ``[n_heads, d_head]``
            / ``[d_head]`` for ``hook_z``); see :func:`mean_activation`.
        head: Only this head (``hook_z`` only).
    """
    m = torch.as_tensor(mean, dtype=torch.float32)
    if head is not None and m.ndim == 2:
        m = m[head]
    with _replace(model, hook, head, lambda a: m.to(a.device, a.dtype).expand_as(a)):
        yield


def mean_activation(
    model: Model, sequences: Sequence[Sequence[int]], hook: str, *, batch_size: int = 16
) -> Tensor:
    """Mean of ``hook``'s activation over every real (non-pad) token of ``sequences``.

    Returns ``[d]`` (``[n_heads, d_head]`` for ``hook_z``), the reference for :func:`mean_ablation`.
    """
    name = _resolve(model, hook, None)
    if not sequences:
        raise ConfigError(
            "mean_activation needs at least one sequence.", "pass at least one token sequence."
        )
    total: Tensor | None = None
    count = 0
    mask = torch.empty(0)

    def capture(act: Tensor) -> None:
        nonlocal total, count
        m = mask.to(act.device, act.dtype).reshape(*mask.shape, *([1] * (act.ndim - 2)))
        s = (act * m).sum((0, 1)).double().cpu()
        total = s if total is None else total + s
        count += int(mask.sum())

    stop = parse_hook_name(name)[1] + 1
    with add_hooks(model, [(name, capture)]), torch.no_grad():
        for rows in length_sorted_chunks([len(s) for s in sequences], batch_size):
            batch = pad_sequences(
                [sequences[r] for r in rows], pad_token_id=pad_id(resolve_tokenizer(model))
            ).to(model_device(model))
            mask = batch.attention_mask
            model(batch.input_ids, attention_mask=batch.attention_mask, stop_at_layer=stop)
    assert total is not None
    return (total / max(count, 1)).float()


def ablate(
    model: Model,
    hook: str,
    method: AblationMethod,
    *,
    direction: Tensor | None = None,
    mean: Tensor | None = None,
    head: int | None = None,
) -> AbstractContextManager[None]:
    """One entry point for the three ablations (what the notebook helper and the CLI call)."""
    if method == "directional":
        if direction is None or head is not None:
            raise ConfigError(
                "directional ablation needs a direction and acts on whole hooks, not heads.",
                "pass direction=... and head=None; for one head use method='mean' or 'zero'.",
            )
        return directional_ablation(model, hook, direction)
    if method == "mean":
        if mean is None:
            raise ConfigError(
                "mean ablation needs a reference mean.",
                "pass mean=mean_activation(model, sequences, hook).",
            )
        return mean_ablation(model, hook, mean, head=head)
    if method == "zero":
        return zero_ablation(model, hook, head=head)
    raise ConfigError(f"Unknown ablation {method!r}.", "use one of: 'directional', 'mean', 'zero'.")


@dataclass(frozen=True)
class AblationRow:
    """Pooled BBQ metrics under one ablation (``name == "none"`` for the unablated model)."""

    name: str
    acc_ambig: float
    acc_disambig: float
    s_amb: float
    s_dis: float

    def to_dict(self) -> dict[str, Any]:
        return {
            k: getattr(self, k) for k in ("name", "acc_ambig", "acc_disambig", "s_amb", "s_dis")
        }


@dataclass(frozen=True)
class AblationEffect:
    """Unablated baseline plus one row per ablation, on the same items."""

    base: AblationRow
    rows: tuple[AblationRow, ...]
    n_items: int

    def deltas(self) -> dict[str, dict[str, float]]:
        """Per ablation, the change of each metric against the baseline."""
        keys = ("acc_ambig", "acc_disambig", "s_amb", "s_dis")
        return {r.name: {k: getattr(r, k) - getattr(self.base, k) for k in keys} for r in self.rows}

    def table(self) -> str:
        """Fixed-width text table (accuracies in %, bias scores x100, deltas in brackets)."""
        head = f"{'ablation':<34} {'acc_amb':>14} {'acc_dis':>14} {'s_AMB':>14} {'s_DIS':>14}"
        lines = [head, "-" * len(head)]
        for r in (self.base, *self.rows):
            cells = []
            for k, scale in (("acc_ambig", 100), ("acc_disambig", 100), ("s_amb", 1), ("s_dis", 1)):
                v, d = getattr(r, k) * scale, (getattr(r, k) - getattr(self.base, k)) * scale
                cells.append(f"{v:6.1f} ({d:+6.1f})" if r is not self.base else f"{v:14.1f}")
            lines.append(f"{r.name:<34} " + " ".join(f"{c:>14}" for c in cells))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base.to_dict(),
            "rows": [r.to_dict() for r in self.rows],
            "n_items": self.n_items,
        }


def ablation_row(name: str, items: Sequence[BBQItem], preds: Any) -> AblationRow:
    """Pooled BBQ metrics of ``preds`` (answer indices) on ``items``, as one table row."""
    p = bbq_metrics(items, preds).pooled

    def f(x: float | None) -> float:
        return float("nan") if x is None else float(x)

    return AblationRow(name, f(p.acc_ambig), f(p.acc_disambig), f(p.s_amb), f(p.s_dis))


def ablation_effect(
    model: Model,
    items: Sequence[BBQItem],
    ablations: Mapping[str, Callable[[], AbstractContextManager[Any]]],
    *,
    scoring: ScoringMode = "letter",
    prompt_format: PromptFormat = "zero_shot",
    batch_size: int = 16,
    progress: bool = False,
) -> AblationEffect:
    """Score ``items`` unablated and under each ablation.

    Args:
        model: A ``HookedTransformer``.
        items: BBQ items.
        ablations: Name -> zero-argument factory returning a fresh context manager, e.g.
            ``{"DSV out @ L5": lambda: directional_ablation(model, hook, v)}``.
        scoring: ``"letter"`` or ``"loglik"``.
        prompt_format: Prompt format.
        batch_size: Items per forward pass.
        progress: Show a progress bar over ablations.
    """

    def run() -> Any:
        kw = {"mode": scoring, "prompt_format": prompt_format, "batch_size": batch_size}
        return score_items(model, items, **kw).predictions  # type: ignore[arg-type]

    base = ablation_row("none", items, run())
    rows = []
    for name, factory in tqdm(ablations.items(), desc="ablations", disable=not progress):
        with factory():
            rows.append(ablation_row(name, items, run()))
    return AblationEffect(base, tuple(rows), len(items))
