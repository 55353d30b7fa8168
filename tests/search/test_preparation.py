"""The objective's checks and data preparation, in a process of their own."""

from __future__ import annotations

import atexit
import gc
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from objectives.base import DataError
from search.errors import InputError
from search.preparation import preparing
from search.space import SearchSpace, load_space
from search.storage import StudyPaths
from tests.conftest import DATA, REPO, TINY_SPACE
from tests.fakes import FakeConfig, FakeObjective, register_fake

FAKE_SPACE = DATA / "spaces" / "fake.yaml"
SEEN = "seen.json"
TEARDOWN = "teardown"


class Preparing(FakeObjective):
    """The fake objective, whose preparation says where it ran and, on request, fails, waits
    or dies (``fake.behaviour`` picks which)."""

    def prepare(self, config: FakeConfig, prepared_dir: Path) -> dict[str, Any] | None:
        prepared_dir.mkdir(parents=True, exist_ok=True)
        (prepared_dir / SEEN).write_text(json.dumps({"pid": os.getpid()}))
        behaviour = config.fake.behaviour
        if behaviour == "raise":
            raise DataError("fake.data", "no row has a label", source="rows.jsonl")
        if behaviour == "prune":  # stands for a preparation that takes long
            time.sleep(60)
        if behaviour == "oom":  # stands for a process killed by the kernel
            os._exit(3)
        return {"summary": "4 rows"}


@pytest.fixture(autouse=True)
def _fake() -> None:
    register_fake()


def space(tmp_path: Path, behaviour: str = "complete", **fake: Any) -> SearchSpace:
    raw = yaml.safe_load(FAKE_SPACE.read_text())
    raw["fake"] = {**raw["fake"], "behaviour": behaviour, **fake}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    loaded = load_space(str(path), objective_checks=False)
    loaded.objective = Preparing()
    return loaded


def paths(tmp_path: Path) -> StudyPaths:
    return StudyPaths(tmp_path / "studies" / "prep")


@pytest.mark.parametrize("error", [
    InputError("space.yaml", "fake.data", "dataset file not found"),
    DataError("line 3", "not JSON", source="rows.jsonl"),
    DataError("training.max_steps", "must be positive"),
])
def test_input_errors_cross_processes_as_they_are(error: ValueError) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert vars(again) == vars(error)


@pytest.mark.parametrize("apart", [True, False])
def test_the_data_is_prepared_in_another_process_or_on_request_in_this_one(
        tmp_path: Path, apart: bool) -> None:
    study = paths(tmp_path)
    with preparing(space(tmp_path), study, apart=apart) as prepared:
        prepared()
    assert (json.loads((study.prepared / SEEN).read_text())["pid"] != os.getpid()) is apart
    assert json.loads((study.root / "data_report.json").read_text()) == {"summary": "4 rows"}


class TornDown(Preparing):
    """Writes, at the start of the interpreter's teardown of the process that prepared the
    data, how many objects the garbage collector no longer looks at."""

    def prepare(self, config: FakeConfig, prepared_dir: Path) -> dict[str, Any] | None:
        atexit.register(lambda: (prepared_dir / TEARDOWN).write_text(
            str(gc.get_freeze_count())))
        return super().prepare(config, prepared_dir)


def test_the_preparing_process_ends_without_collecting_its_garbage(tmp_path: Path) -> None:
    """Once it has answered, its objects are frozen: the garbage collections of the teardown,
    over the training libraries it imported, took about 1 s, which delayed the first trial."""
    study, loaded = paths(tmp_path), space(tmp_path)
    loaded.objective = TornDown()
    with preparing(loaded, study) as prepared:
        prepared()
    assert int((study.prepared / TEARDOWN).read_text()) > 0


LAUNCHER_SIDE = """
import json, sys
from pathlib import Path
from search.preparation import preparing
from search.space import load_space
from search.storage import StudyPaths
space = load_space(sys.argv[1], objective_checks=False)
paths = StudyPaths(Path(sys.argv[2]))
with preparing(space, paths) as prepared:
    prepared()
print(json.dumps(sorted(m for m in ("torch", "transformers", "datasets") if m in sys.modules)))
"""


@pytest.mark.slow  # the tiny Llama's tokeniser and data, in a new process
def test_the_launcher_side_never_imports_the_training_libraries(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-c", LAUNCHER_SIDE, str(TINY_SPACE),
                          str(tmp_path / "tiny")], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == []
    assert any((tmp_path / "tiny" / "prepared").iterdir())  # the tokenised splits
    assert (tmp_path / "tiny" / "data_report.json").exists()


@pytest.mark.parametrize("apart", [True, False])
def test_bad_data_is_the_objectives_input_error_and_leaves_no_folder(
        tmp_path: Path, apart: bool) -> None:
    study = paths(tmp_path)
    with pytest.raises(InputError) as raised, \
            preparing(space(tmp_path, "raise"), study, apart=apart) as ready:
        ready()
    assert str(raised.value) == "rows.jsonl: fake.data: no row has a label"
    assert not (tmp_path / "studies").exists()


def test_a_failed_check_prepares_nothing(tmp_path: Path) -> None:
    study = paths(tmp_path)
    bad = space(tmp_path, data=str(tmp_path / "missing.jsonl"))
    with pytest.raises(InputError, match="missing.jsonl: fake.data: dataset file not found"), \
            preparing(bad, study) as ready:
        ready()
    assert not (tmp_path / "studies").exists()


def test_an_existing_study_folder_is_kept_when_its_data_is_bad(tmp_path: Path) -> None:
    study = paths(tmp_path)
    study.root.mkdir(parents=True)
    (study.root / "optuna.db").write_bytes(b"the study")
    with pytest.raises(InputError), preparing(space(tmp_path, "raise"), study) as ready:
        ready()
    assert (study.root / "optuna.db").read_bytes() == b"the study"


def test_an_error_in_the_launcher_stops_the_preparation(tmp_path: Path) -> None:
    study = paths(tmp_path)
    with pytest.raises(InputError, match="resources.gpu"), \
            preparing(space(tmp_path, "prune"), study):
        while not (study.prepared / SEEN).exists():
            time.sleep(0.05)
        pid = json.loads((study.prepared / SEEN).read_text())["pid"]
        raise InputError("space.yaml", "resources.gpu", "the cluster has 0")
    assert not psutil.pid_exists(pid)
    assert not (tmp_path / "studies").exists()


def test_a_preparation_that_dies_is_an_error_naming_its_exit_code(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="ended with exit code 3"), \
            preparing(space(tmp_path, "oom"), paths(tmp_path)) as ready:
        ready()
