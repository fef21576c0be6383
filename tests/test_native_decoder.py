"""Jobs build the decoder from config.json and safetensors (native_decoder.py) instead of HF's
modelling code: the same weights (state fingerprint) and the same hooked forward, bit for bit,
on every supported architecture; HF's loader where the native one cannot."""

import json
import subprocess
import sys

import pytest
import torch
from test_hooked import MODELS, _randomize, tiny, tiny_gemma3
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from interp_lib.model.hooked import HookedModel
from interp_lib.model.loading import load_base_model, load_hooked, state_fingerprint
from interp_lib.model.architecture import ArchSpec
from interp_lib.model.native_decoder import NativeDecoder, _rope, read_config_json

CASES = {
    **MODELS,
    "qwen2_biases": lambda: tiny(Qwen2Config, Qwen2ForCausalLM),  # q/k/v biases
    "llama_tied_linear_rope": lambda: tiny(LlamaConfig, LlamaForCausalLM, tie_word_embeddings=True,
                                           rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "llama3_rope": lambda: tiny(LlamaConfig, LlamaForCausalLM, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32}),
    "gemma3_scaled_global_rope": lambda: tiny_gemma3(rope_parameters={
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0}}),
}


@pytest.fixture(scope="module", params=list(CASES))
def saved(request, tmp_path_factory):
    model = CASES[request.param]()
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path, max_shard_size="20KB" if request.param == "gemma2" else "1000GB")  # gemma2 sharded
    return request.param, model, path


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_native_decoder_equals_hf_bit_for_bit(saved, dtype):
    name, _, path = saved
    hf = load_base_model(str(path), dtype, "cpu", name)
    native = load_base_model(str(path), dtype, "cpu", name, native=True)
    assert isinstance(native, NativeDecoder) and not isinstance(hf, NativeDecoder)
    assert state_fingerprint(native) == state_fingerprint(hf)  # names, dtypes, shapes, bytes
    # parameters require grad as HF's do: attribution patching takes gradients through them
    assert [p.requires_grad for p in native.parameters()] == [p.requires_grad for p in hf.parameters()]
    ids = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(0))
    expected = HookedModel(hf).run_with_hooks(ids)
    got = HookedModel(native).run_with_hooks(ids)
    assert torch.equal(got, expected)
    if dtype == "float32":
        with torch.no_grad():
            assert (got - hf(ids).logits).abs().max().item() < 1e-5  # and HF's own forward


def test_tied_embeddings_are_one_parameter(saved):
    name, model, path = saved
    native = load_base_model(str(path), "float32", "cpu", name, native=True)
    tied = native.lm_head.weight is native.model.embed_tokens.weight
    assert tied == bool(model.config.tie_word_embeddings)


def test_rope_that_changes_with_length_loads_by_hf(tmp_path, caplog):
    model = _randomize(LlamaForCausalLM(LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=128, rope_scaling={"rope_type": "dynamic", "factor": 2.0})))
    model.save_pretrained(tmp_path)
    with caplog.at_level("INFO", logger="interp_lib.model.loading"):
        loaded = load_base_model(str(tmp_path), "float32", "cpu", "dyn", native=True)
    assert not isinstance(loaded, NativeDecoder)
    assert "loaded by transformers' modelling code (RoPE type 'dynamic' changes with the sequence length)" in caplog.text


def test_load_hooked_imports_no_hf_modelling(tmp_path):
    """A model job's loading path imports transformers' config and tokenizer code, not an
    architecture's modelling module (the auto classes' name tables are cheap)."""
    tiny(LlamaConfig, LlamaForCausalLM).save_pretrained(tmp_path)
    code = ("import sys; from interp_lib.model.loading import load_hooked; "
            f"h = load_hooked({str(tmp_path)!r}, 'float32', 'cpu', 'm'); "
            "print(type(h.model).__name__, sorted(m for m in sys.modules if m.startswith('transformers.models.') "
            "and '.modeling_' in m and '.auto.' not in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "NativeDecoder []"


def test_load_hooked_keeps_the_precision_mode(saved):
    name, _, path = saved
    if name.startswith("gemma"):
        mode = "bfloat16-resid32"
    else:
        mode = "float16"
    hooked = load_hooked(path, mode, "cpu", name)
    assert hooked.precision.name == mode and hooked.dtype == hooked.precision.weights


STATIC_ROPE_ONLY = ("llama_tied_linear_rope", "llama3_rope", "gemma3_scaled_global_rope")


def test_config_json_read_without_transformers_equals_autoconfig(saved):
    """Where read_config_json reads config.json itself (transformers 5 wrote every key, default
    RoPE), the hooked model sees what AutoConfig gives: the same ArchSpec, RoPE frequencies and
    the sizes jobs read; other RoPE types are left to AutoConfig."""
    from transformers import AutoConfig

    name, _, path = saved
    light, auto = read_config_json(path), AutoConfig.from_pretrained(path)
    if name in STATIC_ROPE_ONLY:
        assert light is None
        return
    assert light is not None
    assert ArchSpec.from_config(light) == ArchSpec.from_config(auto)
    d_head = ArchSpec.from_config(auto).d_head
    for layer_type in (sorted(set(auto.layer_types)) if auto.model_type == "gemma3_text" else [None]):
        assert torch.equal(_rope(light, d_head, layer_type)[0], _rope(auto, d_head, layer_type)[0])
    for key in ("intermediate_size", "max_position_embeddings", "tie_word_embeddings", "model_type"):
        assert getattr(light, key) == getattr(auto, key), key


def test_a_config_json_missing_a_key_is_left_to_autoconfig(tmp_path):
    tiny(LlamaConfig, LlamaForCausalLM).save_pretrained(tmp_path)
    assert read_config_json(tmp_path) is not None
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["head_dim"]  # a class default (Qwen3's is 128, not hidden/heads): never guessed
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert read_config_json(tmp_path) is None
    assert isinstance(load_base_model(str(tmp_path), "float32", "cpu", "m", native=True), NativeDecoder)


def test_a_patching_job_loads_its_model_without_transformers(tmp_path):
    """Patching and steering jobs need no tokenizer: their model loads with torch and
    safetensors alone."""
    tiny(LlamaConfig, LlamaForCausalLM).save_pretrained(tmp_path)
    code = ("import sys; from interp_lib.model.loading import load_hooked; "
            f"h = load_hooked({str(tmp_path)!r}, 'float32', 'cpu', 'm'); "
            "print(type(h.model).__name__, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "NativeDecoder False"
