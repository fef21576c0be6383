"""LoRA adapters trained against Tit-for-Tat (interp_lib/training/rl.py) and the four
committed SmolLM2 adapters (adapters/smollm2/, config.smollm2.yaml).

Hand-computed expectations, the shared-prefix forward against running every prompt on its
own, the committed adapters' behaviour targets (issue 14) measured through the project's
own merge path, and (slow) a brief retraining that must move the right way, twice alike.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from conftest import BEHAVIOUR_TARGETS as TARGETS
from conftest import KNOWN_BEHAVIOUR_MISSES, KNOWN_PAIR_MISSES
from conftest import REPO, SCENARIOS
from interp_lib.training.demo.common import GameState, all_states
from interp_lib.training.demo.rewards import ADAPTER_REWARDS
from interp_lib.model.prefix_tree import Stretch, plan, shared_prefix_logits
from interp_lib.training.rl import RLSettings, expected_reward


def test_expected_reward_is_the_hand_computed_expectation():
    # own C, opponent D last: Tit-for-Tat plays C now. Game + deontological: C -> 3,
    # D -> 4 (no penalty: the opponent defected last), illegal -> -6.
    cd = GameState("C", "D", False, False, False)
    dc = GameState("D", "C", False, False, False)  # TfT plays D: C -> 0, D -> 1 - 3
    got = expected_reward(torch.tensor([0.2, 0.5]), torch.tensor([0.5, 0.25]), [cd, dc], "game_deontological")
    want = ((0.2 * 3 + 0.5 * 4 + 0.3 * -6) + (0.5 * 0 + 0.25 * -2 + 0.25 * -6)) / 2
    assert float(got) == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match="unknown reward 'kind'"):
        RLSettings(reward="kind")


def _paths(seqs, n_last):
    """Per sequence: the token spans it is computed from, root first, as (start, stop, tokens)."""
    stretches, tails = plan(seqs, n_last)
    paths = {}
    for tail in tails:
        chain, node = [], tail.parent
        while node is not None:
            s = stretches[node]
            chain.insert(0, (s.start, s.stop, seqs[s.row][s.start:s.stop]))
            node = s.parent
        for i in tail.rows:
            assert i not in paths  # each sequence in one tail batch
            paths[i] = chain + [(tail.start, len(seqs[i]), seqs[i][tail.start:])]
    return stretches, tails, paths


def test_prefix_tree_runs_each_shared_stretch_once_and_every_sequence_whole():
    seqs = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 6, 7], [1, 2, 9, 9, 8], [1, 2, 9, 9, 7], [1, 2, 3, 4], [5, 6]]
    stretches, tails, paths = _paths(seqs, n_last=2)
    # hand-computed: [1,2] is shared by 0-4 only; [3,4] by 0,1,4 but sequence 4 keeps its last 2
    # out of every stretch (so 0,1,4 run from position 2 as tails); 2,3 share [9,9], but their
    # length 5 keeps positions 3-4 out: a stretch [9], then one tail batch of both
    assert stretches == [Stretch(None, 0, 0, 2), Stretch(0, 2, 2, 3)]
    assert sorted(((t.parent, t.start, t.rows) for t in tails), key=str) == [
        (0, 2, [0]), (0, 2, [1]), (0, 2, [4]), (1, 3, [2, 3]), (None, 0, [5])]
    for i, s in enumerate(seqs):
        spans = paths[i]
        assert [a for a, _, _ in spans] == [0] + [b for _, b, _ in spans[:-1]]  # contiguous from 0
        assert sum((tokens for _, _, tokens in spans), []) == s  # the sequence, whole
        assert len(s) - spans[-1][0] >= 2  # the positions read lie in the tail
    with pytest.raises(ValueError, match="n_last"):
        plan([[1]], n_last=2)


def test_prefix_tree_runs_about_the_tries_tokens_on_the_evaluation_prompts():
    """The counterbalanced evaluation prompts (demo tokenizer): every sequence whole along its
    path, and the tokens run are the trie's nodes but for tails' short shared stretches."""
    from interp_lib.training.behaviour_check import counterbalanced_scenarios
    from interp_lib.training.demo.tokenizer import build_tokenizer
    from interp_lib.prompts import build_dataset
    from interp_lib.tokens import decision_input_ids, get_action_token_ids

    tokenizer = build_tokenizer()
    actions = get_action_token_ids(tokenizer)
    seqs = [decision_input_ids(tokenizer, r["prompt"], actions)[0].tolist()
            for r in build_dataset(counterbalanced_scenarios(), 3, 0)]
    stretches, tails, paths = _paths(seqs, n_last=1)
    for i, s in enumerate(seqs):
        assert sum((tokens for _, _, tokens in paths[i]), []) == s
    run = sum(s.stop - s.start for s in stretches) + sum(len(seqs[i]) - t.start for t in tails for i in t.rows)
    trie = len({tuple(s[:k]) for s in seqs for k in range(1, len(s) + 1)})
    assert trie <= run <= trie + len(seqs) * 2, (run, trie, sum(map(len, seqs)))
    assert run < 0.6 * sum(map(len, seqs))


@pytest.mark.real  # SmolLM2's forward and backward passes: 15-25 s on 2 cores
def test_shared_prefix_logits_and_gradients_equal_separate_runs(converted):
    """Six training prompts (both opening orders, with and without the temptation sentence)
    through SmolLM2 with a random rank-2 LoRA. Measured: logits 3.6e-5 apart (values up to
    ~40), gradients 1.0e-6 apart relative to their norm."""
    from peft import get_peft_model

    from interp_lib.training.demo.common import PromptCache
    from interp_lib.training.rl import lora_config, load_base

    torch.manual_seed(0)
    model, tokenizer = load_base(converted)
    model = get_peft_model(model, lora_config(RLSettings(reward="game", rank=2, alpha=1.0)))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    cache = PromptCache(tokenizer)
    states = [s for s in all_states() if s.situation in ("CC+T", "DC")][::2] + all_states()[:2]
    seqs = [cache.decision_ids(s) for s in states]
    assert len({len(s) for s in seqs}) == 2 and len({s[40] for s in seqs}) == 2

    def grads(logits):
        model.zero_grad()
        logits[:, :, cache.actions["D"]].sum().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])

    with torch.enable_grad():
        shared = shared_prefix_logits(model, seqs, n_last=2)
        g_shared = grads(shared)
        separate = torch.stack(
            [model(input_ids=torch.tensor([s]), use_cache=False, logits_to_keep=2).logits[0].float() for s in seqs]
        )
        g_separate = grads(separate)
    assert float((shared - separate).detach().abs().max()) < 2e-4
    assert float((g_shared - g_separate).norm() / g_separate.norm()) < 1e-4


FAMILIES = {"smollm2": "converted", "gemma3": "gemma3_converted"}  # adapters/<family>/ -> its base fixture
LABEL_BIAS_BOUND = 1.0  # logits (issue 25): |delta(standard) - delta(swapped)| point estimate


@pytest.fixture(scope="module", params=list(FAMILIES))
def committed_decisions(request):
    """(family, decisions): every committed adapter of the family merged into its converted
    base by interp_lib.model.loading, on the counterbalanced evaluation prompts (5 scenarios and
    their swapped siblings x 3 variants), decision position (interp_lib.training.behaviour_check)."""
    import pandas as pd

    from interp_lib.training.behaviour_check import model_decisions
    from interp_lib.model.loading import load_model, merge_adapter

    family = request.param
    base = request.getfixturevalue(FAMILIES[family])
    base_model, tokenizer = load_model("base", {"base": str(base)})  # read once, merged into copies
    frames = []
    for name in TARGETS:
        model = merge_adapter(copy.deepcopy(base_model), str(REPO / "adapters" / family / name), name)
        frames.append(model_decisions(model, tokenizer, name))
    return family, pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_committed_adapters_meet_the_behaviour_targets_in_both_labellings(request, committed_decisions, name):
    """Issue 14's targets on P(Defect) (mean over the 3 variants), in the standard labelling
    and in the swapped one (action1 = Defect), for both families' counterbalanced adapters."""
    family, dec = committed_decisions
    if (family, name) in KNOWN_BEHAVIOUR_MISSES:
        request.applymarker(pytest.mark.xfail(strict=True, reason=KNOWN_BEHAVIOUR_MISSES[family, name]))
    rows = dec[dec["model"] == name]
    defect, cooperate = TARGETS[name]
    for labelling, suffix in (("standard", ""), ("swapped", "_swapped")):
        p = rows[rows["labelling"] == labelling].groupby("scenario")["p_defect"].mean()
        p = {s.removesuffix(suffix): v for s, v in p.items()}
        assert set(p) == set(SCENARIOS)
        assert {s for s in defect if p[s] < 0.9} == set(), (family, labelling, p)
        assert {s for s in cooperate if p[s] > 0.1} == set(), (family, labelling, p)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_committed_adapters_decide_alike_in_every_swapped_pair(request, committed_decisions, name):
    """Counterbalanced training: the same decision in every swapped pair (15 of 15), where the
    one-labelling adapters of PT2, PT3 De and PT3 Ut agreed in 0 of 15."""
    from interp_lib.analyses.behaviour import label_bias

    family, dec = committed_decisions
    if (family, name) in KNOWN_PAIR_MISSES:
        request.applymarker(pytest.mark.xfail(strict=True, reason=KNOWN_BEHAVIOUR_MISSES[family, name]))
    bias = label_bias(dec[dec["model"] == name])
    assert len(bias) == len(SCENARIOS) and (bias["n_pairs"] == 3).all()
    assert (bias["same_decision_share"] == 1.0).all(), (family, bias.to_dict("records"))


