"""The data pipeline end to end on files written by hand: what each rule removes, the split,
the leakage guard, class balance and the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from objectives.base import DataError
from objectives.causal_lm_lora import data as causal_data
from objectives.causal_lm_lora.config import DataSection as CausalData
from objectives.data.pipeline import Example, build
from objectives.data.section import DataFiles
from objectives.sections import local_model
from objectives.sequence_classification_lora import data as classifier_data
from objectives.sequence_classification_lora.config import MINILM
from objectives.sequence_classification_lora.config import DataSection as ClassifierData

FULL_WIDTH = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}


def rows() -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Training rows with 12 exact duplicates, 8 normalised duplicates (full-width letters,
    doubled spaces, upper case) and 100 : 20 classes (5 : 1); a validation file that repeats
    6 training rows in another form; a test file of new rows."""
    up = [(f"Company {i} profits rise", "up") for i in range(100)]
    down = [(f"Company {i} profits fall", "down") for i in range(20)]
    train = up + down
    exact = train[:12]
    near = [("".join(FULL_WIDTH.get(c, c) for c in up[20][0]), "up"),
            (up[21][0].replace(" ", "  "), "up"),
            (up[22][0].upper(), "up"),
            (up[23][0].replace(" ", "   ") + " ", "up"),
            ("".join(FULL_WIDTH.get(c, c) for c in down[15][0]), "down"),
            (down[16][0].upper(), "down"),
            (up[24][0] + "!", "up"),
            (up[25][0].lower(), "up")]
    validation = [(text.upper(), label) for text, label in up[40:46]] + \
        [(f"Firm {i} profits rise", "up") for i in range(5)] + \
        [(f"Firm {i} profits fall", "down") for i in range(5)]
    test = [(f"Bank {i} profits rise", "up") for i in range(5)] + \
        [(f"Bank {i} profits fall", "down") for i in range(5)]
    return train + exact + near, validation, test


def write_csv(path: Path, table: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as out:  # with a BOM
        writer = csv.writer(out)
        writer.writerow(["headline", "sentiment"])
        writer.writerows(table)
    return path


def write_jsonl(path: Path, table: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"headline": t, "sentiment": s}, ensure_ascii=False)
                            + "\n" for t, s in table), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(local_model(MINILM))


@pytest.mark.parametrize("write", [write_csv, write_jsonl], ids=["csv-bom", "jsonl"])
def test_the_report_counts_exactly_what_each_rule_removed(write, tmp_path, tokenizer):
    train, validation, test = rows()
    suffix = ".csv" if write is write_csv else ".jsonl"
    section = ClassifierData(
        path=str(write(tmp_path / f"train{suffix}", train)),
        validation_path=str(write(tmp_path / f"val{suffix}", validation)),
        test_path=str(write(tmp_path / f"test{suffix}", test)),
        columns={"text": "headline", "label": "sentiment"},
        clean={"max_class_ratio": 3})
    built = classifier_data.build_splits(section, tokenizer)
    report = built.report
    removed = {step["rule"]: step["removed"] for step in report["steps"]}
    assert removed == {"duplicates": 12, "near_duplicates": 8, "leaks": 6,
                       "max_class_ratio": 34, "nfkc": 0, "collapse_whitespace": 0}
    assert [f["rows"] for f in report["files"]] == [140, 16, 10]
    assert report["rows_read"] == 166 and report["rows_kept"] == 80 + 16 + 10
    assert report["train_labels_before_balancing"] == {"down": 20, "up": 94}
    assert report["splits"]["train"]["labels"] == {"down": 20, "up": 60}  # 3 : 1
    assert report["summary"] == ("data: 166 rows -> 106 (12 duplicates, 8 near-duplicates, "
                                 "6 leaks removed from train, 34 down-sampled); labels "
                                 "3.0 : 1 after balancing")
    # No normalised prompt is in two splits.
    keys = {name: {e.key for e in built.splits[name]} for name in built.splits}
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    # What the cleaning changed is shown before -> after, with its place in the file.
    changed = {step["rule"]: step for step in report["steps"]}
    assert changed["nfkc"]["changed"] == 2
    first_line = 2 if suffix == ".csv" else 1  # a CSV's line 1 is its header
    assert changed["nfkc"]["examples"][0]["where"] == f"line {132 + first_line}"
    assert changed["leaks"]["examples"][0]["after"].endswith(f"val{suffix} line {first_line}")


