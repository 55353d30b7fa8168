"""The distillation objective as the search sees it (see objectives.base for the order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from objectives.adapter import AdapterObjective
from objectives.base import DataError, FinishedTrial, Metric, ReportSection
from objectives.costs import COST_METRICS
from objectives.distillation.config import DistillationConfig


class Distillation(AdapterObjective):
    """Trains whole students (not adapters) with the same Trainer recipe: the step budget,
    out-of-memory retry and best/ copy are the adapter objectives'."""

    name = "distillation"
    saved = "model"  # objectives.distillation.recipe.SAVED
    config_model = DistillationConfig
    path_fields = DistillationConfig.path_fields
    trial_fields = DistillationConfig.trial_fields
    metrics = (
        Metric("eval_loss", "minimize", "validation cross-entropy of the student"),
        Metric("eval_accuracy", "maximize", "arg-max class equal to the label",
               per_example=True),
        Metric("eval_macro_f1", "maximize", "macro-F1 over the classes", per_example=True),
        Metric("eval_quality_retained", "maximize", "the student's distill.quality_metric "
               "divided by the teacher's, on the validation split"),
        *COST_METRICS,
        Metric("speedup", "maximize", "the teacher's latency divided by the student's, both "
               "measured in the trial's process", final=True),
        Metric("size_ratio", "minimize", "the student's parameters divided by the teacher's",
               final=True),
    )

    def check(self, config: DistillationConfig) -> None:
        from transformers import AutoConfig

        from objectives.distillation import student, teacher

        folder = Path(config.teacher.model)
        teacher.check(folder)
        if config.data.augment.p > 0:
            raise DataError("data.augment", "a student learns from the teacher's logits of "
                            "the training split; augmented copies have none")
        model = teacher.tokenizer_folder(folder)
        if teacher.is_trial_folder(folder):
            from objectives.adapter import trial_config
            from objectives.sequence_classification_lora.config import (
                ClassificationConfig,
                model_path,
            )

            model = Path(model_path(trial_config(folder, ClassificationConfig)))
        student.student_config(AutoConfig.from_pretrained(model), config.student)

    def check_data(self, config: DistillationConfig) -> None:
        from objectives.distillation import teacher

        labels = teacher.labels_of(Path(config.teacher.model))
        built = self._splits(config)
        if built.labels != sorted(labels) or len(built.labels) != len(labels):
            raise DataError("data.path", f"the data's labels ({', '.join(built.labels)}) are "
                            f"not the teacher's ({', '.join(labels)})")

    @staticmethod
    def _tokenizer(config: DistillationConfig):
        from transformers import AutoTokenizer

        from objectives.distillation import teacher

        return AutoTokenizer.from_pretrained(teacher.tokenizer_folder(Path(config.teacher.model)))

    def _splits(self, config: DistillationConfig):
        from objectives.sequence_classification_lora import data

        return data.build_splits(config.data, self._tokenizer(config))

    def prepared(self, config: DistillationConfig,
                 prepared_dir: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        """The tokenised splits (the teacher's tokenizer), the data report and the teacher's
        figures; the teacher's logits cached beside them as teacher.logits says."""
        from transformers import DataCollatorWithPadding

        from objectives import metrics
        from objectives.data.files import load_split
        from objectives.distillation import teacher
        from objectives.sequence_classification_lora import data
        from objectives.trainer import quiet_transformers

        quiet_transformers()  # the teacher loads in the driver
        folder = Path(config.teacher.model)
        tokenizer = self._tokenizer(config)
        path, report = data.prepare(config.data, config.data.max_length, tokenizer,
                                    teacher.tokenizer_folder(folder), prepared_dir)
        labels = teacher.labels_of(folder)
        rows = len(load_split(path, "train"))
        cache = config.teacher.logits == "cached" or (
            config.teacher.logits == "auto"
            and teacher.cached_logits_mb(rows, len(labels)) <= config.teacher.max_cached_mb)

        def score(name: str, logits, ids) -> float:
            classes = [str(i) for i in range(len(labels))]
            return metrics.score(name, [str(i) for i in ids],
                                 [str(i) for i in logits.argmax(-1).tolist()], classes)

        info = teacher.prepare(folder, path, config.training.per_device_eval_batch_size,
                               DataCollatorWithPadding(tokenizer), cache, score)
        return path, report, info

    def prepare(self, config: DistillationConfig, prepared_dir: Path) -> dict[str, Any]:
        _, report, info = self.prepared(config, prepared_dir)
        quality = config.distill.quality_metric
        return {**report, "summary": f"{report['summary']}; teacher test {quality} "
                f"{info[f'test_{quality}']:.4f}"}

    def run(self, config: DistillationConfig, context) -> None:
        from objectives.distillation import recipe

        path, _, info = self.prepared(config, context.prepared_dir)
        recipe.run(config, context, path, info)

    def export(self, trial: FinishedTrial, out_dir: Path | None,
               options: dict[str, Any]) -> list[str]:
        """The student as it was saved: one transformers folder (a pruned one loads with
        objectives.distillation.pruning.load, which rebuilds its heads)."""
        import json
        import shutil

        from objectives.adapter import clear_earlier_export, file_listing, trial_summary
        from objectives.distillation.pruning import KEPT_HEADS

        if options.get("quantize"):
            raise DataError("", "a student classifier is exported as a transformers model "
                            "(safetensors); quantisation is for GGUF models", source="--quantize")
        model = trial.trial_dir / self.saved
        if not (model / "config.json").is_file():
            raise DataError(self.saved, f"trial {trial.number} has no saved student",
                            source=trial.trial_dir)
        out = Path(out_dir).resolve() if out_dir else trial.trial_dir.parent.parent / "export"
        clear_earlier_export(out)
        shutil.copytree(model, out)
        pruned = KEPT_HEADS in json.loads((model / "config.json").read_text(encoding="utf-8"))
        load = ("objectives.distillation.pruning.load(FOLDER) (its pruned heads need it)"
                if pruned else "AutoModelForSequenceClassification.from_pretrained(FOLDER)")
        result = {**trial_summary(trial), "out_dir": str(out), "load": load,
                  "files": file_listing(out)}
        (out / "export.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        return [f"exported the student of trial {trial.number} of study "
                f"'{trial.study_name}' to {out}",
                f"  load: {load.replace('FOLDER', repr(str(out)))}"]

    def report_sections(self, best: FinishedTrial | None) -> list[ReportSection]:
        from objectives.sequence_classification_lora.report import per_class_section

        return [per_class_section(best)]

    def score(self, metric: str, rows: list[dict[str, str]], labels: list[str] | None) -> float:
        from objectives.sequence_classification_lora.objective import (
            SequenceClassificationLoRA,
        )

        return SequenceClassificationLoRA().score(metric, rows, labels)
