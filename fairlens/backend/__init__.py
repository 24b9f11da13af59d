"""The backend: the only place that knows a TransformerLens model from a plain ``transformers`` one.

* :mod:`~fairlens.backend.hook_points` — TL hook names: build, parse, validate, suggest;
* :mod:`~fairlens.backend.hooks` — one hook API, ``fn(act) -> act`` on either path
  (:func:`add_hooks` returns a :class:`HookHandle` that removes exactly its hooks);
* :mod:`~fairlens.backend.batching` — padded batches and one forward call for both paths.
"""

from __future__ import annotations

from fairlens.backend.batching import (
    Batch,
    PaddingSide,
    check_context,
    decoder_of,
    encode,
    encode_batch,
    forward_logits,
    last_token_logits,
    length_sorted_chunks,
    logit_cap,
    model_device,
    pad_id,
    pad_sequences,
    padding_now,
    real_tokens,
    resolve_tokenizer,
    sliding_window,
)
from fairlens.backend.hook_points import (
    DEFAULT_HOOK_KIND,
    HOOK_KINDS,
    HookKind,
    hook_name,
    n_layers_of,
    parse_hook_name,
    resolve_hooks,
    validate_hook,
)
from fairlens.backend.hooks import HookFn, HookHandle, add_hooks, count_hooks, is_hooked

__all__ = [
    "DEFAULT_HOOK_KIND",
    "HOOK_KINDS",
    "Batch",
    "HookFn",
    "HookHandle",
    "HookKind",
    "PaddingSide",
    "add_hooks",
    "check_context",
    "count_hooks",
    "decoder_of",
    "encode",
    "encode_batch",
    "forward_logits",
    "hook_name",
    "is_hooked",
    "last_token_logits",
    "length_sorted_chunks",
    "logit_cap",
    "model_device",
    "n_layers_of",
    "pad_id",
    "pad_sequences",
    "padding_now",
    "parse_hook_name",
    "real_tokens",
    "resolve_hooks",
    "resolve_tokenizer",
    "sliding_window",
    "validate_hook",
]
