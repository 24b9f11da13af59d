"""UNQOVER (Li et al., Findings of EMNLP 2020): underspecified questions generated from the
authors' templates and word lists, as their generator defines them.

An *instance* is two subjects, a template and an attribute. It is asked four times: with either
subject first in the context, and with the attribute's question and its negation (``Who was an
accountant?`` / ``Who can never be an accountant?``). The context never says who the answer is, so
an unbiased model has no reason to prefer either subject; the bias metrics
(:mod:`fairlens.evaluate.unqover`) use all four so that position and negation effects cancel.

Files (``word_lists/`` of ``allenai/unqover``): ``slots/<name>`` one template per line
(``context<TAB>question<TAB>negated question``), ``nouns/subjects/<name>`` the subjects
(``[subj] term`` or ``[subj] cluster | term``; countries then list ``[subj:dem]`` demonyms in the
same order), ``activities/<name>`` the attributes (``[slot] class | phrase``; the ``[slot:neg]``
lines are the negations, aligned by position). Datasets as the paper's QA configurations: gender
(female x male names, ``gender_noact``, ``occupation_rev1``), nationality (``country``), ethnicity
and religion (``biased_*`` attributes). Generating every instance gives millions (the README's
table); :func:`generate_unqover` draws a seeded sample of distinct instances.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fairlens.data.fetch import read_utf8
from fairlens.errors import DataError

__all__ = [
    "UNQOVER_DATASETS",
    "UnqoverInstance",
    "count_unqover",
    "generate_unqover",
    "unqover_prompt",
]

UNQOVER_DATASETS: dict[str, tuple[str, str | None, str, str]] = {
    "gender": ("female", "male", "gender_noact", "occupation_rev1"),
    "nationality": ("country", None, "country_noact", "biased_country"),
    "ethnicity": ("ethnicity", None, "ethnicity_noact", "biased_ethnicity"),
    "religion": ("religion", None, "religion_noact", "biased_religion"),
}
"""Dataset -> (subjects, second subject list for mixed pairs, templates, attributes)."""

_FIX = "restore word_lists/ of allenai/unqover (see the data folder's README) or fix --data-dir."


@dataclass(frozen=True)
class UnqoverInstance:
    """One instance: two subjects, a template and an attribute (four questions).

    Attributes:
        dataset: ``gender``, ``nationality``, ``ethnicity`` or ``religion``.
        template: Row of the template in its slots file.
        slot: The template's attribute slot (``p_act``, ``p_act-single``, ``l_act-single``...).
        attribute: Row of the attribute among the positive lines of its slot.
        attribute_class: The attribute's class word (``rude``, ``poor``, ...; the phrase for
            occupations).
        subjects: The two subjects as they appear in the context (canonical order: list order).
        context: The context with ``subjects[0]`` first, and with ``subjects[1]`` first.
        question: The question and the negated question.
    """

    dataset: str
    template: int
    slot: str
    attribute: int
    attribute_class: str
    subjects: tuple[str, str]
    context: tuple[str, str]
    question: tuple[str, str]

    @property
    def uid(self) -> str:
        a, b = self.subjects
        return f"unqover/{self.dataset}/{self.template}/{self.slot}/{self.attribute}/{a}/{b}"


def unqover_prompt(context: str, question: str) -> str:
    """The prompt a causal LM answers (the answer is a subject's name after ``Answer:``)."""
    return f"{context} {question}\nAnswer:"


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"no UNQOVER list at {str(path)!r}.", _FIX)
    lines = read_utf8(path, _FIX).splitlines()
    return [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _subjects(path: Path) -> tuple[list[str], list[str]]:
    """(terms, demonyms) of a subjects file (demonyms empty unless listed)."""
    terms, dems = [], []
    for no, line in enumerate(_lines(path), start=1):
        m = re.match(r"\[(subj|subj:dem)\]\s+(.*)$", line)
        if not m:
            raise DataError(f"{path.name} entry {no}: expected '[subj] term', got {line!r}.", _FIX)
        term = m.group(2).split("|")[-1].strip()
        (terms if m.group(1) == "subj" else dems).append(term)
    if dems and len(dems) != len(terms):
        raise DataError(f"{path.name}: {len(terms)} subjects but {len(dems)} demonyms.", _FIX)
    return terms, dems


def _attributes(path: Path) -> dict[str, list[tuple[str, str, str]]]:
    """slot -> [(class, phrase, negated phrase)] (negations aligned by position)."""
    pos: dict[str, list[tuple[str, str]]] = {}
    neg: dict[str, list[str]] = {}
    for no, line in enumerate(_lines(path), start=1):
        m = re.match(r"\[([\w-]+)(:neg)?\]\s*(.*)$", line)
        if not m:
            raise DataError(f"{path.name} entry {no}: expected '[slot] class | phrase'.", _FIX)
        slot, is_neg, rest = m.groups()
        cls, _, phrase = rest.rpartition("|") if "|" in rest else ("", "", rest)
        phrase = phrase.strip()
        if is_neg:
            neg.setdefault(slot, []).append(phrase)
        else:
            pos.setdefault(slot, []).append((cls.strip() or phrase, phrase))
    out = {}
    for slot, rows in pos.items():
        negs = neg.get(slot, [])
        if len(negs) != len(rows):
            raise DataError(
                f"{path.name}: slot [{slot}] has {len(rows)} attributes but {len(negs)} negations.",
                _FIX,
            )
        out[slot] = [(c, p, n) for (c, p), n in zip(rows, negs, strict=True)]
    return out


def _templates(path: Path) -> list[tuple[str, str, str]]:
    out = []
    for no, line in enumerate(_lines(path), start=1):
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataError(
                f"{path.name} template {no}: expected context, question and negated question "
                f"separated by tabs, got {len(fields)} fields.",
                _FIX,
            )
        out.append((fields[0], fields[1], fields[2]))
    return out


def _articles(text: str) -> str:
    """``a`` -> ``an`` before a vowel (as the reference generator does)."""
    return re.sub(r"\b([Aa]) (?=[AEIOUaeiou])", r"\1n ", text)


def _fill(template: str, s1: tuple[str, str], s2: tuple[str, str]) -> str:
    """``s*`` = (term, demonym)."""
    for tag, (term, dem) in (("subj1", s1), ("subj2", s2)):
        template = template.replace(f"[{tag}:dem]", dem).replace(f"[{tag}]", term)
    return template


def _space(root: str | Path, dataset: str) -> tuple[Any, ...]:
    """Subjects, templates, attributes, (template, slot, attribute) combos and subject pairs."""
    if dataset not in UNQOVER_DATASETS:
        raise DataError(
            f"unknown UNQOVER dataset {dataset!r}.", f"use one of: {', '.join(UNQOVER_DATASETS)}."
        )
    base = Path(root)
    for sub in ("unqover", "word_lists"):
        if (base / sub).is_dir():
            base = base / sub
    first, second, slots, acts = UNQOVER_DATASETS[dataset]
    terms1, dems1 = _subjects(base / "nouns" / "subjects" / first)
    terms2, dems2 = _subjects(base / "nouns" / "subjects" / second) if second else (terms1, dems1)
    subj1 = [(t, dems1[i] if dems1 else t) for i, t in enumerate(terms1)]
    subj2 = [(t, dems2[i] if dems2 else t) for i, t in enumerate(terms2)]
    templates = _templates(base / "slots" / slots)
    attributes = _attributes(base / "activities" / acts)
    combos: list[tuple[int, str, int]] = []  # (template, slot, attribute)
    for t, (_, question, _) in enumerate(templates):
        slot = re.search(r"\[([\w-]+)\]", question)
        if slot is None or slot.group(1) not in attributes:
            raise DataError(f"{slots} template {t + 1}: no attribute slot in {question!r}.", _FIX)
        combos += [(t, slot.group(1), a) for a in range(len(attributes[slot.group(1)]))]
    if second:  # mixed pairs (one of each list); both orders are asked within an instance
        pairs = [(i, j) for i in range(len(subj1)) for j in range(len(subj2))]
    else:
        pairs = [(i, j) for i in range(len(subj1)) for j in range(i + 1, len(subj1))]
    return subj1, subj2, templates, attributes, combos, pairs


def count_unqover(root: str | Path, dataset: str) -> int:
    """The number of instances of ``dataset`` (subject pairs x templates x matching attributes;
    each instance holds both subject orders, which the reference generator counts separately)."""
    *_, combos, pairs = _space(root, dataset)
    return len(combos) * len(pairs)


def generate_unqover(
    root: str | Path, dataset: str, n: int, *, seed: int = 0
) -> list[UnqoverInstance]:
    """``n`` distinct instances of ``dataset``, drawn uniformly (seeded) from every subject pair x
    template x matching attribute.

    Raises:
        DataError: An unknown dataset, a missing or malformed list, or ``n`` larger than the
            dataset.
    """
    subj1, subj2, templates, attributes, combos, pairs = _space(root, dataset)
    total = len(pairs) * len(combos)
    if not 1 <= n <= total:
        raise DataError(
            f"asked for {n} {dataset} instances; the dataset has {total}.",
            f"pass n within 1..{total} (count_unqover gives the dataset size).",
        )
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(total, size=n, replace=False).tolist())
    out = []
    for k in chosen:
        (i, j), (t, slot, a) = pairs[k // len(combos)], combos[k % len(combos)]
        s1, s2 = subj1[i], subj2[j]
        context, question, negated = templates[t]
        cls, phrase, neg_phrase = attributes[slot][a]
        uses_dem = "[subj1:dem]" in context
        names = (s1[1], s2[1]) if uses_dem else (s1[0], s2[0])
        out.append(
            UnqoverInstance(
                dataset,
                t,
                slot,
                a,
                cls,
                names,
                (_articles(_fill(context, s1, s2)), _articles(_fill(context, s2, s1))),
                (
                    _articles(question.replace(f"[{slot}]", phrase)),
                    _articles(negated.replace(f"[{slot}:neg]", neg_phrase)),
                ),
            )
        )
    return out
