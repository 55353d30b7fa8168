"""Instruction data for supervised fine-tuning: read, split, render, tokenise once per study.

A dataset is JSONL, one example a line: either ``instruction`` / ``input`` (optional) /
``output``, or chat ``messages`` (a list of ``{"role", "content"}`` ending with the assistant's
answer). Examples are rendered with the tokenizer's chat template; prompt tokens get label -100
so only the answer carries loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from objectives.base import LABELS, DataError
from objectives.metrics import find_labels
from objectives.splits import (
    cache_key,
    jsonl_rows,
    read_text,
    split_by_fractions,
    write_atomic,
    write_json,
)

IGNORE_INDEX = -100  # the label value transformers' loss skips


def read_examples(path: Path) -> list[list[dict[str, str]]]:
    """The dataset as conversations; raises InputError naming the file and line on bad data."""
    conversations = [_to_messages(example, path, number)
                     for number, example in jsonl_rows(read_text(path, "JSONL"), path)]
    if not conversations:
        raise DataError("data.path", "dataset is empty", source=path)
    return conversations


def _to_messages(example: Any, path: Path, number: int) -> list[dict[str, str]]:
    where = f"line {number}"
    if not isinstance(example, dict):
        raise DataError(where, "each line must be a JSON object", source=path)
    if "messages" in example:
        messages = example["messages"]
        ok = isinstance(messages, list) and len(messages) >= 2 and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in messages
        )
        if not ok or messages[-1]["role"] != "assistant":
            raise DataError(f"{where}.messages", "must be a list of {role, content} objects "
                            "ending with the assistant's answer", source=path)
        return messages
    for key in ("instruction", "output"):
        if not isinstance(example.get(key), str) or not example[key].strip():
            raise DataError(f"{where}.{key}", "missing or not a non-empty string (each line "
                            "needs instruction and output, or messages)", source=path)
    prompt = example["instruction"]
    if example.get("input"):
        prompt = f"{prompt}\n\n{example['input']}"
    return [{"role": "user", "content": prompt},
            {"role": "assistant", "content": example["output"]}]


def split_examples(
    conversations: list[list[dict[str, str]]],
    validation_fraction: float,
    test_fraction: float,
    seed: int,
    source: Path,
) -> dict[str, list[list[dict[str, str]]]]:
    """A deterministic train / validation / test split with no example in two splits."""
    return split_by_fractions(conversations, lambda c: json.dumps(c, sort_keys=True),
                              validation_fraction, test_fraction, seed, source)


def tokenize(messages: list[dict[str, str]], tokenizer, max_length: int) -> dict[str, list[int]]:
    """Token ids and labels of one conversation; the prompt's labels are IGNORE_INDEX."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False,
                                           add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if full_ids[:len(prompt_ids)] != prompt_ids:
        raise ValueError("the chat template renders the prompt differently inside the full text")
    labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids):]
    # Truncate the prompt's start, never the answer, so every example keeps its loss tokens.
    overflow = max(0, len(full_ids) - max_length)
    return {"input_ids": full_ids[overflow:], "labels": labels[overflow:]}


def prepare(
    data_path: Path, tokenizer, tokenizer_dir: Path, settings: dict[str, Any], root: Path,
    labels: list[str] | None = None,
) -> Path:
    """Tokenise every split once into ``root/<key>/``; return that folder.

    Beside each split's token ids: the prompt and reference answer of every validation and
    test example (``<split>.texts.json``, for evaluation by generation) and the closed answer
    set (``labels.json``: ``labels`` when given, else found from the training answers, else
    null for free text).
    """
    out = root / cache_key([data_path], tokenizer_dir, {**settings, "labels": labels,
                                                      "layout": 2})
    if (out / "train.pt").is_file():
        return out
    splits = split_examples(
        read_examples(data_path), settings["validation_fraction"], settings["test_fraction"],
        settings["seed"], data_path,
    )
    out.mkdir(parents=True, exist_ok=True)
    found = labels or find_labels([c[-1]["content"] for c in splits["train"]])
    write_json(out / LABELS, found)
    for name in ("validation", "test"):
        texts = [{"prompt": c[-2]["content"], "reference": c[-1]["content"]}
                 for c in splits[name]]
        write_json(out / f"{name}.texts.json", texts)
    for name in ("validation", "test", "train"):  # train last: its file marks a full cache
        rows = [tokenize(m, tokenizer, settings["max_length"]) for m in splits[name]]
        write_atomic(out / f"{name}.pt", lambda tmp, r=rows: torch.save(r, tmp))
    return out


def load_split(prepared: Path, name: str) -> list[dict[str, list[int]]]:
    return torch.load(prepared / f"{name}.pt")


def load_texts(prepared: Path, name: str) -> list[dict[str, str]]:
    """Prompt and reference answer of each example of a split, in the split's order."""
    return json.loads((prepared / f"{name}.texts.json").read_text(encoding="utf-8"))


def load_labels(prepared: Path) -> list[str] | None:
    return json.loads((prepared / LABELS).read_text(encoding="utf-8"))
