"""The workflow's crosscoder jobs: one BatchTopK crosscoder over the base and every fine-tune
at one resid_post layer, trained on the cached activations (interp_lib.diffing), its latents
classified and read against the decisions; and the causal check, which ablates the
fine-tune-specific latents' decoder directions in the models that have them (and adds them to
the base) at the decision position, beside random directions of equal norm."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PROBE_TARGETS = ("decision_both_labellings", "decision")  # the first the probe table holds
PROBE_MARGIN = 0.05
SPECIFIC = ("fine-tune-only", "moral-only", "game-only")  # the classes the causal check tests
TOP_ACTIVATIONS = 5
QUALITY_COLUMNS = ["model", "layer", "layer_reason", "fve_train", "fve_held_out", "pca_fve_held_out",
                   "pca_components", "l0_train", "l0_held_out", "dead_latents", "n_latents", "k", "steps",
                   "tokens_train", "tokens_held_out", "positions_before_dedup", "prompts_train", "prompts_held_out",
                   "scale"]
CAUSAL_COLUMNS = ["latent", "class", "model", "action", "scenario", "variant", "labelling", "activation",
                  "vector_norm", "direction", "baseline_delta", "delta", "delta_change", "noise_floor", "flipped"]


def choose_layer(setting, probes: pd.DataFrame | None, fine_tunes: list[str], n_layers: int) -> tuple[int, str]:
    """The crosscoder's layer and why: `setting` (an int) as given, or ("auto") the first
    layer where every fine-tune's decision probe is within PROBE_MARGIN of its best accuracy,
    capped at n_layers - 2 (the causal check steers the next layer); the middle layer when
    the probes read nothing."""
    last = n_layers - 2
    if setting != "auto":
        layer = int(setting)
        if not 0 <= layer <= last:
            raise ValueError(f"diffing.crosscoder.layer: {layer} is not in 0-{last} (the model has {n_layers} "
                             "layers; the causal check steers the next one)")
        return layer, "diffing.crosscoder.layer"
    if probes is not None and len(probes):
        for target in PROBE_TARGETS:
            # a fine-tune that answers one way on every prompt has no probe (accuracy NaN): left out
            t = probes[(probes["target"] == target) & probes["model"].isin(fine_tunes)].dropna(subset=["accuracy"])
            if len(t):
                best = t.groupby("model")["accuracy"].transform("max")
                ok = t[t["accuracy"] >= best - PROBE_MARGIN].groupby("model")["layer"].min()
                layer = int(min(ok.max(), last))
                which = "every fine-tune's" if len(ok) == len(fine_tunes) else f"the {', '.join(ok.index)}"
                return layer, (f"first layer where {which} {target} probe is within {PROBE_MARGIN} of its "
                               f"best accuracy" + (" (capped)" if ok.max() > last else ""))
    return n_layers // 2, "middle layer (the probes read no decision)"


def _pearson_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(r, low, high): Pearson r with the Fisher-z 95% interval (NaN if either is constant
    or n < 4)."""
    if len(a) < 4 or a.std() == 0 or b.std() == 0:
        return np.nan, np.nan, np.nan
    r = float(np.corrcoef(a, b)[0, 1])
    z, se = np.arctanh(np.clip(r, -0.999999, 0.999999)), 1 / np.sqrt(len(a) - 3)
    return r, float(np.tanh(z - 1.96 * se)), float(np.tanh(z + 1.96 * se))


