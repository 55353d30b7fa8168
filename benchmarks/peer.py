"""ftsearch against the search a user would write with Hugging Face alone.

    python benchmarks/peer.py [--quick] [--reps 3] [--space lora.yaml] [--trials N]

Three ways to run the same search (the space's model, data split, tokenisation, training
arguments, search ranges, trial budget and TPE seed, the untuned default as the first trial),
each in a process of its own, one after another, in alternating order:

- ``ftsearch``: ``python launcher.py --space SPACE``, the whole command (search, final test
  split, significance test, report). As shipped, its second trial is the objective's
  recommended setting (``study.recommended``: LoRA rank 16, alpha 32, the learning rate in the
  middle of its range), which a search written with the Trainer alone does not have: its
  second trial is TPE's first. ``--variant ftsearch-no-recommended`` prices that.
- ``hf-optuna``: ``Trainer.hyperparameter_search(backend="optuna")`` with Optuna's median pruner
  (warm-up: the space's grace period), one trial at a time, as the Trainer runs it.
- ``hf-ray``: ``Trainer.hyperparameter_search(backend="ray")`` with Ray's ``OptunaSearch`` and
  ASHA (the space's grace period and reduction factor, in evaluations), trials at the space's
  concurrency, one CPU each.

The peers use the Trainer subclass ftsearch's causal-LM objective trains with (its evaluations
answer the validation prompts and score them, which plain ``Trainer`` cannot) on the data the
objective prepared, so every difference lies in how the search is run. Transformers calls
``model_init(trial)`` before ``hp_space(trial)``: the LoRA and architecture parameters are
suggested in ``model_init``, the training arguments by ``hp_space``.

Per run: wall time of the process, time to target (from the process's start to the end of the
first trial whose recorded value reaches the target; targets are the best value any run of
this benchmark reached, divided by 1.2, 1.1 and 1.05 for a metric to maximise, multiplied for
one to minimise), the best recorded value (what each tool hands over: ftsearch the best
checkpoint's, the Trainer the last evaluation's), and the peak memory of the whole process
tree (the sum of proportional set sizes, sampled every 2 s; see _common.TreeMemory).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

TOOLS = ["ftsearch", "hf-optuna", "hf-ray"]
# ftsearch with the space's study section changed, to price a setting (--variant).
VARIANTS = {"ftsearch-reproducible": {"reproducible": True},
            "ftsearch-async": {"reproducible": False},
            "ftsearch-no-recommended": {"recommended": False}}
FACTORS = (1.2, 1.1, 1.05)
GOAL_SPEEDUP = 2.0


# --- the peers, as a user would write them (run in a process of their own: --peer NAME) ---

def peer(name: str, space_path: str, trials: int, folder: Path, out: Path) -> None:
    """One peer search; writes each trial's end time, state and recorded value to ``out``."""
    import optuna
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

    from objectives.base import TrialContext
    from objectives.causal_lm_lora import data
    from objectives.causal_lm_lora.config import model_config, model_path
    from objectives.causal_lm_lora.recipe import GenerativeTrainer
    from objectives.data.files import load_split
    from objectives.sections import module_names
    from objectives.trainer import quiet_transformers, training_arguments
    from search.distributions import DefineByRun
    from search.space import load_space

    quiet_transformers()
    space = load_space(space_path)
    head, config = space.head, space.defaults
    prepared, _ = space.objective.prepared(config, folder / "prepared")  # the tokenised splits
    tokenizer = AutoTokenizer.from_pretrained(model_path(config))
    train, _ = data.training_set(prepared, config.data, tokenizer, config.data.seed)
    maximize = head.study.direction == "maximize"
    is_argument = lambda key: key.startswith("training.")  # noqa: E731
    plain = lambda key: key.removeprefix("training.")  # noqa: E731

    def model_init(trial: Any) -> Any:
        if trial is None:  # the Trainer's own first model, before any trial
            params: dict[str, Any] = {}
        elif isinstance(trial, dict):  # Ray: the trial's config, by plain names
            params = {key: trial[plain(key)] for key in head.search}
        else:  # Optuna: suggested here, as hp_space runs after model_init
            DefineByRun(head.search)(trial)
            params = trial.params
        trial_config = space.trial_config(params)
        path = model_path(trial_config)
        base = AutoModelForCausalLM.from_pretrained(path, config=model_config(trial_config, path))
        lora = trial_config.lora
        return get_peft_model(base, LoraConfig(
            task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.lora_alpha,
            lora_dropout=lora.lora_dropout, target_modules=module_names(lora), bias=lora.bias))

    context = TrialContext(number=0, trial_dir=folder / name, prepared_dir=prepared,
                           reporter=None, metric=head.study.metric,
                           direction=head.study.direction)
    trainer = GenerativeTrainer(
        model_init=model_init,
        args=training_arguments(config.training, context),
        train_dataset=train, eval_dataset=load_split(prepared, "validation"),
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True,
                                             label_pad_token_id=data.IGNORE_INDEX),
        prepared=prepared, evaluation=config.evaluation, metrics=head.study.metrics,
        tokenizer=tokenizer)
    objective = lambda metrics: metrics[head.study.metric]  # noqa: E731
    sampler = optuna.samplers.TPESampler(seed=head.study.seed, **head.sampler.options)
    direction = head.study.direction
    ends: list[dict[str, Any]] = []
    if name == "hf-optuna":
        storage = f"sqlite:///{folder / 'optuna.db'}"
        study = optuna.create_study(study_name="peer", storage=storage, direction=direction)
        study.enqueue_trial(space.baseline_params())  # the untuned default first
        trainer.hyperparameter_search(
            backend="optuna", n_trials=trials, direction=direction, compute_objective=objective,
            hp_space=lambda trial: {plain(key): value for key, value in trial.params.items()
                                    if is_argument(key)},
            study_name="peer", storage=storage, load_if_exists=True, sampler=sampler,
            pruner=optuna.pruners.MedianPruner(n_warmup_steps=head.scheduler.grace_period))
        for trial in optuna.load_study(study_name="peer", storage=storage).trials:
            ends.append({"end": trial.datetime_complete.timestamp(), "state": trial.state.name,
                         "value": trial.value, "params": trial.params})
    else:
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch

        # On loopback, as ftsearch runs (a user's script would call ray.init() alone).
        ray.init(_node_ip_address="127.0.0.2", include_dashboard=False, log_to_driver=False)
        evaluations = config.training.max_steps // config.training.eval_steps
        grace = max(1, head.scheduler.grace_period // config.training.eval_steps)

        class TrialEnds(tune.Callback):
            def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
                ends.append({"end": time.time(), "state": "COMPLETE",
                             "value": trial.last_result.get("objective"),
                             "iterations": trial.last_result.get("training_iteration"),
                             "params": trial.config})

        trainer.hyperparameter_search(
            backend="ray", n_trials=trials, direction=direction, compute_objective=objective,
            hp_space=lambda trial: {plain(key): ray_distribution(param)
                                    for key, param in head.search.items()},
            search_alg=OptunaSearch(
                metric="objective", mode="max" if maximize else "min", sampler=sampler,
                points_to_evaluate=[{plain(k): v for k, v in space.baseline_params().items()}]),
            scheduler=ASHAScheduler(metric="objective", mode="max" if maximize else "min",
                                    max_t=evaluations, grace_period=grace,
                                    reduction_factor=head.scheduler.reduction_factor),
            max_concurrent_trials=head.study.max_concurrent_trials,
            resources_per_trial={"cpu": 1, "gpu": 0}, callbacks=[TrialEnds()],
            storage_path=str(folder / "ray"), verbose=0)
    out.write_text(json.dumps(ends, default=str), encoding="utf-8")


def ray_distribution(param: Any) -> Any:
    """A search section's parameter as Ray Tune's search space writes it."""
    from ray import tune

    from search.space import CategoricalParam, FloatParam

    if isinstance(param, CategoricalParam):
        return tune.choice(param.choices)
    if isinstance(param, FloatParam):
        return (tune.loguniform if param.log else tune.uniform)(param.low, param.high)
    return (tune.lograndint if param.log else tune.randint)(param.low, param.high + 1)


# --- the benchmark ---

def run(tool: str, space: Path, trials: int, folder: Path) -> dict[str, Any]:
    """One run in its own process: its wall time, peak memory and its trials' ends."""
    folder.mkdir(parents=True)
    ends = folder / "ends.json"
    if tool.startswith("ftsearch"):
        if tool in VARIANTS:
            space = variant_space(space, VARIANTS[tool], folder)
        command = [sys.executable, str(_common.REPO / "launcher.py"), "--space", str(space),
                   "--study", "peer", "--trials", str(trials), "--quiet"]
    else:
        command = [sys.executable, __file__, "--peer", tool, "--space", str(space),
                   "--trials", str(trials), "--folder", str(folder), "--out", str(ends)]
    env = {**os.environ, "FTSEARCH_STUDIES": str(folder / "studies")}
    start = time.time()
    log = folder / "output.txt"
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=_common.REPO, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
        with _common.TreeMemory(process.pid, driver="search process") as memory:
            code = process.wait()
    wall = time.time() - start
    if code != 0:
        raise SystemExit(f"{tool} exited with {code}:\n{log.read_text()[-3000:]}")
    if tool.startswith("ftsearch"):
        trial_ends = ftsearch_ends(folder / "studies")
    else:
        trial_ends = json.loads(ends.read_text())
    return {"tool": tool, "wall_s": wall, "start": start, "peak_mb": memory.peak_mb,
            "memory_split": memory.split, "trials": trial_ends}


def variant_space(space: Path, study: dict[str, Any], folder: Path) -> Path:
    """A copy of the space with its study section changed (its data path made absolute)."""
    import yaml

    raw = yaml.safe_load(space.read_text(encoding="utf-8"))
    raw["study"] = {**raw["study"], **study}
    if "path" in raw.get("data", {}):
        raw["data"]["path"] = str((space.parent / raw["data"]["path"]).resolve())
    path = folder / space.name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def ftsearch_ends(studies: Path) -> list[dict[str, Any]]:
    import optuna

    url = f"sqlite:///{studies / 'peer' / 'optuna.db'}"
    study = optuna.load_study(study_name="peer", storage=url)
    return [{"number": t.number, "end": t.datetime_complete.timestamp(), "state": t.state.name,
             "value": t.value, "params": t.params} for t in study.trials if t.datetime_complete]


def repeated(runs: list[dict[str, Any]]) -> bool | None:
    """Whether every run gave the same trials (parameters, outcomes, values) and the same best;
    None with fewer than two runs."""
    if len(runs) < 2:
        return None
    seen = [[(t.get("number"), t["params"], t["state"], t["value"]) for t in r["trials"]]
            for r in runs]
    return all(s == seen[0] for s in seen) and len({r["best"] for r in runs}) == 1


def recorded(run: dict[str, Any]) -> list[tuple[float, float]]:
    """(seconds from the run's start, value) of each trial that recorded one, in end order."""
    points = [(t["end"] - run["start"], t["value"]) for t in run["trials"]
              if t["state"] == "COMPLETE" and t["value"] is not None
              and math.isfinite(t["value"])]
    return sorted(points)


def time_to(run: dict[str, Any], target: float, maximize: bool) -> float:
    for seconds, value in recorded(run):
        if (value >= target) if maximize else (value <= target):
            return seconds
    return math.nan


def main() -> int:
    parse = _common.parser(__doc__.splitlines()[0])
    parse.add_argument("--space", default="lora.yaml")
    parse.add_argument("--trials", type=int, default=None,
                       help="trials per search (default: the space's n_trials)")
    parse.add_argument("--variant", action="append", choices=sorted(VARIANTS), default=[],
                       help="also run ftsearch with this study setting")
    parse.add_argument("--peer", choices=TOOLS[1:], help=argparse_hidden())
    parse.add_argument("--folder", type=Path, help=argparse_hidden())
    parse.add_argument("--out", type=Path, help=argparse_hidden())
    args = parse.parse_args()
    from search.space import load_space, resolve_space_path

    space_path = resolve_space_path(args.space)
    if args.peer:
        peer(args.peer, str(space_path), args.trials, args.folder, args.out)
        return 0
    _common.setup("peer")
    head = load_space(str(space_path)).head
    trials = args.trials or (4 if args.quick else head.study.n_trials)
    reps = 1 if args.quick else args.reps
    maximize = head.study.direction == "maximize"
    root = Path(tempfile.mkdtemp(prefix="ftsearch-bench-peer-"))
    tools = [*TOOLS, *args.variant]
    runs = []
    for rep, tool in _common.alternating(reps, tools):
        print(f"rep {rep + 1}/{reps}: {tool} ...", flush=True)
        runs.append({"rep": rep, **run(tool, space_path, trials, root / f"{tool}-{rep}")})
    values = [v for r in runs for _, v in recorded(r)]
    best = (max if maximize else min)(values)
    targets = {f: (best / f if maximize else best * f) for f in FACTORS}
    for r in runs:
        r["best"] = (max if maximize else min)((v for _, v in recorded(r)), default=math.nan)
        r["time_to"] = {str(f): time_to(r, target, maximize) for f, target in targets.items()}
    by_tool = {tool: [r for r in runs if r["tool"] == tool] for tool in tools}
    med = {tool: {"wall_s": _common.median([r["wall_s"] for r in rs]),
                  "best": _common.median([r["best"] for r in rs]),
                  "peak_mb": _common.median([r["peak_mb"] for r in rs]),
                  **{f"time_to_{f}": _common.median([r["time_to"][str(f)] for r in rs])
                     for f in FACTORS}}
           for tool, rs in by_tool.items()}
    rows = [[tool, m["wall_s"], *(m[f"time_to_{f}"] for f in FACTORS), m["best"], m["peak_mb"]]
            for tool, m in med.items()]
    print(_common.table(["tool", "wall s", *(f"to best/{f} s" for f in FACTORS), "best",
                         "peak MB"], rows))
    ours = med["ftsearch"]
    figures: dict[str, Any] = {"target_values": targets, "medians": med}
    for tool in tools[1:]:
        theirs = med[tool]
        speedups = {f: theirs[f"time_to_{f}"] / ours[f"time_to_{f}"] for f in FACTORS}
        better = ours["best"] >= theirs["best"] if maximize else ours["best"] <= theirs["best"]
        figures[tool] = {
            "wall_ratio": theirs["wall_s"] / ours["wall_s"],
            "time_to_target_ratio": {str(f): s for f, s in speedups.items()},
            "goal_time_to_target": _common.goal(speedups[FACTORS[0]], GOAL_SPEEDUP, False),
            "best_no_worse": bool(better),
            "memory_ratio": ours["peak_mb"] / theirs["peak_mb"]}
        print(f"{tool} / ftsearch: wall {figures[tool]['wall_ratio']:.2f}x, time to target "
              + ", ".join(f"{s:.2f}x at best/{f}" for f, s in speedups.items())
              + f"; ftsearch's best no worse: {better}; ftsearch's peak memory "
              f"{figures[tool]['memory_ratio']:.2f}x theirs")
    for tool in tools:
        if tool.startswith("ftsearch"):
            figures[tool + "_runs_repeat"] = repeated(by_tool[tool])
            print(f"{tool}: its {len(by_tool[tool])} runs gave the same trials and best: "
                  f"{figures[tool + '_runs_repeat']}")
    print("ftsearch's memory at its peak:", json.dumps(by_tool["ftsearch"][-1]["memory_split"]))
    path = _common.write("peer", {"space": str(space_path), "trials": trials, "reps": reps},
                         figures, [{k: v for k, v in r.items() if k != "start"} for r in runs])
    print(f"wrote {path}")
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
