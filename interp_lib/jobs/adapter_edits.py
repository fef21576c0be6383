"""The workflow's adapter-edit job: one fine-tune on one scenario's prompts (every variant).

Runs the base model (its merged weights, at the analysis precision) with adapters' exact
updates swapped in layer by layer (interp_lib.adapter_edits): for every layer the fine-tune
adapts, its whole-block update removed (ablation, from the fine-tune's cache) and added
alone to the base (sufficiency, from the base's cache); per module group for the top
`group_layers` layers by effect; for each experiment whose target it is, the source adapter's
update in place of its own (transplant); then the greedy minimal sufficient set of layers.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ..adapter_edits.conditions import Condition, ablation, layers_text, sufficiency, transplant
from ..adapter_edits.minimal import minimal_sufficient_set, reproduces, set_record
from ..analyses.behaviour import action_of
from ..noise import below_noise
from ..patching.components import _ratio  # gap fraction as component patching computes it

log = logging.getLogger(__name__)

COLUMNS = ["model", "reference", "scenario", "variant", "labelling", "kind", "group", "layer", "layers", "source",
           "experiment", "background", "start_layer", "baseline_delta", "delta", "delta_change", "baseline_p_defect",
           "p_defect", "p_defect_change", "finetune_delta", "base_delta", "goal_delta", "toward_goal", "gap_fraction", "flipped",
           "reproduces", "noise_floor", "below_noise", "precision"]
MINIMAL_SET_COLUMNS = ["model", "reference", "scenario", "labelling", "margin", "n_prompts", "set_kind", "layers",
                       "size", "greedy_size", "ranking", "attempts", "leave_one_out", "max_error", "reason",
                       "precision"]
# The section's defaults (interp_lib/schemas/config.schema.yaml, adapter_edits), for calls outside the workflow.
DEFAULTS = {"group_layers": 3, "groups": ["attn", "mlp"], "transplant_groups": ["block"], "margin": 0.1,
            "minimal_set": True, "max_set_layers": None, "max_rows": None}


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x))) if math.isfinite(x) else math.nan


def _prompt(view, device, mode):
    """The cached run's resid_pre, token ids and delta (z and MLP outputs are not read)."""
    import torch

    from ..cache.prompt_activations import PromptActivations

    empty = torch.empty(0, device=device)
    resid = torch.as_tensor(view["resid_pre"], device=device).to(mode.residual)
    return PromptActivations(torch.as_tensor(view["input_ids"], device=device), resid, empty, empty,
                             float(view.attrs["delta"]))