# Largest |label bias| over the 5 scenarios (logits), measured on the committed adapters
# (2-core CPU, 2026-12-06; docs/counterbalanced-adapters.md). Issue 25's target is 1 logit.
MEASURED_WORST_LABEL_BIAS = {
    "smollm2": {"PT2_COREDe": 0.94, "PT3_COREDe": 0.74, "PT3_COREUt": 1.62, "PT4_COREDe": 0.69},
    "gemma3": {"PT2_COREDe": 1.01, "PT3_COREDe": 0.21, "PT3_COREUt": 0.81, "PT4_COREDe": 0.48},
}


def _worst_label_bias(committed_decisions, name) -> float:
    from interp_lib.analyses.behaviour import label_bias

    family, dec = committed_decisions
    return float(label_bias(dec[dec["model"] == name])["label_bias"].abs().max())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_committed_adapters_label_bias_is_as_measured(committed_decisions, name):
    """No regression: each adapter's worst |label bias| is within 10% (+0.1) of docs/counterbalanced-adapters.md's."""
    family, _ = committed_decisions
    measured = MEASURED_WORST_LABEL_BIAS[family][name]
    assert _worst_label_bias(committed_decisions, name) <= 1.1 * measured + 0.1


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_committed_adapters_label_bias_within_one_logit(request, committed_decisions, name):
    """Issue 25's target. Where docs/counterbalanced-adapters.md records a miss, a strict xfail: the check stays
    and fails loudly (XPASS) once an adapter meets it, so that page is then updated."""
    family, _ = committed_decisions
    if MEASURED_WORST_LABEL_BIAS[family][name] > LABEL_BIAS_BOUND:
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            f"issue 25's label-bias target not met by the committed {family} {name}: measured "
            f"{MEASURED_WORST_LABEL_BIAS[family][name]} logits (docs/counterbalanced-adapters.md)")))
    assert _worst_label_bias(committed_decisions, name) <= LABEL_BIAS_BOUND


