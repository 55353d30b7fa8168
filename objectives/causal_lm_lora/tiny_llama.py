"""The embedded default base model: a tiny Llama, built and briefly pre-trained on first use.

No model hub is needed: a byte-level BPE tokenizer is trained on the shipped finance-news text,
a Llama-architecture model (so exports fit llama.cpp and Ollama) is pre-trained on the same text
for a few hundred steps, and both are saved with ``save_pretrained``. From then on the model is
loaded through the ordinary ``from_pretrained`` path, like any real model.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from objectives.causal_lm_lora.config import BUILTIN  # noqa: F401 - the name spaces use

if TYPE_CHECKING:  # imported where the model is built: the search process only finds it
    from transformers import PreTrainedTokenizerFast

CORPUS = Path(__file__).resolve().parents[2] / "data" / "finance_news.txt"

SPECIAL_TOKENS = ["<|pad|>", "<|begin|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
# One turn: "<|role|>\ncontent<|end|>\n"; <|end|> is also EOS, so generation stops after a turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
MODEL = dict(
    vocab_size=1024, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
    tie_word_embeddings=True, rope_theta=10000.0,
)
PRETRAIN = dict(steps=300, batch_size=32, learning_rate=3e-3, max_length=48, seed=0)


def cache_root() -> Path:
    return Path(os.environ.get("FTSEARCH_CACHE", Path.home() / ".cache" / "ftsearch"))


def builtin_path() -> Path:
    """Where the built model lives; the name changes whenever its recipe or corpus does."""
    recipe = json.dumps([MODEL, PRETRAIN, CHAT_TEMPLATE, SPECIAL_TOKENS], sort_keys=True)
    digest = hashlib.sha256(recipe.encode() + CORPUS.read_bytes()).hexdigest()[:12]
    return cache_root() / f"tiny-llama-{digest}"


def ensure_builtin() -> Path:
    """Build the tiny model once; later calls return the cached folder."""
    path = builtin_path()
    if (path / "config.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a crash or a concurrent build never leaves half.
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        build(Path(tmp) / "model")
        try:
            (Path(tmp) / "model").rename(path)
        except OSError:
            if not (path / "config.json").is_file():
                raise
    return path


def train_tokenizer(lines: list[str]) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=MODEL["vocab_size"], special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|begin|>", eos_token="<|end|>",
        pad_token="<|pad|>", unk_token=None, chat_template=CHAT_TEMPLATE,
    )


def build(out: Path) -> None:
    """Train the tokenizer, pre-train the model on the corpus, save both to ``out``."""
    from transformers import (
        DataCollatorForLanguageModeling,
        LlamaConfig,
        LlamaForCausalLM,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(PRETRAIN["seed"])
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer = train_tokenizer(lines)
    config = LlamaConfig(
        **MODEL, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    texts = [f"{tokenizer.bos_token}{line}{tokenizer.eos_token}" for line in lines]
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True,
                        max_length=PRETRAIN["max_length"])["input_ids"]
    dataset = [{"input_ids": ids} for ids in encoded]
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch, max_steps=PRETRAIN["steps"],
            per_device_train_batch_size=PRETRAIN["batch_size"],
            learning_rate=PRETRAIN["learning_rate"], lr_scheduler_type="cosine",
            warmup_steps=0.05, weight_decay=0.01, save_strategy="no", report_to=[],
            logging_strategy="no", disable_tqdm=True, seed=PRETRAIN["seed"], use_cpu=True,
            dataloader_drop_last=True,
        )
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
        Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator).train()
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    print(ensure_builtin())
