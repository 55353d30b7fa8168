"""Reading data files with 🤗 datasets: JSONL / JSON, CSV / TSV and Parquet, a file or a folder.

``datasets`` reads the file into Arrow (cached and memory-mapped by the library), a UTF-8 BOM
included; rows come back as dicts with the space's column mapping applied, each with where it
is in its file (``line N`` for JSONL and CSV, ``row N`` for JSON and Parquet), for errors and
the data report.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objectives.base import DataError
from objectives.data.section import DataFiles

KINDS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
TEXT_KINDS = (".txt", ".md")


@dataclass
class Table:
    """The rows of one file and each row's place in it."""

    path: Path
    rows: list[dict[str, Any]]
    places: list[str]


def data_files(path: Path, field: str = "data.path") -> list[Path]:
    """The file, or the data files of a folder (one kind, sorted by name)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in KINDS)
        kinds = {KINDS[p.suffix.lower()] for p in files}
        if not files:
            raise DataError(field, f"the folder holds no {', '.join(KINDS)} file", source=path)
        if len(kinds) > 1:
            raise DataError(field, "the folder mixes file kinds; keep one kind in it",
                            source=path)
        return files
    if not path.is_file():
        raise DataError(field, "dataset file not found", source=path)
    if path.suffix.lower() not in KINDS:
        raise DataError(field, f"unknown file kind {path.suffix or '(no suffix)'!r}; use "
                        f"{', '.join(KINDS)}", source=path)
    return [path]


def section_files(section: DataFiles) -> list[Path]:
    """Every data file a data section names (folders listed), for the cache key."""
    named = (("data.path", section.path), ("data.validation_path", section.validation_path),
             ("data.test_path", section.test_path))
    return [file for field, path in named if path for file in data_files(Path(path), field)]


def read_table(path: Path, columns: dict[str, str], field: str = "data.path",
               required: tuple[str, ...] = ()) -> Table:
    """One data file's rows, columns renamed by ``columns`` (the objective's field -> the
    file's column); each of the ``required`` fields must be a column."""
    import datasets

    datasets.disable_progress_bars()
    suffix = path.suffix.lower()
    kind = KINDS[suffix]
    _check_text(path, kind)
    options: dict[str, Any] = {}
    if kind == "csv":
        # Every cell as text, as written: no numbers guessed, "NA" or "null" are not missing.
        sep = "\t" if suffix == ".tsv" else ","
        with path.open(encoding="utf-8-sig", newline="") as stream:
            header = next(csv.reader(stream, delimiter=sep), [])
        options = {"encoding": "utf-8-sig", "keep_default_na": False, "sep": sep,
                   "features": datasets.Features({name: datasets.Value("string")
                                                  for name in header})}
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL + 1)  # errors are ours to say
    try:
        table = datasets.load_dataset(kind, data_files=str(path), split="train", **options)
    except Exception as error:  # the library's errors wrap the parser's
        raise _unreadable(path, kind, error) from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    wanted = {**{name: name for name in required}, **columns}
    missing = {field_name: column for field_name, column in wanted.items()
               if column not in table.column_names}
    if missing:
        name, column = next(iter(missing.items()))
        header = ", ".join(table.column_names) or "none"
        hint = " (does the file have a header row?)" if kind == "csv" else ""
        raise DataError(f"data.columns.{name}", f"no column {column!r} in {path.name} (its "
                        f"columns: {header}){hint}")
    renames = {column: name for name, column in columns.items() if column != name}
    rows = table.rename_columns(renames).to_list() if renames else table.to_list()
    return Table(path, rows, _places(path, kind, len(rows)))


def _check_text(path: Path, kind: str) -> None:
    """UTF-8 text with something in it (a Parquet file is checked by its reader)."""
    if kind == "parquet":
        return
    empty = True
    try:
        with path.open(encoding="utf-8-sig") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), ""):
                empty = empty and not chunk.strip()
    except UnicodeDecodeError:
        raise DataError("data.path", "dataset is not UTF-8 text", source=path) from None
    if empty:
        raise DataError("data.path", "dataset is empty", source=path)


def _unreadable(path: Path, kind: str, error: Exception) -> DataError:
    """The first bad line of a JSONL file, else the parser's own message."""
    if kind == "json" and path.suffix.lower() == ".jsonl":
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as bad:
                return DataError(f"line {number}", f"invalid JSON: {bad.msg}", source=path)
            if not isinstance(value, dict):
                return DataError(f"line {number}", "each line must be a JSON object",
                                 source=path)
    cause = error.__cause__ or error.__context__ or error
    message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return DataError("data.path", f"cannot be read as {kind}: {message}", source=path)


def _places(path: Path, kind: str, count: int) -> list[str]:
    """Each row's place: the line it starts on (JSONL: blank lines are no row; CSV: the
    header is line 1 and a quoted cell may span lines), else its row number."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8-sig") as stream:
            places = [f"line {n}" for n, line in enumerate(stream, 1) if line.strip()]
    elif kind == "csv":
        places, end = [], 0
        with path.open(encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream, delimiter="\t" if suffix == ".tsv" else ",")
            for cells in reader:
                if cells:
                    places.append(f"line {end + 1}")
                end = reader.line_num
        places = places[1:]  # the header
    else:
        places = []
    if len(places) != count:  # a layout the scan reads otherwise than the library
        places = [f"row {n}" for n in range(1, count + 1)]
    return places
