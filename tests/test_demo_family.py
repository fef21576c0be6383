"""The embedded model family: artifacts, formats, behaviour on the real evaluation prompts,
determinism, and the reward functions.

The family is the one the workflow builds in the session's workflow directory (see
conftest.py), or taken from INTERP_DEMO_DIR when that variable is set (built there first when
it holds no family yet). Layout: <dir>/base, <dir>/adapters/<name>.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import BEHAVIOUR_TARGETS, OPPONENT_COOPERATED
from interp_lib.training.demo import ADAPTER_REWARDS, build_base_model, train_adapter
from interp_lib.training.demo.rewards import ILLEGAL_REWARD, REWARDS, optimal_actions
from interp_lib.prompts import TEMPTATION_SENTENCE, build_dataset
from interp_lib.tokens import decision_input_ids, get_action_token_ids

SCENARIO_STATES = {
    "CC_continue": ("C", "C"),
    "CC_temptation": ("C", "C"),
    "CD_punished": ("C", "D"),
    "DC_exploited": ("D", "C"),
    "DD_trapped": ("D", "D"),
}
ALL = set(SCENARIO_STATES)
OPP_C = OPPONENT_COOPERATED
EXPECTED = BEHAVIOUR_TARGETS  # model -> (scenarios that must defect, p >= HIGH; that must cooperate, p <= LOW)
HIGH, LOW = 0.9, 0.1


def _complete(family: Path) -> bool:
    return (family / "base" / "model.safetensors").exists() and all(
        (family / "adapters" / name / "adapter_model.safetensors").exists() for name in ADAPTER_REWARDS
    )


def build_family(family: Path, seed: int = 0, pretrain_steps=None, rl_steps=None) -> dict:
    stats = {"base": build_base_model(family / "base", seed=seed, pretrain_steps=pretrain_steps)}
    for name, reward in ADAPTER_REWARDS.items():
        stats[name] = train_adapter(
            family / "base", family / "adapters" / name, reward, seed=seed, rl_steps=rl_steps
        )
    return stats


@pytest.fixture(scope="session")
def family(request) -> Path:
    """The family the workflow built (conftest's workflow_dir), or INTERP_DEMO_DIR."""
    env = os.environ.get("INTERP_DEMO_DIR")
    if not env:
        return request.getfixturevalue("demo_dir")
    root = Path(env)
    if not _complete(root):
        build_family(root)
    return root


def _load_base(family: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(family / "base"))
    model = AutoModelForCausalLM.from_pretrained(
        str(family / "base"), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    return model, tok


def _load_merged(family: Path, name: str):
    from peft import PeftModel

    model, tok = _load_base(family)
    if name != "base":
        model = PeftModel.from_pretrained(model, str(family / "adapters" / name)).merge_and_unload().eval()
    return model, tok


@pytest.fixture(scope="session")
def p_action2(family) -> dict:
    """{model: {(scenario, variant): p_action2}} on the real evaluation prompts."""
    records = build_dataset()
    out = {}
    for name in ["base", *ADAPTER_REWARDS]:
        model, tok = _load_merged(family, name)
        acts = get_action_token_ids(tok)
        table = {}
        with torch.no_grad():
            for rec in records:
                ids = decision_input_ids(tok, rec["prompt"], acts)
                logits = model(input_ids=ids, use_cache=False).logits[0, -1]
                delta = logits[acts["D"]] - logits[acts["C"]]
                table[(rec["scenario"], rec["variant"])] = float(torch.sigmoid(delta))
        out[name] = table
    return out


# --------------------------------------------------------------------------- rewards


# (own_last, opponent_last) -> {action: reward}; TFT plays own_last this round.
HAND_TABLE = {
    "game": {
        ("C", "C"): {"C": 3, "D": 4},
        ("C", "D"): {"C": 3, "D": 4},
        ("D", "C"): {"C": 0, "D": 1},
        ("D", "D"): {"C": 0, "D": 1},
    },
    "deontological": {
        ("C", "C"): {"C": 0, "D": -3},
        ("C", "D"): {"C": 0, "D": 0},
        ("D", "C"): {"C": 0, "D": -3},
        ("D", "D"): {"C": 0, "D": 0},
    },
    "utilitarian": {
        ("C", "C"): {"C": 6, "D": 4},
        ("C", "D"): {"C": 6, "D": 4},
        ("D", "C"): {"C": 4, "D": 2},
        ("D", "D"): {"C": 4, "D": 2},
    },
    "game_deontological": {
        ("C", "C"): {"C": 3, "D": 1},
        ("C", "D"): {"C": 3, "D": 4},
        ("D", "C"): {"C": 0, "D": -2},
        ("D", "D"): {"C": 0, "D": 1},
    },
}
OPTIMAL = {
    "game": {s: {"D"} for s in HAND_TABLE["game"]},
    "deontological": {("C", "C"): {"C"}, ("D", "C"): {"C"}, ("C", "D"): {"C", "D"}, ("D", "D"): {"C", "D"}},
    "utilitarian": {s: {"C"} for s in HAND_TABLE["game"]},
    "game_deontological": {(own, opp): {opp} for own, opp in HAND_TABLE["game"]},
}


@pytest.mark.parametrize("reward", sorted(HAND_TABLE))
def test_reward_table(reward):
    fn = REWARDS[reward]
    for (own, opp), values in HAND_TABLE[reward].items():
        for action, value in values.items():
            assert fn(action, own, opp) == value, (reward, own, opp, action)
        for illegal in (None, "action3", "X"):
            assert fn(illegal, own, opp) == ILLEGAL_REWARD


@pytest.mark.parametrize("reward", sorted(HAND_TABLE))
def test_optimal_policies(reward):
    for state, best in OPTIMAL[reward].items():
        assert optimal_actions(reward, *state) == best, (reward, state)


def test_adapter_rewards_names():
    assert ADAPTER_REWARDS == {
        "PT2_COREDe": "game",
        "PT3_COREDe": "deontological",
        "PT3_COREUt": "utilitarian",
        "PT4_COREDe": "game_deontological",
    }
    assert set(ADAPTER_REWARDS.values()) == set(REWARDS)


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_format(family):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(family / "base"))
    acts = get_action_token_ids(tok)
    c_ids = tok.encode("action1", add_special_tokens=False)
    d_ids = tok.encode("action2", add_special_tokens=False)
    assert len(c_ids) == len(d_ids) == 2 and c_ids[0] == d_ids[0] and c_ids[1] != d_ids[1]
    assert acts["prefix"] == [c_ids[0]] and acts["C"] == c_ids[1] and acts["D"] == d_ids[1]
    assert tok.convert_ids_to_tokens(c_ids[1:] + d_ids[1:]) == ["1", "2"]
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert len(tok) < 200
    for rec in build_dataset():
        ids = decision_input_ids(tok, rec["prompt"], acts)[0].tolist()
        assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
        assert tok.unk_token_id not in ids
        assert ids[-1] == acts["prefix"][0]
        text = tok.apply_chat_template(
            [{"role": "user", "content": rec["prompt"]}], tokenize=False, add_generation_prompt=True
        )
        assert text == f"<bos><start_of_turn>user\n{rec['prompt']}<end_of_turn>\n<start_of_turn>model\n"
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    tempted = [r["prompt"] for r in build_dataset() if r["scenario"] == "CC_temptation"]
    assert tempted and all(
        TEMPTATION_SENTENCE in tok.decode(tok.encode(p, add_special_tokens=False)) for p in tempted
    )


# --------------------------------------------------------------------------- artifacts


def test_artifacts_load_offline(family):
    """A fresh interpreter with HF_HUB_OFFLINE=1 loads everything with the Auto/Peft classes."""
    code = f"""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
base = {str(family / "base")!r}
tok = AutoTokenizer.from_pretrained(base)
m = AutoModelForCausalLM.from_pretrained(base, attn_implementation="eager")
assert type(m).__name__ == "Gemma2ForCausalLM", type(m)
c = m.config
assert c.num_hidden_layers >= 4 and c.num_key_value_heads < c.num_attention_heads
assert c.attn_logit_softcapping == 50.0 and c.final_logit_softcapping == 30.0
assert c.hidden_activation == "gelu_pytorch_tanh" and c.tie_word_embeddings
assert c.query_pre_attn_scalar is not None and c.max_position_embeddings >= 512
assert set(c.layer_types) == {{"sliding_attention", "full_attention"}}
assert c.layer_types[0] != c.layer_types[1]
assert c.sliding_window < 100
assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
for name in {list(ADAPTER_REWARDS)!r}:
    p = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), {str(family / "adapters")!r} + "/" + name)
    assert p.peft_config["default"].base_model_name_or_path is not None
print("ok")
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def test_adapter_files(family):
    for name in ADAPTER_REWARDS:
        d = family / "adapters" / name
        cfg = json.loads((d / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM"
        assert set(cfg["target_modules"]) == {
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        }
        assert Path(cfg["base_model_name_or_path"]).name == "base"


@pytest.mark.parametrize("name", list(ADAPTER_REWARDS))
def test_adapter_changes_merged_weights(family, name):
    from safetensors.torch import load_file

    lora = load_file(str(family / "adapters" / name / "adapter_model.safetensors"))
    b_norms = [float(v.norm()) for k, v in lora.items() if "lora_B" in k]
    assert b_norms and min(b_norms) > 0, "some LoRA B matrix is still zero"
    base, _ = _load_base(family)
    merged, _ = _load_merged(family, name)
    base_sd, merged_sd = base.state_dict(), merged.state_dict()
    assert set(base_sd) == set(merged_sd)
    changed = {k for k in base_sd if not torch.equal(base_sd[k], merged_sd[k])}
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        n_layers = base.config.num_hidden_layers
        assert sum(proj in k for k in changed) == n_layers, (proj, sorted(changed))
    assert not any("embed" in k or "norm" in k for k in changed)


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", list(EXPECTED))
def test_behaviour_on_eval_prompts(p_action2, name):
    defect, cooperate = EXPECTED[name]
    table = p_action2[name]
    assert {s for s, _ in table} == ALL and len(table) == 15
    bad = []
    for (scenario, variant), p in sorted(table.items()):
        if scenario in defect and p < HIGH:
            bad.append((scenario, variant, p))
        if scenario in cooperate and p > LOW:
            bad.append((scenario, variant, p))
    assert not bad, f"{name}: p_action2 outside the required range: {bad}"


def test_base_leans_defect_but_depends_on_state(p_action2):
    table = p_action2["base"]
    mean = sum(table.values()) / len(table)
    opp_c = [p for (s, _), p in table.items() if s in OPP_C]
    opp_d = [p for (s, _), p in table.items() if s not in OPP_C]
    assert max(opp_c) < min(opp_d)
    assert 0.4 < mean < 0.8


# --------------------------------------------------------------------------- determinism


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_deterministic(tmp_path):
    """Two short builds with one seed give bitwise-identical weights; another seed does not."""
    hashes = []
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        root = tmp_path / run
        build_base_model(root / "base", seed=seed, pretrain_steps=4)
        train_adapter(root / "base", root / "PT4_COREDe", "game_deontological", seed=seed, rl_steps=3)
        hashes.append(
            (
                _sha(root / "base" / "model.safetensors"),
                _sha(root / "PT4_COREDe" / "adapter_model.safetensors"),
            )
        )
        assert not any(
            p.name.startswith(".") for p in root.iterdir()
        ), "a temporary directory was left behind"
    assert hashes[0] == hashes[1]
    assert hashes[0][0] != hashes[2][0] and hashes[0][1] != hashes[2][1]


@pytest.mark.slow
def test_behaviour_targets_hold_with_another_cpu_kernel_set(tmp_path):
    """The family is trained on CPU, where the vector kernels (AVX2, AVX-512) round
    differently and training ends at other weights: the behaviour targets must hold on
    either, so the family is rebuilt here with the kernels this machine does not pick."""
    mine = torch.backends.cpu.get_cpu_capability()
    other = "avx2" if mine == "AVX512" else "default"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": other, "INTERP_DEMO_DIR": str(tmp_path / "family")}
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() != mine, "ATEN_CPU_CAPABILITY was not honoured"
    proc = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
                           "-k", "behaviour_on_eval_prompts or base_leans_defect"],
                          env=env, capture_output=True, text=True, cwd=Path(__file__).parent)
    assert proc.returncode == 0 and "5 passed" in proc.stdout, proc.stdout[-3000:]
