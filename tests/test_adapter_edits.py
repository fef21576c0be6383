"""Adapter edits (interp_lib.adapter_edits) against independent computations: PEFT's own merge
of hand-edited adapters and Hugging Face's full forward pass."""

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from interp_lib.adapter_edits.conditions import (Condition, EditError, ablation, layers_text, parse_layers,
                                                 sufficiency, transplant)
from interp_lib.adapter_edits.minimal import minimal_sufficient_set, reproduces, set_record
from interp_lib.adapter_edits.runner import EditRunner
from interp_lib.adapter_edits.summary import edit_summary, layer_verdicts
from interp_lib.adapter_edits.weights import EditableWeights, load_adapter
from interp_lib.cache.prompt_activations import PromptActivations
from interp_lib.model.hooked import HookedModel
from test_hooked import tiny_gemma2

TOKENS = {"C": 5, "D": 7}
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# adapter -> (rank, alpha, target modules): ranks differ, so a transplant moves an update of
# another rank; "qv" adapts q and v only (a transplant from it into "tuned" is refused)
ADAPTERS = {"tuned": (4, 8, ALL), "donor": (2, 3, ALL), "qv": (2, 4, ["q_proj", "v_proj"])}


def _peft_adapter(base, path, rank, alpha, targets, seed):
    from peft import LoraConfig, get_peft_model

    peft_lm = get_peft_model(copy.deepcopy(base), LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, mod in peft_lm.named_modules():
            if hasattr(mod, "lora_A") and "default" in mod.lora_A:
                a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
                a.copy_(torch.randn(a.shape, generator=g) * 0.3)
                b.copy_(torch.randn(b.shape, generator=g) * 0.3)
    peft_lm.save_pretrained(path)
    return path


def _merged(base, adapter_dir):
    """PEFT's own merge (in float32) of the adapter directory into a copy of the base."""
    from peft import PeftModel

    return PeftModel.from_pretrained(copy.deepcopy(base), str(adapter_dir)).merge_and_unload().eval()


@torch.no_grad()
def _full_delta(hf_model, ids) -> float:
    """Hugging Face's full forward pass: logit(D) - logit(C) at the last position."""
    logits = hf_model(ids).logits[0, -1]
    return float(logits[TOKENS["D"]] - logits[TOKENS["C"]])


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("edits")
    base = tiny_gemma2()
    adapters = {name: _peft_adapter(base, root / name, *spec, seed=i + 1) for i, (name, spec) in
                enumerate(ADAPTERS.items())}
    torch.manual_seed(0)
    ids = torch.randint(0, 97, (1, 24))
    hooked = HookedModel(copy.deepcopy(base))
    merged = {name: _merged(base, path) for name, path in adapters.items()}
    acts = {"base": PromptActivations.from_run(HookedModel(copy.deepcopy(base)), ids, TOKENS),
            **{name: PromptActivations.from_run(HookedModel(m), ids, TOKENS) for name, m in merged.items()}}
    updates = {name: load_adapter(name, path, hooked) for name, path in adapters.items()}
    return dict(root=root, base=base, adapters=adapters, ids=ids, hooked=hooked, merged=merged, acts=acts,
                updates=updates)


def _runner(family, finetune="tuned", adapters=("tuned", "donor")):
    weights = EditableWeights(family["hooked"], {a: family["updates"][a] for a in adapters})
    return weights, EditRunner(weights, TOKENS, {"finetune": finetune, "base": None})


def _prompts(family, finetune="tuned"):
    return {"finetune": family["acts"][finetune], "base": family["acts"]["base"]}


def _hand_edited(family, tmp_path, name, layer_keys: dict):
    """A copy of the tuned adapter whose factors for `layer_keys` ({module name in the
    state: replacement or None to zero B}) are replaced; rank and alpha patterns follow the
    donor's for the replaced modules, as PEFT reads them."""
    src = family["adapters"]["tuned"]
    out = tmp_path / name
    out.mkdir()
    state = load_file(src / "adapter_model.safetensors")
    config = json.loads((src / "adapter_config.json").read_text())
    for prefix, repl in layer_keys.items():
        if repl is None:
            state[f"{prefix}.lora_B.weight"] = torch.zeros_like(state[f"{prefix}.lora_B.weight"])
        else:
            (a, b, rank, alpha) = repl
            state[f"{prefix}.lora_A.weight"], state[f"{prefix}.lora_B.weight"] = a, b
            module = prefix.removeprefix("base_model.model.")
            config.setdefault("rank_pattern", {})[module] = rank
            config.setdefault("alpha_pattern", {})[module] = alpha
    save_file(state, out / "adapter_model.safetensors")
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


def _prefix(layer, module):
    part = "self_attn" if module in ALL[:4] else "mlp"
    return f"base_model.model.model.layers.{layer}.{part}.{module}"


def test_transplant_equals_peft_merge_of_a_hand_edited_adapter(family, tmp_path):
    """Acceptance: the donor's update (rank 2, alpha 3) moved into layer 1 of the tuned
    adapter (rank 4, alpha 8) equals PEFT's merge of the tuned adapter whose layer-1 factors
    were replaced by the donor's (rank and alpha patterns set for them), run in full."""
    layer = 1
    weights, runner = _runner(family)
    donor = load_file(family["adapters"]["donor"] / "adapter_model.safetensors")
    repl = {_prefix(layer, m): (donor[f"{_prefix(layer, m)}.lora_A.weight"],
                                donor[f"{_prefix(layer, m)}.lora_B.weight"], 2, 3) for m in ALL}
    edited = _hand_edited(family, tmp_path, "transplanted", repl)
    expected = _full_delta(_merged(family["base"], edited), family["ids"])
    cond = transplant("tuned", family["updates"]["tuned"].adapted, "donor", family["updates"]["donor"].adapted,
                      layer)
    assert cond.start(4) == layer and len(cond.edits) == 7
    got = runner.deltas([cond], _prompts(family))[0]
    assert abs(got - expected) < 2e-5 * max(1.0, abs(expected))
    tuned = family["acts"]["tuned"].delta
    assert abs(expected - tuned) > 1e-2  # the transplant changes the decision: the test means something
    # exact restoration: every module holds its original weight object again
    for key, mod in weights.modules.items():
        assert mod.weight is weights.originals[key]


def test_ablating_every_layer_gives_the_base_and_adding_every_layer_the_finetune(family):
    weights, runner = _runner(family)
    adapted = family["updates"]["tuned"].adapted
    everything = Condition("ablation", "finetune", tuple((layer, m, None) for layer, m in sorted(adapted)),
                           "block", tuple(range(4)))
    alone = sufficiency("tuned", adapted, range(4), kind="minimal_set")
    got = runner.deltas([everything, alone], _prompts(family))
    base, tuned = family["acts"]["base"].delta, family["acts"]["tuned"].delta
    assert abs(got[0] - base) < 1e-5 and abs(got[1] - tuned) < 1e-5
    assert abs(base - tuned) > 0.1


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_single_layer_ablation_equals_a_full_forward_of_the_hand_merged_model(family, tmp_path, layer):
    """Ablation of one layer (starting from the fine-tune's cached resid_pre there, every
    position recomputed) against PEFT's merge of the adapter with that layer's lora_B zeroed,
    run from the tokens; and sufficiency against the merge of that layer's factors alone."""
    weights, runner = _runner(family)
    adapted = family["updates"]["tuned"].adapted
    zeroed = _hand_edited(family, tmp_path, f"ablated{layer}", {_prefix(layer, m): None for m in ALL})
    expected = _full_delta(_merged(family["base"], zeroed), family["ids"])
    others = {_prefix(la, m): None for la in range(4) if la != layer for m in ALL}
    alone = _hand_edited(family, tmp_path, f"alone{layer}", others)
    expected_alone = _full_delta(_merged(family["base"], alone), family["ids"])
    got = runner.deltas([ablation(adapted, layer), sufficiency("tuned", adapted, [layer])], _prompts(family))
    assert abs(got[0] - expected) < 2e-5 * max(1.0, abs(expected))
    assert abs(got[1] - expected_alone) < 2e-5 * max(1.0, abs(expected_alone))
    assert abs(expected - family["acts"]["tuned"].delta) > 1e-3


def test_module_groups_and_batched_rows_equal_single_runs(family, tmp_path):
    """An MLP-group ablation is PEFT's merge without that layer's MLP factors; rows of one
    pass (split by their weights at the edited layer) equal the same rows run one by one."""
    weights, runner = _runner(family)
    adapted = family["updates"]["tuned"].adapted
    zeroed = _hand_edited(family, tmp_path, "mlp1", {_prefix(1, m): None for m in ALL[4:]})
    expected = _full_delta(_merged(family["base"], zeroed), family["ids"])
    conds = [ablation(adapted, 1, g) for g in ("block", "attn", "mlp", "o_proj")]
    conds.append(transplant("tuned", adapted, "donor", family["updates"]["donor"].adapted, 1, "attn"))
    batched = runner.deltas(conds, _prompts(family))
    one_by_one = [runner.deltas([c], _prompts(family))[0] for c in conds]
    assert np.abs(batched - one_by_one).max() < 1e-5
    controls: dict = {}
    small = EditRunner(weights, TOKENS, {"finetune": "tuned", "base": None}, batch_size=2)
    assert np.abs(small.deltas(conds, _prompts(family), controls) - batched).max() < 1e-5  # 1 + 2 + 2 rows a pass
    assert set(controls["finetune"]) == {1}
    assert abs(batched[2] - expected) < 2e-5 * max(1.0, abs(expected))
    assert len(set(np.round(batched, 5))) == len(conds)  # different edits, different deltas


def test_controls_measure_the_unedited_recomputation(family):
    weights, runner = _runner(family)
    adapted = family["updates"]["tuned"].adapted
    controls: dict = {}
    runner.deltas([ablation(adapted, 2), sufficiency("tuned", adapted, [1])], _prompts(family), controls)
    assert controls.keys() == {"finetune", "base"} and set(controls["finetune"]) == {2} and set(controls["base"]) == {1}
    # the fine-tune as base + on-the-fly update against PEFT's float32 merge: rounding only
    assert 0 <= controls["finetune"][2] < 1e-5 and controls["base"][1] < 1e-5
    # a later pass from the same start layers adds no control
    runner.deltas([ablation(adapted, 2, "mlp")], _prompts(family), controls)
    assert set(controls["finetune"]) == {2}
    assert runner.recompute("finetune", 0, family["acts"]["tuned"]) == pytest.approx(family["acts"]["tuned"].delta,
                                                                                     abs=1e-5)


def test_a_module_the_source_does_not_adapt_is_refused(family):
    tuned, qv = family["updates"]["tuned"], family["updates"]["qv"]
    with pytest.raises(EditError) as err:
        transplant("tuned", tuned.adapted, "qv", qv.adapted, 2, "block", qv.path)
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"transplant qv -> tuned: adapter qv ({qv.path}) does not adapt layer 2 k_proj, which tuned "
                       "adapts; choose a module group both adapt")
    # a group that both adapt is not refused; one that only the source adapts is a transplant too
    assert transplant("tuned", tuned.adapted, "qv", qv.adapted, 2, "q_proj") is not None
    assert transplant("qv", qv.adapted, "tuned", tuned.adapted, 2, "block") is not None
    assert ablation(qv.adapted, 2, "mlp") is None  # nothing to remove


