"""Labelled texts for a classifier: read, split, map labels to ids, tokenise once per study.

A dataset is CSV with a header row (``.csv``; ``.tsv`` tab-separated) or JSONL (one object a
line), with a text column and a label column named in the space. Labels are strings (a number
is read as its text); the label set is the training split's, in sorted order, and a label of
the validation or test data that training never saw is an error naming its line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from objectives.base import LABELS, DataError
from objectives.sequence_classification_lora.config import DataSection
from objectives.splits import (
    cache_key,
    first_of_each,
    jsonl_rows,
    read_text,
    split_by_fractions,
    write_atomic,
    write_json,
)


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    line: int  # where it is in its file, for errors
    source: Path


def read_examples(path: Path, section: DataSection) -> list[Example]:
    """The labelled texts of one file; DataError names the file and line or column at fault."""
    text = read_text(path, "CSV or JSONL")
    suffix = path.suffix.lower()
    rows = _csv_rows(text, "\t" if suffix == ".tsv" else ",", path, section) \
        if suffix in (".csv", ".tsv") else _jsonl_rows(text, path)
    examples = [_example(row, number, path, section) for number, row in rows]
    if not examples:
        raise DataError("data.path", "dataset is empty", source=path)
    return examples


def _csv_rows(text: str, delimiter: str, path: Path, section: DataSection):
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = reader.fieldnames or []
    for key in ("text_column", "label_column"):
        name = getattr(section, key)
        if name not in columns:
            raise DataError(f"data.{key}", f"no column {name!r} in {path.name} (its header: "
                            f"{', '.join(columns) or 'none'})")
    for row in reader:
        yield reader.line_num, row


def _jsonl_rows(text: str, path: Path):
    for number, row in jsonl_rows(text, path):
        if not isinstance(row, dict):
            raise DataError(f"line {number}", "each line must be a JSON object", source=path)
        yield number, row


def _example(row: dict[str, Any], number: int, path: Path, section: DataSection) -> Example:
    values = []
    for key in ("text_column", "label_column"):
        name = getattr(section, key)
        value = row.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if name not in row or row[name] is None:
            found = ", ".join(k for k in row if k is not None)
            raise DataError(f"line {number}", f"no {name!r} (data.{key}) in this row (it has: "
                            f"{found or 'nothing'})", source=path)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"line {number}", f"{name!r} (data.{key}) is empty or not text",
                            source=path)
        values.append(value.strip())
    return Example(values[0], values[1], number, path)


def _text(example: Example) -> str:
    return example.text


def split(section: DataSection) -> dict[str, list[Example]]:
    """Train, validation and test: the split files when given, else fractions of ``path``.

    Texts are one example however often they occur (the first is kept); with split files, a
    validation or test text also in training is removed from training, so no figure is
    measured on what the model trained on.
    """
    path = Path(section.path)
    if section.validation_path is None:
        splits = split_by_fractions(read_examples(path, section), _text,
                                    section.validation_fraction, section.test_fraction,
                                    section.seed, path)
    else:
        held_out = {name: first_of_each(read_examples(Path(file), section), _text) for name, file in
                    (("validation", section.validation_path), ("test", section.test_path))}
        seen = {e.text for examples in held_out.values() for e in examples}
        splits = {"train": [e for e in first_of_each(read_examples(path, section), _text)
                            if e.text not in seen], **held_out}
        if not splits["train"]:
            raise DataError("data.path", "every training text is also in the validation or "
                            "test file", source=path)
    labels = label_set(splits["train"])
    for name in ("validation", "test"):
        for example in splits[name]:
            if example.label not in labels:
                raise DataError(f"line {example.line}", f"label {example.label!r} is not one "
                                f"of the training split's labels ({', '.join(labels)})",
                                source=example.source)
    return splits


def label_set(train: list[Example]) -> list[str]:
    """The classes, sorted: class id i is ``labels[i]``."""
    labels = sorted({e.label for e in train})
    if len(labels) < 2:
        raise DataError("data.label_column", f"the training split has {len(labels)} label; a "
                        "classifier needs two or more", source=train[0].source)
    return labels


def prepare(section: DataSection, tokenizer, tokenizer_dir: Path, root: Path) -> Path:
    """Tokenise every split once into ``root/<key>/``; return that folder.

    Each split is ``<split>.pt`` (input ids and class id per example) with its texts and label
    names beside it (``<split>.texts.json``: prompt and reference, the rows predictions are
    written from) and the label set (``labels.json``).
    """
    files = [Path(p) for p in (section.path, section.validation_path, section.test_path) if p]
    out = root / cache_key(files, tokenizer_dir, {**section.model_dump(exclude={
        "path", "validation_path", "test_path"}), "objective": "sequence_classification"})
    if (out / "train.pt").is_file():
        return out
    splits = split(section)
    labels = label_set(splits["train"])
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / LABELS, labels)
    for name in ("validation", "test", "train"):  # train last: its file marks a full cache
        examples = splits[name]
        write_json(out / f"{name}.texts.json",
                   [{"prompt": e.text, "reference": e.label} for e in examples])
        encoded = tokenizer([e.text for e in examples], truncation=True,
                            max_length=section.max_length)
        rows = [{"input_ids": ids, "labels": labels.index(e.label)}
                for ids, e in zip(encoded["input_ids"], examples, strict=True)]
        write_atomic(out / f"{name}.pt", lambda tmp, r=rows: torch.save(r, tmp))
    return out


def load_split(prepared: Path, name: str) -> list[dict[str, Any]]:
    return torch.load(prepared / f"{name}.pt")


def load_texts(prepared: Path, name: str) -> list[dict[str, str]]:
    return json.loads((prepared / f"{name}.texts.json").read_text(encoding="utf-8"))


def load_labels(prepared: Path) -> list[str]:
    return json.loads((prepared / LABELS).read_text(encoding="utf-8"))
