"""Export a study's winning trial for Ollama, and prove the export computes what training did.

studies/<name>/export/ gets the peft adapter, the merged model (safetensors), a GGUF file of it
(f16 or q8_0 written with the ``gguf`` package in llama.cpp's layout; q4_k_m or q4_k_s made
from that f16 file by llama.cpp's own quantiser), a Modelfile for that GGUF, a
Modelfile.adapter (a GGUF of the base model + the adapter) and export.json. The proof: the
GGUF this writer made is read back with ``gguf.GGUFReader`` and with transformers' GGUF loader,
whose logits, greedy completions and loss on held-out test prompts are compared with the
merged model's, and the merged model is compared with base + adapter. When llama-cpp-python is
installed, llama.cpp itself tokenizes, scores and completes the same prompts too, and measures
each file's size, held-out perplexity and tokens/s against the f16 file's.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType, LlamaFileType
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from objectives.adapter import (
    clear_earlier_export,
    file_listing,
    saved_adapter,
    trial_config,
    trial_summary,
)
from objectives.base import DataError, FinishedTrial
from objectives.causal_lm_lora import data, llamacpp
from objectives.causal_lm_lora.config import CausalLMConfig, model_config, model_path
from objectives.trainer import quiet_transformers

SUPPORTED_ARCHITECTURES = ("llama",)
# name -> (type of 2-D tensors, file type recorded in the header)
QUANTIZATIONS = {
    "f16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}
# Made by llama.cpp's own quantiser from the f16 GGUF (llama-cpp-python, the [llama] extra).
TYPES = (*QUANTIZATIONS, *llamacpp.FILE_TYPES)
# Largest |logit| difference between the GGUF (as transformers loads it) and the merged fp32
# model on the held-out prompts, measured on the tiny model: f16 rounds the weights, q8_0
# quantizes them to 8 bits. Recorded, not enforced: it grows with depth and width.
LOGIT_TOLERANCE = {"f16": 0.05, "q8_0": 0.5}
# Enforced for any model: the held-out perplexity may rise this much (relative) ...
PERPLEXITY_TOLERANCE = {"f16": 0.005, "q8_0": 0.02, "q4_k_m": 0.15, "q4_k_s": 0.15}
# ... and the GGUF must compute what the merged model computes with its weights rounded as the
# file stores them, to float32 noise; so must the merged model against base + adapter.
EXACT_TOLERANCE = 1e-4
PROMPTS = 4  # held-out prompts whose logits and greedy completions are compared
LOSS_EXAMPLES = 8  # held-out conversations whose answer loss is compared
NEW_TOKENS = 12
# The one chat format the Modelfile TEMPLATE translates: "<|role|>\ncontent<|end|>\n" a turn.
TURN = "<|{role}|>\n{content}<|end|>\n"
GENERATION_PROMPT = "<|assistant|>\n"
CHAT_PROBE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi\nyou"},
              {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again?"}]
OLLAMA_TEMPLATE = ("{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}"
                   "<|assistant|>\n")
DEFAULT_PARAMETERS: dict[str, float | int] = {
    "temperature": 0.2, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1,
}
OLLAMA_PARAMETERS = frozenset({
    "mirostat", "mirostat_eta", "mirostat_tau", "num_ctx", "repeat_last_n", "repeat_penalty",
    "temperature", "seed", "stop", "num_predict", "top_k", "top_p", "min_p", "typical_p",
    "presence_penalty", "frequency_penalty", "num_keep", "num_batch", "num_gpu", "num_thread",
})


def export_trial(
    trial: FinishedTrial,
    out_dir: Path | None = None,
    quantize: str = "f16",
    parameters: dict[str, float | int | str] | None = None,
) -> dict[str, Any]:
    """Export one finished trial (default folder: studies/<name>/export); returns
    export.json's content.

    Raises DataError for input that cannot be exported (before writing anything) and
    RuntimeError when a round-trip check fails (export.json then records the failing figures).
    """
    quiet_transformers()
    if quantize not in TYPES:
        raise DataError("", f"unknown quantization {quantize!r}; choose "
                        f"{', '.join(TYPES[:-1])} or {TYPES[-1]}", source="--quantize")
    if quantize in llamacpp.FILE_TYPES and not llamacpp.available():
        raise DataError("", f"{quantize} is made by llama.cpp's own quantiser: pip install "
                        "'ftsearch[llama]' (llama-cpp-python)", source="--quantize")
    # This writer makes f16 and q8_0; a k-quant is made from its f16 file by llama.cpp.
    written = quantize if quantize in QUANTIZATIONS else "f16"
    sampling = _sampling_parameters(parameters)
    trial_dir = trial.trial_dir
    study_dir = trial_dir.parent.parent
    adapter_dir = saved_adapter(trial)
    config = trial_config(trial_dir, CausalLMConfig)
    if config.data.chunk:
        raise DataError("data.chunk", "a continued-pretraining trial has no instruction data "
                        "to check the export with; export the instruction-tuned study that "
                        "continues from it", source=trial_dir)
    base_path = model_path(config)
    hf_config = model_config(config, base_path)
    _check_supported(hf_config, base_path)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    _check_chat_format(tokenizer, adapter_dir)
    conversations = _held_out(config, tokenizer)
    prompts = [tokenizer.apply_chat_template(c[:-1], tokenize=False, add_generation_prompt=True)
               for c in conversations[:PROMPTS]]
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    examples = [data.tokenize(c, tokenizer, config.data.max_length)
                for c in conversations[:LOSS_EXAMPLES]]

    out = Path(out_dir).resolve() if out_dir else study_dir / "export"
    name = _model_name(trial.study_name, trial.number)
    gguf_name, reference_name = f"{name}-{quantize}.gguf", f"{name}-f16.gguf"
    clear_earlier_export(out)
    out.mkdir(parents=True)
    shutil.copytree(adapter_dir, out / "adapter")

    # Base + adapter, then merged: the adapter's logits are kept to check the merge.
    base = AutoModelForCausalLM.from_pretrained(base_path, config=hf_config, dtype=torch.float32)
    # Modelfile.adapter's base: a GGUF from this writer rather than the base folder, since
    # Ollama's own import of a folder guesses the pre-tokenizer and ignores transformers'
    # rope_parameters, and the trial may have changed the base config (config_overrides).
    base_gguf = f"base-{quantize}.gguf"
    _write_gguf(base, tokenizer, out / f"base-{written}.gguf", written, f"{name}-base")
    base_check = _read_back(out / f"base-{written}.gguf", base, tokenizer, written)
    peft_model = PeftModel.from_pretrained(base, adapter_dir).eval()
    adapter_logits = _logits(peft_model, prompt_ids)
    peft_model.merge_and_unload().save_pretrained(out / "merged", safe_serialization=True)
    tokenizer.save_pretrained(out / "merged")
    del base, peft_model
    gc.collect()

    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32).eval()
    merged_logits = _logits(merged, prompt_ids)
    merge_check = _compare(adapter_logits, merged_logits)
    merge_check["passed"] = merge_check["max_abs_logit_diff"] <= EXACT_TOLERANCE \
        and merge_check["next_tokens_match"]
    if llamacpp.available() and written != "f16":  # llama.cpp's figures are against f16
        _write_gguf(merged, tokenizer, out / reference_name, "f16", name)
    _write_gguf(merged, tokenizer, out / f"{name}-{written}.gguf", written, name)
    context = merged.config.max_position_embeddings
    (out / "Modelfile").write_text(
        _modelfile(f"./{gguf_name}", None, tokenizer, sampling, context, trial), encoding="utf-8")
    (out / "Modelfile.adapter").write_text(
        _modelfile(f"./{base_gguf}", "./adapter", tokenizer, sampling, context, trial),
        encoding="utf-8")
    checks = {"merge": merge_check, "base_gguf_reader": base_check,
              **_round_trip(out, f"{name}-{written}.gguf", merged, merged_logits, tokenizer,
                            prompt_ids, examples, written)}
    figures = {}
    if llamacpp.available():
        if quantize != written:  # the k-quant, of the merged model and of the base
            llamacpp.quantize(out / reference_name, out / gguf_name, quantize)
            llamacpp.quantize(out / "base-f16.gguf", out / base_gguf, quantize)
            (out / "base-f16.gguf").unlink()
        figures = {kind: llamacpp.figures(out / f"{name}-{kind}.gguf", examples, prompt_ids)
                   for kind in dict.fromkeys(("f16", quantize))}
        if quantize != "f16":
            (out / reference_name).unlink()  # measured; the export is the quantised file
            checks["llama_cpp_quantized"] = _quantized_check(figures, quantize, out / gguf_name)

    result = {
        **trial_summary(trial),
        "base_model": base_path,
        "quantize": quantize,
        "gguf": gguf_name,
        "ollama_name": name,
        "out_dir": str(out),
        "held_out_prompts": len(prompt_ids),
        "llama_cpp": figures,
        "checks": checks,
        "passed": all(check["passed"] for check in checks.values()),
        "files": file_listing(out),
    }
    (out / "export.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    if not result["passed"]:
        failed = [key for key, check in checks.items() if not check["passed"]]
        raise RuntimeError(f"export round trip failed ({', '.join(failed)}); see "
                           f"{out / 'export.json'}")
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What the launcher prints after an export: the figures and the Ollama commands."""
    out = Path(result["out_dir"])
    checks = result["checks"]
    gguf_check = checks["transformers_gguf"]
    loss = checks["held_out_loss"]
    size = result["files"][result["gguf"]]["bytes"]
    # A k-quant is checked in transformers through the f16 file llama.cpp made it from.
    checked = "" if result["quantize"] in QUANTIZATIONS else "f16 source: "
    lines = [
        f"exported trial {result['trial']} of study '{result['study']}' to {out}",
        f"    {result['gguf']}: {size / 1e6:.2f} MB ({result['quantize']})",
        f"    {checked}max |logit diff| vs merged model: {gguf_check['max_abs_logit_diff']:.2e} "
        f"(tolerance {gguf_check['tolerance']:g}); held-out perplexity "
        f"{loss['gguf']['perplexity']:.4f} vs {loss['merged']['perplexity']:.4f}",
        f"    merged vs base + adapter: {checks['merge']['max_abs_logit_diff']:.2e}",
    ]
    if "llama_cpp" in checks:
        lines.append(f"    llama.cpp greedy completions match: "
                     f"{checks['llama_cpp']['greedy_completions_match']}")
    for kind, figure in result.get("llama_cpp", {}).items():
        lines.append(f"    in llama.cpp, {kind}: {figure['bytes'] / 1e6:.2f} MB, held-out "
                     f"perplexity {figure['perplexity']:.4f}, {figure['tokens_per_s']:.0f} "
                     "tokens/s")
    lines += [
        f"ollama create {result['ollama_name']} -f {out / 'Modelfile'}",
        f"ollama run {result['ollama_name']}",
        f"(or base model + adapter: ollama create {result['ollama_name']}-adapter "
        f"-f {out / 'Modelfile.adapter'})",
    ]
    return lines


