"""A model without label bias, constructed: an adapter on the embedded base fitted to the
reward-maximising move of game_deontological (tit-for-tat) on every training state in both
labellings, so that only the labels' meaning predicts the token it must write. Through the
caching job's counterbalanced variants it decides alike under both labellings. The workflow's
own PT4 adapter, trained with the same reward on the standard labelling only, answers by
token: the swapped prompts flip it.

Why a fit, not the policy gradient: the exact policy gradient on both labellings (rank 8, 60
steps, lr 1e-2) gave tit-for-tat in both on AVX2-trained bases (2026-11-29: |label bias|
0.13-0.48 logits), but on the AVX-512-trained base of 2026-12-07 it stalls where the softmax
saturates: all-Cooperate in both labellings (expected reward 1.787; the same with the label
penalty 0.1, 60 or 150 steps), or tit-for-tat in the standard labelling only (1.988, lr 3e-3 or
5e-3, 200 steps); the optimum (2.179) in 1 of 11 runs of settings, seeds and two-phase
schedules (swapped labelling first, then both, seed 0; seed 1 did not). The logistic
loss on the decision's logit difference does not vanish where the answer is wrong. Measured
(2026-12-07, AVX-512, 1 thread): 200 steps at lr 3e-3 fit every state (loss 5e-4) in about 80 s,
tit-for-tat in both labellings on every default scenario for seeds 0 and 1, |label bias| at most
0.59 and 1.20 logits against decisions of 7.3-8.5.
"""

import pytest

from interp_lib.analyses.behaviour import decisions_table, label_bias
from interp_lib.jobs import build_cache_file
from interp_lib.model.loading import merge_to_dir
from interp_lib.prompts import DEFAULT_SCENARIOS, scenario_records, swapped_sibling
from interp_lib.training.rl import RLSettings

pytestmark = pytest.mark.slow


def fit_tit_for_tat(base: str, out, steps: int = 200, lr: float = 3e-3, seed: int = 0) -> None:
    """A rank-8 LoRA on `base` (saved into `out`) fitted by logistic loss on the meaning delta
    (logit(Defect) - logit(Cooperate), the labels' tokens exchanged in the swapped labelling),
    target sign from game_deontological's reward-maximising move, on all 40 training states."""
    import torch
    from peft import get_peft_model

    from interp_lib.training.demo.common import PromptCache, all_states
    from interp_lib.training.demo.rewards import optimal_actions
    from interp_lib.training.rl import _decision_logits, load_base, lora_config, meaning_deltas

    torch.manual_seed(seed)
    model, tokenizer = load_base(base)
    cache, states = PromptCache(tokenizer), all_states(("standard", "swapped"))
    best = [optimal_actions("game_deontological", s.own_last, s.opponent_last) for s in states]
    assert all(len(b) == 1 for b in best)
    sign = torch.tensor([1.0 if b == {"D"} else -1.0 for b in best])
    model.eval()
    model = get_peft_model(model, lora_config(RLSettings(reward="game_deontological", rank=8, alpha=16)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            deltas = meaning_deltas(_decision_logits(model, cache, states), cache.actions, states)
            torch.nn.functional.softplus(-sign * deltas).mean().backward()
            opt.step()
    model.save_pretrained(str(out))


@pytest.fixture(scope="module")
def balanced(workflow_dir, tmp_path_factory):
    """(label_bias rows, decisions) of the constructed model on every default scenario."""
    base = str(workflow_dir / "results/demo/base")
    tmp = tmp_path_factory.mktemp("counterbalance")
    fit_tit_for_tat(base, tmp / "adapter")
    merge_to_dir("balanced", {"base": base, "adapter": str(tmp / "adapter")}, tmp / "merged")
    caches = []
    for scenario, spec in DEFAULT_SCENARIOS.items():
        for name, settings in ((scenario, spec), swapped_sibling(scenario, spec)):
            records = scenario_records(name, settings, 4, seed=0)
            build_cache_file(tmp / "merged", "balanced", name, records, tmp / f"{name}.h5")
            caches.append(tmp / f"{name}.h5")
    decisions = decisions_table(caches)
    return label_bias(decisions).set_index("scenario"), decisions


def test_a_model_trained_on_both_labellings_decides_alike_under_both(balanced):
    bias, decisions = balanced
    assert len(bias) == len(DEFAULT_SCENARIOS) and (bias["n_pairs"] == 4).all()
    assert (bias["same_decision_share"] == 1.0).all(), bias
    # the bias is small beside the decision (the fit keeps widening |delta|; module docstring)
    strength = bias[["delta_standard", "delta_swapped"]].abs().min(axis=1)
    assert (bias["label_bias"].abs() < 0.2 * strength).all(), bias
    # not a constant answer: tit-for-tat, cooperating after CC and defecting after CD, in both labellings
    actions = decisions.groupby("scenario")["action"].agg(set)
    assert actions["CC_continue"] == actions["CC_continue_swapped"] == {"C"}, actions
    assert actions["CD_punished"] == actions["CD_punished_swapped"] == {"D"}, actions


def test_the_workflows_standard_only_adapter_has_the_label_bias_counterbalancing_exposes(balanced, workflow_dir):
    """The same reward trained on the standard labelling only (the workflow's PT4_COREDe, on
    its counterbalanced scenario CD_punished)."""
    import pandas as pd

    bias, _ = balanced
    workflow = pd.read_csv(workflow_dir / "results/behavior/label_bias.csv").set_index(["model", "scenario"])
    pt4 = workflow.loc["PT4_COREDe"]
    assert set(pt4.index) == {"CD_punished"}
    assert (pt4["same_decision_share"] < 1.0).all(), pt4
    assert pt4["label_bias"].abs().min() > 10 * bias.loc[list(pt4.index), "label_bias"].abs().max(), (pt4, bias)
