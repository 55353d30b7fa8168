"""Exporting a trial for Ollama: a real fine-tuned trial, GGUF round trips, the Modelfiles."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
from pathlib import Path

import gguf
import optuna
import pytest
import yaml
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial
from transformers import AutoTokenizer, GPT2Config

from objectives.base import DataError, TrialContext
from objectives.causal_lm_lora import CausalLMConfig, CausalLMLoRA
from objectives.causal_lm_lora.export import LOGIT_TOLERANCE, PERPLEXITY_TOLERANCE
from search.errors import InputError
from search.storage import ResolvedStudy, StudyPaths, resolve_study
from tests.fakes import Recorder

# Real fine-tunes of the tiny model: seconds each, so outside make test-fast.
pytestmark = pytest.mark.slow

# Ollama's Modelfile instructions and template variables (docs/modelfile.md, docs/template.md).
INSTRUCTIONS = {"FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE",
                "REQUIRES"}
TEMPLATE_VARIABLES = {"System", "Prompt", "Response", "Suffix", "Messages", "Role", "Content",
                      "Thinking", "ToolCalls", "Function", "Name", "Arguments", "Tools", "Think",
                      "ThinkLevel", "IsThinkSet"}
PARAMETERS = {"temperature": 0.7, "seed": 7}
# Conversations the Modelfile's TEMPLATE must render as the chat template does: one turn; a
# system prompt and several turns; the same in Chinese.
CHATS = (
    [{"role": "user", "content": "Classify: shares rose 5%."}],
    [{"role": "system", "content": "Answer in one word."},
     {"role": "user", "content": "Line one\nline two"},
     {"role": "assistant", "content": "positive"},
     {"role": "user", "content": "And now?"}],
    [{"role": "system", "content": "用一个词回答。"},
     {"role": "user", "content": "股价上涨了5%，情绪如何？"},
     {"role": "assistant", "content": "积极"},
     {"role": "user", "content": "那么“亏损扩大”呢？"}],
)


def export_trial(study_dir: Path, trial: int | None = None, out: Path | None = None,
                 quantize: str = "f16", parameters: dict | None = None) -> dict:
    """What `launcher.py export` does for the study in study_dir/optuna.db; returns
    export.json's content."""
    found = resolve_study(f"sqlite:///{study_dir / 'optuna.db'}")
    resolved = ResolvedStudy(found.url, found.study, StudyPaths(study_dir))
    out = out or study_dir / "export"
    CausalLMLoRA().export(resolved.finished(resolved.trial(trial)), out,
                          {"quantize": quantize, "parameters": parameters})
    return json.loads((out / "export.json").read_text())


