"""Task metrics against cases counted by hand."""

from __future__ import annotations

import math
import random

import pytest
from rouge_score.rouge_scorer import RougeScorer
from sklearn.metrics import accuracy_score, f1_score

from objectives.metrics import (
    Tokenizer,
    accuracy,
    bleu,
    find_labels,
    macro_f1,
    normalize,
    rouge_l,
    score,
)

LABELS = ["pos", "neg", "neu"]
# Case and surrounding spaces do not count; "maybe" is no label at all.
REFERENCES = ["pos", "pos", "neg", "neg", "neu", "neu"]
PREDICTIONS = [" POS", "neg", "Neg ", "neg", "pos", "maybe"]
# Right: examples 0, 2 and 3, so accuracy = 3/6.
# pos: predicted at 0 and 4, right at 0: P = 1/2; references 0, 1: R = 1/2; F1 = 1/2.
# neg: predicted at 1, 2, 3, right at 2, 3: P = 2/3; references 2, 3: R = 1; F1 = 2*(2/3)/(5/3)
#      = 4/5.
# neu: never predicted: P = 0 (zero division), R = 0; F1 = 0.
# macro-F1 = (1/2 + 4/5 + 0) / 3 = 13/30.
ACCURACY, MACRO_F1 = 0.5, 13 / 30


def test_normalize_strips_and_folds_case() -> None:
    assert normalize("  Positive\n") == "positive"
    assert normalize("STRASSE") == normalize("straße")  # casefold, not lower


def test_accuracy_and_macro_f1_by_hand() -> None:
    assert accuracy(REFERENCES, PREDICTIONS) == pytest.approx(ACCURACY)
    assert macro_f1(REFERENCES, PREDICTIONS, LABELS) == pytest.approx(MACRO_F1)
    # Labels are normalized too.
    assert macro_f1(REFERENCES, PREDICTIONS, ["POS", " Neg", "neu"]) == pytest.approx(MACRO_F1)


def test_accuracy_and_macro_f1_equal_sklearns_on_random_answers() -> None:
    """Out-of-set predictions, labels never predicted and labels no example has, as
    f1_score(labels=..., average="macro", zero_division=0) and accuracy_score count them."""
    rng = random.Random(0)
    answers = ["pos", "neg", "neu", "maybe", "Pos "]
    for _ in range(200):
        n = rng.randint(1, 30)
        references = [rng.choice(answers[:3]) for _ in range(n)]
        predictions = [rng.choice(answers) for _ in range(n)]
        labels = rng.choice([LABELS, [*LABELS, "other"], ["pos", "neg"]])
        expected = f1_score([normalize(r) for r in references],
                            [normalize(p) for p in predictions],
                            labels=sorted({normalize(label) for label in labels}),
                            average="macro", zero_division=0)
        assert macro_f1(references, predictions, labels) == pytest.approx(expected, abs=1e-12)
        assert accuracy(references, predictions) == pytest.approx(accuracy_score(
            [normalize(r) for r in references], [normalize(p) for p in predictions]), abs=1e-12)


def test_perfect_free_text() -> None:
    reference = ["the cat sat on the mat"]
    assert score("bleu", reference, reference) == pytest.approx(100.0)
    assert score("rougeL", reference, reference) == pytest.approx(1.0)


def test_score_by_name() -> None:
    assert score("macro_f1", REFERENCES, PREDICTIONS, LABELS) == pytest.approx(MACRO_F1)
    assert score("accuracy", REFERENCES, PREDICTIONS) == pytest.approx(ACCURACY)
    with pytest.raises(ValueError, match="label set"):
        score("macro_f1", REFERENCES, PREDICTIONS)
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        score("f1", REFERENCES, PREDICTIONS)


