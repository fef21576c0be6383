"""The workflow's activation-difference-lens job: one fine-tune against one reference model
(interp_lib.diffing.adl). Everything but the steering is read from the two models' caches;
the reference model is loaded for its unembedding, norm gains and the steered passes."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..diffing.adl import ALL_STATES, POSITION_CLASSES, difference_stats, group_key, read_class_activations, \
    span_alignment, span_rank, split_key, state_groups, steering_name, top_tokens

log = logging.getLogger(__name__)

COLUMNS = ["model", "reference", "context", "state", "labelling", "position_class", "layer", "n_prompts", "norm",
           "norm_ci_low", "norm_ci_high", "noise_norm", "above_noise", "reference_norm", "relative_norm",
           "lens_delta", "lens_ci_low", "lens_ci_high"]
TOKEN_COLUMNS = ["model", "reference", "context", "labelling", "layer", "effect", "rank", "token_id", "token",
                 "logit"]
LORA_COLUMNS = ["model", "reference", "layer", "module", "max_cos", "span_fraction", "span_rank",
                "random_span_fraction"]
LORA_OUTPUTS = ("o_proj", "down_proj")  # the adapted modules that write into the residual stream


def difference_rows(model: str, reference: str, acts_model, acts_ref, contexts: dict, readout_of,
                    n_resamples: int, seed: int, states: dict | None = None) -> tuple[list[dict], dict]:
    """COLUMNS rows of every (context, state, labelling, position class, layer) and the decision
    class's mean difference [L, d] per group_key. `readout_of(action_ids)` gives the
    ActionReadout of the prompts' (C, D) token ids. `states` (scenario -> state, contexts.state_of)
    adds each state's rows beside the pooled ones (state_groups); None: pooled only."""
    if acts_model.keys() != acts_ref.keys():
        raise ValueError(f"{model} and {reference} caches hold different prompts; rerun their caching jobs")
    rows, vectors = [], {}
    context = np.array([contexts[s] for s in acts_model.scenario], dtype=object)
    missing = sorted(set(acts_model.scenario) - set(states)) if states else []
    if missing:
        raise ValueError(f"states: no state given for scenario {missing[0]}")
    state = np.array([states[s] if states else ALL_STATES for s in acts_model.scenario], dtype=object)
    for (ctx, lab), idx in pd.Series(range(len(context))).groupby([context, acts_model.labelling]).groups.items():
        idx = np.asarray(idx)
        ids = {tuple(t) for t in acts_model.action_ids[idx]}
        if len(ids) > 1:
            raise ValueError(f"context {ctx} ({lab}) mixes action tokens {sorted(ids)}; it must name one pair")
        direction = readout_of(dict(zip("CD", next(iter(ids))))).direction
        for st_name, sub in state_groups(idx, state):  # pooled only without states: one "state"
            rows += _group_rows(model, reference, ctx, st_name, lab, acts_model, acts_ref, sub, direction,
                                n_resamples, seed, vectors)
    return rows, vectors


def _group_rows(model, reference, ctx, state, lab, acts_model, acts_ref, idx, direction, n_resamples, seed,
                vectors) -> list[dict]:
    """COLUMNS rows of one group's prompts `idx`; stores its decision-class mean in `vectors`."""
    rows = []
    for cls in POSITION_CLASSES:
        st = difference_stats(acts_model.acts[cls][idx], acts_ref.acts[cls][idx], direction, n_resamples, seed)
        if st.n == 0:
            continue
        if cls == "decision":
            vectors[group_key(ctx, lab, state)] = st.mean.astype(np.float32)
        for layer in range(len(st.norm)):
            rows.append({"model": model, "reference": reference, "context": ctx, "state": state, "labelling": lab,
                         "position_class": cls, "layer": layer, "n_prompts": st.n, "norm": st.norm[layer],
                         "norm_ci_low": st.norm_low[layer], "norm_ci_high": st.norm_high[layer],
                         "noise_norm": st.noise_norm[layer],
                         "above_noise": bool(st.norm_low[layer] > st.noise_norm[layer]),
                         "reference_norm": st.reference_norm[layer],
                         "relative_norm": st.norm[layer] / st.reference_norm[layer],
                         "lens_delta": st.lens[layer], "lens_ci_low": st.lens_low[layer],
                         "lens_ci_high": st.lens_high[layer]})
    return rows