@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_committed_adapters_record_how_they_were_trained(family, name):
    """Each committed directory is what the rl_adapter rule wrote for config.<family>.yaml's
    rl_adapters entry of the same name (settings, reward, labellings, training record); one
    continued from a learned policy (init_adapter) lowered the label bias on the training
    states at a cost of under 0.05 in expected reward."""
    import yaml

    cfg = yaml.safe_load((REPO / f"config.{family}.yaml").read_text())
    spec = cfg["rl_adapters"][f"results_{family}/adapters/{name}"]
    committed = REPO / "adapters" / family / name
    record = json.loads((committed / "training.json").read_text())
    assert record["settings"]["reward"] == spec["reward"] == ADAPTER_REWARDS[name]
    assert [record["settings"][k] for k in ("rank", "alpha", "lr")] == [spec["rank"], spec["alpha"], spec["lr"]]
    assert record["settings"]["labellings"] == spec["labellings"] == ["standard", "swapped"]
    adapter_cfg = json.loads((committed / "adapter_config.json").read_text())
    assert (adapter_cfg["r"], adapter_cfg["lora_alpha"]) == (spec["rank"], spec["alpha"])
    assert record["settings"].get("init_adapter") == spec.get("init_adapter")
    assert record["settings"]["label_consistency"] == spec.get("label_consistency", 0)
    before, after = record["before"], record["after"]
    if spec.get("init_adapter") is None:
        assert after["expected_reward"] > before["expected_reward"]
    else:  # a learned policy (its own entry, from the base), continued, last with the label penalty
        chain = [spec]
        while chain[-1].get("init_adapter") is not None:
            chain.append(cfg["rl_adapters"][chain[-1]["init_adapter"]])
        assert len(chain) <= 3 and all(entry["reward"] == spec["reward"] for entry in chain)
        assert spec["label_consistency"] > 0 and not any(e.get("label_consistency") for e in chain[1:])
        worst = [max(abs(v) for v in b["label_bias"].values()) for b in (before, after)]
        assert worst[1] < worst[0], worst  # on the training states
        assert after["expected_reward"] > before["expected_reward"] - 0.05
    # small enough to commit: 1.0-1.3 MB a rank (SmolLM2's PT2 is rank 4), against 78 MB at the paper's r64
    assert (committed / "adapter_model.safetensors").stat().st_size < 1.3 * 1024 * 1024 * spec["rank"]


