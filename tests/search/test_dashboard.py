"""The dashboard command: optuna-dashboard served on loopback over a real SQLite study."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.error import URLError

import optuna
import pytest

import launcher
from search.dashboard import is_loopback
from tests.conftest import REPO


def first_line(process: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "the dashboard printed no URL"
    return process.stdout.readline()


def test_dashboard_lists_the_study_then_stops_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="served", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    # Port 0: the system picks a free port, and the first line printed says which.
    process = subprocess.Popen(
        [sys.executable, "launcher.py", "dashboard", url, "--port", "0"], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = first_line(process, timeout=30)
        assert "http://127.0.0.1:" in line
        base = line.split("http://", 1)[1].split("/", 1)[0]
        deadline, names = time.monotonic() + 30, []
        while "served" not in names and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{base}/api/studies", timeout=5) as answer:
                    names = [s["study_name"] for s in json.load(answer)["study_summaries"]]
            except URLError:
                time.sleep(0.2)
        assert names == ["served"]
    finally:
        process.terminate()
        # SIGTERM stops it as Ctrl-C does: exit status 0, nothing on stderr.
        assert process.wait(timeout=10) == 0
        assert process.stderr.read() == ""
        process.stdout.close()
        process.stderr.close()


def test_a_missing_database_is_an_error_and_is_not_created(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.db"
    assert launcher.main(["dashboard", f"sqlite:///{missing}", "--port", "0"]) == 2
    assert "no SQLite database file" in capsys.readouterr().err
    assert not missing.exists()


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False),
    ("192.168.1.5", False), ("example.org", False)])
def test_only_loopback_hosts_count_as_private(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
