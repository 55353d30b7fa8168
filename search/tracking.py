"""A study mirrored into the experiment trackers a team already uses (MLflow, Weights & Biases).

The study stays the record. A tracker receives each finished trial once, when it ends (so no
trial is left RUNNING there when a launcher dies): its parameters, the metrics of every
evaluation by optimizer step, its final metrics, the Optuna trial number, its state (COMPLETE,
PRUNED, FAIL) and the reason. A tracker that fails (a server gone mid-search) is reported once
on stderr and left alone; the search goes on. A resumed search sends only the trials the
tracker does not have yet.

- MLflow: the study is a parent run (the best trial's adapter and the report are its
  artifacts at the end), each trial a nested run.
- W&B: a run per trial, grouped by the study; which trials it has is kept in
  ``studies/<name>/tracking.json``, since an offline W&B cannot be asked.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune import Callback

from objectives.base import OUTCOME, STEP
from search.heartbeat import HEARTBEAT
from search.history import is_added
from search.space import TrackingSection, WandbSection
from search.storage import StudyPaths

LEDGER = "tracking.json"  # per study: the trials each ledger-kept tracker has
STATES = {TrialState.COMPLETE: "COMPLETE", TrialState.PRUNED: "PRUNED", TrialState.FAIL: "FAIL"}


@dataclass
class TrialRecord:
    """A finished trial as every tracker receives it."""

    number: int
    state: str
    params: dict[str, Any]
    history: list[tuple[int, dict[str, float]]]  # (optimizer step, metrics of that evaluation)
    final: dict[str, float]
    reason: str = ""
    baseline: bool = False
    started: float | None = None  # seconds since the epoch
    ended: float | None = None
    tags: dict[str, str] = field(default_factory=dict)


def record(study: optuna.Study, trial: FrozenTrial, paths: StudyPaths) -> TrialRecord:
    """What a tracker is told of a finished trial. The history is every evaluation the trial
    folder holds (metrics.jsonl), else the study's learning curve of the first metric."""
    metric = study.metric_names[0] if study.metric_names else "value"
    history = _evaluations(paths.trial_dir(trial.number) / "metrics.jsonl") or \
        [(step, {metric: value}) for step, value in sorted(trial.intermediate_values.items())]
    final = {key: value for key, value in trial.user_attrs.items()
             if isinstance(value, float) and key != HEARTBEAT and math.isfinite(value)}
    if trial.values:
        names = study.metric_names or [metric]
        final.update(dict(zip(names, trial.values, strict=False)))
    attrs = trial.user_attrs
    return TrialRecord(
        number=trial.number, state=STATES[trial.state], params=dict(trial.params),
        history=history, final=final,
        reason=str(attrs.get("fail_reason") or attrs.get("prune_reason") or ""),
        baseline=bool(attrs.get("baseline")),
        started=trial.datetime_start.timestamp() if trial.datetime_start else None,
        ended=trial.datetime_complete.timestamp() if trial.datetime_complete else None)


