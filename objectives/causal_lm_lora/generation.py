"""Evaluation by generation: greedy answers to a split's prompts, scored as the task asks."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from objectives import metrics
from objectives.causal_lm_lora.data import IGNORE_INDEX


def answer_metric(key: str) -> str | None:
    """The answer metric a reported key names (eval_accuracy, test_bleu, old_eval_accuracy:
    accuracy, bleu, accuracy), or None for any other key."""
    for prefix in ("eval_", "test_", "old_eval_", "old_test_"):
        if key.startswith(prefix) and key[len(prefix):] in metrics.METRICS:
            return key[len(prefix):]
    return None


def _answer_start(row: dict[str, list[int]]) -> int:
    return next((i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX),
                len(row["labels"]))


def prompt_ids(row: dict[str, list[int]]) -> list[int]:
    """The prompt of a tokenised example: the tokens before its answer (label IGNORE_INDEX)."""
    return row["input_ids"][:_answer_start(row)]


def longest_answer(rows: Sequence[dict[str, list[int]]]) -> int:
    """Tokens in the longest answer, its end-of-turn token included."""
    return max(len(row["labels"]) - _answer_start(row) for row in rows)


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int,
             batch_size: int) -> list[str]:
    """Greedy answers, batched with left padding, each cut at the end-of-turn token."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = tokenizer.eos_token_id
    answers = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            width = max(len(ids) for ids in batch)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch],
                                device=device)
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=stop,
                                 pad_token_id=pad)
            for tokens in out[:, width:].tolist():
                if stop in tokens:
                    tokens = tokens[:tokens.index(stop)]
                answers.append(tokenizer.decode(tokens, skip_special_tokens=True).strip())
    finally:
        model.train(was_training)
    return answers


def scored_metrics(labels: list[str] | None, study_metrics: Sequence[str]) -> tuple[str, ...]:
    """The answer metrics an evaluation scores: all of them for free text; for a closed label
    set, accuracy and macro-F1, and BLEU or ROUGE-L only when the study optimises it (one of
    ``study_metrics``, e.g. eval_rougeL). A label is right or wrong: BLEU of one-word answers
    is 0 however many are right (they have no 4-grams), and ROUGE-L is their accuracy;
    rouge-score's import of nltk took 1.8 s and 65 MB in each trial worker."""
    if labels is None:
        return metrics.METRICS
    asked = {answer_metric(key) for key in study_metrics}
    return tuple(name for name in metrics.METRICS
                 if name in metrics.LABEL_METRICS or name in asked)


def answer_metrics(rows: list[dict[str, str]], labels: list[str] | None,
                   names: Sequence[str]) -> dict[str, float]:
    return {name: metrics.score_rows(name, rows, labels) for name in names}
