"""What the LoRA objectives share as objectives: the step budget, the out-of-memory retry
and the winner's adapter copied to ``best/``. Their configs have a ``training`` section
(``objectives.sections.TrainingSection``) and their trials save ``adapter/``."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from objectives.base import CENTRE, DataError, FinishedTrial, Objective
from objectives.sections import module_names

C = TypeVar("C", bound=BaseModel)


class AdapterObjective(Objective):
    """An objective whose trials train a LoRA adapter with the Hugging Face Trainer."""

    saved = "adapter"  # the folder of a trial that holds what it trained
    # The most common LoRA starting point: rank 16 with alpha twice the rank (a scale of 2),
    # and the learning rate, which matters most and depends on the model, in the middle of
    # the range the space gives for this model.
    recommended: ClassVar[dict[str, Any]] = {
        "lora.r": 16, "lora.lora_alpha": 32, "training.learning_rate": CENTRE,
    }

    def max_steps(self, config: BaseModel) -> int | None:
        steps = config.training.max_steps
        return steps if steps > 0 else None

    def oom_retry(self, config: BaseModel) -> dict[str, Any] | None:
        """Half the per-device batch, twice the accumulation: the same effective batch."""
        batch = config.training.per_device_train_batch_size
        if batch < 2:
            return None
        return {
            "training.per_device_train_batch_size": batch // 2,
            "training.gradient_accumulation_steps": config.training.gradient_accumulation_steps * 2,
        }

    def resolve(self, body: dict[str, Any]) -> dict[str, Any]:
        """With model.adapter: the lora keys the space leaves out are the adapter's, and
        training.learning_rate_scale times its trial's learning rate is the learning rate."""
        body = {**body}
        model, training = dict(body.get("model") or {}), dict(body.get("training") or {})
        adapter, scale = model.get("adapter"), training.get("learning_rate_scale")
        if not adapter:
            if scale is not None:
                raise DataError("training.learning_rate_scale", "scales the learning rate of "
                                "the trial model.adapter names; there is none")
            return body
        settings = adapter_settings(Path(adapter))
        body["lora"] = {**{key: settings[key] for key in ADAPTER_SHAPE if key in settings},
                        **(body.get("lora") or {})}
        if scale is not None:
            if "learning_rate" in training:
                raise DataError("training.learning_rate", "give learning_rate or "
                                "learning_rate_scale (relative to the adapter's trial), not both")
            earlier = Path(adapter) / "config.yaml"
            if not earlier.is_file():
                raise DataError("training.learning_rate_scale", f"{adapter} is an adapter "
                                "folder, not a trial's: it has no learning rate to scale")
            rate = yaml.safe_load(earlier.read_text(encoding="utf-8"))["training"]["learning_rate"]
            body["training"] = {**training, "learning_rate": scale * rate}
        return body

    def check_adapter(self, config: BaseModel, base: str) -> None:
        """A continued adapter keeps its shape (the lora keys) and its base model."""
        if not config.model.adapter:
            return
        settings = adapter_settings(Path(config.model.adapter))
        lora = config.lora
        for key in ADAPTER_SHAPE:
            ours = sorted(module_names(lora)) if key == "target_modules" else getattr(lora, key)
            theirs = settings.get(key)
            theirs = sorted(theirs) if key == "target_modules" else theirs
            if theirs is not None and ours != theirs:
                raise DataError(f"lora.{key}", f"{ours!r} differs from the adapter's "
                                f"{theirs!r} (model.adapter): a continued adapter keeps its "
                                f"shape; leave lora.{key} out of the space")
        trained_on = settings.get("base_model_name_or_path")
        if trained_on and Path(trained_on).resolve() != Path(base).resolve():
            raise DataError("model.adapter", f"the adapter was trained on {trained_on}, not on "
                            f"{base} (model.name_or_path)")

    def save_best(self, trial_dir: Path, best_dir: Path) -> None:
        # Copied aside, then swapped in: launchers sharing a study may both finish at once.
        staged = best_dir.with_name(f".{best_dir.name}.{uuid.uuid4().hex}")
        shutil.copytree(trial_dir / self.saved, staged)
        shutil.copy2(trial_dir / "config.yaml", staged / "config.yaml")
        shutil.rmtree(best_dir, ignore_errors=True)
        try:
            staged.rename(best_dir)
        except OSError:  # the other launcher's copy of the same best trial got there first
            shutil.rmtree(staged)


