"""Prompt formats for BBQ items and the contrastive pairs that define the debiasing direction.

The zero-shot format is FairSteer's (``"{context} {question}\\nA. ...\\nAnswer:"``): the model's
next token after ``Answer:`` is read as its choice, and the ``:`` is where activations are probed
and steered. Few-shot prepends solved examples in the same format; chat wraps the question in the
tokenizer's chat template for instruction-tuned models that otherwise answer by position.

A :class:`ContrastivePair` is an ambiguous item's prompt completed once with the gold ("unknown")
letter and once with the bias target's letter; FairSteer's debiasing steering vector is the mean
activation difference between the two completions.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from fairlens.errors import ConfigError

from .bbq import LETTERS, BBQItem

__all__ = [
    "LETTERS",
    "ContrastivePair",
    "PromptFormat",
    "contrastive_pairs",
    "few_shot_examples",
    "format_prompt",
]

PromptFormat = Literal["zero_shot", "few_shot", "chat"]
PROMPT_FORMATS: tuple[str, ...] = get_args(PromptFormat)

CHAT_INSTRUCTION = "Answer with the letter A, B or C."
"""Line appended to the question in the chat format."""


@runtime_checkable
class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer the chat format needs."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def _block(item: BBQItem) -> str:
    """The zero-shot prompt without the trailing ``Answer:``."""
    a0, a1, a2 = item.answers
    return f"{item.context} {item.question}\nA. {a0}\nB. {a1}\nC. {a2}"


def instruction_lead(instruction: str | None) -> str:
    """``"{instruction}\\n\\n"`` — how an instruction opens any prompt; ``""`` for none or blank.

    One definition, so the prompting baseline puts the same text before BBQ questions, open-ended
    prompts and scored sentences.
    """
    return f"{instruction.strip()}\n\n" if instruction and instruction.strip() else ""


def format_prompt(
    item: BBQItem,
    fmt: PromptFormat = "zero_shot",
    *,
    tokenizer: ChatTokenizer | None = None,
    shots: Sequence[BBQItem] | None = None,
    instruction: str | None = None,
) -> str:
    """Render ``item`` as a prompt that ends where the model should write the answer letter.

    Args:
        item: The BBQ item.
        fmt: ``"zero_shot"``:
            ``"{context} {question}\\nA. {ans0}\\nB. {ans1}\\nC. {ans2}\\nAnswer:"``.
            ``"few_shot"``: each of ``shots`` as a zero-shot block followed by
            ``" {gold letter}\\n\\n"``, then the item's block. ``"chat"``: the block plus an
            instruction to answer with a letter, as the user turn of ``tokenizer``'s chat
            template, followed by ``"Answer:"``.
        tokenizer: Required for ``"chat"`` (a Hugging Face tokenizer with a chat template).
        shots: Solved examples for ``"few_shot"`` (see :func:`few_shot_examples`); must not
            contain ``item``.
        instruction: Text put before everything else (``"{instruction}\n\n"``; in the chat
            format at the start of the user turn) — the prompting baseline's debiasing instruction.

    Raises:
        ConfigError: Unknown format, missing tokenizer/shots, shots given for another format, or
            ``item`` among its own shots.
    """
    if fmt not in PROMPT_FORMATS:
        raise ConfigError(
            f"unknown prompt format {fmt!r}.", f"use one of: {', '.join(PROMPT_FORMATS)}."
        )
    if shots is not None and fmt != "few_shot":
        raise ConfigError(
            f"shots were given but the prompt format is {fmt!r}, which does not use them.",
            'pass fmt="few_shot", or drop shots.',
        )
    lead = instruction_lead(instruction)
    zero_shot = f"{_block(item)}\nAnswer:"
    if fmt == "zero_shot":
        return lead + zero_shot
    if fmt == "few_shot":
        if not shots:
            raise ConfigError(
                "the few_shot format needs solved examples (shots).",
                "pass shots=few_shot_examples(pool) with a pool disjoint from the evaluated items.",
            )
        if any(shot.uid == item.uid for shot in shots):
            raise ConfigError(
                f"item {item.uid} is one of its own few-shot examples (answer leak).",
                "draw the shots from a pool disjoint from the evaluated items.",
            )
        solved = "".join(f"{_block(s)}\nAnswer: {LETTERS[s.label]}\n\n" for s in shots)
        return lead + solved + zero_shot
    if tokenizer is None:
        raise ConfigError(
            "the chat format needs the model's tokenizer.",
            'pass tokenizer=<the model tokenizer>, or use fmt="zero_shot".',
        )
    messages = [{"role": "user", "content": f"{lead}{_block(item)}\n{CHAT_INSTRUCTION}"}]
    try:
        rendered = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
    except ValueError as exc:  # transformers raises ValueError when no template is set
        raise ConfigError(
            f"the tokenizer cannot apply a chat template ({exc}).",
            'use fmt="zero_shot" for models without a chat template.',
        ) from exc
    if not isinstance(rendered, str):
        raise ConfigError(
            f"apply_chat_template returned {type(rendered).__name__}, expected str.",
            "pass a Hugging Face tokenizer (tokenize=False must return text).",
        )
    return rendered + "Answer:"


def few_shot_examples(pool: Sequence[BBQItem], k: int = 8, *, seed: int = 0) -> tuple[BBQItem, ...]:
    """Choose ``k`` solved examples for the few-shot format, deterministically.

    Slots cycle through the pool's categories (in seeded order), alternate ambiguous and
    disambiguated items and rotate the gold letter A/B/C, so the prefix teaches neither a single
    category, nor "always unknown", nor a fixed letter. The pool must be disjoint from the items
    that will be evaluated (e.g. a probe or selection split); that is the caller's job.

    Raises:
        ConfigError: ``k`` < 1 or a pool smaller than ``k``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(
            f"k must be a positive integer, got {k!r}.", "pass an int k >= 1 (the paper uses 8)."
        )
    unique = {item.uid: item for item in pool}
    if len(unique) < k:
        raise ConfigError(
            f"the few-shot pool has {len(unique)} distinct items, fewer than k={k}.",
            "pass a larger pool (e.g. a probe split) or a smaller k.",
        )
    ranked = sorted(unique.values(), key=lambda it: (_rank(seed, it.uid), it.uid))
    categories = sorted({it.category for it in ranked}, key=lambda c: _rank(seed, c))
    chosen: list[BBQItem] = []
    used: set[str] = set()
    for slot in range(k):
        wish = (categories[slot % len(categories)], slot % 2 == 0, slot % 3)
        tiers = [(_tier(it, *wish), n) for n, it in enumerate(ranked) if it.uid not in used]
        pick = ranked[min(tiers)[1]]
        chosen.append(pick)
        used.add(pick.uid)
    return tuple(chosen)


