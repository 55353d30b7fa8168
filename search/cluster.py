"""A search on a Ray cluster: submitted as a Ray Job, with a study storage every node can share.

Ray does the scheduling: the job runs ``launcher.py --address auto`` on the head node, in a copy
of this project folder that Ray uploads (``runtime_env["working_dir"]``), and its trials spread
over the cluster's nodes. A cluster started with token authentication (the default of
``ray start --head`` once a token exists) answers only clients that send the token: export
``RAY_AUTH_MODE=token`` and the token, as ``RAY_AUTH_TOKEN=...`` or in ``~/.ray/auth_token``
(or a file named by ``RAY_AUTH_TOKEN_PATH``); ``ray get-auth-token`` prints it on the head.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from search.errors import InputError
from search.storage import JOURNAL_PREFIX, mask

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

PROJECT = Path(__file__).resolve().parent.parent
# What the job does not need: results, the local virtualenv (the cluster has its own), history
# and caches. Ray caps an upload at 500 MiB; the rest of the project is well under 1 MiB.
UPLOAD_EXCLUDES = [
    "studies/", ".venv/", ".git/", "__pycache__/", "*.pyc", ".pytest_cache/", ".ruff_cache/",
    "*.egg-info/", ".ci-cache/", "build/",
]
JOB_ACTIONS = ("list", "status", "logs", "stop")
API_ADDRESS_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
AGENT_WAIT_S = 60  # how long a submission waits for a head that is still starting
AUTH_HINT = ("export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<token> (`ray get-auth-token` "
             "on the head prints it)")


def job_space_argument(space: str) -> str:
    """The space as the job names it: a path inside the project becomes relative, since the job
    runs in Ray's copy of the project; any other path is kept absolute and must be readable at
    that path on the head node (a shared filesystem)."""
    from search.space import resolve_space_path

    path = resolve_space_path(space).resolve()
    return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else str(path)


def entrypoint(space_argument: str, study: str | None, extra_args: list[str]) -> str:
    """The shell command the job runs on the head node."""
    command = ["python", "launcher.py", "--space", space_argument, "--address", "auto"]
    if study:
        command += ["--study", study]
    return shlex.join([*command, *extra_args])


@contextmanager
def job_client(address: str | None) -> Iterator[JobSubmissionClient]:
    """Ray's JobSubmissionClient for a Jobs API address (http://HEAD:8265), with a missing or
    wrong token turned into a one-line error saying what to set.

    Without an address, Ray's RAY_API_SERVER_ADDRESS or RAY_ADDRESS names the cluster. Ray
    lets those variables override an address it is given; here the given address wins.
    """
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    named = [os.environ[name] for name in API_ADDRESS_VARS if name in os.environ]
    where = address or (named[0] if named else "this machine")
    hidden = {name: os.environ.pop(name) for name in API_ADDRESS_VARS
              if address and name in os.environ}
    try:
        try:
            client = JobSubmissionClient(address)
        except ConnectionError:
            raise InputError("--address", "", f"no Ray Jobs API answers at {where}; give the "
                             "head's dashboard address, http://HEAD:8265") from None
        finally:
            os.environ.update(hidden)
        yield client
    except AuthenticationError as error:
        refused = "failed" in str(error).split(":", 1)[0]
        problem = "refused the token" if refused else "requires a token"
        raise InputError("--address", "", f"the Ray cluster at {where} {problem}: "
                         f"{AUTH_HINT}") from None


def submit(space: str, address: str | None, study: str | None, extra_args: list[str],
           studies_dir: str | None = None) -> str:
    """Submit a search as a Ray Job; returns its submission id.

    The space is checked here first, so bad input fails now rather than in the job's log.
    ``studies_dir`` (a path on the cluster) becomes the job's FTSEARCH_STUDIES.
    """
    from search.space import load_space

    loaded = load_space(space)
    space_argument = job_space_argument(space)
    # Ray logs each ignore file it reads and warns about folders it now skips by default.
    logging.getLogger("ray._private.runtime_env").setLevel(logging.ERROR)
    deadline = time.monotonic() + AGENT_WAIT_S
    with job_client(address) as client:
        while True:
            try:
                return client.submit_job(
                    entrypoint=entrypoint(space_argument, study, extra_args),
                    runtime_env={"working_dir": str(PROJECT), "excludes": UPLOAD_EXCLUDES,
                                 **({"env_vars": {"FTSEARCH_STUDIES": studies_dir}}
                                    if studies_dir else {})},
                    metadata={"study": study or loaded.study_name, "space": space_argument},
                )
            except RuntimeError as error:
                # A head that has just started may not have its job agent yet; Ray answers
                # "No available agent ..., please try again later" and submits nothing.
                if "No available agent" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(2)


def jobs(action: str, address: str | None, job_id: str | None) -> None:
    """Print the cluster's jobs (list), or one job's status, logs, or stop it."""
    if action not in JOB_ACTIONS:
        raise InputError("jobs", "", f"unknown action {action!r}; use one of "
                         f"{', '.join(JOB_ACTIONS)}")
    if action != "list" and not job_id:
        raise InputError("jobs", action, "needs a JOB_ID (`jobs list` shows them)")
    with job_client(address) as client:
        if action == "list":
            for line in job_lines(client.list_jobs()):
                print(line)
            return
        try:
            info = client.get_job_info(job_id)
        except RuntimeError as error:
            if "404" not in str(error) and "does not exist" not in str(error):
                raise
            raise InputError("jobs", job_id, "no such job on this cluster") from None
        if action == "status":
            print(f"{job_id}: {info.status}" + (f" ({info.message})" if info.message else ""))
        elif action == "logs":
            print(client.get_job_logs(job_id), end="")
        elif client.stop_job(job_id):
            print(f"{job_id}: stopping; submit it again with --resume to continue the study")
        else:
            print(f"{job_id}: not running ({info.status})")


def job_lines(details: list[JobDetails]) -> list[str]:
    """One line per submitted job, oldest first: id, status, start time, study, command.
    Drivers that joined the cluster on their own are left out: they have no id to act on."""
    lines = []
    submitted = [job for job in details if job.submission_id]
    for job in sorted(submitted, key=lambda job: job.start_time or 0):
        started = (datetime.fromtimestamp(job.start_time / 1000).strftime("%Y-%m-%d %H:%M")
                   if job.start_time else "-")
        study = (job.metadata or {}).get("study", "-")
        lines.append(f"{job.submission_id}  {job.status:<9}  {started}  "
                     f"{study}  {job.entrypoint}")
    return lines or ["no jobs"]


def is_multi_node() -> bool:
    """Whether the Ray cluster this process is connected to has more than one alive node."""
    import ray

    return sum(1 for node in ray.nodes() if node["Alive"]) > 1


def check_cluster_storage(storage_url: str, multi_node: bool) -> None:
    """Refuse SQLite for a study on a multi-node cluster: there its file sits on a network
    filesystem, whose locks SQLite cannot rely on (updates get lost or the file corrupt).
    A database server is safe, and so is a journal file: its lock is a symlink, atomic on NFS."""
    if not multi_node or storage_url.startswith(JOURNAL_PREFIX):
        return
    from sqlalchemy.engine import make_url

    if make_url(storage_url).get_backend_name() == "sqlite":
        raise InputError("study.storage", "", f"{mask(storage_url)} is SQLite, which loses "
                         "updates on a shared filesystem; on a Ray cluster of several nodes use "
                         "postgresql://..., mysql://... or journal:PATH on a shared filesystem")
