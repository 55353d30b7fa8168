"""Training loop: the objective's training steps against a bare PyTorch + peft loop.

    python benchmarks/training_loop.py [--quick] [--reps 3] [--steps N] [--batch-size B]
                                       [--model PATH] [--peak-tflops X]

The objective side is a real trial of objectives/causal_lm_lora.py, the default space's untuned
trial config (spaces/lora.yaml), run in this process as a Ray worker runs it: its Trainer is
given a callback that times each optimizer step from on_step_begin to on_step_end (forward,
backward, clipping, AdamW, the LR schedule; with a GPU, synchronised), and counts the tokens
fed to training_step. Fetching and collating batches, logging, evaluations and checkpoints
fall between those callbacks, so they count as outside the training steps, with the model
load and the data preparation.

The bare loop, written here, trains the same model and LoRA adapter with the same batches
(same prepared data and collator), AdamW (fused, as the Trainer picks), the same warmup and
cosine schedule and gradient clipping, timed over the same span of each step; fp32 on CPU,
bf16 autocast with CUDA (as the objective's precision "auto").

tokens/s counts padded tokens (batch x padded length). With CUDA it also prints the model FLOPs
utilisation: MFU = (6 N + 12 layers hidden seq) tokens/s / the GPU's peak dense bf16 FLOPS.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import _common
import torch
import yaml

GOAL_RATIO = 0.95
GOAL_OUTSIDE = 0.10
# Peak dense bf16 tensor FLOPS by device name (vendor datasheets, without sparsity).
PEAK_BF16 = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12),
             ("A100", 312e12), ("L4", 121e12)]


class Probe:
    """What the instrumented trial measured."""

    def __init__(self) -> None:
        self.step_s = 0.0
        self.steps = 0
        self.tokens = 0
        self.parts: dict[str, float] = defaultdict(float)
        self._began = 0.0

    @contextlib.contextmanager
    def part(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] += time.perf_counter() - start


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def instrument(probe: Probe) -> contextlib.ExitStack:
    """Swap the objective module's Trainer, model loader and data step for timed ones, for the
    duration of the returned context (this process only)."""
    from transformers import TrainerCallback

    from objectives.causal_lm_lora import CausalLMLoRA, recipe

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            probe._began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            probe.step_s += time.perf_counter() - probe._began
            probe.steps += 1

    class TimedTrainer(recipe.GenerativeTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(StepTimer())

        def training_step(self, model, inputs, num_items_in_batch=None):
            probe.tokens += inputs["input_ids"].numel()
            return super().training_step(model, inputs, num_items_in_batch)

        def evaluate(self, *args, **kwargs):
            with probe.part("evaluation"):
                return super().evaluate(*args, **kwargs)

        def _save_checkpoint(self, model, trial):
            with probe.part("checkpoints"):
                return super()._save_checkpoint(model, trial)

    load_base_model = recipe.load_base_model
    prepared = CausalLMLoRA.prepared

    def timed_load(config):
        with probe.part("model load"):
            return load_base_model(config)

    def timed_prepared(config, prepared_dir):
        with probe.part("data preparation"):
            return prepared(config, prepared_dir)

    stack = contextlib.ExitStack()
    for owner, name, value in ((recipe, "GenerativeTrainer", TimedTrainer),
                               (recipe, "load_base_model", timed_load),
                               (CausalLMLoRA, "prepared", staticmethod(timed_prepared))):
        stack.enter_context(_swapped(owner, name, value))
    return stack


@contextlib.contextmanager
def _swapped(owner: Any, name: str, value: Any):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def objective_trial(space, config, folder: Path, number: int) -> dict[str, Any]:
    """One trial of the objective as a worker's first: the base model is loaded anew."""
    from objectives.base import Reporter, TrialContext
    from objectives.trainer import forget_base_model

    class Quiet(Reporter):
        def report(self, metrics: dict[str, Any]) -> None:
            pass

    forget_base_model()
    trial_dir = folder / f"{number:04d}"
    trial_dir.mkdir(parents=True)
    study = space.head.study
    context = TrialContext(number=number, trial_dir=trial_dir, prepared_dir=folder / "prepared",
                           reporter=Quiet(), metric=study.metric, direction=study.direction,
                           threads=max(1, math.floor(space.head.resources.cpu)),
                           baseline=True)  # the untuned default, trained to its end
    probe = Probe()
    with instrument(probe), _common.stopwatch() as took:
        space.objective.run(config, context)
    if context.history[-1].get("outcome") != "complete":
        raise SystemExit(f"the objective's trial did not complete: {context.history[-1]}")
    wall = took[0]
    parts = dict(probe.parts)
    parts["other"] = wall - probe.step_s - sum(parts.values())
    return {"wall_s": wall, "step_s": probe.step_s, "steps": probe.steps, "tokens": probe.tokens,
            "tokens_per_s": probe.tokens / probe.step_s, "outside": parts,
            "outside_share": 1 - probe.step_s / wall,
            "outside_share_warm": (wall - probe.step_s - parts["model load"])
            / (wall - parts["model load"])}