def _bad(source: str | Path, field: str, problem: str) -> DataError:
    return DataError(field, problem, source=source)


def _check_supported(config, base_path: str) -> None:
    """Only what this writer lays out as llama.cpp expects; refused before any file is written."""
    arch = config.model_type
    if arch not in SUPPORTED_ARCHITECTURES:
        raise _bad(base_path, "model_type", f"architecture {arch!r} cannot be exported "
                         f"to GGUF; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    extras = [f"rope_type {rope}"] if rope != "default" else []
    extras += [key for key in ("attention_bias", "mlp_bias") if getattr(config, key, False)]
    if config.hidden_act != "silu":
        extras.append(f"hidden_act {config.hidden_act}")
    if extras:
        raise _bad(base_path, "config", f"llama variant with {', '.join(extras)} cannot "
                         "be exported; supported: plain llama (silu, no biases, default rope)")


def _check_chat_format(tokenizer, source: Path) -> None:
    """The Modelfile TEMPLATE is a translation of one chat format; any other is refused."""
    expected = "".join(TURN.format(**m) for m in CHAT_PROBE) + GENERATION_PROMPT
    rendered = tokenizer.apply_chat_template(CHAT_PROBE, tokenize=False,
                                             add_generation_prompt=True) \
        if tokenizer.chat_template else None
    if rendered != expected:
        raise _bad(source, "chat_template", "the tokenizer's chat template is not the "
                         "'<|role|>\\ncontent<|end|>\\n' format the Ollama template renders")


def _sampling_parameters(parameters: dict[str, Any] | None) -> dict[str, Any]:
    merged = {**DEFAULT_PARAMETERS, **(parameters or {})}
    for key, value in merged.items():
        if key not in OLLAMA_PARAMETERS:
            raise _bad("parameters", key, "not an Ollama PARAMETER; known: "
                             f"{', '.join(sorted(OLLAMA_PARAMETERS))}")
        if not isinstance(value, (int, float, str)) or (isinstance(value, str) and '"' in value):
            raise _bad("parameters", key, f"value {value!r} must be a number or a string "
                             "without double quotes")
    return merged


def _model_name(study: str, number: int) -> str:
    # Ollama model names: lower-case letters, digits, '-', '_' and '.'.
    return re.sub(r"[^a-z0-9._-]", "-", f"{study.lower()}-trial{number}")


def _held_out(config: CausalLMConfig, tokenizer) -> list[list[dict[str, str]]]:
    """The trial's test split: conversations neither training nor model selection saw."""
    built = data.build_splits(config.data, tokenizer, None)
    return [data.conversation(example) for example in built.splits["test"]]


@torch.no_grad()
def _logits(model, prompt_ids: list[list[int]]) -> list[torch.Tensor]:
    return [model(torch.tensor([ids])).logits[0].float() for ids in prompt_ids]


def _compare(reference: list[torch.Tensor], other: list[torch.Tensor]) -> dict[str, Any]:
    pairs = list(zip(reference, other, strict=True))
    same = sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in pairs)
    return {
        "max_abs_logit_diff": _max_diff(reference, other),
        "argmax_agreement": same / sum(len(a) for a in reference),
        "next_tokens_match": all(int(a[-1].argmax()) == int(b[-1].argmax()) for a, b in pairs),
    }


