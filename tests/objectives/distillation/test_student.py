"""The student: sizes checked against the teacher's, layers spread over its depth, weights
copied (and sliced) from it."""

from __future__ import annotations

import pytest
import torch
from transformers import BertForSequenceClassification

from objectives.base import DataError
from objectives.distillation.config import StudentSection
from objectives.distillation.student import build, layer_map, student_config, teacher_name
from tests.objectives.distillation.tiny import tiny_bert


@pytest.fixture(scope="module")
def teacher() -> BertForSequenceClassification:
    return tiny_bert(layers=6)


@pytest.mark.parametrize(("layers", "expected"), [(1, [5]), (2, [2, 5]), (3, [1, 3, 5]),
                                                  (4, [1, 2, 4, 5]), (6, [0, 1, 2, 3, 4, 5])])
def test_layers_spread_over_the_teacher_and_end_on_its_last(layers, expected):
    assert layer_map(6, layers) == expected


def test_parameter_names_map_to_the_teachers_layers():
    assert teacher_name("bert.encoder.layer.1.attention.self.query.weight", [2, 5]) == \
        "bert.encoder.layer.5.attention.self.query.weight"
    assert teacher_name("classifier.weight", [2, 5]) == "classifier.weight"


def test_a_student_of_two_layers_is_the_teachers_layers_two_and_five(teacher):
    student = build(teacher, StudentSection(num_hidden_layers=2))
    assert student.config.num_hidden_layers == 2
    assert sum(p.numel() for p in student.parameters()) < \
        sum(p.numel() for p in teacher.parameters())
    theirs = teacher.state_dict()
    for name, tensor in student.state_dict().items():
        assert torch.equal(tensor, theirs[teacher_name(name, [2, 5])]), name
    assert torch.equal(student.bert.encoder.layer[1].output.dense.weight,
                       teacher.bert.encoder.layer[5].output.dense.weight)


def test_narrower_weights_are_the_leading_slice_of_the_teachers(teacher):
    student = build(teacher, StudentSection(num_hidden_layers=1, intermediate_size=16,
                                            hidden_size=16, num_attention_heads=2))
    assert (student.config.hidden_size, student.config.intermediate_size) == (16, 16)
    ffn_in = teacher.bert.encoder.layer[5].intermediate.dense.weight
    assert torch.equal(student.bert.encoder.layer[0].intermediate.dense.weight,
                       ffn_in[:16, :16])
    assert torch.equal(student.bert.embeddings.word_embeddings.weight,
                       teacher.bert.embeddings.word_embeddings.weight[:, :16])
    with torch.no_grad():
        logits = student(input_ids=torch.tensor([[1, 5, 7, 2]])).logits
    assert logits.shape == (1, 3)


@pytest.mark.parametrize(("sizes", "field", "problem"), [
    ({"num_attention_heads": 3}, "student.num_attention_heads",
     "3 heads do not divide the hidden size 32"),
    ({"num_hidden_layers": 8}, "student.num_hidden_layers",
     "8 is more than the teacher's 6: a student is smaller"),
    ({"intermediate_size": 128}, "student.intermediate_size",
     "128 is more than the teacher's 64: a student is smaller"),
])
def test_sizes_that_cannot_work_name_their_field(teacher, sizes, field, problem):
    with pytest.raises(DataError) as caught:
        student_config(teacher.config, StudentSection(**sizes))
    assert (caught.value.field, caught.value.problem) == (field, problem)
