"""Instruction data for supervised fine-tuning: read, clean, split, render, tokenise once
per study (see objectives.data for the steps before tokenising).

An example is either ``instruction`` / ``input`` (optional) / ``output``, or chat ``messages``
(a list of ``{"role", "content"}`` ending with the assistant's answer), one a row of a JSONL,
CSV or Parquet file (``data.columns`` maps other column names to these). Examples are rendered
with the tokenizer's chat template; prompt tokens get label -100 so only the answer carries
loss. The tokenised splits are Arrow datasets (``datasets.save_to_disk``), memory-mapped by
every trial.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from objectives.base import DATA_REPORT, LABELS, DataError
from objectives.causal_lm_lora.config import DataSection
from objectives.data.augment import training_set as augmented_training_set
from objectives.data.chunking import chunked_splits, document_files
from objectives.data.files import cache_key, save_dataset, section_files, write_json
from objectives.data.pipeline import (
    TRAIN_EXAMPLES,
    Built,
    Example,
    build,
    remembered,
    write_examples,
)

IGNORE_INDEX = -100  # the label value transformers' loss skips


def to_example(row: dict[str, Any], where: str, source: Path) -> Example:
    """One row as the pipeline's example; DataError names the row's line and field."""
    if row.get("messages") is not None:
        messages = row["messages"]
        ok = isinstance(messages, list) and len(messages) >= 2 and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in messages
        )
        if not ok or messages[-1]["role"] != "assistant":
            raise DataError(f"{where}.messages", "must be a list of {role, content} objects "
                            "ending with the assistant's answer", source=source)
        return Example(tuple((m["role"], m["content"]) for m in messages[:-1]),
                       messages[-1]["content"], where, str(source))
    for key in ("instruction", "output"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise DataError(f"{where}.{key}", "missing or not a non-empty string (each row "
                            "needs instruction and output, or messages)", source=source)
    prompt = row["instruction"]
    if isinstance(row.get("input"), str) and row["input"]:
        prompt = f"{prompt}\n\n{row['input']}"
    return Example((("user", prompt),), row["output"], where, str(source))


def conversation(example: Example) -> list[dict[str, str]]:
    """The example as chat messages, the answer last."""
    return [{"role": role, "content": text} for role, text in example.turns] + [
        {"role": "assistant", "content": example.answer}]


def build_splits(section: DataSection, tokenizer, reference_model: str | None,
                 score: bool = True) -> Built:
    """The cleaned, de-duplicated, leak-free splits and their report."""
    def count_tokens(texts: list[str]) -> list[list[tuple[int, int]]]:
        return tokenizer(texts, add_special_tokens=False,
                         return_offsets_mapping=True)["offset_mapping"]

    def perplexities(examples: list[Example]) -> list[float]:
        from objectives.data.perplexity import perplexities as score_texts

        return score_texts(reference_model, [f"{e.prompt}\n{e.answer}" for e in examples])

    return remembered(section, [tokenizer.name_or_path, reference_model if score else None],
                      lambda: build(
        section, to_example, answers_are_labels=False, count_tokens=count_tokens,
        perplexities=perplexities if reference_model else None, score=score))


def tokenize(messages: list[dict[str, str]], tokenizer, max_length: int) -> dict[str, list[int]]:
    """Token ids and labels of one conversation; the prompt's labels are IGNORE_INDEX."""
    return tokenize_all([messages], tokenizer, max_length)[0]


def tokenize_all(conversations: list[list[dict[str, str]]], tokenizer,
                 max_length: int) -> list[dict[str, list[int]]]:
    """``tokenize`` of many conversations, the texts tokenised in one batch."""
    if not conversations:
        return []
    prompts = tokenizer.apply_chat_template([c[:-1] for c in conversations], tokenize=False,
                                            add_generation_prompt=True)
    fulls = tokenizer.apply_chat_template(conversations, tokenize=False)
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(fulls, add_special_tokens=False)["input_ids"]
    return [_labelled(p, f, max_length) for p, f in zip(prompt_ids, full_ids, strict=True)]


