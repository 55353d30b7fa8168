"""Starting the local Ray node a search runs on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from search.runner import LOCAL_NODE_IP

pytestmark = pytest.mark.slow  # starts a real Ray node

PROBE = """
import json, psutil, ray
from ray._private.parameter import RayParams
from search.runner import SearchRequest, start_ray
before = RayParams.__init__
start_ray(SearchRequest(space=None, study_name="", n_trials=0))
answer = ray.get(ray.remote(lambda: 6 * 7).remote())
commands = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
print(json.dumps({"answer": answer, "commands": commands, "restored": RayParams.__init__ is before,
                  "ip": ray.util.get_node_ip_address()}))
"""


def run_probe(script: str, *args: str, timeout: int = 120) -> dict:
    """What ``script``, run in a fresh process, printed last as JSON."""
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         check=True, timeout=timeout).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_a_local_node_runs_without_the_monitors_a_local_search_does_not_use() -> None:
    probe = run_probe(PROBE)
    commands = probe["commands"]
    assert probe["answer"] == 42 and probe["ip"] == LOCAL_NODE_IP
    assert any("gcs_server" in c for c in commands) and any("raylet" in c for c in commands)
    # Neither the autoscaler's monitor nor the log monitor; the parameters are Ray's again.
    assert not any(part.endswith("monitor.py") for c in commands for part in c.split()), \
        commands
    assert probe["restored"]


TRIALS_IN_WORKERS = """
import json, os, sys, tempfile, time, psutil, ray
from ray import tune
from search.runner import SearchRequest, _in_node_workers, start_ray
local = start_ray(SearchRequest(space=None, study_name="", n_trials=0))
def workers():
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.cmdline()[:1] == ["ray::IDLE"]}
deadline = time.time() + 60
while len(workers()) < 2 and time.time() < deadline:  # Ray starts them beside the node
    time.sleep(0.2)
started = workers()
def trial(config):
    tune.report({"pid": os.getpid()})
with _in_node_workers(local and sys.argv[1] == "on"):
    results = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1}),
        tune_config=tune.TuneConfig(num_samples=2, max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0),
    ).fit()
print(json.dumps({"local": local, "started": sorted(started),
                  "trials": sorted(r.metrics["pid"] for r in results)}))
"""


@pytest.mark.parametrize("inside", [True, False])
def test_the_trials_of_a_local_node_run_in_the_workers_it_started_with(inside: bool) -> None:
    # Tune's own runtime environment would have Ray start a worker for each trial instead.
    probe = run_probe(TRIALS_IN_WORKERS, "on" if inside else "off", timeout=180)
    assert probe["local"] and len(probe["started"]) >= 2 and len(probe["trials"]) == 2
    assert set(probe["trials"]) <= set(probe["started"]) if inside else \
        not set(probe["trials"]) & set(probe["started"])
