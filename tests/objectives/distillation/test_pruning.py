"""Structured pruning: importance by activation x gradient, the least important heads and FFN
neurons removed, and a pruned model that saves and reloads to the same logits."""

from __future__ import annotations

import pytest
import torch

from objectives.base import DataError
from objectives.distillation import pruning
from objectives.distillation.config import StudentSection
from objectives.distillation.student import build, student_config
from tests.objectives.distillation.tiny import HEAD, batches, tiny_bert


def test_a_head_and_neurons_that_add_nothing_score_zero_and_go_first():
    model = tiny_bert()
    with torch.no_grad():  # layer 1: head 2 and FFN neurons 0-9 no longer reach the output
        model.bert.encoder.layer[1].attention.output.dense.weight[:, 2 * HEAD:3 * HEAD] = 0
        model.bert.encoder.layer[1].output.dense.weight[:, :10] = 0
    heads, neurons = pruning.importance(model, batches())
    assert heads.shape == (3, 4) and neurons.shape == (3, 64)
    assert heads[1, 2] == 0 and (heads[1, [0, 1, 3]] > 0).all()
    assert (neurons[1, :10] == 0).all() and (neurons[1, 10:] > 0).all()
    assert not model.training and all(p.grad is None for p in model.parameters())
    pruning.prune(model, 0.25, heads, neurons)
    assert model.config.kept_heads[1] == [0, 1, 3]
    assert model.config.intermediate_size == 48
    assert model.bert.encoder.layer[1].attention.self.query.out_features == 3 * HEAD
    assert model.bert.encoder.layer[1].output.dense.in_features == 48


def test_pruned_weights_are_the_kept_slices_and_the_model_still_runs():
    model = tiny_bert()
    query = model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    heads = torch.tensor([[4.0, 1.0, 3.0, 2.0]] * 3)  # keep heads 0 and 2 everywhere
    neurons = torch.arange(64, dtype=torch.float).repeat(3, 1)  # keep the last 32
    pruning.prune(model, 0.5, heads, neurons)
    kept = model.bert.encoder.layer[0].attention.self.query.weight
    assert torch.equal(kept, torch.cat([query[0:HEAD], query[2 * HEAD:3 * HEAD]]))
    assert model.config.kept_heads == [[0, 2]] * 3
    with torch.no_grad():
        assert model(**{k: v for k, v in batches()[0].items()}).logits.shape == (8, 3)


def test_a_pruned_model_saves_and_reloads_to_the_same_logits(tmp_path):
    model = tiny_bert()
    pruning.prune(model, 0.5, *pruning.importance(model, batches()))
    model.save_pretrained(tmp_path)
    again = pruning.load(tmp_path).eval()
    inputs = {k: v for k, v in batches()[0].items() if k != "labels"}
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, again(**inputs).logits)
    assert again.num_parameters() == model.num_parameters() < tiny_bert().num_parameters()


def test_a_pruned_student_of_fewer_layers_and_one_of_a_pruned_teacher():
    teacher = tiny_bert()
    student = build(teacher, StudentSection(num_hidden_layers=2, prune_ratio=0.5), batches)
    assert len(student.config.kept_heads) == 2
    assert all(len(heads) == 2 for heads in student.config.kept_heads)
    grandchild = build(student, StudentSection(num_hidden_layers=1))
    assert grandchild.config.kept_heads == [student.config.kept_heads[1]]
    with torch.no_grad():
        grandchild(input_ids=torch.tensor([[5, 6, 7]]))


def test_pruning_leaves_the_sizes_it_chooses_to_the_teacher():
    with pytest.raises(DataError) as caught:
        student_config(tiny_bert().config, StudentSection(prune_ratio=0.5,
                                                          intermediate_size=32))
    assert (caught.value.field, caught.value.problem) == (
        "student.prune_ratio", "pruning chooses the heads and FFN neurons to keep; leave "
        "intermediate_size at the teacher's (64)")
