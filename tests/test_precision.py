"""Precision modes (issue 13): the float32 readout, the residual-stream dtype, DLA's error
budget in bfloat16, and the patching noise floor, on a random model with Gemma-2-2b's
widths (2 layers, small vocabulary) and on the embedded family."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from interp_lib.cache import collect_variant
from interp_lib.analyses.dla import dla_from_arrays
from interp_lib.model.hooked import HookedModel
from interp_lib.analyses.logit_lens import ActionReadout
from interp_lib.noise import NOISE_MULTIPLE
from interp_lib.patching import PatchRunner, PromptActivations, all_components, noise_floor, own_W_O, sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gpu_workload import _round_to_bfloat16, gemma2_2b_config  # noqa: E402

TOKENS = {"C": 5, "D": 7, "prefix": [1]}
VOCAB, T = 512, 64
BF16_MODES = ("bfloat16", "bfloat16-resid32")


@pytest.fixture(scope="module")
def float32_pair():
    """(target, source) float32 HF models with Gemma-2-2b's widths and bfloat16-representable
    weights; the final norm's gain is 40 so that logits reach 30-60 as real models' do."""
    from transformers import Gemma2ForCausalLM

    torch.manual_seed(0)
    target = Gemma2ForCausalLM(gemma2_2b_config(2, VOCAB, sliding_window=32)).eval()
    with torch.no_grad():
        target.model.norm.weight.fill_(39.0)
    source = Gemma2ForCausalLM(target.config).eval()
    source.load_state_dict(target.state_dict())
    with torch.no_grad():
        for name, p in source.named_parameters():
            if "proj" in name:
                p.add_(0.002 * torch.randn_like(p))
    for m in (target, source):
        _round_to_bfloat16(m)
    return target, source


def hooked(hf_model, mode: str) -> HookedModel:
    import copy

    from interp_lib.model.precision import get_precision

    return HookedModel(copy.deepcopy(hf_model).to(get_precision(mode).weights), precision=mode)


IDS = torch.randint(10, VOCAB, (1, T), generator=torch.Generator().manual_seed(0))


def old_bf16_delta(model: HookedModel, resid_final: torch.Tensor, tokens: dict = TOKENS) -> float:
    """The decision read out as before this issue: normed residual, unembedding and softcap
    in bfloat16 (the grid the fix removes)."""
    with torch.no_grad():
        x = model._norm(model.model.model.norm, resid_final, "ln_final.hook_scale", None, torch.bfloat16)
        logits = x @ model.W_U[[tokens["C"], tokens["D"]]].T
        cap = model.cfg.final_softcap
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
    return float(logits[..., 1] - logits[..., 0])


@pytest.mark.parametrize("mode", BF16_MODES)
def test_bf16_delta_is_the_float32_readout_of_its_own_residual(float32_pair, mode):
    """Acceptance: a bfloat16 model's delta equals the exact (float64) readout of its own
    final residual, so it carries only the residual stream's error, not the logit grid."""
    model = hooked(float32_pair[0], mode)
    data = collect_variant(model, IDS, TOKENS)
    readout = ActionReadout.from_model(model, TOKENS)
    resid = data["arrays"]["resid_post"][-1, -1]
    exact = float(readout.delta(resid))
    delta = data["attrs"]["delta"]
    assert abs(delta - exact) < 1e-4
    logits = data["arrays"]["decision_logits"]
    assert logits.dtype == np.float32 and abs(logits[7] - logits[5] - delta) < 1e-5
    # the premise: logits as large as a real model's, where bfloat16's spacing is 0.125-0.25
    assert np.abs(readout.logits(resid, apply_softcap=False)).max() > 32
    resid_t = torch.as_tensor(resid).to(model.resid_dtype)
    assert abs(old_bf16_delta(model, resid_t) - exact) > 100 * abs(delta - exact)
    # the float32 model on the same weights differs by the residual stream's own error only
    f32 = collect_variant(hooked(float32_pair[0], "float32"), IDS, TOKENS)
    stream_error = exact - float(readout.delta(f32["arrays"]["resid_post"][-1, -1]))
    assert abs((delta - f32["attrs"]["delta"]) - stream_error) < 2e-4