def _max_diff(reference: list[torch.Tensor], other: list[torch.Tensor]) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(reference, other, strict=True))


def _round_trip(out: Path, gguf_name: str, merged, merged_logits: list[torch.Tensor], tokenizer,
                prompt_ids: list[list[int]], examples: list[dict[str, list[int]]],
                quantize: str) -> dict[str, Any]:
    """The written GGUF against the merged model it was made from (whose weights this rounds
    in place as the file stores them, rather than holding a second copy)."""
    reference = _greedy(merged, prompt_ids, tokenizer.eos_token_id)
    merged_loss = _mean_loss(merged, examples)
    checks = {"gguf_reader": _read_back(out / gguf_name, merged, tokenizer, quantize)}
    _store_as_gguf(merged, quantize)
    stored_logits = _logits(merged, prompt_ids)

    # transformers' GGUF loader draws a bar of its own (plain tqdm) on stderr.
    with contextlib.redirect_stderr(io.StringIO()):
        gguf_model = AutoModelForCausalLM.from_pretrained(out, gguf_file=gguf_name,
                                                          dtype=torch.float32).eval()
        gguf_tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=gguf_name)
    gguf_logits = _logits(gguf_model, prompt_ids)
    check = _compare(merged_logits, gguf_logits)
    check["tolerance"] = LOGIT_TOLERANCE[quantize]
    check["within_tolerance"] = check["max_abs_logit_diff"] <= check["tolerance"]
    check["max_abs_logit_diff_vs_stored_weights"] = _max_diff(stored_logits, gguf_logits)
    check["tokenizer_ids_match"] = all(
        gguf_tokenizer(tokenizer.decode(ids), add_special_tokens=False)["input_ids"] == ids
        for ids in prompt_ids)
    check["greedy_completions_match"] = _greedy(gguf_model, prompt_ids,
                                                tokenizer.eos_token_id) == reference
    check["completions"] = [tokenizer.decode(c) for c in reference]
    check["passed"] = (check["max_abs_logit_diff_vs_stored_weights"] <= EXACT_TOLERANCE
                       and check["tokenizer_ids_match"]
                       # q8_0 may flip near-ties; it is judged on perplexity instead
                       and (quantize != "f16" or (check["next_tokens_match"]
                                                  and check["greedy_completions_match"])))
    checks["transformers_gguf"] = check
    gguf_loss = _mean_loss(gguf_model, examples)
    change = math.exp(gguf_loss - merged_loss) - 1
    checks["held_out_loss"] = {
        "examples": len(examples),
        "merged": {"loss": merged_loss, "perplexity": math.exp(merged_loss)},
        "gguf": {"loss": gguf_loss, "perplexity": math.exp(gguf_loss)},
        "perplexity_change": change,
        "tolerance": PERPLEXITY_TOLERANCE[quantize],
        "passed": change <= PERPLEXITY_TOLERANCE[quantize],
    }
    del gguf_model
    if llamacpp.available():
        check = llamacpp.check(out / gguf_name, tokenizer, prompt_ids, merged_logits,
                               reference, NEW_TOKENS, _compare)
        # llama.cpp also rounds activations (to f16, or to 8 bits for q8_0): judged on text.
        check["passed"] = check["tokenizer_ids_match"] and (
            quantize != "f16" or check["greedy_completions_match"])
        checks["llama_cpp"] = check
    return checks


