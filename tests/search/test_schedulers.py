"""Schedulers by name, and the protection of the baseline and of last evaluations, decided on
the same rung situations as Ray's own ASHA and median stopping rule decide them."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from search.errors import InputError
from search.schedulers import (
    ProtectedASHA,
    ProtectedMedian,
    ReproducibleASHA,
    build_scheduler,
    decision_steps,
)
from search.space import SearchSpace, load_space
from tests.conftest import DATA
from tests.fakes import register_fake

FAKE_SPACE = DATA / "spaces" / "fake.yaml"
STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE


@pytest.fixture(autouse=True)
def _fake_objective() -> None:
    register_fake()


def fake_space(tmp_path: Path, scheduler: dict[str, Any] | None = None,
               fake: dict[str, Any] | None = None, study: dict[str, Any] | None = None,
               ) -> SearchSpace:
    """The fake space with sections updated."""
    raw = yaml.safe_load(FAKE_SPACE.read_text())
    for section, changes in (("scheduler", scheduler), ("fake", fake), ("study", study)):
        raw[section].update(changes or {})
    path = tmp_path / "fake_variant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_space(str(path))


class FakeTrial:
    """What Ray's schedulers read of a Trial: its id and config (hashable, as Ray's is)."""

    def __init__(self, trial_id: str, baseline: bool = False) -> None:
        self.trial_id = trial_id
        self.config = {"trial_number": 0, "params": {}, "overrides": {}, "baseline": baseline}


# The median rule asks the controller for live trials when it lacks samples.
CONTROLLER = SimpleNamespace(get_live_trials=lambda: [])


def result(step: int, loss: float, **extra: Any) -> dict[str, Any]:
    return {"step": step, "eval_loss": loss, **extra}


def asha_rung(scheduler: TrialScheduler, trials: list[FakeTrial], step: int,
              losses: list[float]) -> list[str]:
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    return [scheduler.on_trial_result(None, t, result(step, loss))
            for t, loss in zip(trials, losses, strict=True)]


def plain_asha(**changes: Any) -> ASHAScheduler:
    """Ray's ASHA with the arguments build_scheduler gives the fake space."""
    arguments = {"time_attr": "step", "metric": "eval_loss", "mode": "min", "max_t": 31,
                 "grace_period": 10, "reduction_factor": 3, **changes}
    return ASHAScheduler(**arguments)


def test_asha_counts_in_steps_up_to_one_past_the_objectives_max_steps(tmp_path: Path) -> None:
    scheduler = build_scheduler(fake_space(tmp_path, fake={"max_steps": 50}))
    assert type(scheduler) is ProtectedASHA
    assert scheduler._time_attr == "step"
    assert (scheduler._metric, scheduler._mode) == ("eval_loss", "min")
    assert scheduler._max_t == 51  # max_steps 50: a full-length trial ends by itself
    assert scheduler._reduction_factor == 3
    assert [milestone for milestone, _ in scheduler._brackets[0]._rungs] == [30, 10]


def test_asha_max_t_from_the_space_overrides_the_objectives(tmp_path: Path) -> None:
    scheduler = build_scheduler(fake_space(tmp_path, scheduler={"max_t": 90}))
    assert scheduler._max_t == 91


def test_asha_follows_the_metrics_direction(tmp_path: Path) -> None:
    scheduler = build_scheduler(fake_space(tmp_path, study={"metric": "eval_accuracy"}))
    assert (scheduler._metric, scheduler._mode) == ("eval_accuracy", "max")


def test_asha_refuses_a_grace_period_not_below_max_t(tmp_path: Path) -> None:
    space = fake_space(tmp_path, scheduler={"grace_period": 30})
    with pytest.raises(InputError) as caught:
        build_scheduler(space)
    assert (caught.value.field, caught.value.problem) == (
        "scheduler.grace_period", "30 must be below max_t (30)")
    assert caught.value.source == str(space.source)
    with pytest.raises(InputError, match=r"scheduler\.grace_period: 40 must be below max_t "
                       r"\(20\)$"):
        build_scheduler(fake_space(tmp_path, scheduler={"grace_period": 40, "max_t": 20}))
    # One below is accepted.
    assert build_scheduler(fake_space(tmp_path, scheduler={"grace_period": 29}))._max_t == 31


