"""The distillation loss (Hinton, Vinyals and Dean, 2015):

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * cross_entropy(student, labels)

averaged over the batch. T softens both distributions, so the student also learns how the
teacher ranks the wrong classes; the T^2 keeps the KL term's gradients at the scale of the
cross-entropy's whatever T is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """``student`` and ``teacher``: logits (batch, classes); ``labels``: class ids."""
    soft = F.kl_div(F.log_softmax(student / temperature, dim=-1),
                    F.log_softmax(teacher / temperature, dim=-1),
                    reduction="batchmean", log_target=True)
    task = F.cross_entropy(student, labels, label_smoothing=label_smoothing)
    return alpha * temperature ** 2 * soft + (1 - alpha) * task