@torch.no_grad()
def _greedy(model, prompt_ids: list[list[int]], eos: int) -> list[list[int]]:
    completions = []
    for ids in prompt_ids:
        tokens = list(ids)
        for _ in range(NEW_TOKENS):
            token = int(model(torch.tensor([tokens])).logits[0, -1].argmax())
            tokens.append(token)
            if token == eos:
                break
        completions.append(tokens[len(ids):])
    return completions


@torch.no_grad()
def _mean_loss(model, examples: list[dict[str, list[int]]]) -> float:
    """Answer-token cross-entropy over all examples, as the trial's test_loss measures it."""
    total, count = 0.0, 0
    for example in examples:
        logits = model(torch.tensor([example["input_ids"]])).logits[0, :-1].float()
        labels = torch.tensor(example["labels"][1:])
        keep = labels != data.IGNORE_INDEX
        total += float(torch.nn.functional.cross_entropy(logits[keep], labels[keep],
                                                         reduction="sum"))
        count += int(keep.sum())
    return total / count


def _permute_rotary(weights: np.ndarray, heads: int) -> np.ndarray:
    """Reorder each head's rows from transformers' rotate-half layout to llama.cpp's
    interleaved pairs, as llama.cpp's converter does for q and k of Llama."""
    half = weights.shape[0] // heads // 2
    return (weights.reshape(heads, 2, half, *weights.shape[1:]).swapaxes(1, 2)
            .reshape(weights.shape))


