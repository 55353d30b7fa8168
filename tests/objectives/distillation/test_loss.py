"""The distillation loss against values computed by hand."""

from __future__ import annotations

import pytest
import torch

from objectives.distillation.loss import distillation_loss


def test_one_example_at_temperature_one():
    # teacher softmax([0, 1]) = [0.268941, 0.731059], student softmax([1, 0]) the reverse:
    # KL = 0.268941 * (-1) + 0.731059 * 1 = 0.462117; cross-entropy -ln 0.731059 = 0.313262.
    loss = distillation_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]),
                             torch.tensor([0]), temperature=1.0, alpha=0.5)
    assert loss.item() == pytest.approx(0.5 * 0.462117 + 0.5 * 0.313262, abs=1e-5)


def test_temperature_softens_and_scales_by_its_square():
    # At T = 2 the logits halve: softmax([0, .5]) = [0.377541, 0.622459], KL = 0.122459,
    # scaled by T^2 = 4; the cross-entropy stays at T = 1: 0.313262.
    loss = distillation_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]),
                             torch.tensor([0]), temperature=2.0, alpha=0.25)
    assert loss.item() == pytest.approx(0.25 * 4 * 0.122459 + 0.75 * 0.313262, abs=1e-5)


def test_batch_mean_and_a_student_equal_to_its_teacher():
    # Row 2: student = teacher (KL 0), logits [2, 2] with label 1: cross-entropy ln 2.
    student = torch.tensor([[1.0, 0.0], [2.0, 2.0]])
    teacher = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    loss = distillation_loss(student, teacher, torch.tensor([0, 1]), temperature=1.0,
                             alpha=0.5)
    kl, ce = (0.462117 + 0) / 2, (0.313262 + 0.693147) / 2
    assert loss.item() == pytest.approx(0.5 * kl + 0.5 * ce, abs=1e-5)


def test_alpha_zero_is_the_task_loss_with_label_smoothing():
    student, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    loss = distillation_loss(student, torch.tensor([[5.0, -5.0]]), labels, temperature=3.0,
                             alpha=0.0, label_smoothing=0.1)
    # smoothed target [0.95, 0.05]: 0.95 * 0.313262 + 0.05 * 1.313262
    assert loss.item() == pytest.approx(0.95 * 0.313262 + 0.05 * 1.313262, abs=1e-5)
