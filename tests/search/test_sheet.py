"""The blind rating sheet: write, fill in as a person would, read back."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from search.sheet import SHEET_COLUMNS, SheetError, read_ratings, sample_size, write_sheet

# (rating of a, rating of b) for 24 examples: a good 15 / acceptable 6 / bad 3, b good 4 /
# acceptable 8 / bad 12; a better in 4 + 12 = 16, worse in 2 + 1 = 3, tied 1 + 1 + 3 = 5.
PAIRS = ([("bad", "bad")] + [("bad", "acceptable")] * 2 + [("acceptable", "good")]
         + [("acceptable", "acceptable")] + [("acceptable", "bad")] * 4
         + [("good", "good")] * 3 + [("good", "acceptable")] * 5 + [("good", "bad")] * 7)


def make_rows(references: list[str]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Answers of two models; the prompts hold a comma, a quote, a new line and Chinese."""
    prompts = [f'问题 {i}, "quoted"\nsecond line' for i in range(len(references))]
    a_rows = [{"prompt": p, "reference": r, "prediction": f"a says {i}"}
              for i, (p, r) in enumerate(zip(prompts, references, strict=True))]
    b_rows = [{"prompt": p, "reference": r, "prediction": f"b says {i}"}
              for i, (p, r) in enumerate(zip(prompts, references, strict=True))]
    return a_rows, b_rows


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def write_csv(path: Path, records: list[dict[str, str]], columns=SHEET_COLUMNS) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, Path, list[dict[str, str]], dict[str, dict]]:
    """A 30-row sheet of free-text answers, its key, its rows and the key's rows by id."""
    a_rows, b_rows = make_rows([f"reference {i}" for i in range(30)])
    sheet, key = tmp_path / "sheet.csv", tmp_path / "key.csv"
    assert write_sheet(a_rows, b_rows, sheet, key, labels=None, minimum=30) == 30
    return sheet, key, read_csv(sheet), {row["id"]: row for row in read_csv(key)}


def fill(records: list[dict[str, str]], keys: dict[str, dict], pairs) -> None:
    """Rate the first len(pairs) rows with (a, b) ratings, written as people type them."""
    spellings = {"good": " Good", "acceptable": "ACCEPTABLE ", "bad": "bad"}
    for record, (a, b) in zip(records, pairs, strict=False):
        by_side = {"a": spellings[a], "b": spellings[b]}
        record["rating_1"] = by_side[keys[record["id"]]["answer_1"]]
        record["rating_2"] = by_side[keys[record["id"]]["answer_2"]]


def test_round_trip_of_ratings(written) -> None:
    sheet, key, records, keys = written
    assert list(records[0]) == list(SHEET_COLUMNS)
    assert all(record["rating_1"] == record["rating_2"] == "" for record in records)
    fill(records, keys, PAIRS)  # the last 6 rows stay unrated
    write_csv(sheet, records)
    result = read_ratings(sheet, key)
    assert result.n == 24
    assert result.a == {"good": 15, "acceptable": 6, "bad": 3}
    assert result.b == {"good": 4, "acceptable": 8, "bad": 12}
    assert (result.wins, result.losses, result.ties) == (16, 3, 5)
    # 16 wins against 3 losses: p = 2 * (1 + 19 + 171 + 969) / 2**19.
    assert result.p_value == pytest.approx(2320 / 524288)
    assert result.line() == (
        "ratings of 24 rows: a good 15 / acceptable 6 / bad 3, b good 4 / acceptable 8 / bad 12;"
        " a better in 16, worse in 3, tied 5; sign test p=0.0044")


def test_sheet_is_blind_and_the_key_names_each_answer(tmp_path: Path, written) -> None:
    sheet, key, records, keys = written
    a_rows, b_rows = make_rows([f"reference {i}" for i in range(30)])
    models = {"a": a_rows, "b": b_rows}
    firsts = Counter(keys[record["id"]]["answer_1"] for record in records)
    assert firsts["a"] > 5 and firsts["b"] > 5  # the order changes from row to row
    for record in records:
        i, sides = int(record["id"]), keys[record["id"]]
        assert {sides["answer_1"], sides["answer_2"]} == {"a", "b"}
        assert record["answer_1"] == models[sides["answer_1"]][i]["prediction"]
        assert record["answer_2"] == models[sides["answer_2"]][i]["prediction"]
        assert record["prompt"] == a_rows[i]["prompt"]
        assert record["reference"] == a_rows[i]["reference"]
    # The same seed writes the same files; another seed another order.
    again, again_key = tmp_path / "again.csv", tmp_path / "again_key.csv"
    write_sheet(a_rows, b_rows, again, again_key, labels=None, minimum=30)
    assert again.read_bytes() == sheet.read_bytes()
    assert again_key.read_bytes() == key.read_bytes()
    write_sheet(a_rows, b_rows, again, again_key, labels=None, minimum=30, seed=1)
    assert again_key.read_bytes() != key.read_bytes()


