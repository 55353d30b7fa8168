"""Export of a classifier trial: the adapter merged into the encoder, as one transformers
folder (safetensors, tokenizer, label map in its config) that
``AutoModelForSequenceClassification.from_pretrained`` or a ``pipeline("text-classification")``
loads as it is.

The proof: the merged model's logits on the trial's test texts equal those of base + adapter.
Ollama serves generative models only, so no Modelfile is written for an encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoTokenizer

from objectives.adapter import (
    clear_earlier_export,
    file_listing,
    saved_adapter,
    trial_config,
    trial_summary,
)
from objectives.base import LABELS, DataError, FinishedTrial
from objectives.sequence_classification_lora import data
from objectives.sequence_classification_lora.config import ClassificationConfig, model_path
from objectives.sequence_classification_lora.recipe import classifier
from objectives.trainer import quiet_transformers

CHECK_TEXTS = 32  # test texts whose logits are compared
TOLERANCE = 1e-4  # merging changes the order of float32 additions, nothing else
NOT_FOR_OLLAMA = ("Ollama serves generative models; a sequence classifier is served with "
                  "transformers (pipeline('text-classification', model=FOLDER)), not Ollama")


def export_trial(trial: FinishedTrial, out_dir: Path | None = None) -> dict[str, Any]:
    """Write the merged model of ``trial`` (default folder: studies/<name>/export) and return
    export.json's content; RuntimeError when the merged logits differ from base + adapter."""
    quiet_transformers()
    adapter = saved_adapter(trial)
    labels_file = trial.trial_dir / LABELS
    if not labels_file.is_file():
        raise DataError(LABELS, "the trial's label set is missing", source=trial.trial_dir)
    labels = json.loads(labels_file.read_text(encoding="utf-8"))
    config = trial_config(trial.trial_dir, ClassificationConfig)
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    texts = [e.prompt for e in data.build_splits(config.data, tokenizer).splits["test"]]
    texts = texts[:CHECK_TEXTS]
    out = Path(out_dir).resolve() if out_dir else trial.trial_dir.parent.parent / "export"
    clear_earlier_export(out)

    batch = tokenizer(texts, padding=True, truncation=True, max_length=config.data.max_length,
                      return_tensors="pt")
    base = classifier(model_path(config), labels, dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        adapter_logits = with_adapter(**batch).logits
        merged = with_adapter.merge_and_unload().eval()
        merged_logits = merged(**batch).logits
    out.mkdir(parents=True)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / LABELS).write_text(json.dumps(labels, ensure_ascii=False), encoding="utf-8")
    difference = float((adapter_logits - merged_logits).abs().max())
    same_class = bool(torch.equal(adapter_logits.argmax(-1), merged_logits.argmax(-1)))
    result = {
        **trial_summary(trial),
        "base_model": model_path(config),
        "model_type": merged.config.model_type,
        "labels": labels,
        "out_dir": str(out),
        "checks": {"merge": {"texts": len(texts), "max_abs_logit_diff": difference,
                             "same_classes": same_class,
                             "passed": difference <= TOLERANCE and same_class}},
        "ollama": NOT_FOR_OLLAMA,
        "files": file_listing(out),
    }
    result["passed"] = result["checks"]["merge"]["passed"]
    (out / "export.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    if not result["passed"]:
        raise RuntimeError(f"the merged model's logits differ from base + adapter by "
                           f"{difference:.2e}; see {out / 'export.json'}")
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What the launcher prints after an export."""
    merge = result["checks"]["merge"]
    return [
        f"exported trial {result['trial']} of study '{result['study']}' to {result['out_dir']}",
        f"  merged {result['model_type']} classifier ({', '.join(result['labels'])}): logits "
        f"equal base + adapter on {merge['texts']} test texts (max difference "
        f"{merge['max_abs_logit_diff']:.1e})",
        f"  load: AutoModelForSequenceClassification.from_pretrained('{result['out_dir']}')",
        f"  {NOT_FOR_OLLAMA}",
    ]