# ---- the greedy minimal sufficient set on a hand-built case ---------------------------------
# Five layers; the edited delta of a set S is base + sum of its layers' contributions, plus an
# interaction: layers 1 and 3 only count together. The fine-tune (all five) is at 10.0.
CONTRIB = {0: 0.2, 1: 2.0, 2: 6.0, 3: 2.0, 4: -0.3}
BASE, MARGIN = -4.0, 0.1


def _hand_delta(layers) -> float:
    s = set(layers)
    total = BASE + sum(CONTRIB[x] for x in s if x not in (1, 3))
    return total + (CONTRIB[1] + CONTRIB[3] + 4.0 if {1, 3} <= s else 0.0)


FT = _hand_delta(CONTRIB)


def _hand_check(calls):
    def check(sets, full):
        calls.extend(tuple(sorted(s)) for s in sets)
        out = []
        for s in sets:
            d = np.array([_hand_delta(s)])
            out.append((bool(reproduces(d, [FT], [BASE], [0.0], MARGIN)[0]), d))
        return out

    return check


def test_greedy_minimal_set_has_the_leave_one_out_property():
    """Ranked by single-layer scores (2, then 1 and 3, then 0; 4 pushes away), the greedy
    prefix that first reproduces the fine-tune within 10% of its change (14 logits: within
    1.4 of FT = 9.9) is {2, 1, 3, 0}; leave-one-out drops 0 (9.7 still reproduces), and then
    no member can go: {1, 2, 3} is 1-minimal, and each subset without one member fails."""
    scores = {x: _hand_delta([x]) - BASE for x in CONTRIB}
    calls: list = []
    found = minimal_sufficient_set(scores, _hand_check(calls), max_layers=5)
    assert FT == pytest.approx(9.9)
    assert found.kind == "minimal" and found.layers == [1, 2, 3] and found.greedy_size == 4
    assert found.attempts == [(0, False), (1, False), (2, False), (3, False), (4, True)]
    assert found.deltas[0] == pytest.approx(_hand_delta([1, 2, 3]))
    ok = lambda s: bool(reproduces([_hand_delta(s)], [FT], [BASE], [0.0], MARGIN)[0])  # noqa: E731
    assert ok(found.layers)
    for member, still in found.leave_one_out:
        assert still is False and not ok([x for x in found.layers if x != member])
    # unpruned: the greedy prefix, not minimal (dropping 0 keeps it)
    greedy = minimal_sufficient_set(scores, _hand_check([]), max_layers=5, prune=False)
    assert greedy.kind == "greedy" and greedy.layers == [0, 1, 2, 3]
    # too few layers allowed: none, with its reason
    none = minimal_sufficient_set(scores, _hand_check([]), max_layers=2)
    assert none.kind == "none" and "top 2" in none.reason
    record = set_record(found)
    assert record["layers"] == "1;2;3" and record["leave_one_out"] == "1:fails;2:fails;3:fails"
    assert parse_layers(record["layers"]) == [1, 2, 3] and parse_layers(3) == [3] and parse_layers(math.nan) == []
    assert layers_text([3, 1]) == "1;3"