@pytest.mark.slow
def test_brief_retraining_moves_the_right_way_and_repeats_exactly(converted, tmp_path):
    """Six steps of the Game reward from the base (the committed adapters' rank 1, lr 5e-3).
    The first steps mostly teach the base to answer at all: measured P(illegal) 0.9996 ->
    0.121 and expected reward -6.00 -> +1.18, while the mean over situations of
    P(action2 | {action1, action2}) begins to rise, 0.354 -> 0.369 (the full 20 steps reach
    1.000). A second run with the same seed writes the same tensors."""
    from safetensors.torch import load_file

    from interp_lib.training.rl import train_rl_adapter

    settings = RLSettings(reward="game", rank=1, alpha=0.5, lr=5e-3, steps=6, seed=0)
    first = train_rl_adapter(converted, tmp_path / "run0", settings)
    train_rl_adapter(converted, tmp_path / "run1", settings)
    before, after = first["before"], first["after"]
    assert before["p_illegal"] > 0.99 and after["p_illegal"] < 0.5
    assert after["expected_reward"] > before["expected_reward"] + 5.0
    mean_p2 = [sum(b["p_action2"].values()) / len(b["p_action2"]) for b in (before, after)]
    assert mean_p2[1] > mean_p2[0] + 0.005, mean_p2
    a, b = (load_file(tmp_path / f"run{i}" / "adapter_model.safetensors") for i in range(2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "run0" / "training.json").read_text())["settings"] == json.loads(
        json.dumps(settings.__dict__)
    )
    assert not (tmp_path / "run0" / "README.md").exists()
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["run0", "run1"]  # no temp dirs left


