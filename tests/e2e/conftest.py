"""What the end-to-end tests share: a PostgreSQL server of their own on 127.0.0.1."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Debian installs each major version under /usr/lib/postgresql/<version>/bin; the newest wins.
PG_INITDB = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda path: float(path.parent.parent.name))
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Callable[[str], str]]:
    """A PostgreSQL server of this module's own on 127.0.0.1; yields a function that creates a
    database and returns its URL."""
    if not PG_INITDB:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                    "apt-get install postgresql")
    bin_dir = PG_INITDB[-1].parent
    # Short and outside pytest's folders: the server's socket path has a 107-byte limit, and
    # a root-run test hands the folder to the postgres user (initdb refuses to run as root).
    root = Path(tempfile.mkdtemp(prefix="ftpg", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        os.chown(root, pwd.getpwnam("postgres").pw_uid, -1)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def pg(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *command], capture_output=True, text=True)

    def pg_ok(*command: str) -> None:
        done = pg(*command)
        assert done.returncode == 0, f"{command[0]}: {done.stdout}{done.stderr}"

    try:
        pg_ok(str(bin_dir / "initdb"), "-D", str(data), "-U", "ftsearch", "--auth=trust",
           "--no-sync", "-E", "UTF8")
        pg_ok(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
           "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off", "start")

        def database(name: str) -> str:
            pg_ok(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "ftsearch",
               name)
            return f"postgresql+psycopg2://ftsearch@127.0.0.1:{port}/{name}"

        yield database
    finally:
        if (data / "postmaster.pid").exists():
            pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


