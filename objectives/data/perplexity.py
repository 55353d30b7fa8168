"""Perplexity of texts under a causal language model, batched, for the noise filter."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer


@torch.no_grad()
def perplexities(model_path: str, texts: list[str], batch_size: int = 16,
                 max_length: int = 512) -> list[float]:
    """exp(mean next-token loss) of each text (its first ``max_length`` tokens)."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "right"  # positions count from each text's first token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                          truncation=True, max_length=max_length)
        logits = model(**batch).logits[:, :-1].float()
        targets, mask = batch["input_ids"][:, 1:], batch["attention_mask"][:, 1:].float()
        loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none") * mask
        mean = loss.sum(1) / mask.sum(1).clamp(min=1)
        scores += torch.exp(mean.clamp(max=50)).tolist()
    return scores
