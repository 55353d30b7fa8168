"""Instruction data: splits without overlap, prompts without loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from objectives.base import DataError
from objectives.causal_lm_lora import data as sft_data
from objectives.causal_lm_lora.config import DEFAULT_DATA, DataSection
from objectives.data.files import load_split


def test_split_is_deterministic_disjoint_and_complete(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    first = sft_data.build_splits(DataSection(), tokenizer, None).splits
    again = sft_data.build_splits(DataSection(), tokenizer, None).splits
    assert first == again
    keys = {name: {e.key for e in rows} for name, rows in first.items()}
    # No prompt is in two splits, and none is lost.
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    assert [len(first[name]) for name in ("train", "validation", "test")] == [960, 120, 120]


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
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}]
    example = sft_data.to_example({"messages": chat}, "line 1", tmp_path)
    assert sft_data.conversation(example) == chat


def test_prepared_data_is_cached_by_content(tiny_model: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    section = DataSection()
    first, report = sft_data.prepare(section, 64, tokenizer, tiny_model, None, tmp_path)
    stamp = (first / "train" / "dataset_info.json").stat().st_mtime_ns
    assert sft_data.prepare(section, 64, tokenizer, tiny_model, None, tmp_path) == (first, report)
    assert (first / "train" / "dataset_info.json").stat().st_mtime_ns == stamp  # not again
    other, _ = sft_data.prepare(section.model_copy(update={"seed": 1}), 64, tokenizer,
                                tiny_model, None, tmp_path)
    assert other != first
    train = load_split(first, "train")
    assert train.num_rows == 960 and train.column_names == ["input_ids", "labels"]
    assert report["summary"] == "data: 1200 rows -> 1200; labels 1.1 : 1 in train"


def test_bad_rows_name_the_line(tmp_path: Path, tiny_model: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n["not", "an", "object"]\n')
    with pytest.raises(DataError, match="line 2: each line must be a JSON object"):
        sft_data.build_splits(DataSection(path=str(path)),
                              AutoTokenizer.from_pretrained(tiny_model), None)


def test_csv_with_a_column_mapping(tmp_path: Path, tiny_model: Path) -> None:
    rows = [json.loads(line) for line in DEFAULT_DATA.read_text().splitlines()]
    path = tmp_path / "news.csv"
    path.write_text("\ufeffask,headline,answer\n" + "".join(
        f'"{r["instruction"]}","{r["input"]}",{r["output"]}\n' for r in rows), encoding="utf-8")
    section = DataSection(path=str(path), columns={"instruction": "ask", "input": "headline",
                                                   "output": "answer"})
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    from_csv = sft_data.build_splits(section, tokenizer, None).splits
    from_jsonl = sft_data.build_splits(DataSection(), tokenizer, None).splits
    assert [e.turns for e in from_csv["test"]] == [e.turns for e in from_jsonl["test"]]
