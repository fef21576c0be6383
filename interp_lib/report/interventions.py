"""RQ3 of the research-question summary, continued: where intervening on the model moves
the decision (steering by layer, with every layer ranked by each measure) and where the
decision becomes linearly readable (probes)."""

from __future__ import annotations

import pandas as pd

from .inputs import missing_file, read_table, with_interval

READABLE = 0.9  # probe accuracy at which a layer counts as reading the target


def steering_section(doc, inputs, measures: dict, n_rows: int) -> None:
    """Each steering experiment's layer ranking, then every layer ranked by each measure."""
    doc.h(3, "Steering by layer")
    if not inputs.steering_layers:
        doc.note("no steering experiment is configured (config key `steering`).")
    for name, path in inputs.steering_layers.items():
        table = read_table(path)
        if table is None or table.empty:
            missing_file(doc, f"steering table of {name}", path)
            continue
        first = table.iloc[0]
        best = table[table["rank"] == 1]
        verdict = (f"best layer L{int(best.iloc[0]['layer'])}" if len(best)
                   else "no layer ranked (every effect below noise, within the control or against the "
                        "expected sign)")
        doc.p(f"{name}: {first['target']} steered at {first['site']} ({first['positions']} positions), alpha = "
              f"{first['alpha']:g}, over the {first['prompts']} prompts: mean delta change with its 95% bootstrap "
              "interval, mean change of P(Defect), share of decisions flipped, and a random direction of the same "
              "norm (control); |v| / |x| = the direction's norm over the mean activation norm there; toward "
              f"expected = effect x the sign the direction was built to push; {verdict}. From `{path}`.")
        shown = table.assign(**{"delta change": [with_interval(r, "effect") for _, r in table.iterrows()]})
        doc.table(shown[["layer", "relative_norm", "delta change", "p_defect_change", "flip_share",
                         "toward_expected", "control_effect", "status", "rank"]].rename(columns={
                             "relative_norm": "|v| / |x|", "p_defect_change": "P(D) change", "flip_share": "flipped",
                             "toward_expected": "toward expected", "control_effect": "control"}).head(n_rows),
                  signed=["P(D) change", "toward expected", "control"])
        ranked = table.set_index("layer")
        measures[f"steering {name}"] = ranked["toward_expected"].where(ranked["status"] == "ranked")
    if len(measures) < 2:
        return
    doc.p("Layers ranked (1 = largest) by each measure: DLA change (the layer's heads and MLP, summed mean "
          "|difference| above), merged-weight change (the whole layer, mean over the moral models) and each "
          "steering experiment's effect towards its expected sign (unranked where below noise, within the "
          "control or against the expected sign).")
    frame = pd.DataFrame(measures)
    out = pd.DataFrame({"layer": frame.index.astype(int)})
    for col in frame.columns:
        out[col] = frame[col].to_numpy()
        out[f"{col} rank"] = frame[col].rank(ascending=False, method="min").astype("Int64").to_numpy()
    doc.table(out.sort_values("layer").reset_index(drop=True))


def probe_section(doc, inputs, n_rows: int) -> None:
    """Per model and target: the first layer where a probe reads it (accuracy >= READABLE)."""
    doc.h(3, "Where the decision becomes linearly readable (probes)")
    table = read_table(inputs.probes)
    if table is None or table.empty:
        missing_file(doc, "probe table", inputs.probes)
        return
    doc.p(f"Logistic-regression probes on each layer's resid_post at the decision position, cross-validated over "
          f"prompts (cv column); accuracy with its 95% Wilson interval, chance = the majority class's share. First "
          f"readable layer: the first whose accuracy is >= {READABLE:g} with an interval above chance. From "
          f"`{inputs.probes}`.")
    rows = []
    for (model, target), g in table.groupby(["model", "target"], sort=False):
        g = g.sort_values("layer")
        last = g.iloc[-1]
        readable = g[(g["accuracy"] >= READABLE) & (g["ci_low"] > g["chance"])]
        rows.append({"model": model, "target": target, "prompts": int(last["n_prompts"]),
                     "chance": last["chance"], "cv": last["cv"],
                     "first readable layer": int(readable.iloc[0]["layer"]) if len(readable) else pd.NA,
                     "last-layer accuracy": (f"{last['accuracy']:.3g} [{last['ci_low']:.3g}, {last['ci_high']:.3g}]"
                                             if pd.notna(last["accuracy"]) else "no probe")})
    doc.table(pd.DataFrame(rows))
