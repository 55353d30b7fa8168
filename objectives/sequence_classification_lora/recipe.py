"""Recipe: LoRA fine-tuning of a pretrained encoder as a sequence classifier, one trial.

load prepared data -> load the base model with a fresh classification head -> LoRA on the
attention projections, the head trained in full -> train with transformers' Trainer (the loss
the space chose: cross-entropy with label smoothing, focal loss, class weights) reporting each
evaluation to the search -> the best checkpoint predicts the validation and test splits ->
save the adapter, the predictions and the per-class figures. A restarted trial resumes from
its last complete checkpoint.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.utils import logging as transformers_logging

from objectives import costs, metrics
from objectives.adapter import continued_adapter
from objectives.base import LABELS, DataError, TrialContext, write_predictions
from objectives.data.files import load_labels, load_split, load_texts
from objectives.data.replay import SPLITS
from objectives.sequence_classification_lora import data
from objectives.sequence_classification_lora.config import ClassificationConfig, model_path
from objectives.sequence_classification_lora.losses import ClassificationLoss, balanced_weights
from objectives.sequence_classification_lora.objective import TASK_METRICS
from objectives.trainer import (
    cached_base_model,
    device_map,
    quiet_transformers,
    train_trial,
    training_arguments,
    trial_callbacks,
    with_lora,
)

PER_CLASS = "per_class.json"  # per trial folder: the test split's per-class figures


def classifier(path: str, labels: list[str], **kwargs: Any) -> PreTrainedModel:
    """The encoder at ``path`` with a new classification head for ``labels``."""
    # The load report lists the new head's weights as missing: expected, not a problem.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, **kwargs)
    finally:
        transformers_logging.set_verbosity(verbosity)


def load_base_model(path: str, labels: list[str]) -> PreTrainedModel:
    """The classifier, kept for the worker's next trial of the same model and labels."""
    return cached_base_model(json.dumps([path, labels]), lambda: classifier(
        path, labels, device_map=device_map(torch.cuda.device_count())))


def head_name(model: PreTrainedModel) -> str:
    """The classification head's attribute: ``classifier`` (BERT, RoBERTa) or ``score``."""
    return next(name for name in ("classifier", "score") if hasattr(model, name))


def fresh_head(model: PreTrainedModel) -> None:
    """Initialise the head as from_pretrained does, from the current seed: unloading LoRA
    leaves the last trial's trained head in the kept base, and each trial starts anew."""
    for module in getattr(model, head_name(model)).modules():
        model._init_weights(module)


def compute_metrics(prediction) -> dict[str, float]:
    """Accuracy and macro-F1 of the arg-max class (the Trainer adds the split's prefix)."""
    predicted = np.asarray(prediction.predictions).argmax(-1).tolist()
    truth = np.asarray(prediction.label_ids).tolist()
    classes = [str(c) for c in range(np.asarray(prediction.predictions).shape[-1])]
    return {name: metrics.score(name, [str(t) for t in truth], [str(p) for p in predicted],
                                classes) for name in TASK_METRICS}


def task_metric(key: str) -> bool:
    """eval_accuracy, test_macro_f1, an update's old_test_accuracy, ..."""
    return any(key == f"{prefix}_{name}" for prefix in SPLITS for name in TASK_METRICS)


def run(config: ClassificationConfig, context: TrialContext, prepared: Path) -> None:
    """One trial; ``prepared`` holds the tokenised splits (see data.prepare)."""
    quiet_transformers()
    torch.set_num_threads(context.threads)
    path = model_path(config)
    tokenizer = AutoTokenizer.from_pretrained(path)
    labels = load_labels(prepared)
    base = load_base_model(path, labels)
    set_seed(config.training.seed)  # after loading, so a reused base starts the same way
    # SEQ_CLS: peft trains the classification head in full (its modules_to_save).
    model = with_lora(base, "SEQ_CLS", config.lora, reset=fresh_head,
                      adapter=continued_adapter(config))
    train, augmented = data.training_set(prepared, config.data, tokenizer, config.data.seed)
    attrs = {"augmented_rows": augmented} if augmented else {}
    train_trial(lambda: Trainer(
        model=model,
        args=training_arguments(config.training, context,
                                label_smoothing_factor=config.training.label_smoothing_factor),
        train_dataset=train,
        eval_dataset=load_split(prepared, "validation"),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        compute_loss_func=loss_function(config, prepared),
        callbacks=trial_callbacks(context, config.early_stopping, task_metric),
    ), model, context, lambda trainer: finish(trainer, prepared, tokenizer, context, attrs))


