"""optuna-dashboard over a study's storage, served on this machine only unless asked otherwise.

The dashboard has no login and can change the study (notes, trial states), so it listens on
127.0.0.1 by default; reach it from elsewhere through an SSH tunnel.

    python -m search.dashboard STUDY_OR_STORAGE_URL [--host H] [--port N]
"""

from __future__ import annotations

import ipaddress
import signal
import sys
from socketserver import ThreadingMixIn
from types import FrameType
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna_dashboard

from search.errors import InputError
from search.storage import mask, open_existing


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # an open browser tab must not keep the process alive


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        """The page polls every few seconds; a line per request would bury the terminal."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume it can be reached from elsewhere
        return False


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_dashboard(storage_url: str, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard for ``storage_url`` on host:port until Ctrl-C or SIGTERM.

    Port 0 takes a free port; the URL printed first says which.
    """
    app = optuna_dashboard.wsgi(open_existing(storage_url))
    try:
        server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as error:
        raise InputError(f"{host}:{port}", "", f"cannot listen there: "
                         f"{error.strerror or error}") from None
    print(f"optuna-dashboard for {mask(storage_url)}: http://{host}:{server.server_port}/ "
          "(Ctrl-C to stop)", flush=True)
    if not is_loopback(host):
        print(f"warning: listening on {host}, not loopback: anyone who can reach it can read and "
              "change the study; prefer 127.0.0.1 and an SSH tunnel", file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGTERM, _stop)  # a service manager's stop ends it cleanly
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
