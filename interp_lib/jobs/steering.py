"""The workflow's steering job: one steering experiment on one scenario. The direction is
built from cached activations; only the steered forward passes run the target model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..noise import below_noise
from ..steering.directions import MAIN, Direction, DirectionError, decision_difference, model_difference, \
    random_controls, read_site_activations

COLUMNS = ["steering", "target", "scenario", "labelling", "variant", "site", "positions", "direction", "layer",
           "alpha", "direction_norm", "activation_norm", "expected_sign", "baseline_delta", "delta", "delta_change",
           "baseline_p_defect", "p_defect", "p_defect_change", "flipped", "noise_floor", "below_noise",
           "in_sample", "precision"]


def build_direction(spec: dict, site: str, caches: dict[str, list[str]]) -> Direction:
    """The direction of a steering experiment's `direction` spec ({from: models, source,
    reference} or {from: decisions, model}) from `caches` (model -> its cache files of the
    direction's scenarios)."""
    if spec["from"] == "models":
        return model_difference(read_site_activations(caches[spec["source"]], site),
                                read_site_activations(caches[spec["reference"]], site),
                                spec["source"], spec["reference"])
    if spec["from"] == "decisions":
        return decision_difference(read_site_activations(caches[spec["model"]], site), spec["model"])
    raise ValueError(f"direction.from must be models or decisions, got {spec['from']!r}")


def checked_direction(name: str, spec: dict, caches: dict[str, list[str]]) -> Direction:
    """build_direction of steering experiment `name`, its errors naming the experiment."""
    try:
        return build_direction(spec["direction"], spec["site"], caches)
    except DirectionError as exc:
        raise DirectionError(f"steering.{name}.direction: {exc}") from None


def steer_scenario(name: str, spec: dict, scenario: str, target_cache: str, direction_caches: dict[str, list[str]],
                   model_dir: str, precision: str = "float32", device: str = "cpu", seed: int = 0,
                   max_rows: int | None = None, hooked=None, direction: Direction | None = None) -> pd.DataFrame:
    """Tidy table: one row per (variant, direction, layer, alpha) of the target model on the
    scenario's prompts. `spec` is the experiment's validated config (target, direction,
    site, layers, alphas, positions, controls); `direction: random k` rows use random
    directions of the same norm per layer (the control). noise_floor = the largest
    |delta - baseline| at alpha = 0 of the prompt (which must change nothing). `hooked`: the
    target already loaded in `precision` on `device` (a job steering several scenarios);
    `direction`: build_direction's result for `spec` already built (it reads every direction
    cache), else built here from `direction_caches`."""
    import torch
    from tqdm import tqdm

    from ..cache import CacheFile
    from ..model.loading import load_hooked, read_fingerprint, resolve_device
    from ..cache.prompt_activations import PromptActivations
    from ..model.precision import get_precision
    from ..steering.steer import steered_deltas

    site, positions, target_name = spec["site"], spec["positions"], spec["target"]
    if direction is None:
        direction = checked_direction(name, spec, direction_caches)
    device = resolve_device(device)
    mode = get_precision(precision)
    hooked = hooked or load_hooked(model_dir, mode, device, target_name)
    L = hooked.n_layers
    layers = list(range(L)) if spec["layers"] == "all" else [int(layer) for layer in spec["layers"]]
    bad = [layer for layer in layers if not 0 <= layer < L]
    if bad:
        raise ValueError(f"steering.{name}.layers: layer {bad[0]} does not exist "
                         f"({target_name} has {L} layers, 0-{L - 1})")
    if direction.vectors.shape != (L, hooked.cfg.d_model):
        raise ValueError(f"steering.{name}.target: {target_name} has {L} layers of width {hooked.cfg.d_model}, the "
                         f"direction {direction.vectors.shape[0]} of width {direction.vectors.shape[1]}; steer a "
                         "model of the direction's architecture")
    alphas = sorted({0.0, *(float(a) for a in spec["alphas"])})
    n_controls = int(spec.get("controls", 0))
    vectors = np.concatenate([direction.vectors[None], random_controls(direction, n_controls, seed)])
    labels = [MAIN] + [f"random {k + 1}" for k in range(n_controls)]
    in_sample = scenario in (spec["direction"].get("scenarios") or [scenario])
    zero = alphas.index(0.0)
    rows = []
    fingerprint = read_fingerprint(model_dir)["fingerprint"]
    with CacheFile(target_cache, fingerprint=fingerprint) as cache, mode.matmuls():
        cache.require_precision(mode.name)
        vecs = torch.as_tensor(vectors)
        for variant in tqdm(cache.variants, desc=f"steering {name}/{scenario}"):
            tokens = cache.action_tokens(variant)
            target = PromptActivations.from_cache(cache[variant], device, mode.weights, mode.residual)
            got = steered_deltas(hooked, target, [tokens["C"], tokens["D"]], vecs, layers, alphas, site, positions,
                                 max_rows)
            floor = float(np.abs(got[:, :, zero] - target.delta).max())
            base_p = _sigmoid(target.delta)
            meta = dict(steering=name, target=target_name, scenario=scenario, labelling=cache.labelling(variant),
                        variant=variant, site=site, positions=positions)
            for k, label in enumerate(labels):
                for i, layer in enumerate(layers):
                    for j, alpha in enumerate(alphas):
                        delta = float(got[k, i, j])
                        p = _sigmoid(delta)
                        rows.append({**meta, "direction": label, "layer": layer, "alpha": alpha,
                                     "direction_norm": float(np.linalg.norm(vectors[k, layer])),
                                     "activation_norm": float(direction.activation_norm[layer]),
                                     "expected_sign": direction.expected_sign, "baseline_delta": target.delta,
                                     "delta": delta, "delta_change": delta - target.delta,
                                     "baseline_p_defect": base_p, "p_defect": p, "p_defect_change": p - base_p,
                                     "flipped": (delta > 0) != (target.delta > 0), "noise_floor": floor,
                                     "below_noise": below_noise(delta - target.delta, floor),
                                     "in_sample": in_sample, "precision": mode.name})
    return pd.DataFrame(rows, columns=COLUMNS)


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))
