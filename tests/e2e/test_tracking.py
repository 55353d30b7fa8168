"""Trials sent to experiment trackers: a real `mlflow server` on 127.0.0.1 (SQLite backend in a
temporary folder) read back with MlflowClient, and W&B in offline mode read back from its run
files. The fake objective's searches are real Ray and real studies."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from wandb.proto import wandb_internal_pb2

from tests.conftest import load, quiet_main
from tests.fakes import register_fake

STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED",
          TrialState.FAIL: "FAILED"}
# One trial of each ending: the untuned default completes, then the grid's three behaviours.
SPACE = """objective: fake
study: {{n_trials: {trials}, max_concurrent_trials: 1, seed: 0}}
sampler: {{name: grid}}
scheduler: {{name: none}}
fake: {{learning_rate: 0.02, max_steps: 30, eval_steps: 10, step_seconds: {pace}}}
tracking: {tracking}
search:
  fake.behaviour: {{type: categorical, choices: [complete, prune, raise]}}
"""


def space(folder: Path, tracking: str, trials: int = 4, pace: float = 0.0) -> Path:
    path = folder / "tracked.yaml"
    path.write_text(SPACE.format(tracking=tracking, trials=trials, pace=pace))
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{uri}/health", timeout=2).read() == b"OK":
                return server, uri
        except OSError:
            time.sleep(0.5)
    stop(server)
    raise RuntimeError("mlflow server did not start")


def stop(server: subprocess.Popen) -> None:
    """The server and the workers it started (its process group)."""
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server, uri = start_server(tmp_path_factory.mktemp("mlflow"))
    yield uri
    stop(server)


def runs(uri: str, experiment: str):
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    everything = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in everything if r.data.tags.get("ftsearch.role") == "study"]
    children = [r for r in everything if "optuna.trial_number" in r.data.tags]
    return client, parents, children


@pytest.fixture(autouse=True)
def fake_objective():
    register_fake()


def test_each_trial_is_a_nested_run_with_its_curve_state_and_reason(
        mlflow_server, studies_dir, tmp_path, local_ray):
    path = space(tmp_path, f"{{mlflow: {{uri: '{mlflow_server}', experiment: nested}}}}")
    code, out, err = quiet_main(["--space", str(path), "--study", "nested"])
    assert (code, err) == (0, ""), out
    study = load(studies_dir, "nested")
    client, parents, children = runs(mlflow_server, "nested")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.tags["optuna.best_trial"] == str(study.best_trial.number)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.html", "best"} <= artifacts
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "best")] == \
        ["best/trial.json", "best/weights.json"]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == \
        [t.number for t in study.trials]
    assert {t.state for t in study.trials} == set(STATUS)
    for run in children:
        trial = study.trials[int(run.data.tags["optuna.trial_number"])]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == STATUS[trial.state]
        assert run.data.tags["optuna.state"] == trial.state.name
        assert run.data.params == {k: str(v) for k, v in trial.params.items()}
        reason = trial.user_attrs.get("fail_reason") or trial.user_attrs.get("prune_reason")
        assert run.data.tags["ftsearch.reason"] == (reason or "")
        history = client.get_metric_history(run.info.run_id, "eval_loss")
        assert {m.step: m.value for m in history} == pytest.approx(trial.intermediate_values)
        if trial.state == TrialState.COMPLETE:
            assert run.data.metrics["test_loss"] == pytest.approx(trial.user_attrs["test_loss"])
            assert run.data.metrics["final/eval_loss"] == pytest.approx(trial.value)


def test_a_resumed_search_sends_only_what_the_server_lacks(
        mlflow_server, studies_dir, tmp_path, local_ray):
    path = space(tmp_path, f"{{mlflow: {{uri: '{mlflow_server}', experiment: resumed}}}}")
    assert quiet_main(["--space", str(path), "--study", "resumed", "--trials", "2"])[0] == 0
    # As a launcher killed in the middle leaves things: its parent run still RUNNING, and a
    # trial RUNNING in the study whose heartbeat stopped long ago.
    client, parents, _ = runs(mlflow_server, "resumed")
    client.update_run(parents[0].info.run_id, status="RUNNING")
    study = load(studies_dir, "resumed")
    stale = study.ask()
    study._storage.set_trial_user_attr(stale._trial_id, "heartbeat", time.time() - 3600)
    code, out, err = quiet_main(["--space", str(path), "--study", "resumed", "--resume",
                                 "--trials", "4"])
    assert (code, err) == (0, ""), out
    study = load(studies_dir, "resumed")
    _, parents, children = runs(mlflow_server, "resumed")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    numbers = sorted(int(r.data.tags["optuna.trial_number"]) for r in children)
    assert numbers == [t.number for t in study.trials]  # each once, the interrupted one too
    interrupted = next(r for r in children
                       if r.data.tags["optuna.trial_number"] == str(stale.number))
    assert (interrupted.info.status, interrupted.data.tags["ftsearch.reason"]) == \
        ("FAILED", "interrupted")
    assert all(r.info.status != "RUNNING" for r in children)


def test_a_server_that_goes_away_is_one_warning_and_the_search_goes_on(
        studies_dir, tmp_path, local_ray):
    server, uri = start_server(tmp_path / "doomed")
    path = space(tmp_path, f"{{mlflow: {{uri: '{uri}', experiment: doomed}}}}", pace=0.05)

    def stop_after_the_first_trial() -> None:
        client = MlflowClient(tracking_uri=uri)
        deadline = time.time() + 120
        while time.time() < deadline:
            found = client.get_experiment_by_name("doomed")
            if found and len(client.search_runs([found.experiment_id])) >= 2:
                break
            time.sleep(0.2)
        stop(server)

    stopper = threading.Thread(target=stop_after_the_first_trial)
    stopper.start()
    try:
        code, out, err = quiet_main(["--space", str(path), "--study", "doomed"])
    finally:
        stopper.join()
    assert code == 0, out + err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"warning: tracking: MLflow at {uri} failed (")
    assert err.rstrip().endswith("no more trials go there, the study keeps every result")
    trials = load(studies_dir, "doomed").trials
    assert {t.state for t in trials} == set(STATUS)  # every trial ran to its end


def test_the_command_line_uri_and_the_environment_name_the_server(
        mlflow_server, studies_dir, tmp_path, local_ray, monkeypatch):
    path = space(tmp_path, "{mlflow: {experiment: from_flag}}", trials=1)
    assert quiet_main(["--space", str(path), "--study", "flag", "--mlflow",
                       mlflow_server])[0] == 0
    assert len(runs(mlflow_server, "from_flag")[2]) == 1
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    path = space(tmp_path, "{mlflow: {experiment: from_env}}", trials=1)
    code, _, err = quiet_main(["--space", str(path), "--study", "env"])
    assert (code, err) == (0, "")
    assert len(runs(mlflow_server, "from_env")[2]) == 1


def wandb_records(path: Path) -> list[bytes]:
    """The records of a W&B run file: a 7-byte header (":W&B", magic, version), then LevelDB's
    log format, blocks of 32 KiB holding records of a 7-byte header (CRC-32C, length, type:
    1 full, 2 first, 3 middle, 4 last) and their bytes."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, at = [], b"", 7
    while at + 7 <= len(data):
        block_left = 32768 - at % 32768
        if block_left < 7:  # the block's tail is padding
            at += block_left
            continue
        length, kind = int.from_bytes(data[at + 4:at + 6], "little"), data[at + 6]
        chunk = data[at + 7:at + 7 + length]
        at += 7 + length
        if kind == 0:  # zeros: preallocated, unwritten
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(pending)
    return records