def _labelled(prompt_ids: list[int], full_ids: list[int], max_length: int) -> dict[str, list[int]]:
    if full_ids[:len(prompt_ids)] != prompt_ids:
        raise ValueError("the chat template renders the prompt differently inside the full text")
    labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids):]
    # Truncate the prompt's start, never the answer, so every example keeps its loss tokens.
    overflow = max(0, len(full_ids) - max_length)
    return {"input_ids": full_ids[overflow:], "labels": labels[overflow:]}


def prepare(section: DataSection, max_length: int, tokenizer, tokenizer_dir: Path,
            reference_model: str | None, root: Path,
            labels: list[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Tokenise every split once into ``root/<key>/``; return that folder and the data report.

    Beside each split's Arrow dataset (token ids and labels): the prompt and reference answer
    of every validation and test example (``<split>.texts.json``, for evaluation by
    generation), the closed answer set (``labels.json``: ``labels`` when given, else found
    from the training answers, else null for free text) and ``data_report.json``.
    """
    import datasets

    settings = {**section.model_dump(mode="json", exclude={"path", "validation_path",
                                                           "test_path", "augment"}),
                "max_length": max_length, "labels": labels, "reference": reference_model,
                "layout": 3}
    files = document_files(Path(section.path)) if section.chunk else section_files(section)
    out = root / cache_key(files, tokenizer_dir, settings)
    if (out / "train" / "dataset_info.json").is_file():
        return out, json.loads((out / DATA_REPORT).read_text(encoding="utf-8"))
    if section.chunk:
        return out, _prepare_documents(section, tokenizer, out)
    built = build_splits(section, tokenizer, reference_model)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / LABELS, labels or built.labels)
    write_json(out / DATA_REPORT, built.report)
    write_examples(out / TRAIN_EXAMPLES, built.splits["train"])
    datasets.disable_progress_bars()
    for name in ("validation", "test", "train"):  # train last: its folder marks a full cache
        examples = built.splits[name]
        if name != "train":
            write_json(out / f"{name}.texts.json",
                       [{"prompt": e.turns[-1][1], "reference": e.answer} for e in examples])
        save_dataset(tokenized(examples, tokenizer, max_length), out / name)
    return out, built.report


def _prepare_documents(section: DataSection, tokenizer, out: Path) -> dict[str, Any]:
    """Token windows of long documents, every token learned (data.chunk); no answers."""
    import datasets

    windows, report = chunked_splits(section, section.chunk, tokenizer, section.seed)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / LABELS, None)
    write_json(out / DATA_REPORT, report)
    write_examples(out / TRAIN_EXAMPLES, [])
    for name in ("validation", "test", "train"):  # train last: its folder marks a full cache
        if name != "train":
            write_json(out / f"{name}.texts.json", [])
        save_dataset(datasets.Dataset.from_dict({"input_ids": windows[name],
                                                 "labels": windows[name]}), out / name)
    return report


def tokenized(examples: list[Example], tokenizer, max_length: int):
    """The examples' token ids and labels as an Arrow dataset."""
    import datasets

    rows = tokenize_all([conversation(e) for e in examples], tokenizer, max_length)
    return datasets.Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows],
                                       "labels": [r["labels"] for r in rows]})


def training_set(prepared: Path, section: DataSection, tokenizer, seed: int):
    """The training split with the trial's augmented copies (data.augment), and their
    number."""
    return augmented_training_set(prepared, section.augment, seed, lambda extra: tokenized(
        extra, tokenizer, section.max_length))


def load_split(prepared: Path, name: str):
    """A split's tokenised examples: a memory-mapped Arrow dataset."""
    import datasets

    return datasets.load_from_disk(str(prepared / name))


def load_texts(prepared: Path, name: str) -> list[dict[str, str]]:
    """Prompt and reference answer of each example of a split, in the split's order."""
    return json.loads((prepared / f"{name}.texts.json").read_text(encoding="utf-8"))


def load_labels(prepared: Path) -> list[str] | None:
    return json.loads((prepared / LABELS).read_text(encoding="utf-8"))