def _evaluations(path: Path) -> list[tuple[int, dict[str, float]]]:
    """Each evaluation's numbers by step (the last report of a step wins: a restarted trial
    repeats steps); the final report, which ends the trial, is not an evaluation."""
    if not path.is_file():
        return []
    steps: dict[int, dict[str, float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {}
        if OUTCOME in row or STEP not in row:
            continue
        steps[int(row[STEP])] = {k: float(v) for k, v in row.items() if k != STEP
                                 and isinstance(v, (int, float)) and not isinstance(v, bool)
                                 and math.isfinite(v)}
    return sorted(steps.items())


class Tracker(ABC):
    """One tracker's side of the mirror."""

    name: str

    @abstractmethod
    def start(self, study: optuna.Study) -> set[int]:
        """Open (or, resumed, find again) the study's place; the trial numbers it has."""

    @abstractmethod
    def trial(self, trial: TrialRecord) -> None:
        """Send one finished trial."""

    @abstractmethod
    def finish(self, best: int | None, artifacts: Iterable[Path]) -> None:
        """The search ended: the winner's number and the files to keep beside the study."""


class Mirror:
    """The trackers of a search; each failure is reported once and drops that tracker."""

    def __init__(self, trackers: list[Tracker], paths: StudyPaths) -> None:
        self.trackers, self.paths = trackers, paths
        self.sent: dict[Tracker, set[int]] = {}  # the trial numbers each tracker has

    def _guarded(self, tracker: Tracker, action) -> None:
        try:
            action()
        except Exception as error:  # noqa: BLE001 - a tracker must never stop the search
            self.trackers.remove(tracker)
            print(f"warning: tracking: {tracker.name} failed ({type(error).__name__}: "
                  f"{str(error).splitlines()[0] if str(error) else ''}); no more trials go "
                  "there, the study keeps every result", file=sys.stderr)

    def start(self, study: optuna.Study) -> None:
        for tracker in list(self.trackers):
            self._guarded(tracker, lambda t=tracker: self.sent.__setitem__(t, t.start(study)))

    def sync(self, study: optuna.Study) -> None:
        """Send every finished trial of this study a tracker does not have yet."""
        if not self.trackers:  # none configured (or all failed): the study is read no more
            return
        trials = [t for t in study.get_trials(deepcopy=False, states=tuple(STATES))
                  if not is_added(t)]
        for tracker in list(self.trackers):
            sent = self.sent.setdefault(tracker, set())
            for trial in trials:
                if trial.number not in sent and tracker in self.trackers:
                    self._guarded(tracker, lambda t=tracker, x=trial: t.trial(
                        record(study, x, self.paths)))
                    sent.add(trial.number)

    def finish(self, study: optuna.Study, best: int | None, artifacts: Iterable[Path]) -> None:
        self.sync(study)
        kept = [path for path in artifacts if path.exists()]
        for tracker in list(self.trackers):
            self._guarded(tracker, lambda t=tracker: t.finish(best, kept))


class SyncOnTrialEnd(Callback):
    """Sends each trial to the trackers as soon as Ray reports it ended."""

    def __init__(self, mirror: Mirror, study: optuna.Study) -> None:
        self.mirror, self.study = mirror, study

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self.mirror.sync(self.study)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self.mirror.sync(self.study)


class MlflowTracker(Tracker):
    """The study as a parent run, each trial as a nested run (MlflowClient: no global run)."""

    name = "MLflow"
    STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}

    def __init__(self, uri: str, experiment: str | None,
                 artifact_location: str | None = None) -> None:
        # A server that stops answering costs seconds, not the minutes of MLflow's retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        # Its retries' own notices: the one warning of the Mirror says it instead; and no
        # INFO lines of MLflow's on stderr (a new SQLite store announces its tables).
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.uri, self.experiment, self.artifact_location = uri, experiment, artifact_location
        self.name = f"MLflow at {uri}"
        self.parent = ""
        self.experiment_id = ""

    def start(self, study: optuna.Study) -> set[int]:
        from mlflow.tracking import MlflowClient  # not installed: the Mirror's one warning

        self.client = MlflowClient(tracking_uri=self.uri)
        name = self.experiment or study.study_name
        found = self.client.get_experiment_by_name(name)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(
            name, artifact_location=self.artifact_location)
        parents = self.client.search_runs(
            [self.experiment_id], f"tags.`ftsearch.study` = '{study.study_name}' and "
            "tags.`ftsearch.role` = 'study'", max_results=1)
        if parents:
            self.parent = parents[0].info.run_id
            self.client.update_run(self.parent, status="RUNNING")
        else:
            self.parent = self.client.create_run(
                self.experiment_id, run_name=study.study_name,
                tags={"ftsearch.study": study.study_name, "ftsearch.role": "study",
                      "optuna.metrics": ",".join(study.metric_names or [])}).info.run_id
        children = self.client.search_runs(
            [self.experiment_id], f"tags.`mlflow.parentRunId` = '{self.parent}'",
            max_results=50000)
        return {int(run.data.tags["optuna.trial_number"]) for run in children
                if "optuna.trial_number" in run.data.tags}

    def trial(self, trial: TrialRecord) -> None:
        from mlflow.entities import Metric, Param

        run = self.client.create_run(
            self.experiment_id, run_name=f"trial {trial.number}",
            start_time=_ms(trial.started),
            tags={"mlflow.parentRunId": self.parent, "optuna.trial_number": str(trial.number),
                  "optuna.state": trial.state, "ftsearch.reason": trial.reason,
                  "ftsearch.baseline": str(trial.baseline).lower()}).info.run_id
        stamp = _ms(trial.ended) or int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, step) for step, values in trial.history
                   for key, value in values.items()]
        last = trial.history[-1][0] if trial.history else 0
        metrics += [Metric(f"final/{key}" if any(key in v for _, v in trial.history) else key,
                           value, stamp, last) for key, value in trial.final.items()]
        params = [Param(key, str(value)) for key, value in trial.params.items()]
        for start in range(0, len(metrics), 1000):  # MLflow's limits per batch
            self.client.log_batch(run, metrics=metrics[start:start + 1000])
        for start in range(0, len(params), 100):
            self.client.log_batch(run, params=params[start:start + 100])
        self.client.set_terminated(run, self.STATUS[trial.state], end_time=stamp)

    def finish(self, best: int | None, artifacts: Iterable[Path]) -> None:
        if best is not None:
            self.client.set_tag(self.parent, "optuna.best_trial", str(best))
        for path in artifacts:
            if path.is_dir():
                self.client.log_artifacts(self.parent, str(path), path.name)
            else:
                self.client.log_artifact(self.parent, str(path))
        self.client.set_terminated(self.parent, "FINISHED")


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds is not None else None