def _gguf_tensors(model) -> list[tuple[str, np.ndarray]]:
    """(llama.cpp name, float32 array) for every weight, q and k permuted."""
    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tensors = []
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp falls back to token_embd when output is absent
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise _bad(config.name_or_path or "model", hf_name,
                             "tensor has no llama.cpp name; the model is not plain llama")
        data = tensor.detach().float().numpy()
        if ".attn_q." in name:
            data = _permute_rotary(data, config.num_attention_heads)
        elif ".attn_k." in name:
            data = _permute_rotary(data, config.num_key_value_heads)
        tensors.append((name, data))
    return tensors


def _storage_type(shape: tuple[int, ...], quantize: str) -> GGMLQuantizationType:
    """How the file stores a tensor: norms in float32 as llama.cpp keeps them, matrices in the
    chosen type, or f16 where rows do not split into whole quantization blocks."""
    qtype = QUANTIZATIONS[quantize][0]
    if len(shape) == 1:
        return GGMLQuantizationType.F32
    if shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        return GGMLQuantizationType.F16
    return qtype


@torch.no_grad()
def _store_as_gguf(model, quantize: str) -> None:
    """Round the model's weights in place as the GGUF stores them (the q/k row permutation
    moves whole rows, and quantization blocks lie within rows, so it needs no undoing)."""
    for param in model.parameters():  # a tied embedding is listed once
        data = param.detach().numpy()
        qtype = _storage_type(data.shape, quantize)
        stored = gguf.quants.dequantize(gguf.quants.quantize(data, qtype), qtype)
        param.copy_(torch.from_numpy(stored.reshape(data.shape)))


