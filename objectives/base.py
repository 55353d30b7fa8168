"""The objective contract: all the search knows about a kind of training it can tune.

An objective is a package in ``objectives/`` registered in ``objectives/__init__.py``. It owns
its config (a pydantic model of the space's objective sections), its data, its metrics, its
report sections and its export; nothing here or in an objective imports ``search/``.

Lifecycle, in order:

1. ``check(config)``: one config the sampler may produce is usable (called for each searched
   value, before anything runs); raise ``DataError`` if not.
2. ``check_data(config)``: the data can be read and split (once, before the search).
3. ``prepare(config, prepared_dir)``: work shared by every trial (tokenising), once; it may
   return a data report (a JSON object with a one-line ``summary``), which the search keeps
   as ``studies/<name>/data_report.json``, prints and draws in the report.

   The launcher runs 1 to 3 in a process of their own while Ray starts, so that it never
   imports the objective's training libraries itself (search/preparation.py).
4. ``run(config, context)``: one trial, in a worker. It calls ``context.report`` at each
   evaluation (the scheduler acts on these), then ends with ``context.complete(value, ...)``
   or ``context.prune(reason)``; an exception ends it as FAIL with the error as reason.
5. ``save_best(trial_dir, best_dir)``: the winner's artefacts to ``studies/<name>/best/``.
6. ``export(trial, out_dir, options)``: optional, the winner in a form to serve.

An objective declares ``metrics`` (what its evaluations report, with the direction in which
each is better: ``study.metric`` must be one of them), ``max_steps(config)`` (the step budget
schedulers count in), ``path_fields`` (config fields that are file paths, resolved beside the
space file), ``trial_fields`` (fields that may name an earlier study's trial),
``recommended`` (known-good values of its parameters, which the search tries right after the
untuned default) and optionally ``report_sections``, ``score`` (per-example metrics, which the
paired comparison of two trials recomputes on resamples of the test split) and ``answer`` (a
trial of another study answering this study's test split, for the comparison across studies).
``objectives.costs`` measures what a model costs to serve (parameters, size, latency) for
objectives that report it.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

# How a trial ended, as its last report says. The search maps these to Optuna trial states.
STEP = "step"
OUTCOME = "outcome"
REASON = "reason"
COMPLETE = "complete"  # trained to its end, or stopped by its own early stopping
PRUNED = "pruned"  # stopped itself (e.g. the loss became NaN); the reason says why
FAILED = "failed"  # raised an error
OUT_OF_MEMORY = "out_of_memory"
# Set on the report of an evaluation after which the trial trains no more: no scheduler may
# stop a trial there, since its final report follows.
LAST_EVALUATION = "last_evaluation"

# In ``Objective.recommended``: the middle of the parameter's searched range (geometric on a log
# range): where a range the user chose for this model says a good value most likely lies.
CENTRE = "centre"

# On a final report: a JSON object of figures that are not numbers (per-class tables, a
# confusion matrix), stored as the trial's attributes under their own names.
ATTRS = "attrs"
TEST_PREFIX = "test_"  # a final figure on the test split: test_loss, test_accuracy, ...
TEST_FIGURE = re.compile(rf"(^|_){TEST_PREFIX}")  # test_loss, an update's old_test_accuracy
DATA_REPORT = "data_report.json"  # per study: what was done to the data (see prepare)
PREDICTIONS = "predictions_{split}.jsonl"  # per trial folder: prompt, reference, prediction
LABELS = "labels.json"  # per trial folder: the closed answer set, where there is one


class DataError(ValueError):
    """Bad config or data: ``field`` is the dotted key (or ``line N``) at fault.

    ``source`` is the file at fault when it is not the space file (a dataset, a trial folder).
    """

    def __init__(self, field: str, problem: str, source: str | Path | None = None) -> None:
        self.field, self.problem = field, problem
        self.source = str(source) if source is not None else None
        where = ": ".join(part for part in (self.source, field) if part)
        super().__init__(f"{where}: {problem}" if where else problem)

    def __reduce__(self) -> tuple:  # raised in another process too
        return type(self), (self.field, self.problem, self.source)


@dataclass(frozen=True)
class Metric:
    """A value an objective's trials report. ``per_example`` metrics are computed from the
    predictions file and can be recomputed by ``Objective.score`` for a paired test."""

    name: str
    direction: Literal["minimize", "maximize"]
    description: str = ""
    per_example: bool = False
    # Reported once, at a trial's end (costs, an update's old-data figures), not at each
    # evaluation: a further objective of a study, never its first (which evaluations follow).
    final: bool = False


@dataclass(frozen=True)
class FinishedTrial:
    """A trial as the objective sees it after the search: for save, export and the report."""

    study_name: str
    number: int
    value: float | None
    params: dict[str, Any]
    trial_dir: Path
    metric: str
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportSection:
    """A part of the study's report: ``html`` is a fragment (plotly figures without their
    script, which the page embeds once)."""

    key: str
    title: str
    html: str


class Reporter(ABC):
    """Where a trial sends its evaluations: Ray Tune in a search, a list in a test."""

    @abstractmethod
    def report(self, metrics: dict[str, Any]) -> None:
        """One evaluation; ``metrics`` holds ``step`` and the metrics at that step."""


@dataclass
class TrialContext:
    """What a trial is given besides its config."""

    number: int
    trial_dir: Path
    prepared_dir: Path  # shared by every trial of the study, written by Objective.prepare
    reporter: Reporter
    metric: str = "eval_loss"  # the study's metric: what "best checkpoint" means
    direction: Literal["minimize", "maximize"] = "minimize"
    # A multi-objective study's further metrics, which the trial's final report must hold.
    other_metrics: tuple[str, ...] = ()
    threads: int = 1
    # The untuned default: the reference every trial is compared with, trained to its end
    # (no scheduler stops it; an objective should not stop it early by its own rule either).
    baseline: bool = False
    # Steps from which the scheduler compares this trial with others (ASHA's rungs): it acts
    # on the first evaluation at or after each. An objective that evaluates part of its
    # validation split while training evaluates all of it there.
    decision_steps: tuple[float, ...] = ()
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def report(self, metrics: dict[str, Any]) -> None:
        """Record an evaluation in the trial folder, then hand it to the reporter."""
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
        self.history.append(clean)
        with (self.trial_dir / "metrics.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(clean, allow_nan=True) + "\n")
        self.reporter.report(clean)

    def complete(self, value: float, *, step: int, attrs: dict[str, Any] | None = None,
                 **metrics: Any) -> None:
        """End the trial: ``value`` is the study metric's final value (a non-finite one ends
        it PRUNED), ``metrics`` the rest (test-split figures, costs), ``attrs`` figures kept
        as the trial's attributes that are not numbers (any JSON value)."""
        extra = {ATTRS: json.dumps(attrs, allow_nan=False)} if attrs else {}
        self.report({**metrics, **extra, self.metric: value, STEP: step, OUTCOME: COMPLETE})

    def prune(self, reason: str, *, step: int) -> None:
        """End the trial early by its own decision."""
        self.report({STEP: step, self.metric: math.nan, OUTCOME: PRUNED, REASON: reason})

    def fail(self, reason: str, *, out_of_memory: bool = False) -> None:
        """End the trial as FAIL (the search calls this when ``run`` raises)."""
        step = self.history[-1].get(STEP, 0) if self.history else 0
        self.report({STEP: step, self.metric: math.nan, OUTCOME: FAILED, REASON: reason,
                     OUT_OF_MEMORY: out_of_memory})


