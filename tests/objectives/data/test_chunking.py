"""Long documents cut into token windows: by document, or in blocks of one stream."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from objectives.base import DataError
from objectives.causal_lm_lora.config import DataSection
from objectives.data.chunking import chunked_splits

CORPUS = Path(__file__).resolve().parents[3] / "data" / "finance_news.txt"


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def section(path: Path, tokens: int = 64, overlap: int = 16) -> DataSection:
    return DataSection(path=str(path), chunk={"tokens": tokens, "overlap": overlap})


def test_one_document_is_cut_into_blocks_then_overlapping_windows(tokenizer):
    windows, report = chunked_splits(section(CORPUS), section(CORPUS).chunk, tokenizer, 0)
    stream = tokenizer(CORPUS.read_text(), add_special_tokens=False)["input_ids"]
    train = windows["train"]
    assert all(len(w) == 64 for w in train)
    assert train[1][:16] == train[0][-16:]  # each window shares 16 tokens with the last
    assert train[0] == stream[:64]
    assert report["leakage"] == "contiguous blocks" and report["rows_read"] == 1
    # The blocks do not overlap: the first validation window starts after training's end.
    assert windows["validation"][0] == stream[report["splits"]["train"]["tokens"]:][:64]


def test_documents_go_whole_to_one_split(tokenizer, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    lines = CORPUS.read_text().splitlines()
    for i in range(10):
        (folder / f"doc{i}.md").write_text("\n".join(lines[i * 100:(i + 1) * 100]))
    (folder / "copy.md").write_text("\n".join(lines[:100]).upper())  # a normalised duplicate
    windows, report = chunked_splits(section(folder), section(folder).chunk, tokenizer, 0)
    assert report["leakage"] == "split by document"
    assert report["rows_read"] == 11 and report["rows_kept"] == 10
    seen = {name: {tuple(w) for w in windows[name]} for name in windows}
    assert not seen["train"] & seen["validation"] and not seen["train"] & seen["test"]
    assert report["summary"].startswith("data: 11 documents -> 10; ")


def test_too_little_text_for_a_window_is_one_clear_error(tokenizer, tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("Acme rises. " * 20)
    with pytest.raises(DataError, match="shorter than one window of 512 tokens"):
        chunked_splits(section(path, 512, 64), section(path, 512, 64).chunk, tokenizer, 0)


def test_overlap_must_be_below_the_window():
    with pytest.raises(ValueError, match="overlap"):
        section(CORPUS, 64, 64)
