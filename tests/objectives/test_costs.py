"""What a model costs to serve: the latency's passes and the parameter counts."""

from __future__ import annotations

import time

import pytest
import torch

from objectives import costs


class Timed(torch.nn.Module):
    """A linear layer whose forward pass takes ``seconds`` and is counted."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.seconds, self.passes = seconds, 0

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        time.sleep(self.seconds)
        return self.linear(input_ids)


def test_a_fast_model_is_timed_over_every_repeat() -> None:
    model = Timed(0.0)
    figures = costs.measure(model, {"input_ids": torch.zeros(8, 4)})
    assert model.passes == costs.WARMUP + costs.REPEATS
    assert figures["total_params"] == figures["trainable_params"] == 4 * 2 + 2
    assert figures["size_mb"] == pytest.approx(10 * 4 / 1e6)


def test_a_slow_model_stops_once_its_passes_fill_the_budget() -> None:
    # 5 passes of 0.12 s take 0.6 s, over the budget of 0.2 s: the median of those 5.
    model = Timed(0.12)
    figures = costs.measure(model, {"input_ids": torch.zeros(8, 4)})
    assert model.passes == costs.WARMUP + costs.MIN_REPEATS
    assert figures["latency_ms"] == pytest.approx(120 / 8, rel=0.5)
    assert model.training  # as it was