def adapter_edits_scenario(model: str, reference: str, scenario: str, adapter: str, finetune_cache: str,
                           base_cache: str, finetune_dir: str, reference_dir: str, donors: dict | None = None,
                           settings: dict | None = None, precision: str = "float32", device: str = "cpu",
                           allow_pickle: bool = False):
    """(per-prompt rows (COLUMNS), minimal-set rows (MINIMAL_SET_COLUMNS)) for fine-tune
    `model` on one scenario. `donors`: {source model: {adapter, cache, dir, experiment}} of
    the transplants into `model`; `settings`: the config's adapter_edits section."""
    import pandas as pd
    import torch
    from tqdm import tqdm

    from ..adapter_edits.runner import EditRunner
    from ..adapter_edits.weights import EditableWeights, load_adapter
    from ..cache import CacheFile
    from ..model.loading import load_hooked, read_fingerprint, resolve_device
    from ..model.precision import get_precision

    settings = {**DEFAULTS, **(settings or {})}
    donors = donors or {}
    device = resolve_device(device)
    mode = get_precision(precision)
    hooked = load_hooked(reference_dir, mode, device, reference)
    L = hooked.n_layers
    finetune = load_adapter(model, adapter, hooked, allow_pickle)
    sources = {src: load_adapter(src, spec["adapter"], hooked, allow_pickle) for src, spec in donors.items()}
    adapted = finetune.adapted
    layers = finetune.layers()
    log.info("model %s: adapter %s (rank %d) updates %d modules in %d of %d layers; on %s's weights (%s)", model,
             adapter, finetune.rank(), len(adapted), len(layers), L, reference, mode.name)

    first = [c for layer in layers for c in (ablation(adapted, layer), sufficiency(model, adapted, [layer]))]
    for src, upd in sources.items():
        for group in settings["transplant_groups"]:
            for layer in sorted({x for x, _ in adapted | upd.adapted}):
                first.append(transplant(model, adapted, src, upd.adapted, layer, group, upd.path))
    first = [c for c in first if c is not None]
    experiment_of = {src: spec.get("experiment", "") for src, spec in donors.items()}

    caches = {"finetune": CacheFile(finetune_cache, fingerprint=read_fingerprint(finetune_dir)["fingerprint"]),
              "base": CacheFile(base_cache, fingerprint=read_fingerprint(reference_dir)["fingerprint"])}
    donor_caches = {src: CacheFile(spec["cache"], fingerprint=read_fingerprint(spec["dir"])["fingerprint"])
                    for src, spec in donors.items()}
    rows, sets = [], []
    try:
        for cache in (*caches.values(), *donor_caches.values()):
            cache.require_precision(mode.name)
        variants = caches["finetune"].variants
        prompts, meta = {}, {}
        for v in variants:
            tokens = caches["finetune"].action_tokens(v)
            prompts[v] = {bg: _prompt(c[v], device, mode) for bg, c in caches.items()}
            ids = prompts[v]["finetune"].input_ids.cpu().numpy()
            for other, name in ((caches["base"], reference), *((c, s) for s, c in donor_caches.items())):
                if other.action_tokens(v) != tokens or not np.array_equal(other[v]["input_ids"], ids):
                    raise ValueError(f"{model} and {name} hold different prompts for {scenario} variant {v} "
                                     "(another tokenizer or prompt set?); rebuild their caches")
            meta[v] = {"tokens": tokens, "labelling": caches["finetune"].labelling(v),
                       "source_delta": {s: float(c[v].attrs["delta"]) for s, c in donor_caches.items()}}
        with EditableWeights(hooked, {model: finetune, **sources}) as weights, mode.matmuls(), torch.no_grad():
            weights.materialize()
            runners = {v: EditRunner(weights, meta[v]["tokens"], {"finetune": model, "base": None},
                                     settings["max_rows"]) for v in variants}
            controls = {v: {} for v in variants}
            recomputed = {v: {bg: runners[v].recompute(bg, 0, prompts[v][bg]) for bg in ("finetune", "base")}
                          for v in tqdm(variants, desc=f"adapter edits {model}/{scenario}: unedited")}
            done: list[tuple[int, dict]] = []  # (variant, {condition: delta})
            for v in tqdm(variants, desc=f"adapter edits {model}/{scenario}: layers and transplants"):
                got = runners[v].deltas(first, prompts[v], controls[v])
                done.append((v, dict(zip(first, got))))
            baselines = {v: {bg: p.delta for bg, p in prompts[v].items()} for v in variants}
            second = _group_conditions(model, adapted, first, done, baselines, settings)
            if second:
                for v, results in tqdm(done, desc=f"adapter edits {model}/{scenario}: module groups"):
                    results.update(zip(second, runners[v].deltas(second, prompts[v], controls[v])))
            floors = {v: _floors(recomputed[v], prompts[v], controls[v]) for v in variants}
            found = None
            if settings["minimal_set"]:
                found = _search(model, adapted, layers, variants, prompts, runners, controls, floors, done, settings)
                floors = {v: _floors(recomputed[v], prompts[v], controls[v]) for v in variants}
    finally:
        for cache in (*caches.values(), *donor_caches.values()):
            cache.close()

    common = dict(model=model, reference=reference, scenario=scenario, precision=mode.name)
    margin = float(settings["margin"])
    for v, results in done:
        ft, base = prompts[v]["finetune"].delta, prompts[v]["base"].delta
        floor_of = floors[v]
        both = max(floor_of.values())
        for bg in ("finetune", "base"):
            cached = prompts[v][bg].delta
            rows.append(_row(common, v, meta[v], "unedited", "", math.nan, "", "", "", bg, 0, cached,
                             recomputed[v][bg], ft, base, cached, floor_of[bg], margin, both))
        for cond, delta in results.items():
            bg = cond.background
            baseline = prompts[v][bg].delta
            source = cond.source or ""
            goal = {"ablation": base, "transplant": meta[v]["source_delta"].get(source, math.nan)}.get(cond.kind, ft)
            layer = cond.layers[0] if len(cond.layers) == 1 else math.nan
            rows.append(_row(common, v, meta[v], cond.kind, cond.group, layer, layers_text(cond.layers), source,
                             experiment_of.get(source, "") if cond.kind == "transplant" else "", bg, cond.start(L),
                             baseline, float(delta), ft, base, goal, floor_of[bg], margin, both))
        if found is not None:
            d = found.deltas[variants.index(v)]
            rows.append(_row(common, v, meta[v], "minimal_set", "set", math.nan, layers_text(found.layers), model, "",
                             "base", min(found.layers, default=L), base, float(d), ft, base, ft, floor_of["base"],
                             margin, both))
    if found is not None:
        fts = np.array([prompts[v]["finetune"].delta for v in variants])
        bases = np.array([prompts[v]["base"].delta for v in variants])
        err = np.abs(found.deltas - fts) / np.maximum(np.abs(fts - bases), 1e-12)
        sets.append({**{k: common[k] for k in ("model", "reference", "scenario")},
                     "labelling": ";".join(dict.fromkeys(meta[v]["labelling"] for v in variants)), "margin": margin,
                     "n_prompts": len(variants), **set_record(found),
                     "max_error": float(np.nanmax(err)) if np.isfinite(err).any() else math.nan,
                     "precision": mode.name})
    return pd.DataFrame(rows, columns=COLUMNS), pd.DataFrame(sets, columns=MINIMAL_SET_COLUMNS)