class Objective(ABC):
    """One kind of training the search can tune; see the module docstring for the order in
    which the search calls these."""

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    metrics: ClassVar[tuple[Metric, ...]]
    # Config fields that are file paths: section -> keys. Relative paths found beside the
    # space file are resolved there.
    path_fields: ClassVar[dict[str, list[str]]] = {}
    # Config fields that may name a trial of an earlier study instead of a folder: ``STUDY``
    # (its best trial) or ``STUDY:TRIAL``. The search puts that trial's folder there before
    # the config is validated; a value that is a path is left to ``path_fields``.
    trial_fields: ClassVar[dict[str, list[str]]] = {}
    # Config sections (or dotted keys in one) added after studies were made with this
    # objective: left out of a space's fingerprint while at their defaults, so those studies
    # still resume.
    added_sections: ClassVar[tuple[str, ...]] = ()
    # Known-good values of the objective's parameters (dotted keys) from experience outside
    # any one study. Where the space searches them, the search runs them as one trial right
    # after the untuned default (``study.recommended``), each at the nearest value the
    # space's range holds, or at its range's CENTRE; the other parameters stay untuned.
    recommended: ClassVar[dict[str, Any]] = {}

    def metric(self, name: str, config: BaseModel | None = None) -> Metric | None:
        metrics = self.metrics if config is None else self.metrics_for(config)
        return next((m for m in metrics if m.name == name), None)

    def metrics_for(self, config: BaseModel) -> tuple[Metric, ...]:
        """The metrics trials of ``config`` report (by default all the declared ones; e.g.
        no answer metrics when the data has no answers)."""
        return self.metrics

    def resolve(self, body: dict[str, Any]) -> dict[str, Any]:
        """The space's objective sections as written (paths and earlier trials resolved),
        before they are validated: fill in what files say (an adapter's shape, a learning
        rate relative to an earlier trial's). Raise DataError for what cannot be resolved."""
        return body

    def max_steps(self, config: BaseModel) -> int | None:
        """The longest a trial trains, in the steps it reports; None if not known upfront."""
        return None

    def check(self, config: BaseModel) -> None:  # noqa: B027 - optional hook
        """Raise DataError for a config that cannot work, before any trial runs."""

    def check_data(self, config: BaseModel) -> None:  # noqa: B027 - optional hook
        """Raise DataError for data that cannot be used (read once, before the search)."""

    def prepare(self, config: BaseModel, prepared_dir: Path) -> dict[str, Any] | None:
        """Work shared by all trials (tokenising data), done once before the first; returns
        the data report, if the objective makes one."""
        return None

    def oom_retry(self, config: BaseModel) -> dict[str, Any] | None:
        """Dotted-key overrides that run the same trial in less memory, or None if none do."""
        return None

    @abstractmethod
    def run(self, config: BaseModel, context: TrialContext) -> None:
        """Train and evaluate one trial."""

    @abstractmethod
    def save_best(self, trial_dir: Path, best_dir: Path) -> None:
        """Copy what a user needs of the winning trial to ``best_dir``."""

    def export(self, trial: FinishedTrial, out_dir: Path | None,
               options: dict[str, Any]) -> list[str]:
        """Write ``trial`` in a form to serve (default folder: chosen by the objective) and
        return the lines to print. Raise DataError for a trial or option it cannot export."""
        raise DataError("export", f"the {self.name} objective has no export")

    def report_sections(self, best: FinishedTrial | None) -> list[ReportSection]:
        """Sections of the study report that only this objective knows how to draw."""
        return []

    def answer(self, model_trial: Path, data_trial: Path, prepared_dir: Path,
               split: str) -> list[dict[str, str]]:
        """Prediction rows (prompt, reference, prediction; see ``write_predictions``) of the
        model trial folder ``model_trial`` saved, on ``split`` of the data ``data_trial`` was
        prepared with in ``prepared_dir``: how another study's trial (an earlier month's
        winner) does on this study's test split. Raise DataError when it cannot."""
        raise DataError("--b", f"the {self.name} objective cannot answer another study's "
                        "examples; compare trials of one data split")

    def score(self, metric: str, rows: list[dict[str, str]], labels: list[str] | None) -> float:
        """A per-example metric (named without its split prefix, e.g. ``accuracy``) of
        prediction rows; raise KeyError for a metric it cannot compute from predictions."""
        raise KeyError(metric)


def read_predictions(trial_dir: Path, split: str) -> tuple[list[dict[str, str]], list[str] | None]:
    """A trial's prediction rows on ``split``, in the split's order, and its label set."""
    path = Path(trial_dir) / PREDICTIONS.format(split=split)
    if not path.is_file():
        raise DataError("", f"no {path.name}: the trial did not finish its evaluation",
                        source=trial_dir)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    labels_file = Path(trial_dir) / LABELS
    labels = json.loads(labels_file.read_text(encoding="utf-8")) if labels_file.is_file() else None
    return rows, labels


def write_predictions(trial_dir: Path, split: str, rows: list[dict[str, str]]) -> Path:
    path = Path(trial_dir) / PREDICTIONS.format(split=split)
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(path)
    return path


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)
