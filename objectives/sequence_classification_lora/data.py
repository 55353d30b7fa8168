"""Labelled texts for a classifier: read, clean, split, map labels to ids, tokenise once per
study (see objectives.data for the steps before tokenising).

An example is a ``text`` and its ``label``, one a row of a CSV (with a header), TSV, JSONL or
Parquet file; ``data.columns`` maps other column names to these (``{text: review, label:
sentiment}``). Labels are text as written (a number is read as its text); the label set is the
training split's, in sorted order, and a label of the validation or test data that training
never saw is an error naming its line. The tokenised splits are Arrow datasets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from objectives.base import DATA_REPORT, LABELS, DataError
from objectives.data.augment import training_set as augmented_training_set
from objectives.data.files import cache_key, save_dataset, section_files, write_json
from objectives.data.pipeline import (
    TRAIN_EXAMPLES,
    Built,
    Example,
    build,
    remembered,
    write_examples,
)
from objectives.sequence_classification_lora.config import DataSection

FIELDS = ("text", "label")


def to_example(row: dict[str, Any], where: str, source: Path) -> Example:
    values = []
    for name in FIELDS:
        value = row.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if name not in row:
            found = ", ".join(k for k in row if k is not None)
            raise DataError(f"{where}", f"no {name!r} (data.columns.{name}) in this row (it "
                            f"has: {found or 'nothing'})", source=source)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}", f"{name!r} (data.columns.{name}) is empty or not text",
                            source=source)
        values.append(value)
    return Example((("text", values[0]),), values[1], where, str(source))


def build_splits(section: DataSection, tokenizer) -> Built:
    """The cleaned, de-duplicated, leak-free splits and their report."""
    def count_tokens(texts: list[str]) -> list[list[tuple[int, int]]]:
        return tokenizer(texts, add_special_tokens=False,
                         return_offsets_mapping=True)["offset_mapping"]

    return remembered(section, [tokenizer.name_or_path], lambda: build(
        section, to_example, answers_are_labels=True, count_tokens=count_tokens,
        required=FIELDS))


def prepare(section: DataSection, max_length: int, tokenizer, tokenizer_dir: Path,
            root: Path) -> tuple[Path, dict[str, Any]]:
    """Tokenise every split once into ``root/<key>/``; return that folder and the report.

    Each split is an Arrow dataset (input ids and class id per example) with its texts and
    label names beside it (``<split>.texts.json``: prompt and reference, the rows predictions
    are written from), the label set (``labels.json``) and ``data_report.json``.
    """
    import datasets

    settings = {**section.model_dump(mode="json", exclude={"path", "validation_path",
                                                           "test_path", "augment"}),
                "max_length": max_length, "objective": "sequence_classification"}
    out = root / cache_key(section_files(section), tokenizer_dir, settings)
    if (out / "train" / "dataset_info.json").is_file():
        return out, json.loads((out / DATA_REPORT).read_text(encoding="utf-8"))
    built = build_splits(section, tokenizer)
    labels = built.labels
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / LABELS, labels)
    write_json(out / DATA_REPORT, built.report)
    write_examples(out / TRAIN_EXAMPLES, built.splits["train"])
    datasets.disable_progress_bars()
    for name in ("validation", "test", "train"):  # train last: its folder marks a full cache
        examples = built.splits[name]
        write_json(out / f"{name}.texts.json",
                   [{"prompt": e.prompt, "reference": e.answer} for e in examples])
        save_dataset(tokenized(examples, labels, tokenizer, max_length), out / name)
    return out, built.report


def tokenized(examples: list[Example], labels: list[str], tokenizer, max_length: int):
    """The examples' token ids and class ids as an Arrow dataset."""
    import datasets

    encoded = tokenizer([e.prompt for e in examples], truncation=True, max_length=max_length)
    ids = {label: i for i, label in enumerate(labels)}
    return datasets.Dataset.from_dict({"input_ids": encoded["input_ids"],
                                       "labels": [ids[e.answer] for e in examples]})


def training_set(prepared: Path, section: DataSection, tokenizer, seed: int):
    """The training split with the trial's augmented copies (data.augment), and their
    number."""
    return augmented_training_set(prepared, section.augment, seed, lambda extra: tokenized(
        extra, load_labels(prepared), tokenizer, section.max_length))


def load_split(prepared: Path, name: str):
    """A split's tokenised examples: a memory-mapped Arrow dataset."""
    import datasets

    return datasets.load_from_disk(str(prepared / name))


def load_texts(prepared: Path, name: str) -> list[dict[str, str]]:
    return json.loads((prepared / f"{name}.texts.json").read_text(encoding="utf-8"))


def load_labels(prepared: Path) -> list[str]:
    return json.loads((prepared / LABELS).read_text(encoding="utf-8"))