def test_the_base_alone_can_suffice():
    found = minimal_sufficient_set({0: 1.0}, lambda sets, full: [(True, np.array([1.0])) for _ in sets], 3)
    assert found.kind == "minimal" and found.layers == [] and "base alone" in found.reason


def test_reproduces_needs_the_sign_and_the_margin():
    # fine-tune 2.0, base -2.0: tolerance 0.4 (10% of 4), or 3 x a larger floor
    assert reproduces([1.7, 1.5, -0.1, 2.39], [2.0] * 4, [-2.0] * 4, [0.0] * 4, 0.1).tolist() == [True, False, False,
                                                                                                   True]
    assert reproduces([1.5], [2.0], [-2.0], [0.2], 0.1).tolist() == [True]
    assert reproduces([0.05], [-0.05], [0.0], [1.0], 0.1).tolist() == [False]  # the sign always counts


def _fake_rows():
    rows = []
    for scenario, sign in (("S", 1.0), ("S_swapped", -1.0)):
        for v in (1, 2, 3):
            for layer in (0, 1):
                for kind, change, rep in (("ablation", -3.0 * sign if layer else -0.01, layer == 0),
                                          ("sufficiency", 2.5 * sign if layer else 0.1, layer == 1)):
                    rows.append(dict(model="m", reference="b", scenario=scenario, variant=v,
                                     labelling="swapped" if sign < 0 else "standard", kind=kind, group="block",
                                     layer=layer, layers=str(layer), source="m" if kind == "sufficiency" else "",
                                     experiment="", background="finetune", start_layer=layer, baseline_delta=1.0,
                                     delta=1.0 + change + 0.01 * v, delta_change=change + 0.01 * v,
                                     baseline_p_defect=0.7, p_defect=0.5, p_defect_change=-0.2,
                                     finetune_delta=1.0, base_delta=-2.0, goal_delta=-2.0,
                                     toward_goal=-(change + 0.01 * v), gap_fraction=0.5,
                                     flipped=layer == 1 and kind == "ablation", reproduces=rep, noise_floor=0.01,
                                     below_noise=False, precision="float32"))
    return pd.DataFrame(rows)


