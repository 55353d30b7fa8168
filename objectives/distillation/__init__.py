"""Distillation of a trained classifier into a smaller student of its architecture."""

from objectives.distillation.config import DistillationConfig
from objectives.distillation.objective import Distillation

__all__ = ["Distillation", "DistillationConfig"]