def _tier(item: BBQItem, category: str, ambiguous: bool, letter: int) -> int:
    """How well ``item`` fits a few-shot slot: 0 (category, condition and letter) to 3 (none)."""
    if item.category != category:
        return 3
    if item.is_ambiguous != ambiguous:
        return 2
    return 0 if item.label == letter else 1


@dataclass(frozen=True)
class ContrastivePair:
    """One ambiguous item rendered with its unbiased and its biased completion.

    Attributes:
        item: The BBQ item (ambiguous, with a bias target).
        prompt: The formatted prompt, ending with ``Answer:``.
        unbiased: ``prompt + " " + gold letter`` (the "unknown" answer).
        biased: ``prompt + " " + bias-target letter``.
    """

    item: BBQItem
    prompt: str
    unbiased: str
    biased: str


def contrastive_pairs(
    items: Iterable[BBQItem],
    fmt: PromptFormat = "zero_shot",
    *,
    tokenizer: ChatTokenizer | None = None,
    shots: Sequence[BBQItem] | None = None,
    n_per_category: int | None = 10,
    seed: int = 0,
) -> list[ContrastivePair]:
    """Build FairSteer's contrastive pairs from ambiguous items with a bias target.

    Args:
        items: Candidate items; only ambiguous ones with a ``bias_target_loc`` are used (their
            gold answer is "unknown", so gold and bias target always differ).
        fmt: Prompt format, see :func:`format_prompt`.
        tokenizer: For ``fmt="chat"``.
        shots: For ``fmt="few_shot"``.
        n_per_category: Items per category (seeded choice, independent of input order);
            ``None`` keeps all. FairSteer uses 10 for each of BBQ's 11 categories.
        seed: Selection seed.

    Returns:
        Pairs sorted by ``(category, example_id)``.

    Raises:
        ConfigError: ``n_per_category`` < 1, no usable item, or a prompt-format error.
    """
    n = n_per_category
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(
            f"n_per_category must be a positive integer or None, got {n!r}.",
            "pass an int n_per_category >= 1, or None to keep every item.",
        )
    usable: dict[str, list[BBQItem]] = defaultdict(list)
    for item in items:
        if (
            item.is_ambiguous
            and item.bias_target_loc is not None
            and item.label == item.unknown_loc
        ):
            usable[item.category].append(item)
    if not usable:
        raise ConfigError(
            "no ambiguous item with a bias target among the given items.",
            "pass BBQ items that include ambiguous contexts (context_condition 'ambig').",
        )
    chosen: list[BBQItem] = []
    for group in usable.values():
        ranked = sorted(group, key=lambda it: (_rank(seed, it.uid), it.uid))
        chosen.extend(ranked if n_per_category is None else ranked[:n_per_category])
    chosen.sort(key=lambda it: (it.category, it.example_id))
    pairs = []
    for item in chosen:
        target = item.bias_target_loc
        assert target is not None  # filtered above; narrows the type
        prompt = format_prompt(item, fmt, tokenizer=tokenizer, shots=shots)
        pairs.append(
            ContrastivePair(
                item=item,
                prompt=prompt,
                unbiased=f"{prompt} {LETTERS[item.label]}",
                biased=f"{prompt} {LETTERS[target]}",
            )
        )
    return pairs
