"""Augmentation of the training split: the EDA operations, seeded, on examples by hand."""

from __future__ import annotations

import pytest

from objectives.base import DataError
from objectives.data.augment import Augmenter, augment_examples, check, vocabulary
from objectives.data.pipeline import Example
from objectives.data.section import AugmentSection

TEXT = "acme bank reports record quarterly profit today"


def augmenter(p: float, *operations: str, seed: int = 0) -> Augmenter:
    return Augmenter(AugmentSection(p=p, operations=list(operations)),
                     ["alpha", "beta"], seed)


def test_swap_keeps_the_words_and_moves_them():
    outs = [augmenter(0.3, "swap", seed=seed)(TEXT) for seed in range(10)]
    assert all(sorted(out.split()) == sorted(TEXT.split()) for out in outs)
    assert sum(out != TEXT for out in outs) >= 5


def test_delete_drops_about_p_of_the_words_and_never_all():
    out = augmenter(0.5, "delete")(TEXT).split()
    assert 0 < len(out) < 7 and all(word in TEXT.split() for word in out)
    assert augmenter(0.5, "delete")("one") == "one"


def test_insert_adds_words_of_the_vocabulary():
    out = augmenter(0.3, "insert")(TEXT).split()
    added = [w for w in out if w not in TEXT.split()]
    assert len(out) == 7 + 2 and set(added) <= {"alpha", "beta"}


def test_the_same_seed_gives_the_same_copies():
    assert augmenter(0.3, "swap", "delete", "insert")(TEXT) == \
        augmenter(0.3, "swap", "delete", "insert")(TEXT)


def test_copies_change_user_turns_only_and_p_zero_adds_none():
    examples = [Example((("system", "be brief"), ("user", TEXT)), "positive", "line 1")]
    section = AugmentSection(p=0.3, copies=2)
    copies = augment_examples(examples, section, seed=0)
    assert len(copies) == 2
    for copy in copies:
        assert copy.turns[0] == ("system", "be brief") and copy.answer == "positive"
        assert copy.turns[1][1] != TEXT and copy.where == "line 1 (augmented)"
    assert augment_examples(examples, AugmentSection(p=0.0), seed=0) == []
    assert vocabulary(["b a", "a c"]) == ["a", "b", "c"]


def test_synonyms_without_wordnet_are_one_clear_error():
    try:
        from nltk.corpus import wordnet

        wordnet.synsets("good")
        pytest.skip("WordNet is installed here")
    except (ImportError, LookupError):
        pass
    with pytest.raises(DataError, match="synonym needs NLTK's WordNet: pip install nltk"):
        check(AugmentSection(p=0.1, operations=["synonym"]))
    check(AugmentSection(p=0.0, operations=["synonym"]))  # off: nothing to refuse
