"""The LoRA sequence-classification objective as the search sees it (see objectives.base)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from objectives.adapter import ADDED_ADAPTER_KEYS, AdapterObjective, answer_with
from objectives.base import DataError, FinishedTrial, Metric, ReportSection
from objectives.costs import COST_METRICS
from objectives.data.replay import old_metrics
from objectives.metrics import LABEL_METRICS
from objectives.sequence_classification_lora.config import ClassificationConfig, model_path

TASK_METRICS = LABEL_METRICS  # a class is right or wrong


class SequenceClassificationLoRA(AdapterObjective):
    name = "sequence_classification_lora"
    config_model = ClassificationConfig
    path_fields = ClassificationConfig.path_fields
    trial_fields = ClassificationConfig.trial_fields
    added_sections = (*ADDED_ADAPTER_KEYS, "data.replay")
    metrics = (
        Metric("eval_loss", "minimize", "validation loss (the training loss: cross-entropy, "
               "focal, weighted)"),
        Metric("eval_accuracy", "maximize", "arg-max class equal to the label",
               per_example=True),
        Metric("eval_macro_f1", "maximize", "macro-F1 over the classes", per_example=True),
        *COST_METRICS,
    )

    def metrics_for(self, config: ClassificationConfig) -> tuple[Metric, ...]:
        """An update (data.replay) also reports each evaluation metric on the earlier
        validation split, at the trial's end (old_eval_*)."""
        return (*self.metrics, *old_metrics(self.metrics)) if config.data.replay \
            else self.metrics

    def check(self, config: ClassificationConfig) -> None:
        from transformers import AutoConfig

        from objectives.data import augment

        augment.check(config.data.augment)
        path = model_path(config)  # raises DataError naming model.name_or_path
        self.check_adapter(config, path)
        try:
            AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as error:  # a config.json that does not load
            raise DataError("model.name_or_path", str(error).splitlines()[0]) from None

    def check_data(self, config: ClassificationConfig) -> None:
        from transformers import AutoTokenizer

        from objectives.sequence_classification_lora import data

        data.build_splits(config.data, AutoTokenizer.from_pretrained(model_path(config)))

    def prepare(self, config: ClassificationConfig, prepared_dir: Path) -> dict[str, Any]:
        return self.prepared(config, prepared_dir)[1]

    @staticmethod
    def prepared(config: ClassificationConfig,
                 prepared_dir: Path) -> tuple[Path, dict[str, Any]]:
        """The folder of the tokenised splits (made on first use) and the data report."""
        from transformers import AutoTokenizer

        from objectives.sequence_classification_lora import data

        path = model_path(config)
        return data.prepare(config.data, config.data.max_length,
                            AutoTokenizer.from_pretrained(path), Path(path), prepared_dir)

    def run(self, config: ClassificationConfig, context) -> None:
        from objectives.sequence_classification_lora import recipe

        recipe.run(config, context, self.prepared(config, context.prepared_dir)[0])

    def export(self, trial: FinishedTrial, out_dir: Path | None,
               options: dict[str, Any]) -> list[str]:
        from objectives.sequence_classification_lora import export

        if options.get("quantize"):
            raise DataError("", "a classifier is exported as a merged transformers model "
                            "(safetensors); quantisation is for GGUF models", source="--quantize")
        return export.summary_lines(export.export_trial(trial, out_dir))

    def answer(self, model_trial: Path, data_trial: Path, prepared_dir: Path,
               split: str) -> list[dict[str, str]]:
        from objectives.sequence_classification_lora import recipe

        return answer_with(self, model_trial, data_trial, prepared_dir, split, model_path,
                           recipe.answer)

    def report_sections(self, best: FinishedTrial | None) -> list[ReportSection]:
        from objectives.sequence_classification_lora.report import per_class_section

        return [per_class_section(best)]

    def score(self, metric: str, rows: list[dict[str, str]], labels: list[str] | None) -> float:
        from objectives import metrics

        if metric not in TASK_METRICS:
            raise KeyError(metric)
        return metrics.score_rows(metric, rows, labels)
