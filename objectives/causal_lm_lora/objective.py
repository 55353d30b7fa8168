"""The LoRA causal-LM objective as the search sees it (see objectives.base for the order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from objectives.adapter import ADDED_ADAPTER_KEYS, AdapterObjective, answer_with
from objectives.base import DataError, FinishedTrial, Metric, ReportSection
from objectives.causal_lm_lora.config import (
    CausalLMConfig,
    model_config,
    model_path,
    reference_model,
)
from objectives.costs import COST_METRICS
from objectives.data.replay import old_metrics
from objectives.data.section import ADDED_DATA_KEYS


class CausalLMLoRA(AdapterObjective):
    name = "causal_lm_lora"
    config_model = CausalLMConfig
    path_fields = CausalLMConfig.path_fields
    trial_fields = CausalLMConfig.trial_fields
    added_sections = ("evaluation", *ADDED_DATA_KEYS, "data.chunk", "data.replay",
                      *ADDED_ADAPTER_KEYS)
    metrics = (
        Metric("eval_loss", "minimize", "validation loss on the answer tokens"),
        Metric("eval_accuracy", "maximize", "greedy answers equal to the reference (after "
               "stripping and case-folding)", per_example=True),
        Metric("eval_macro_f1", "maximize", "macro-F1 over the label set", per_example=True),
        Metric("eval_bleu", "maximize", "corpus BLEU (sacrebleu) of the answers",
               per_example=True),
        Metric("eval_rougeL", "maximize", "mean ROUGE-L F1 of the answers", per_example=True),
        *COST_METRICS,
    )

    def metrics_for(self, config: CausalLMConfig) -> tuple[Metric, ...]:
        """Documents (data.chunk) have no answers to score: the loss and the costs. An update
        (data.replay) also reports each evaluation metric on the earlier validation split, at
        the trial's end (old_eval_*)."""
        if config.data.chunk:
            return (self.metrics[0], *COST_METRICS)
        if config.data.replay:
            return (*self.metrics, *old_metrics(self.metrics))
        return self.metrics

    def check(self, config: CausalLMConfig) -> None:
        from objectives.data import augment

        augment.check(config.data.augment)
        path = model_path(config)  # raises DataError naming model.name_or_path
        self.check_adapter(config, path)
        try:
            model_config(config, path)
        except OSError as error:  # a folder with a config.json that does not load
            raise DataError("model.name_or_path", str(error).splitlines()[0]) from None
        except ValueError as error:
            raise DataError("model.config_overrides", str(error)) from None

    def check_data(self, config: CausalLMConfig) -> None:
        from transformers import AutoTokenizer

        from objectives.causal_lm_lora import data

        tokenizer = AutoTokenizer.from_pretrained(model_path(config))
        if config.data.chunk:
            from objectives.data.chunking import chunked_splits

            chunked_splits(config.data, config.data.chunk, tokenizer, config.data.seed)
        else:
            data.build_splits(config.data, tokenizer, reference_model(config), score=False)

    def prepare(self, config: CausalLMConfig, prepared_dir: Path) -> dict[str, Any]:
        return self.prepared(config, prepared_dir)[1]

    @staticmethod
    def prepared(config: CausalLMConfig, prepared_dir: Path) -> tuple[Path, dict[str, Any]]:
        """The folder of the tokenised splits (made on first use) and the data report."""
        from transformers import AutoTokenizer

        from objectives.causal_lm_lora import data

        path = model_path(config)
        return data.prepare(config.data, config.data.max_length,
                            AutoTokenizer.from_pretrained(path), Path(path),
                            reference_model(config), prepared_dir, config.evaluation.labels)

    def run(self, config: CausalLMConfig, context) -> None:
        from objectives.causal_lm_lora import recipe

        recipe.run(config, context, self.prepared(config, context.prepared_dir)[0])

    def export(self, trial: FinishedTrial, out_dir: Path | None,
               options: dict[str, Any]) -> list[str]:
        from objectives.causal_lm_lora import export

        result = export.export_trial(trial, out_dir, options.get("quantize") or "f16",
                                     options.get("parameters"))
        return export.summary_lines(result)

    def answer(self, model_trial: Path, data_trial: Path, prepared_dir: Path,
               split: str) -> list[dict[str, str]]:
        from objectives.causal_lm_lora import recipe

        return answer_with(self, model_trial, data_trial, prepared_dir, split, model_path,
                           recipe.answer)

    def report_sections(self, best: FinishedTrial | None) -> list[ReportSection]:
        from objectives.causal_lm_lora.report import layer_profile_section

        return [layer_profile_section(best)]

    def score(self, metric: str, rows: list[dict[str, str]], labels: list[str] | None) -> float:
        from objectives import metrics  # not generation's torch: the launcher scores too

        if metric not in metrics.METRICS:
            raise KeyError(metric)
        return metrics.score_rows(metric, rows, labels)