def _floors(recomputed: dict, prompts: dict, controls: dict) -> dict:
    """Per background: the largest |delta - cached delta| of its unedited runs (from layer 0,
    and from every start layer in the passes' shapes)."""
    return {bg: max([abs(recomputed[bg] - prompts[bg].delta), *controls.get(bg, {}).values()])
            for bg in ("finetune", "base")}


def _row(common, variant, meta, kind, group, layer, layers, source, experiment, background, start, baseline, delta,
         ft, base, goal, floor, margin, both_floor) -> dict:
    change = delta - baseline
    p, p0 = _sigmoid(delta), _sigmoid(baseline)
    return {**common, "variant": variant, "labelling": meta["labelling"], "kind": kind, "group": group,
            "layer": layer, "layers": layers, "source": source, "experiment": experiment, "background": background,
            "start_layer": start, "baseline_delta": baseline, "delta": delta, "delta_change": change,
            "baseline_p_defect": p0, "p_defect": p, "p_defect_change": p - p0, "finetune_delta": ft,
            "base_delta": base, "goal_delta": goal,
            "toward_goal": change * float(np.sign(goal - baseline)) if math.isfinite(goal) else math.nan,
            "gap_fraction": _ratio(change, goal - baseline),
            "flipped": action_of(delta) != action_of(baseline),
            "reproduces": bool(reproduces([delta], [ft], [base], [both_floor], margin)[0]),
            "noise_floor": floor, "below_noise": below_noise(change, floor)}


def _group_conditions(model, adapted, first, done, baselines, settings) -> list[Condition]:
    """Ablation and sufficiency per module group (settings["groups"]) at the top
    settings["group_layers"] layers by |mean delta change| of the whole-layer edit over the
    scenario's prompts (null: every layer). `baselines`: {variant: {background: cached delta}}."""
    groups, top = settings["groups"], settings["group_layers"]
    if not groups or top == 0:
        return []
    out = []
    for kind in ("ablation", "sufficiency"):
        whole = {c.layers[0]: c for c in first if c.kind == kind and c.group == "block"}
        effect = {layer: abs(float(np.mean([res[c] - baselines[v][c.background] for v, res in done])))
                  for layer, c in whole.items()}
        ranked = sorted(effect, key=lambda layer: (-effect[layer], layer))
        chosen = sorted(ranked if top is None else ranked[:top])
        log.info("%s per module group (%s) at layers %s (top %s by |mean delta change| of the whole layer)", kind,
                 ", ".join(groups), chosen, "all" if top is None else top)
        for layer in chosen:
            for group in groups:
                cond = ablation(adapted, layer, group) if kind == "ablation" else \
                    sufficiency(model, adapted, [layer], group)
                if cond is not None and cond.edits != whole[layer].edits:  # a group that is the whole layer: done
                    out.append(cond)
    return out


def _search(model, adapted, layers, variants, prompts, runners, controls, floors, done, settings):
    """The greedy minimal sufficient set over the adapted layers (adapter_edits.minimal)."""
    margin = float(settings["margin"])
    ft = {v: prompts[v]["finetune"].delta for v in variants}
    base = {v: prompts[v]["base"].delta for v in variants}
    both = {v: max(floors[v].values()) for v in variants}
    whole = {c.layers[0]: c for c in done[0][1] if c.kind == "sufficiency" and c.group == "block"}
    scores = {layer: float(np.mean([(res[whole[layer]] - base[v]) * np.sign(ft[v] - base[v]) for v, res in done]))
              for layer in whole}
    cache: dict = {}  # (layers, variant) -> delta

    def check(layer_sets, full):
        """Each set on the prompts in turn, the sets of one prompt in one batched call;
        without `full` a set stops at its first prompt not reproduced."""
        sets = [tuple(sorted(s)) for s in layer_sets]
        deltas = np.full((len(sets), len(variants)), np.nan)
        ok = np.ones(len(sets), dtype=bool)
        alive = list(range(len(sets)))
        for i, v in enumerate(variants):
            todo = list(dict.fromkeys(sets[s] for s in alive if (sets[s], v) not in cache))
            for layer_set in [t for t in todo if not t]:
                cache[(layer_set, v)] = base[v]
            todo = [t for t in todo if t]
            conds = [sufficiency(model, adapted, t, "block", kind="minimal_set") for t in todo]
            for t, d in zip(todo, runners[v].deltas(conds, prompts[v], controls[v]) if conds else []):
                cache[(t, v)] = float(d)
            for s in alive:
                deltas[s, i] = cache[(sets[s], v)]
                ok[s] &= bool(reproduces([deltas[s, i]], [ft[v]], [base[v]], [both[v]], margin)[0])
            alive = alive if full else [s for s in alive if ok[s]]
        return list(zip(ok.tolist(), deltas))

    max_layers = settings["max_set_layers"] or len(layers)
    found = minimal_sufficient_set(scores, check, max_layers)
    log.info("model %s: minimal sufficient set %s (%s; greedy prefix %d; %d sets run)", model, found.layers or "{}",
             found.kind, found.greedy_size, len({k[0] for k in cache}))
    return found
