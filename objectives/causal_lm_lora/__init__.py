"""LoRA supervised fine-tuning of a causal LM: config, data, embedded model, recipe, report
section and export to GGUF / Ollama. Heavy modules (torch, transformers) load on use."""

from objectives.causal_lm_lora.config import CausalLMConfig
from objectives.causal_lm_lora.objective import CausalLMLoRA

__all__ = ["CausalLMConfig", "CausalLMLoRA"]
