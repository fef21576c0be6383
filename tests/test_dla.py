"""Direct logit attribution: a hand-computable case, exact reconstruction of the
pre-softcap delta, each head's attribution against an independent ablation of its direct
path on the real hooked model, the workflow's tables, and the seed's custom-analysis
snippet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from interp_lib.cache import CacheFile
from interp_lib.analyses.dla import (FULL_COLUMNS, TOP_COLUMNS, DirectLogitAttributor, attribute, dla_from_arrays,
                            read_full_results, result_frame, results_from_cache, top_components)
from interp_lib.analyses.logit_lens import ActionReadout
from test_logit_lens import ACTIONS, analysis_dir, tiny_gemma2, write_tiny_cache  # noqa: F401


def test_hand_computable_case():
    # d = 2; u = (W_U[D] - W_U[C]) * gain / s_f = ([1, 2] - [0, 0]) * [1, 0.5] / 2 = [0.5, 0.5]
    readout = ActionReadout(np.array([[0.0, 0.0], [1.0, 2.0]]), np.array([1.0, 0.5]), 1e-6, float("nan"))
    assert readout.final_softcap is None
    embed = np.array([2.0, 0.0])  # 1.0
    heads = np.array([[[1.0, 1.0], [-4.0, 0.0]]])  # L0H0 = 1.0, L0H1 = -2.0
    mlps = np.array([[0.0, 6.0]])  # 3.0
    e, h, m = attribute(embed, heads, mlps, 2.0, readout)
    assert e == pytest.approx(1.0)
    assert np.allclose(h, [[1.0, -2.0]]) and np.allclose(m, [3.0])
    arrays = {"embed": embed[None], "head_out_decision": heads, "mlp_out": mlps[:, None], "ln_final_scale": np.array([2.0])}
    res = dla_from_arrays(arrays, {"decision_position": 0, "delta": 2.9, "delta_pre_softcap": 3.0}, readout,
                          model="m", scenario="s", variant=1)
    assert res.total == pytest.approx(3.0) and res.reconstruction_error == pytest.approx(0.0)
    top = top_components(res, top_k=2)
    assert top == {"pro_defect": [("L0_MLP", pytest.approx(3.0)), ("embed", pytest.approx(1.0))],
                   "pro_cooperate": [("L0H1", pytest.approx(-2.0))]}
    df = result_frame(res)
    assert list(df.columns) == FULL_COLUMNS
    assert df["component"].tolist() == ["embed", "L0H0", "L0H1", "L0_MLP"]
    assert df["kind"].tolist() == ["embed", "head", "head", "mlp"]
    assert df["layer"].isna().tolist() == [True, False, False, False]
    assert df["head"].isna().tolist() == [True, False, False, True]


def direct_effects_by_ablation(hooked, ids, layer, actions, clean=None):
    """[H] pre-softcap delta change when head h of `layer` has its z zeroed at the decision
    position, with the layer's post-attention norm scale, every later attention / MLP output
    and the final norm scale held at their clean values (only the direct path changes).
    One batched pass: batch row h ablates head h."""
    pos, last, H = ids.shape[1] - 1, hooked.n_layers - 1, hooked.n_heads
    if clean is None:
        _, clean = hooked.run_with_cache(ids)
    rows = [actions["C"], actions["D"]]

    def const(value):
        return lambda tensor, name: value.expand(H, *value.shape[1:])

    def zero_heads(z, name):
        z = z.clone()
        z[torch.arange(H), pos, torch.arange(H)] = 0.0
        return z

    final_scale = clean["ln_final.hook_scale"]
    hooks = [(f"blocks.{layer}.attn.hook_z", zero_heads), ("ln_final.hook_scale", const(final_scale)),
             (f"blocks.{layer}.hook_mlp_out", const(clean[f"blocks.{layer}.hook_mlp_out"]))]
    if hooked.cfg.post_norms:
        hooks.append((f"blocks.{layer}.ln1_post.hook_scale", const(clean[f"blocks.{layer}.ln1_post.hook_scale"])))
    for l in range(layer + 1, hooked.n_layers):
        for name in (f"blocks.{l}.hook_attn_out", f"blocks.{l}.hook_mlp_out"):
            hooks.append((name, const(clean[name])))
    seen = {}
    hooks.append((f"blocks.{last}.hook_resid_post", lambda t, name: seen.setdefault("resid", t)))
    hooked.run_with_hooks(ids.expand(H, -1), hooks)

    def pre_delta(resid):  # final norm with the clean scale, C and D rows, no softcap
        scale = final_scale[:, pos].expand(resid.shape[0], 1)
        with torch.no_grad():
            lg = hooked.unembed(resid[:, pos], {"ln_final.hook_scale": [lambda t, n: scale]}, rows=rows,
                                apply_softcap=False)
        return (lg[:, 1] - lg[:, 0]).double().numpy()

    return pre_delta(clean[f"blocks.{last}.hook_resid_post"]) - pre_delta(seen["resid"])


@pytest.fixture(scope="module")
def tiny():
    return tiny_gemma2()


def test_tiny_reconstruction_and_ablation(tiny):
    ids = torch.randint(0, 97, (1, 14), generator=torch.Generator().manual_seed(5))
    res = DirectLogitAttributor(tiny, ACTIONS).decompose_logits(ids)
    assert res.head_contributions.shape == (tiny.n_layers, tiny.n_heads)
    assert res.mlp_contributions.shape == (tiny.n_layers,)
    assert abs(res.reconstruction_error) < 1e-5
    logits = tiny.run_with_hooks(ids)
    assert abs(res.final_delta - float(logits[0, -1, 7] - logits[0, -1, 5])) < 1e-6
    _, clean = tiny.run_with_cache(ids)
    for layer in range(tiny.n_layers):
        assert np.ptp(res.head_contributions[layer]) > 1e-3  # not attn_out / n_heads
        effects = direct_effects_by_ablation(tiny, ids, layer, ACTIONS, clean)
        assert np.abs(effects - res.head_contributions[layer]).max() < 1e-5


def test_cache_path_equals_attributor(tiny, tmp_path):
    variants = write_tiny_cache(tiny, tmp_path / "toy.h5", seed=1)
    with CacheFile(tmp_path / "toy.h5", fingerprint="fp") as cache:
        results = results_from_cache(cache)
    dla = DirectLogitAttributor(tiny, ACTIONS)
    for res in results:
        ids = torch.as_tensor(variants[res.variant]["arrays"]["input_ids"])[None]
        direct = dla.decompose_logits(ids)
        assert np.allclose(res.head_contributions, direct.head_contributions, atol=1e-7)
        assert np.allclose(res.mlp_contributions, direct.mlp_contributions, atol=1e-7)
        assert abs(res.reconstruction_error) < 1e-5


@pytest.fixture(scope="module")
def demo_model(analysis_dir):
    from interp_lib.model.loader import LoRAModelLoader

    loader = LoRAModelLoader(device="cpu", config=analysis_dir / "config.yaml", results_dir=analysis_dir / "results")
    return loader.load_hooked_model("PT2_COREDe")


def test_demo_head_attribution_equals_direct_path_ablation(analysis_dir, demo_model):
    from interp_lib.tokens import get_action_token_ids

    actions = get_action_token_ids(demo_model.tokenizer)
    with CacheFile(analysis_dir / "results" / "cache" / "PT2_COREDe" / "CC_temptation.h5") as cache:
        ids = torch.as_tensor(cache[1]["input_ids"])[None]
        cached = results_from_cache(cache)[0]
    res = DirectLogitAttributor(demo_model, actions).decompose_logits(ids)
    assert np.allclose(res.head_contributions, cached.head_contributions, atol=1e-6)
    scale = max(1.0, abs(res.final_delta_pre_softcap))
    assert abs(res.reconstruction_error) <= 1e-4 * scale
    _, clean = demo_model.run_with_cache(ids)
    for layer in range(demo_model.n_layers):
        assert np.ptp(res.head_contributions[layer]) > 1e-4  # heads of a layer differ
        effects = direct_effects_by_ablation(demo_model, ids, layer, actions, clean)
        assert np.abs(effects - res.head_contributions[layer]).max() <= 1e-5 * scale, layer


def test_workflow_dla_tables(analysis_dir):
    res = analysis_dir / "results"
    decisions = pd.read_csv(res / "behavior" / "decisions.csv")
    summary = pd.read_csv(res / "dla" / "dla_summary_stats.csv")
    keys = ["model", "scenario", "variant"]
    merged = decisions.merge(summary, on=keys, validate="one_to_one")
    assert len(merged) == len(decisions) == len(summary)
    tol = 1e-4 * np.maximum(1.0, merged["final_delta_pre_softcap"].abs())
    assert (merged["reconstruction_error"].abs() <= tol).all()
    assert (merged["final_delta"] - merged["delta"]).abs().max() < 1e-6
    assert (merged["final_action"] == merged["action"]).all()

    full = read_full_results(res / "dla" / "dla_full_results.csv")
    assert list(full.columns) == FULL_COLUMNS
    assert set(full["kind"]) == {"embed", "head", "mlp"}
    assert full.loc[full["kind"] == "embed", ["layer", "head"]].isna().all().all()
    assert full.loc[full["kind"] == "mlp", "head"].isna().all()
    sums = full.groupby(keys)["contribution"].sum().rename("sum").reset_index().merge(summary, on=keys)
    assert np.allclose(sums["sum"], sums["component_sum"], atol=1e-6)
    parts = summary["embed"] + summary["heads_total"] + summary["mlps_total"]
    assert np.allclose(parts, summary["component_sum"], atol=1e-6)

    top = pd.read_csv(res / "dla" / "dla_top_components.csv")
    assert list(top.columns) == TOP_COLUMNS
    means = full.groupby(["model", "scenario", "component"])["contribution"].mean()
    for (model, scenario, direction), grp in top.groupby(["model", "scenario", "direction"]):
        assert grp["rank"].tolist() == list(range(1, len(grp) + 1))
        values = grp["contribution"].to_numpy()
        assert (values > 0).all() if direction == "pro_defect" else (values < 0).all()
        assert (np.diff(values) <= 0).all() if direction == "pro_defect" else (np.diff(values) >= 0).all()
        expected = means.loc[model, scenario].loc[grp["component"]].to_numpy()
        assert np.allclose(values, expected, atol=1e-9)

    models, scenarios = decisions["model"].unique(), decisions["scenario"].unique()
    pngs = [f"dla_heads_{m}_{s}.png" for m in models for s in scenarios]
    pngs += [f"dla_mlps_{m}_{s}.png" for m in models for s in scenarios]
    pngs += [f"dla_top_components_{m}.png" for m in models] + [f"dla_model_comparison_{s}.png" for s in scenarios]
    for name in pngs:
        assert (res / "dla" / name).stat().st_size > 10_000, name


def test_seed_custom_analysis_snippet(analysis_dir, monkeypatch):
    """The seed's "Custom analysis" snippet (logit lens and DLA), run on the embedded
    models, agrees with the workflow's numbers for the same prompt."""
    import json

    from interp_lib.prompts import build_dataset

    monkeypatch.chdir(analysis_dir)  # ./config.yaml and ./results, as for a user
    record = next(r for r in build_dataset() if r["scenario"] == "CC_temptation")

    from interp_lib import DirectLogitAttributor, LoRAModelLoader, LogitLensAnalyzer, get_action_token_ids

    loader = LoRAModelLoader(device="cpu")
    model = loader.load_hooked_model("PT3_COREDe")
    action_tokens = get_action_token_ids(model.tokenizer)

    lens = LogitLensAnalyzer(model, action_tokens)
    trajectory = lens.compute_action_trajectory(record["prompt"])

    dla = DirectLogitAttributor(model, action_tokens)
    result = dla.decompose_logits(record["prompt"])
    top_components = dla.identify_top_components(result, top_k=20)

    assert trajectory.shape == (model.n_layers,)
    assert result.head_contributions.shape == (model.n_layers, model.n_heads)
    assert set(top_components) == {"pro_defect", "pro_cooperate"}
    assert 0 < len(top_components["pro_defect"]) + len(top_components["pro_cooperate"]) <= 40
    # the same prompt through the workflow (cache -> trajectories.json / dla_full_results.csv)
    records = json.loads((analysis_dir / "results" / "logit_lens" / "trajectories.json").read_text())
    with CacheFile(analysis_dir / "results" / "cache" / "PT3_COREDe" / "CC_temptation.h5") as cache:
        variant = next(v for v in cache.variants if cache[v].attrs["prompt"] == record["prompt"])
    cached = next(r for r in records if (r["model"], r["scenario"], r["variant"]) == ("PT3_COREDe", "CC_temptation", variant))
    assert np.allclose(trajectory, cached["trajectory"], atol=1e-5)
    full = read_full_results(analysis_dir / "results" / "dla" / "dla_full_results.csv")
    rows = full[(full["model"] == "PT3_COREDe") & (full["scenario"] == "CC_temptation") & (full["variant"] == variant)]
    assert np.allclose(dla.export_to_dataframe(result)["contribution"].to_numpy(), rows["contribution"].to_numpy(),
                       atol=1e-5)


@pytest.mark.parametrize("arch", ["gemma3", "gemma3_softcaps", "qwen3", "llama"])
def test_reconstruction_and_ablation_on_each_architecture(arch):
    """DLA reconstructs the pre-softcap delta (<= 1e-4) and each head's attribution is its
    direct-path ablation, on the q/k-norm families too (Gemma-3 through its frozen post-norms)."""
    from interp_lib.model.hooked import HookedModel
    from test_hooked import MODELS

    hooked = HookedModel(MODELS[arch]())
    ids = torch.randint(0, 97, (1, 14), generator=torch.Generator().manual_seed(5))
    res = DirectLogitAttributor(hooked, ACTIONS).decompose_logits(ids)
    assert abs(res.reconstruction_error) < 1e-4
    logits = hooked.run_with_hooks(ids)
    assert abs(res.final_delta - float(logits[0, -1, 7] - logits[0, -1, 5])) < 1e-5
    _, clean = hooked.run_with_cache(ids)
    for layer in range(hooked.n_layers):
        assert np.ptp(res.head_contributions[layer]) > 1e-4
        effects = direct_effects_by_ablation(hooked, ids, layer, ACTIONS, clean)
        assert np.abs(effects - res.head_contributions[layer]).max() < 1e-5
