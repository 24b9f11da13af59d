"""All hook-point names in one place: construction, validation and nearest-match suggestions.

fairlens speaks TransformerLens hook names (``blocks.{layer}.hook_resid_post`` ...). Every public
function that takes a hook accepts either a full name or a short kind plus a layer, and goes through
:func:`hook_name`, so a typo gets a :class:`~fairlens.errors.HookPointError` that lists the close
valid names instead of a bare ``KeyError``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Literal

from fairlens.errors import HookPointError
from fairlens.model_types import Model

HookKind = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z"]
HOOK_KINDS: dict[str, str] = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "z": "blocks.{layer}.attn.hook_z",
}
DEFAULT_HOOK_KIND = "resid_post"


def hook_name(kind: str, layer: int, *, n_layers: int | None = None) -> str:
    """Full TL hook name for a kind (``"resid_post"``...) and layer, validated."""
    if kind not in HOOK_KINDS:
        close = difflib.get_close_matches(kind, list(HOOK_KINDS), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise HookPointError(
            f"Unknown hook kind {kind!r}.{hint} Valid kinds: {', '.join(HOOK_KINDS)}.",
            "Pick one of the listed kinds.",
        )
    if n_layers is not None and not 0 <= layer < n_layers:
        raise HookPointError(
            f"Layer {layer} is out of range for a model with {n_layers} layers (valid: 0..{n_layers - 1}).",
            "Pass a layer index in range.",
        )
    return HOOK_KINDS[kind].format(layer=layer)


def parse_hook_name(name: str) -> tuple[str, int]:
    """``"blocks.3.hook_resid_post"`` -> ``("resid_post", 3)``; unknown shapes raise."""
    for kind, pattern in HOOK_KINDS.items():
        prefix, suffix = pattern.split("{layer}")
        if name.startswith(prefix) and name.endswith(suffix):
            middle = name[len(prefix) : len(name) - len(suffix)]
            if middle.isdigit():
                return kind, int(middle)
    raise HookPointError(
        f"{name!r} is not a per-layer hook fairlens knows "
        f"(expected e.g. 'blocks.3.hook_resid_post').",
        "Use fairlens.backend.hook_name(kind, layer) to build it.",
    )


def validate_hook(model: Model, name: str) -> str:
    """Check ``name`` exists on a ``HookedTransformer``; suggest close names if not."""
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is None:
        return name
    if name not in hook_dict:
        close = difflib.get_close_matches(name, list(hook_dict), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise HookPointError(
            f"Hook point {name!r} does not exist on this model ({n_layers_of(model)} layers).{hint}",
            "List valid names with `list(model.hook_dict)`.",
        )
    return name


def resolve_hooks(
    model: Model, hooks: str | Sequence[str] | None, layers: Sequence[int] | None
) -> list[str]:
    """Hook names from full names, or from a kind applied to ``layers`` (default: all layers)."""
    n_layers = n_layers_of(model)
    if hooks is None:
        hooks = DEFAULT_HOOK_KIND
    if isinstance(hooks, str):
        hooks = [hooks]
    names: list[str] = []
    for hook in hooks:
        if hook in HOOK_KINDS or "." not in hook:  # a kind (possibly misspelt)
            for layer in range(n_layers) if layers is None else layers:
                names.append(hook_name(hook, layer, n_layers=n_layers))
        else:
            names.append(validate_hook(model, hook))
    return names


def n_layers_of(model: Model) -> int:
    """Number of blocks of a ``HookedTransformer`` or a plain HF decoder."""
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "n_layers"):
        return int(cfg.n_layers)
    from fairlens.models.families import family_of

    return len(family_of(model).blocks(model))