def test_leaks_can_be_refused_naming_the_first_overlap(tmp_path, tokenizer):
    train, validation, test = rows()
    section = ClassifierData(
        path=str(write_csv(tmp_path / "train.csv", train)),
        validation_path=str(write_csv(tmp_path / "val.csv", validation)),
        test_path=str(write_csv(tmp_path / "test.csv", test)),
        columns={"text": "headline", "label": "sentiment"}, leakage="error")
    with pytest.raises(DataError) as error:
        classifier_data.build_splits(section, tokenizer)
    assert str(error.value) == (f"{tmp_path / 'val.csv'}: line 2: repeats line 42 of the "
                                "training file train.csv (data.leakage: error)")


def test_fractions_keep_variants_of_one_prompt_in_one_split(tmp_path, tokenizer):
    texts = [(f"Company {i} profits rise", "up" if i % 2 else "down") for i in range(40)]
    variants = [(text.upper() + "!", label) for text, label in texts]
    section = ClassifierData(path=str(write_csv(tmp_path / "d.csv", texts + variants)),
                             columns={"text": "headline", "label": "sentiment"},
                             clean={"near_duplicates": False})
    built = classifier_data.build_splits(section, tokenizer)
    keys = {name: [e.key for e in built.splits[name]] for name in built.splits}
    assert sum(map(len, keys.values())) == 80
    assert not set(keys["train"]) & set(keys["validation"] + keys["test"])
    assert not set(keys["validation"]) & set(keys["test"])


def test_causal_instruction_records_balance_on_their_found_labels(tmp_path, tiny_model):
    train, validation, test = rows()
    def records(path: Path, table):
        path.write_text("".join(json.dumps({"instruction": "Classify:", "input": t,
                                            "output": s}) + "\n" for t, s in table))
        return str(path)
    section = CausalData(path=records(tmp_path / "t.jsonl", train),
                         validation_path=records(tmp_path / "v.jsonl", validation),
                         test_path=records(tmp_path / "s.jsonl", test),
                         clean={"max_class_ratio": 3})
    built = causal_data.build_splits(section, AutoTokenizer.from_pretrained(tiny_model), None)
    assert built.labels == ["down", "up"]
    assert built.report["splits"]["train"]["labels"] == {"down": 20, "up": 60}


def test_long_texts_are_truncated_to_max_tokens_or_dropped(tmp_path, tokenizer):
    table = [("word " * 50 + "end", "up"), ("short one", "down"), ("short two", "up"),
             *[(f"filler {i}", "down") for i in range(20)]]
    path = write_csv(tmp_path / "d.csv", table)
    section = ClassifierData(path=str(path), columns={"text": "headline", "label": "sentiment"},
                             clean={"max_tokens": 10})
    built = classifier_data.build_splits(section, tokenizer)
    texts = [e.prompt for split in built.splits.values() for e in split]
    assert "word " * 9 + "word" in texts and not any("end" in t for t in texts)
    dropped = classifier_data.build_splits(section.model_copy(update={"clean": section.clean
                                           .model_copy(update={"long_texts": "drop"})}),
                                           tokenizer)
    assert dropped.report["steps"][0] == {"rule": "max_tokens", "removed": 1, "changed": 0,
                                          "examples": [{"where": "line 2", "before":
                                                        "word " * 50 + "end"}],
                                          "seconds": None}


