"""Recipe: distil a trained classifier (the teacher) into a smaller student, one trial.

load prepared data and the teacher's cached logits -> build the student from the teacher
(objectives.distillation.student) -> train it in full with transformers' Trainer on the
distillation loss (objectives.distillation.loss; the teacher's logits read from the cache, or
computed beside each step), reporting each evaluation (validation cross-entropy, accuracy,
macro-F1 and the share of the teacher's quality kept) -> the best checkpoint predicts the
validation and test splits -> save the student, its predictions and costs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, set_seed

from objectives import costs
from objectives.base import TrialContext
from objectives.data.files import load_split
from objectives.distillation import student as students
from objectives.distillation import teacher as teachers
from objectives.distillation.config import DistillationConfig, DistillSection
from objectives.distillation.loss import distillation_loss
from objectives.sequence_classification_lora.recipe import compute_metrics, finish, task_metric
from objectives.trainer import quiet_transformers, train_trial, training_arguments, trial_callbacks

SAVED = "model"  # per trial folder: the student, a whole transformers model (Distillation.saved)
RETAINED = "quality_retained"
IMPORTANCE_ROWS = 128


class DistillationTrainer(Trainer):
    """Trains on the distillation loss; evaluates on the task's cross-entropy alone."""

    def __init__(self, *args: Any, teacher: torch.nn.Module | None, distill: DistillSection,
                 label_smoothing: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher, self.distill, self.label_smoothing = teacher, distill, label_smoothing

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        teacher_logits = inputs.pop("teacher_logits", None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        if not model.training:
            loss = F.cross_entropy(outputs.logits, labels)
        else:
            if teacher_logits is None:  # on the fly: the teacher beside each step
                self.teacher.to(outputs.logits.device)
                with torch.no_grad():
                    teacher_logits = self.teacher(**inputs).logits
            loss = distillation_loss(outputs.logits, teacher_logits.to(outputs.logits.dtype),
                                     labels, self.distill.temperature, self.distill.alpha,
                                     self.label_smoothing)
        return (loss, outputs) if return_outputs else loss


def quality_metrics(teacher_info: dict[str, Any], quality: str):
    """compute_metrics for the Trainer: the task metrics, and the student's ``quality``
    metric divided by the teacher's on the validation split."""
    def compute(prediction) -> dict[str, float]:
        figures = compute_metrics(prediction)
        return {**figures, RETAINED: figures[quality] / teacher_info[f"eval_{quality}"]}

    return compute


def importance_batches(train, collate) -> list[dict[str, torch.Tensor]]:
    """The training examples pruning measures importance on: the first IMPORTANCE_ROWS."""
    rows = [train[i] for i in range(min(IMPORTANCE_ROWS, len(train)))]
    return [dict(collate(rows[start:start + 16])) for start in range(0, len(rows), 16)]


def keep(key: str) -> bool:
    return task_metric(key) or key.endswith(f"_{RETAINED}")


def run(config: DistillationConfig, context: TrialContext, prepared: Path,
        teacher_info: dict[str, Any]) -> None:
    """One trial; ``prepared`` holds the tokenised splits, ``teacher_info`` the teacher's
    figures and where its cached logits are (see objective.prepared)."""
    quiet_transformers()
    torch.set_num_threads(context.threads)
    folder = Path(config.teacher.model)
    tokenizer = AutoTokenizer.from_pretrained(teachers.tokenizer_folder(folder))
    teacher = teachers.load(folder)
    set_seed(config.training.seed)
    train = load_split(prepared, "train")
    collate = DataCollatorWithPadding(tokenizer)
    model = students.build(teacher, config.student, lambda: importance_batches(train, collate))
    cached = prepared / teacher_info["folder_key"] / teachers.TEACHER_LOGITS
    if cached.is_file():
        train = train.add_column("teacher_logits", np.load(cached).tolist())
    quality = config.distill.quality_metric

    def against_teacher(final: dict[str, float]) -> dict[str, float]:
        """The student's test quality and costs as shares of the teacher's, whose costs are
        measured here, in the same process and conditions as the student's."""
        device = next(model.parameters()).device
        theirs = costs.measure(teacher.to(device), costs.test_batch(
            load_split(prepared, "test"), collate))
        return {f"test_{RETAINED}": final[f"test_{quality}"] / teacher_info[f"test_{quality}"],
                "speedup": theirs["latency_ms"] / final["latency_ms"],
                "size_ratio": final["total_params"] / theirs["total_params"]}

    attrs = {"teacher": str(folder), "teacher_test_" + quality: teacher_info[f"test_{quality}"],
             "student_layers_from": students.layer_map(teacher.config.num_hidden_layers,
                                                       model.config.num_hidden_layers)}
    train_trial(lambda: DistillationTrainer(
        model=model,
        args=training_arguments(config.training, context),
        train_dataset=train,
        eval_dataset=load_split(prepared, "validation"),
        data_collator=collate,
        compute_metrics=quality_metrics(teacher_info, quality),
        callbacks=trial_callbacks(context, config.early_stopping, keep),
        teacher=None if cached.is_file() else teacher, distill=config.distill,
        label_smoothing=config.training.label_smoothing_factor,
    ), model, context, lambda trainer: finish(trainer, prepared, tokenizer, context, attrs,
                                              saved=SAVED, keep=keep, add=against_teacher))
