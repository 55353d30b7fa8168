"""Long documents for continued pretraining: read, clean, de-duplicate, split by document,
and cut into overlapping token windows trained with the loss on every token.

A corpus is ``.txt`` / ``.md`` files (a file, or a folder of them: each file one document) or
a table with a ``text`` column (each row one document). Documents go whole to one split, so no
window of a test document was trained on; with fewer than three documents the token stream is
cut into contiguous train / validation / test blocks instead, and windows never cross a block.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from objectives.base import DataError
from objectives.data.cleaning import Cleaner, normalized
from objectives.data.pipeline import SPLITS, Report
from objectives.data.reading import KINDS, TEXT_KINDS, read_table
from objectives.data.section import ChunkSection, DataFiles


def document_files(path: Path) -> list[Path]:
    """The file, or the .txt / .md files of a folder."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in TEXT_KINDS)
        if not files:
            raise DataError("data.path", f"the folder holds no {', '.join(TEXT_KINDS)} file "
                            "(data.chunk reads documents)", source=path)
        return files
    if not path.is_file():
        raise DataError("data.path", "dataset file not found", source=path)
    if path.suffix.lower() not in (*TEXT_KINDS, *KINDS):
        raise DataError("data.path", f"unknown file kind {path.suffix or '(no suffix)'!r}; use "
                        f"{', '.join((*TEXT_KINDS, *KINDS))}", source=path)
    return [path]


def documents(path: Path, section: DataFiles, report: Report) -> list[tuple[str, str]]:
    """(place, text) of each document under ``path``."""
    found: list[tuple[str, str]] = []
    for file in document_files(path):
        if file.suffix.lower() in KINDS:
            table = read_table(file, section.columns, required=("text",))
            found += [(f"{file.name} {place}", str(row["text"] or ""))
                      for row, place in zip(table.rows, table.places, strict=True)]
            rows = len(table.rows)
        else:
            try:
                found.append((file.name, file.read_text(encoding="utf-8-sig")))
            except UnicodeDecodeError:
                raise DataError("data.path", "not UTF-8 text", source=file) from None
            rows = 1
        report.files.append({"path": str(file), "split": "all", "rows": rows})
    return found


def chunked_splits(section: DataFiles, chunk: ChunkSection, tokenizer,
                   seed: int) -> tuple[dict[str, list[list[int]]], dict[str, Any]]:
    """Token windows per split, and the data report."""
    report = Report()
    docs = documents(Path(section.path), section, report)
    cleaner = Cleaner(section.clean, set())
    cleaned, seen = [], set()
    duplicates, empty = report.step("duplicates"), report.step("empty")
    for place, text in docs:
        text = cleaner(text, report.changes_at(place))
        key = normalized(text)
        if not text:
            empty.removed += 1
            empty.note(place, "")
        elif key in seen:
            duplicates.removed += 1
            duplicates.note(place, text[:100])
        else:
            seen.add(key)
            cleaned.append(text)
    if not cleaned:
        raise DataError("data.path", "no document with text in it", source=section.path)
    streams = _split_documents(cleaned, section, tokenizer, seed)
    windows = {name: _windows(streams[name], chunk) for name in SPLITS}
    for name in SPLITS:
        if not windows[name]:
            raise DataError("data.chunk.tokens", f"the {name} split is shorter than one window "
                            f"of {chunk.tokens} tokens; use smaller windows or more text")
    steps = [vars(step) for step in report.steps.values() if step.removed or step.changed]
    tokens = {name: sum(len(s) for s in streams[name]) for name in SPLITS}
    result = {
        "rows_read": len(docs), "rows_kept": len(cleaned), "files": report.files,
        "steps": steps, "labels": None, "train_labels_before_balancing": None,
        "splits": {name: {"rows": len(windows[name]), "labels": None, "tokens": tokens[name]}
                   for name in SPLITS},
        "leakage": "split by document" if len(cleaned) >= 3 else "contiguous blocks",
    }
    result["summary"] = (f"data: {len(docs)} documents -> {len(cleaned)}; "
                         f"{sum(tokens.values())} tokens in "
                         f"{sum(len(w) for w in windows.values())} windows of {chunk.tokens} "
                         f"(overlap {chunk.overlap})")
    return windows, result


def _split_documents(texts: list[str], section: DataFiles, tokenizer,
                     seed: int) -> dict[str, list[list[int]]]:
    """Each split's token streams: whole documents, or blocks of one stream."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] + eos for text in texts]
    fractions = {"validation": section.validation_fraction, "test": section.test_fraction}
    if len(ids) >= 3:
        order = list(range(len(ids)))
        random.Random(seed).shuffle(order)
        counts = {name: max(1, round(len(ids) * share)) for name, share in fractions.items()}
        cut = counts["validation"] + counts["test"]
        if cut >= len(ids):
            counts = {"validation": 1, "test": 1}
            cut = 2
        picked = {"validation": order[:counts["validation"]],
                  "test": order[counts["validation"]:cut], "train": order[cut:]}
        return {name: [ids[i] for i in picked[name]] for name in SPLITS}
    stream = [token for doc in ids for token in doc]
    n_val = round(len(stream) * fractions["validation"])
    n_test = round(len(stream) * fractions["test"])
    end = len(stream) - n_val - n_test
    return {"train": [stream[:end]], "validation": [stream[end:end + n_val]],
            "test": [stream[end + n_val:]]}


def _windows(streams: list[list[int]], chunk: ChunkSection) -> list[list[int]]:
    """Windows of ``chunk.tokens`` tokens every ``tokens - overlap``; a stream's last window
    ends at its end (it may overlap more), one shorter than a window is kept whole if it is at
    least a quarter of one."""
    stride = chunk.tokens - chunk.overlap
    out = []
    for stream in streams:
        if len(stream) <= chunk.tokens:
            if len(stream) >= max(2, chunk.tokens // 4):
                out.append(stream)
            continue
        starts = list(range(0, len(stream) - chunk.tokens + 1, stride))
        if starts[-1] + chunk.tokens < len(stream):
            starts.append(len(stream) - chunk.tokens)
        out += [stream[s:s + chunk.tokens] for s in starts]
    return out

