"""Token-level view: where in one prompt does the activation lean biased?

FairSteer probes and steers one position (the prompt's final ``:``, or each generated token). For a
single prompt, :func:`token_view` reads the activation of *every* token at the steering hook and
reports its projection on the steering vector (DSV) and the gate's ``P(unbiased)``, so a
highlighted-text figure shows which words move the representation toward the biased side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fairlens.backend import add_hooks, model_device, resolve_tokenizer
from fairlens.data import BBQItem, PromptFormat, format_prompt
from fairlens.errors import ConfigError
from fairlens.model_types import Model
from fairlens.steer.steerer import Steerer

__all__ = ["TokenView", "token_view"]


@dataclass(frozen=True)
class TokenView:
    """Per-token projection on the steering vector and gate probability for one prompt.

    Attributes:
        tokens: Decoded token strings, in order.
        projection: ``[pos]`` ``a . v / |v|`` at the steering hook (activation units).
        p_unbiased: ``[pos]`` the gate's ``P(unbiased | a)``.
        hook_name: Where the activations were read.
        tau: The gate threshold (tokens with ``p_unbiased < tau`` would be steered).
        text: The prompt text.
        uid: BBQ item uid, when the prompt came from an item.
    """

    tokens: tuple[str, ...]
    projection: np.ndarray
    p_unbiased: np.ndarray
    hook_name: str
    tau: float
    text: str
    uid: str | None = None

    @property
    def gated(self) -> np.ndarray:
        """``[pos]`` bool: positions where dynamic steering would add the vector."""
        return self.p_unbiased < self.tau

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": list(self.tokens),
            "projection": self.projection.round(6).tolist(),
            "p_unbiased": self.p_unbiased.round(6).tolist(),
            "hook_name": self.hook_name,
            "tau": self.tau,
            "uid": self.uid,
        }


def token_view(
    model: Model,
    prompt: str | BBQItem,
    steerer: Steerer,
    *,
    prompt_format: PromptFormat = "zero_shot",
) -> TokenView:
    """Read every token's activation at ``steerer.hook_name`` for one prompt (no steering applied).

    Args:
        model: A ``HookedTransformer``.
        prompt: Raw text, or a BBQ item (formatted with ``prompt_format``).
        steerer: Supplies the hook, the vector (projection direction) and the gate (probe).
        prompt_format: Used when ``prompt`` is an item.
    """
    tok = resolve_tokenizer(model)
    uid = None
    if isinstance(prompt, BBQItem):
        uid = prompt.uid
        text = format_prompt(prompt, prompt_format, tokenizer=tok)
    else:
        text = prompt
    ids = tok(text, add_special_tokens=True)["input_ids"]
    if not ids:
        raise ConfigError("The prompt tokenises to nothing.", "Pass a non-empty prompt.")
    store: dict[str, Tensor] = {}

    def capture(act: Tensor) -> None:
        store["a"] = act[0].detach().float().cpu()

    tokens = torch.tensor([ids], device=model_device(model))
    with add_hooks(model, [(steerer.hook_name, capture)]), torch.no_grad():
        model(tokens)
    acts = store["a"]
    v = steerer.vector.float().cpu()
    proj = acts @ (v / v.norm().clamp_min(1e-30))
    p = steerer.p_unbiased(acts)
    return TokenView(
        tuple(str(tok.decode([i])) for i in ids),
        proj.numpy().astype(np.float64),
        p.detach().cpu().numpy().astype(np.float64),
        steerer.hook_name,
        float(steerer.config.tau),
        text,
        uid,
    )
