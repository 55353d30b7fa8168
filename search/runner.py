"""A search from start to end: study, data, Ray, Tuner, and what the user reads at the end."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import optuna
import ray
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from ray import tune
from ray._private.parameter import RayParams
from ray.air._internal import usage as air_usage
from ray.tune.execution import class_cache
from ray.tune.logger import LoggerCallback

from search.cluster import check_cluster_storage, is_multi_node
from search.errors import InputError
from search.heartbeat import (
    STALE_AFTER_S,
    BeatOnEachStep,
    Heartbeat,
    fail_interrupted,
    finished_count,
)
from search.preparation import preparing
from search.progress import Progress
from search.recommended import queue_recommended
from search.samplers import build_sampler
from search.schedulers import BASELINE, build_scheduler
from search.searcher import StudySearcher
from search.space import SearchSpace
from search.storage import (
    StudyPaths,
    default_url,
    mask,
    note_storage,
    open_existing,
    open_storage,
)
from search.tracking import Mirror, SyncOnTrialEnd, trackers
from search.trainable import run_trial
from search.warm_start import earlier_studies, seed_study

# Ray's automatic CSV/JSON/TensorBoard loggers cost time on every result; the study keeps all.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# A failing trial's reason is in the study and in the progress line; no traceback flood.
os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
# Ray turns 127.0.0.1 into the machine's outward address; another loopback address keeps a
# local search's traffic on this machine (Linux routes all of 127.0.0.0/8 to loopback).
LOCAL_NODE_IP = "127.0.0.2" if platform.system() == "Linux" else "127.0.0.1"


MAX_WORKER_RESTARTS = 2
# Ray starts a worker per CPU with the node and stops workers that stay idle longer than this
# (1 s by default) when it holds more than it needs. In 2 of 6 runs of a 2-trial search it
# stopped the node's first workers just before the first trials were placed, which then
# waited for new ones; with a minute, which covers the data preparation the first trials
# wait for, in none of 6.
IDLE_WORKERS_KEPT_MS = 60_000


@dataclass
class SearchRequest:
    space: SearchSpace
    study_name: str
    n_trials: int
    resume: bool = False
    address: str | None = None
    quiet: bool = False
    mlflow: str | None = None  # --mlflow URI: send the trials to this MLflow server too


@dataclass
class SearchResult:
    study: optuna.Study
    storage_url: str
    paths: StudyPaths
    mirror: Mirror  # the experiment trackers, told of the winner once the launcher has it


def open_study(request: SearchRequest, url: str) -> tuple[optuna.Study, BaseStorage, bool]:
    """The study at ``url``, its storage, and whether it is new.

    An existing study is only continued with --resume, and only by the space that made it:
    trials of another space would mislead the sampler and the report.
    """
    space = request.space
    storage = open_storage(url)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    exists = request.study_name in names
    if exists:
        old = optuna.load_study(study_name=request.study_name, storage=storage)
        made_by = old.user_attrs
        changed = made_by.get("space_fingerprint") not in (None, space.fingerprint())
        if changed and not any(t.state.is_finished() for t in old.get_trials(deepcopy=False)):
            # Its launcher died before any trial ended: nothing of it is worth keeping.
            print(f"replacing study '{request.study_name}': made by another space, and no "
                  "trial of it finished")
            optuna.delete_study(study_name=request.study_name, storage=storage)
            exists = False
        elif changed:
            raise InputError(space.source, "study.name", f"study '{request.study_name}' in "
                             f"{mask(url)} was made by another space "
                             f"({made_by.get('space_file')}); choose another name with --study")
        elif not request.resume:
            raise InputError(space.source, "study.name", f"study '{request.study_name}' already "
                             f"exists in {mask(url)}; add --resume to continue it, or choose "
                             "another name with --study")
    study = optuna.create_study(
        storage=storage, study_name=request.study_name, load_if_exists=True,
        directions=space.head.study.directions,
    )
    return study, storage, not exists


def start_ray(request: SearchRequest) -> bool:
    """Join the cluster at ``request.address``, or start a local node; nothing where Ray
    already runs. True when it started a local node."""
    if ray.is_initialized():
        return False
    if request.address:
        ray.init(address=request.address, log_to_driver=False)
        return False
    # Ray says whether this private, loopback-only instance uses token authentication;
    # nothing else can reach it, so the notice would only puzzle the user.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    # The node's workers inherit this process's environment: with Ray Tune's own variables
    # for trials in it, the trials need no runtime environment of their own (_in_node_workers).
    for name, value in class_cache.DEFAULT_ENV_VARS.items():
        os.environ.setdefault(name, value)
    with _without_monitors():
        ray.init(_node_ip_address=LOCAL_NODE_IP, include_dashboard=False,
                 log_to_driver=False, configure_logging=False,
                 _system_config={"idle_worker_killing_time_threshold_ms": IDLE_WORKERS_KEPT_MS})
    return True


@contextmanager
def _replaced(owner: Any, **values: Any) -> Iterator[None]:
    """While it is open, ``owner``'s attributes named in ``values`` hold those values; then
    their own again, however the block ends: the search changes what Ray offers no switch
    for this way, and only for as long as it needs to."""
    originals = {name: getattr(owner, name) for name in values}
    for name, value in values.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in originals.items():
            setattr(owner, name, value)


def _in_node_workers(local: bool) -> AbstractContextManager[None]:
    """While it is open, Ray Tune gives the trials of a node started here no runtime
    environment of their own, so they run in the workers Ray started with the node.

    Tune sets each trial's environment variables (its defaults, and those it passes on from
    this process) as a runtime environment, and Ray runs a task with a runtime environment
    only in a worker started for it: about 0.6 s more before each of the first trials, and
    two more worker processes. A local node's workers inherit this process's environment
    (start_ray adds Tune's defaults to it), which holds those variables already. A cluster's
    workers do not: there, Tune's environment stays.
    """
    if not local:
        return nullcontext()
    return _replaced(class_cache, DEFAULT_ENV_VARS={}, ENV_VARS_TO_PROPAGATE=set())


def _without_monitors() -> AbstractContextManager[None]:
    """While it is open, a Ray node started here runs neither the autoscaler's monitor nor the
    log monitor (about 100 MB together): a local search has no autoscaler, and its driver takes
    no worker logs (``log_to_driver=False``). ``ray start`` has switches for both
    (``--no-monitor``, ``--include-log-monitor``); ``ray.init`` has none, so the fields they
    set are set on the node's parameters here (tests/search/test_runner.py pins them)."""
    original = RayParams.__init__

    def lean(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.no_monitor, self.include_log_monitor = True, False

    return _replaced(RayParams, __init__=lean)


def check_resources(space: SearchSpace) -> None:
    """A trial that asks for more than the whole cluster has would wait forever: refuse it."""
    have = ray.cluster_resources()
    want = space.head.resources
    for key, asked in (("CPU", want.cpu), ("GPU", want.gpu)):
        if asked > have.get(key, 0):
            raise InputError(space.source, f"resources.{key.lower()}", f"each trial asks for "
                             f"{asked:g} {key}s but the cluster has {have.get(key, 0):g}")


def study_exists(url: str, name: str) -> bool:
    """Whether the storage at ``url`` holds the study; creates nothing."""
    try:
        storage = open_existing(url)
    except InputError:
        return False
    return name in {s.study_name for s in storage.get_all_studies()}


def _callbacks_counted_without_imports() -> AbstractContextManager[None]:
    """While it is open, Ray Tune records which kinds of callbacks a search uses (its usage
    telemetry) without importing its tracking integrations to tell them apart.

    Tune imports them (mlflow and wandb among them: about 0.9 s of CPU and 50 MB in this
    process) only to count its own callbacks by name; a search's callbacks are all ftsearch's,
    which Tune counts as custom ones. The record stays the same.
    """
    def count(callbacks: list[tune.Callback] | None) -> bool:
        if not callbacks:
            return False
        kinds = Counter("CustomLoggerCallback" if isinstance(c, LoggerCallback)
                        else "CustomCallback" for c in callbacks)
        air_usage.record_extra_usage_tag(air_usage.TagKey.AIR_CALLBACKS, json.dumps(kinds))
        return True

    return _replaced(air_usage, tag_callbacks=count)


def run_search(request: SearchRequest, paths: StudyPaths) -> SearchResult:
    space = request.space
    # The objective's checks and data preparation run while Ray starts (in a process of their
    # own); then everything else that can reject the input, before the study is touched.
    with preparing(space, paths, apart=not ray.is_initialized()) as prepared:
        local = start_ray(request)
        prepared()
        build_sampler(space)
        scheduler = build_scheduler(space)
        check_resources(space)
        url = space.head.study.storage or default_url(paths)
        check_cluster_storage(url, is_multi_node())
        if request.resume and not study_exists(url, request.study_name):
            raise InputError(space.source, "study.name", f"no study '{request.study_name}' to "
                             f"resume in {mask(url)}; drop --resume to start it")
        earlier = earlier_studies(space)
    study, storage, new = open_study(request, url)
    note_storage(paths, url)
    sampler = build_sampler(space, history=len(study.get_trials(deepcopy=False)))
    if new:
        study.set_user_attr("space_file", str(space.source))
        study.set_user_attr("space_fingerprint", space.fingerprint())
        study.set_user_attr("objective", space.head.objective)
        study.set_user_attr("metric", space.head.study.metric)
        with warnings.catch_warnings():  # experimental in Optuna, and what its tools read
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names(space.head.study.metrics)
        # The untuned configuration runs first, so the search has something to beat; then
        # the best of the earlier studies it starts from, and the objective's recommended
        # setting.
        study.enqueue_trial(space.baseline_params(), user_attrs={BASELINE: True})
        for line in seed_study(study, space, earlier):
            print(line)
        for line in queue_recommended(study, space):
            print(line)
    else:
        interrupted = fail_interrupted(storage, request.study_name)
        if interrupted:
            print(f"marked interrupted trials as failed: {interrupted}")
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        elsewhere = [t.number for t in running]
        if elsewhere:
            print(f"trials {elsewhere} are running in another launcher (or in one that stopped "
                  f"less than {STALE_AFTER_S} s ago); they count toward the total")
    mirror = Mirror(trackers(space.head.tracking, request.mlflow, paths), paths)
    mirror.start(study)
    remaining = request.n_trials - finished_count(study)
    if remaining <= 0:
        print(f"study '{request.study_name}' already has {request.n_trials} finished trials")
        return SearchResult(study, url, paths, mirror)

    resources = space.head.resources
    searcher = StudySearcher(space, request.study_name, storage, paths, sampler,
                             request.n_trials, Heartbeat(), space.head.study.time_budget_s)
    progress = Progress(
        total=request.n_trials, metric=space.head.study.metric,
        minimize=space.head.study.direction == "minimize",
        already=finished_count(study), quiet=request.quiet,
        others=space.head.study.metrics[1:],
    )
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(run_trial, space=space, paths=paths),
            {"cpu": resources.cpu, "gpu": resources.gpu},
        ),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=remaining,
            max_concurrent_trials=space.head.study.max_concurrent_trials,
            # No time_budget_s: Ray's kills running trials; the searcher stops starting them.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            # Launchers sharing a study each keep Ray's state of their own run.
            name=f"{request.study_name}_{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}",
            storage_path=str(paths.ray),
            verbose=0,
            callbacks=[progress, BeatOnEachStep(searcher), SyncOnTrialEnd(mirror, study)],
            # A worker that dies (killed, node lost) is restarted and its trial resumes from
            # its last checkpoint; errors in the trial's code are not retried (see trainable).
            failure_config=tune.FailureConfig(max_failures=MAX_WORKER_RESTARTS),
        ),
    )
    # The study holds every result; Ray's own result files are off, so its analysis would
    # only warn that it cannot find them.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    try:
        with _in_node_workers(local), _callbacks_counted_without_imports():
            tuner.fit()
    finally:
        # Whatever stopped the search, no trial of this launcher stays RUNNING: one that did
        # not end is interrupted, and a later --resume runs it again.
        interrupted = searcher.interrupt_running()
        if interrupted:
            print(f"marked interrupted trials as failed: {interrupted}")
        mirror.sync(study)
    return SearchResult(optuna.load_study(study_name=request.study_name, storage=storage),
                        url, paths, mirror)