def loss_function(config: ClassificationConfig, prepared: Path) -> ClassificationLoss | None:
    """Focal loss and class weights as the space asks; None leaves the Trainer's own
    cross-entropy (with its label smoothing)."""
    loss = config.loss
    if loss.focal_gamma == 0 and loss.class_weights == "none":
        return None
    weight = None
    if loss.class_weights == "balanced":
        ids = load_split(prepared, "train")["labels"]
        weight = balanced_weights(ids, len(load_labels(prepared)))
    return ClassificationLoss(loss.focal_gamma, weight, config.training.label_smoothing_factor)


def predict_split(trainer: Trainer, prepared: Path, split: str, prefix: str,
             labels: list[str]) -> tuple[dict[str, float], list[dict[str, str]]]:
    output = trainer.predict(load_split(prepared, split), metric_key_prefix=prefix)
    predicted = np.asarray(output.predictions).argmax(-1).tolist()
    rows = [{**text, "prediction": labels[p]}
            for text, p in zip(load_texts(prepared, split), predicted, strict=True)]
    return output.metrics, rows


def per_class(rows: list[dict[str, str]], labels: list[str]) -> dict[str, Any]:
    """Precision, recall, F1 and support of each class, and the confusion matrix (rows: the
    true class, columns: the predicted one), as scikit-learn computes them."""
    truth = [row["reference"] for row in rows]
    predicted = [row["prediction"] for row in rows]
    report = classification_report(truth, predicted, labels=labels, output_dict=True,
                                   zero_division=0)
    return {
        "labels": labels,
        "per_class": {label: {key: report[label][key] for key in
                              ("precision", "recall", "f1-score", "support")}
                      for label in labels},
        "confusion_matrix": confusion_matrix(truth, predicted, labels=labels).tolist(),
    }


def finish(trainer: Trainer, prepared: Path, tokenizer, context: TrialContext,
           attrs: dict[str, Any], saved: str = "adapter",
           keep: Callable[[str], bool] = task_metric,
           add: Callable[[dict[str, float]], dict[str, float]] | None = None) -> None:
    """The best checkpoint (loaded back by the Trainer) predicts the validation and test
    splits (and an update's earlier ones); the model (``saved``: its adapter, or a whole
    model), predictions, label set and per-class figures are saved, and the last report ends
    the trial with the validation value, the final figures ``keep`` accepts, the costs and
    what ``add`` derives from them."""
    labels = load_labels(prepared)
    measured, rows = {}, {}
    for prefix, split in SPLITS.items():  # an update's earlier splits too (data.replay)
        if (prepared / split).is_dir():
            split_figures, rows[split] = predict_split(trainer, prepared, split, prefix, labels)
            measured.update(split_figures)
            write_predictions(context.trial_dir, split, rows[split])
    shutil.copy2(prepared / LABELS, context.trial_dir / LABELS)
    figures = per_class(rows["test"], labels)
    (context.trial_dir / PER_CLASS).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    trainer.model.save_pretrained(context.trial_dir / saved)
    tokenizer.save_pretrained(context.trial_dir / saved)
    final = {k: v for k, v in measured.items() if k.endswith("_loss") or keep(k)}
    final.update(costs.measure(trainer.model, costs.test_batch(
        load_split(prepared, "test"), DataCollatorWithPadding(tokenizer))))
    final.update(add(final) if add else {})
    value = final.pop(context.metric)
    model = trainer.model
    base = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    context.complete(value, step=trainer.state.global_step,
                     attrs={**attrs, "test_per_class": figures["per_class"],
                            "test_confusion_matrix": figures["confusion_matrix"],
                            "labels": labels, "model_type": base.model_type,
                            "num_hidden_layers": base.num_hidden_layers}, **final)


def answer(config: ClassificationConfig, adapter: Path, prepared: Path,
           split: str) -> list[dict[str, str]]:
    """A saved adapter (and its trained head) on a freshly loaded base predicts a prepared
    split: its prediction rows. Its classes must be the split's."""
    from peft import PeftModel

    quiet_transformers()
    labels = load_labels(prepared)
    trained = load_labels(adapter.parent) if (adapter.parent / LABELS).is_file() else labels
    if trained != labels:
        raise DataError("labels.json", f"the trial was trained on the classes {trained}, the "
                        f"split has {labels}", source=adapter.parent)
    path = model_path(config)
    model = PeftModel.from_pretrained(classifier(path, labels), adapter).eval()
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(model=model, data_collator=DataCollatorWithPadding(
            AutoTokenizer.from_pretrained(path)), args=TrainingArguments(
            scratch, per_device_eval_batch_size=config.training.per_device_eval_batch_size,
            report_to="none", dataloader_pin_memory=torch.cuda.is_available()))
        return predict_split(trainer, prepared, split, "answer", labels)[1]
