"""Task metrics on generated answers: exact match and macro-F1 for labels, BLEU and ROUGE-L else.

Labels are compared after ``normalize``; free text is scored by sacrebleu and rouge-score with
tokenizers that split Chinese into characters, so a Chinese answer is not scored as one word.
"""

from __future__ import annotations

import functools
import re

import numpy as np

# Han ideographs (extension A, the unified block, compatibility ideographs, extensions B and on)
# and Japanese kana: scripts written without spaces, so each character is a token.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_HAS_CJK = re.compile(f"[{_CJK}]")
# One CJK character, or a run of other letters and digits; punctuation and "_" fall out.
_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")

METRICS = ("accuracy", "macro_f1", "bleu", "rougeL")
LABEL_METRICS = ("accuracy", "macro_f1")  # those that read answers as labels


def normalize(text: str) -> str:
    """The form answers are compared in: surrounding spaces stripped, case folded."""
    return text.strip().casefold()


def accuracy(references: list[str], predictions: list[str]) -> float:
    """The share of predictions that equal their reference after ``normalize`` (as sklearn's
    ``accuracy_score``, to which a test pins it; counted with numpy, like ``macro_f1``)."""
    return float(np.mean(np.array(_normalized(references)) == np.array(_normalized(predictions))))


def macro_f1(references: list[str], predictions: list[str], labels: list[str]) -> float:
    """The unweighted mean of per-label F1; a prediction outside ``labels`` is simply wrong.

    As sklearn's ``f1_score(labels=..., average="macro", zero_division=0)``, to which a test
    pins it: an out-of-set prediction is no label's true or false positive, so it lowers the
    recall of the reference's label and nothing else; a label no example has nor is predicted
    scores 0. Counted here with numpy because the significance tests call it 8,000 times per
    comparison (bootstrap and permutations), and sklearn's checks of its input on every call
    made that 40 s.
    """
    refs = np.array(_normalized(references))
    preds = np.array(_normalized(predictions))
    scores = []
    for label in sorted({normalize(label) for label in labels}):
        is_ref, is_pred = refs == label, preds == label
        true_positive = np.count_nonzero(is_ref & is_pred)
        wrong = np.count_nonzero(is_ref ^ is_pred)  # false positives and false negatives
        scores.append(2 * true_positive / (2 * true_positive + wrong) if true_positive else 0.0)
    return float(np.mean(scores))


def bleu(references: list[str], predictions: list[str]) -> float:
    """Corpus BLEU on sacrebleu's 0-100 scale, one reference per prediction.

    sacrebleu's "zh" tokenizer puts spaces around every character of the basic Han blocks, full
    width forms and CJK punctuation, then runs the default "13a" tokenizer on the result; kana,
    Hangul and ideographs beyond U+FFFF are left in their runs. It is chosen when any reference
    holds a CJK character, else "13a", which would read a whole Chinese sentence as one word.
    """
    import sacrebleu

    tokenize = "zh" if any(_HAS_CJK.search(text) for text in references) else "13a"
    return float(sacrebleu.corpus_bleu(predictions, [references], tokenize=tokenize).score)


class Tokenizer:
    """Tokens for ROUGE: each CJK character, and lower-cased runs of other letters and digits.

    rouge-score's own tokenizer keeps only ASCII letters and digits, so Chinese scores 0 with it.
    """

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower())


@functools.cache
def _rouge():
    """rouge-score's scorer, made on first use: importing it imports nltk, which took 2.5 s
    and 170 MB in every process that scores labels only (the search's and each worker's)."""
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], tokenizer=Tokenizer())


def rouge_l(references: list[str], predictions: list[str]) -> float:
    """The mean ROUGE-L F-measure (0-1) over reference-prediction pairs."""
    scores = [_rouge().score(reference, prediction)["rougeL"].fmeasure
              for reference, prediction in zip(references, predictions, strict=True)]
    return float(np.mean(scores))


def score(name: str, references: list[str], predictions: list[str],
          labels: list[str] | None = None) -> float:
    """One metric by name ("accuracy", "macro_f1", "bleu" or "rougeL")."""
    if name == "accuracy":
        return accuracy(references, predictions)
    if name == "macro_f1":
        if labels is None:
            raise ValueError("macro_f1 needs the label set")
        return macro_f1(references, predictions, labels)
    if name == "bleu":
        return bleu(references, predictions)
    if name == "rougeL":
        return rouge_l(references, predictions)
    raise ValueError(f"unknown metric '{name}' (known: {', '.join(METRICS)})")


def score_rows(name: str, rows: list[dict[str, str]], labels: list[str] | None) -> float:
    """One metric of prediction rows (``reference`` and ``prediction`` each). Without a closed
    label set, macro-F1 is over the distinct references."""
    references = [r["reference"] for r in rows]
    predictions = [r["prediction"] for r in rows]
    if name == "macro_f1" and labels is None:
        labels = sorted({normalize(r) for r in references})
    return score(name, references, predictions, labels)


def find_labels(answers: list[str], max_labels: int = 20) -> list[str] | None:
    """The closed label set of a task from its training answers, or None for free text.

    The answers form a label set when there are 2 to ``max_labels`` distinct normalized answers
    and each has at most 5 words.
    """
    distinct = sorted({normalize(answer) for answer in answers})
    if 2 <= len(distinct) <= max_labels and all(len(label.split()) <= 5 for label in distinct):
        return distinct
    return None


def _normalized(texts: list[str]) -> list[str]:
    return [normalize(text) for text in texts]
