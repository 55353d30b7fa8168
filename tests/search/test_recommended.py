"""The objective's recommended setting runs right after the untuned default: each searched
parameter it names at the nearest value the space holds, the others untuned; never the
untuned configuration again, never with the grid sampler, and not when switched off."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from objectives.base import CENTRE
from search.history import RECOMMENDED
from search.recommended import queue_recommended, recommended_params
from search.schedulers import BASELINE
from search.space import SearchSpace, load_space
from tests.conftest import DATA
from tests.fakes import FakeObjective, register_fake

FAKE = DATA / "spaces" / "fake.yaml"


@pytest.fixture(autouse=True)
def _fake() -> None:
    register_fake()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def fake_space(tmp_path: Path, sampler: str = "random", **study) -> SearchSpace:
    raw = yaml.safe_load(FAKE.read_text())
    raw["study"].update(study)
    raw["sampler"]["name"] = sampler
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_space(str(path))


def waiting(space: SearchSpace) -> tuple[list[FrozenTrial], list[str]]:
    study = optuna.create_study()
    study.enqueue_trial(space.baseline_params(), user_attrs={BASELINE: True})
    lines = queue_recommended(study, space)
    trials = study.get_trials(states=(TrialState.WAITING,))
    assert len(lines) == len(trials) - 1
    return trials, lines


def test_the_default_space_recommends_rank_16_alpha_32_and_the_middle_learning_rate():
    space = load_space("lora.yaml", objective_checks=False)
    assert recommended_params(space) == {
        "training.learning_rate": pytest.approx((1e-4 * 3e-2) ** 0.5),  # the range's middle
        "training.per_device_train_batch_size": 8,  # the untuned values
        "training.gradient_accumulation_steps": 1,
        "lora.r": 16,
        "lora.lora_alpha": 32,
        "model.config_overrides.num_attention_heads": 4,
    }


def test_the_recommended_setting_is_queued_after_the_untuned_default(tmp_path, monkeypatch):
    monkeypatch.setattr(FakeObjective, "recommended", {"fake.learning_rate": 0.5})
    trials, lines = waiting(fake_space(tmp_path))
    assert [t.system_attrs["fixed_params"] for t in trials] == [
        {"fake.learning_rate": 0.01}, {"fake.learning_rate": 0.1}]  # 0.5, within the range
    assert trials[0].user_attrs == {BASELINE: True}
    assert trials[1].user_attrs == {RECOMMENDED: True}
    assert lines == ["queued after the untuned default: the recommended setting "
                     "(fake.learning_rate=0.1; study.recommended)"]


def test_nothing_is_queued_that_is_untuned_unsearched_switched_off_or_on_a_grid(
        tmp_path, monkeypatch):
    # The middle of 0.001 to 0.1 on the log scale is the untuned 0.01.
    monkeypatch.setattr(FakeObjective, "recommended", {"fake.learning_rate": CENTRE})
    assert len(waiting(fake_space(tmp_path))[0]) == 1
    monkeypatch.setattr(FakeObjective, "recommended", {"fake.batch_size": 4})
    assert recommended_params(fake_space(tmp_path)) is None  # not searched
    monkeypatch.setattr(FakeObjective, "recommended", {"fake.learning_rate": 0.5})
    assert len(waiting(fake_space(tmp_path, recommended=False))[0]) == 1
    grid = fake_space(tmp_path, sampler="grid")
    assert recommended_params(grid) == {"fake.learning_rate": 0.1}
    assert len(waiting(grid)[0]) == 1
