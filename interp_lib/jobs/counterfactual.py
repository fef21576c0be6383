"""The workflow's counterfactual patching job: one model, a source and a target scenario
whose prompts align token for token (each target variant with its best-aligned source variant), from the model's two cache files."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..noise import below_noise
from ..patching import PatchResult, PatchRunner, PromptActivations, attribution_patch, noise_floor, own_W_O, sweep
from ..patching.counterfactual import PromptAlignmentError, differing_positions
from ..patching.residual import residual_attribution, residual_grid

META_COLUMNS = ["counterfactual", "model", "source_scenario", "target_scenario", "variant", "source_variant",
                "labelling", "precision"]
COMPONENT_COLUMNS = [*META_COLUMNS, "positions", "head_site", *PatchResult.__dataclass_fields__, "atp_delta_change",
                     "noise_floor", "below_noise"]
RESIDUAL_COLUMNS = [*META_COLUMNS, "layer", "position", "source_token", "target_token", "token_differs",
                    "baseline_delta", "source_delta", "patched_delta", "delta_change", "gap_fraction",
                    "atp_delta_change", "noise_floor", "below_noise"]


def counterfactual_patch(name: str, model_name: str, source_scenario: str, target_scenario: str,
                         source_cache: str, target_cache: str, model_dir: str, positions: str = "all",
                         head_site: str = "result", residual: str = "exact", precision: str = "float32",
                         device: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(component table, residual table) for every variant. Components: every head and MLP
    patched from the source prompt's run into the target's (exact, with AtP and the noise
    floor). Residual: every (layer, position), exact when `residual` is "exact" and always
    by AtP."""
    from tqdm import tqdm

    from ..cache import CacheFile
    from ..model.loading import load_hooked, read_fingerprint, resolve_device
    from ..model.precision import get_precision

    if residual not in ("exact", "atp"):
        raise ValueError(f"analysis.residual_patching must be 'exact' or 'atp', got {residual!r}")
    device = resolve_device(device)
    mode = get_precision(precision)
    hooked = load_hooked(model_dir, mode, device, model_name, with_tokenizer=True)
    tokenizer = hooked.tokenizer
    fingerprint = read_fingerprint(model_dir)["fingerprint"]
    components, cells = [], []
    with CacheFile(source_cache, fingerprint=fingerprint) as src_file, \
            CacheFile(target_cache, fingerprint=fingerprint) as tgt_file, mode.matmuls():
        for cache_file in (src_file, tgt_file):
            cache_file.require_precision(mode.name)
        W_O = own_W_O(hooked) if head_site == "result" else None
        for variant in tqdm(tgt_file.variants, desc=f"counterfactual {name}"):
            action_tokens = tgt_file.action_tokens(variant)  # the variant's labelling's C and D
            rows = [action_tokens["C"], action_tokens["D"]]
            tgt = PromptActivations.from_cache(tgt_file[variant], device, mode.weights, mode.residual)
            tgt_ids = tgt.input_ids.cpu().tolist()
            source_variant, differing = matching_variant(
                src_file, tgt_ids, variant, tgt_file.labelling(variant),
                f"counterfactual {name} ({source_scenario} -> {target_scenario})",
                decode=lambda t: tokenizer.decode([t]))
            src = PromptActivations.from_cache(src_file[source_variant], device, mode.weights, mode.residual)
            src_ids = src.input_ids.cpu().tolist()
            meta = dict(counterfactual=name, model=model_name, source_scenario=source_scenario,
                        target_scenario=target_scenario, variant=variant, source_variant=source_variant,
                        labelling=tgt_file.labelling(variant), precision=mode.name)

            runner = PatchRunner(hooked, W_O, action_tokens, positions, head_site)
            controls: list = []
            results = sweep(runner, src, tgt, controls, same_prompt=False)
            floor = noise_floor(runner, tgt, W_O, controls)
            estimates = attribution_patch(runner, src, tgt)
            residual_controls: list = []
            exact = residual_grid(hooked, src, tgt, rows, controls=residual_controls,
                                  desc=f"residual {name}/{variant}") if residual == "exact" else None
            floor = max(floor, *residual_controls) if residual_controls else floor
            components += [{**meta, "positions": positions, "head_site": head_site, **r.to_dict(),
                            "atp_delta_change": e, "noise_floor": floor,
                            "below_noise": below_noise(r.delta_change, floor)} for r, e in zip(results, estimates)]

            atp = residual_attribution(hooked, src, tgt, rows)
            gap = src.delta - tgt.delta
            src_tokens = [tokenizer.decode([t]) for t in src_ids]
            tgt_tokens = [tokenizer.decode([t]) for t in tgt_ids]
            for layer in range(hooked.n_layers):
                for pos in range(len(tgt_ids)):
                    patched = np.nan if exact is None else float(exact[layer, pos])
                    change = patched - tgt.delta
                    cells.append({**meta, "layer": layer, "position": pos,
                                  "source_token": src_tokens[pos], "target_token": tgt_tokens[pos],
                                  "token_differs": pos in differing, "baseline_delta": tgt.delta,
                                  "source_delta": src.delta, "patched_delta": patched, "delta_change": change,
                                  "gap_fraction": change / gap if abs(gap) > 1e-12 else np.nan,
                                  "atp_delta_change": float(atp[layer, pos]), "noise_floor": floor,
                                  "below_noise": below_noise(change, floor) if exact is not None else np.nan})
    return pd.DataFrame(components, columns=COMPONENT_COLUMNS), pd.DataFrame(cells, columns=RESIDUAL_COLUMNS)


def matching_variant(source_file, target_ids: list[int], variant: int, labelling: str, what: str,
                     decode=None) -> tuple[int, set]:
    """(source variant, differing positions): the source scenario's variant of the same
    length and labelling whose tokens differ from the target prompt's at the fewest positions (variants
    of two scenarios are numbered independently: the same number may order the actions
    differently). Without one of the same length, the alignment error of variant `variant`."""
    best = None
    for candidate in source_file.variants:
        ids = [int(t) for t in source_file[candidate]["input_ids"]]
        if source_file.labelling(candidate) == labelling and len(ids) == len(target_ids) and ids != target_ids:
            diff = differing_positions(ids, target_ids, what, decode)
            if best is None or len(diff) < len(best[1]):
                best = (candidate, set(diff))
    if best is None:
        same = variant if variant in source_file.variants else source_file.variants[0]
        differing_positions([int(t) for t in source_file[same]["input_ids"]], target_ids,
                            f"{what}, variant {same}", decode)
        raise PromptAlignmentError(f"{what}: no source variant in the {labelling} labelling of target variant "
                                   f"{variant}; source and target scenarios must share a labelling")
    return best
