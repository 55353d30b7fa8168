"""Where a study lives: its folder under studies/, its Optuna storage, and stale trials."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from search.errors import SpaceError

STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"
INTERRUPTED = "interrupted"
# Study names become folder names: no path separators, no "..".
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")
JOURNAL_PREFIX = "journal:"


# Ray's integration asks and tells trials outside Study.optimize, so Optuna's own heartbeat never
# runs: the launcher writes the time into each of its RUNNING trials every HEARTBEAT_S (a user
# attribute, so every storage has it), and a RUNNING trial silent for STALE_AFTER_S belongs to
# a launcher that died. Other launchers' live trials are left alone.
HEARTBEAT = "heartbeat"
HEARTBEAT_S = 10
STALE_AFTER_S = 60


def is_study_name(name: str) -> bool:
    return bool(STUDY_NAME.match(name)) and ".." not in name


@dataclass(frozen=True)
class StudyPaths:
    """The folder of one study and what goes in it."""

    root: Path

    @classmethod
    def for_study(cls, name: str) -> StudyPaths:
        """studies/<name>, or under $FTSEARCH_STUDIES when set."""
        return cls((Path(os.environ.get("FTSEARCH_STUDIES", STUDIES_DIR)) / name).resolve())

    @property
    def db(self) -> Path:
        return self.root / "optuna.db"

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def ray(self) -> Path:
        return self.root / "ray"

    def trial_dir(self, number: int) -> Path:
        return self.trials / f"{number:04d}"  # zero-padded so folders sort by number


def default_url(paths: StudyPaths) -> str:
    return f"sqlite:///{paths.db}"


def check_storage_url(url: str) -> None:
    """Raise ValueError for a URL no Optuna storage here can open."""
    if url.startswith(JOURNAL_PREFIX):
        if not url[len(JOURNAL_PREFIX):]:
            raise ValueError("journal: needs a file path, e.g. journal:studies/x/journal.log")
        return
    try:
        scheme = make_url(url).get_backend_name()
    except ArgumentError:
        scheme = None
    if scheme not in RDB_SCHEMES:
        raise ValueError(f"unsupported storage URL {mask(url)!r}; use sqlite:///PATH, "
                         "postgresql://..., mysql://... or journal:PATH")


def open_storage(url: str) -> BaseStorage:
    """An Optuna storage for a URL: an SQLAlchemy URL, or journal:PATH for a journal file."""
    check_storage_url(url)
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX):]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    database = make_url(url).database
    if make_url(url).get_backend_name() == "sqlite" and database:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    return RDBStorage(url)


def mask(url: str) -> str:
    """The URL with any password replaced by ***, for printing and storing."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def is_stale(trial: FrozenTrial, now: float) -> bool:
    """A RUNNING trial whose launcher stopped beating; one not yet beaten for is as old as
    its start (its launcher writes the first beat just after asking for it)."""
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0
    return now - trial.user_attrs.get(HEARTBEAT, started) > STALE_AFTER_S


def fail_interrupted(storage: BaseStorage, study_name: str) -> list[int]:
    """Trials left RUNNING by a launcher that died are marked FAIL; returns their numbers."""
    study_id = storage.get_study_id_from_name(study_name)
    now, numbers = time.time(), []
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(trial, now):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", INTERRUPTED)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # it just finished, or another launcher marked it first
        numbers.append(trial.number)
    return numbers


def is_counted(trial: FrozenTrial) -> bool:
    """Whether a finished trial counts toward the study's total: interrupted ones run again."""
    return trial.state.is_finished() and trial.user_attrs.get("fail_reason") != INTERRUPTED


def finished_count(study: optuna.Study) -> int:
    return sum(map(is_counted, study.get_trials(deepcopy=False)))


def resolve_target(target: str) -> tuple[str, str | None]:
    """A storage URL and study name for the launcher's STUDY_OR_STORAGE_URL argument.

    A URL (sqlite:///..., postgresql://..., journal:PATH) is used as is and names no study; a
    bare name is the study in studies/<name>/optuna.db.
    """
    if "://" in target or target.startswith(JOURNAL_PREFIX):
        return target, None
    if not is_study_name(target):
        raise SpaceError(target, "", "neither a storage URL (sqlite:///PATH, postgresql://..., "
                         "journal:PATH) nor a study name")
    paths = StudyPaths.for_study(target)
    if not paths.db.is_file():
        raise SpaceError(target, "", f"no study of that name: {paths.db} does not exist")
    return default_url(paths), target


def open_existing(url: str) -> BaseStorage:
    """The storage at ``url``; never creates one, as opening a mistyped SQLite path would."""
    try:
        check_storage_url(url)
    except ValueError as error:
        raise SpaceError(mask(url), "", str(error)) from None
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX):]).expanduser()
        if not path.is_file():
            raise SpaceError(url, "", f"journal file {path} does not exist")
    elif make_url(url).get_backend_name() == "sqlite":
        database = make_url(url).database
        if not database or database == ":memory:" or not Path(database).is_file():
            raise SpaceError(mask(url), "", "no SQLite database file at that path")
    try:
        return open_storage(url)
    except SQLAlchemyError as error:
        problem = str(error).splitlines()[0]
        raise SpaceError(mask(url), "", f"cannot open the storage: {problem}") from None