def train_and_read(caches: dict[str, dict], roles: dict, settings: dict, probes: pd.DataFrame | None,
                   seed: int = 0, fingerprints: dict | None = None, progress: bool = True) -> dict:
    """Trains the crosscoder and reads it: {"model": Crosscoder, "metadata": dict, "history",
    "quality" (QUALITY_COLUMNS, one row per model), "latents" (one row per latent: class,
    relative norms, Latent Scaling nu_rec_/nu_err_<model>, how often it fires), "decisions"
    (latent x model Pearson r of its decision-position activation with the model's delta, Fisher
    95% interval), "top" (the TOP_ACTIVATIONS strongest rows of every specific latent and of those
    the causal check will test)}.
    `caches` = {model: {scenario: file}}; roles = the config's roles."""
    from ..cache import CacheFile
    from ..diffing.crosscoder import CrosscoderConfig, fraction_of_variance_explained, latent_classes, \
        latent_scaling, normalisation_scales, pca_baseline_fve, reconstruct, train_crosscoder
    from ..diffing.dataset import collect_tokens

    models = list(caches)
    base = roles.get("base")
    strategic = roles.get("strategic") if roles.get("strategic") in models else None
    moral = [roles[r] for r in ("deontological", "utilitarian", "game_deontological") if roles.get(r) in models]
    fine_tunes = [m for m in models if m != base]
    with CacheFile(next(iter(caches[models[0]].values()))) as cache:
        n_layers = int(cache.attrs["n_layers"])
    layer, reason = choose_layer(settings["layer"], probes, fine_tunes, n_layers)
    log.info("crosscoder layer %d: %s", layer, reason)
    data = collect_tokens(caches, layer, settings["holdout"], seed, fingerprints)
    test = data.rows["held_out"].to_numpy()
    scales = normalisation_scales(data.x[~test])
    x = data.x * scales[None, :, None].astype(np.float32)
    config = CrosscoderConfig(n_latents=settings["n_latents"], k=settings["k"], steps=settings["steps"],
                              batch_size=settings["batch_size"], lr=settings["lr"], seed=seed)
    log.info("training on %d tokens x %d models (d = %d), holding out %d", (~test).sum(), len(models), x.shape[2],
             test.sum())
    model, history = train_crosscoder(x[~test], config, progress=progress)
    x_hat, f = reconstruct(model, x)
    active = f > 0
    l0_train, l0_test = float(active[~test].sum(1).mean()), float(active[test].sum(1).mean())
    n_pca = max(1, round(l0_test))
    quality = pd.DataFrame({
        "model": models, "layer": layer, "layer_reason": reason,
        "fve_train": fraction_of_variance_explained(x[~test], x_hat[~test]),
        "fve_held_out": fraction_of_variance_explained(x[test], x_hat[test]),
        "pca_fve_held_out": pca_baseline_fve(x[~test], x[test], n_pca), "pca_components": n_pca,
        "l0_train": l0_train, "l0_held_out": l0_test,
        # never firing on the training tokens: the latents Latent Scaling cannot fit ("dead" class)
        "dead_latents": int((~active[~test].any(0)).sum()),
        "n_latents": config.n_latents, "k": config.k, "steps": config.steps, "tokens_train": int((~test).sum()),
        "tokens_held_out": int(test.sum()), "positions_before_dedup": data.n_positions,
        "prompts_train": int((~data.deltas["held_out"]).sum()), "prompts_held_out": int(data.deltas["held_out"].sum()),
        "scale": scales})[QUALITY_COLUMNS]
    nu_rec, nu_err = latent_scaling(model, x[~test])
    with np.errstate(invalid="ignore"):
        norms = model.decoder_norms().detach().numpy()
    latents = latent_classes(norms, nu_err, models, base, strategic, moral)
    decision = data.rows["decision"].to_numpy()
    latents["frequency"] = active.mean(0)
    latents["decision_frequency"] = active[decision].mean(0)
    latents["decision_mean_activation"] = f[decision].mean(0)
    for i, m in enumerate(models):
        latents[f"nu_rec_{m}"], latents[f"nu_err_{m}"] = nu_rec[:, i], nu_err[:, i]
    deltas = data.deltas.set_index(["scenario", "variant"])
    at = data.rows[decision].set_index(["scenario", "variant"]).index
    decisions = []
    for j in np.flatnonzero(active[decision].any(0)):
        for m in models:
            r, lo, hi = _pearson_ci(f[decision, j].astype(np.float64), deltas.loc[at, m].to_numpy(float))
            decisions.append({"latent": int(j), "class": latents.at[j, "class"], "model": m, "r": r, "ci_low": lo,
                              "ci_high": hi, "n_prompts": int(decision.sum())})
    top = []
    shown = set(latents.index[latents["class"].isin(SPECIFIC + ("base-only",))])
    shown |= set(checked_latents(latents, settings.get("top_latents", 5), base).index)  # what the causal check tests
    for j in sorted(shown):
        for rank, i in enumerate(np.argsort(-f[:, j])[:TOP_ACTIVATIONS], 1):
            if f[i, j] > 0:
                top.append({"latent": int(j), "class": latents.at[j, "class"], "rank": rank,
                            **data.rows.iloc[i][["scenario", "variant", "labelling", "position", "token",
                                                 "decision"]].to_dict(), "activation": float(f[i, j])})
    metadata = {"models": models, "layer": layer, "layer_reason": reason, "scales": scales.tolist(),
                "roles": {"base": base, "strategic": strategic, "moral": moral}}
    return {"model": model, "metadata": metadata, "history": history, "quality": quality, "latents": latents,
            "decisions": pd.DataFrame(decisions, columns=["latent", "class", "model", "r", "ci_low", "ci_high",
                                                          "n_prompts"]),
            "top": pd.DataFrame(top, columns=["latent", "class", "rank", "scenario", "variant", "labelling",
                                              "position", "token", "decision", "activation"])}