def test_bleu_by_hand_with_a_brevity_penalty() -> None:
    # reference: the cat sat on the red mat (7 tokens); hypothesis: the cat sat on the mat (6).
    # 1-grams: all 6 match ("the" twice, twice in the reference): 6/6.
    # 2-grams: the-cat cat-sat sat-on on-the match, the-mat does not: 4/5.
    # 3-grams: the-cat-sat cat-sat-on sat-on-the match, on-the-mat does not: 3/4.
    # 4-grams: the-cat-sat-on cat-sat-on-the match, sat-on-the-mat does not: 2/3.
    # No precision is 0, so smoothing plays no part. Brevity penalty: exp(1 - 7/6).
    # BLEU = 100 * exp(-1/6) * (1 * 4/5 * 3/4 * 2/3) ** (1/4) = 100 * 0.846482 * 0.795271.
    expected = 100 * math.exp(1 - 7 / 6) * (2 / 5) ** 0.25
    assert expected == pytest.approx(67.318, abs=1e-3)
    assert bleu(["The cat sat on the red mat"], ["The cat sat on the mat"]) == pytest.approx(
        expected)
    # 13a makes a full stop a token: 8 reference and 7 hypothesis tokens. The n-grams gain
    # "." (1-grams 7/7) and "mat ." (2-grams 5/6), "the mat ." is not in the reference (3-grams
    # 3/5), no 4-gram with "." matches (2/4): BLEU = 100 * exp(1 - 8/7) * (1/4) ** (1/4).
    expected = 100 * math.exp(1 - 8 / 7) * (1 / 4) ** 0.25
    assert expected == pytest.approx(61.298, abs=1e-3)
    assert bleu(["The cat sat on the red mat."], ["The cat sat on the mat."]) == pytest.approx(
        expected)


def test_bleu_splits_chinese_into_characters() -> None:
    # The "zh" tokenizer makes each character a token:
    # reference: 我 喜 欢 吃 红 苹 果 (7); hypothesis: 我 喜 欢 吃 苹 果 (6).
    # 1-grams: 6/6. 2-grams: 我喜 喜欢 欢吃 苹果 match, 吃苹 does not: 4/5.
    # 3-grams: 我喜欢 喜欢吃 match, 欢吃苹 吃苹果 do not: 2/4.
    # 4-grams: 我喜欢吃 matches, 喜欢吃苹 欢吃苹果 do not: 1/3.
    # BLEU = 100 * exp(1 - 7/6) * (1 * 4/5 * 1/2 * 1/3) ** (1/4).
    expected = 100 * math.exp(1 - 7 / 6) * (2 / 15) ** 0.25
    assert expected == pytest.approx(51.151, abs=1e-3)
    assert bleu(["我喜欢吃红苹果"], ["我喜欢吃苹果"]) == pytest.approx(expected)


def test_tokenizer_splits_cjk_characters_and_drops_punctuation() -> None:
    assert Tokenizer().tokenize("GPT-4 说：你好, World_Wide!") == [
        "gpt", "4", "说", "你", "好", "world", "wide"]
    assert Tokenizer().tokenize("カタカナ と 한국어") == ["カ", "タ", "カ", "ナ", "と", "한국어"]


def test_rouge_l_by_hand() -> None:
    # reference: the cat sat on the mat (6); prediction: a cat was on the mat today (7).
    # LCS: cat on the mat = 4, so P = 4/7, R = 4/6, F = 2PR / (P + R) = 8/13.
    # The second pair is identical: F = 1. Mean = (8/13 + 1) / 2 = 21/26.
    references = ["The cat sat on the mat.", "Hello there"]
    predictions = ["A cat was on the mat, today!", "hello THERE"]
    assert rouge_l(references[:1], predictions[:1]) == pytest.approx(8 / 13)
    assert rouge_l(references, predictions) == pytest.approx(21 / 26)


def test_rouge_l_scores_chinese() -> None:
    # reference: 我 喜 欢 吃 苹 果 (6); prediction: 我 不 喜 欢 苹 果 (6).
    # LCS: 我 喜 欢 苹 果 = 5, so P = R = F = 5/6.
    assert rouge_l(["我喜欢吃苹果。"], ["我不喜欢苹果！"]) == pytest.approx(5 / 6)
    # rouge-score's own tokenizer drops every non-ASCII character, so Chinese would score 0.
    default = RougeScorer(["rougeL"]).score("我喜欢吃苹果", "我不喜欢苹果")["rougeL"]
    assert default.fmeasure == 0.0


def test_find_labels() -> None:
    answers = ["Positive", "negative ", "positive", " Neutral", "NEGATIVE"]
    assert find_labels(answers) == ["negative", "neutral", "positive"]
    assert find_labels(["yes", "Yes", " YES"]) is None  # one label is no classification
    assert find_labels(["a b c d e", "f"]) == ["a b c d e", "f"]  # five words still a label
    assert find_labels(["one two three four five six", "seven"]) is None
    many = [f"label {i}" for i in range(21)]
    assert find_labels(many) is None
    assert find_labels(many[:20]) == sorted(many[:20])
    assert find_labels(many[:5], max_labels=4) is None
