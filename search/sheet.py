"""A blind A/B rating sheet: a sample of test answers of two models for people to rate.

``write_sheet`` writes two CSV files: the sheet, with the two answers of each example in a random
order and empty ``rating_1`` / ``rating_2`` columns to fill with good, acceptable or bad, and a
key naming the model ("a" or "b") behind each answer. ``read_ratings`` joins them back.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from search.significance import sign_test

LEVELS = ("good", "acceptable", "bad")  # best first
SHEET_COLUMNS = ("id", "prompt", "reference", "answer_1", "answer_2", "rating_1", "rating_2")
KEY_COLUMNS = ("id", "answer_1", "answer_2")


class SheetError(ValueError):
    """A sheet or key that cannot be read; the message is one line naming the file and the row.

    Rows are numbered as a spreadsheet shows them: the header is row 1.
    """

    def __init__(self, path: str | Path, row: int | None, problem: str, field: str = "") -> None:
        self.path, self.row, self.problem, self.field = str(path), row, problem, field
        where = [self.path]
        if row is not None:
            where.append(f"row {row}")
        if field:
            where.append(f"column {field}")
        super().__init__(": ".join([*where, problem]))


@dataclass
class RatingResult:
    """The ratings of a sheet per model, and how often a was rated above b."""

    n: int
    a: dict[str, int]
    b: dict[str, int]
    wins: int
    losses: int
    ties: int
    p_value: float

    def line(self) -> str:
        """A one-line summary."""
        def levels(counts: dict[str, int]) -> str:
            return " / ".join(f"{level} {counts[level]}" for level in LEVELS)

        return (f"ratings of {self.n} rows: a {levels(self.a)}, b {levels(self.b)}; "
                f"a better in {self.wins}, worse in {self.losses}, tied {self.ties}; "
                f"sign test p={self.p_value:.2g}")


def sample_size(n: int, fraction: float = 0.05, minimum: int = 20) -> int:
    """How many of n examples go on a sheet: ``fraction`` of them, at least ``minimum``."""
    return min(n, max(minimum, math.ceil(round(fraction * n, 9))))  # 0.07 * 100 is 7.000...1


def write_sheet(a_rows: list[dict[str, str]], b_rows: list[dict[str, str]], sheet: Path,
                key: Path, labels: list[str] | None, seed: int = 0, fraction: float = 0.05,
                minimum: int = 20) -> int:
    """Write a blind sheet of a sample of the examples and its key; returns the number of rows.

    Rows are dicts with ``prompt``, ``reference`` and ``prediction``, the same examples in the
    same order for both models. With labels the sample keeps each reference label's share.
    """
    if len(a_rows) != len(b_rows):
        raise ValueError(f"{len(a_rows)} answers of a but {len(b_rows)} of b")
    references = [row["reference"] for row in a_rows]
    size = sample_size(len(a_rows), fraction, minimum)
    ids = _sample(references, size, stratify=labels is not None, seed=seed)
    rng = random.Random(seed)
    with sheet.open("w", newline="", encoding="utf-8") as sheet_file, \
            key.open("w", newline="", encoding="utf-8") as key_file:
        sheet_writer, key_writer = csv.writer(sheet_file), csv.writer(key_file)
        sheet_writer.writerow(SHEET_COLUMNS)
        key_writer.writerow(KEY_COLUMNS)
        for i in ids:
            sides = rng.sample("ab", 2)
            answers = {"a": a_rows[i]["prediction"], "b": b_rows[i]["prediction"]}
            sheet_writer.writerow([i, a_rows[i]["prompt"], references[i],
                                   answers[sides[0]], answers[sides[1]], "", ""])
            key_writer.writerow([i, *sides])
    return len(ids)


def read_ratings(sheet: Path, key: Path) -> RatingResult:
    """The filled-in ratings of a sheet, per model; rows with neither rating are skipped."""
    sides = _read_key(key)
    counts = {"a": dict.fromkeys(LEVELS, 0), "b": dict.fromkeys(LEVELS, 0)}
    wins = losses = ties = 0
    rated: set[str] = set()
    for row, record in _records(sheet, ("id", "rating_1", "rating_2")):
        ratings = [_rating(sheet, row, record, field) for field in ("rating_1", "rating_2")]
        if ratings == ["", ""]:
            continue
        if "" in ratings:
            raise SheetError(sheet, row, "only one of the two answers is rated")
        example = record["id"].strip()
        if example not in sides:
            raise SheetError(sheet, row, f"id {example!r} is not in the key {key}")
        if example in rated:
            raise SheetError(sheet, row, f"id {example!r} is rated twice")
        rated.add(example)
        by_side = dict(zip(sides[example], ratings, strict=True))
        for side in "ab":
            counts[side][by_side[side]] += 1
        a_rank, b_rank = LEVELS.index(by_side["a"]), LEVELS.index(by_side["b"])
        wins += a_rank < b_rank
        losses += a_rank > b_rank
        ties += a_rank == b_rank
    n = wins + losses + ties
    if n == 0:
        raise SheetError(sheet, None, "no row is rated yet")
    return RatingResult(n, counts["a"], counts["b"], wins, losses, ties, sign_test(wins, losses))


def _sample(references: list[str], size: int, stratify: bool, seed: int) -> list[int]:
    """Sorted example ids: stratified by reference label where every label can be, else plain."""
    ids = list(range(len(references)))
    if size == len(ids):
        return ids
    if stratify:
        from sklearn.model_selection import train_test_split  # 1 s: only for a sheet

        try:
            chosen, _ = train_test_split(ids, train_size=size, random_state=seed,
                                         stratify=[text.strip().casefold() for text in references])
            return sorted(chosen)
        except ValueError:  # a label with a single example, or more labels than rows
            pass
    return sorted(random.Random(seed).sample(ids, size))


def _read_key(key: Path) -> dict[str, tuple[str, str]]:
    """Per example id, the models behind answer_1 and answer_2."""
    sides = {}
    for row, record in _records(key, KEY_COLUMNS):
        pair = (record["answer_1"].strip(), record["answer_2"].strip())
        if sorted(pair) != ["a", "b"]:
            raise SheetError(key, row, f"answers must be 'a' and 'b', not {pair[0]!r} and "
                             f"{pair[1]!r}")
        sides[record["id"].strip()] = pair
    return sides


def _records(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number, record) of a CSV file that must have ``columns``; a BOM is allowed."""
    if not path.is_file():
        raise SheetError(path, None, "file not found")
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        for column in columns:
            if column not in (reader.fieldnames or ()):
                raise SheetError(path, None, "not in the header", field=column)
        for row, record in enumerate(reader, start=2):
            yield row, {name: value or "" for name, value in record.items()}


def _rating(sheet: Path, row: int, record: dict[str, str], field: str) -> str:
    rating = record[field].strip().casefold()
    if rating and rating not in LEVELS:
        raise SheetError(sheet, row, f"unknown rating {record[field].strip()!r} "
                         f"(allowed: {', '.join(LEVELS)})", field=field)
    return rating
