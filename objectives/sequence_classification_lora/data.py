"""Labelled texts for a classifier: read, clean, split, map labels to ids, tokenise once per
study (see objectives.data for the steps before tokenising).

An example is a ``text`` and its ``label``, one a row of a CSV (with a header), TSV, JSONL or
Parquet file; ``data.columns`` maps other column names to these (``{text: review, label:
sentiment}``). Labels are text as written (a number is read as its text); the label set is the
training split's, in sorted order, and a label of the validation or test data that training
never saw is an error naming its line. The tokenised splits are Arrow datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from objectives.base import DataError
from objectives.data import replay
from objectives.data.augment import training_set as augmented_training_set
from objectives.data.files import load_labels, prepared_folder, write_prepared
from objectives.data.pipeline import Built, Example, build, remembered
from objectives.data.reading import section_files
from objectives.sequence_classification_lora.config import LabelledData

FIELDS = ("text", "label")


def to_example(row: dict[str, Any], where: str, source: Path) -> Example:
    values = []
    for name in FIELDS:
        value = row.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}", f"{name!r} (data.columns.{name}) is empty or not text",
                            source=source)
        values.append(value)
    return Example((("text", values[0]),), values[1], where, str(source))


def build_splits(section: LabelledData, tokenizer) -> Built:
    """The cleaned, de-duplicated, leak-free splits and their report."""
    def count_tokens(texts: list[str]) -> list[list[tuple[int, int]]]:
        return tokenizer(texts, add_special_tokens=False,
                         return_offsets_mapping=True)["offset_mapping"]

    return remembered(section, [tokenizer.name_or_path], lambda: build(
        section, to_example, answers_are_labels=True, count_tokens=count_tokens,
        required=FIELDS))


def prepare(section: LabelledData, max_length: int, tokenizer, tokenizer_dir: Path,
            root: Path) -> tuple[Path, dict[str, Any]]:
    """Tokenise every split once into ``root/<key>/``; return that folder and the report.

    Each split is an Arrow dataset (input ids and class id per example) with its texts and
    label names beside it (``<split>.texts.json``: prompt and reference, the rows predictions
    are written from), the label set (``labels.json``) and ``data_report.json``.
    """
    settings = {**section.model_dump(mode="json", exclude={"path", "validation_path",
                                                           "test_path", "augment"}),
                "max_length": max_length, "objective": "sequence_classification"}
    old = replay.earlier_section(section)
    out, report = prepared_folder(
        root, [*section_files(section), *(section_files(old) if old else [])], tokenizer_dir,
        settings)
    if report is not None:
        return out, report
    examples, report, labels = replay.with_earlier(build_splits(section, tokenizer), section,
                                                   old, lambda old: build_splits(old, tokenizer))
    texts = {name: [{"prompt": e.prompt, "reference": e.answer} for e in rows]
             for name, rows in examples.items() if name != "train"}
    splits = {name: tokenized(rows, labels, tokenizer, max_length)
              for name, rows in examples.items()}
    return out, write_prepared(out, labels, report, examples["train"], texts, splits)


def tokenized(examples: list[Example], labels: list[str], tokenizer, max_length: int):
    """The examples' token ids and class ids as an Arrow dataset."""
    import datasets

    encoded = tokenizer([e.prompt for e in examples], truncation=True, max_length=max_length)
    ids = {label: i for i, label in enumerate(labels)}
    return datasets.Dataset.from_dict({"input_ids": encoded["input_ids"],
                                       "labels": [ids[e.answer] for e in examples]})


def training_set(prepared: Path, section: LabelledData, tokenizer, seed: int):
    """The training split with the trial's augmented copies (data.augment), and their
    number."""
    return augmented_training_set(prepared, section.augment, seed, lambda extra: tokenized(
        extra, load_labels(prepared), tokenizer, section.max_length))
