"""Prepared data on disk: its cache key, atomic writes, and the folder every objective's
splits are prepared into and read from.

A prepared folder holds each split as an Arrow dataset (``train/``, ``validation/``,
``test/``; ``train/`` written last, so its presence marks a complete folder), the prompt and
reference of each validation and test example (``<split>.texts.json``), the cleaned training
examples (for augmentation), the label set and the data report.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from objectives.base import DATA_REPORT, LABELS
from objectives.data.pipeline import Example

HELD_OUT = ("validation", "test")
TRAIN_EXAMPLES = "train.examples.json"  # the cleaned training examples, for augmentation


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


def prepared_folder(root: Path, files: Iterable[Path], tokenizer_dir: Path,
                    settings: dict[str, Any]) -> tuple[Path, dict[str, Any] | None]:
    """The folder these inputs prepare into, and its data report when it is complete (None:
    it is still to be written)."""
    out = root / cache_key(files, tokenizer_dir, settings)
    if (out / "train" / "dataset_info.json").is_file():
        return out, json.loads((out / DATA_REPORT).read_text(encoding="utf-8"))
    return out, None


def write_prepared(out: Path, labels: list[str] | None, report: dict[str, Any],
                   train_examples: list[Example], texts: dict[str, list[dict[str, str]]],
                   splits: dict[str, Any]) -> dict[str, Any]:
    """Write a prepared folder (see the module docstring): ``texts`` of the held-out splits
    (validation, test, and any other, e.g. an update's old_validation), ``splits`` the Arrow
    datasets by split name. Returns ``report``."""
    import datasets

    datasets.disable_progress_bars()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / LABELS, labels)
    write_json(out / DATA_REPORT, report)
    write_examples(out / TRAIN_EXAMPLES, train_examples)
    for name, rows in texts.items():
        write_json(out / f"{name}.texts.json", rows)
    for name in (*texts, "train"):  # train last: its folder marks a complete one
        save_dataset(splits[name], out / name)
    return report


def write_examples(path: Path, examples: list[Example]) -> None:
    write_json(path, [{"turns": e.turns, "answer": e.answer, "where": e.where,
                       "source": e.source} for e in examples])


def read_examples(path: Path) -> list[Example]:
    return [Example(tuple((role, text) for role, text in row["turns"]), row["answer"],
                    row["where"], row["source"])
            for row in json.loads(path.read_text(encoding="utf-8"))]


def load_split(prepared: Path, name: str):
    """A split's tokenised examples: a memory-mapped Arrow dataset."""
    import datasets

    return datasets.load_from_disk(str(prepared / name))


def load_texts(prepared: Path, name: str) -> list[dict[str, str]]:
    """Prompt and reference answer of each example of a held-out split, in its order."""
    return json.loads((prepared / f"{name}.texts.json").read_text(encoding="utf-8"))


def load_labels(prepared: Path) -> list[str] | None:
    """The closed label set (a classifier's classes in id order), or None for free text."""
    return json.loads((prepared / LABELS).read_text(encoding="utf-8"))