@pytest.mark.parametrize("seed", range(5))
def test_sample_keeps_each_label_share(tmp_path: Path, seed: int) -> None:
    # Plain random samples of 20 give 11/6/3, 8/11/1 and 14/4/2 for seeds 1, 3 and 4.
    references = ["Positive"] * 120 + ["negative"] * 60 + [" neutral"] * 20
    a_rows, b_rows = make_rows(references)
    sheet, key = tmp_path / "sheet.csv", tmp_path / "key.csv"
    labels = ["positive", "negative", "neutral"]
    assert write_sheet(a_rows, b_rows, sheet, key, labels=labels, seed=seed) == 20  # 5 % is 10
    records = read_csv(sheet)
    # 20 of 200 is a tenth of each label: 12, 6 and 2.
    assert Counter(record["reference"].strip().lower() for record in records) == {
        "positive": 12, "negative": 6, "neutral": 2}
    ids = [int(record["id"]) for record in records]
    assert ids == sorted(set(ids))
    assert all(records[k]["reference"] == references[i] for k, i in enumerate(ids))


def test_a_label_too_rare_to_stratify_falls_back_to_a_plain_sample(tmp_path: Path) -> None:
    a_rows, b_rows = make_rows(["yes"] * 60 + ["no"] * 39 + ["maybe"])
    sheet, key = tmp_path / "sheet.csv", tmp_path / "key.csv"
    assert write_sheet(a_rows, b_rows, sheet, key, labels=["yes", "no", "maybe"]) == 20
    ids = [int(record["id"]) for record in read_csv(sheet)]
    assert len(set(ids)) == 20 and all(0 <= i < 100 for i in ids)


@pytest.mark.parametrize(("n", "size"), [(7, 7), (20, 20), (100, 20), (400, 20), (401, 21),
                                         (1000, 50), (2017, 101)])
def test_sample_size_is_5_percent_at_least_20_at_most_all(n: int, size: int) -> None:
    assert sample_size(n) == size


def test_sample_size_of_a_fraction_float_rounds_up() -> None:
    assert sample_size(100, fraction=0.07, minimum=1) == 7  # 0.07 * 100 = 7.000000000000001
    assert sample_size(1000, fraction=0.2, minimum=300) == 300


def test_write_sheet_writes_the_sample_size(tmp_path: Path) -> None:
    for n, size in [(7, 7), (401, 21)]:
        a_rows, b_rows = make_rows([f"r{i}" for i in range(n)])
        sheet, key = tmp_path / f"sheet{n}.csv", tmp_path / f"key{n}.csv"
        assert write_sheet(a_rows, b_rows, sheet, key, labels=None) == size
        assert len(read_csv(sheet)) == len(read_csv(key)) == size


def test_missing_column(written) -> None:
    sheet, key, records, keys = written
    write_csv(sheet, records, columns=[c for c in SHEET_COLUMNS if c != "rating_2"])
    with pytest.raises(SheetError) as error:
        read_ratings(sheet, key)
    assert str(error.value) == f"{sheet}: column rating_2: not in the header"


def test_unknown_rating(written) -> None:
    sheet, key, records, keys = written
    fill(records, keys, PAIRS[:3])
    records[1]["rating_1"] = " gud "
    write_csv(sheet, records)
    with pytest.raises(SheetError) as error:
        read_ratings(sheet, key)
    assert str(error.value) == (
        f"{sheet}: row 3: column rating_1: unknown rating 'gud' (allowed: good, acceptable, bad)")
    assert error.value.row == 3


def _not_in_key(records: list[dict]) -> None:
    records[2]["id"] = "999"


def _rated_twice(records: list[dict]) -> None:
    records[2]["id"] = records[0]["id"]


def _one_rating(records: list[dict]) -> None:
    records[4]["rating_2"] = "  "


@pytest.mark.parametrize(("rated", "spoil", "message"), [
    (3, _not_in_key, "{sheet}: row 4: id '999' is not in the key {key}"),
    (3, _rated_twice, "{sheet}: row 4: id '0' is rated twice"),
    (5, _one_rating, "{sheet}: row 6: only one of the two answers is rated"),
], ids=["not-in-the-key", "rated-twice", "one-rating"])
def test_a_bad_row_is_named(written, rated: int, spoil, message: str) -> None:
    sheet, key, records, keys = written
    fill(records, keys, PAIRS[:rated])
    spoil(records)
    write_csv(sheet, records)
    with pytest.raises(SheetError) as error:
        read_ratings(sheet, key)
    assert str(error.value).startswith(message.format(sheet=sheet, key=key))


def test_sheet_with_no_rated_row(written) -> None:
    sheet, key, _, _ = written
    with pytest.raises(SheetError) as error:
        read_ratings(sheet, key)
    assert str(error.value) == f"{sheet}: no row is rated yet"


def test_missing_file(written, tmp_path: Path) -> None:
    sheet, key, _, _ = written
    with pytest.raises(SheetError) as error:
        read_ratings(sheet, tmp_path / "nokey.csv")
    assert str(error.value) == f"{tmp_path / 'nokey.csv'}: file not found"


def test_bad_key(written) -> None:
    sheet, key, records, keys = written
    rows = list(keys.values())
    rows[0]["answer_2"] = "c"
    write_csv(key, rows, columns=["id", "answer_1", "answer_2"])
    with pytest.raises(SheetError) as error:
        read_ratings(sheet, key)
    assert str(error.value).startswith(f"{key}: row 2: answers must be 'a' and 'b'")


def test_a_sheet_saved_with_a_byte_order_mark_reads(written) -> None:
    sheet, key, records, keys = written
    fill(records, keys, PAIRS)
    write_csv(sheet, records)
    sheet.write_bytes(b"\xef\xbb\xbf" + sheet.read_bytes())  # as spreadsheet programs save
    assert read_ratings(sheet, key).n == 24
