"""Distillation end to end: a MiniLM teacher searched first (real weights, real Ray), then a
two-objective search of students built from it, quality against latency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

import launcher
from objectives.distillation import teacher as teachers
from objectives.distillation.config import StudentSection
from objectives.distillation.student import build, teacher_name
from search.report import render
from search.space import load_space
from tests.conftest import DATA, REPO, load, quiet_main

TEACHER_SPACE = DATA / "spaces" / "classify_tiny.yaml"
SPACE = DATA / "spaces" / "distill_tiny.yaml"


@pytest.fixture(scope="module")
def searched(tmp_path_factory, local_ray):
    studies = tmp_path_factory.mktemp("distill") / "studies"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTSEARCH_STUDIES", str(studies))
        # The grid's third point (learning rate 5e-3) is a good teacher; it is the best.
        teacher = quiet_main(["--space", str(TEACHER_SPACE), "--study", "cls_teacher",
                              "--trials", "3", "--quiet"])
        assert teacher[0] == 0, teacher
        code, out, err = quiet_main(["--space", str(SPACE), "--quiet"])
    return code, out, err, studies


def test_every_student_is_smaller_than_its_teacher_and_reports_what_it_keeps(searched):
    code, _, err, studies = searched
    assert code == 0 and err == ""
    teacher = load(studies, "cls_teacher").best_trial
    study = load(studies, "distill_tiny")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    teacher_f1 = teacher.user_attrs["test_macro_f1"]
    for trial in study.trials:
        attrs = trial.user_attrs
        assert attrs["teacher"] == str(studies / "cls_teacher" / "trials" /
                                       f"{teacher.number:04d}")
        assert attrs["teacher_test_macro_f1"] == pytest.approx(teacher_f1, abs=1e-9)
        assert attrs["test_quality_retained"] == pytest.approx(
            attrs["test_macro_f1"] / teacher_f1)
        assert attrs["num_hidden_layers"] == trial.params["student.num_hidden_layers"]
        assert attrs["student_layers_from"] == {2: [2, 5], 1: [5]}[attrs["num_hidden_layers"]]
        assert 0 < attrs["total_params"] < 22.7e6 and attrs["trainable_params"] == \
            attrs["total_params"]
        assert attrs["size_ratio"] == pytest.approx(
            attrs["total_params"] / teacher.user_attrs["total_params"])
        assert attrs["speedup"] > 1  # at most 2 of the teacher's 6 layers
        macro_f1, latency = trial.values
        assert macro_f1 == pytest.approx(max(trial.intermediate_values.values()))
        assert latency > 0
    size = {(t.params["student.num_hidden_layers"], t.params["student.prune_ratio"]):
            t.user_attrs["total_params"] for t in study.trials}
    assert size[1, 0.5] < size[1, 0.0] < size[2, 0.0] and size[2, 0.5] < size[2, 0.0]


def test_pruned_students_keep_half_the_heads_and_reload(searched):
    _, _, _, studies = searched
    for trial in load(studies, "distill_tiny").trials:
        if trial.params["student.prune_ratio"]:
            folder = studies / "distill_tiny" / "trials" / f"{trial.number:04d}" / "model"
            model = teachers.load(folder)
            assert [len(h) for h in model.config.kept_heads] == \
                [6] * trial.params["student.num_hidden_layers"]
            assert model.config.intermediate_size == 768
            assert model.num_parameters() == trial.user_attrs["total_params"]


def test_the_teacher_ran_once_and_its_logits_are_cached(searched):
    _, _, _, studies = searched
    cached = list((studies / "distill_tiny" / "prepared").rglob(teachers.TEACHER_LOGITS))
    assert len(cached) == 1
    info = json.loads((cached[0].parent / teachers.TEACHER).read_text())
    assert info["labels"] == ["negative", "neutral", "positive"]
    assert info["test_macro_f1"] == pytest.approx(
        load(studies, "cls_teacher").best_trial.user_attrs["test_macro_f1"], abs=1e-6)


def test_the_summary_and_report_show_the_front_with_quality_kept(searched):
    _, out, _, studies = searched
    study = load(studies, "distill_tiny")
    front = sorted(t.number for t in study.best_trials)
    assert len(front) >= 1
    assert f"Pareto front of {len(front)} trials (eval_macro_f1 higher, latency_ms lower " \
        "is better" in out
    for number in front:
        assert f"  trial {number} (front" in out
        assert (studies / "distill_tiny" / "best" / f"trial_{number}" /
                "model.safetensors").is_file()
    assert "test_quality_retained" in out and "total_params" in out and "speedup" in out
    page = render(study, f"sqlite:///{studies / 'distill_tiny' / 'optuna.db'}")
    assert 'id="pareto"' in page and "latency_ms" in page


def test_a_student_of_the_real_minilm_teacher_starts_from_its_layers(searched):
    _, _, _, studies = searched
    folder = studies / "cls_teacher" / "trials" / \
        f"{load(studies, 'cls_teacher').best_trial.number:04d}"
    teacher = teachers.load(folder)
    student = build(teacher, StudentSection(num_hidden_layers=2))
    theirs = teacher.state_dict()
    for name, tensor in student.state_dict().items():
        assert torch.equal(tensor, theirs[teacher_name(name, [2, 5])]), name
    assert student.num_parameters() < teacher.num_parameters()


def test_the_shipped_distill_space_validates_once_its_teacher_study_exists(
        searched, tmp_path: Path, monkeypatch):
    _, _, _, studies = searched
    monkeypatch.setenv("FTSEARCH_STUDIES", str(studies))
    text = (REPO / "spaces" / "distill.yaml").read_text()
    assert "  model: classify " in text and "path: ../data/" in text
    copy = tmp_path / "distill.yaml"
    copy.write_text(text.replace("  model: classify ", "  model: cls_teacher ")
                    .replace("path: ../data/", f"path: {REPO / 'data'}/"))
    space = load_space(str(copy))
    best = load(studies, "cls_teacher").best_trial.number
    assert space.defaults.teacher.model == str(studies / "cls_teacher" / "trials" /
                                               f"{best:04d}")
    assert space.head.study.metrics == ["eval_macro_f1", "latency_ms"]
    space.trial_config(space.baseline_params())


def test_heads_that_do_not_divide_the_hidden_size_are_refused_before_any_trial(
        searched, tmp_path: Path, monkeypatch, capsys):
    _, _, _, studies = searched
    monkeypatch.setenv("FTSEARCH_STUDIES", str(studies))
    space = tmp_path / "heads.yaml"
    space.write_text(SPACE.read_text().replace("../../../data", str(DATA.parent.parent / "data"))
                     + "  student.num_attention_heads: {type: categorical, choices: [12, 5]}\n")
    assert launcher.main(["--space", str(space), "--study", "heads"]) == 2
    assert capsys.readouterr().err == (
        f"error: {space}: search.student.num_attention_heads: value 5: 5 heads do not divide "
        "the hidden size 384\n")
    assert not (studies / "heads").exists()


def test_a_front_trial_exports_as_a_student_that_predicts_as_in_its_trial(
        searched, tmp_path: Path, monkeypatch, capsys):
    _, _, _, studies = searched
    monkeypatch.setenv("FTSEARCH_STUDIES", str(studies))
    study = load(studies, "distill_tiny")
    pruned = next(t for t in study.trials if t.params["student.prune_ratio"])
    out = tmp_path / "student"
    assert launcher.main(["export", "distill_tiny", "--trial", str(pruned.number),
                          "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"exported the student of trial {pruned.number} of study "
                        f"'distill_tiny' to {out}")
    assert "objectives.distillation.pruning.load" in lines[1]
    assert json.loads((out / "export.json").read_text())["trial"] == pruned.number
    assert teachers.load(out).num_parameters() == pruned.user_attrs["total_params"]
