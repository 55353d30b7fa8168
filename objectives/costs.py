"""What a trained model costs to serve, reported with its final figures so that a search can
trade quality against size and speed (``study.metric: [eval_macro_f1, latency_ms]``).

- ``total_params``: parameters of the model as served (a LoRA adapter merged into its base);
- ``trainable_params``: those the trial trained;
- ``size_mb``: the served weights in MB, as a safetensors file holds them (each parameter at
  its dtype's width);
- ``latency_ms``: median milliseconds per example of a forward pass over a fixed batch of the
  test split, after warm-up, in the trial's own process and threads.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from objectives.base import Metric

COST_METRICS = (
    Metric("latency_ms", "minimize", "median ms per test example of a forward pass (batch of "
           "up to 32, after warm-up)", final=True),
    Metric("total_params", "minimize", "parameters of the model as served", final=True),
    Metric("trainable_params", "minimize", "parameters the trial trained", final=True),
    Metric("size_mb", "minimize", "weights of the model as served, in MB", final=True),
)
LATENCY_BATCH = 32
WARMUP, REPEATS = 3, 15


@contextmanager
def merged(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model as served: a peft model's adapter merged in for the duration, then taken
    out again (the trial goes on with its adapter); any other model as it is."""
    if not hasattr(model, "merge_adapter"):
        yield model
        return
    model.merge_adapter()
    try:
        yield model.get_base_model()
    finally:
        model.unmerge_adapter()


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
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    was_training = model.training
    model.eval()
    try:
        with merged(model) as served, torch.inference_mode():
            parameters = served_parameters(served)
            device = parameters[0].device
            inputs = {key: value.to(device) for key, value in batch.items()}
            count = len(next(iter(inputs.values())))
            times = []
            for repeat in range(WARMUP + REPEATS):
                start = time.perf_counter()
                served(**inputs)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if repeat >= WARMUP:
                    times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return {
        "latency_ms": statistics.median(times) * 1000 / count,
        "total_params": float(sum(p.numel() for p in parameters)),
        "trainable_params": float(trainable),
        "size_mb": sum(p.numel() * p.element_size() for p in parameters) / 1e6,
    }
