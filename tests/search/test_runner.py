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


def test_a_local_node_runs_without_the_monitors_a_local_search_does_not_use() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    probe = json.loads(out.strip().splitlines()[-1])
    commands = probe["commands"]
    assert probe["answer"] == 42 and probe["ip"] == LOCAL_NODE_IP
    assert any("gcs_server" in c for c in commands) and any("raylet" in c for c in commands)
    # Neither the autoscaler's monitor nor the log monitor; the parameters are Ray's again.
    assert not any(part.endswith("monitor.py") for c in commands for part in c.split()), \
        commands
    assert probe["restored"]
