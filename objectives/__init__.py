"""Objectives: each module trains one kind of model; the search knows only ``Objective``."""

from __future__ import annotations

import importlib

from objectives.base import Objective, Reporter, TrialContext

__all__ = ["Objective", "Reporter", "TrialContext", "get_objective", "OBJECTIVES"]

# name -> "module:Class"; imported on use so a space that does not use one does not pay for it.
OBJECTIVES = {
    "causal_lm_lora": "objectives.causal_lm_lora:CausalLMLoRA",
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise KeyError(f"unknown objective {name!r}; known: {', '.join(sorted(OBJECTIVES))}")
    module, cls = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module), cls)()
