"""The LoRA causal-LM objective as the search sees it (see objectives.base for the order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from objectives.adapter import AdapterObjective
from objectives.base import DataError, FinishedTrial, Metric, ReportSection
from objectives.causal_lm_lora.config import CausalLMConfig, model_config, model_path


class CausalLMLoRA(AdapterObjective):
    name = "causal_lm_lora"
    config_model = CausalLMConfig
    path_fields = CausalLMConfig.path_fields
    added_sections = ("evaluation",)
    metrics = (
        Metric("eval_loss", "minimize", "validation loss on the answer tokens"),
        Metric("eval_accuracy", "maximize", "greedy answers equal to the reference (after "
               "stripping and case-folding)", per_example=True),
        Metric("eval_macro_f1", "maximize", "macro-F1 over the label set", per_example=True),
        Metric("eval_bleu", "maximize", "corpus BLEU (sacrebleu) of the answers",
               per_example=True),
        Metric("eval_rougeL", "maximize", "mean ROUGE-L F1 of the answers", per_example=True),
    )

    def check(self, config: CausalLMConfig) -> None:
        path = model_path(config)  # raises DataError naming model.name_or_path
        try:
            model_config(config, path)
        except OSError as error:  # a folder with a config.json that does not load
            raise DataError("model.name_or_path", str(error).splitlines()[0]) from None
        except ValueError as error:
            raise DataError("model.config_overrides", str(error)) from None

    def check_data(self, config: CausalLMConfig) -> None:
        from objectives.causal_lm_lora import data

        section = config.data
        data.split_examples(data.read_examples(Path(section.path)),
                            section.validation_fraction, section.test_fraction, section.seed,
                            Path(section.path))

    def prepare(self, config: CausalLMConfig, prepared_dir: Path) -> None:
        self.prepared(config, prepared_dir)

    @staticmethod
    def prepared(config: CausalLMConfig, prepared_dir: Path) -> Path:
        """The folder of the tokenised splits, made on first use."""
        from transformers import AutoTokenizer

        from objectives.causal_lm_lora import data

        path = model_path(config)
        settings = config.data.model_dump(exclude={"path"})
        return data.prepare(Path(config.data.path), AutoTokenizer.from_pretrained(path),
                            Path(path), settings, prepared_dir, config.evaluation.labels)

    def run(self, config: CausalLMConfig, context) -> None:
        from objectives.causal_lm_lora import recipe

        recipe.run(config, context, self.prepared(config, context.prepared_dir))

    def export(self, trial: FinishedTrial, out_dir: Path | None,
               options: dict[str, Any]) -> list[str]:
        from objectives.causal_lm_lora import export

        result = export.export_trial(trial, out_dir, options.get("quantize") or "f16",
                                     options.get("parameters"))
        return export.summary_lines(result)

    def report_sections(self, best: FinishedTrial | None) -> list[ReportSection]:
        from objectives.causal_lm_lora.report import layer_profile_section

        return [layer_profile_section(best)]

    def score(self, metric: str, rows: list[dict[str, str]], labels: list[str] | None) -> float:
        from objectives import metrics
        from objectives.causal_lm_lora import generation

        if metric not in generation.ANSWER_METRICS:
            raise KeyError(metric)
        return metrics.score_rows(metric, rows, labels)