def _write_gguf(model, tokenizer, path: Path, quantize: str, name: str) -> None:
    config = model.config
    qtype, file_type = QUANTIZATIONS[quantize]
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(name)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_file_type(file_type)
    if qtype != GGMLQuantizationType.F16:
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, tokenizer, config.vocab_size)

    for tensor_name, weights in _gguf_tensors(model):
        stored = _storage_type(weights.shape, quantize)
        writer.add_tensor(tensor_name, gguf.quants.quantize(weights, stored), raw_dtype=stored)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer, vocab_size: int) -> None:
    """A byte-level BPE tokenizer as llama.cpp's "gpt2" model with the GPT-2 split."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = spec.get("pre_tokenizer") or {}
    if spec["model"]["type"] != "BPE" or pre.get("type") != "ByteLevel" \
            or not pre.get("use_regex", True) or pre.get("add_prefix_space"):
        raise _bad("tokenizer", "pre_tokenizer", "only byte-level BPE tokenizers with "
                         "the GPT-2 split can be exported to GGUF")
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(max(vocab_size, len(by_id))):
        if index not in by_id:  # embedding rows past the vocabulary, as llama.cpp pads them
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[index])
        if index in added:
            types.append(gguf.TokenType.CONTROL if added[index].special
                         else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # llama.cpp's name for the GPT-2 split
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for token_id, add in ((tokenizer.bos_token_id, writer.add_bos_token_id),
                          (tokenizer.eos_token_id, writer.add_eos_token_id),
                          (tokenizer.pad_token_id, writer.add_pad_token_id)):
        if token_id is not None:
            add(token_id)
    # The chat format starts with "<|role|>", never BOS: training saw none.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(tokenizer.chat_template)


def _read_back(path: Path, model, tokenizer, quantize: str) -> dict[str, Any]:
    """The file as gguf's own reader sees it: tensor names, shapes, types and metadata."""
    reader = gguf.GGUFReader(str(path))
    config = model.config
    expected = dict(_gguf_tensors(model))
    found = {t.name: t for t in reader.tensors}

    def field(key: str):
        return reader.get_field(key).contents() if reader.get_field(key) else None

    metadata = {
        "general.architecture": "llama",
        "llama.block_count": config.num_hidden_layers,
        "llama.context_length": config.max_position_embeddings,
        "llama.embedding_length": config.hidden_size,
        "llama.feed_forward_length": config.intermediate_size,
        "llama.attention.head_count": config.num_attention_heads,
        "llama.attention.head_count_kv": config.num_key_value_heads,
        "general.file_type": int(QUANTIZATIONS[quantize][1]),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.eos_token_id": tokenizer.eos_token_id,
        "tokenizer.chat_template": tokenizer.chat_template,
    }
    wrong = [key for key, value in metadata.items() if field(key) != value]
    # GGUF lists dimensions fastest first, the reverse of numpy's order.
    bad_shapes = [name for name, data in expected.items() if name in found
                  and tuple(int(d) for d in found[name].shape[::-1]) != data.shape]
    types: dict[str, int] = {}
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
    return {
        "tensors": len(found),
        "tensor_types": types,
        "names_match": set(found) == set(expected),
        "shapes_match": not bad_shapes,
        "metadata_mismatches": wrong,
        "passed": set(found) == set(expected) and not bad_shapes and not wrong,
    }


def _quantized_check(figures: dict[str, dict[str, Any]], quantize: str,
                     path: Path) -> dict[str, Any]:
    """A quantised file as llama.cpp runs it, against the f16 file: the held-out perplexity
    may rise by PERPLEXITY_TOLERANCE, and the file must be smaller. Its tensor types are
    recorded: llama.cpp gives a tensor whose rows are not a multiple of 256 a fallback type."""
    change = figures[quantize]["perplexity"] / figures["f16"]["perplexity"] - 1
    types: dict[str, int] = {}
    for tensor in gguf.GGUFReader(path).tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
    return {"tensor_types": types, "perplexity_change": change,
            "tolerance": PERPLEXITY_TOLERANCE[quantize],
            "size_ratio": figures[quantize]["bytes"] / figures["f16"]["bytes"],
            "passed": change <= PERPLEXITY_TOLERANCE[quantize]
            and figures[quantize]["bytes"] < figures["f16"]["bytes"]}


def _modelfile(source: str, adapter: str | None, tokenizer, sampling: dict[str, Any],
               context: int, trial: FinishedTrial) -> str:
    lines = [f"# Trial {trial.number} (value {trial.value:.4f}), exported by ftsearch.",
             f"FROM {source}"]
    if adapter:
        lines += ["# Ollama 0.12.11 and later look for model*.safetensors in an adapter folder",
                  "# and miss peft's adapter_model.safetensors (ollama/ollama#13314).",
                  f"ADAPTER {adapter}"]
    lines.append(f'TEMPLATE """{OLLAMA_TEMPLATE}"""')
    lines.append(f'PARAMETER stop "{tokenizer.eos_token}"')
    # Past its trained context the model's positions are untested.
    lines += [f'PARAMETER {key} "{value}"' if isinstance(value, str) else f"PARAMETER {key} {value}"
              for key, value in {"num_ctx": context, **sampling}.items()]
    return "\n".join(lines) + "\n"
