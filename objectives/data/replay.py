"""An update's training data mixed with the earlier training data (``data.replay``), so the
model does not forget, and the earlier held-out splits kept as a second evaluation.

The earlier data is a data file (split with this section's fractions and seed) or a trial
folder (the search puts an earlier study's best trial there for ``replay.path: STUDY``), whose
own data section is read back: its training, validation and test splits are then exactly
the ones that study had. Old training examples whose text is one of the new validation or
test examples are left out, so nothing held out is trained on.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from objectives.base import DataError, Metric
from objectives.data.files import HELD_OUT
from objectives.data.pipeline import Built, Example
from objectives.data.section import DataFiles
from objectives.sections import Section

OLD = "old_"  # the earlier held-out splits: old_validation, old_test (reported old_eval_*)
# The evaluation prefix of each held-out split, as the Trainer's metric_key_prefix.
SPLITS = {"eval": "validation", "test": "test", "old_eval": "old_validation",
          "old_test": "old_test"}


class ReplaySection(Section):
    path: str = Field(description="The earlier training data: a data file, or a study (its "
                      "best trial's data), STUDY:TRIAL or a trial folder.")
    fraction: float = Field(0.85, gt=0, lt=1, description="Share of the mixed training split "
                            "that is earlier examples (0.85: an update of 15 % new data), at "
                            "most all of them.")


class Replayable(Section):
    """A data section that can mix in earlier data (an objective's DataSection adds it)."""

    replay: ReplaySection | None = Field(
        None, description="An update: earlier training data mixed into training, and its "
        "validation and test splits evaluated at each trial's end (old_eval_*, old_test_*).")


def earlier_section(section: DataFiles) -> DataFiles | None:
    """The data section the earlier data is read and split with; None without data.replay
    (or for a data section that has no such key)."""
    replay = getattr(section, "replay", None)
    return old_section(section, replay) if replay else None


def old_section(section: DataFiles, replay: ReplaySection) -> DataFiles:
    """The data section the earlier data is read and split with."""
    trial_config = Path(replay.path) / "config.yaml"
    if not trial_config.is_file():
        return section.model_copy(update={"path": replay.path, "validation_path": None,
                                          "test_path": None, "replay": None})
    data = yaml.safe_load(trial_config.read_text(encoding="utf-8")).get("data", {})
    try:
        return type(section).model_validate({**data, "replay": None})
    except ValidationError as error:
        first = error.errors()[0]
        raise DataError("data.replay.path", f"{'.'.join(map(str, first['loc']))}: "
                        f"{first['msg']} in the earlier trial's config.yaml",
                        source=trial_config) from None


def mix(new: Built, old: Built, fraction: float, seed: int
        ) -> tuple[dict[str, list[Example]], dict[str, Any]]:
    """The splits to prepare: the new ones with earlier training examples added to training
    (``fraction`` of the mix, at most all of them), and the earlier held-out splits as
    old_validation and old_test; and what was done, for the data report."""
    held_out = {e.key for name in HELD_OUT for e in new.splits[name]}
    pool = [e for e in old.splits["train"] if e.key not in held_out]
    new_train = new.splits["train"]
    wanted = round(fraction / (1 - fraction) * len(new_train))
    chosen = random.Random(seed).sample(pool, min(wanted, len(pool)))
    splits = {**new.splits, "train": [*new_train, *chosen],
              **{OLD + name: old.splits[name] for name in HELD_OUT}}
    done = {"old_examples": len(chosen), "new_examples": len(new_train),
            "old_share": len(chosen) / max(1, len(new_train) + len(chosen)),
            "left_out_held_out_here": len(old.splits["train"]) - len(pool),
            "old_validation": len(old.splits["validation"]), "old_test": len(old.splits["test"])}
    return splits, done


def with_earlier(built: Built, section: DataFiles, old: DataFiles | None,
                 build: Callable[[DataFiles], Built]
                 ) -> tuple[dict[str, list[Example]], dict[str, Any], list[str] | None]:
    """The splits, data report and label set to prepare: ``built`` alone, or (an update,
    ``old`` the earlier data section) mixed with the earlier data ``build`` makes of ``old``.
    The label set of an update is both months' (an earlier class the new data lacks stays)."""
    if old is None:
        return built.splits, built.report, built.labels
    earlier = build(old)
    splits, done = mix(built, earlier, section.replay.fraction, section.seed)
    report = {**built.report, "replay": done,
              "summary": f"{built.report['summary']}; {summary(done)}"}
    labels = built.labels
    if labels is not None and earlier.labels is not None:
        labels = sorted({*labels, *earlier.labels})
    return splits, report, labels


def old_metrics(metrics: tuple[Metric, ...]) -> tuple[Metric, ...]:
    """Each evaluation metric on the earlier validation split, reported at a trial's end."""
    return tuple(replace(m, name=f"{OLD}{m.name}", final=True,
                         description=f"{m.description}, on the earlier validation split "
                         "(data.replay)") for m in metrics if m.name.startswith("eval_"))


def summary(done: dict[str, Any]) -> str:
    return (f"replay: {done['old_examples']} earlier examples mixed into training "
            f"({done['old_share']:.0%} of it), earlier validation {done['old_validation']} "
            f"and test {done['old_test']} kept as old_eval / old_test")