def token_rows(model: str, reference: str, vectors: dict, W_U: np.ndarray, gain: np.ndarray, decode, k: int,
               contexts: tuple[str, ...]) -> list[dict]:
    """TOKEN_COLUMNS rows: the k tokens each decision-class difference promotes and suppresses,
    per layer, for the pooled groups of `contexts`."""
    rows = []
    for key, mean in vectors.items():
        ctx, lab, state = split_key(key)
        if ctx not in contexts or state != ALL_STATES:
            continue
        for layer, v in enumerate(mean):
            if not np.any(v):
                continue
            ids, logits = top_tokens(v, W_U, gain, k)
            for e, effect in enumerate(("promoted", "suppressed")):
                for rank, (tid, logit) in enumerate(zip(ids[e], logits[e]), 1):
                    rows.append({"model": model, "reference": reference, "context": ctx, "labelling": lab,
                                 "layer": layer, "effect": effect, "rank": rank, "token_id": int(tid),
                                 "token": decode(int(tid)), "logit": float(logit)})
    return rows


def lora_rows(model: str, reference: str, mean: np.ndarray, updates, gains) -> list[dict]:
    """LORA_COLUMNS rows: how much of the difference [L, d] at each layer lies along the
    adapter's B columns (the directions its o_proj / down_proj updates write, through the
    post-norm gain where the model has one): per module at that layer, and ("all up to here")
    in the span of every such column of layers <= the layer."""
    d = mean.shape[-1]
    columns = {}
    for u in updates:
        if u.module in LORA_OUTPUTS:
            b = u.b.detach().double().numpy() * u.scaling  # [d, r]
            gain = gains(u.layer, u.module)
            columns[(u.layer, u.module)] = b * gain[:, None] if gain is not None else b
    rows = []
    for layer, v in enumerate(mean):
        below = [c for (lay, _), c in columns.items() if lay <= layer]
        parts = {m: columns.get((layer, m), np.zeros((d, 0))) for m in LORA_OUTPUTS}
        parts["all up to here"] = np.concatenate(below, axis=1) if below else np.zeros((d, 0))
        for module, cols in parts.items():
            best, frac = span_alignment(v, cols)
            rank = span_rank(cols)
            rows.append({"model": model, "reference": reference, "layer": layer, "module": module, "max_cos": best,
                         "span_fraction": frac, "span_rank": rank, "random_span_fraction": np.sqrt(rank / d)})
    return rows


