"""The distillation Trainer's loss: the teacher's cached logits and the teacher run beside the
step give the same loss; evaluation is the task's cross-entropy alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainingArguments

from objectives.distillation.config import DistillSection, StudentSection
from objectives.distillation.loss import distillation_loss
from objectives.distillation.recipe import DistillationTrainer
from objectives.distillation.student import build
from tests.objectives.distillation.tiny import batches, tiny_bert


@pytest.fixture
def pair(tmp_path):
    teacher = tiny_bert()
    teacher.requires_grad_(False)
    student = build(teacher, StudentSection(num_hidden_layers=1))
    distill = DistillSection(temperature=2.0, alpha=0.7)

    def trainer(with_teacher: bool) -> DistillationTrainer:
        return DistillationTrainer(
            model=student, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                  report_to=[]),
            teacher=teacher if with_teacher else None, distill=distill, label_smoothing=0.0)

    return teacher, student, distill, trainer


def test_cached_logits_and_the_teacher_on_the_fly_give_one_loss(pair):
    teacher, student, distill, trainer = pair
    batch = batches()[0]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        cached = teacher(**inputs).logits
    beside, reading = trainer(True), trainer(False)  # each seeds torch as it is made
    student.train()  # its dropout draws the same masks from the same seed
    torch.manual_seed(3)
    on_the_fly = beside.compute_loss(student, dict(batch))
    torch.manual_seed(3)
    from_cache = reading.compute_loss(student, {**batch, "teacher_logits": cached})
    assert on_the_fly.item() == pytest.approx(from_cache.item(), abs=1e-6)
    torch.manual_seed(3)
    with torch.no_grad():
        expected = distillation_loss(student(**inputs).logits, cached, batch["labels"],
                                     distill.temperature, distill.alpha)
    assert from_cache.item() == pytest.approx(expected.item(), abs=1e-6)


def test_evaluation_is_the_students_cross_entropy(pair):
    _, student, _, trainer = pair
    batch = batches()[1]
    student.eval()
    loss = trainer(False).compute_loss(student, dict(batch))
    with torch.no_grad():
        logits = student(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert loss.item() == pytest.approx(F.cross_entropy(logits, batch["labels"]).item())