class WandbTracker(Tracker):
    """A W&B run per trial, grouped by the study (job_type trial), ended with the trial's
    exit code: 0 COMPLETE, 1 PRUNED or FAIL (the state is in its summary and tags)."""

    def __init__(self, section: WandbSection, paths: StudyPaths) -> None:
        self.section, self.paths = section, paths
        self.name = f"W&B project {section.project}"
        self.study_name = ""

    def start(self, study: optuna.Study) -> set[int]:
        import wandb  # noqa: F401 - fails here, once, when W&B is not installed

        self.study_name = study.study_name
        return set(_ledger(self.paths).get("wandb", []))

    def trial(self, trial: TrialRecord) -> None:
        import wandb

        folder = self.paths.root / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=self.section.project, entity=self.section.entity, group=self.study_name,
            job_type="trial", name=f"{self.study_name} trial {trial.number}",
            mode=os.environ.get("WANDB_MODE", self.section.mode), dir=str(folder),
            config={**trial.params, "optuna.trial_number": trial.number,
                    "baseline": trial.baseline},
            tags=[trial.state], reinit="create_new", settings=wandb.Settings(
                silent=True, console="off", x_disable_stats=True))
        for step, values in trial.history:
            run.log(values, step=step)
        run.summary.update({**trial.final, "optuna.trial_number": trial.number,
                            "state": trial.state, "reason": trial.reason})
        run.finish(exit_code=0 if trial.state == "COMPLETE" else 1)
        ledger = _ledger(self.paths)
        ledger["wandb"] = sorted({*ledger.get("wandb", []), trial.number})
        (self.paths.root / LEDGER).write_text(json.dumps(ledger), encoding="utf-8")

    def finish(self, best: int | None, artifacts: Iterable[Path]) -> None:
        """Each trial's run already ended; nothing is kept at the study's level."""


def _ledger(paths: StudyPaths) -> dict[str, Any]:
    path = paths.root / LEDGER
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def trackers(section: TrackingSection | None, mlflow_uri: str | None,
             paths: StudyPaths) -> list[Tracker]:
    """The trackers a search sends to: the space's tracking section, and ``--mlflow URI``."""
    chosen: list[Tracker] = []
    mlflow = section.mlflow if section else None
    if mlflow is not None or mlflow_uri:
        uri = mlflow_uri or (mlflow.uri if mlflow else None) or \
            os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            chosen.append(MlflowTracker(uri, mlflow.experiment if mlflow else None,
                                        mlflow.artifact_location if mlflow else None))
        else:
            print("warning: tracking: MLflow has no tracking URI (tracking.mlflow.uri, --mlflow "
                  "or MLFLOW_TRACKING_URI); the study keeps every result", file=sys.stderr)
    if section is not None and section.wandb is not None:
        chosen.append(WandbTracker(section.wandb, paths))
    return chosen
