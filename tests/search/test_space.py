"""The space file: shipped spaces validate, trial configs resolve, the baseline is the defaults."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from search.errors import InputError
from search.space import SPACES_DIR, load_space, resolve_space_path

# Spaces that start from an earlier study's trial; tests/e2e/test_distill.py validates them
# with that study present.
AFTER_A_STUDY = {"distill.yaml": ("classify", "teacher.model"),
                 "monthly_update.yaml": ("monthly_first", "model.adapter")}
# Spaces for real models on GPUs: the configs their models ship (config.json, as on the hub),
# and the untuned default each must be (the articles' table: learning rate, batch,
# steps, accumulation).
LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
         "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
GPU_PRESETS = {
    "llama_8b_gpu.yaml": ("meta-llama/Llama-3.1-8B-Instruct", {
        **LLAMA, "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
        "max_position_embeddings": 131072, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"}},
        (3e-5, 16, 3000, 4)),
    "llama_13b_gpu.yaml": ("meta-llama/Llama-2-13b-chat-hf", {
        **LLAMA, "hidden_size": 5120, "intermediate_size": 13824, "num_attention_heads": 40,
        "num_hidden_layers": 40, "num_key_value_heads": 40, "vocab_size": 32000,
        "max_position_embeddings": 4096}, (1e-5, 8, 5000, 8)),
}
SHIPPED = sorted(p for p in SPACES_DIR.glob("*.yaml")
                 if p.name not in AFTER_A_STUDY and p.name not in GPU_PRESETS)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_space_validates(path: Path) -> None:
    space = load_space(str(path))
    assert space.head.search, "a shipped space searches something"
    # The untuned configuration is a valid trial config too.
    space.trial_config(space.baseline_params())


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_every_gpu_preset_validates_against_its_models_config(name, tmp_path, monkeypatch):
    # They cannot run here: in a local hub cache, the model's config.json stands for it, with
    # the embedded model's tokenizer (the data check tokenises the data).
    import huggingface_hub.constants

    from objectives.causal_lm_lora.tiny_llama import ensure_builtin

    model, config, (rate, batch, steps, accumulation) = GPU_PRESETS[name]
    cache = tmp_path / "hub" / f"models--{model.replace('/', '--')}"
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text("0" * 40)
    snapshot = cache / "snapshots" / ("0" * 40)
    shutil.copytree(ensure_builtin(), snapshot, ignore=shutil.ignore_patterns("*.safetensors"))
    (snapshot / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    space = load_space(name)
    default = space.trial_config(space.baseline_params())
    assert default.model.name_or_path == model
    training = default.training
    assert (training.learning_rate, training.per_device_train_batch_size, training.max_steps,
            training.gradient_accumulation_steps) == (rate, batch, steps, accumulation)
    assert training.precision == "bf16" and training.gradient_checkpointing
    assert space.head.resources.gpu == 1
    header = (SPACES_DIR / name).read_text().split("\n\n")[0]
    assert "Expects:" in header and f"--space {name}" in header
    for key, param in space.head.search.items():  # the default lies inside every range
        value = space.baseline_params()[key]
        assert value in param.choices if param.type == "categorical" else \
            param.low <= value <= param.high, key


@pytest.mark.parametrize("name", AFTER_A_STUDY)
def test_a_space_whose_study_has_not_run_says_which_to_run(name: str) -> None:
    study, field = AFTER_A_STUDY[name]
    with pytest.raises(InputError) as caught:
        load_space(name)
    assert caught.value.field == field
    assert caught.value.problem.startswith(f"'{study}' is neither a folder nor a finished trial "
                                           f"of a study (")
    assert caught.value.problem.endswith("run that study's search first")


def test_bare_name_resolves_in_spaces_and_paths_are_taken_as_is(tmp_path: Path) -> None:
    assert resolve_space_path("lora.yaml") == SPACES_DIR / "lora.yaml"
    own = tmp_path / "lora.yaml"
    own.write_text("study: {n_trials: 3}\ntraining: {max_steps: 40}\n")
    assert resolve_space_path(str(own)) == own
    with pytest.raises(InputError, match="no such space file"):
        resolve_space_path("nope.yaml")


def test_default_space_searches_what_the_service_promises() -> None:
    space = load_space("lora.yaml")
    searched = set(space.head.search)
    assert {"training.learning_rate", "training.per_device_train_batch_size",
            "training.gradient_accumulation_steps", "lora.r", "lora.lora_alpha",
            "model.config_overrides.num_attention_heads"} <= searched
    assert space.study_name == "lora"


def test_trial_config_sets_dotted_keys_and_keeps_the_rest() -> None:
    space = load_space("lora.yaml")
    config = space.trial_config({"lora.r": 16, "model.config_overrides.num_attention_heads": 8})
    assert config.lora.r == 16
    assert config.model.config_overrides == {"num_attention_heads": 8}
    # The fixed sections keep their values.
    assert config.training.max_steps == space.defaults.training.max_steps


def test_relative_data_path_is_relative_to_the_space_file(tmp_path: Path) -> None:
    data = tmp_path / "d" / "mine.jsonl"
    data.parent.mkdir()
    data.write_text("".join(f'{{"instruction": "q{i}", "output": "a{i}"}}\n' for i in range(20)))
    space_file = tmp_path / "s.yaml"
    space_file.write_text("data: {path: d/mine.jsonl}\ntraining: {max_steps: 40}\n"
                          "search: {lora.r: {type: categorical, choices: [4, 8]}}\n")
    assert load_space(str(space_file)).defaults.data.path == str(data.resolve())


def test_conditional_parameter_needs_an_earlier_parameter(tmp_path: Path) -> None:
    space_file = tmp_path / "c.yaml"
    space_file.write_text(
        "training: {max_steps: 40, lr_scheduler_type: linear}\nsearch:\n"
        "  training.lr_scheduler_type: {type: categorical, choices: [linear, cosine]}\n"
        "  training.warmup_ratio: {type: float, low: 0.0, high: 0.2,"
        " when: {training.lr_scheduler_type: [cosine]}}\n")
    space = load_space(str(space_file))
    # warmup_ratio is inactive under the baseline's linear schedule, so it is not fixed.
    assert space.baseline_params() == {"training.lr_scheduler_type": "linear"}


def test_a_space_made_before_the_evaluation_section_keeps_its_fingerprint() -> None:
    """Studies made before evaluation, the data pipeline's and the adapter's keys existed
    still resume:
    while those are at their defaults the fingerprint is the one computed then, over the
    rest."""
    import hashlib
    import json

    space = load_space("lora.yaml")
    before = space.defaults.model_dump(mode="json")
    before.pop("evaluation")
    for key in ("columns", "validation_path", "test_path", "leakage", "clean", "augment",
                "chunk", "replay"):
        before["data"].pop(key)
    before["model"].pop("adapter")
    before["training"].pop("learning_rate_scale")
    content = {"objective": "causal_lm_lora", "defaults": before,
               "search": {k: v.model_dump(mode="json") for k, v in space.head.search.items()}}
    then = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    assert space.fingerprint() == then
    space.defaults.evaluation.max_eval_examples = 30  # set by the user: part of the space
    assert space.fingerprint() != then
    space.defaults.evaluation.max_eval_examples = None
    space.defaults.data.clean.max_class_ratio = 3
    assert space.fingerprint() != then
