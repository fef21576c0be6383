"""Model diffing in the default workflow (embedded family, `all`): the activation-difference
lens against a direct h5py computation, its steering at strength 0 against the cached deltas, and
the crosscoder's reported quality recomputed in numpy on the held-out prompts."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

FINE_TUNES = ["PT2_COREDe", "PT3_COREDe", "PT3_COREUt", "PT4_COREDe"]
IPD = ["CC_continue", "CC_temptation", "CD_punished", "DC_exploited", "DD_trapped"]
STATES = {"CC": ["CC_continue", "CC_temptation"], "CD": ["CD_punished"], "DC": ["DC_exploited"], "DD": ["DD_trapped"]}


def _decision_rows(path) -> dict:
    with h5py.File(path, "r") as f:
        return {int(v): (f[v]["resid_post"][:, -1, :].astype(np.float64), float(f[v].attrs["delta"]))
                for v in f if v.isdigit()}


def test_adl_means_equal_a_direct_h5py_computation(workflow_dir):
    res = workflow_dir / "results"
    table = pd.read_csv(res / "diffing/adl_differences.csv")
    for model, reference in (("PT3_COREDe", "base"), ("PT3_COREUt", "PT2_COREDe")):
        diffs = {}
        for s in IPD:
            a, b = _decision_rows(res / f"cache/{model}/{s}.h5"), _decision_rows(res / f"cache/{reference}/{s}.h5")
            diffs[s] = [a[v][0] - b[v][0] for v in a]
        per = res / f"diffing/adl/per/{model}/{reference}"
        # pooled over every state, and each state (the config's self_last / opponent_last) alone
        for state, scenarios in {"all": IPD, **STATES}.items():
            picked = [x for s in scenarios for x in diffs[s]]
            expected = np.mean(picked, axis=0)  # [L, d]
            with np.load(per / "vectors.npz") as z:
                key = "ipd|standard" if state == "all" else f"ipd|standard|{state}"
                np.testing.assert_allclose(z[key], expected, rtol=1e-5, atol=1e-6)
            rows = table[(table["model"] == model) & (table["reference"] == reference) & (table["context"] == "ipd")
                         & (table["labelling"] == "standard") & (table["position_class"] == "decision")
                         & (table["state"] == state)]
            np.testing.assert_allclose(rows.sort_values("layer")["norm"], np.linalg.norm(expected, axis=-1),
                                       rtol=1e-5)
            assert (rows["n_prompts"] == len(picked)).all()
            assert (rows["norm_ci_low"] <= rows["norm"]).all() and (rows["norm"] <= rows["norm_ci_high"]).all()
    pairs = table[["model", "reference"]].drop_duplicates()
    # every fine-tune against the base, every other fine-tune against the strategic model
    assert len(pairs) == len(FINE_TUNES) + len(FINE_TUNES) - 1


def test_adl_steering_at_strength_zero_reproduces_the_cached_delta(workflow_dir):
    res = workflow_dir / "results"
    steering = pd.read_csv(res / "diffing/adl_steering.csv")
    zero = steering[(steering["alpha"] == 0.0) & (steering["steering"] == "ADL PT3_COREDe - base")]
    assert len(zero) and set(zero["target"]) == {"base"}
    for (scenario, variant), g in zero.groupby(["scenario", "variant"]):
        with h5py.File(res / f"cache/base/{scenario}.h5", "r") as f:
            cached = float(f[str(variant)].attrs["delta"])
        assert g["baseline_delta"].iloc[0] == pytest.approx(cached, abs=1e-6)
        np.testing.assert_allclose(g["delta"], cached, atol=1e-4)
    one = steering[steering["alpha"] == 1.0]
    assert set(one["direction"]) == {"mean difference", "random 1", "random 2", "random 3"}
    # each state's prompts steered by that state's difference, and only those prompts
    for state, scenarios in STATES.items():
        run = one[one["steering"] == f"ADL PT3_COREDe - base | {state}"]
        siblings = {s + "_swapped" for s in scenarios if s == "CD_punished"}  # config.yaml's counterbalanced one
        assert set(run["scenario"]) == set(scenarios) | siblings, state
        assert run["in_sample"].astype(str).str.lower().eq("true").all()


def test_crosscoder_quality_recomputed_on_held_out_prompts(workflow_dir):
    from interp_lib.diffing.crosscoder import Crosscoder, fraction_of_variance_explained, reconstruct
    from interp_lib.diffing.dataset import collect_tokens

    res = workflow_dir / "results"
    quality = pd.read_csv(res / "diffing/crosscoder/quality.csv")
    model, meta = Crosscoder.load(res / "diffing/crosscoder/crosscoder.safetensors")
    layer, models, scales = meta["layer"], meta["models"], np.asarray(meta["scales"])
    cfg = yaml.safe_load((workflow_dir / "config.yaml").read_text())
    scenarios = list(cfg["scenarios"]) + [f"{s}_swapped" for s, spec in cfg["scenarios"].items()
                                          if spec.get("counterbalance")]
    caches = {m: {s: res / f"cache/{m}/{s}.h5" for s in scenarios if (res / f"cache/{m}/{s}.h5").exists()}
              for m in models}
    data = collect_tokens(caches, layer, cfg["diffing"]["crosscoder"].get("holdout", 0.2), cfg.get("seed", 0))
    held = data.rows[data.rows["held_out"]]
    assert 0 < len(held) < len(data.rows) and held["decision"].any()
    # neither the held-out prompts nor the rows depend on the order the caches are given in
    shuffled = collect_tokens({m: dict(reversed(list(c.items()))) for m, c in caches.items()}, layer,
                              cfg["diffing"]["crosscoder"].get("holdout", 0.2), cfg.get("seed", 0))
    pd.testing.assert_frame_equal(shuffled.rows, data.rows)
    # the held-out rows read straight from the files
    x = np.stack([[h5py.File(res / f"cache/{m}/{r.scenario}.h5", "r")[str(r.variant)]["resid_post"][layer, r.position]
                   for m in models] for r in held.itertuples()]).astype(np.float32)
    np.testing.assert_array_equal(x, data.x[data.rows["held_out"].to_numpy()])
    xn = x * scales[None, :, None].astype(np.float32)
    x_hat, f = reconstruct(model, xn)
    err = ((xn.astype(np.float64) - x_hat) ** 2).sum(axis=(0, 2))
    total = ((xn.astype(np.float64) - xn.mean(0)) ** 2).sum(axis=(0, 2))
    np.testing.assert_allclose(quality["fve_held_out"], 1 - err / total, rtol=1e-4)
    np.testing.assert_allclose(fraction_of_variance_explained(xn, x_hat), 1 - err / total, rtol=1e-10)
    assert (quality["fve_held_out"] > quality["pca_fve_held_out"]).all()
    assert quality["l0_held_out"].iloc[0] == pytest.approx((f > 0).sum(1).mean())
    assert quality["tokens_held_out"].iloc[0] == len(held)


def test_crosscoder_latents_and_causal_check(workflow_dir):
    res = workflow_dir / "results"
    latents = pd.read_csv(res / "diffing/crosscoder/latents.csv")
    quality = pd.read_csv(res / "diffing/crosscoder/quality.csv")
    assert len(latents) == quality["n_latents"].iloc[0]
    assert (latents["class"] == "dead").sum() == quality["dead_latents"].iloc[0]
    causal = pd.read_csv(res / "diffing/crosscoder/causal.csv")
    from interp_lib.jobs.crosscoder import checked_latents

    expected = checked_latents(latents.set_index("latent", drop=False), 5, "base")
    assert set(causal["latent"]) == set(expected.index)
    if not len(causal):
        return
    # strength 0 changes nothing: the noise floor is float32 noise
    assert causal["noise_floor"].max() < 1e-3
    for (latent, model, action, scenario, variant), g in causal.groupby(
            ["latent", "model", "action", "scenario", "variant"]):
        assert len(g) == 1 + 5  # the latent and the controls
        # controls have the latent's norm
        assert np.ptp(g["vector_norm"]) == 0
