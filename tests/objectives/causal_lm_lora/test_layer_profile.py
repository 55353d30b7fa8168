"""Per-layer monitoring on the tiny model, wrapped in LoRA as the recipe wraps it."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM

from objectives.causal_lm_lora.layer_profile import MB, PeakStack, layer_modules, profile_layers

LAYERS = ["model.layers.0", "model.layers.0.self_attn", "model.layers.0.mlp",
          "model.layers.1", "model.layers.1.self_attn", "model.layers.1.mlp"]
BATCH, LENGTH, HIDDEN = 4, 16, 128


@pytest.fixture(scope="module")
def model(tiny_model: Path) -> nn.Module:
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    return get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=4,
                                           target_modules="all-linear")).eval()


def tokens() -> torch.Tensor:
    return torch.randint(0, 1000, (BATCH, LENGTH), generator=torch.Generator().manual_seed(0))


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def hooks(modules: list[nn.Module]) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules)


def test_records_one_per_layer_per_sampled_pass(model: nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "layer_profile.jsonl"
    with torch.no_grad(), profile_layers(model, out, every=2) as profiler:
        for _ in range(5):
            model(input_ids=tokens())
    assert profiler.names == LAYERS
    assert (profiler.passes, profiler.sampled) == (5, 3)
    lines = records(out)
    # Passes 0, 2 and 4 are sampled; each gives a record per module, a block before its parts.
    assert [(r["step"], r["layer_name"]) for r in lines] == [
        (step, name) for step in (0, 2, 4) for name in LAYERS]
    for record in lines:
        assert set(record) == {"timestamp", "layer_name", "step", "compute_time",
                               "memory_usage", "activation_stats", "device"}
        assert datetime.fromisoformat(record["timestamp"]).tzinfo is not None
        assert record["compute_time"] > 0 and record["device"] == "cpu"
        stats = record["activation_stats"]
        assert math.isfinite(stats["mean"]) and stats["std"] > 0
    # On CPU, memory is the module's output plus its parameters (base weights and LoRA).
    modules = layer_modules(model)
    mlp = modules["model.layers.0.mlp"]
    weights = sum(p.numel() * p.element_size() for p in mlp.parameters())
    output = BATCH * LENGTH * HIDDEN * 4
    assert lines[2]["memory_usage"] == pytest.approx((output + weights) / MB)
    # A block's time includes its attention's and its MLP's.
    block, attention, feed_forward = lines[0:3]
    assert block["compute_time"] >= attention["compute_time"] + feed_forward["compute_time"]


def test_hooks_are_removed_even_when_the_block_raises(model: nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "layer_profile.jsonl"
    watched = [model, *layer_modules(model).values()]
    before = hooks(watched)
    with pytest.raises(RuntimeError, match="stop"), profile_layers(model, out):
        assert hooks(watched) == before + 2 * len(watched)
        raise RuntimeError("stop")
    assert hooks(watched) == before
    with torch.no_grad():
        model(input_ids=tokens())
    assert out.read_text() == ""


def test_training_passes_are_profiled_and_gradients_unchanged(model: nn.Module,
                                                              tmp_path: Path) -> None:
    batch = tokens()

    def gradients() -> list[torch.Tensor]:
        model.zero_grad()
        model(input_ids=batch, labels=batch).loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    plain = gradients()
    with profile_layers(model, tmp_path / "p.jsonl"):
        profiled = gradients()
    assert len(records(tmp_path / "p.jsonl")) == len(LAYERS)
    assert all(torch.equal(a, b) for a, b in zip(plain, profiled, strict=True))
    model.zero_grad()


def test_bad_arguments(model: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every must be 1 or more"), \
            profile_layers(model, tmp_path / "p.jsonl", every=0):
        pass
    with pytest.raises(ValueError, match="Linear has no decoder layers"):
        layer_modules(nn.Linear(2, 2))


def test_peak_stack_gives_each_nested_call_its_own_peak() -> None:
    # The bookkeeping of CUDA memory, fed the allocator's readings by hand: a block allocated
    # at 100 that peaks at 150 before its attention, whose own peak is 400 (from 120), then an
    # MLP peaking at 300 (from 130), and the block ends with the allocator's peak at 300.
    peaks = PeakStack()
    peaks.enter(allocated=100, peak_since_reset=90)  # block
    peaks.enter(allocated=120, peak_since_reset=150)  # attention; the block has seen 150
    assert peaks.exit(peak_since_reset=400) == 280
    peaks.enter(allocated=130, peak_since_reset=400)  # MLP
    assert peaks.exit(peak_since_reset=300) == 170
    assert peaks.exit(peak_since_reset=300) == 300  # block: 400 - 100


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_events_and_allocator_peaks(model: nn.Module, tmp_path: Path) -> None:
    gpu = model.to("cuda")
    try:
        with torch.no_grad(), profile_layers(gpu, tmp_path / "p.jsonl"):
            gpu(input_ids=tokens().cuda())
        lines = records(tmp_path / "p.jsonl")
        assert [r["layer_name"] for r in lines] == LAYERS
        assert all(r["device"].startswith("cuda") and r["compute_time"] > 0
                   and r["memory_usage"] >= 0 for r in lines)
        # A block needs at least what its attention needed.
        assert lines[0]["memory_usage"] >= lines[1]["memory_usage"]
    finally:
        model.to("cpu")
