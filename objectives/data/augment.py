"""Text augmentation of the training split, per trial, so the search can tune it.

The EDA operations that need no outside data (Wei and Zou, 2019): random swap of two words,
random deletion of words, random insertion of words from the training split's own vocabulary;
and synonym replacement where NLTK's WordNet is installed (optional: ``pip install nltk`` and
``python -m nltk.downloader wordnet``). Each word is touched with probability ``p``; ``p = 0``
is no augmentation. Validation and test are never augmented. A text written without spaces
(Chinese) is one "word" to these operations, so only its whole-text operations apply.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from objectives.base import DataError
from objectives.data.files import TRAIN_EXAMPLES, load_split, read_examples
from objectives.data.pipeline import Example
from objectives.data.section import AugmentSection


def _synonyms() -> Callable[[str], list[str]]:
    try:
        from nltk.corpus import wordnet

        wordnet.synsets("good")
    except (ImportError, LookupError):
        raise DataError("data.augment.operations", "synonym needs NLTK's WordNet: pip "
                        "install nltk, then python -m nltk.downloader wordnet") from None

    def synonyms(word: str) -> list[str]:
        return sorted({lemma.name().replace("_", " ") for synset in wordnet.synsets(word)
                       for lemma in synset.lemmas()} - {word})
    return synonyms


def check(section: AugmentSection) -> None:
    """Refuse, before any trial, an operation that cannot run here."""
    if "synonym" in section.operations and section.p > 0:
        _synonyms()


class Augmenter:
    """Augmented copies of texts; ``vocabulary`` is the words insertion draws from."""

    def __init__(self, section: AugmentSection, vocabulary: list[str], seed: int) -> None:
        self.section, self.vocabulary = section, vocabulary
        self.rng = random.Random(seed)
        self.synonyms = _synonyms() if "synonym" in section.operations else None

    def __call__(self, text: str) -> str:
        words = text.split()
        if not words:
            return text
        n = max(1, round(self.section.p * len(words)))
        for operation in self.section.operations:
            words = getattr(self, f"_{operation}")(words, n)
        return " ".join(words)

    def _swap(self, words: list[str], n: int) -> list[str]:
        words = list(words)
        for _ in range(n if len(words) > 1 else 0):
            i, j = self.rng.sample(range(len(words)), 2)
            words[i], words[j] = words[j], words[i]
        return words

    def _delete(self, words: list[str], n: int) -> list[str]:
        kept = [w for w in words if self.rng.random() >= self.section.p]
        return kept or [self.rng.choice(words)]

    def _insert(self, words: list[str], n: int) -> list[str]:
        words = list(words)
        for _ in range(n if self.vocabulary else 0):
            words.insert(self.rng.randrange(len(words) + 1), self.rng.choice(self.vocabulary))
        return words

    def _synonym(self, words: list[str], n: int) -> list[str]:
        words = list(words)
        for i in self.rng.sample(range(len(words)), min(n, len(words))):
            options = self.synonyms(words[i])
            if options:
                words[i] = self.rng.choice(options)
        return words


def vocabulary(texts: list[str]) -> list[str]:
    """The distinct words of the training texts, in a fixed order."""
    return sorted({word for text in texts for word in text.split()})


def augment_examples(examples: list[Example], section: AugmentSection,
                     seed: int) -> list[Example]:
    """``section.copies`` augmented copies of each example: its user turns changed, its
    answer and other turns (system prompts) kept; copies equal to their original are left
    out."""
    if section.p == 0:
        return []
    words = vocabulary([text for e in examples for role, text in e.turns if role in ROLES])
    augmenter = Augmenter(section, words, seed)
    copies = []
    for _ in range(section.copies):
        for example in examples:
            turns = tuple((role, augmenter(text) if role in ROLES else text)
                          for role, text in example.turns)
            if turns != example.turns:
                copies.append(replace(example, turns=turns, where=f"{example.where} "
                                      "(augmented)"))
    return copies


ROLES = ("user", "text")  # the turns augmentation changes


def training_set(prepared: Path, section: AugmentSection, seed: int,
                 tokenized: Callable[[list[Example]], Any]) -> tuple[Any, int]:
    """A prepared study's training split (an Arrow dataset) with this trial's augmented
    copies, tokenised by ``tokenized``, added; and how many copies that is."""
    import datasets

    train = load_split(prepared, "train")
    extra = augment_examples(read_examples(prepared / TRAIN_EXAMPLES), section, seed)
    if not extra:
        return train, 0
    return datasets.concatenate_datasets([train, tokenized(extra)]), len(extra)