def test_asha_without_a_step_budget_is_refused(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    space = fake_space(tmp_path)
    monkeypatch.setattr(space.objective, "max_steps", lambda config: None)
    with pytest.raises(InputError) as caught:
        build_scheduler(space)
    assert caught.value.field == "scheduler.max_t"


def test_median_and_none(tmp_path: Path) -> None:
    median = build_scheduler(fake_space(tmp_path, scheduler={"name": "median",
                                                             "grace_period": 20}))
    assert type(median) is ProtectedMedian
    assert (median._time_attr, median._metric, median._mode) == ("step", "eval_loss", "min")
    assert (median._grace_period, median._min_samples_required) == (20, 3)
    none = build_scheduler(fake_space(tmp_path, scheduler={"name": "none"}))
    assert type(none) is FIFOScheduler


def test_plain_asha_stops_the_worst_trial_at_a_rung_and_protected_asha_agrees(
        tmp_path: Path) -> None:
    # The situation: three trials at the first rung, each better than the last, then a bad one.
    losses = [1.2, 1.1, 1.0, 5.0]
    plain = asha_rung(plain_asha(), [FakeTrial(f"t{i}") for i in range(4)], 10, losses)
    assert plain == [CONTINUE, CONTINUE, CONTINUE, STOP]
    protected = build_scheduler(fake_space(tmp_path))
    decisions = asha_rung(protected, [FakeTrial(f"t{i}") for i in range(4)], 10, losses)
    assert decisions == plain


def test_asha_never_stops_the_baseline(tmp_path: Path) -> None:
    losses = [1.2, 1.1, 1.0, 5.0]
    trials = [*(FakeTrial(f"t{i}") for i in range(3)), FakeTrial("base", baseline=True)]
    assert asha_rung(plain_asha(), trials, 10, losses)[-1] == STOP
    protected = build_scheduler(fake_space(tmp_path))
    trials = [*(FakeTrial(f"t{i}") for i in range(3)), FakeTrial("base", baseline=True)]
    assert asha_rung(protected, trials, 10, losses) == [CONTINUE] * 4
    # The baseline's result is still recorded: a later trial as bad as it is compared with it
    # (and stopped), and the baseline goes on to its next rung.
    assert trials[-1].trial_id in protected._brackets[0]._rungs[-1][1]
    late = FakeTrial("late")
    protected.on_trial_add(None, late)
    assert protected.on_trial_result(None, late, result(10, 5.5)) == STOP
    assert protected.on_trial_result(None, trials[-1], result(20, 5.0)) == CONTINUE


def test_asha_never_stops_a_trial_at_its_last_evaluation(tmp_path: Path) -> None:
    # Three good trials reach the last rung (step 30); a worse one reports its last evaluation.
    def run(scheduler: TrialScheduler) -> str:
        trials = [FakeTrial(f"t{i}") for i in range(4)]
        asha_rung(scheduler, trials, 10, [1.0, 1.0, 1.0, 1.0])
        for trial in trials[:3]:
            assert scheduler.on_trial_result(None, trial, result(30, 0.5)) == CONTINUE
        return scheduler.on_trial_result(None, trials[3],
                                         result(30, 0.9, last_evaluation=True))

    assert run(plain_asha()) == STOP
    assert run(build_scheduler(fake_space(tmp_path))) == CONTINUE
    # Without the flag the same report is stopped, protected or not.
    protected = build_scheduler(fake_space(tmp_path))
    trials = [FakeTrial(f"t{i}") for i in range(4)]
    asha_rung(protected, trials, 10, [1.0, 1.0, 1.0, 1.0])
    for trial in trials[:3]:
        protected.on_trial_result(None, trial, result(30, 0.5))
    assert protected.on_trial_result(None, trials[3], result(30, 0.9)) == STOP


def test_a_full_length_trial_is_not_stopped_for_reaching_max_steps(tmp_path: Path) -> None:
    # Ray's ASHA stops any trial whose step reaches max_t, however good; the built one runs
    # a trial of max_steps to its end, so that its final report follows.
    best = FakeTrial("best")
    plain = plain_asha(max_t=30)
    plain.on_trial_add(None, best)
    assert plain.on_trial_result(None, best, result(30, 0.1)) == STOP
    protected = build_scheduler(fake_space(tmp_path))
    protected.on_trial_add(None, best)
    assert protected.on_trial_result(None, best, result(30, 0.1)) == CONTINUE
    assert protected.on_trial_result(
        None, best, result(30, 0.1, outcome="complete", test_loss=0.1)) == CONTINUE


def median_situation(scheduler: TrialScheduler, subject: FakeTrial, **flags: Any) -> str:
    """Three trials at loss 1.0 up to step 30, then ``subject`` at 5.0 at step 10."""
    others = [FakeTrial(f"o{i}") for i in range(3)]
    for trial in [*others, subject]:
        scheduler.on_trial_add(CONTROLLER, trial)
    for trial in others:
        for step in (10, 20, 30):
            assert scheduler.on_trial_result(CONTROLLER, trial, result(step, 1.0)) == CONTINUE
    return scheduler.on_trial_result(CONTROLLER, subject, result(10, 5.0, **flags))


def plain_median() -> MedianStoppingRule:
    return MedianStoppingRule(time_attr="step", metric="eval_loss", mode="min",
                              grace_period=10, min_samples_required=3)


def median_space(tmp_path: Path) -> SearchSpace:
    return fake_space(tmp_path, scheduler={"name": "median", "grace_period": 10})


def test_median_rule_never_stops_the_baseline_or_a_last_evaluation(tmp_path: Path) -> None:
    assert median_situation(plain_median(), FakeTrial("worst")) == STOP
    assert median_situation(plain_median(), FakeTrial("base", baseline=True)) == STOP
    assert median_situation(build_scheduler(median_space(tmp_path)), FakeTrial("worst")) == STOP
    assert median_situation(build_scheduler(median_space(tmp_path)),
                            FakeTrial("base", baseline=True)) == CONTINUE
    assert median_situation(build_scheduler(median_space(tmp_path)), FakeTrial("last"),
                            last_evaluation=True) == CONTINUE


class SchedulerCrashed(Exception):
    """Ray's scheduler raised on a result (as opposed to an expectation of this test)."""


@pytest.mark.parametrize("flags", [{"baseline": True}, {"last_evaluation": True}],
                         ids=["baseline", "last_evaluation"])
def test_a_protected_trial_reports_again_after_the_median_rule_would_have_stopped_it(
        tmp_path: Path, flags: dict[str, bool]) -> None:
    protected = build_scheduler(median_space(tmp_path))
    subject = FakeTrial("subject", baseline=flags.get("baseline", False))
    last = {"last_evaluation": True} if flags.get("last_evaluation") else {}
    assert median_situation(protected, subject, **last) == CONTINUE
    # The baseline evaluates again at step 20; a last evaluation is followed by the final
    # report (and by Ray's duplicate of it when the function returns).
    following = result(10, 5.0, outcome="complete") if last else result(20, 5.0)
    try:
        decision = protected.on_trial_result(CONTROLLER, subject, following)
    except AssertionError as error:
        raise SchedulerCrashed(repr(error)) from error
    assert decision == CONTINUE


class OrderedTrial(FakeTrial):
    """A trial of a reproducible search: its config holds its place in the order asked."""

    def __init__(self, trial_id: str, order: int) -> None:
        super().__init__(trial_id)
        self.config = {**self.config, "order": order}


def test_a_reproducible_search_gets_asha_that_compares_with_settled_trials_only(
        tmp_path: Path) -> None:
    scheduler = build_scheduler(fake_space(tmp_path, study={"reproducible": True,
                                                           "max_concurrent_trials": 2}))
    assert type(scheduler) is ReproducibleASHA
    assert [milestone for milestone, _ in scheduler._brackets[0]._rungs] == [30, 10]
    # The first two run together: neither is compared with the other, whichever is first.
    first, second = OrderedTrial("a", 0), OrderedTrial("b", 1)
    assert asha_rung(scheduler, [first, second], 10, [1.0, 9.0]) == [CONTINUE, CONTINUE]
    # The third started once the first had ended, so is compared with it alone: its loss
    # 0.5 is better. The fourth is compared with the first two (a loss above the better
    # third, 9 - (9 - 1) * 2/3 = 3.67, stops), not with the third, which ran beside it.
    third, fourth = OrderedTrial("c", 2), OrderedTrial("d", 3)
    assert asha_rung(scheduler, [third, fourth], 10, [0.5, 3.0]) == [CONTINUE, CONTINUE]
    fifth = OrderedTrial("e", 4)  # compared with the first three: 3.0 is now too high
    assert asha_rung(scheduler, [fifth], 10, [3.0]) == [STOP]
    # Plain ASHA compares with whatever reported first: the second, the fourth stop.
    plain = plain_asha()
    trials = [FakeTrial(name) for name in "abcd"]
    assert asha_rung(plain, trials, 10, [1.0, 9.0, 0.5, 3.0]) == [CONTINUE, STOP, CONTINUE,
                                                                  STOP]


def test_the_median_rule_is_refused_in_a_reproducible_search(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        build_scheduler(fake_space(tmp_path, scheduler={"name": "median"},
                                   study={"reproducible": True}))
    assert caught.value.field == "scheduler.name"


def test_decision_steps_are_ashas_rungs(tmp_path: Path) -> None:
    space = fake_space(tmp_path, fake={"max_steps": 50})
    assert decision_steps(space) == (10.0, 30.0)
    assert [m for m, _ in build_scheduler(space)._brackets[0]._rungs] == [30, 10]
    assert decision_steps(fake_space(tmp_path, scheduler={"grace_period": 20,
                                                          "reduction_factor": 2},
                                     fake={"max_steps": 80})) == (20.0, 40.0, 80.0)
    assert decision_steps(fake_space(tmp_path, scheduler={"name": "median"})) == ()
    assert decision_steps(fake_space(tmp_path, scheduler={"name": "none"})) == ()


def test_asha_decides_like_rays_on_the_values_that_are_numbers_and_warns_of_no_nan(
        tmp_path: Path) -> None:
    """A NaN at a rung (a diverged metric) counts as no value: every trial NaN decides
    nothing, and Ray's "All-NaN slice encountered" never reaches stderr."""
    nan = float("nan")
    ours = build_scheduler(fake_space(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert asha_rung(ours, [FakeTrial(f"t{i}") for i in range(3)], 10,
                         [nan, nan, nan]) == [CONTINUE] * 3
        # Numbers after them are compared as if the NaNs were not there, as Ray's rule does
        # (each trial against those at the rung before it): 1.0 continues, 2.0 and 5.0 are
        # not in the best third and stop.
        assert asha_rung(ours, [FakeTrial(f"u{i}") for i in range(3)], 10,
                         [1.0, 2.0, 5.0]) == [CONTINUE, STOP, STOP]
    with pytest.warns(RuntimeWarning, match="All-NaN"):
        rays = asha_rung(plain_asha(), [FakeTrial(f"v{i}") for i in range(6)], 10,
                         [nan, nan, nan, 1.0, 2.0, 5.0])
    assert rays == [CONTINUE] * 3 + [CONTINUE, STOP, STOP]