def test_summary_and_verdicts():
    rows = _fake_rows()
    summary = edit_summary(rows)
    one = summary[(summary["scenario"] == "S") & (summary["kind"] == "ablation") & (summary["layer"] == 1)].iloc[0]
    assert one["n"] == 3 and one["mean_delta_change"] == pytest.approx(-2.98)
    assert one["ci_low"] <= one["mean_delta_change"] <= one["ci_high"]
    assert one["mean_toward_goal"] == pytest.approx(2.98) and one["toward_ci_low"] <= 2.98 <= one["toward_ci_high"]
    assert (one["mean_goal_change"], one["mean_goal_gap"]) == (-3.0, 3.0)
    assert not one["below_noise"] and one["flip_share"] == 1.0
    small = summary[(summary["scenario"] == "S") & (summary["kind"] == "ablation") & (summary["layer"] == 0)].iloc[0]
    assert small["below_noise"]  # mean |0.01| within 3 x the floor of 0.01
    pooled = summary[(summary["scenario"] == "ALL") & (summary["labelling"] == "swapped")]
    assert len(pooled) == 4 and (pooled["n"] == 3).all()
    sets = pd.DataFrame([{"model": "m", "scenario": "S", "set_kind": "minimal", "layers": 1}])
    verdicts = layer_verdicts(rows, sets)
    s1 = verdicts[(verdicts["scenario"] == "S") & (verdicts["layer"] == 1)].iloc[0]
    assert (s1["necessary"], s1["sufficient"], s1["in_minimal_set"], s1["ablation_flips"]) == (1, 1, 1, 3)
    s0 = verdicts[(verdicts["scenario"] == "S") & (verdicts["layer"] == 0)].iloc[0]
    assert (s0["necessary"], s0["sufficient"]) == (0, 0)
    total = verdicts[(verdicts["scenario"] == "ALL") & (verdicts["layer"] == 1)].iloc[0]
    assert (total["n_scenarios"], total["necessary"], total["sufficient"], total["in_minimal_set"]) == (2, 2, 2, 1)


