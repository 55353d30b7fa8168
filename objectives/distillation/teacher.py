"""The teacher: a trained classifier loaded as one plain model, and what it says about the
data, computed once per study.

A teacher is a trial folder of the classification objective (its adapter merged into the
base it was trained on) or a folder ``AutoModelForSequenceClassification`` loads (an export).
Its tokenizer is the student's: the student keeps the teacher's vocabulary and embeddings.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from objectives.adapter import trial_config
from objectives.base import LABELS, DataError
from objectives.data.files import load_split, write_json
from objectives.distillation import pruning
from objectives.metrics import LABEL_METRICS
from objectives.sequence_classification_lora.config import ClassificationConfig, model_path
from objectives.trainer import cached_base_model

TEACHER_LOGITS = "teacher_logits.npy"  # the teacher's logits on the training split
TEACHER = "teacher.json"  # the teacher's labels and figures on the held-out splits
FIELD = "teacher.model"


def is_trial_folder(folder: Path) -> bool:
    return (folder / "adapter" / "adapter_config.json").is_file()


def tokenizer_folder(folder: Path) -> Path:
    """Where the teacher's tokenizer is: a trial's adapter folder, or the model folder."""
    return folder / "adapter" if is_trial_folder(folder) else folder


def check(folder: Path) -> None:
    """A teacher folder that cannot be loaded is named before any trial runs."""
    if not folder.is_dir():
        raise DataError(FIELD, f"{folder} is neither a folder nor a study with a finished trial")
    if not is_trial_folder(folder) and not (folder / "config.json").is_file():
        raise DataError(FIELD, f"{folder} holds neither a classifier trial (adapter/) nor a "
                        "model (config.json)")


def labels_of(folder: Path) -> list[str]:
    """The teacher's classes, in the order of its logits."""
    if is_trial_folder(folder):
        labels_file = folder / LABELS
        if not labels_file.is_file():
            raise DataError(LABELS, "the teacher trial's label set is missing", source=folder)
        return json.loads(labels_file.read_text(encoding="utf-8"))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    return [id2label[str(i)] for i in range(len(id2label))]


def _load(folder: Path) -> PreTrainedModel:
    if not is_trial_folder(folder):
        return pruning.load(folder)
    from peft import PeftModel

    from objectives.sequence_classification_lora.recipe import classifier

    config = trial_config(folder, ClassificationConfig)
    base = classifier(model_path(config), labels_of(folder), dtype=torch.float32)
    return PeftModel.from_pretrained(base, folder / "adapter").merge_and_unload()


def load(folder: Path) -> PreTrainedModel:
    """The teacher in eval mode with its gradients off, kept for the worker's next trial."""
    def make() -> PreTrainedModel:
        model = _load(folder).eval()
        model.requires_grad_(False)
        return model

    return cached_base_model(f"teacher:{folder}", make)


@functools.cache
def key(folder: Path) -> str:
    """Identifies the teacher's weights, so cached logits are never another teacher's; read
    once per process (a finished trial's weights do not change), not at every trial."""
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for path in sorted(folder.rglob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@torch.inference_mode()
def logits(model: PreTrainedModel, split, batch_size: int, collate) -> np.ndarray:
    """The teacher's logits on a tokenised split, in its order."""
    rows = []
    for start in range(0, len(split), batch_size):
        batch = dict(collate([split[i] for i in range(start, min(start + batch_size,
                                                                  len(split)))]))
        batch.pop("labels", None)
        rows.append(model(**batch).logits.float().numpy())
    return np.concatenate(rows)


def cached_logits_mb(rows: int, classes: int) -> float:
    return rows * classes * 4 / 1e6


def prepare(folder: Path, prepared: Path, batch_size: int, collate, cache: bool,
            score) -> dict[str, Any]:
    """Once per study: the teacher's figures on the validation and test splits (what
    quality_retained divides by) and, with ``cache``, its logits on the training split;
    ``score(name, logits, labels)`` computes a task metric."""
    out = prepared / f"teacher-{key(folder)}"
    info_file = out / TEACHER
    if info_file.is_file() and (not cache or (out / TEACHER_LOGITS).is_file()):
        return json.loads(info_file.read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    model = load(folder)
    info: dict[str, Any] = {"folder": str(folder), "labels": labels_of(folder)}
    for split, prefix in (("validation", "eval"), ("test", "test")):
        data = load_split(prepared, split)
        predicted = logits(model, data, batch_size, collate)
        for name in LABEL_METRICS:
            info[f"{prefix}_{name}"] = score(name, predicted, data["labels"])
    if cache:
        train = logits(model, load_split(prepared, "train"), batch_size, collate)
        tmp = out / f"{TEACHER_LOGITS}.partial.npy"
        np.save(tmp, train)
        tmp.replace(out / TEACHER_LOGITS)
    info["folder_key"] = out.name
    write_json(info_file, info)
    return info
