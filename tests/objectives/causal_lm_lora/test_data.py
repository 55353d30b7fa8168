"""Instruction data: splits without overlap, prompts without loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from objectives.base import DataError
from objectives.causal_lm_lora import data as sft_data
from objectives.causal_lm_lora.config import DEFAULT_DATA


def test_split_is_deterministic_disjoint_and_complete() -> None:
    conversations = sft_data.read_examples(DEFAULT_DATA)
    first = sft_data.split_examples(conversations, 0.1, 0.1, 0, DEFAULT_DATA)
    again = sft_data.split_examples(conversations, 0.1, 0.1, 0, DEFAULT_DATA)
    assert first == again
    keys = {name: {json.dumps(c) for c in rows} for name, rows in first.items()}
    # No example is in two splits, and none is lost.
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    assert sum(len(k) for k in keys.values()) == len({json.dumps(c) for c in conversations})


def test_prompt_tokens_carry_no_loss(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    messages = [{"role": "user", "content": "Classify: Acme beats forecasts"},
                {"role": "assistant", "content": "positive"}]
    row = sft_data.tokenize(messages, tokenizer, max_length=128)
    labelled = [t for t, label in zip(row["input_ids"], row["labels"], strict=True)
                if label != sft_data.IGNORE_INDEX]
    # Exactly the answer and its end-of-turn marker are learned.
    assert tokenizer.decode(labelled).strip() == "positive<|end|>"
    prompt_len = row["labels"].index(next(x for x in row["labels"] if x != -100))
    assert "Acme beats forecasts" in tokenizer.decode(row["input_ids"][:prompt_len])


def test_truncation_keeps_the_answer(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    messages = [{"role": "user", "content": "word " * 200},
                {"role": "assistant", "content": "neutral"}]
    row = sft_data.tokenize(messages, tokenizer, max_length=32)
    assert len(row["input_ids"]) == 32
    assert tokenizer.decode([t for t, lab in zip(row["input_ids"], row["labels"], strict=True)
                             if lab != -100]).strip() == "neutral<|end|>"


def test_chat_messages_are_read_as_is(tmp_path: Path) -> None:
    data = tmp_path / "chat.jsonl"
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}]
    data.write_text(json.dumps({"messages": chat}) + "\n")
    assert sft_data.read_examples(data) == [chat]


def test_prepared_data_is_cached_by_content(tiny_model: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    settings = {"validation_fraction": 0.1, "test_fraction": 0.1, "max_length": 64, "seed": 0}
    first = sft_data.prepare(DEFAULT_DATA, tokenizer, tiny_model, settings, tmp_path)
    stamp = (first / "train.pt").stat().st_mtime_ns
    assert sft_data.prepare(DEFAULT_DATA, tokenizer, tiny_model, settings, tmp_path) == first
    assert (first / "train.pt").stat().st_mtime_ns == stamp  # not tokenised again
    other = sft_data.prepare(DEFAULT_DATA, tokenizer, tiny_model, {**settings, "seed": 1}, tmp_path)
    assert other != first


def test_bad_lines_name_the_line(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n["not", "an", "object"]\n')
    with pytest.raises(DataError, match="line 2: each line must be a JSON object"):
        sft_data.read_examples(data)
