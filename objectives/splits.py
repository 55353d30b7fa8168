"""Data steps every objective shares: a split that cannot leak, the cache key of prepared
data and atomic writes of its files."""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from objectives.base import DataError

T = TypeVar("T")


def read_text(path: Path, kinds: str) -> str:
    """A dataset file's text; ``kinds`` names the files expected in a folder given instead."""
    if path.is_dir():
        raise DataError("data.path", f"is a folder; name the {kinds} file in it", source=path)
    if not path.is_file():
        raise DataError("data.path", "dataset file not found", source=path)
    try:
        return path.read_text(encoding="utf-8-sig")  # a BOM (Windows Notepad) is not data
    except UnicodeDecodeError:
        raise DataError("data.path", "dataset is not UTF-8 text", source=path) from None


def jsonl_rows(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """Line number and value of each non-blank line of JSONL text."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"line {number}", f"invalid JSON: {error.msg}", source=path) from None


def split_by_fractions(items: list[T], key: Callable[[T], Hashable], validation_fraction: float,
                       test_fraction: float, seed: int, source: Path) -> dict[str, list[T]]:
    """A deterministic train / validation / test split; items with the same ``key`` are one
    example (the first is kept), so no example is in two splits."""
    unique = first_of_each(items, key)
    random.Random(seed).shuffle(unique)
    n_val = round(len(unique) * validation_fraction)
    n_test = round(len(unique) * test_fraction)
    if n_val < 1 or n_test < 1 or len(unique) - n_val - n_test < 1:
        raise DataError("data.path", f"{len(unique)} distinct examples are too few to split "
                        "into train, validation and test", source=source)
    return {
        "validation": unique[:n_val],
        "test": unique[n_val:n_val + n_test],
        "train": unique[n_val + n_test:],
    }


def first_of_each(items: Iterable[T], key: Callable[[T], Hashable]) -> list[T]:
    """The first item of each ``key``, in their order."""
    first: dict[Hashable, T] = {}
    for item in items:
        first.setdefault(key(item), item)
    return list(first.values())


def cache_key(data_files: Iterable[Path], tokenizer_dir: Path, settings: dict[str, Any]) -> str:
    """Prepared data is reused while the data, the tokenizer and the settings match."""
    digest = hashlib.sha256()
    for path in data_files:
        digest.update(path.read_bytes())
    for name in sorted(p.name for p in tokenizer_dir.glob("tokenizer*")):
        digest.update((tokenizer_dir / name).read_bytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then a rename: a reader never sees half a file, and launchers that
    share a study may race."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}")
    write(tmp)
    tmp.replace(path)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(value, ensure_ascii=False),
                                                  encoding="utf-8"))
