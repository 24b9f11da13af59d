"""All hook-point names in one place: construction, validation and nearest-match suggestions.

fairlens speaks TransformerLens hook names (``blocks.{layer}.hook_resid_post`` ...). Every public
function that takes a hook accepts either a full name or a short kind plus a layer, and goes through
:func:`hook_name`, so a typo gets a :class:`~fairlens.errors.HookPointError` that lists the close
valid names instead of a bare ``KeyError``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from fairlens.errors import HookPointError

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
        "Use fairlens.hooks.hook_name(kind, layer) to build it.",
    )


def validate_hook(model: Any, name: str) -> str:
    """Check ``name`` exists on a ``HookedTransformer``; suggest close names if not."""
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is None:
        return name
    if name not in hook_dict:
        close = difflib.get_close_matches(name, list(hook_dict), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise HookPointError(
            f"Hook point {name!r} does not exist on this model ({model.cfg.n_layers} layers).{hint}",
            "List valid names with `list(model.hook_dict)`.",
        )
    return name


def resolve_hooks(
    model: Any, hooks: str | Sequence[str] | None, layers: Sequence[int] | None
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


def n_layers_of(model: Any) -> int:
    """Number of blocks of a ``HookedTransformer`` or a plain HF decoder."""
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "n_layers"):
        return int(cfg.n_layers)
    return int(model.config.num_hidden_layers)


def count_hooks(model: Any) -> int:
    """Number of hooks added to ``model``: TL hook points, or every module of a plain transformers model.

    On a transformers model the library's own output-capturing hooks (installed once, the first
    time ``output_hidden_states`` or ``output_attentions`` is asked for, and kept) are not counted:
    they are not ours to remove.
    """
    if hasattr(model, "hook_dict"):
        total = 0
        for point in model.hook_dict.values():
            # torch-level registries: TL's own ``add_hook`` registers here too, so nothing is missed.
            total += len(point._forward_hooks) + len(point._backward_hooks)
        return total
    total = 0
    for module in model.modules():
        for registry in (module._forward_hooks, module._forward_pre_hooks):
            total += sum(
                "output_capturing_hook" not in getattr(fn, "__qualname__", "")
                for fn in registry.values()
            )
    return total


@contextmanager
def temporary_hooks(model: Any, fwd_hooks: Sequence[tuple[str, Any]]) -> Iterator[None]:
    """Add forward hooks to TL hook points and remove exactly those on exit (also on exceptions).

    Unlike ``model.hooks()`` / ``reset_hooks()``, this never touches hooks the user added.
    """
    handles = []
    try:
        for name, fn in fwd_hooks:
            point = model.hook_dict[validate_hook(model, name)]
            handles.append(point.register_forward_hook(_adapt(fn, name)))
        yield
    finally:
        for handle in reversed(handles):
            handle.remove()


def _adapt(fn: Any, name: str) -> Any:
    """Wrap a TL-style ``fn(activation, hook)`` as a torch forward hook on a HookPoint."""

    class _HookInfo:
        def __init__(self, hook_name: str) -> None:
            self.name = hook_name

    info = _HookInfo(name)

    def torch_hook(module: Any, inputs: Any, output: Any) -> Any:
        return fn(output, hook=info)

    return torch_hook


def _hf_layers(model: Any) -> Any:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise HookPointError(
            "This Hugging Face model has no `.model.layers` (not a Llama-family decoder).",
            "Use a Llama/Mistral/Qwen2 model, or the TransformerLens path.",
        )
    return layers


@contextmanager
def temporary_hf_hook(model: Any, name: str, fn: Any) -> Iterator[None]:
    """The fast path's counterpart of :func:`temporary_hooks` for a plain HF decoder.

    Maps a TL hook name onto the HF module boundary that carries the same tensor:
    ``resid_post`` = decoder layer output, ``resid_pre`` = decoder layer input, ``attn_out`` =
    ``self_attn`` output, ``mlp_out`` = ``mlp`` output. ``fn(activation) -> activation`` is applied
    there. Exactly one torch hook is added and removed on exit.
    """
    kind, layer = parse_hook_name(name)
    layers = _hf_layers(model)
    if not 0 <= layer < len(layers):
        raise HookPointError(
            f"Layer {layer} is out of range for a model with {len(layers)} layers."
        )
    block = layers[layer]

    def replace_output(module: Any, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    def replace_input(module: Any, args: Any, kwargs: Any) -> Any:
        if args:
            return (fn(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}

    if kind == "resid_post":
        handle = block.register_forward_hook(replace_output)
    elif kind == "attn_out":
        handle = block.self_attn.register_forward_hook(replace_output)
    elif kind == "mlp_out":
        handle = block.mlp.register_forward_hook(replace_output)
    elif kind == "resid_pre":
        handle = block.register_forward_pre_hook(replace_input, with_kwargs=True)
    else:
        raise HookPointError(
            f"Hook {name!r} has no module boundary in a plain HF model (fast path supports "
            "resid_pre, resid_post, attn_out, mlp_out).",
            "Use one of those hooks, or steer the HookedTransformer.",
        )
    try:
        yield
    finally:
        handle.remove()
