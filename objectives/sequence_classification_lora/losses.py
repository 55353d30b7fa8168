"""Losses for imbalanced classes: focal loss and class weights, with label smoothing.

One formula covers them all. With target distribution ``q = (1 - e) * onehot(y) + e / K``
(label smoothing ``e``), class weights ``w`` and focusing parameter ``gamma``, an example's
loss is ``sum_c w_c * q_c * (1 - p_c)**gamma * -log p_c``, and a batch's is the sum of its
examples' divided by ``sum_i w_{y_i}``. At ``gamma = 0`` this is exactly PyTorch's
``cross_entropy(weight=w, label_smoothing=e)``; focal loss (Lin et al., 2017) lowers the loss
of examples the model already gets right, so the rare and hard ones weigh more.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight


def balanced_weights(class_ids: list[int], n_classes: int) -> list[float]:
    """``n / (k * count_c)`` per class: each class weighs as much in total (scikit-learn's
    "balanced")."""
    return compute_class_weight("balanced", classes=np.arange(n_classes),
                                y=np.asarray(class_ids)).tolist()


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 0.0,
                        weight: torch.Tensor | None = None,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """The mean loss of a batch (see the module docstring)."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    classes = logits.shape[-1]
    target = F.one_hot(labels, classes).float() * (1 - label_smoothing) + label_smoothing / classes
    terms = -target * log_p
    if gamma:
        terms = terms * (1 - log_p.exp()).clamp(min=0) ** gamma
    if weight is None:
        return terms.sum() / labels.numel()
    weight = weight.to(terms.device, terms.dtype)
    return (terms * weight).sum() / weight[labels].sum()


class ClassificationLoss:
    """The Trainer's ``compute_loss_func``: ``classification_loss`` of the model's logits,
    scaled so that accumulated batches average over all their examples."""

    def __init__(self, gamma: float, weight: list[float] | None, label_smoothing: float) -> None:
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.weight = torch.tensor(weight) if weight is not None else None

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        loss = classification_loss(outputs["logits"], labels, self.gamma, self.weight,
                                   self.label_smoothing)
        if num_items_in_batch is None:  # evaluation: one batch at a time
            return loss
        return loss * labels.numel() / num_items_in_batch