ADAPTER_SHAPE = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias")
# Keys added after studies were made (Objective.added_sections): continuing an adapter.
ADDED_ADAPTER_KEYS = ("model.adapter", "training.learning_rate_scale")


def adapter_folder(path: Path) -> Path:
    """The adapter a model.adapter value means: a trial folder's ``adapter/``, or the
    folder itself when it holds adapter_config.json."""
    for folder in (path / "adapter", path):
        if (folder / "adapter_config.json").is_file():
            return folder
    raise DataError("model.adapter", f"{path} holds no LoRA adapter (adapter_config.json), "
                    "and is not a trial folder with one")


def continued_adapter(config: BaseModel) -> Path | None:
    """The saved adapter a trial continues (model.adapter), or None for a fresh one."""
    return adapter_folder(Path(config.model.adapter)) if config.model.adapter else None


def adapter_settings(path: Path) -> dict[str, Any]:
    """The LoraConfig an adapter was saved with (adapter_config.json)."""
    return json.loads((adapter_folder(path) / "adapter_config.json").read_text(encoding="utf-8"))


def trial_config(trial_dir: Path, config_model: type[C]) -> C:
    """A finished trial's resolved config (its ``config.yaml``), for export."""
    path = trial_dir / "config.yaml"
    if not path.is_file():
        raise DataError("config.yaml", "the trial's resolved config is missing", source=trial_dir)
    resolved = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        return config_model.model_validate({k: v for k, v in resolved.items()
                                            if k in config_model.model_fields})
    except ValidationError as error:
        first = error.errors()[0]
        raise DataError(".".join(map(str, first["loc"])), f"{first['msg']} in config.yaml "
                        "(made by another version of this objective?)", source=trial_dir) \
            from None


Rows = list[dict[str, str]]


def answer_with(objective: Objective, model_trial: Path, data_trial: Path, prepared_dir: Path,
                split: str, base_model: Callable[[Any], str],
                predict: Callable[[Any, Path, Path, str], Rows]) -> Rows:
    """``Objective.answer`` for a LoRA objective: the adapter ``model_trial`` saved, on its
    base model (``base_model`` of a config), answers ``split`` of the data ``data_trial`` was
    prepared with (``predict(config, adapter, prepared folder, split)``); both trials must
    share the base model."""
    ours, theirs = (trial_config(trial, objective.config_model) for trial in
                    (data_trial, model_trial))
    base = base_model(theirs)
    if Path(base).resolve() != Path(base_model(ours)).resolve():
        raise DataError("model.name_or_path", f"{model_trial.name} was trained on {base}, "
                        "another base model: its answers cannot be compared", source=model_trial)
    prepared = objective.prepared(ours, prepared_dir)[0]
    if not (prepared / split).is_dir():
        raise DataError("--split", f"the study's data has no {split} split", source=data_trial)
    return predict(theirs, adapter_folder(model_trial), prepared, split)


def saved_adapter(trial: FinishedTrial) -> Path:
    """The folder of a finished trial's adapter; DataError when it has none."""
    adapter = trial.trial_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise DataError("adapter", f"trial {trial.number} has no saved adapter (it did not "
                        "finish, or its folder was removed)", source=trial.trial_dir)
    return adapter


def clear_earlier_export(out: Path) -> None:
    """An earlier export is replaced whole, so no file of another trial stays; a folder that
    holds anything else is left alone."""
    if not out.exists():
        return
    if out.is_dir() and (not any(out.iterdir()) or (out / "export.json").is_file()):
        shutil.rmtree(out)
        return
    raise DataError("", f"{out} exists and is not an earlier export; choose an empty or new "
                    "folder", source="--out")


def file_listing(out: Path) -> dict[str, dict[str, Any]]:
    """Every file under ``out``: its size and SHA-256, for export.json."""
    return {str(path.relative_to(out)): {"bytes": path.stat().st_size, "sha256": _sha256(path)}
            for path in sorted(p for p in out.rglob("*") if p.is_file())}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def trial_summary(trial: FinishedTrial) -> dict[str, Any]:
    """Which trial an export is of, for export.json."""
    return {"study": trial.study_name, "trial": trial.number, "params": trial.params,
            "value": trial.value, "metric": trial.metric}
