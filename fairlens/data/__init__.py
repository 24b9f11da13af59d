"""BBQ data: typed items, bias targets, template-disjoint splits, prompts and downloads.

Importing this package reads no file; data is loaded only by :func:`load_bbq`.
"""

from __future__ import annotations

from .bbq import BBQ_CATEGORIES, BBQ_OFFICIAL_COUNTS, LETTERS, BBQItem, check_categories, load_bbq
from .fetch import default_cache_dir, fetch_bbq, resolve_data_dir
from .prompts import (
    ContrastivePair,
    PromptFormat,
    contrastive_pairs,
    few_shot_examples,
    format_prompt,
)
from .splits import Split, content_hash, split_by_template, subsample
from .targets import (
    INTERSECTIONAL_CATEGORIES,
    bias_target_loc,
    derive_target_loc,
    infer_template_var2,
    target_flags,
)

__all__ = [
    "BBQ_CATEGORIES",
    "BBQ_OFFICIAL_COUNTS",
    "INTERSECTIONAL_CATEGORIES",
    "LETTERS",
    "BBQItem",
    "ContrastivePair",
    "PromptFormat",
    "Split",
    "bias_target_loc",
    "check_categories",
    "content_hash",
    "contrastive_pairs",
    "default_cache_dir",
    "derive_target_loc",
    "fetch_bbq",
    "few_shot_examples",
    "format_prompt",
    "infer_template_var2",
    "load_bbq",
    "resolve_data_dir",
    "split_by_template",
    "subsample",
    "target_flags",
]
