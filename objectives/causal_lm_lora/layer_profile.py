"""Per-layer monitoring: the time and memory of each decoder layer, its attention and its MLP.

Seed article 000 finds the layer that dominates time or memory from JSON records like
``{"timestamp", "layer_name", "compute_time" (ms), "memory_usage" (MB), "activation_stats"}``.
``profile_layers`` writes those, one line per hooked module per sampled forward pass:

    with profile_layers(model, trial_dir / "layer_profile.jsonl"):
        trainer.evaluate()

Each record also has ``step``, the index of the forward pass of ``model`` since profiling began
(0, every, 2 * every, ...), and ``device``, which says how the figures were taken:

- compute_time: on CPU, the wall clock between the module's forward pre-hook and its forward
  hook. On CUDA, a pair of CUDA events recorded in those hooks, read after one synchronisation
  at the end of the sampled pass, so that measuring does not stall the GPU mid-pass.
- memory_usage: on CUDA, the peak of allocated memory during the module's call above what was
  allocated when it began: the activations and workspace it needed (its weights were already
  allocated). On CPU, which keeps no allocator statistics: the size of the module's output
  tensors plus its parameters.
- activation_stats: mean and standard deviation of the module's first output tensor.

A decoder block's figures include its attention's and MLP's, and the statistics their hooks
compute. A pass that is not sampled costs one flag test per hook.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

# Decoder blocks: layers.N (Llama, Mistral, Qwen), h.N (GPT-2), blocks.N, layer.N (BERT).
BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.\d+$")
PARTS = frozenset({"self_attn", "attn", "attention", "self_attention", "mlp", "feed_forward",
                   "ffn"})
PEFT_PREFIX = "base_model.model."  # what peft wraps around the model's own module names
MB = 1024 * 1024


def layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Each decoder block and its attention and MLP, by name (without peft's prefix)."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if BLOCK.search(name):
            shown = name.removeprefix(PEFT_PREFIX)
            found[shown] = module
            found.update({f"{shown}.{child_name}": child
                          for child_name, child in module.named_children()
                          if child_name in PARTS})
    if not found:
        raise ValueError(f"{type(model).__name__} has no decoder layers to profile (modules "
                         "named layers.N, h.N, blocks.N or layer.N)")
    return found


def _tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):  # transformers' ModelOutput is a dict
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item)]
    return []


class PeakStack:
    """Peak memory of calls nested in one another, from an allocator that keeps one peak.

    The allocator's peak is reset when a call begins; what it had reached by then counts
    toward the calls still open, so a block still sees the peaks of its attention and MLP.
    """

    def __init__(self) -> None:
        self._open: list[list[int]] = []  # per open call: [allocated at its start, peak]

    def enter(self, allocated: int, peak_since_reset: int) -> None:
        """A call begins; the caller resets the allocator's peak right after."""
        if self._open:
            self._open[-1][1] = max(self._open[-1][1], peak_since_reset)
        self._open.append([allocated, allocated])

    def exit(self, peak_since_reset: int) -> int:
        """The innermost call ends: bytes at its peak above those allocated at its start."""
        start, peak = self._open.pop()
        peak = max(peak, peak_since_reset)
        if self._open:
            self._open[-1][1] = max(self._open[-1][1], peak)
        return peak - start


class _CpuProbe:
    device = "cpu"

    def __init__(self, parameter_bytes: dict[nn.Module, int]) -> None:
        self.parameter_bytes = parameter_bytes

    def enter(self) -> float:
        return time.perf_counter()

    def exit(self, module: nn.Module, started: float, outputs: list[torch.Tensor]
             ) -> tuple[float, float]:
        elapsed = (time.perf_counter() - started) * 1e3
        size = sum(t.numel() * t.element_size() for t in outputs)
        return elapsed, (size + self.parameter_bytes[module]) / MB

    def finish(self) -> None:
        pass

    @staticmethod
    def milliseconds(timing: float) -> float:
        return timing


class _CudaProbe:
    def __init__(self, device: torch.device) -> None:
        self.device = str(device)
        self._device = device
        self._peaks = PeakStack()

    def enter(self) -> torch.cuda.Event:
        self._peaks.enter(torch.cuda.memory_allocated(self._device),
                          torch.cuda.max_memory_allocated(self._device))
        torch.cuda.reset_peak_memory_stats(self._device)
        start = torch.cuda.Event(enable_timing=True)
        start.record()
        return start

    def exit(self, module: nn.Module, started: torch.cuda.Event, outputs: list[torch.Tensor]
             ) -> tuple[tuple[torch.cuda.Event, torch.cuda.Event], float]:
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        return (started, end), self._peaks.exit(torch.cuda.max_memory_allocated(self._device)) / MB

    def finish(self) -> None:
        torch.cuda.synchronize(self._device)  # once per sampled pass: every event has happened

    @staticmethod
    def milliseconds(timing: tuple[torch.cuda.Event, torch.cuda.Event]) -> float:
        return timing[0].elapsed_time(timing[1])