def test_the_rule_that_removes_the_last_rows_is_named(tmp_path, tokenizer):
    path = write_csv(tmp_path / "d.csv", [("\x00\x01", "up"), ("\u200b", "down")])
    section = ClassifierData(path=str(path), columns={"text": "headline", "label": "sentiment"})
    with pytest.raises(DataError, match=r"no example is left: cleaning left every example "
                       r"empty \(empty\)"):
        classifier_data.build_splits(section, tokenizer)


def test_noisy_training_examples_are_dropped_by_perplexity(tmp_path):
    texts = [(f"text {i}", "up" if i % 2 else "down") for i in range(30)]
    path = write_csv(tmp_path / "d.csv", texts)
    section = DataFiles(path=str(path), columns={"text": "headline", "label": "sentiment"},
                        clean={"max_perplexity": 150})

    def to_example(row, where, source):
        return Example((("text", row["text"]),), row["label"], where, str(source))

    def perplexities(examples: list[Example]) -> list[float]:  # "text 7" is noise
        return [500.0 if e.prompt == "text 7" else 20.0 for e in examples]

    built = build(section, to_example, answers_are_labels=True, perplexities=perplexities)
    step = next(s for s in built.report["steps"] if s["rule"] == "max_perplexity")
    in_train = any(e.prompt == "text 7" for e in
                   [*built.splits["validation"], *built.splits["test"]])
    assert step["removed"] == (0 if in_train else 1) and step["seconds"] is not None
    assert not any(e.prompt == "text 7" for e in built.splits["train"])
    with pytest.raises(DataError, match="needs a causal language model"):
        build(section, to_example, answers_are_labels=True)


def test_the_reference_model_scores_its_own_text_below_noise(tiny_model):
    from objectives.data.perplexity import perplexities

    corpus = (Path(__file__).resolve().parents[3] / "data" / "finance_news.txt")
    lines = corpus.read_text().splitlines()[:4]
    noise = ["qzx vbn plk wrt", "zzzz qqqq xxxx jjjj kkkk"]
    scores = perplexities(str(tiny_model), lines + noise, batch_size=3)
    assert all(1 < s < 1e6 for s in scores)
    assert max(scores[:4]) < min(scores[4:])  # the model was pre-trained on that text
    # Batching does not change a text's score (padding is masked out).
    alone = perplexities(str(tiny_model), lines[:1])
    assert alone[0] == pytest.approx(scores[0], rel=1e-4)


def test_the_causal_objective_filters_by_its_base_models_perplexity(tmp_path, tiny_model):
    from objectives.causal_lm_lora.config import CausalLMConfig, reference_model
    from objectives.data.perplexity import perplexities

    lines = (Path(__file__).resolve().parents[3] / "data" / "finance_news.txt").read_text()
    texts = lines.splitlines()[:40] + [f"qzx vbn plk wrt {i} zzzz jjjj" for i in range(4)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"instruction": text, "output": "ok"}) + "\n"
                            for text in texts))
    # A threshold between the news lines (the model's pre-training text) and the noise.
    scores = perplexities(str(tiny_model), [f"{t}\nok" for t in texts])
    limit = (max(scores[:40]) + min(scores[40:])) / 2
    config = CausalLMConfig.model_validate({"data": {"path": str(path),
                                                     "clean": {"max_perplexity": limit}}})
    assert reference_model(config) == str(tiny_model)  # the embedded base model
    built = causal_data.build_splits(config.data, AutoTokenizer.from_pretrained(tiny_model),
                                     reference_model(config))
    held_out = [e for name in ("validation", "test") for e in built.splits[name]]
    noise_in_train = 4 - sum(e.prompt.startswith("qzx") for e in held_out)
    step = next(s for s in built.report["steps"] if s["rule"] == "max_perplexity")
    assert step["removed"] == noise_in_train > 0
    assert not any(e.prompt.startswith("qzx") for e in built.splits["train"])
    assert len(built.splits["train"]) + len(held_out) == 44 - noise_in_train
