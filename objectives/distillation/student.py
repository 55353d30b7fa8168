"""The student: the teacher's architecture made smaller, and started from the teacher's
weights.

Its config is the teacher's with the sizes the space gives (layers, attention heads, hidden
and intermediate size). Student layer i starts as teacher layer ``layer_map(...)[i]`` (spread
evenly over the teacher's depth, its last layer always kept: the one the head was trained
on); every other weight (embeddings, pooler, head) as the teacher's. A weight that is smaller
in the student takes the leading slice of the teacher's along each dimension. A student may
then be pruned (objectives.distillation.pruning).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable

import torch
from transformers import AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel

from objectives.base import DataError
from objectives.distillation import pruning
from objectives.distillation.config import StudentSection

SIZES = ("num_hidden_layers", "num_attention_heads", "hidden_size", "intermediate_size")
LAYER = re.compile(r"(\.layers?\.)(\d+)(\.)")  # encoder.layer.3. (BERT), model.layers.3.


def student_config(teacher: PretrainedConfig, section: StudentSection) -> PretrainedConfig:
    """The teacher's config with the student's sizes; DataError naming the field when a size
    is larger than the teacher's or the heads do not divide the hidden size."""
    config = copy.deepcopy(teacher)
    for name in SIZES:
        value = getattr(section, name)
        if value is None:
            continue
        if not hasattr(teacher, name):
            raise DataError(f"student.{name}", f"the teacher ({teacher.model_type}) has no "
                            f"{name}")
        if value > getattr(teacher, name):
            raise DataError(f"student.{name}", f"{value} is more than the teacher's "
                            f"{getattr(teacher, name)}: a student is smaller")
        setattr(config, name, value)
    if config.hidden_size % config.num_attention_heads:
        raise DataError("student.num_attention_heads", f"{config.num_attention_heads} heads "
                        f"do not divide the hidden size {config.hidden_size}")
    changed = [name for name in SIZES[1:] if getattr(config, name) != getattr(teacher, name)]
    if section.prune_ratio and changed:
        raise DataError("student.prune_ratio", f"pruning chooses the heads and FFN neurons "
                        f"to keep; leave {changed[0]} at the teacher's "
                        f"({getattr(teacher, changed[0])})")
    return config


def layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layer each student layer starts from: evenly spread, ending on the last
    (6 -> 2: [2, 5]; 6 -> 3: [1, 3, 5]; 6 -> 1: [5])."""
    return [math.ceil((i + 1) * teacher_layers / student_layers) - 1
            for i in range(student_layers)]


def teacher_name(name: str, mapping: list[int]) -> str:
    """The teacher's parameter a student parameter is copied from."""
    return LAYER.sub(lambda m: f"{m[1]}{mapping[int(m[2])]}{m[3]}", name, count=1)


def build(teacher: PreTrainedModel, section: StudentSection,
          batches: Callable[[], Iterable[dict[str, torch.Tensor]]] | None = None,
          ) -> PreTrainedModel:
    """A new student, initialised from ``teacher`` as the module docstring says; with
    ``section.prune_ratio``, pruned by importance measured on ``batches()`` (with labels)."""
    config = student_config(teacher.config, section)
    student = AutoModelForSequenceClassification.from_config(config)
    mapping = layer_map(teacher.config.num_hidden_layers, config.num_hidden_layers)
    kept = getattr(teacher.config, pruning.KEPT_HEADS, None)
    if kept:  # a pruned teacher: its layers' shapes, not its config's
        pruning.restructure(student, [list(range(len(kept[m]))) for m in mapping])
        setattr(student.config, pruning.KEPT_HEADS, [kept[m] for m in mapping])
    source = teacher.state_dict()
    with torch.no_grad():
        for name, tensor in student.state_dict().items():
            origin = source[teacher_name(name, mapping)]
            tensor.copy_(origin[tuple(slice(0, size) for size in tensor.shape)])
    student = student.float()
    if section.prune_ratio:
        if batches is None:
            raise ValueError("pruning needs batches to measure importance on")
        pruning.prune(student, section.prune_ratio, *pruning.importance(student, batches()))
    return student
