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

from pathlib import Path
from typing import Any

from objectives.base import DataError
from objectives.causal_lm_lora.config import DataSection
from objectives.data import replay
from objectives.data.augment import training_set as augmented_training_set
from objectives.data.chunking import chunked_splits, document_files
from objectives.data.files import (
    HELD_OUT,
    prepared_folder,
    write_prepared,
)
from objectives.data.pipeline import Built, Example, build, remembered
from objectives.data.reading import section_files

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
    settings = {**section.model_dump(mode="json", exclude={"path", "validation_path",
                                                           "test_path", "augment"}),
                "max_length": max_length, "labels": labels, "reference": reference_model,
                "layout": 3}
    old = replay.earlier_section(section)
    files = document_files(Path(section.path)) if section.chunk else \
        [*section_files(section), *(section_files(old) if old else [])]
    out, report = prepared_folder(root, files, tokenizer_dir, settings)
    if report is not None:
        return out, report
    if section.chunk:
        return out, _prepare_documents(section, tokenizer, out)
    examples, report, found = replay.with_earlier(
        build_splits(section, tokenizer, reference_model), section, old,
        lambda earlier: build_splits(earlier, tokenizer, reference_model))
    texts = {name: [{"prompt": e.turns[-1][1], "reference": e.answer} for e in rows]
             for name, rows in examples.items() if name != "train"}
    splits = {name: tokenized(rows, tokenizer, max_length) for name, rows in examples.items()}
    return out, write_prepared(out, labels or found, report, examples["train"],
                               texts, splits)


def _prepare_documents(section: DataSection, tokenizer, out: Path) -> dict[str, Any]:
    """Token windows of long documents, every token learned (data.chunk); no answers."""
    import datasets

    windows, report = chunked_splits(section, section.chunk, tokenizer, section.seed)
    splits = {name: datasets.Dataset.from_dict({"input_ids": w, "labels": w})
              for name, w in windows.items()}
    return write_prepared(out, None, report, [], {name: [] for name in HELD_OUT}, splits)


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
