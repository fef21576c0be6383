"""The counterfactual section of the research-question summary: within one model, the
residual cells and components that carry a source prompt's decision into a target's."""

from __future__ import annotations

import pandas as pd

from ..noise import NOISE_MULTIPLE, below_noise, largest_floor
from .document import Document
from .inputs import Inputs, missing_file, read_table, token_text


def counterfactual_section(doc: Document, inputs: Inputs, n_rows: int) -> None:
    """Counterfactual prompts within one model: the residual cells and components that
    carry the source prompt's decision into the target's."""
    if not inputs.counterfactual_residual:
        return
    from ..stats import grouped_mean_ci

    doc.h(2, "Counterfactual prompts")
    doc.p("One model, a source prompt patched into a target prompt that differs from it in a few tokens "
          "(docs/patching.md: counterfactual patching). delta change = patched - target delta; gap fraction = "
          "delta change / (source - target delta): 1 = the patch carries the whole difference. Cells and "
          "components within "
          f"{NOISE_MULTIPLE:g} x the noise floor are marked below noise.")
    for name, path in inputs.counterfactual_residual.items():
        res = read_table(path)
        doc.h(3, name)
        if res is None or res.empty:
            missing_file(doc, f"residual patching table of {name}", path)
            continue
        first = res.iloc[0]
        per_variant = res.drop_duplicates("variant")
        deltas = "; ".join(f"{lab} labelling: {len(g)} pairs, mean delta target {g['baseline_delta'].mean():+.3g}, "
                           f"source {g['source_delta'].mean():+.3g}"
                           for lab, g in per_variant.groupby("labelling", sort=False))
        doc.p(f"{first['model']}: {first['source_scenario']} (source) into {first['target_scenario']} (target); "
              f"{deltas}; largest noise floor {largest_floor(res):.2g}; from `{path}`.")
        metric = "delta_change" if res["delta_change"].notna().any() else "atp_delta_change"
        top = res.reindex(res[metric].abs().sort_values(ascending=False).index).head(n_rows)
        doc.table(pd.DataFrame({
            "variant": top["variant"], "labelling": top["labelling"], "layer": top["layer"],
            "position": top["position"],
            "token (source→target)": [f"{token_text(s)}→{token_text(g)}" if d else token_text(g)
                                      for s, g, d in zip(top["source_token"], top["target_token"],
                                                         top["token_differs"].astype(str).str.lower() == "true")],
            "delta change": top["delta_change"], "gap fraction": top["gap_fraction"], "AtP": top["atp_delta_change"],
            "below noise": top["below_noise"]}), signed=["delta change", "AtP"])
        comp = read_table(inputs.counterfactual_components.get(name))
        if comp is None or comp.empty:
            continue
        if "labelling" not in comp.columns:
            comp = comp.assign(labelling="standard")
        ci = grouped_mean_ci(comp, ["labelling", "component"], "delta_change")
        ci = ci.reindex(ci["mean"].abs().sort_values(ascending=False).index).head(n_rows)
        floor = largest_floor(comp)
        doc.p("Top components by |mean delta change| over the pairs of one labelling (bootstrap 95% interval; "
              "the labellings are kept apart: for a model with a label bias a component's effects in the two have "
              f"opposite signs); from `{inputs.counterfactual_components[name]}`.")
        doc.table(pd.DataFrame({"labelling": ci["labelling"], "component": ci["component"],
                                "mean delta change": ci["mean"],
                                "ci low": ci["ci_low"], "ci high": ci["ci_high"],
                                "below noise": [below_noise(m, floor) for m in ci["mean"]]}),
                  signed=["mean delta change", "ci low", "ci high"])