def test_modes_set_the_stream_and_compute_dtypes(float32_pair):
    seen = {}
    model = hooked(float32_pair[0], "bfloat16-resid32")
    model.run_with_hooks(IDS, [(n, lambda t, n: seen.setdefault(n, t.dtype) and None) for n in
                               ("hook_embed", "blocks.0.hook_resid_mid", "blocks.1.hook_mlp_out",
                                "blocks.0.hook_attn_out", "blocks.0.attn.hook_z", "ln_final.hook_scale")])
    assert seen == {"hook_embed": torch.float32, "blocks.0.hook_resid_mid": torch.float32,
                    "blocks.1.hook_mlp_out": torch.float32, "blocks.0.hook_attn_out": torch.float32,
                    "blocks.0.attn.hook_z": torch.bfloat16, "ln_final.hook_scale": torch.float32}
    assert model.run_with_hooks(IDS, last_only=True).dtype == torch.float32
    with pytest.raises(ValueError, match="precision 'bfloat16' needs bfloat16 weights, but they are float32"):
        HookedModel(float32_pair[0], precision="bfloat16")


@pytest.mark.parametrize("mode", ["float32", *BF16_MODES])
def test_dla_error_is_the_stream_rounding_and_the_head_split(float32_pair, mode):
    """DLA's reconstruction error in any mode is fully explained by two terms computable
    from the cache: the residual stream's rounding (final residual minus the sum of what
    was added to it) and the per-head split of attn_out (float32 heads vs the model's own
    attention output). A logit rounded to a grid would add a third (up to 0.125 here)."""
    model = hooked(float32_pair[0], mode)
    data = collect_variant(model, IDS, TOKENS)
    a, pos = data["arrays"], T - 1
    readout = ActionReadout.from_model(model, TOKENS)
    res = dla_from_arrays(a, data["attrs"], readout)
    u = readout.direction / float(a["ln_final_scale"][pos])
    f64 = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    stream = f64(a["embed"][pos]) + f64(a["attn_out"][:, pos]).sum(0) + f64(a["mlp_out"][:, pos]).sum(0)
    stream_rounding = (stream - f64(a["resid_post"][-1, pos])) @ u
    head_split = (f64(a["head_out_decision"]).sum(1) - f64(a["attn_out"][:, pos])).sum(0) @ u
    # float32 readout: a few float32 ulps of the components' magnitude
    scale = sum(abs(c[4]) for c in res.components())
    assert abs(res.reconstruction_error - (stream_rounding + head_split)) < 1e-6 * scale
    if mode == "float32":
        assert abs(res.reconstruction_error) < 1e-4
    else:  # bfloat16 shows up in the error, so this test sees what it checks
        assert abs(res.reconstruction_error) > 1e-4


@pytest.mark.slow  # every component's patch in bfloat16 on a CPU: 17 s a mode on 2 cores
@pytest.mark.parametrize("mode", BF16_MODES)
def test_bf16_self_patches_stay_within_the_noise_band(float32_pair, mode):
    """Every self-patch (a component patched with its own activation, which must change
    nothing) lies within NOISE_MULTIPLE x the noise floor that the patching job records
    for the prompt, so no zero effect is ranked. Measured before the sweep's own batches
    carried a control row: a self-patch at 3.9 x the floor of separate runs."""
    target, source = (hooked(m, mode) for m in float32_pair)
    tgt = PromptActivations.from_run(target, IDS, TOKENS)
    src = PromptActivations.from_run(source, IDS, TOKENS)
    target_W_O = own_W_O(target)
    runner = PatchRunner(target, own_W_O(source), TOKENS, "all", "result", batch_size=8)
    controls: list = []
    results = sweep(runner, src, tgt, controls)
    floor = noise_floor(runner, tgt, target_W_O, controls)
    assert len(controls) >= target.n_layers  # one control row per batch
    assert floor > 1e-4  # bfloat16 noise exists
    own = PatchRunner(target, target_W_O, TOKENS, "all", "result", batch_size=8)
    comps = all_components(target.n_layers, target.n_heads)
    self_dev = np.abs(own.deltas(tgt, tgt, [(c,) for c in comps]) - tgt.delta)
    assert self_dev.max() <= NOISE_MULTIPLE * floor
    assert max(abs(r.delta_change) for r in results) > NOISE_MULTIPLE * floor  # real effects stand out


