"""The workflow's patching job: one (experiment, scenario) from two cache files."""

from __future__ import annotations

import numpy as np

from ..noise import below_noise
from ..patching import (RESULT_COLUMNS, PatchRunner, PromptActivations, attribution_patch, circuit_record,
                        discover_circuit, load_W_O, noise_floor, own_W_O, sweep)


def patch_scenario(experiment: str, source_name: str, target_name: str, scenario: str,
                   source_cache: str, target_cache: str, source_dir: str, target_dir: str,
                   positions: str = "all", head_site: str = "result", circuits: bool = True,
                   max_components: int = 10, precision: str = "float32", device: str = "cpu",
                   atp: bool = True, circuit_ranking: str = "exact"):
    """The workflow's patching job for one (experiment, scenario): every single-component
    patch on every variant, each variant's noise floor, then circuits. Returns (results
    DataFrame, circuit records)."""
    import pandas as pd
    from tqdm import tqdm

    from ..cache import CacheFile
    from ..model.loading import load_hooked, read_fingerprint, resolve_device
    from ..model.precision import get_precision

    device = resolve_device(device)
    mode = get_precision(precision)
    hooked = load_hooked(target_dir, mode, device, target_name)
    rows, circuit_records = [], []
    with CacheFile(source_cache, fingerprint=read_fingerprint(source_dir)["fingerprint"]) as src_file, \
            CacheFile(target_cache, fingerprint=read_fingerprint(target_dir)["fingerprint"]) as tgt_file, \
            mode.matmuls():
        for cache_file in (src_file, tgt_file):
            cache_file.require_precision(mode.name)
        W_O = load_W_O(source_dir, hooked.n_layers, hooked.n_heads, hooked.cfg.d_head, device, mode.weights) \
            if head_site == "result" else None
        target_W_O = own_W_O(hooked) if head_site == "result" else None
        for variant in tqdm(tgt_file.variants, desc=f"patch {experiment}/{scenario}"):
            action_tokens = tgt_file.action_tokens(variant)  # the variant's labelling's C and D
            if src_file.action_tokens(variant) != action_tokens:
                raise ValueError(f"{source_name} and {target_name} use different action tokens for {scenario} "
                                 f"variant {variant}; they cannot be patched")
            runner = PatchRunner(hooked, W_O, action_tokens, positions, head_site)
            src = PromptActivations.from_cache(src_file[variant], device, mode.weights, mode.residual)
            tgt = PromptActivations.from_cache(tgt_file[variant], device, mode.weights, mode.residual)
            controls: list = []
            results = sweep(runner, src, tgt, controls)
            floor = noise_floor(runner, tgt, target_W_O, controls)
            estimates = attribution_patch(runner, src, tgt) if atp or circuit_ranking == "atp" \
                else np.full(len(results), np.nan)
            meta = dict(experiment=experiment, source=source_name, target=target_name, scenario=scenario,
                        variant=variant, labelling=tgt_file.labelling(variant), positions=positions, head_site=head_site, precision=mode.name)
            rows += [{**meta, **r.to_dict(), "atp_delta_change": e, "noise_floor": floor,
                      "below_noise": below_noise(r.delta_change, floor)}
                     for r, e in zip(results, estimates)]
            if circuits:
                scores = estimates if circuit_ranking == "atp" else None
                found = discover_circuit(runner, src, tgt, results, max_components, scores)
                circuit_records.append({**meta, "ranking": circuit_ranking, **circuit_record(found)})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS), circuit_records

