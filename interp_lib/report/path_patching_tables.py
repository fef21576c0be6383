"""Path-patching tables of every experiment and scenario (no torch): the progressive curves'
means over prompt variants with bootstrap intervals, and where each curve saturates.

Input: the patching jobs' `path_patches.csv` (interp_lib.patching.PATH_COLUMNS), one row per
(variant, site, range [a, b]). delta_change = patched - baseline delta, positive = towards
Defect; a curve is one (experiment, scenario, labelling, positions, site, a). Saturation:
interp_lib.patching.saturation (the smallest b from which the curve stays within
max(10% of the full range's effect, 3 x the noise floor) of it).
"""

from __future__ import annotations

import pandas as pd

from ..noise import below_noise
from ..patching.saturation import with_saturation
from ..stats import grouped_mean_ci

CURVE = ["experiment", "source", "target", "scenario", "labelling", "positions", "site", "layer_from"]
SUMMARY_COLUMNS = [*CURVE, "layer_to", "n", "mean_delta_change", "ci_low", "ci_high", "mean_gap_fraction",
                   "gap_ci_low", "gap_ci_high", "mean_baseline_delta", "mean_source_delta", "flips", "noise_floor",
                   "below_noise", "saturation_layer", "saturated"]
SATURATION_COLUMNS = [*CURVE, "last_layer", "n", "full_mean", "full_ci_low", "full_ci_high", "full_gap_fraction",
                      "mean_baseline_delta", "mean_source_delta", "noise_floor", "full_below_noise",
                      "saturation_layer", "variant_saturation_min", "variant_saturation_median",
                      "variant_saturation_max"]


def path_patch_summary(paths: pd.DataFrame) -> pd.DataFrame:
    """One row per curve and range end b: the mean delta_change over variants with its 95%
    bootstrap interval, the mean gap fraction with its interval, flips (variants whose
    action the range's patch flips), the largest noise floor, below_noise (|mean| within
    3 x it), and the mean curve's saturation layer and `saturated` (b >= it)."""
    if paths.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    by = [*CURVE, "layer_to"]
    change = grouped_mean_ci(paths, by, "delta_change").rename(columns={"mean": "mean_delta_change"})
    gap = grouped_mean_ci(paths, by, "gap_fraction")
    grouped = paths.groupby(by, sort=False)
    extra = grouped.agg(mean_baseline_delta=("baseline_delta", "mean"), mean_source_delta=("source_delta", "mean"),
                        flips=("action_flipped", lambda s: int(s.astype(str).str.lower().eq("true").sum())),
                        noise_floor=("noise_floor", "max")).reset_index(drop=True)
    out = pd.concat([change, gap[["mean", "ci_low", "ci_high"]].set_axis(
        ["mean_gap_fraction", "gap_ci_low", "gap_ci_high"], axis=1), extra], axis=1)
    out["below_noise"] = [below_noise(m, f) for m, f in zip(out["mean_delta_change"], out["noise_floor"])]
    out = with_saturation(out, keys=CURVE, value="mean_delta_change")
    return out[SUMMARY_COLUMNS]


def path_saturation_table(paths: pd.DataFrame, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per curve: the full range [a, L-1] (mean delta_change over variants with its
    interval, mean gap fraction, whether it is within the noise band), the mean curve's
    saturation layer, and the spread of the variants' own saturation layers."""
    if paths.empty:
        return pd.DataFrame(columns=SATURATION_COLUMNS)
    summary = path_patch_summary(paths) if summary is None else summary
    last = summary.loc[summary.groupby(CURVE, sort=False)["layer_to"].idxmax()].reset_index(drop=True)
    per_variant = (paths.drop_duplicates([*CURVE, "variant"]).groupby(CURVE, sort=False)["saturation_layer"]
                   .agg(["min", "median", "max"]).reset_index())
    out = last.rename(columns={"layer_to": "last_layer", "mean_delta_change": "full_mean", "ci_low": "full_ci_low",
                               "ci_high": "full_ci_high", "mean_gap_fraction": "full_gap_fraction",
                               "below_noise": "full_below_noise"})
    out = out.merge(per_variant.rename(columns={"min": "variant_saturation_min", "median": "variant_saturation_median",
                                                "max": "variant_saturation_max"}), on=CURVE, how="left")
    out["variant_saturation_median"] = out["variant_saturation_median"].astype(float)
    return out[SATURATION_COLUMNS]


def read_path_patches(paths) -> pd.DataFrame:
    """The per-job tables concatenated (empty ones, from jobs with path patching off, skipped;
    all empty: the first one's header and no rows)."""
    frames = []
    for path in paths:
        try:
            frames.append(pd.read_csv(path))
        except pd.errors.EmptyDataError:
            continue
    full = [f for f in frames if not f.empty]
    if not full:
        return frames[0] if frames else pd.DataFrame()
    out = pd.concat(full, ignore_index=True)
    out["labelling"] = out["labelling"].fillna("standard")
    return out


__all__ = ["SATURATION_COLUMNS", "SUMMARY_COLUMNS", "path_patch_summary", "path_saturation_table",
           "read_path_patches"]
