"""The objective's checks and shared work (tokenising), in a process of their own.

They import the objective's training libraries (torch, transformers, datasets: about 3 s and
250 MB). Run by the launcher itself, they would hold that memory through the whole search
(the trials run in Ray's workers, which import them anyway) and delay Ray's start by their
import time. In a child process they run while the launcher starts Ray, and end before the
first trial, with a short teardown. A process that already runs Ray has no start
to overlap: there they run in it.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

from objectives.base import DATA_REPORT, DataError
from search.errors import from_data
from search.space import SearchSpace, check_space
from search.storage import StudyPaths


def check_and_prepare(space: SearchSpace, folder: Path, prepared: Path) -> None:
    """``check_space``, then the objective's ``prepare`` into ``prepared``, and its data
    report (if any) into ``folder``, which is made after the checks. Raises InputError."""
    check_space(space)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        report = space.objective.prepare(space.defaults, prepared)
    except DataError as error:
        raise from_data(error, space.source) from None
    if report is not None:
        (folder / DATA_REPORT).write_text(json.dumps(report, indent=1, ensure_ascii=False),
                                          encoding="utf-8")


def _child(sender: Connection, space: SearchSpace, folder: Path, prepared: Path) -> None:
    try:
        check_and_prepare(space, folder, prepared)
    except KeyboardInterrupt:  # Ctrl-C reaches the launcher too, which says what to do
        return
    except Exception as error:  # noqa: BLE001 - sent to the launcher, which raises it
        try:
            sender.send(error)
        except Exception:  # noqa: BLE001 - an error that does not pickle: its message
            sender.send(RuntimeError(f"{type(error).__name__}: {error}"))
    else:
        sender.send(None)
    # The launcher waits for this process to end before the first trial. The garbage
    # collections of the interpreter's teardown, over the objects of torch and transformers,
    # take about 1 s on 2 cores: frozen, they are skipped, and it ends in 0.2 s.
    gc.freeze()


@contextmanager
def preparing(space: SearchSpace, paths: StudyPaths,
              apart: bool = True) -> Iterator[Callable[[], None]]:
    """Yields the function that runs ``check_and_prepare`` and raises what it raised; with
    ``apart``, a new process starts it at once and the function waits for it.

    ``apart=False`` is for a process that already runs Ray (a notebook, a benchmark, a test):
    there is no start to overlap, and a new process would only add its imports. If anything
    raises inside the block, the process is stopped and the folders that this made are
    removed, so bad input leaves no study behind.
    """
    made = None if paths.root.exists() else _first_missing(paths.root)
    try:
        if apart:
            with _apart(space, paths) as wait:
                yield wait
        else:
            yield lambda: check_and_prepare(space, paths.root, paths.prepared)
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


@contextmanager
def _apart(space: SearchSpace, paths: StudyPaths) -> Iterator[Callable[[], None]]:
    # "spawn": a fork of a process that runs Ray's threads may hang.
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, space, paths.root, paths.prepared),
                              name="ftsearch-prepare")
    process.start()
    sender.close()

    def wait() -> None:
        try:
            error = receiver.recv()
        except EOFError:
            process.join()
            raise RuntimeError("the process checking and preparing the data ended with exit "
                               f"code {process.exitcode}") from None
        process.join()
        if error is not None:
            raise error

    try:
        yield wait
    except BaseException:
        process.terminate()
        raise
    finally:
        receiver.close()
        process.join(timeout=10)


def _first_missing(folder: Path) -> Path:
    """The outermost of ``folder`` and its parents that does not exist."""
    while not folder.parent.exists():
        folder = folder.parent
    return folder