def bare_loop(space, config, prepared: Path, steps: int, threads: int) -> dict[str, Any]:
    """The same training written directly against PyTorch and peft."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        get_scheduler,
        set_seed,
    )

    from objectives.causal_lm_lora import data as sft_data
    from objectives.causal_lm_lora.config import model_config, model_path
    from objectives.data.files import load_split
    from objectives.sections import module_names

    torch.set_num_threads(threads)
    train = config.training
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    path = model_path(config)
    model = AutoModelForCausalLM.from_pretrained(path, config=model_config(config, path))
    set_seed(train.seed)
    model = get_peft_model(model, LoraConfig(
        task_type="CAUSAL_LM", r=config.lora.r, lora_alpha=config.lora.lora_alpha,
        lora_dropout=config.lora.lora_dropout, target_modules=module_names(config.lora),
        bias=config.lora.bias)).to(device)
    model.train()
    tokenizer = AutoTokenizer.from_pretrained(path)
    loader = torch.utils.data.DataLoader(
        load_split(prepared, "train"), batch_size=train.per_device_train_batch_size,
        shuffle=True, generator=torch.Generator().manual_seed(train.seed),
        collate_fn=DataCollatorForSeq2Seq(tokenizer, padding=True,
                                          label_pad_token_id=sft_data.IGNORE_INDEX))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=train.learning_rate,
                                  weight_decay=train.weight_decay, fused=True)
    schedule = get_scheduler(train.lr_scheduler_type, optimizer,
                             num_warmup_steps=math.ceil(train.warmup_ratio * steps),
                             num_training_steps=steps)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda
                else contextlib.nullcontext())
    accumulation = train.gradient_accumulation_steps

    def batches():
        while True:
            yield from loader

    stream = batches()
    step_s, tokens = 0.0, 0
    for _ in range(steps):
        micro = [{k: v.to(device) for k, v in next(stream).items()} for _ in range(accumulation)]
        sync()
        began = time.perf_counter()
        for batch in micro:
            tokens += batch["input_ids"].numel()
            with autocast:
                loss = model(**batch).loss / accumulation
            loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, train.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        step_s += time.perf_counter() - began
    counts = {"parameters": sum(p.numel() for p in model.parameters())}
    del model, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return {"step_s": step_s, "steps": steps, "tokens": tokens, "tokens_per_s": tokens / step_s,
            **counts}


def peak_flops(override_tflops: float | None) -> tuple[float | None, str | None]:
    if override_tflops:
        return override_tflops * 1e12, "--peak-tflops"
    if not torch.cuda.is_available():
        return None, None
    name = torch.cuda.get_device_name(0)
    for key, peak in PEAK_BF16:
        if key in name:
            return peak, name
    return None, name


def flops_per_token(model_cfg, parameters: int, seq: float) -> float:
    """6 N for the dense weights' forward and backward, plus attention's scores and values
    (12 layers hidden seq, as in PaLM's appendix B)."""
    return 6 * parameters + 12 * model_cfg.num_hidden_layers * model_cfg.hidden_size * seq


def main() -> None:
    parse = _common.parser(__doc__.splitlines()[0])
    parse.add_argument("--steps", type=int, help="optimizer steps per trial (default: the "
                       "space's max_steps, 240; quick 60)")
    parse.add_argument("--batch-size", type=int, help="per-device train batch (default: the "
                       "space's, 8)")
    parse.add_argument("--model", help="a local model folder instead of the embedded tiny "
                       "Llama (its own architecture: the space's config_overrides are dropped)")
    parse.add_argument("--peak-tflops", type=float, help="the device's peak bf16 TFLOPS, for "
                       "a GPU not in the table")
    parse.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="change the trial config, e.g. --set training.eval_steps=40 "
                       "(YAML value; repeatable)")
    parse.set_defaults(reps=5)  # a trial is short and this ratio is near 1: more repetitions
    args = parse.parse_args()

    studies = _common.setup("training_loop")
    from search.space import load_space

    space = load_space("lora.yaml")
    params = space.baseline_params()
    overrides: dict[str, Any] = {}
    if args.model:
        params = {k: v for k, v in params.items() if not k.startswith("model.config_overrides")}
        overrides["model.name_or_path"] = str(Path(args.model).resolve())
        overrides["model.config_overrides"] = {}
    if args.steps or args.quick:
        overrides["training.max_steps"] = args.steps or 60
    if args.batch_size:
        overrides["training.per_device_train_batch_size"] = args.batch_size
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    config = space.trial_config({**params, **overrides})
    threads = max(1, math.floor(space.head.resources.cpu))
    prepared, _ = space.objective.prepared(config, studies / "prepared")
    cuda = torch.cuda.is_available()
    print(f"trial config: {config.training.max_steps} steps, batch "
          f"{config.training.per_device_train_batch_size} x accumulation "
          f"{config.training.gradient_accumulation_steps}, max_length {config.data.max_length}, "
          f"eval every {config.training.eval_steps} steps, {threads} torch thread(s), "
          f"{'CUDA ' + torch.cuda.get_device_name(0) if cuda else 'CPU fp32'}")

    reps: list[dict[str, Any]] = [{"rep": rep} for rep in range(args.reps)]
    for rep, variant in _common.alternating(args.reps, ["objective", "bare"]):
        if variant == "objective":
            reps[rep]["objective"] = objective_trial(space, config, studies, rep)
        else:
            steps = reps[rep]["objective"]["steps"] if "objective" in reps[rep] else \
                config.training.max_steps
            reps[rep]["bare"] = bare_loop(space, config, prepared, steps, threads)
        print(f"  rep {rep} {variant:<9} {reps[rep][variant]['tokens_per_s']:,.0f} tokens/s",
              flush=True)
    for r in reps:
        r["ratio"] = r["objective"]["tokens_per_s"] / r["bare"]["tokens_per_s"]

    def med(side: str, key: str) -> float:
        return _common.median([r[side][key] for r in reps])

    ratio = _common.median([r["ratio"] for r in reps])
    share = med("objective", "outside_share")
    parts = {k: _common.median([r["objective"]["outside"][k] for r in reps])
             for k in reps[0]["objective"]["outside"]}
    wall = med("objective", "wall_s")
    rows = [
        ["objective tokens/s (training steps)", med("objective", "tokens_per_s"), "", ""],
        ["bare PyTorch + peft tokens/s", med("bare", "tokens_per_s"), "", ""],
        ["objective / bare", ratio, f">= {GOAL_RATIO}", ratio >= GOAL_RATIO],
        ["trial wall time, s", wall, "", ""],
        ["share of the trial outside training steps", share, f"<= {GOAL_OUTSIDE}",
         share <= GOAL_OUTSIDE],
        *[[f"  {k}, share", v / wall, "", ""] for k, v in parts.items()],
        ["  same, base model already loaded (reused worker)",
         med("objective", "outside_share_warm"), "", ""],
    ]
    figures: dict[str, Any] = {
        "objective_tokens_per_s": med("objective", "tokens_per_s"),
        "bare_tokens_per_s": med("bare", "tokens_per_s"),
        "ratio": _common.goal(ratio, GOAL_RATIO, at_most=False),
        "trial_wall_s": wall,
        "outside_share": _common.goal(share, GOAL_OUTSIDE, at_most=True),
        "outside_share_warm": med("objective", "outside_share_warm"),
        "outside_s": parts,
    }
    peak, device = peak_flops(args.peak_tflops)
    if cuda:
        from objectives.causal_lm_lora.config import model_config, model_path

        seq = reps[0]["bare"]["tokens"] / (reps[0]["bare"]["steps"]
                                           * config.training.per_device_train_batch_size
                                           * config.training.gradient_accumulation_steps)
        per_token = flops_per_token(model_config(config, model_path(config)),
                                    reps[0]["bare"]["parameters"], seq)
        for side in ("objective", "bare"):
            mfu = per_token * med(side, "tokens_per_s") / peak if peak else float("nan")
            figures[f"mfu_{side}"] = mfu
            rows.append([f"MFU {side} ({device}, peak "
                         f"{peak / 1e12 if peak else float('nan'):g} TFLOPS)", mfu, "", ""])
        figures["flops_per_token"] = per_token
    print(f"\nmedian of {args.reps} alternating repetitions")
    print(_common.table(["figure", "value", "goal", "met"], rows))
    settings = {"config": config.model_dump(mode="json"), "overrides": overrides,
                "threads": threads, "reps": args.reps, "peak_flops": peak, "device": device}
    notes = ["training-step time: on_step_begin to on_step_end (objective) or the same span "
             "(bare); batches are fetched and collated outside it on both sides",
             "each objective trial loads its base model, as a worker's first trial does; "
             "outside_share_warm leaves the model load out, as in a reused worker"]
    print(f"\nwrote {_common.write('training_loop', settings, figures, reps, notes)}")


if __name__ == "__main__":
    main()
