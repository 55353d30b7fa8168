"""An objective that runs out of GPU memory on large batches, as CUDA would, on any machine."""

from __future__ import annotations

import torch

from objectives.base import TrialContext
from objectives.causal_lm_lora import CausalLMConfig, CausalLMLoRA

MAX_BATCH = 4


class OomLoRA(CausalLMLoRA):
    name = "oom_lora"

    def run(self, config: CausalLMConfig, context: TrialContext) -> None:
        if config.training.per_device_train_batch_size > MAX_BATCH:
            # The exception type the CUDA caching allocator raises.
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        super().run(config, context)