def make_study(root: Path, *trials: tuple[TrialState, Path]) -> Path:
    """An Optuna study in root/optuna.db whose trials point at the given folders."""
    root.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=root.name, storage=f"sqlite:///{root / 'optuna.db'}")
    study.set_user_attr("metric", "eval_loss")
    study.set_user_attr("objective", "causal_lm_lora")
    for state, trial_dir in trials:
        study.add_trial(create_trial(
            state=state, value=0.5 if state == TrialState.COMPLETE else None,
            params={"lora.r": 4}, distributions={"lora.r": IntDistribution(2, 8)},
            user_attrs={"trial_dir": str(trial_dir)}))
    return root


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A study with one real COMPLETE trial: 20 LoRA steps on the tiny model with 8 heads
    instead of its 4, so the base config override and the q/k head layout are exercised."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = tmp_path_factory.mktemp("studies") / "tiny"
    trial_dir = root / "trials" / "0000"
    trial_dir.mkdir(parents=True)
    config = CausalLMConfig.model_validate({
        "model": {"config_overrides": {"num_attention_heads": 8}},
        "data": {"max_length": 64},
        "training": {"learning_rate": 1e-2, "max_steps": 20, "eval_steps": 10,
                     "per_device_eval_batch_size": 64},
        "lora": {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"},
    })
    (trial_dir / "config.yaml").write_text(yaml.safe_dump(
        {"trial": 0, "params": {"lora.r": 4}, **config.model_dump(mode="json")}))
    objective = CausalLMLoRA()
    objective.prepare(config, root / "prepared")
    objective.run(config, TrialContext(0, trial_dir, root / "prepared", Recorder(), threads=2))
    return make_study(root, (TrialState.COMPLETE, trial_dir))


@pytest.fixture(scope="module")
def exports(study: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("exports")
    return {
        "f16": export_trial(study, None, None, "f16", parameters=PARAMETERS),
        "q8_0": export_trial(study, 0, out / "q8", "q8_0"),
        "q4_k_m": export_trial(study, 0, out / "q4_k_m", "q4_k_m"),
        "q4_k_s": export_trial(study, 0, out / "q4_k_s", "q4_k_s"),
    }


def test_f16_round_trip_matches_the_merged_model(exports: dict[str, dict]) -> None:
    result = exports["f16"]
    assert result["passed"] and result["trial"] == 0
    checks = result["checks"]
    assert checks["merge"]["max_abs_logit_diff"] < 1e-4
    assert checks["base_gguf_reader"]["passed"]
    assert checks["gguf_reader"]["names_match"] and checks["gguf_reader"]["shapes_match"]
    assert not checks["gguf_reader"]["metadata_mismatches"]
    # 2 layers x 9 tensors + token_embd + output_norm; output is tied to token_embd.
    assert checks["gguf_reader"]["tensors"] == 20
    gguf = checks["transformers_gguf"]
    assert gguf["max_abs_logit_diff"] <= LOGIT_TOLERANCE["f16"]
    assert gguf["max_abs_logit_diff_vs_stored_weights"] < 1e-4  # the file is the merged model
    assert gguf["next_tokens_match"] and gguf["greedy_completions_match"]
    assert gguf["tokenizer_ids_match"]
    assert abs(checks["held_out_loss"]["perplexity_change"]) < 0.005
    # llama.cpp itself, as Ollama runs the file: the same tokens and the same greedy answers.
    assert checks["llama_cpp"]["tokenizer_ids_match"]
    assert checks["llama_cpp"]["greedy_completions_match"]
    assert list(result["llama_cpp"]) == ["f16"]
    figure = result["llama_cpp"]["f16"]
    assert figure["bytes"] == result["files"][result["gguf"]]["bytes"]
    assert figure["perplexity"] == pytest.approx(
        checks["held_out_loss"]["gguf"]["perplexity"], rel=0.01)  # llama.cpp ~ transformers
    assert figure["tokens_per_s"] > 0


def test_q8_0_round_trip_is_close_and_smaller(exports: dict[str, dict]) -> None:
    f16, q8 = exports["f16"], exports["q8_0"]
    assert q8["passed"]
    gguf = q8["checks"]["transformers_gguf"]
    assert gguf["max_abs_logit_diff"] <= LOGIT_TOLERANCE["q8_0"]
    assert gguf["max_abs_logit_diff_vs_stored_weights"] < 1e-4
    assert q8["checks"]["gguf_reader"]["tensor_types"] == {"Q8_0": 15, "F32": 5}
    f16_ppl = f16["checks"]["held_out_loss"]["gguf"]["perplexity"]
    q8_ppl = q8["checks"]["held_out_loss"]["gguf"]["perplexity"]
    assert abs(q8_ppl - f16_ppl) / f16_ppl < 0.02
    assert q8["files"][q8["gguf"]]["bytes"] < 0.6 * f16["files"][f16["gguf"]]["bytes"]


@pytest.mark.parametrize("kind", ["q8_0", "q4_k_m", "q4_k_s"])
def test_every_type_is_measured_in_llama_cpp_against_f16(exports: dict[str, dict],
                                                         kind: str) -> None:
    result = exports[kind]
    assert result["passed"], result["checks"]
    assert list(result["llama_cpp"]) == ["f16", kind]
    f16, quantised = result["llama_cpp"]["f16"], result["llama_cpp"][kind]
    assert quantised["bytes"] == result["files"][result["gguf"]]["bytes"] < f16["bytes"]
    assert quantised["perplexity"] <= f16["perplexity"] * (1 + PERPLEXITY_TOLERANCE[kind])
    assert quantised["tokens_per_s"] > 0
    out = Path(result["out_dir"])
    assert result["gguf"] == f"tiny-trial0-{kind}.gguf"
    # The f16 file was the reference only; the Modelfiles name the quantised files.
    assert sorted(p.name for p in out.glob("*.gguf")) == [f"base-{kind}.gguf", result["gguf"]]
    assert ("FROM", f"./{result['gguf']}") in parse_modelfile(out / "Modelfile")
    assert ("FROM", f"./base-{kind}.gguf") in parse_modelfile(out / "Modelfile.adapter")


def test_a_k_quant_is_llama_cpps_own_and_it_generates_from_it(exports: dict[str, dict]) -> None:
    from llama_cpp import Llama

    result = exports["q4_k_m"]
    path = Path(result["out_dir"]) / result["gguf"]
    types = {tensor.tensor_type.name for tensor in gguf.GGUFReader(path).tensors}
    # The tiny model's rows (128, 352) are not multiples of 256: llama.cpp's fallbacks.
    assert types == {"Q5_0", "Q8_0", "F32"}, types
    assert result["checks"]["llama_cpp_quantized"]["tensor_types"] == {"Q5_0": 12, "F32": 5,
                                                                      "Q8_0": 3}
    assert result["checks"]["llama_cpp_quantized"]["size_ratio"] < 0.6
    with contextlib.closing(Llama(model_path=str(path), n_ctx=128, verbose=False)) as llm:
        text = llm.create_completion("<|user|>\nClassify: shares rose 5%.<|end|>\n"
                                     "<|assistant|>\n", max_tokens=8, temperature=0.0)
    assert text["usage"]["completion_tokens"] > 0


def test_a_type_without_llama_cpp_names_the_package(study: Path, tmp_path: Path,
                                                    monkeypatch) -> None:
    from objectives.causal_lm_lora import llamacpp

    monkeypatch.setattr(llamacpp, "available", lambda: False)
    with pytest.raises(DataError, match=r"q4_k_m is made by llama.cpp's own quantiser: pip "
                       r"install 'ftsearch\[llama\]' \(llama-cpp-python\)"):
        export_trial(study, None, tmp_path / "x", "q4_k_m")
    assert not (tmp_path / "x").exists()


def test_export_folder_holds_adapter_merged_model_and_record(
        study: Path, exports: dict[str, dict]) -> None:
    out = study / "export"
    result = exports["f16"]
    assert Path(result["out_dir"]) == out
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "merged" / "model.safetensors").is_file()
    assert AutoTokenizer.from_pretrained(out / "merged").eos_token == "<|end|>"
    assert json.loads((out / "export.json").read_text()) == json.loads(json.dumps(result))
    gguf = out / result["gguf"]
    assert result["files"][result["gguf"]] == {
        "bytes": gguf.stat().st_size, "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest()}
    assert result["params"] == {"lora.r": 4} and result["metric"] == "eval_loss"


def parse_modelfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs; a comment or blank line is skipped, an argument in
    triple quotes may span lines, and anything else fails."""
    text, position, commands = path.read_text(), 0, []
    line = re.compile(r'\s*(?:#[^\n]*|(\w+)[ \t]+(?:"""(.*?)"""|([^\n]*)))[ \t]*(?:\n|$)', re.S)
    while position < len(text):
        match = line.match(text, position)
        assert match, f"not an instruction: {text[position:position + 40]!r}"
        if match.group(1):
            argument = match.group(2) if match.group(2) is not None else match.group(3)
            commands.append((match.group(1).upper(), argument))
        position = match.end()
    return commands


def render(template: str, messages: list[dict[str, str]]) -> str:
    """Go text/template semantics for the subset the TEMPLATE may use: trim markers, range
    over .Messages, .Role and .Content. Anything else fails, so the template stays in the
    subset this checks."""
    parts = re.split(r"(\{\{.*?\}\})", template)  # text at even, actions at odd indices
    for i in range(1, len(parts), 2):
        if parts[i].startswith("{{- "):
            parts[i - 1] = parts[i - 1].rstrip()
        if parts[i].endswith(" -}}"):
            parts[i + 1] = parts[i + 1].lstrip()
    out: list[str] = []
    body: list[tuple[str, str]] | None = None
    for i, part in enumerate(parts):
        action = part[2:-2].strip("-").strip() if i % 2 else None
        if action is None:
            (out if body is None else body).append(("text", part))
        elif action == "range .Messages" and body is None:
            body = []
        elif action in {".Role", ".Content"} and body is not None:
            body.append(("field", action[1:].lower()))
        elif action == "end" and body is not None:
            out += [("text", m[value] if kind == "field" else value)
                    for m in messages for kind, value in body]
            body = None
        else:
            raise AssertionError(f"template action outside the checked subset: {part}")
    return "".join(value for _, value in out)


@pytest.mark.parametrize("name", ["Modelfile", "Modelfile.adapter"])
def test_modelfiles_follow_ollama_syntax(study: Path, exports: dict[str, dict],
                                         name: str) -> None:
    path = study / "export" / name
    commands = parse_modelfile(path)
    assert {command for command, _ in commands} <= INSTRUCTIONS
    for command, value in commands:
        if command in {"FROM", "ADAPTER"}:
            assert (path.parent / value).exists(), value  # relative to the Modelfile
    sources = [value for command, value in commands if command == "FROM"]
    assert len(sources) == 1
    if name == "Modelfile":
        assert sources[0] == f"./{exports['f16']['gguf']}"
    else:
        assert sources[0] == "./base-f16.gguf"
        assert ("ADAPTER", "./adapter") in commands
    parameters = [value for command, value in commands if command == "PARAMETER"]
    assert 'stop "<|end|>"' in parameters
    assert "temperature 0.7" in parameters and "seed 7" in parameters
    assert "num_ctx 256" in parameters
    (template,) = [value for command, value in commands if command == "TEMPLATE"]
    assert set(re.findall(r"\.(\w+)", template)) <= TEMPLATE_VARIABLES


def test_template_renders_the_training_chat_format(study: Path, exports: dict) -> None:
    from llama_cpp import Llama

    (template,) = [value for command, value in parse_modelfile(study / "export" / "Modelfile")
                   if command == "TEMPLATE"]
    tokenizer = AutoTokenizer.from_pretrained(study / "export" / "merged")
    # Closed before the interpreter exits: llama-cpp-python cannot free it during shutdown.
    with contextlib.closing(Llama(model_path=str(study / "export" / exports["f16"]["gguf"]),
                                  vocab_only=True, verbose=False)) as llm:
        for messages in CHATS:
            expected = tokenizer.apply_chat_template(messages, tokenize=False,
                                                     add_generation_prompt=True)
            assert render(template, messages) == expected
            # ... and the exported GGUF's tokenizer, in llama.cpp, splits it as the model's.
            assert llm.tokenize(expected.encode(), add_bos=False, special=True) == \
                tokenizer(expected, add_special_tokens=False)["input_ids"]


def test_unsupported_architecture_is_refused_before_writing(study: Path, tmp_path: Path) -> None:
    base = tmp_path / "gpt2-base"
    GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=1024).save_pretrained(base)
    trial_dir = tmp_path / "other" / "trials" / "0000"
    shutil.copytree(study / "trials" / "0000" / "adapter", trial_dir / "adapter")
    config = yaml.safe_load((study / "trials" / "0000" / "config.yaml").read_text())
    config["model"] = {"name_or_path": str(base), "config_overrides": {}}
    (trial_dir / "config.yaml").write_text(yaml.safe_dump(config))
    root = make_study(tmp_path / "other", (TrialState.COMPLETE, trial_dir))
    with pytest.raises(DataError, match=r"architecture 'gpt2' .* supported: llama"):
        export_trial(root, None, None)
    assert not (root / "export").exists()


def test_trials_without_an_adapter_cannot_be_exported(tmp_path: Path) -> None:
    empty = tmp_path / "trial-without-adapter"
    empty.mkdir()
    no_adapter = make_study(tmp_path / "a", (TrialState.COMPLETE, empty))
    with pytest.raises(DataError, match="has no saved adapter"):
        export_trial(no_adapter, None, None)
    unfinished = make_study(tmp_path / "b", (TrialState.FAIL, empty), (TrialState.PRUNED, empty))
    with pytest.raises(InputError, match="no trial completed"):
        export_trial(unfinished, None, None)
    with pytest.raises(InputError, match="trial 1 is PRUNED, not COMPLETE"):
        export_trial(unfinished, 1, None)
    with pytest.raises(InputError, match="no SQLite database file at that path"):
        export_trial(tmp_path / "missing", None, None)
    assert not (tmp_path / "a" / "export").exists()


def test_bad_options_are_refused(study: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown quantization 'q4_k'"):
        export_trial(study, None, tmp_path / "x", "q4_k")
    with pytest.raises(DataError, match="parameters: temprature: not an Ollama PARAMETER"):
        export_trial(study, None, tmp_path / "x", parameters={"temprature": 1.0})
    assert not (tmp_path / "x").exists()


def test_launcher_export_command(study: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import launcher

    monkeypatch.setenv("FTSEARCH_STUDIES", str(study.parent))
    out = tmp_path / "via-launcher"
    assert launcher.main(["export", study.name, "--quantize", "q8_0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"ollama create {study.name}-trial0 -f {out / 'Modelfile'}" in printed
    assert any(out.glob("*.gguf")) and (out / "export.json").is_file()
    # A study that does not exist is bad input: one line, exit 2.
    assert launcher.main(["export", "no_such_study"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
