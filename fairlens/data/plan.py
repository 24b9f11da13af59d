"""Which BBQ items each stage of a run gets: the template-disjoint split fractions and the
per-category sizes (the data section of a run's settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fairlens.errors import ConfigError

DEFAULT_FRACTIONS: dict[str, float] = {
    "probe": 0.45,
    "dsv": 0.1,
    "select": 0.1,
    "shots": 0.05,
    "eval": 0.3,
}


@dataclass(frozen=True)
class DataPlan:
    """The items of a run: BBQ split by template, then capped per category.

    Attributes:
        categories: BBQ categories (None: all 11).
        probe_per_category: Fit-split items per category for the BAD probe (None: all).
        select_per_category: Selection-split items per category, where layer and strength are
            chosen (None: all).
        eval_per_category: Eval-split items per category, scored once (None: all).
        limit: Cap on items per category in every split, for CPU-sized presets (None: no cap).
        fractions: Share of BBQ templates in each split (probe, dsv, select, shots, eval); set it
            in a config file.
        paper_few_shot: Also build the BAD data and the DSV pairs with 8-shot prompts (the
            paper's recipe).
        mmlu_anchors: MMLU questions added to the BAD data as unbiased anchors.
    """

    categories: tuple[str, ...] | None = None
    probe_per_category: int | None = 40
    select_per_category: int | None = 10
    eval_per_category: int | None = 30
    limit: int | None = None
    fractions: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_FRACTIONS), metadata={"cli": False}
    )
    paper_few_shot: bool = False
    mmlu_anchors: int = 0

    def __post_init__(self) -> None:
        for name in ("probe_per_category", "select_per_category", "eval_per_category", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(
                    f"{name} must be >= 1 or None (all), got {value}.",
                    f"pass --{name.replace('_', '-')} 1 or more, or 'all'.",
                )
        if not isinstance(self.fractions, dict) or set(self.fractions) != set(DEFAULT_FRACTIONS):
            raise ConfigError(
                f"fractions must name exactly the splits {sorted(DEFAULT_FRACTIONS)}.",
                "give fractions one share per split (and no others) in the config file.",
            )
        if self.mmlu_anchors < 0:
            raise ConfigError(
                f"mmlu_anchors must be >= 0, got {self.mmlu_anchors}.",
                "pass --mmlu-anchors 0 or more.",
            )

    def caps(self) -> dict[str, int | None]:
        """Items per category taken from each split (None: all; ``limit`` applied)."""
        caps: dict[str, int | None] = {
            "probe": self.probe_per_category,
            "dsv": None,
            "select": self.select_per_category,
            "shots": None,
            "eval": self.eval_per_category,
        }
        if self.limit is not None:
            # the DSV split only feeds the contrastive pairs, the shots split 8 examples: uncapped
            for k in ("probe", "select", "eval"):
                cap = caps[k]
                caps[k] = self.limit if cap is None else min(cap, self.limit)
        return caps