def checked_latents(latents: pd.DataFrame, n: int, base: str | None = None) -> pd.DataFrame:
    """The n latents the causal check tests, among those that fire at the decision positions:
    the specific ones (SPECIFIC classes) that fire most there, then, where fewer than n are
    specific and `base` is given, the live ones whose decoder leans most to the fine-tunes (mean
    relative norm over the fine-tunes minus the base's, > 0): a dictionary at this data size may
    hold no latent the base lacks outright, and the check then asks what the most
    fine-tune-leaning ones do."""
    live = latents[(latents["decision_frequency"] > 0) & (latents["class"] != "dead")]
    specific = live[live["class"].isin(SPECIFIC)].sort_values("decision_mean_activation", ascending=False).head(n)
    if len(specific) >= n or base is None or f"relative_norm_{base}" not in latents:
        return specific
    rest = live.drop(specific.index)
    others = [c for c in latents if c.startswith("relative_norm_") and c != f"relative_norm_{base}"]
    lean = rest[others].mean(axis=1) - rest[f"relative_norm_{base}"]
    lean = lean[lean > 0].sort_values(ascending=False)
    return pd.concat([specific, rest.loc[lean.index[:n - len(specific)]]])


def _decision_latents(cc, caches: dict[str, dict], models: list[str], scenarios: list[str], layer: int,
                      scales: np.ndarray) -> dict:
    """{(scenario, variant): latent activations [n]} of every prompt's decision position, read once
    from all models' caches (the crosscoder reads them jointly)."""
    import torch

    from ..cache import CacheFile

    out = {}
    for scenario in scenarios:
        files = [CacheFile(caches[m][scenario]) for m in models]
        try:
            for v in files[0].variants:
                joint = np.stack([np.asarray(f.group(v)["resid_post"][layer, -1], dtype=np.float32) for f in files])
                with torch.no_grad():
                    x = torch.from_numpy(joint[None] * scales[None, :, None].astype(np.float32))
                    out[(scenario, v)] = cc.encode(x)[0].double().numpy()
        finally:
            for f in files:
                f.close()
    return out


