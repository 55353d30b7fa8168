"""From data files to train / validation / test examples, and the report of what was done.

The steps, in order (see ``objectives.data``): read, drop exact duplicates, clean, drop empty
examples, handle long texts, drop normalised duplicates, split without leaks, check labels,
balance the training split's classes, drop noisy training examples. ``build`` returns the
splits and the report; nothing here knows an objective's row format: an objective passes
``to_example``.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from objectives.base import DataError
from objectives.data.cleaning import Cleaner, normalized
from objectives.data.reading import data_files, read_table, section_files
from objectives.data.section import DataFiles
from objectives.metrics import find_labels, normalize

SPLITS = ("train", "validation", "test")
SHOWN = 3  # examples of each step's changes kept in the report


@dataclass(frozen=True)
class Example:
    """One example as the pipeline sees it: the turns before the answer, and the answer (a
    label, for a classifier). ``where`` is its place in ``source``, for errors."""

    turns: tuple[tuple[str, str], ...]  # (role, text)
    answer: str
    where: str = ""
    source: str = ""

    @property
    def prompt(self) -> str:
        return "\n".join(text for _, text in self.turns)

    @property
    def key(self) -> str:
        """What makes two examples the same prompt (for leaks and grouping)."""
        return normalized(self.prompt)


ToExample = Callable[[dict[str, Any], str, Path], Example]
@dataclass
class Step:
    """What one rule did: rows removed, rows changed, and a few of them before -> after."""

    rule: str
    removed: int = 0
    changed: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)
    seconds: float | None = None  # what the step cost, where that is worth stating

    def note(self, where: str, before: str, after: str | None = None) -> None:
        if len(self.examples) < SHOWN:
            shown = {"where": where, "before": before[:300]}
            if after is not None:
                shown["after"] = after[:300]
            self.examples.append(shown)


@dataclass
class Built:
    splits: dict[str, list[Example]]
    labels: list[str] | None  # the closed answer set (sorted), None for free text
    report: dict[str, Any]


class Report:
    def __init__(self) -> None:
        self.files: list[dict[str, Any]] = []
        self.steps: dict[str, Step] = {}

    def step(self, rule: str) -> Step:
        return self.steps.setdefault(rule, Step(rule))

    def changes_at(self, where: str) -> Callable[[str, str, str], None]:
        """What a Cleaner calls for each rule that changed a text at ``where``."""
        def record(rule: str, before: str, after: str) -> None:
            step = self.step(rule)
            step.changed += 1
            step.note(where, before, after)
        return record


def build(section: DataFiles, to_example: ToExample, *, answers_are_labels: bool,
          count_tokens: Callable[[list[str]], list[list[tuple[int, int]]]] | None = None,
          perplexities: Callable[[list[Example]], list[float]] | None = None,
          score: bool = True, required: tuple[str, ...] = ()) -> Built:
    """The splits of ``section``'s data and the report of every step.

    ``answers_are_labels``: the answers are class labels (never cleaned but for surrounding
    space; every validation and test label must be a training label). ``count_tokens`` gives
    each text's token character spans (for max_tokens); ``perplexities`` each training
    example's perplexity under the reference model (for max_perplexity; skipped unless
    ``score``, for a check of the data that need not pay for it). ``required``: the fields
    every file must have as columns (after ``data.columns``).
    """
    report = Report()
    roles = {"all": section.path} if section.validation_path is None else {
        "train": section.path, "validation": section.validation_path, "test": section.test_path}
    read = {role: _read(Path(path), role, section, to_example, required, report)
            for role, path in roles.items()}
    rows_read = sum(len(examples) for examples in read.values())
    label_chars = _label_chars([e for examples in read.values() for e in examples],
                               answers_are_labels)
    cleaner = Cleaner(section.clean, label_chars)
    for role in read:
        # Exact duplicates as written; then, once cleaned, those that differ only in form.
        examples = _first_of(read[role], lambda e: (e.turns, e.answer),
                             report.step("duplicates"))
        examples = _long(_clean(examples, cleaner, answers_are_labels, report), section,
                         count_tokens, report)
        if section.clean.near_duplicates:
            examples = _first_of(examples, lambda e: (e.key, normalized(e.answer)),
                                 report.step("near_duplicates"))
        read[role] = examples
    splits = _split(read, section, report)
    labels = _labels(splits, answers_are_labels)
    # A classifier's labels are its answers as written; answers found to be labels are
    # compared as the task metrics compare them.
    label_of = (lambda e: e.answer) if answers_are_labels else (lambda e: normalize(e.answer))
    before = _label_counts(splits["train"], labels, label_of)
    splits["train"] = _balance(splits["train"], labels, label_of, section, report)
    if section.clean.max_perplexity is not None and score:
        splits["train"] = _perplexity(splits["train"], section, perplexities, report)
    return Built(splits, labels, _report(report, rows_read, splits, labels, label_of, before,
                                         section))


_LAST: dict[str, Built] = {}  # the last build of this process: the data check, then prepare


def remembered(section: DataFiles, context: list[Any], make: Callable[[], Built]) -> Built:
    """``make()``, or its result from the last call with the same section, files (by size and
    modification time) and ``context``: a search checks its data, then prepares it, and a
    large file is read and cleaned once."""
    files = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in section_files(section)]
    key = json.dumps([section.model_dump(mode="json"), files, context], default=str)
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = make()
    return _LAST[key]


def forget_builds() -> None:
    _LAST.clear()


def _read(path: Path, role: str, section: DataFiles, to_example: ToExample,
          required: tuple[str, ...], report: Report) -> list[Example]:
    field_name = {"validation": "data.validation_path", "test": "data.test_path"}.get(
        role, "data.path")
    examples: list[Example] = []
    for file in data_files(path, field_name):
        table = read_table(file, section.columns, field_name, required)
        report.files.append({"path": str(file), "split": role, "rows": len(table.rows)})
        examples += [to_example(row, place, file)
                     for row, place in zip(table.rows, table.places, strict=True)]
    if not examples:
        raise DataError(field_name, "dataset is empty", source=path)
    return examples


def _label_chars(examples: list[Example], answers_are_labels: bool) -> set[str]:
    labels = [e.answer for e in examples] if answers_are_labels else \
        find_labels([e.answer for e in examples])
    return set("".join(labels or []))


def _clean(examples: list[Example], cleaner: Cleaner, answers_are_labels: bool,
           report: Report) -> list[Example]:
    empty = report.step("empty")
    kept = []
    for example in examples:
        record = report.changes_at(example.where)
        turns = tuple((role, cleaner(text, record)) for role, text in example.turns)
        answer = example.answer.strip() if answers_are_labels else cleaner(example.answer,
                                                                           record)
        if not answer or not all(text for _, text in turns):
            empty.removed += 1
            empty.note(example.where, example.prompt + " -> " + example.answer)
            continue
        kept.append(replace(example, turns=turns, answer=answer))
    return _not_all(kept, "empty", "cleaning left every example empty")


def _long(examples: list[Example], section: DataFiles,
          count_tokens: Callable[[list[str]], list[list[tuple[int, int]]]] | None,
          report: Report) -> list[Example]:
    limit = section.clean.max_tokens
    if limit is None or count_tokens is None:
        return examples
    texts = [text for e in examples for _, text in e.turns]
    spans = iter(count_tokens(texts))
    step = report.step("max_tokens")
    kept = []
    for example in examples:
        turns, cut = [], False
        for role, text in example.turns:
            tokens = next(spans)
            if len(tokens) > limit:
                cut = True
                text = text[:tokens[limit - 1][1]]
            turns.append((role, text))
        if not cut:
            kept.append(example)
            continue
        if section.clean.long_texts == "drop":
            step.removed += 1
            step.note(example.where, example.prompt)
        else:
            step.changed += 1
            step.note(example.where, example.prompt, "\n".join(t for _, t in turns))
            kept.append(replace(example, turns=tuple(turns)))
    return _not_all(kept, "max_tokens", f"every example is over {limit} tokens")


def _first_of(examples: list[Example], key, step: Step) -> list[Example]:
    first: dict[Any, Example] = {}
    for example in examples:
        earlier = first.setdefault(key(example), example)
        if earlier is not example:
            step.removed += 1
            step.note(example.where, example.prompt, f"same as {earlier.where}")
    return list(first.values())


def _split(read: dict[str, list[Example]], section: DataFiles,
           report: Report) -> dict[str, list[Example]]:
    """Fractions over normalised prompts (an example and its variants stay in one split), or
    the split files with training examples that also stand in validation or test removed."""
    leaks = report.step("leaks")
    if "all" in read:
        return _by_fractions(read["all"], section)
    held_out = {e.key: e for name in ("validation", "test") for e in read[name]}
    splits = {"train": [], "validation": [], "test": read["test"]}
    test_keys = {e.key for e in read["test"]}
    validation_leaks = report.step("validation_leaks")
    for example in read["validation"]:  # a validation example also in test: test keeps it
        if example.key in test_keys:
            validation_leaks.removed += 1
            validation_leaks.note(example.where, example.prompt, "in the test file too")
        else:
            splits["validation"].append(example)
    for example in read["train"]:
        other = held_out.get(example.key)
        if other is None:
            splits["train"].append(example)
            continue
        if section.leakage == "error":
            raise DataError(other.where, f"repeats {example.where} of the training file "
                            f"{Path(example.source).name} (data.leakage: error)",
                            source=other.source)
        leaks.removed += 1
        leaks.note(example.where, example.prompt, f"in {Path(other.source).name} "
                   f"{other.where}")
    for name in ("validation", "train"):
        _not_all(splits[name], "leaks", f"every {name} example is also in a held-out file")
    return splits


def _by_fractions(examples: list[Example], section: DataFiles) -> dict[str, list[Example]]:
    groups: dict[str, list[Example]] = {}
    for example in examples:
        groups.setdefault(example.key, []).append(example)
    order = list(groups.values())
    random.Random(section.seed).shuffle(order)
    n_val = round(len(examples) * section.validation_fraction)
    n_test = round(len(examples) * section.test_fraction)
    if n_val < 1 or n_test < 1 or len(examples) - n_val - n_test < 1:
        raise DataError("data.path", f"{len(examples)} distinct examples are too few to split "
                        "into train, validation and test", source=section.path)
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for group in order:
        name = "validation" if len(splits["validation"]) < n_val else \
            "test" if len(splits["test"]) < n_test else "train"
        splits[name] += group
    if not splits["train"]:
        raise DataError("data.path", "too few distinct prompts to split into train, "
                        "validation and test", source=section.path)
    return splits


def _labels(splits: dict[str, list[Example]], answers_are_labels: bool) -> list[str] | None:
    train = [e.answer for e in splits["train"]]
    if not answers_are_labels:
        return find_labels(train)
    labels = sorted(set(train))
    if len(labels) < 2:
        raise DataError("data.columns.label", f"the training split has {len(labels)} label; a "
                        "classifier needs two or more", source=splits["train"][0].source)
    known = set(labels)
    for name in ("validation", "test"):
        for example in splits[name]:
            if example.answer not in known:
                raise DataError(example.where, f"label {example.answer!r} is not one of the "
                                f"training split's labels ({', '.join(labels)})",
                                source=example.source)
    return labels


def _label_counts(examples: list[Example], labels: list[str] | None,
                  label_of: Callable[[Example], str]) -> dict[str, int] | None:
    if labels is None:
        return None
    counts = Counter(label_of(e) for e in examples)
    return {label: counts[label] for label in labels}


def _balance(train: list[Example], labels: list[str] | None,
             label_of: Callable[[Example], str], section: DataFiles,
             report: Report) -> list[Example]:
    """Each class down-sampled to at most max_class_ratio times the smallest (seeded)."""
    ratio = section.clean.max_class_ratio
    if ratio is None:
        return train
    if labels is None:
        raise DataError("data.clean.max_class_ratio", "the answers are free text, not a few "
                        "labels: there are no classes to balance")
    by_label: dict[str, list[int]] = {}
    for index, example in enumerate(train):
        by_label.setdefault(label_of(example), []).append(index)
    cap = int(ratio * min(len(by_label[label]) for label in labels if label in by_label))
    rng = random.Random(section.seed)
    dropped: set[int] = set()
    for indices in by_label.values():
        if len(indices) > cap:
            dropped |= set(rng.sample(indices, len(indices) - cap))
    step = report.step("max_class_ratio")
    step.removed = len(dropped)
    for index in sorted(dropped)[:SHOWN]:
        step.note(train[index].where, train[index].prompt, f"class {train[index].answer!r} "
                  "down-sampled")
    return [e for i, e in enumerate(train) if i not in dropped]


def _perplexity(train: list[Example], section: DataFiles,
                perplexities: Callable[[list[Example]], list[float]] | None,
                report: Report) -> list[Example]:
    if perplexities is None:
        raise DataError("data.clean.max_perplexity", "needs a causal language model to score "
                        "the examples: set data.clean.perplexity_model")
    started = time.perf_counter()
    scores = perplexities(train)
    step = report.step("max_perplexity")
    step.seconds = round(time.perf_counter() - started, 2)
    kept = []
    for example, score in zip(train, scores, strict=True):
        if score > section.clean.max_perplexity:
            step.removed += 1
            step.note(example.where, example.prompt, f"perplexity {score:.1f}")
        else:
            kept.append(example)
    return _not_all(kept, "max_perplexity", "every training example is over "
                    f"perplexity {section.clean.max_perplexity}")


def _not_all(kept: list[Example], rule: str, problem: str) -> list[Example]:
    if not kept:
        raise DataError("data.leakage" if "leaks" in rule else "data.clean",
                        f"no example is left: {problem} ({rule})")
    return kept


def _report(report: Report, rows_read: int, splits: dict[str, list[Example]],
            labels: list[str] | None, label_of: Callable[[Example], str],
            before: dict[str, int] | None, section: DataFiles) -> dict[str, Any]:
    after = _label_counts(splits["train"], labels, label_of)
    steps = [vars(step) for step in report.steps.values() if step.removed or step.changed]
    result: dict[str, Any] = {
        "rows_read": rows_read,
        "rows_kept": sum(len(splits[name]) for name in SPLITS),
        "files": report.files,
        "steps": steps,
        "splits": {name: {"rows": len(splits[name]),
                          "labels": _label_counts(splits[name], labels, label_of)}
                   for name in SPLITS},
        "labels": labels,
        "train_labels_before_balancing": before,
        "leakage": section.leakage if section.validation_path else "split by prompt",
    }
    result["summary"] = summary(result, after)
    return result


NAMES = {"empty": "empty", "max_tokens": "too long", "duplicates": "duplicates",
         "near_duplicates": "near-duplicates", "leaks": "leaks removed from train",
         "validation_leaks": "validation examples also in test removed",
         "max_class_ratio": "down-sampled", "max_perplexity": "over the perplexity limit"}


def summary(result: dict[str, Any], after: dict[str, int] | None) -> str:
    """e.g. data: 260 rows -> 236 (12 duplicates, 8 near-duplicates, 6 leaks removed from
    train); labels 3.0 : 1 after balancing"""
    removed = [f"{step['removed']} {NAMES[step['rule']]}" for step in result["steps"]
               if step["removed"]]
    line = f"data: {result['rows_read']} rows -> {result['rows_kept']}"
    if removed:
        line += f" ({', '.join(removed)})"
    counts = [n for n in (after or {}).values() if n]
    if len(counts) > 1:
        balanced = any(step["rule"] == "max_class_ratio" for step in result["steps"])
        line += f"; labels {max(counts) / min(counts):.1f} : 1" + \
            (" after balancing" if balanced else " in train")
    return line