def test_float32_noise_floor_is_float_error(float32_pair):
    target, source = (hooked(m, "float32") for m in float32_pair)
    tgt = PromptActivations.from_run(target, IDS, TOKENS)
    src = PromptActivations.from_run(source, IDS, TOKENS)
    runner = PatchRunner(target, own_W_O(source), TOKENS, "all", "result")
    controls: list = []
    sweep(runner, src, tgt, controls)
    assert noise_floor(runner, tgt, own_W_O(target), controls) < 1e-4


def test_noise_columns_in_the_summaries():
    from interp_lib.report.patching_tables import component_consistency, cross_experiment_summary, prompt_summary

    rows = []
    for variant, floor in ((1, 0.01), (2, 0.02)):
        for comp, change in (("L0H0", 0.5), ("L0_MLP", 0.05), ("L1H0", -0.07)):
            rows.append(dict(experiment="e", source="s", target="t", scenario="S", variant=variant, positions="all",
                             head_site="result", component=comp, kind="mlp" if "MLP" in comp else "head",
                             layer=int(comp[1]), head=None if "MLP" in comp else 0, delta_change=change,
                             gap_fraction=0.1, action_flipped=False, baseline_delta=1.0, source_delta=-1.0,
                             baseline_action="D", noise_floor=floor,
                             below_noise=(variant, comp) == (2, "L0_MLP")))  # as patch_scenario flags: 0.05 <= 3 x 0.02
    results = pd.DataFrame(rows)
    summary = prompt_summary(results).set_index("variant")
    assert summary.loc[1, "n_below_noise"] == 0 and summary.loc[2, "n_below_noise"] == 1  # 0.05 <= 3 x 0.02
    assert summary.loc["", "noise_floor"] == 0.02
    cons = component_consistency(results, 2).set_index("component")
    assert list(cons["below_noise"]) == [False, False, True]  # 0.07 above 3 x 0.02, 0.05 within
    cross = cross_experiment_summary({"e": {"results": results, "circuits": pd.DataFrame()}}, 2)
    assert cross["components_above_noise"].tolist() == [2, 2]
    assert not cross["strongest_below_noise"].any() and (cross["noise_floor"] == 0.02).all()


# ---- on the embedded family ----------------------------------------------------------------

def test_embedded_family_bf16_delta_is_not_on_the_logit_grid(workflow_dir):
    """Acceptance on the embedded family: in bfloat16 the cached delta is the float32
    readout of the model's own residual, for every prompt of a scenario."""
    from interp_lib import LoRAModelLoader, get_action_token_ids
    from interp_lib.prompts import build_dataset

    loader = LoRAModelLoader(device="cpu", config=workflow_dir / "config.yaml", results_dir=workflow_dir / "results",
                             precision="bfloat16")
    model = loader.load_hooked_model("PT3_COREDe")
    tokens = get_action_token_ids(model.tokenizer)
    readout = ActionReadout.from_model(model, tokens)
    new_err, old_err = [], []
    for rec in build_dataset()[:6]:
        data = collect_variant(model, model.to_tokens(rec["prompt"]), tokens)
        resid = data["arrays"]["resid_post"][-1, data["attrs"]["decision_position"]]
        exact = float(readout.delta(resid))
        new_err.append(abs(data["attrs"]["delta"] - exact))
        old_err.append(abs(old_bf16_delta(model, torch.as_tensor(resid).to(torch.bfloat16), tokens) - exact))
    assert max(new_err) < 1e-4, new_err
    assert max(old_err) > 10 * max(new_err), old_err  # what the bfloat16 readout did


@pytest.mark.slow  # seven models at Gemma-2-2b widths and bfloat16 matmuls on a CPU: 80 s on 2 cores
def test_gpu_workload_mode_sweep_runs_on_cpu(capsys):
    """The benchmark's smoke test (CI has no GPU): two modes at Gemma-2-2b widths, 2 layers;
    float32 agrees with itself exactly and bfloat16 has a nonzero noise floor."""
    from gpu_workload import main

    main(["--device", "cpu", "--layers", "2", "--vocab", "1024", "--seq-len", "32", "--prompts", "1",
          "--modes", "bfloat16"])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| float32") or line.startswith("| bfloat16")}
    assert set(rows) == {"float32", "bfloat16"}
    f32, bf16 = rows["float32"], rows["bfloat16"]
    assert f32[6] == "1.0000" and f32[8] == "10/10" and float(f32[9]) == 0.0
    assert float(bf16[4]) > 1e-4 and float(f32[4]) < 1e-4  # noise floors
    assert "fastest mode with Spearman >= 0.99" in out
