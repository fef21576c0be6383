"""Where selected heads look from the decision position, from the caches (no model runs).

Heads are chosen per scenario: the top-k by mean |DLA contribution| (over models and
variants; the DLA table's head rows) and the top-k by mean |delta_change| of exact head
patches (over experiments and variants; the patching table's head rows). For every
selected head, model and variant, the cache's `attn_decision[layer, head]` ([T]
probabilities >= 0 that sum to 1; 0 where a sliding window hides a key) becomes one row
per prompt position, with the token's text that the cache stores (decoded by the model's tokenizer
when it was cached: no tokenizer is loaded here).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

logger = logging.getLogger("interp_lib")

COLUMNS = ["model", "scenario", "variant", "component", "layer", "head", "position", "token", "weight",
           "selected_by"]
DLA_COLUMNS = ["scenario", "kind", "layer", "head", "contribution"]
PATCH_COLUMNS = ["scenario", "kind", "layer", "head", "delta_change"]


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def _check_columns(table: pd.DataFrame, needed: list, what: str) -> None:
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {', '.join(missing)}")


def top_heads(table: pd.DataFrame, score: str, k: int) -> list[tuple[int, int]]:
    """The k (layer, head) pairs with the largest mean |score| over the table's head rows,
    largest first (ties by layer, head)."""
    heads = table[(table["kind"] == "head") & table[score].notna()]
    if heads.empty:
        return []
    means = (heads.assign(layer=heads["layer"].astype(int), head=heads["head"].astype(int),
                          size=heads[score].abs())
             .groupby(["layer", "head"])["size"].mean().reset_index())
    means = means.sort_values(["size", "layer", "head"], ascending=[False, True, True], kind="stable")
    return [(int(l), int(h)) for l, h in zip(means["layer"], means["head"])][:k]


def select_heads(dla: pd.DataFrame, patching: pd.DataFrame | None, k: int, scenario: str) -> dict:
    """{(layer, head): "dla" | "patching" | "dla+patching"} for one scenario, ordered by
    layer and head. `dla` has DLA_COLUMNS (dla_full_results.csv or per-job CSVs);
    `patching` has PATCH_COLUMNS (patch_results_*.csv), or is None / empty (DLA alone)."""
    if k < 1:
        raise ValueError(f"top_k must be at least 1, got {k}")
    _check_columns(dla, DLA_COLUMNS, "DLA table")
    dla = dla[dla["scenario"] == scenario]
    if dla.empty:
        raise ValueError(f"DLA table: no rows for scenario {scenario!r}")
    why: dict = {h: ["dla"] for h in top_heads(dla, "contribution", k)}
    if patching is not None and len(patching):
        _check_columns(patching, PATCH_COLUMNS, "patching table")
        for h in top_heads(patching[patching["scenario"] == scenario], "delta_change", k):
            why.setdefault(h, []).append("patching")
    return {h: "+".join(why[h]) for h in sorted(why)}


def attention_rows(cache, model: str, scenario: str, selection: dict) -> pd.DataFrame:
    """COLUMNS rows of one model's cache (an open CacheFile) for the selected heads, every
    variant, with the tokens' texts the cache stores."""
    frames = []
    for variant in cache.variants:
        group = cache[variant]
        attn = group["attn_decision"]  # [L, H, T]
        L, H, T = attn.shape
        tokens = cache.token_texts(variant)
        for (layer, head), why in selection.items():
            if not (0 <= layer < L and 0 <= head < H):
                raise ValueError(f"{cache.path}: head {head_name(layer, head)} is not in a model with {L} layers "
                                 f"and {H} heads")
            frames.append(pd.DataFrame({
                "model": model, "scenario": scenario, "variant": variant, "component": head_name(layer, head),
                "layer": layer, "head": head, "position": np.arange(T), "token": tokens,
                "weight": attn[layer, head], "selected_by": why}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def attention_table(cache_paths: dict, scenario: str, selection: dict) -> pd.DataFrame:
    """The tidy table (COLUMNS) of one scenario: `cache_paths` maps model -> its cache file
    (<results_dir>/cache/<model>/<scenario>.h5); each cache is checked against its merged
    model's fingerprint (<results_dir>/models/<model>/fingerprint.json) and holds the
    tokens' texts, so no tokenizer is loaded."""
    from ..cache import CacheFile, merged_dir_of
    from ..model.loading import read_fingerprint

    frames = []
    for model, path in cache_paths.items():
        fingerprint = read_fingerprint(merged_dir_of(path, model))["fingerprint"]
        with CacheFile(path, fingerprint=fingerprint) as cache:
            frames.append(attention_rows(cache, model, scenario, selection))
    table = pd.concat(frames, ignore_index=True)
    logger.info("%s: %d heads (%s) x %d models", scenario, len(selection),
                ", ".join(f"{head_name(*h)} {w}" for h, w in selection.items()), len(cache_paths))
    return table[COLUMNS]


def scenario_table(scenario: str, inputs: dict, top_k: int) -> pd.DataFrame:
    """The attention table of one scenario (an attention_tables job's item). `inputs`:
    {"caches": {model: cache file}, "dla": [each model's DLA CSV of the scenario],
    "patches": [each experiment's patches.csv of it; none when the scenario is not patched
    (analysis.patch_scenarios): then DLA alone selects the heads]}."""
    dla = pd.concat([pd.read_csv(f) for f in inputs["dla"]], ignore_index=True)
    patching = pd.concat([pd.read_csv(f) for f in inputs["patches"]], ignore_index=True) if inputs["patches"] else None
    selection = select_heads(dla, patching=patching, k=top_k, scenario=scenario)
    return attention_table(dict(inputs["caches"]), scenario, selection)


def read_attention_table(path) -> pd.DataFrame:
    """An attention_{scenario}.csv, tokens as strings (a token "nan" or "" stays one)."""
    table = pd.read_csv(path, dtype={"token": str, "model": str, "scenario": str}, keep_default_na=False,
                        na_values={"weight": ["", "nan"]})
    _check_columns(table, COLUMNS, str(path))
    return table
