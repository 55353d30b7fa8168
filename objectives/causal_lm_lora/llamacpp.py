"""llama.cpp itself (through llama-cpp-python), as Ollama runs an exported GGUF: its tokenizer,
logits and greedy completions against the merged model's, its own quantiser (the k-quants
Ollama's ``create --quantize`` makes), and each file's size, held-out perplexity and speed.

llama.cpp writes its notices to the process's stderr from C; every call here silences them,
since a user reads each line there as a problem.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from objectives.causal_lm_lora import data

# The k-quants, made by llama.cpp's quantiser from the f16 GGUF: its own mix of types per
# tensor (a tensor whose rows are not a multiple of 256 gets a fallback type).
FILE_TYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S"}
SPEED_TOKENS = 32  # tokens generated per prompt to measure tokens/s


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No output of llama.cpp's C code on this process's stdout and stderr."""
    with open(os.devnull, "w") as null:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def load(path: Path, context: int):
    from llama_cpp import Llama

    with quiet():
        return Llama(model_path=str(path), n_ctx=context, logits_all=True, verbose=False,
                     n_threads=torch.get_num_threads())


def quantize(source: Path, target: Path, kind: str) -> None:
    """``source`` (an f16 GGUF) quantised by llama.cpp into ``target`` as ``kind``."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FILE_TYPES[kind])
    params.nthread = torch.get_num_threads()
    with quiet():
        failed = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(),
                                                params)
    if failed:
        raise RuntimeError(f"llama.cpp could not quantise {source.name} to {kind}")


def tokenize(llm, text: str) -> list[int]:
    return llm.tokenize(text.encode(), add_bos=False, special=True)


def scores(llm, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits at every position of ``ids``."""
    llm.reset()
    with quiet():
        llm.eval(ids)
    return np.array(llm.scores[:len(ids)], dtype=np.float32)


def greedy(llm, ids: list[int], eos: int | None, limit: int) -> list[int]:
    """Up to ``limit`` greedy tokens after ``ids`` (stopping at ``eos`` unless None)."""
    llm.reset()
    completion: list[int] = []
    with quiet():
        for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            completion.append(int(token))
            if token == eos or len(completion) == limit:
                break
    return completion


def check(path: Path, tokenizer, prompt_ids: list[list[int]], merged_logits,
          reference: list[list[int]], new_tokens: int, compare) -> dict[str, Any]:
    """llama.cpp against the merged model: its tokenizer on the rendered prompts, its logits
    and greedy completions (``compare`` measures the logits' difference)."""
    llm = load(path, max(len(ids) for ids in prompt_ids) + new_tokens)
    try:
        tokens_match = all(tokenize(llm, tokenizer.decode(ids)) == ids for ids in prompt_ids)
        logits = [torch.from_numpy(scores(llm, ids)) for ids in prompt_ids]
        completions = [greedy(llm, ids, tokenizer.eos_token_id, new_tokens)
                       for ids in prompt_ids]
    finally:
        llm.close()
    result = compare(merged_logits, logits)
    result["tokenizer_ids_match"] = tokens_match
    result["greedy_completions_match"] = completions == reference
    return result


def figures(path: Path, examples: list[dict[str, list[int]]],
            prompt_ids: list[list[int]]) -> dict[str, Any]:
    """A GGUF as llama.cpp runs it: its size, the held-out answer perplexity (as the trial's
    test_loss measures it) and greedy generation speed in tokens/s."""
    context = max(len(e["input_ids"]) for e in [*examples, {"input_ids": []}]) + \
        max(len(ids) for ids in prompt_ids) + SPEED_TOKENS
    llm = load(path, context)
    try:
        total, count = 0.0, 0
        for example in examples:
            logits = torch.from_numpy(scores(llm, example["input_ids"]))[:-1]
            labels = torch.tensor(example["labels"][1:])
            keep = labels != data.IGNORE_INDEX
            total += float(torch.nn.functional.cross_entropy(logits[keep], labels[keep],
                                                             reduction="sum"))
            count += int(keep.sum())
        started, generated = time.perf_counter(), 0
        for ids in prompt_ids:
            generated += len(greedy(llm, ids, None, SPEED_TOKENS))
        seconds = time.perf_counter() - started
    finally:
        llm.close()
    return {"bytes": path.stat().st_size, "perplexity": math.exp(total / count),
            "tokens_per_s": generated / seconds}
