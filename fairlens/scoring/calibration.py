"""Letter-prior calibration: the baseline that removes the model's preference for answer letters.

A model that answers "A" more often than the data warrants (SmolLM2 answers "A" to every BBQ
question) is biased towards a *position*, not a group. The calibration baseline estimates that
preference as each letter's mean logit over a calibration split scored by the unsteered model and
subtracts it before taking the best letter (the mean-logit form of contextual calibration, Zhao et
al., 2021). It changes no activation, so it is a pure output-side correction; its prior is fitted
on a split disjoint from the one it is scored on (for BBQ: the selection split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from fairlens.errors import ConfigError

__all__ = ["LetterPrior"]


@dataclass(frozen=True)
class LetterPrior:
    """Each answer letter's mean logit over a calibration split.

    Attributes:
        mean: ``[k]`` mean logit of letter ``j`` over the calibration rows that offer letter ``j``.
        counts: ``[k]`` how many rows each mean is over.
    """

    mean: Float[Tensor, " k"]
    counts: tuple[int, ...]

    @classmethod
    def fit(
        cls, logits: Float[Tensor, "n k"], n_options: Sequence[int] | None = None
    ) -> LetterPrior:
        """The prior of letter logits ``[n, k]``; ``n_options[i]`` letters offered by row ``i``
        (default all ``k``): a letter's mean is taken over the rows that offer it."""
        if logits.ndim != 2 or logits.shape[0] == 0:
            raise ConfigError(
                f"letter calibration needs [n >= 1, k] logits; got {tuple(logits.shape)}.",
                "pass a 2-D [n, k] tensor of letter logits with at least one row.",
            )
        x = logits.detach().double().cpu()
        if not bool(torch.isfinite(x).all()):
            raise ConfigError(
                "letter calibration: the calibration logits are not finite.",
                "drop the rows with NaN or infinite logits before fitting.",
            )
        n, k = x.shape
        offers = (
            torch.ones(n, k, dtype=torch.bool)
            if n_options is None
            else torch.arange(k)[None, :] < torch.as_tensor(list(n_options))[:, None]
        )
        counts = offers.sum(0)
        if bool((counts == 0).any()):
            raise ConfigError(
                f"letter calibration: letters {torch.nonzero(counts == 0).flatten().tolist()} are "
                "offered by no calibration row.",
                "use a calibration split with as many options as the scored one.",
            )
        mean = (x * offers).sum(0) / counts
        return cls(mean.float(), tuple(int(c) for c in counts))

    def apply(self, logits: Float[Tensor, "n k"]) -> Float[Tensor, "n k"]:
        """``logits`` minus the prior (columns beyond the prior's letters are refused)."""
        if logits.shape[-1] > self.mean.shape[0]:
            raise ConfigError(
                f"the letter prior covers {self.mean.shape[0]} letters; the logits have "
                f"{logits.shape[-1]}.",
                "fit the prior on questions with as many options.",
            )
        k = logits.shape[-1]
        return logits.float() - self.mean[:k].to(logits.device)

    def to_dict(self) -> dict[str, object]:
        return {"mean_logit": [round(float(v), 4) for v in self.mean], "n": list(self.counts)}
