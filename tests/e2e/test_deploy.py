"""The deployment files parse, and every launcher.py command they and the README show exists."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import yaml

import launcher
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
SCRIPTS = sorted([*DEPLOY.rglob("*.sh"), *DEPLOY.rglob("*.sbatch")])
MANIFESTS = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
# A launcher call up to the end of its line (continuation lines joined) or a shell separator.
CALL = re.compile(r"python3? launcher\.py((?:\\\n|[^\n`|;&)])*)")


def test_scripts_are_valid_bash() -> None:
    assert SCRIPTS, "no script under deploy/"
    for script in SCRIPTS:
        checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, f"{script}: {checked.stderr}"


def test_raycluster_manifest_has_a_head_and_a_gpu_worker_group_with_one_token() -> None:
    assert MANIFESTS, "no manifest under deploy/"
    documents = [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text())]
    assert all(isinstance(doc, dict) and {"apiVersion", "kind"} <= doc.keys()
               for doc in documents)
    cluster = next(doc["spec"] for doc in documents if doc["kind"] == "RayCluster")
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        # KubeRay passes these to `ray start` as strings; a bare number is rejected.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        for container in group["template"]["spec"]["containers"]:
            env = {item["name"]: item for item in container["env"]}
            # Ray needs the same auth mode on every node, with the token from one Secret.
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == \
                "ftsearch-ray-token"
    gpus = [container["resources"]["limits"].get("nvidia.com/gpu")
            for group in cluster["workerGroupSpecs"]
            for container in group["template"]["spec"]["containers"]]
    assert any(gpus), "no worker group asks for a GPU"


def launcher_calls() -> list[tuple[Path, list[str]]]:
    calls = []
    for path in [*sorted(p for p in DEPLOY.rglob("*") if p.is_file()), REPO / "README.md"]:
        for match in CALL.finditer(path.read_text()):
            # Words, not shell parsing: a call may sit inside an echoed string.
            text = match.group(1).replace("\\\n", " ").split(" #", 1)[0]
            calls.append((path, [word.strip("[]\"'") for word in text.split()]))
    return calls


def parser_command(name: str) -> tuple[set[str], set[str]]:
    """The flags and the choices of the first positional of a launcher command."""
    commands = next(action for action in launcher.build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    parser = commands.choices[name]
    positionals = [a for a in parser._actions if not a.option_strings]
    return (set(parser._option_string_actions),
            set(positionals[0].choices or ()) if positionals else set())


def test_every_launcher_flag_used_in_deploy_exists() -> None:
    calls = launcher_calls()
    used = {path.parent.name for path, _ in calls}
    assert {"slurm", "kuberay"} <= used, f"launcher calls found only in {used}"
    own = set(launcher.build_parser()._option_string_actions) - {"-h", "--help"}
    for path, words in calls:
        if words and words[0] in own:  # a flag of launcher.py itself: --version
            continue
        command = "run" if not words or words[0].startswith("-") else words[0]
        assert command in launcher.COMMANDS, f"{path}: no launcher command {command!r}"
        flags, actions = parser_command(command)
        for word in words:
            flag = word.split("=", 1)[0]
            if flag.startswith("--"):
                assert flag in flags, f"{path}: launcher.py {command} has no {flag}"
        if actions and command != "run" and len(words) > 1:
            assert words[1] in actions, f"{path}: launcher.py {command} {words[1]}?"