def test_figure_and_rq_section_from_the_tables(tmp_path):
    """The figure draws from the summary table alone; the RQ section names the necessary and
    sufficient layers of the verdict table and the minimal sets, and the skipped models."""
    from interp_lib.plots.adapter_edits import plot_adapter_edits
    from interp_lib.report.adapter_edits import adapter_edits_section
    from interp_lib.report.document import Document, to_markdown
    from interp_lib.report.inputs import Inputs

    rows = _fake_rows()
    moved = rows[rows["kind"] == "ablation"].assign(kind="transplant", source="d", experiment="d_to_m",
                                                    toward_goal=lambda df: df["delta_change"])
    summary, verdicts = edit_summary(pd.concat([rows, moved], ignore_index=True)), None
    sets = pd.DataFrame([{"model": "m", "reference": "b", "scenario": s, "labelling": "standard", "margin": 0.1,
                          "n_prompts": 3, "set_kind": "minimal", "layers": "1", "size": 1, "greedy_size": 1,
                          "ranking": "1:2.5;0:0.1", "attempts": "0:no;1:yes", "leave_one_out": "1:fails",
                          "max_error": 0.01, "reason": "", "precision": "float32"} for s in ("S", "S_swapped")])
    verdicts = layer_verdicts(rows, sets)
    paths = {}
    for name, table in (("summary", summary), ("verdicts", verdicts), ("sets", sets)):
        paths[name] = tmp_path / f"{name}.csv"
        table.to_csv(paths[name], index=False)
    plot_adapter_edits(pd.read_csv(paths["summary"]), tmp_path / "m.png", label="M")
    assert (tmp_path / "m.png").stat().st_size > 10_000
    doc = Document()
    config = {"models": {"b": {"base": "x"}, "m": {"base": "x", "adapter": "a"}, "merged": {"base": "y"}}}
    adapter_edits_section(doc, Inputs(adapter_edits={k: str(v) for k, v in paths.items()}), config, 10)
    text = to_markdown(doc)
    assert "merged (no adapter (merged-only weights)" in text
    table = next(b[1].df for b in doc.blocks if b[0] == "table")
    row = table.iloc[0]
    assert (row["fine-tune"], row["scenarios"]) == ("m", 2)
    assert row["necessary in every scenario"] == "L1" and row["sufficient alone in every scenario"] == "L1"
    assert row["minimal sufficient sets"] == "{L1} minimal (S, S_swapped)"
    transplants = [b[1].df for b in doc.blocks if b[0] == "table"][-1]
    first = transplants.iloc[0]
    assert (first["experiment"], first["source"], first["labelling"], first["layer"]) == ("d_to_m", "d", "standard", "L0")
    assert first["towards the source"].startswith("+") and "[" in first["towards the source"]


