"""The path-patching section of the research-question summary: per experiment, where the
progressive curves saturate (from patching/path_patching_saturation.csv; numbers only)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..noise import NOISE_MULTIPLE
from ..patching.saturation import SATURATION_FRACTION
from .document import Document, fmt
from .inputs import Inputs, missing_file, read_table, standard_rows


def saturation_overview(sat: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, site, start layer a) of a saturation table: over the
    scenarios, the mean full-range delta change (of the per-scenario means over variants)
    and its smallest and largest, the saturation layers (median, range), and in how many
    scenarios the full range's mean is outside the noise band."""
    rows = []
    for (exp, site, a), g in sat.groupby(["experiment", "site", "layer_from"], sort=False):
        layers = g["saturation_layer"].to_numpy(float)
        above = ~g["full_below_noise"].astype(str).str.lower().eq("true")
        rows.append({"experiment": exp, "site": site, "from layer": int(a), "to layer": int(g["last_layer"].max()),
                     "full-range delta change": float(g["full_mean"].mean()),
                     "smallest": float(g["full_mean"].min()), "largest": float(g["full_mean"].max()),
                     "full-range gap fraction": float(g["full_gap_fraction"].mean()),
                     "saturation layer (median)": float(np.median(layers)),
                     "range": f"{int(layers.min())}-{int(layers.max())}" if len(layers) else "",
                     "scenarios above noise": f"{int(above.sum())} of {len(g)}"})
    return pd.DataFrame(rows)


def path_patching_section(doc: Document, inputs: Inputs, n_rows: int) -> None:
    """Where path patching saturates per experiment (nothing when the input is not given)."""
    if not inputs.path_saturation:
        return
    doc.h(2, "Path patching: where the effect saturates")
    sat = standard_rows(inputs, read_table(inputs.path_saturation))
    if sat is None:
        missing_file(doc, "path-patching saturation table", inputs.path_saturation)
        return
    if sat.empty:
        doc.p(f"Path patching was not run (analysis.path_patching is off; `{inputs.path_saturation}` is empty).")
        return
    where = {"all": "every position", "decision": "the decision position"}
    positions = " and ".join(where.get(p, p) for p in dict.fromkeys(sat["positions"].astype(str)))
    doc.p("The source's attn_out, mlp_out or both written into the target over layers a..b at "
          f"{positions}, b lengthened from a to the last layer (docs/patching.md: path patching). "
          "Saturation layer of a curve (the mean over a scenario's variants): the smallest b from which its "
          f"delta change stays within max({SATURATION_FRACTION:.0%} of the full range a..L-1's, "
          f"{NOISE_MULTIPLE:g} x the noise floor) of the full range's. Per experiment, site and start layer: "
          "the full range's delta change, mean over scenarios of the per-scenario means (smallest and largest "
          "scenario), its gap fraction (delta change / (source - baseline delta)), the median and range of the "
          f"scenarios' saturation layers; from `{inputs.path_saturation}`.")
    overview = saturation_overview(sat)
    for exp, g in overview.groupby("experiment", sort=False):
        first = sat[sat["experiment"] == exp].iloc[0]
        doc.h(3, f"{exp} ({first['source']} -> {first['target']})")
        doc.table(g.drop(columns="experiment").head(n_rows * 3).reset_index(drop=True),
                  signed=["full-range delta change", "smallest", "largest"])
        both = g[(g["site"] == "both") & (g["from layer"] == g["from layer"].min())]
        if len(both):
            row = both.iloc[0]
            gap = row["full-range gap fraction"]
            doc.p(f"Both block outputs from layer {row['from layer']}: full-range gap fraction "
                  f"{fmt(gap) if math.isfinite(gap) else 'n/a'}; saturation at layer "
                  f"{fmt(row['saturation layer (median)'])} (median over scenarios, range {row['range']}).")
