"""The adapter-edit section of the research-question summary: for each fine-tune, which
layers' LoRA updates are necessary (removing one breaks the fine-tune's decisions) or
sufficient (added alone to the base it reproduces them), its minimal sufficient sets, and
where a transplanted update moves a target towards its source."""

from __future__ import annotations

import pandas as pd

from ..adapter_edits.plan import edit_models
from .document import fmt
from .inputs import missing_file, read_table, with_interval


def _layers(values) -> str:
    return ", ".join(f"L{int(x)}" for x in sorted(values)) or "none"


def _counts(rows: pd.DataFrame, column: str) -> str:
    """"L3 (4/6), L5 (1/6)": layers where `column` holds in some scenario, with the count."""
    hits = rows[rows[column] > 0].sort_values([column, "layer"], ascending=[False, True])
    return ", ".join(f"L{int(r.layer)} ({int(getattr(r, column))}/{int(r.n_scenarios)})"
                     for r in hits.itertuples()) or "none"


def _sets(sets: pd.DataFrame) -> str:
    """Distinct minimal sets of one fine-tune with their scenarios."""
    parts = []
    for layers, g in sets.groupby(sets["layers"].fillna("").astype(str), sort=False):
        kinds = "/".join(dict.fromkeys(g["set_kind"]))
        names = ", ".join(g["scenario"])
        shown = "{" + ", ".join(f"L{x}" for x in layers.split(";") if x) + "}"
        parts.append(f"{shown} {kinds} ({names})")
    return "; ".join(parts)


def adapter_edits_section(doc, inputs, config: dict, n_rows: int) -> None:
    """The section (module doc); `inputs.adapter_edits`: {"summary", "verdicts", "sets"}: paths."""
    doc.h(2, "Adapter edits: necessary and sufficient layers of each fine-tune's update")
    _, skipped = edit_models(config)
    paths = getattr(inputs, "adapter_edits", None) or {}
    verdicts, sets = read_table(paths.get("verdicts")), read_table(paths.get("sets"))
    if skipped:
        doc.note("not edited: " + "; ".join(f"{m} ({why})" for m, why in skipped.items()))
    if verdicts is None or sets is None:
        missing_file(doc, "adapter-edit tables", paths.get("verdicts") if verdicts is None else paths.get("sets"))
        return
    if verdicts.empty:
        doc.note("no fine-tune was edited (no model with an adapter and an adapter-less model on its base).")
        return
    margin = float(sets["margin"].iloc[0]) if len(sets) else float("nan")
    doc.p(f"Each fine-tune's exact LoRA update (scaling x B @ A from its factors) removed from one layer "
          f"(ablation) or added alone to the base (sufficiency), every position recomputed from that layer's cached "
          f"resid_pre. An edited model reproduces the fine-tune on a prompt when it makes the same decision and its "
          f"delta lies within {fmt(margin)} x |delta_ft - delta_base| of the fine-tune's (at least 3 x the noise "
          f"floor). A layer's update is necessary on a scenario when removing it leaves some prompt not reproduced, "
          f"sufficient when it alone reproduces every prompt; counts are scenarios (each counterbalanced scenario and "
          f"its swapped sibling count apart). Minimal sets: greedy over layers ranked by their single-layer "
          f"sufficiency, pruned until no member can be dropped (minimal), per scenario. From `{paths['verdicts']}` "
          f"and `{paths['sets']}`.")
    pooled = verdicts[(verdicts["scenario"] == "ALL") & (verdicts["group"] == "block")]
    rows = []
    for model, g in pooled.groupby("model", sort=False):
        n = int(g["n_scenarios"].max())
        rows.append({"fine-tune": model, "scenarios": n,
                     "necessary in every scenario": _layers(g.loc[g["necessary"] == n, "layer"]),
                     "necessary in some": _counts(g, "necessary"),
                     "sufficient alone in every scenario": _layers(g.loc[g["sufficient"] == n, "layer"]),
                     "sufficient alone in some": _counts(g, "sufficient"),
                     "minimal sufficient sets": _sets(sets[sets["model"] == model])})
    doc.table(pd.DataFrame(rows))
    groups = verdicts[(verdicts["scenario"] == "ALL") & (verdicts["group"] != "block")]
    if len(groups):
        doc.p("Module groups at each fine-tune's top layers (by whole-layer effect, per scenario): scenarios in which "
              "the group's update is necessary or sufficient alone, of those in which it was edited.")
        shown = groups.assign(layer=[f"L{int(x)}" for x in groups["layer"]])
        doc.table(shown[["model", "layer", "group", "n_scenarios", "necessary", "sufficient"]].head(4 * n_rows))
    _transplants(doc, read_table(paths.get("summary")), paths.get("summary"), n_rows)


def _transplants(doc, summary, path, n_rows: int) -> None:
    doc.h(3, "Transplants: a source adapter's update in place of the target's, layer by layer")
    if summary is None:
        missing_file(doc, "adapter-edit summary", path)
        return
    rows = summary[(summary["kind"] == "transplant") & (summary["scenario"] == "ALL") & (summary["group"] == "block")]
    if rows.empty:
        doc.note("no transplant: no configured experiment pairs two fine-tunes with adapters on one base.")
        return
    doc.p(f"Per experiment and labelling, the three layers whose transplanted update moves the target most towards "
          f"the source: the change towards it (delta change x sign(source - target) per prompt, mean over every "
          f"scenario's prompts with its 95% interval) against the whole way |source - target|; share of the way = "
          f"median gap fraction; flipped = share of prompts whose decision changes. From `{path}`.")
    out = []
    for (exp, labelling), g in rows.groupby(["experiment", "labelling"], sort=False):
        for _, r in g.sort_values("mean_toward_goal", ascending=False).head(3).iterrows():
            interval = pd.Series({"toward": r["mean_toward_goal"], "ci_low": r["toward_ci_low"],
                                  "ci_high": r["toward_ci_high"]})
            out.append({"experiment": exp, "source": r["source"], "target": r["model"], "labelling": labelling,
                        "layer": f"L{int(r['layer'])}", "towards the source": with_interval(interval, "toward"),
                        "whole way": r["mean_goal_gap"], "share of the way": r["median_gap_fraction"],
                        "flipped": r["flip_share"], "below noise": bool(r["below_noise"])})
    doc.table(pd.DataFrame(out).head(4 * n_rows))