def adl_pair(model: str, reference: str, model_caches: dict, reference_caches: dict, contexts: dict,
             reference_dir: str, adapter: str | None = None, steer: dict | None = None, top_k: int = 10,
             n_resamples: int = 200, precision: str = "float32", device: str = "cpu", seed: int = 0,
             max_rows: int | None = None, allow_pickle: bool = False, states: dict | None = None) -> dict:
    """The ADL tables of `model` against `reference` on every cached scenario: {"differences":
    COLUMNS frame, "tokens": TOKEN_COLUMNS frame (the IPD's and unrelated prompts' contexts),
    "lora": LORA_COLUMNS frame (empty unless the reference is the base and the model has an
    adapter), "steering": steering rows (the reference steered on the IPD prompts by their
    decision-position resid_pre difference, jobs.steering.COLUMNS; with `states`, also each
    state's prompts by that state's difference, named "... | <state>"), "vectors": {group_key: [L, d]}}.
    `steer`: {alphas, controls} or None for no steering. `states`: scenario -> state
    (contexts.state_of) to split every context with several states by state; None: pooled only."""
    import torch

    from ..analyses.logit_lens import ActionReadout
    from ..cache import merged_dir_of
    from ..contexts import REFERENCE
    from ..model.loading import load_hooked, read_fingerprint, resolve_device
    from ..model.precision import get_precision
    from .steering import COLUMNS as STEER_COLUMNS, checked_direction, steer_scenario

    fingerprint = {m: read_fingerprint(merged_dir_of(next(iter(c.values())), m))["fingerprint"]
                   for m, c in ((model, model_caches), (reference, reference_caches))}
    acts_model = read_class_activations(model_caches, fingerprint=fingerprint[model])
    acts_ref = read_class_activations(reference_caches, fingerprint=fingerprint[reference])
    device = resolve_device(device)
    hooked = load_hooked(reference_dir, get_precision(precision), device, reference, with_tokenizer=True)
    with torch.no_grad():
        W_U = hooked.W_U.detach().float().cpu().numpy()
        gain = hooked.final_norm_gain().detach().double().cpu().numpy()
    eps, cap = hooked.cfg.eps, hooked.cfg.final_softcap
    readout_of = lambda ids: ActionReadout(W_U[[ids["C"], ids["D"]]], gain, eps, cap)  # noqa: E731
    rows, vectors = difference_rows(model, reference, acts_model, acts_ref, contexts, readout_of, n_resamples, seed,
                                    states)
    log.info("%s - %s: %d prompts, %d groups", model, reference, len(acts_model.delta), len(vectors))
    read = tuple(sorted({c for c in contexts.values() if c == REFERENCE or c.startswith("unrelated_")}))
    decode = lambda t: hooked.tokenizer.decode([t])  # noqa: E731
    tokens = token_rows(model, reference, vectors, W_U, gain, decode, top_k, read)
    lora = []
    ipd = [v for k, v in vectors.items() if split_key(k)[::2] == (REFERENCE, ALL_STATES)]
    if adapter and ipd:
        from ..model.adapter_deltas import adapter_config, lora_updates

        def gains(layer, module):
            g = hooked.post_attn_norm_gain(layer) if module == "o_proj" else hooked.post_mlp_norm_gain(layer)
            return None if g is None else g.detach().double().cpu().numpy()

        updates = lora_updates(adapter, adapter_config(adapter, model), model, allow_pickle)
        lora = lora_rows(model, reference, np.mean(ipd, axis=0), updates, gains)  # balanced over labellings
    steering = pd.DataFrame(columns=STEER_COLUMNS)
    ipd_scenarios = [s for s in model_caches if contexts[s] == REFERENCE]
    if steer and ipd_scenarios:
        scen = np.array(ipd_scenarios, dtype=object)
        frames = []
        for state, idx in state_groups(np.arange(len(scen)), np.array([(states or {}).get(s, ALL_STATES)
                                                                        for s in scen], dtype=object)):
            scenarios, name = list(scen[idx]), steering_name(model, reference, state)
            spec = {"target": reference, "site": "resid_pre", "positions": "decision", "layers": "all",
                    "alphas": list(steer["alphas"]), "controls": int(steer["controls"]),
                    "direction": {"from": "models", "source": model, "reference": reference, "scenarios": scenarios}}
            direction_caches = {model: [model_caches[s] for s in scenarios],
                                reference: [reference_caches[s] for s in scenarios]}
            direction = checked_direction(name, spec, direction_caches)  # once for all its scenarios
            frames += [steer_scenario(name, spec, s, reference_caches[s], direction_caches, reference_dir, precision,
                                      device, seed, max_rows, hooked=hooked, direction=direction) for s in scenarios]
        steering = pd.concat(frames, ignore_index=True)
    return {"differences": pd.DataFrame(rows, columns=COLUMNS), "tokens": pd.DataFrame(tokens, columns=TOKEN_COLUMNS),
            "lora": pd.DataFrame(lora, columns=LORA_COLUMNS), "steering": steering, "vectors": vectors}

