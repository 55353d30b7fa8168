"""Focal loss, class weights and label smoothing, pinned by values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from objectives.sequence_classification_lora.losses import (
    ClassificationLoss,
    balanced_weights,
    classification_loss,
)

# softmax([ln 3, 0, 0]) = [0.6, 0.2, 0.2]
LOGITS = torch.tensor([[math.log(3), 0.0, 0.0], [math.log(3), 0.0, 0.0]])
LABELS = torch.tensor([0, 1])


def test_focal_loss_by_hand():
    # -(1 - 0.6)^2 ln 0.6 = 0.0817321 and -(1 - 0.2)^2 ln 0.2 = 1.0300403, their mean:
    assert classification_loss(LOGITS, LABELS, gamma=2.0).item() == pytest.approx(0.5558862)


def test_weighted_focal_loss_by_hand():
    # Weights 1 and 2 on the two examples' classes: (0.0817321 + 2 * 1.0300403) / 3.
    weight = torch.tensor([1.0, 2.0, 1.0])
    loss = classification_loss(LOGITS, LABELS, gamma=2.0, weight=weight)
    assert loss.item() == pytest.approx(0.7139375)


def test_label_smoothing_by_hand():
    # Target [0.9 + 0.1/3, 0.1/3, 0.1/3] against [0.6, 0.2, 0.2].
    loss = classification_loss(LOGITS[:1], LABELS[:1], label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.5840664)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_without_focusing_it_is_pytorchs_cross_entropy(smoothing):
    torch.manual_seed(0)
    logits, labels = torch.randn(7, 4), torch.tensor([0, 1, 2, 3, 3, 1, 0])
    weight = torch.tensor([0.5, 1.0, 2.0, 4.0])
    ours = classification_loss(logits, labels, weight=weight, label_smoothing=smoothing)
    theirs = F.cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


def test_focusing_lowers_the_loss_of_confident_right_answers_most():
    confident = torch.tensor([[5.0, 0.0]])
    unsure = torch.tensor([[0.2, 0.0]])
    right = torch.tensor([0])
    ratio = [(classification_loss(x, right, gamma=2.0) / classification_loss(x, right)).item()
             for x in (confident, unsure)]
    assert ratio[0] < 1e-3 < 0.2 < ratio[1] < 1


def test_balanced_weights_by_hand():
    # 6 : 2 : 1 over 9 examples and 3 classes: 9 / (3 * count).
    ids = [0] * 6 + [1] * 2 + [2]
    assert balanced_weights(ids, 3) == pytest.approx([0.5, 1.5, 3.0])


def test_accumulated_batches_average_over_all_their_examples():
    loss = ClassificationLoss(gamma=0.0, weight=None, label_smoothing=0.0)
    outputs = {"logits": LOGITS}
    mean = classification_loss(LOGITS, LABELS).item()
    # Two batches of 2 accumulated: each contributes its share of the 4 examples.
    assert loss(outputs, LABELS, num_items_in_batch=4).item() == pytest.approx(mean / 2)
    assert loss(outputs, LABELS).item() == pytest.approx(mean)
