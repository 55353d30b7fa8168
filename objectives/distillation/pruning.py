"""Structured pruning of a BERT-family student: the least important attention heads and FFN
neurons of every layer removed, the same share in each layer.

Importance is the first-order Taylor estimate of how much the task loss changes when a head
or neuron is taken out: |sum over its output of activation x gradient|, per example, summed
over a few training batches (Molchanov et al., 2019). For a head this equals the gradient of
the loss with respect to a mask on the head's output, the score Michel et al. (2019) prune
by; transformers no longer has head masks or ``prune_heads``, so the hooks here read the
activations themselves.

A pruned model keeps the heads it has left in its config (``kept_heads``: per layer, the
teacher's head numbers); ``load`` rebuilds that shape before reading the weights, so a
pruned student reloads (as a teacher, for export) exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel

KEPT_HEADS = "kept_heads"


def encoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The transformer layers of a BERT-family model (BERT, RoBERTa, MiniLM, ...)."""
    return model.base_model.encoder.layer


def head_size(model: PreTrainedModel) -> int:
    return encoder_layers(model)[0].attention.self.attention_head_size


def importance(model: PreTrainedModel, batches: Iterable[dict[str, torch.Tensor]]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of each layer's heads (layers x heads) and FFN neurons (layers x width), from
    batches with labels; the model's weights and mode are left as they were."""
    layers = encoder_layers(model)
    size = head_size(model)
    heads = layers[0].attention.self.num_attention_heads
    width = layers[0].intermediate.dense.out_features
    scores = {"heads": torch.zeros(len(layers), heads), "ffn": torch.zeros(len(layers), width)}
    seen: dict[tuple[str, int], torch.Tensor] = {}

    def keep(kind: str, index: int):
        def hook(module, args):
            args[0].retain_grad()
            seen[kind, index] = args[0]
        return hook

    handles = [module.register_forward_pre_hook(keep(kind, i))
               for i, layer in enumerate(layers)
               for kind, module in (("heads", layer.attention.output.dense),
                                    ("ffn", layer.output.dense))]
    was_training, wanted = model.training, [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(True)
    try:
        for batch in batches:
            model(**batch).loss.backward()
            for (kind, index), value in seen.items():
                taylor = (value * value.grad).sum(dim=1)  # per example: batch x features
                if kind == "heads":
                    taylor = taylor.view(len(taylor), heads, size).sum(-1)
                scores[kind][index] += taylor.abs().sum(0).detach()
            model.zero_grad(set_to_none=True)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        for parameter, grad in zip(model.parameters(), wanted, strict=True):
            parameter.requires_grad_(grad)
    return scores["heads"], scores["ffn"]


def _slice(linear: torch.nn.Linear, index: torch.Tensor, dim: int) -> torch.nn.Linear:
    """``linear`` keeping only the output (dim 0) or input (dim 1) features in ``index``."""
    weight = linear.weight.index_select(dim, index).detach().clone()
    bias = linear.bias.detach().clone() if linear.bias is not None else None
    if dim == 0 and bias is not None:
        bias = bias[index]
    new = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                          dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def restructure(model: PreTrainedModel, kept_heads: list[list[int]],
                kept_neurons: list[list[int]] | None = None) -> None:
    """Keep, in layer i, the heads ``kept_heads[i]`` (numbers in the model as it is) and the
    FFN neurons ``kept_neurons[i]`` (default: the first ``config.intermediate_size``)."""
    size = head_size(model)
    for i, layer in enumerate(encoder_layers(model)):
        attention = layer.attention.self
        columns = torch.cat([torch.arange(h * size, (h + 1) * size) for h in kept_heads[i]])
        for name in ("query", "key", "value"):
            setattr(attention, name, _slice(getattr(attention, name), columns, 0))
        attention.num_attention_heads = len(kept_heads[i])
        attention.all_head_size = len(kept_heads[i]) * size
        layer.attention.output.dense = _slice(layer.attention.output.dense, columns, 1)
        neurons = torch.tensor(kept_neurons[i] if kept_neurons else
                               range(model.config.intermediate_size))
        layer.intermediate.dense = _slice(layer.intermediate.dense, neurons, 0)
        layer.output.dense = _slice(layer.output.dense, neurons, 1)


def prune(model: PreTrainedModel, ratio: float, head_scores: torch.Tensor,
          neuron_scores: torch.Tensor) -> None:
    """Remove the ``ratio`` least important heads and FFN neurons of every layer (at least one
    head and one neuron stay), in place; the config records what is left."""
    heads, width = head_scores.shape[1], neuron_scores.shape[1]
    keep_heads = max(1, round(heads * (1 - ratio)))
    keep_neurons = max(1, round(width * (1 - ratio)))
    before = model.config.to_dict().get(KEPT_HEADS) or [list(range(heads))] * len(head_scores)
    kept = [sorted(scores.topk(keep_heads).indices.tolist()) for scores in head_scores]
    neurons = [sorted(scores.topk(keep_neurons).indices.tolist()) for scores in neuron_scores]
    restructure(model, kept, neurons)
    model.config.intermediate_size = keep_neurons
    setattr(model.config, KEPT_HEADS, [[before[i][h] for h in heads_i]
                                       for i, heads_i in enumerate(kept)])


def load(folder: Path) -> PreTrainedModel:
    """A saved model folder, pruned or not."""
    config = AutoConfig.from_pretrained(folder)
    kept = getattr(config, KEPT_HEADS, None)
    if not kept:
        return AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
    model = AutoModelForSequenceClassification.from_config(config)
    restructure(model, [list(range(len(heads))) for heads in kept])
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.float()