def test_wandb_offline_runs_hold_each_trial_grouped_by_the_study(
        studies_dir, tmp_path, local_ray, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    path = space(tmp_path, "{wandb: {project: tracked, mode: offline}}")
    code, out, err = quiet_main(["--space", str(path), "--study", "offline"])
    assert (code, err) == (0, ""), out
    study = load(studies_dir, "offline")
    found = {}
    for run_file in (studies_dir / "offline" / "wandb").glob("wandb/offline-run-*/*.wandb"):
        history, summary, exit_code, group, config = {}, {}, None, None, {}
        for data in wandb_records(run_file):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                group = record.run.run_group
                config = {item.key: json.loads(item.value_json)
                          for item in record.run.config.update}
            elif kind == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                       for item in record.history.item}
                history[row["_step"]] = row
            elif kind == "summary":
                summary.update({item.key: json.loads(item.value_json)
                                for item in record.summary.update})
            elif kind == "exit":
                exit_code = record.exit.exit_code
        found[config["optuna.trial_number"]] = (group, history, summary, exit_code)
    assert sorted(found) == [t.number for t in study.trials]
    for number, (group, history, summary, exit_code) in found.items():
        trial = study.trials[number]
        assert group == "offline"
        assert summary["state"] == trial.state.name
        assert exit_code == (0 if trial.state == TrialState.COMPLETE else 1)
        assert {step: row["eval_loss"] for step, row in history.items()} == \
            pytest.approx(trial.intermediate_values)
    ledger = json.loads((studies_dir / "offline" / "tracking.json").read_text())
    assert ledger["wandb"] == sorted(found)