@pytest.mark.parametrize("window", [8, 64])
def test_shared_prefix_logits_respect_gemma2_sliding_windows(window):
    """A tiny random Gemma-2 (attention softcap, alternating sliding-window layers): a window
    shorter than the shared prefix (8 < 13) and a longer one, through a trie three stretches
    deep (12 + 1 shared by all but one, then 6 more by two). Measured 8.9e-8."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=window,
                       attn_implementation="eager")
    model = Gemma2ForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    common = torch.randint(0, 100, (12,), generator=gen).tolist()
    tails = [torch.randint(0, 100, (k,), generator=gen).tolist() for k in (10, 10, 12)]
    seqs = [common + [5] + t + [7, 8] for t in tails] + [common + [6] + list(range(1, 13))]
    seqs += [common + [5] + tails[0][:6] + [9, 9, 9, 7, 8]]  # shares 6 more tokens with seqs[0]
    assert len(plan(seqs, n_last=2)[0]) == 3
    with torch.no_grad():
        shared = shared_prefix_logits(model, seqs, n_last=2)
        separate = torch.stack(
            [model(input_ids=torch.tensor([s]), use_cache=False, logits_to_keep=2).logits[0] for s in seqs]
        )
    assert float((shared - separate).abs().max()) < 1e-5


def test_label_consistency_gradient_is_the_penalty_gradient():
    """accumulate_gradient's two-pass construction (gaps without gradients, then gap-weighted
    deltas per labelling) has exactly the gradient of -J + lambda * mean gap^2 computed in
    one graph, on a tiny random Gemma-2 with the demo tokenizer and a random LoRA; and the
    penalty it reports is lambda * mean gap^2 of that same forward."""
    from peft import get_peft_model
    from transformers import Gemma2ForCausalLM

    from interp_lib.training.demo.common import PromptCache
    from interp_lib.training.demo.pretrain import make_config
    from interp_lib.training.demo.tokenizer import build_tokenizer
    from interp_lib.training.rl import (_decision_logits, _outcome_probabilities, accumulate_gradient,
                                        label_gaps, lora_config, meaning_deltas)

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = make_config(tokenizer)
    config.num_hidden_layers, config.layer_types = 2, config.layer_types[:2]
    model = Gemma2ForCausalLM(config).eval()
    settings = RLSettings(reward="game_deontological", rank=2, alpha=1.0, labellings=("standard", "swapped"),
                          label_consistency=0.3)
    model = get_peft_model(model, lora_config(settings))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # B = 0 would leave the update, and its label bias, at zero
    cache = PromptCache(tokenizer)
    standard = all_states()[::4]  # 5 states (a CC+T among them) and their swapped twins
    parts = [standard, [dataclasses.replace(s, labelling="swapped") for s in standard]]
    trainable = [p for p in model.parameters() if p.requires_grad]

    reward, penalty, _ = accumulate_gradient(model, cache, parts, settings)
    two_pass = [p.grad.clone() for p in trainable]
    model.zero_grad(set_to_none=True)
    ordered = parts[0] + parts[1]
    logits = _decision_logits(model, cache, ordered)
    p_c, p_d = _outcome_probabilities(logits, cache.actions, ordered)
    deltas = meaning_deltas(logits, cache.actions, ordered)
    n = len(parts[0])
    gap = deltas[:n] - deltas[n:]  # all_states orders each labelling alike
    assert len(gaps := label_gaps(logits.detach(), cache.actions, ordered)) == n
    assert torch.allclose(torch.tensor(sorted(gaps.values())), gap.detach().sort().values, atol=1e-5)
    objective = -expected_reward(p_c, p_d, ordered, settings.reward) + 0.3 * (gap ** 2).mean()
    objective.backward()
    assert abs(penalty - 0.3 * float((gap ** 2).mean())) < 1e-5 and penalty > 1e-3
    assert abs(reward - float(expected_reward(p_c, p_d, ordered, settings.reward))) < 1e-5
    for a, p in zip(two_pass, trainable):
        assert torch.allclose(a, p.grad, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="label_consistency"):
        RLSettings(reward="game", label_consistency=0.1)  # one labelling: nothing to pair


def test_training_continues_from_an_init_adapter(tmp_path):
    """init_adapter: a second run starts where the first ended (its behaviour before its
    first step is the first run's behaviour after, on a tiny random Gemma-2 with the demo
    tokenizer), and an adapter of another rank is refused with a one-line error naming it."""
    from transformers import Gemma2ForCausalLM

    from interp_lib.training.demo.pretrain import make_config
    from interp_lib.training.demo.tokenizer import build_tokenizer
    from interp_lib.training.rl import train_rl_adapter

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = make_config(tokenizer)
    config.num_hidden_layers, config.layer_types = 2, config.layer_types[:2]
    Gemma2ForCausalLM(config).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    first = train_rl_adapter(tmp_path / "base", tmp_path / "first",
                             RLSettings(reward="deontological", rank=2, alpha=4.0, lr=0.05, steps=2))
    settings = RLSettings(reward="deontological", rank=2, alpha=4.0, lr=0.05, steps=1,
                          init_adapter=str(tmp_path / "first"))
    second = train_rl_adapter(tmp_path / "base", tmp_path / "second", settings)
    moved = max(abs(first["after"]["p_action2"][k] - first["before"]["p_action2"][k]) for k in first["after"]["p_action2"])
    assert moved > 1e-3  # the first run changed the policy, so "before" below is not the base's
    assert second["before"]["expected_reward"] == pytest.approx(first["after"]["expected_reward"], abs=1e-5)
    for situation, p in first["after"]["p_action2"].items():
        assert second["before"]["p_action2"][situation] == pytest.approx(p, abs=2e-4)
    assert json.loads((tmp_path / "second" / "training.json").read_text())["settings"]["init_adapter"] == str(
        tmp_path / "first")
    with pytest.raises(ValueError, match=r"^init_adapter .*first: r 2 \(settings: 4\).*set rank, alpha"):
        train_rl_adapter(tmp_path / "base", tmp_path / "third",
                         dataclasses.replace(settings, rank=4))
    assert not (tmp_path / "third").exists()
