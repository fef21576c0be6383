"""The workflow's patching job: one (experiment, scenario) from two cache files."""

from __future__ import annotations

import logging
import time

import numpy as np

from ..noise import below_noise
from ..patching import (PATH_COLUMNS, RESULT_COLUMNS, PatchRunner, PromptActivations, attribution_patch,
                        circuit_record, discover_circuit, load_W_O, noise_floor, own_W_O, path_noise_floor, path_sweep,
                        start_layers, sweep, with_saturation)

log = logging.getLogger(__name__)


def patch_scenario(experiment: str, source_name: str, target_name: str, scenario: str,
                   source_cache: str, target_cache: str, source_dir: str, target_dir: str,
                   positions: str = "all", head_site: str = "result", circuits: bool = True,
                   max_components: int = 10, precision: str = "float32", device: str = "cpu",
                   atp: bool = True, circuit_ranking: str = "exact", path_patching: bool = True,
                   path_starts=4):
    """The workflow's patching job for one (experiment, scenario): every single-component
    patch on every variant, each variant's noise floor, then circuits, and path patching
    (`interp_lib.patching.paths`: attn_out, mlp_out and both over the ranges [a, b] of the
    progressive sweep from the start layers `path_starts`, see `start_layers`). Returns
    (results DataFrame, circuit records, path-patching DataFrame: PATH_COLUMNS, no rows
    without `path_patching`)."""
    import pandas as pd
    from tqdm import tqdm

    from ..cache import CacheFile
    from ..model.loading import load_hooked, read_fingerprint, resolve_device
    from ..model.precision import get_precision

    device = resolve_device(device)
    mode = get_precision(precision)
    hooked = load_hooked(target_dir, mode, device, target_name)
    rows, circuit_records, path_rows = [], [], []
    starts = start_layers(hooked.n_layers, path_starts) if path_patching else []
    path_seconds = 0.0
    with CacheFile(source_cache, fingerprint=read_fingerprint(source_dir)["fingerprint"]) as src_file, \
            CacheFile(target_cache, fingerprint=read_fingerprint(target_dir)["fingerprint"]) as tgt_file, \
            mode.matmuls():
        for cache_file in (src_file, tgt_file):
            cache_file.require_precision(mode.name)
        # path patching writes the source's attn_out: its head outputs, whatever head_site is
        need_W_O = head_site == "result" or path_patching
        W_O = load_W_O(source_dir, hooked.n_layers, hooked.n_heads, hooked.cfg.d_head, device, mode.weights) \
            if need_W_O else None
        target_W_O = own_W_O(hooked) if need_W_O else None
        for variant in tqdm(tgt_file.variants, desc=f"patch {experiment}/{scenario}"):
            action_tokens = tgt_file.action_tokens(variant)  # the variant's labelling's C and D
            if src_file.action_tokens(variant) != action_tokens:
                raise ValueError(f"{source_name} and {target_name} use different action tokens for {scenario} "
                                 f"variant {variant}; they cannot be patched")
            runner = PatchRunner(hooked, W_O if head_site == "result" else None, action_tokens, positions, head_site)
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
            if path_patching:
                began = time.perf_counter()
                path_rows += _path_rows(runner, hooked, W_O, target_W_O, action_tokens, positions, src, tgt,
                                        starts, floor, meta)
                path_seconds += time.perf_counter() - began
    if path_patching:
        log.info("path patching: %d start layers (%s), %.1f s of the job", len(starts),
                 ", ".join(map(str, starts)), path_seconds)
    paths = pd.DataFrame(path_rows, columns=PATH_COLUMNS[:-3])
    return pd.DataFrame(rows, columns=RESULT_COLUMNS), circuit_records, with_saturation(paths)[PATH_COLUMNS]


def _path_rows(runner, hooked, W_O, target_W_O, action_tokens, positions, src, tgt, starts, floor, meta) -> list[dict]:
    """One variant's path-patching rows and their noise floor (`path_noise_floor`). With
    head_site "result" the sweep's runner serves, and its component floor (`floor`) counts:
    its self-patches are the same runs; otherwise a result-site runner measures its own."""
    controls: list = []
    same = runner.head_site == "result"
    if not same:
        runner = PatchRunner(hooked, W_O, action_tokens, positions, "result")
    results = path_sweep(runner, src, tgt, starts, controls=controls)
    path_floor = path_noise_floor(runner, tgt, target_W_O, starts, controls, floor if same else None)
    path_meta = {k: v for k, v in meta.items() if k != "head_site"}
    return [{**path_meta, **r.to_dict(), "noise_floor": path_floor,
             "below_noise": below_noise(r.delta_change, path_floor)} for r in results]

