"""Does the IPD circuit flip the decision in other games and prompts? (issue 28 item 4)

The IPD circuit of an experiment (`ipd_circuit`) is its consensus over the reference
context's prompts: the members of at least half of the circuits that flipped there (the
patching job's 1-minimal circuits, one per prompt), most frequent first; when no member
reaches half, the single most frequent one. One job per (experiment, scenario) patches that
set jointly from the source into the target on every prompt variant (`circuit_transfer`),
beside N_RANDOM random sets of the same size drawn from the other components (the control:
what any set of that many components does). The noise floor of each prompt is the one the
patching job measured on the same runner path (`noise_floors`, from its patches table), not
measured again.

Per prompt: patched delta, gap recovered = (patched - baseline) / (source - baseline), and
flipped = the patched target takes the source's action; both NaN / False where source and
target already agree (nothing to flip).
"""

from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

N_RANDOM = 5
COLUMNS = ["experiment", "source", "target", "scenario", "variant", "labelling", "circuit", "circuit_size",
           "circuit_support", "baseline_delta", "source_delta", "patched_delta", "gap_recovered", "flipped",
           "same_action", "random_gap_recovered", "random_flip_share", "noise_floor", "precision"]


def ipd_circuit(circuits: pd.DataFrame) -> tuple[list[str], float]:
    """(members, support): the consensus of the flipped circuits in `circuits` (the patching
    job's circuit records of the reference context); support = the share of those circuits
    holding the least frequent member. ([], nan) when none flipped."""
    flipped = circuits[circuits["flipped"].astype(bool) & circuits["circuit"].notna()]
    sets = [str(c).split(";") for c in flipped["circuit"] if str(c)]
    if not sets:
        return [], float("nan")
    counts = Counter(m for s in sets for m in dict.fromkeys(s))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    members = [m for m, n in ranked if 2 * n >= len(sets)] or [ranked[0][0]]
    return members, min(counts[m] for m in members) / len(sets)


def _gap(patched: float, base: float, source: float) -> float:
    return (patched - base) / (source - base) if source != base else math.nan


def circuit_transfer(experiment: str, source_name: str, target_name: str, scenario: str, source_cache: str,
                     target_cache: str, source_dir: str, target_dir: str, members: list[str], support: float,
                     noise_floors: dict, positions: str = "all", head_site: str = "result", precision: str = "float32",
                     device: str = "cpu", seed: int = 0, n_random: int = N_RANDOM) -> pd.DataFrame:
    """COLUMNS, one row per prompt variant of `scenario` (empty without members);
    `noise_floors` maps variant -> the patching job's noise floor for that prompt."""
    from tqdm import tqdm

    from ..analyses.behaviour import action_of
    from ..cache import CacheFile
    from ..model.loading import load_hooked, read_fingerprint, resolve_device
    from ..model.precision import get_precision
    from ..patching import Component, PatchRunner, PromptActivations, all_components, load_W_O

    if not members:
        log.info("%s: no IPD circuit flipped; nothing to transfer", experiment)
        return pd.DataFrame(columns=COLUMNS)
    device = resolve_device(device)
    mode = get_precision(precision)
    hooked = load_hooked(target_dir, mode, device, target_name)
    circuit = [Component.parse(m) for m in members]
    others = [c for c in all_components(hooked.n_layers, hooked.n_heads) if c not in circuit]
    rng = np.random.default_rng(seed)
    controls = [[others[i] for i in rng.choice(len(others), size=min(len(circuit), len(others)), replace=False)]
                for _ in range(n_random)]
    rows = []
    with CacheFile(source_cache, fingerprint=read_fingerprint(source_dir)["fingerprint"]) as src_file, \
            CacheFile(target_cache, fingerprint=read_fingerprint(target_dir)["fingerprint"]) as tgt_file, \
            mode.matmuls():
        for cache_file in (src_file, tgt_file):
            cache_file.require_precision(mode.name)
        W_O = load_W_O(source_dir, hooked.n_layers, hooked.n_heads, hooked.cfg.d_head, device, mode.weights) \
            if head_site == "result" else None
        for variant in tqdm(tgt_file.variants, desc=f"IPD circuit {experiment}/{scenario}"):
            tokens = tgt_file.action_tokens(variant)
            if src_file.action_tokens(variant) != tokens:
                raise ValueError(f"{source_name} and {target_name} use different action tokens for {scenario} "
                                 f"variant {variant}; they cannot be patched")
            runner = PatchRunner(hooked, W_O, tokens, positions, head_site)
            src = PromptActivations.from_cache(src_file[variant], device, mode.weights, mode.residual)
            tgt = PromptActivations.from_cache(tgt_file[variant], device, mode.weights, mode.residual)
            patched, *random = (float(d) for d in runner.deltas(src, tgt, [circuit, *controls]))
            base, source = float(tgt.delta), float(src.delta)
            same = action_of(base) == action_of(source)
            rows.append({"experiment": experiment, "source": source_name, "target": target_name,
                         "scenario": scenario, "variant": variant, "labelling": tgt_file.labelling(variant),
                         "circuit": ";".join(members), "circuit_size": len(members), "circuit_support": support,
                         "baseline_delta": base, "source_delta": source, "patched_delta": patched,
                         "gap_recovered": _gap(patched, base, source),
                         "flipped": (not same) and action_of(patched) == action_of(source), "same_action": same,
                         "random_gap_recovered": float(np.mean([_gap(d, base, source) for d in random])),
                         "random_flip_share": math.nan if same else
                         float(np.mean([action_of(d) == action_of(source) for d in random])),
                         "noise_floor": float(noise_floors[variant]), "precision": mode.name})
    return pd.DataFrame(rows, columns=COLUMNS)
