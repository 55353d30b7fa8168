"""A search on a real two-node Ray cluster, submitted as a Ray Job, and two launchers sharing one
PostgreSQL study: every trial is counted once, and the trials spread over both nodes.

Everything runs on this machine over loopback: a PostgreSQL server of the test's own, and Ray
nodes on 127.0.0.2 (head) and 127.0.0.3, which share this machine's filesystem.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.cluster import check_cluster_storage, entrypoint, job_space_argument, jobs, submit
from search.errors import InputError
from tests.conftest import REPO, TINY_SPACE
from tests.e2e.conftest import free_port

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
JOB_TIMEOUT_S = 240


def space_file(folder: Path, storage: str, n_trials: int, concurrent: int) -> Path:
    """tiny.yaml with a shared storage, random sampling, one CPU per trial and no failing
    choice (its search of lora.target_modules would fail a trial on purpose)."""
    text = TINY_SPACE.read_text().replace("../../../data", str(REPO / "data"))
    text = text.replace("n_trials: 5", f"n_trials: {n_trials}\n  storage: {storage}")
    text = text.replace("max_concurrent_trials: 1", f"max_concurrent_trials: {concurrent}")
    text = text.replace("name: grid", "name: random")
    lines = [line for line in text.splitlines() if "lora.target_modules" not in line]
    lines += ["  lora.r: {type: categorical, choices: [4, 8]}", "resources:", "  cpu: 1"]
    path = folder / "space.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def study_trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)


@dataclass
class Cluster:
    dashboard: str  # the Jobs API: http://127.0.0.1:PORT
    gcs: str  # where drivers and nodes join: 127.0.0.2:PORT
    env: dict[str, str]  # what a client needs: RAY_AUTH_MODE=token and the token

    def python(self, code: str, *args: str, timeout: float = 60) -> dict:
        """Run code as a client of the cluster in a process of its own (Ray reads the token
        settings once per process, as a user's shell would give them); returns its last
        stdout line as JSON."""
        done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])


def kill_marked(marker: bytes) -> None:
    """Kill the processes whose environment carries marker, whatever session they are in."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            continue  # gone already, or not ours to read


@pytest.fixture
def ray_cluster(studies_dir: Path) -> Iterator[Cluster]:
    """A head on 127.0.0.2 and a second node on 127.0.0.3, one CPU each, token authentication
    with a token of their own, in a private temp dir; killed at the end whatever happened."""
    if platform.system() != "Linux":
        pytest.skip("the nodes listen on 127.0.0.2 and 127.0.0.3, which only Linux routes")
    root = Path(tempfile.mkdtemp(prefix="ftray", dir="/tmp"))  # sockets: 107-byte paths
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update({
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
        # The job's `python` is this interpreter; its studies go to the test's folder.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FTSEARCH_STUDIES": str(studies_dir),
    })
    ray_cli = str(Path(sys.executable).parent / "ray")
    gcs_port, dashboard_port = free_port(), free_port()
    groups: list[int] = []

    def start(name: str, *args: str) -> None:
        # A temp dir per node, as on separate machines: a node deletes the job's copy of the
        # project from its temp dir once its own workers are done with it.
        # A session of its own: the node's daemons stay in this process group after it exits.
        # Free ports for what listens on fixed ones by default (the agent on 52365, Ray
        # Client on 10001): another Ray on this machine may hold them on the same address.
        ports = ["--dashboard-agent-listen-port", str(free_port())]
        if "--head" in args:
            ports += ["--ray-client-server-port", str(free_port())]
        node = subprocess.Popen([ray_cli, "start", *args, *ports, "--num-cpus", "1",
                                 "--temp-dir", str(root / name), "--disable-usage-stats"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        groups.append(node.pid)
        output = node.communicate(timeout=120)[0]
        assert node.returncode == 0, output

    try:
        start("head", "--head", "--node-ip-address", HEAD_IP, "--port", str(gcs_port),
              "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
              "--resources", '{"node_a": 1}')
        start("worker", "--address", f"{HEAD_IP}:{gcs_port}", "--node-ip-address", WORKER_IP,
              "--resources", '{"node_b": 1}')
        yield Cluster(f"http://127.0.0.1:{dashboard_port}", f"{HEAD_IP}:{gcs_port}", env)
    finally:
        for group in groups:
            with contextlib.suppress(ProcessLookupError):  # every process of it has ended
                os.killpg(group, signal.SIGKILL)
        # Job drivers run in sessions of their own; they carry the cluster's token path.
        kill_marked(f"RAY_AUTH_TOKEN_PATH={token}".encode())
        shutil.rmtree(root, ignore_errors=True)


NODES = """
import json, sys, ray
from search.cluster import check_cluster_storage, is_multi_node
from search.errors import InputError
ray.init(address=sys.argv[1], log_to_driver=False)
try:
    check_cluster_storage("sqlite:////tmp/x/optuna.db", is_multi_node())
    refusal = None
except InputError as error:
    refusal = str(error)
nodes = sorted(node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"])
print(json.dumps({"nodes": nodes, "multi": is_multi_node(), "refusal": refusal}))
"""

SUBMIT_AND_WAIT = """
import contextlib, io, json, sys, time
from ray.job_submission import JobSubmissionClient
from search.cluster import jobs, submit
from search.errors import InputError
address, space, study, timeout, studies_dir = sys.argv[1:]
job_id = submit(space, address, study, [], studies_dir)
client = JobSubmissionClient(address)
deadline = time.monotonic() + float(timeout)
while not client.get_job_status(job_id).is_terminal() and time.monotonic() < deadline:
    time.sleep(1)
if not client.get_job_status(job_id).is_terminal():
    client.stop_job(job_id)
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    jobs("list", address, None)
    jobs("status", address, job_id)
try:
    jobs("logs", address, "raysubmit_nosuchjob")
except InputError as error:
    printed.write(str(error))
print(json.dumps({"id": job_id, "status": str(client.get_job_status(job_id)),
                  "logs": client.get_job_logs(job_id), "printed": printed.getvalue()}))
"""


def test_search_submitted_to_a_two_node_cluster_runs_trials_on_both_nodes(
    ray_cluster: Cluster, postgres: Callable[[str], str], tmp_path: Path
) -> None:
    seen = ray_cluster.python(NODES, ray_cluster.gcs)
    assert seen["nodes"] == [HEAD_IP, WORKER_IP] and seen["multi"] is True
    assert "SQLite" in seen["refusal"]  # the launcher's default storage is refused here

    url = postgres("ftjob")
    space = space_file(tmp_path, url, n_trials=4, concurrent=2)
    job_studies = tmp_path / "job-studies"  # not the nodes' FTSEARCH_STUDIES: --studies-dir wins
    job = ray_cluster.python(SUBMIT_AND_WAIT, ray_cluster.dashboard, str(space), "onjob",
                             str(JOB_TIMEOUT_S), str(job_studies), timeout=JOB_TIMEOUT_S + 60)
    assert job["status"] == "SUCCEEDED", job["logs"]
    assert f"{job['id']}  SUCCEEDED" in job["printed"] and "onjob" in job["printed"]
    assert "jobs: raysubmit_nosuchjob: no such job on this cluster" in job["printed"]

    trials = study_trials(url, "onjob")
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    nodes = set()
    for trial in trials:
        assert Path(trial.user_attrs["trial_dir"]).is_relative_to(job_studies / "onjob")
        worker = json.loads((Path(trial.user_attrs["trial_dir"]) / "worker.json").read_text())
        assert trial.user_attrs["node_ip"] == worker["node_ip"]
        nodes.add(worker["node_ip"])
    # Two trials at a time, one CPU per node: they ran side by side, one on each node.
    assert nodes == {HEAD_IP, WORKER_IP}

    # A client without the token is told what to set.
    env = {**ray_cluster.env, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", "import sys; from search.cluster import jobs; "
                           "jobs('list', sys.argv[1], None)", ray_cluster.dashboard],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "requires a token: export RAY_AUTH_MODE=token" in done.stderr.splitlines()[-1]


def test_a_submission_is_checked_here_before_it_reaches_a_cluster(tmp_path: Path) -> None:
    # Nothing listens on port 1: each of these fails before asking the cluster anything.
    with pytest.raises(InputError, match="no such space file"):
        submit(str(tmp_path / "nope.yaml"), "http://127.0.0.1:1", None, [])
    with pytest.raises(InputError, match="needs a JOB_ID"):
        jobs("logs", "http://127.0.0.1:1", None)
    with pytest.raises(InputError, match="unknown action 'tail'"):
        jobs("tail", "http://127.0.0.1:1", "raysubmit_x")
    with pytest.raises(InputError, match="no Ray Jobs API answers at http://127.0.0.1:1"):
        jobs("list", "http://127.0.0.1:1", None)
    # The job runs in Ray's copy of the project: spaces in it are named relative to it.
    assert job_space_argument("lora.yaml") == "spaces/lora.yaml"
    assert job_space_argument(str(TINY_SPACE)) == "tests/data/spaces/tiny.yaml"
    outside = tmp_path / "my space.yaml"
    outside.write_text(TINY_SPACE.read_text())
    assert job_space_argument(str(outside)) == str(outside)
    assert entrypoint(str(outside), "s1", ["--trials", "8"]) == (
        f"python launcher.py --space '{outside}' --address auto --study s1 --trials 8")


def test_sqlite_is_refused_on_a_multi_node_cluster_only() -> None:
    with pytest.raises(InputError, match="SQLite, which loses updates on a shared filesystem"):
        check_cluster_storage("sqlite:////shared/studies/x/optuna.db", multi_node=True)
    check_cluster_storage("sqlite:////shared/studies/x/optuna.db", multi_node=False)
    for url in ("postgresql://u:secret@db/x", "mysql+pymysql://u@db/x", "journal:/shared/x.log"):
        check_cluster_storage(url, multi_node=True)


@dataclass
class Launcher:
    process: subprocess.Popen
    log: Path

    def finish(self, timeout: float) -> None:
        assert self.process.wait(timeout=timeout) == 0, self.log.read_text()


@pytest.fixture
def launchers(studies_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Launcher]]:
    """Starts `launcher.py` processes, each with a local Ray of its own; kills any still
    running at the end, with everything they started."""
    started: list[Launcher] = []
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["FTSEARCH_STUDIES"] = str(studies_dir)

    def start(space: Path, study: str, trials: int, *extra: str) -> Launcher:
        log = tmp_path / f"launcher{len(started)}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "launcher.py", "--space", str(space), "--study", study,
                 "--trials", str(trials), "--quiet", *extra],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        started.append(Launcher(process, log))
        return started[-1]

    try:
        yield start
    finally:
        for launcher in started:
            if launcher.process.poll() is None:
                os.killpg(launcher.process.pid, signal.SIGKILL)
                launcher.process.wait()


def test_two_launchers_share_one_postgresql_study(
    postgres: Callable[[str], str], launchers: Callable[..., Launcher], tmp_path: Path
) -> None:
    url = postgres("ftshared")
    space = space_file(tmp_path, url, n_trials=6, concurrent=1)
    # The study exists first: its baseline trial ran and its data are prepared.
    launchers(space, "shared", 1).finish(timeout=120)

    both = [launchers(space, "shared", 6, "--resume") for _ in range(2)]
    for launcher in both:
        launcher.finish(timeout=300)

    trials = study_trials(url, "shared")
    # Each launcher counts the study's trials, its own and the other's, before each new one:
    # the count is met, and passed by one at most when both ask at the same instant.
    assert 6 <= len(trials) <= 7
    assert [t.number for t in trials] == list(range(len(trials)))
    assert all(t.state.is_finished() and "fail_reason" not in t.user_attrs for t in trials)
    assert len({t.user_attrs["trial_dir"] for t in trials}) == len(trials)
    # Both launchers ran trials: each keeps Ray's state of its run under a name of its own.
    runs = list((Path(trials[0].user_attrs["trial_dir"]).parent.parent / "ray").iterdir())
    assert len(runs) == 3
