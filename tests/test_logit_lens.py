"""Logit lens: the array-level readout against the hooked model's own unembedding, the
layer statistics, and the workflow's outputs against the behavioural baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

from interp_lib.cache import CacheFile, collect_variant, file_attrs, write_cache
from interp_lib.model.hooked import HookedModel
from interp_lib.analyses.logit_lens import (ActionReadout, LogitLensAnalyzer, layer_statistics, statistics_table,
                                   trajectories_from_cache)

REPO = Path(__file__).resolve().parents[1]
ACTIONS = {"C": 5, "D": 7, "prefix": [3], "action1_tokens": [3, 5], "action2_tokens": [3, 7]}


def tiny_gemma2(final_softcap=2.0):
    """Random tiny Gemma-2 with a small final softcap, so that the softcap matters."""
    cfg = Gemma2Config(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                       query_pre_attn_scalar=24, max_position_embeddings=128, final_logit_softcapping=final_softcap,
                       attn_implementation="eager")
    torch.manual_seed(1)
    model = Gemma2ForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return HookedModel(model.eval(), name="tiny")


def write_tiny_cache(hooked, path, n_variants=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    variants = {}
    for v in range(1, n_variants + 1):
        ids = torch.randint(0, 97, (1, 12 + 3 * v), generator=gen)
        with torch.no_grad():
            data = collect_variant(hooked, ids, ACTIONS)
        data["attrs"]["prompt"] = f"prompt {v}"
        variants[v] = data
    unembed = {"W_U_actions": hooked.W_U[[ACTIONS["C"], ACTIONS["D"]]].detach().float().numpy(),
               "ln_final_gain": hooked.final_norm_gain().detach().numpy()}
    write_cache(path, file_attrs(hooked, "tiny", "toy", "fp", "th", ACTIONS), unembed, variants)
    return variants


def analysis_targets(workdir: Path) -> list[str]:
    import yaml

    config = yaml.safe_load((workdir / "config.yaml").read_text())
    models, scenarios = list(config["models"]), list(config["scenarios"])
    return (["logit_lens_tables", "logit_lens_plots", "dla_tables"]
            + [f"results/dla/dla_top_components_{m}.png" for m in models]
            + [f"results/{kind}_{s}.png" for s in scenarios
               for kind in ("dla/dla_model_comparison", "logit_lens/logit_lens_comparison")])


@pytest.fixture(scope="session")
def analysis_dir(workflow_dir) -> Path:
    """`workflow_dir` with the logit-lens and DLA outputs built (from the caches only)."""
    snakefile = REPO / "Snakefile"
    if "rules/dla.smk" not in snakefile.read_text() or "rules/logit_lens.smk" not in snakefile.read_text():
        # the rules are not included in the main Snakefile yet: include them beside it
        snakefile = workflow_dir / "Snakefile.lens_dla"
        parts = ("Snakefile", "workflow/rules/logit_lens.smk", "workflow/rules/dla.smk")
        snakefile.write_text("".join(f'include: "{REPO / part}"\n' for part in parts))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workflow_dir),
           "--cores", "2", *analysis_targets(workflow_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workflow_dir)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return workflow_dir


@pytest.fixture(scope="module")
def tiny():
    return tiny_gemma2()


def test_trajectory_matches_hooked_unembedding(tiny):
    ids = torch.randint(0, 97, (1, 15), generator=torch.Generator().manual_seed(3))
    traj = LogitLensAnalyzer(tiny, ACTIONS).compute_action_trajectory(ids)
    assert traj.shape == (tiny.n_layers,)
    logits, cache = tiny.run_with_cache(ids)
    with torch.no_grad():
        for l in range(tiny.n_layers):
            lg = tiny.unembed(cache[f"blocks.{l}.hook_resid_post"][:, -1], rows=[ACTIONS["C"], ACTIONS["D"]])
            assert abs(traj[l] - float(lg[0, 1] - lg[0, 0])) < 1e-5
    own = float(logits[0, -1, ACTIONS["D"]] - logits[0, -1, ACTIONS["C"]])
    assert abs(traj[-1] - own) < 1e-5
    # the softcap acts on each logit: capping the difference instead would give another number
    readout = ActionReadout.from_model(tiny, ACTIONS)
    pre = readout.delta(cache[f"blocks.{tiny.n_layers - 1}.hook_resid_post"][0, -1].numpy(), apply_softcap=False)
    assert abs(2.0 * np.tanh(pre / 2.0) - own) > 1e-4 or abs(pre) < 1e-3


def test_cache_path_equals_analyzer(tiny, tmp_path):
    variants = write_tiny_cache(tiny, tmp_path / "toy.h5")
    with CacheFile(tmp_path / "toy.h5", fingerprint="fp") as cache:
        records = trajectories_from_cache(cache)
    lens = LogitLensAnalyzer(tiny, ACTIONS)
    for rec in records:
        ids = torch.as_tensor(variants[rec["variant"]]["arrays"]["input_ids"])[None]
        assert np.allclose(rec["trajectory"], lens.compute_action_trajectory(ids), atol=1e-6)
        assert abs(rec["trajectory"][-1] - rec["delta"]) < 1e-5
    table = statistics_table(records)
    assert len(table) == len(records) and table["lens_minus_model"].abs().max() < 1e-5


def test_layer_statistics_hand_case():
    stats = layer_statistics([-1.0, 2.0, 3.0, -0.5, 1.0, 2.0])
    assert stats["flip_layers"] == [1, 3, 4]
    assert stats["decision_layer"] == 4
    assert (stats["cooperate_layers"], stats["defect_layers"]) == (2, 4)
    assert stats["final_action"] == "D" and stats["final_delta"] == 2.0
    assert stats["mean_delta"] == pytest.approx(6.5 / 6)
    assert stats["std_delta"] == pytest.approx(np.std([-1.0, 2.0, 3.0, -0.5, 1.0, 2.0]))
    steady = layer_statistics([-0.1, -2.0, -3.0])
    assert steady["flip_layers"] == [] and steady["decision_layer"] == 0 and steady["final_action"] == "C"


def test_workflow_lens_matches_decisions(analysis_dir):
    res = analysis_dir / "results"
    records = json.loads((res / "logit_lens" / "trajectories.json").read_text())
    decisions = pd.read_csv(res / "behavior" / "decisions.csv")
    assert len(records) == len(decisions)
    lens = pd.DataFrame([{**{k: r[k] for k in ("model", "scenario", "variant")}, "last": r["trajectory"][-1]}
                         for r in records])
    merged = decisions.merge(lens, on=["model", "scenario", "variant"], validate="one_to_one")
    assert len(merged) == len(decisions)
    assert (merged["last"] - merged["delta"]).abs().max() <= 1e-5
    stats = pd.read_csv(res / "logit_lens" / "statistics.csv")
    assert len(stats) == len(decisions)
    assert set(stats["final_action"]) <= {"C", "D"}
    assert (stats["cooperate_layers"] + stats["defect_layers"] == stats["n_layers"]).all()
    out = res / "logit_lens"
    pngs = ["logit_lens_grid.png", "final_preferences_heatmap.png"] + [
        f"logit_lens_comparison_{s}.png" for s in decisions["scenario"].unique()]
    for name in pngs:
        assert (out / name).stat().st_size > 10_000, name
