"""Where a study lives: its folder under studies/ and its Optuna storage; the one resolver
from a study name or storage URL to the study, used by every command."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from objectives import get_objective
from objectives.base import FinishedTrial, Objective
from search.errors import InputError, closest
from search.history import WARM_START, is_added

STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"
# Study names become folder names: no path separators, no "..".
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")
JOURNAL_PREFIX = "journal:"


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
    def storage_note(self) -> Path:
        """Where a study kept elsewhere (journal, PostgreSQL) notes its URL, password masked."""
        return self.root / "storage.url"

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

    def folder_of(self, trial: FrozenTrial) -> Path:
        """A trial's folder as its launcher recorded it, else where it would be here."""
        recorded = trial.user_attrs.get("trial_dir")
        return Path(recorded) if isinstance(recorded, str) else self.trial_dir(trial.number)


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


def resolve_target(target: str) -> tuple[str, str | None]:
    """A storage URL and study name for the launcher's STUDY_OR_STORAGE_URL argument.

    A URL (sqlite:///..., postgresql://..., journal:PATH) is used as is and names no study; a
    bare name is the study in studies/<name>/optuna.db, or in the storage its folder notes.
    """
    if "://" in target or target.startswith(JOURNAL_PREFIX):
        return target, None
    if not is_study_name(target):
        raise InputError(target, "", "neither a storage URL (sqlite:///PATH, postgresql://..., "
                         "journal:PATH) nor a study name")
    paths = StudyPaths.for_study(target)
    if paths.db.is_file():
        return default_url(paths), target
    if paths.storage_note.is_file():
        url = paths.storage_note.read_text(encoding="utf-8").strip()
        if "***" in url:
            raise InputError(target, "", f"the study is in {url}; give that URL with its "
                             "password instead of the name")
        return url, target
    raise InputError(target, "", f"no study of that name: {paths.db} does not exist")


def note_storage(paths: StudyPaths, url: str) -> None:
    """A study kept outside its folder can still be found by name (password masked)."""
    if url != default_url(paths):
        paths.storage_note.write_text(mask(url) + "\n", encoding="utf-8")


def finished_trial(study: optuna.Study, trial: FrozenTrial, paths: StudyPaths) -> FinishedTrial:
    """A trial as objectives see it (objectives.base.FinishedTrial)."""
    value = trial.values[0] if trial.values else None  # a multi-objective study's first
    return FinishedTrial(study_name=study.study_name, number=trial.number, value=value,
                         params=dict(trial.params), trial_dir=paths.folder_of(trial),
                         metric=str(study.user_attrs.get("metric", "")),
                         attrs=dict(trial.user_attrs))


@dataclass
class ResolvedStudy:
    url: str
    study: optuna.Study
    paths: StudyPaths  # the study's folder: trials, report, export, comparison

    def objective(self) -> Objective:
        """The objective that made the study (its ``objective`` user attribute)."""
        name = self.study.user_attrs.get("objective")
        try:
            return get_objective(name)
        except KeyError:
            raise InputError(self.study.study_name, "", f"made by objective {name!r}, which "
                             "is not installed here") from None

    def trial(self, number: int | None) -> FrozenTrial:
        """A COMPLETE trial of the study by number; None: the best one."""
        from search.summary import best_trial, pareto_front  # summary imports this module

        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        if number is None:
            front = pareto_front(self.study) if len(self.study.directions) > 1 else []
            if front:
                numbers = ", ".join(str(t.number) for t in front)
                raise InputError("--trial", "", f"study '{self.study.study_name}' has several "
                                 f"objectives and no single best trial; choose one of its "
                                 f"Pareto front ({numbers})")
            best = best_trial(self.study)
            if best is None:
                raise InputError(self.study.study_name, "", "no trial completed, so there is "
                                 "no best trial")
            return best
        if number not in trials:
            raise InputError("--trial", "", f"study '{self.study.study_name}' has no trial "
                             f"{number}")
        if is_added(trials[number]):
            raise InputError("--trial", "", f"trial {number} was added from study "
                             f"{trials[number].user_attrs[WARM_START]} (search.warm_start) and "
                             "did not run here")
        if trials[number].state != TrialState.COMPLETE:
            raise InputError("--trial", "", f"trial {number} is {trials[number].state.name}, "
                             "not COMPLETE")
        return trials[number]

    def finished(self, trial: FrozenTrial) -> FinishedTrial:
        return finished_trial(self.study, trial, self.paths)


def pick_study(storage: BaseStorage, study_name: str | None, url: str) -> str:
    """The study named, or the storage's only one."""
    names = sorted(s.study_name for s in storage.get_all_studies())
    if study_name is None:
        if len(names) == 1:
            return names[0]
        listing = ", ".join(names) if names else "none"
        raise InputError(mask(url), "--study", f"the storage holds {len(names)} studies "
                         f"({listing}); name one with --study")
    if study_name not in names:
        raise InputError(mask(url), "--study", f"no study named {study_name!r}"
                         f"{closest(study_name, names)}; the storage holds: "
                         f"{', '.join(names) or 'none'}")
    return study_name


def resolve_study(target: str, study_name: str | None = None) -> ResolvedStudy:
    """The study that a command's STUDY_OR_STORAGE_URL (and --study) names; never creates
    anything. Its folder is studies/<study name>, whatever the storage."""
    url, name = resolve_target(target)
    storage = open_existing(url)
    name = pick_study(storage, study_name or name, url)
    return ResolvedStudy(url, optuna.load_study(study_name=name, storage=storage),
                         StudyPaths.for_study(name))


def open_existing(url: str) -> BaseStorage:
    """The storage at ``url``; never creates one, as opening a mistyped SQLite path would."""
    try:
        check_storage_url(url)
    except ValueError as error:
        raise InputError(mask(url), "", str(error)) from None
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX):]).expanduser()
        if not path.is_file():
            raise InputError(url, "", f"journal file {path} does not exist")
    elif make_url(url).get_backend_name() == "sqlite":
        database = make_url(url).database
        if not database or database == ":memory:" or not Path(database).is_file():
            raise InputError(mask(url), "", "no SQLite database file at that path")
    try:
        return open_storage(url)
    except SQLAlchemyError as error:
        problem = str(error).splitlines()[0]
        raise InputError(mask(url), "", f"cannot open the storage: {problem}") from None
