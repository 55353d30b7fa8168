"""Which answer metrics an evaluation scores."""

from __future__ import annotations

from objectives.causal_lm_lora.generation import scored_metrics

LABELS = ["negative", "neutral", "positive"]


def test_free_text_is_scored_by_every_answer_metric() -> None:
    assert scored_metrics(None, ["eval_accuracy"]) == ("accuracy", "macro_f1", "bleu", "rougeL")
    assert scored_metrics(None, ["eval_loss"]) == ("accuracy", "macro_f1", "bleu", "rougeL")


def test_labels_are_scored_as_labels() -> None:
    assert scored_metrics(LABELS, ["eval_accuracy"]) == ("accuracy", "macro_f1")
    assert scored_metrics(LABELS, ["eval_loss"]) == ("accuracy", "macro_f1")


def test_a_study_that_asks_for_bleu_or_rouge_on_labels_gets_it() -> None:
    assert scored_metrics(LABELS, ["eval_rougeL"]) == ("accuracy", "macro_f1", "rougeL")
    assert scored_metrics(LABELS, ["eval_bleu"]) == ("accuracy", "macro_f1", "bleu")


def test_a_further_objective_of_the_study_is_scored_too() -> None:
    """A multi-objective study's other metrics come with the trial's final report."""
    assert scored_metrics(LABELS, ["eval_accuracy", "eval_bleu"]) == \
        ("accuracy", "macro_f1", "bleu")
    assert scored_metrics(LABELS, ["eval_accuracy", "latency_ms"]) == ("accuracy", "macro_f1")
