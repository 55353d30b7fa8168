"""Prepared data on disk: its cache key, atomic writes, Arrow datasets."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from objectives.data.reading import data_files
from objectives.data.section import DataFiles


def cache_key(files: Iterable[Path], tokenizer_dir: Path, settings: dict[str, Any]) -> str:
    """Prepared data is reused while the data, the tokenizer and the settings match."""
    digest = hashlib.sha256()
    for path in files:
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


def section_files(section: DataFiles) -> list[Path]:
    """Every data file a data section names (folders listed), for the cache key."""
    named = (("data.path", section.path), ("data.validation_path", section.validation_path),
             ("data.test_path", section.test_path))
    return [file for field, path in named if path for file in data_files(Path(path), field)]


def save_dataset(dataset, path: Path) -> None:
    """``dataset.save_to_disk`` into a folder of its own, then renamed into place."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}")
    dataset.save_to_disk(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    try:
        tmp.rename(path)
    except OSError:  # a launcher sharing the study got there first: the same content
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(value, ensure_ascii=False),
                                                  encoding="utf-8"))