class LayerProfiler:
    """Forward hooks that measure the modules of ``layer_modules`` on every ``every``-th pass
    of ``model`` and append the records to a file; see the module's docstring."""

    def __init__(self, model: nn.Module, out: TextIO, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be 1 or more, got {every}")
        self.model, self.out, self.every = model, out, every
        self.modules = layer_modules(model)
        self.passes = 0  # forward passes of the model seen
        self.sampled = 0  # of which measured
        self._sampling = False
        self._parameter_bytes = {
            module: sum(p.numel() * p.element_size() for p in module.parameters())
            for module in self.modules.values()}
        self._probe: _CpuProbe | _CudaProbe = _CpuProbe(self._parameter_bytes)
        self._started: dict[nn.Module, list[Any]] = {}
        # per measured call: (order it began in, name, end time, timing, MB, [mean, std])
        self._pending: list[tuple[int, str, datetime, Any, float, torch.Tensor | None]] = []
        self._begun = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def names(self) -> list[str]:
        return list(self.modules)

    def attach(self) -> None:
        self._handles.append(self.model.register_forward_pre_hook(self._pass_begins))
        # always_call: a pass that raises still ends the sampling.
        self._handles.append(self.model.register_forward_hook(self._pass_ends, always_call=True))
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_pre_hook(self._module_begins))
            self._handles.append(module.register_forward_hook(
                lambda mod, args, output, name=name: self._module_ends(name, mod, output)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _pass_begins(self, model: nn.Module, args: Any) -> None:
        self._sampling = self.passes % self.every == 0
        self.passes += 1
        self._started.clear()
        self._pending.clear()
        self._begun = 0
        if self._sampling:
            device = next(model.parameters()).device
            self._probe = (_CudaProbe(device) if device.type == "cuda"
                           else _CpuProbe(self._parameter_bytes))

    def _module_begins(self, module: nn.Module, args: Any) -> None:
        if self._sampling:
            self._started.setdefault(module, []).append((self._begun, self._probe.enter()))
            self._begun += 1

    def _module_ends(self, name: str, module: nn.Module, output: Any) -> None:
        if not self._sampling:
            return
        outputs = _tensors(output)
        order, started = self._started[module].pop()
        timing, megabytes = self._probe.exit(module, started, outputs)
        stats = None
        if outputs:
            # Two passes, not torch.std_mean, which is ~10x slower on CPU. Kept on the device
            # until the pass ends: .item() here would stall a GPU.
            values = outputs[0].detach().float()
            mean = values.mean()
            stats = torch.stack((mean, (values - mean).square().mean().sqrt()))
        self._pending.append((order, name, datetime.now(timezone.utc), timing, megabytes, stats))

    def _pass_ends(self, model: nn.Module, args: Any, output: Any) -> None:
        if not self._sampling:
            return
        self._sampling = False
        self._probe.finish()
        step = self.passes - 1
        # In the order the calls began: a block, then its attention and its MLP.
        for _, name, when, timing, megabytes, stats in sorted(self._pending,
                                                             key=lambda p: p[0]):
            mean, std = stats.tolist() if stats is not None else (None, None)
            self.out.write(json.dumps({
                "timestamp": when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "layer_name": name,
                "step": step,
                "compute_time": self._probe.milliseconds(timing),
                "memory_usage": megabytes,
                "activation_stats": {"mean": mean, "std": std},
                "device": self._probe.device,
            }) + "\n")
        self.out.flush()
        self._pending.clear()
        self.sampled += 1


@contextmanager
def profile_layers(model: nn.Module, out_path: Path, every: int = 1) -> Iterator[LayerProfiler]:
    """Profile every ``every``-th forward pass of ``model`` inside the block, appending JSON
    lines to ``out_path``; the hooks are removed when the block ends."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("a", encoding="utf-8") as out:
        profiler = LayerProfiler(model, out, every)
        profiler.attach()
        try:
            yield profiler
        finally:
            profiler.detach()
