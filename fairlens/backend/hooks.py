"""One hook API for both paths: ``fn(act) -> act`` at a TL hook name, on a TL or a plain HF model.

``add_hooks(model, [(name, fn), ...])`` puts each ``fn`` where the tensor named by the TL hook point
flows: on a ``HookedTransformer`` that is the hook point itself; on a plain ``transformers`` model it
is the module boundary the family registry (:data:`fairlens.models.FAMILIES`) names for it:

=============  =======================================================================
``resid_pre``  input of decoder block ``layer``
``resid_post`` output of decoder block ``layer``
``attn_out``   output of the family's attention contribution (``self_attn``; Gemma-2:
               the norm after attention)
``mlp_out``    output of the family's MLP contribution
=============  =======================================================================

``fn`` receives the activation (``[batch, pos, d_model]``, or ``[batch, pos, head, d_head]`` for
``z``) and returns the replacement, or ``None`` to leave it unchanged (capture hooks). The returned
:class:`HookHandle` removes exactly the hooks it added (never a hook someone else added), by
``handle.remove()`` or as a context manager; a failure while adding removes the ones already added.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from torch import Tensor
from torch.utils.hooks import RemovableHandle
from typing_extensions import TypeIs

from fairlens.backend.hook_points import parse_hook_name, validate_hook
from fairlens.errors import ConfigError, HookPointError
from fairlens.model_types import HookedModel, Model

HookFn = Callable[[Tensor], Tensor | None]


def is_hooked(model: Model) -> TypeIs[HookedModel]:
    """True for a TransformerLens ``HookedTransformer`` (vs a plain HF causal LM)."""
    return hasattr(model, "run_with_hooks") and hasattr(model, "cfg")


class HookHandle:
    """The hooks one :func:`add_hooks` call added; :meth:`remove` takes away exactly those."""

    def __init__(self, handles: list[RemovableHandle]) -> None:
        self._handles = handles

    def __len__(self) -> int:
        return len(self._handles)

    def remove(self) -> None:
        """Remove the hooks (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


def add_hooks(model: Model, hooks: Sequence[tuple[str, HookFn]]) -> HookHandle:
    """Add ``fn(act) -> act | None`` at each TL hook name; returns the handle that removes them.

    Use as ``with add_hooks(model, [(name, fn)]): ...`` or keep the handle and call ``remove()``.
    """
    handles: list[RemovableHandle] = []
    try:
        for name, fn in hooks:
            handles.append(_add_one(model, name, fn))
    except BaseException:
        for handle in reversed(handles):
            handle.remove()
        raise
    return HookHandle(handles)


def _replace_output(fn: HookFn) -> Callable[[Any, Any, Any], Any]:
    def hook(module: Any, inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            new = fn(output[0])
            return None if new is None else (new, *output[1:])
        return fn(output)

    return hook


def _replace_input(fn: HookFn) -> Callable[[Any, Any, Any], Any]:
    def hook(module: Any, args: Any, kwargs: Any) -> Any:
        if args:
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        new = fn(kwargs["hidden_states"])
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    return hook


def _add_one(model: Model, name: str, fn: HookFn) -> RemovableHandle:
    if is_hooked(model):
        point = model.hook_dict[validate_hook(model, name)]

        def tl_hook(module: Any, inputs: Any, output: Any) -> Any:
            return fn(output)  # a TL hook point passes its activation through as the output

        return point.register_forward_hook(tl_hook)
    from fairlens.models.families import family_of

    family = family_of(model)
    kind, layer = parse_hook_name(name)
    blocks = family.blocks(model)
    if not 0 <= layer < len(blocks):
        raise HookPointError(
            f"Layer {layer} is out of range for a model with {len(blocks)} layers "
            f"(valid: 0..{len(blocks) - 1}).",
            "Pass a layer index in range.",
        )
    block = blocks[layer]
    _refuse_unloaded(block, name)
    if kind == "resid_post":
        return block.register_forward_hook(_replace_output(fn))
    if kind == "resid_pre":
        return block.register_forward_pre_hook(_replace_input(fn), with_kwargs=True)
    if kind == "attn_out":
        return getattr(block, family.attn_out).register_forward_hook(_replace_output(fn))
    if kind == "mlp_out":
        return getattr(block, family.mlp_out).register_forward_hook(_replace_output(fn))
    raise HookPointError(
        f"Hook {name!r} has no module boundary in a plain transformers model (the fast path "
        "supports resid_pre, resid_post, attn_out and mlp_out).",
        "Use one of those hooks, or load the model with fairlens.load_model (TransformerLens).",
    )


def _refuse_unloaded(block: Any, name: str) -> None:
    """A block whose weights sit on the meta device with no accelerate hook to load them (a
    device map that left it unplaced) would fail mid-forward, or be skipped: refuse it now."""
    if not any(p.is_meta for p in block.parameters()):
        return
    if any(getattr(m, "_hf_hook", None) is not None for m in block.modules()):
        return  # offloaded: accelerate loads its weights for each forward call
    raise ConfigError(
        f"the layer of {name!r} has its weights on the meta device and nothing loads them.",
        "give that layer a real device (or 'cpu' / 'disk') in the device map.",
    )


def count_hooks(model: Model) -> int:
    """Number of hooks added to ``model``: TL hook points, or every module of a plain transformers model.

    On a transformers model the library's own output-capturing hooks (installed once, the first
    time ``output_hidden_states`` or ``output_attentions`` is asked for, and kept) are not counted:
    they are not ours to remove.
    """
    if is_hooked(model):
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
