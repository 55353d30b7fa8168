"""A tiny random BERT classifier and batches for it: the distillation tests' teacher."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification

HEAD = 8  # hidden 32 over 4 heads


def tiny_bert(layers: int = 3) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=64, num_labels=3,
                        max_position_embeddings=40)
    return BertForSequenceClassification(config).eval()


def batches() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(3, 120, (8, 12), generator=generator),
             "attention_mask": torch.ones(8, 12, dtype=torch.long),
             "labels": torch.randint(0, 3, (8,), generator=generator)} for _ in range(3)]