def test_pruning_rechecks_members_that_were_droppable_together():
    """Layers 0 and 1 are redundant (either gives the same +5, both together too): each can be
    dropped from the greedy prefix {2, 0, 1, 4}, but not both. Pruning drops 0 (the lower-
    ranked of the tie, known from the leave-one-out batch) and keeps 1, whose removal it
    checks again against {1, 2, 4}; every member of the result is then necessary."""
    base = -4.0

    def delta(layers):
        s = set(layers)
        return base + 8.0 * (2 in s) + 5.0 * bool(s & {0, 1}) + 3.0 * (4 in s) - 0.2 * (3 in s)

    ft = delta(range(5))
    checked = []

    def check(sets, full):
        checked.extend(tuple(sorted(x)) for x in sets)
        return [(bool(reproduces([delta(x)], [ft], [base], [0.0], 0.1)[0]), np.array([delta(x)])) for x in sets]

    found = minimal_sufficient_set({x: delta([x]) - base for x in range(5)}, check, max_layers=5)
    assert found.greedy_size == 4 and found.kind == "minimal" and found.layers == [1, 2, 4]
    assert (2, 4) in checked  # 1 checked again after 0 went
    assert [ok for _, ok in found.leave_one_out] == [False, False, False]
    assert found.deltas[0] == pytest.approx(delta([1, 2, 4]))


def test_which_models_are_edited_and_which_are_skipped():
    from interp_lib.adapter_edits.plan import edit_models, transplant_sources

    config = {"models": {"base": {"base": "b"}, "tuned": {"base": "b", "adapter": "a1"},
                         "other": {"base": "b", "adapter": "a2"}, "merged": {"base": "m"},
                         "orphan": {"base": "c", "adapter": "a3"}, "plain": {"base": "b"}},
              "experiments": {"e1": {"source": "other", "target": "tuned"}, "e2": {"source": "merged", "target": "tuned"},
                              "e3": {"source": "orphan", "target": "tuned"}, "e4": {"source": "tuned", "target": "base"}}}
    edited, skipped = edit_models(config)
    assert edited == {"tuned": "base", "other": "base"}
    assert set(skipped) == {"merged", "orphan", "plain"}
    assert skipped["merged"].startswith("no adapter (merged-only weights)")
    assert "no configured model without an adapter on its base c" in skipped["orphan"]
    sources, why = transplant_sources(config, "tuned")
    assert sources == {"other": "e1"} and set(why) == {"e2", "e3"}
    assert "has no adapter" in why["e2"] and "on base c" in why["e3"]


@pytest.mark.parametrize("section, message", [
    ({"groups": ["heads"]}, "adapter_edits.groups.0: 'heads' is not one of"),
    ({"margin": 1.5}, "adapter_edits.margin: 1.5 is greater than or equal to the maximum of 1"),
    ({"group_layer": 3}, "unknown key adapter_edits.group_layer"),
])
def test_bad_settings_are_one_line_errors(section, message):
    from interp_lib.config import ConfigError, validate_config

    cfg = {"models": {"m": {"base": "b"}}, "scenarios": {"S": {"self_last": "C", "opponent_last": "C"}},
           "adapter_edits": section}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, source="my.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_defaults_of_the_section():
    from interp_lib.config import validate_config
    from interp_lib.jobs.adapter_edits import DEFAULTS

    cfg = validate_config({"models": {"m": {"base": "b"}}, "scenarios": {"S": {"self_last": "C", "opponent_last": "C"}}})
    # enabled and scenarios decide which jobs exist (workflow/rules/common.smk), not what one computes
    assert {k: v for k, v in cfg["adapter_edits"].items() if k not in ("enabled", "scenarios")} == DEFAULTS
    assert cfg["adapter_edits"]["enabled"] is True and cfg["adapter_edits"]["scenarios"] is None
