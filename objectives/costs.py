"""What a trained model costs to serve, reported with its final figures so that a search can
trade quality against size and speed (``study.metric: [eval_macro_f1, latency_ms]``).

- ``total_params``: parameters of the model as served (a LoRA adapter merged into its base);
- ``trainable_params``: those the trial trained;
- ``size_mb``: the served weights in MB, as a safetensors file holds them (each parameter at
  its dtype's width);
- ``latency_ms``: median milliseconds per example of a forward pass over a fixed batch of the
  test split, after warm-up (15 passes, or as many from 5 on as fill 0.2 s: the figure
  costs a slow model about half a second of every trial), in the trial's own process and
  threads, of the model as the trial holds it (a LoRA adapter unmerged: merging it in and
  out again would leave rounding in the base weights a worker keeps for its next trial;
  merged, it runs as fast as its base).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from objectives.base import Metric

if TYPE_CHECKING:  # the search process declares these metrics without importing torch
    import torch

COST_METRICS = (
    Metric("latency_ms", "minimize", "median ms per test example of a forward pass (batch of "
           "up to 32, after warm-up)", final=True),
    Metric("total_params", "minimize", "parameters of the model as served", final=True),
    Metric("trainable_params", "minimize", "parameters the trial trained", final=True),
    Metric("size_mb", "minimize", "weights of the model as served, in MB", final=True),
)
LATENCY_BATCH = 32
WARMUP, REPEATS = 2, 15
MIN_REPEATS, BUDGET_S = 5, 0.2  # a slow model's passes stop at 5 once they take BUDGET_S


def served_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters of the served model: a merged adapter's LoRA matrices, and the untrained
    copy peft keeps of a module it trains in full, are not among them."""
    return [p for name, p in model.named_parameters()
            if "lora_" not in name and "original_module" not in name]


def test_batch(split, collate: Callable[[list[dict]], dict]) -> dict[str, torch.Tensor]:
    """The first examples of a tokenised split (a datasets.Dataset), padded by ``collate``,
    as model inputs (no labels)."""
    rows = [split[i] for i in range(min(LATENCY_BATCH, len(split)))]
    batch = dict(collate(rows))
    batch.pop("labels", None)
    return batch


def measure(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """The cost metrics of ``model`` (a peft model or a plain one), its latency timed on
    ``batch`` (tensors of the test split's first examples)."""
    import torch

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    parameters = served_parameters(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            device = parameters[0].device
            inputs = {key: value.to(device) for key, value in batch.items()}
            count = len(next(iter(inputs.values())))
            times = []
            for repeat in range(WARMUP + REPEATS):
                start = time.perf_counter()
                model(**inputs)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if repeat >= WARMUP:
                    times.append(time.perf_counter() - start)
                if len(times) >= MIN_REPEATS and sum(times) >= BUDGET_S:
                    break
    finally:
        model.train(was_training)
    return {
        "latency_ms": statistics.median(times) * 1000 / count,
        "total_params": float(sum(p.numel() for p in parameters)),
        "trainable_params": float(trainable),
        "size_mb": sum(p.numel() * p.element_size() for p in parameters) / 1e6,
    }
