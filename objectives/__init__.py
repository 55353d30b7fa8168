"""Objectives: each module trains one kind of model; the search knows only ``Objective``."""

from __future__ import annotations

import importlib

from objectives.base import Objective, Reporter, TrialContext

__all__ = ["DEFAULT_OBJECTIVE", "OBJECTIVES", "Objective", "Reporter", "TrialContext",
           "get_objective", "register"]

# name -> "module:Class"; imported on use so a space that does not use one does not pay for it.
OBJECTIVES = {
    "causal_lm_lora": "objectives.causal_lm_lora:CausalLMLoRA",
    "sequence_classification_lora":
        "objectives.sequence_classification_lora:SequenceClassificationLoRA",
    "distillation": "objectives.distillation:Distillation",
}
DEFAULT_OBJECTIVE = "causal_lm_lora"  # what a space without an objective key trains


def register(name: str, target: str) -> None:
    """Make ``objective: name`` in a space mean the class at ``target`` ("module:Class")."""
    OBJECTIVES[name] = target


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise KeyError(f"unknown objective {name!r}; known: {', '.join(sorted(OBJECTIVES))}")
    module, cls = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module), cls)()