def causal_check(crosscoder_path: str, latents: pd.DataFrame, caches: dict[str, dict], model_dirs: dict[str, str],
                 scenarios: list[str], top_latents: int, controls: int, precision: str = "float32",
                 device: str = "cpu", seed: int = 0) -> pd.DataFrame:
    """CAUSAL_COLUMNS rows: for each checked latent (checked_latents: the specific ones, else the
    most fine-tune-leaning) and prompt of `scenarios`, the decision change when its decoder
    direction, scaled by its activation on that prompt, is removed from each model it is present
    in ("ablate": x_m - f_j W_dec[j, m]) or added to the base ("add": x_base + f_j W_dec[j, r], r its
    reference model), at the decision position of resid_pre[layer + 1], beside `controls` random
    directions of the same norm. noise_floor: the prompt's largest |change| at strength 0."""
    import torch
    from tqdm import tqdm

    from ..cache import CacheFile
    from ..cache.prompt_activations import PromptActivations
    from ..diffing.crosscoder import Crosscoder
    from ..model.loading import load_hooked, read_fingerprint, resolve_device
    from ..model.precision import get_precision
    from ..steering.steer import steered_deltas

    cc, meta = Crosscoder.load(crosscoder_path)
    models, layer, scales = meta["models"], int(meta["layer"]), np.asarray(meta["scales"])
    base = meta["roles"]["base"]
    chosen = checked_latents(latents, top_latents, base)
    W_dec = cc.W_dec.detach().double().numpy()  # [n, M, d]
    rng = np.random.default_rng(seed)
    mode, device = get_precision(precision), resolve_device(device)
    activations = _decision_latents(cc, caches, models, scenarios, layer, scales)
    rows = []
    for t, target_name in enumerate(models):
        plan = [(j, "ablate") for j in chosen.index if target_name in chosen.at[j, "present_in"].split("+")]
        if target_name == base:
            plan += [(j, "add") for j in chosen.index if base not in chosen.at[j, "present_in"].split("+")]
        if not plan:
            continue
        hooked = load_hooked(model_dirs[target_name], mode, device, target_name)
        fingerprint = read_fingerprint(model_dirs[target_name])["fingerprint"]
        per = 1 + controls  # rows per checked latent: its direction, then the random ones
        for scenario in scenarios:
            with CacheFile(caches[target_name][scenario], fingerprint=fingerprint) as cache:
                cache.require_precision(mode.name)
                for v in tqdm(cache.variants, desc=f"crosscoder check {target_name}/{scenario}"):
                    f = activations[(scenario, v)]
                    stack = np.zeros((len(plan) * per, hooked.n_layers, W_dec.shape[-1]))
                    norms = []
                    for p, (j, action) in enumerate(plan):
                        ref = models.index(chosen.at[j, "reference_model"])
                        vec = (-f[j] * W_dec[j, t] / scales[t] if action == "ablate"
                               else f[j] * W_dec[j, ref] / scales[ref])
                        norms.append(float(np.linalg.norm(vec)))
                        raw = rng.standard_normal((controls, vec.size))
                        randoms = raw / np.linalg.norm(raw, axis=1, keepdims=True) * norms[-1]
                        stack[p * per:(p + 1) * per, layer + 1] = np.concatenate([vec[None], randoms])
                    target = PromptActivations.from_cache(cache[v], device, mode.weights, mode.residual)
                    tokens = cache.action_tokens(v)
                    # every checked latent and control of the prompt in one batch of steered passes
                    got = steered_deltas(hooked, target, [tokens["C"], tokens["D"]], torch.as_tensor(stack),
                                         [layer + 1], [0.0, 1.0], "resid_pre", "decision")
                    floor = float(np.abs(got[:, 0, 0] - target.delta).max())
                    for p, (j, action) in enumerate(plan):
                        for k in range(per):
                            delta = float(got[p * per + k, 0, 1])
                            rows.append({"latent": int(j), "class": chosen.at[j, "class"], "model": target_name,
                                         "action": action, "scenario": scenario, "variant": v,
                                         "labelling": cache.labelling(v), "activation": float(f[j]),
                                         "vector_norm": norms[p],
                                         "direction": "latent" if k == 0 else f"random {k}",
                                         "baseline_delta": target.delta, "delta": delta,
                                         "delta_change": delta - target.delta, "noise_floor": floor,
                                         "flipped": (delta > 0) != (target.delta > 0)})
    return pd.DataFrame(rows, columns=CAUSAL_COLUMNS)
