"""Shared fixtures: an isolated studies folder per test, one model cache per session."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
import ray

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
TINY_SPACE = DATA / "spaces" / "tiny.yaml"


def pytest_configure(config: pytest.Config) -> None:
    # The embedded model is built once per cache; CI points this at its own folder.
    if "FTSEARCH_CACHE" not in os.environ:
        os.environ["FTSEARCH_CACHE"] = str(Path.home() / ".cache" / "ftsearch")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/e2e/ is slow: real Ray with real training, clusters, servers."""
    for item in items:
        if "e2e" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def studies_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test writes its studies to its own folder, never to the repository's."""
    folder = tmp_path / "studies"
    monkeypatch.setenv("FTSEARCH_STUDIES", str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from objectives.causal_lm_lora.tiny_llama import ensure_builtin

    return ensure_builtin()


@pytest.fixture(scope="module")
def local_ray():
    """Tests that run searches in this process share its Ray, stopped after the module."""
    yield
    ray.shutdown()


def load(studies_dir: Path, name: str) -> optuna.Study:
    """A study as the launcher stores it by default."""
    url = f"sqlite:///{studies_dir / name / 'optuna.db'}"
    return optuna.load_study(study_name=name, storage=url)


def quiet_main(argv: list[str]) -> tuple[int, str, str]:
    """The launcher's exit code, stdout and stderr for ``argv``, run in this process."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    import launcher

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = launcher.main(argv)
    return code, out.getvalue(), err.getvalue()
