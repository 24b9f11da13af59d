"""Fairness directions per layer: the debiasing steering vector (DSV) and its comparisons.

* :func:`compute_dsv` — FairSteer's DSV: ``v_l = mean(a+) - mean(a-)`` over contrastive pairs
  (the same ambiguous prompt with the "unknown" letter vs the bias-target letter appended), read at
  the appended answer-letter token (the reference code's choice), unnormalised.
* :func:`mean_difference` — the same estimator on labelled activations (``y=1`` minus ``y=0``). At the
  prompt's final ``:`` token the two halves of a contrastive pair are *identical* in a causal LM
  (same prefix), so the ``"colon"`` DSV is defined as this class-mean difference of the BAD
  activations there (:func:`dsv_at_colon`).
* :func:`pca_direction` and the probe weights (``SweepResult.coef``) for comparison, and
  :func:`cosine` between any two.
* :func:`project_out` — erase a direction from activations (the panel's ``ablation`` method and
  :func:`fairlens.analysis.ablation.directional_ablation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from fairlens.activations.extraction import Activations, extract_activations
from fairlens.backend import encode, resolve_tokenizer
from fairlens.data import ContrastivePair
from fairlens.errors import ConfigError
from fairlens.model_types import Model, Tokenizer

DSVPosition = Literal["answer", "colon"]


@dataclass(frozen=True)
class Directions:
    """One direction per hook point.

    Attributes:
        vectors: ``[hook, d]`` (unnormalised for mean-difference methods).
        hook_names: Hook of each row.
        method: ``"dsv"``, ``"mean_difference"``, ``"pca"`` or ``"probe"``.
        position: Where the activations were read.
        n_pos, n_neg: Examples behind each mean (pairs count twice for a DSV).
    """

    vectors: Float[Tensor, "hook d"]
    hook_names: tuple[str, ...]
    method: str
    position: str
    n_pos: int
    n_neg: int

    def at(self, hook: str) -> Float[Tensor, " d"]:
        if hook not in self.hook_names:
            raise ConfigError(
                f"No direction for {hook!r}; available: {', '.join(self.hook_names)}.",
                "pass one of the available hook names, or compute the direction at that hook too.",
            )
        return self.vectors[self.hook_names.index(hook)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "hook_names": list(self.hook_names),
            "method": self.method,
            "position": self.position,
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
            "norms": [round(float(x), 6) for x in self.vectors.norm(dim=-1)],
        }


def compute_dsv(
    model: Model,
    pairs: Sequence[ContrastivePair],
    *,
    hooks: str | Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    progress: bool = False,
    tokenizer: Tokenizer | None = None,
) -> Directions:
    """FairSteer's DSV per hook, read at the appended answer-letter token.

    The prompt and the appended ``" X"`` are tokenised separately and concatenated, so the read
    position is exactly the letter token whatever the tokenizer merges.
    """
    if len(pairs) == 0:
        raise ConfigError("No contrastive pairs.", "Pass ambiguous BBQ items with a bias target.")
    tok = resolve_tokenizer(model, tokenizer)  # a plain transformers model needs ``tokenizer``
    prompts = encode(tok, [p.prompt for p in pairs])
    seqs: list[list[int]] = []
    for ids, pair in zip(prompts, pairs, strict=True):
        for text in (pair.unbiased, pair.biased):
            suffix = text[len(pair.prompt) :]
            answer = tok.encode(suffix, add_special_tokens=False)
            if len(answer) != 1:  # e.g. SentencePiece's lone "▁" before the letter
                raise ConfigError(
                    f"the appended answer {suffix!r} is {len(answer)} tokens ({answer}) with this "
                    "tokenizer, so the DSV would not be read at the answer letter.",
                    "use a tokenizer that encodes ' A', ' B' and ' C' as one token each.",
                )
            seqs.append(ids + answer)
    extracted = extract_activations(
        model,
        seqs,
        hooks=hooks,
        layers=layers,
        batch_size=batch_size,
        progress=progress,
        position="answer_letter",
    )
    pos, neg = extracted.acts[0::2], extracted.acts[1::2]
    return Directions(
        pos.mean(0) - neg.mean(0),
        extracted.hook_names,
        "dsv",
        "answer",
        len(pairs),
        len(pairs),
    )


def mean_difference(acts: Activations, method: str = "mean_difference") -> Directions:
    """``mean(acts | y=1) - mean(acts | y=0)`` per hook (needs labelled activations)."""
    if acts.labels is None:
        raise ConfigError(
            "mean_difference needs labelled activations.", "Use Activations.with_labels."
        )
    y = acts.labels
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(
            f"Need both classes; got {n_pos} unbiased and {n_neg} biased rows.",
            "label rows of both classes (1 unbiased, 0 biased), e.g. with more items.",
        )
    vec = acts.acts[y == 1].mean(0) - acts.acts[y == 0].mean(0)
    return Directions(vec, acts.hook_names, method, acts.position, n_pos, n_neg)


def dsv_at_colon(acts: Activations) -> Directions:
    """The ``"colon"`` DSV: class-mean difference of BAD activations at the final ``:`` token."""
    out = mean_difference(acts, method="dsv")
    return Directions(out.vectors, out.hook_names, "dsv", "colon", out.n_pos, out.n_neg)


def pca_direction(acts: Activations) -> Directions:
    """First principal component per hook, signed to point from biased to unbiased rows."""
    if acts.labels is None:
        raise ConfigError(
            "pca_direction needs labelled activations (to fix the sign).",
            "pass acts.with_labels(labels).",
        )
    y = acts.labels
    vecs = []
    for h in range(acts.acts.shape[1]):
        x = acts.acts[:, h].double()
        x = x - x.mean(0)
        _, _, vh = torch.linalg.svd(x, full_matrices=False)
        v = vh[0]
        proj = x @ v
        if proj[y == 1].mean() < proj[y == 0].mean():
            v = -v
        vecs.append(v.float())
    return Directions(
        torch.stack(vecs),
        acts.hook_names,
        "pca",
        acts.position,
        int((y == 1).sum()),
        int((y == 0).sum()),
    )


def cosine(a: Float[Tensor, "... d"], b: Float[Tensor, "... d"]) -> Float[Tensor, "..."]:
    """Cosine similarity along the last axis (0 where a vector is zero)."""
    num = (a * b).sum(-1)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))


def project_out(
    direction: Float[Tensor, " d"], *, where: str = "the hook point"
) -> Callable[[Float[Tensor, "... d"]], Float[Tensor, "... d"]]:
    """``fn(act) -> act - (act . u) u`` with ``u = direction / |direction|``.

    The orthogonal-projection eraser (LEACE for one direction under isotropic covariance); ``where``
    names the hook point in the error raised when the activation width differs from the direction's.

    Raises:
        ConfigError: ``direction`` is zero or not finite; later, an activation of another width.
    """
    u = torch.as_tensor(direction, dtype=torch.float32).flatten()
    norm = float(u.norm())
    if not 0.0 < norm < float("inf"):  # also refuses NaN
        raise ConfigError(
            "the ablation direction is zero or not finite.", "pass a finite, non-zero direction."
        )
    u = u / norm

    def fn(act: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
        if act.shape[-1] != u.shape[0]:
            raise ConfigError(
                f"direction has {u.shape[0]} dims but {where} has {act.shape[-1]}.",
                "Use a direction computed at this hook point.",
            )
        v = u.to(act.device, act.dtype)
        return act - (act @ v)[..., None] * v

    return fn
