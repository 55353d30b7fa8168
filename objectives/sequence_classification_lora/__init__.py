"""LoRA fine-tuning of a pretrained encoder as a sequence classifier (MiniLM by default)."""

from objectives.sequence_classification_lora.config import ClassificationConfig
from objectives.sequence_classification_lora.objective import SequenceClassificationLoRA

__all__ = ["ClassificationConfig", "SequenceClassificationLoRA"]
