"""Sections of the research-question summary beside RQ1-RQ3: behaviour (with the label
bias) and counterfactual prompts."""

from __future__ import annotations

import pandas as pd

from .noise import NOISE_MULTIPLE, below_noise, largest_floor
from .rq_common import Inputs, missing_file, read_table, token_text, with_interval
from .summary_document import Document


def behaviour_section(doc: Document, inputs: Inputs, models: list[str], labels: dict) -> None:
    from .behavior import behaviour_summary, label_bias

    doc.h(2, "Behaviour")
    dec = read_table(inputs.decisions)
    if dec is None or dec.empty:
        missing_file(doc, "behaviour table", inputs.decisions)
        return
    summary = behaviour_summary(dec)
    standard = summary[summary["labelling"] == "standard"]
    doc.p("Mean delta per model and scenario over its prompt variants (standard labelling: action1 = "
          "Cooperate) with the bootstrap 95% interval in brackets (none for one variant), and the share of all "
          f"prompts decided Defect; from `{inputs.decisions}`.")
    order = [m for m in models if m in set(dec["model"])] + sorted(set(dec["model"]) - set(models))
    table = pd.DataFrame({"model": order})
    for scenario in pd.unique(standard["scenario"]):
        cells = standard[standard["scenario"] == scenario].set_index("model")
        table[scenario] = [with_interval(cells.loc[m]) if m in cells.index else "" for m in order]
    table["Defect decisions"] = [f"{int((dec.loc[dec['model'] == m, 'action'] == 'D').sum())}/"
                                 f"{int((dec['model'] == m).sum())}" for m in order]
    doc.table(table)

    doc.h(3, "Label bias")
    bias = label_bias(dec)
    if bias.empty:
        doc.p("No scenario is counterbalanced (scenario option `counterbalance`), so the label bias is not "
              "measured: a preference for the token `2` cannot be told apart from a preference for Defect.")
        return
    doc.p("Counterbalanced scenarios are also prompted with action1 meaning Defect. label bias = mean over "
          "paired prompts of delta(standard) - delta(swapped), delta = logit(Defect) - logit(Cooperate) in both: 0 "
          "for a model that decides by meaning alone, positive when it favours the label action2 whatever it "
          "means (twice that preference, in logits); bootstrap 95% interval over the pairs. same decision: the "
          "share of pairs decided alike under both labellings.")
    shown = bias.assign(**{"label bias": [with_interval(r, "label_bias") for _, r in bias.iterrows()]})
    doc.table(shown[["model", "scenario", "n_pairs", "delta_standard", "delta_swapped", "label bias",
                     "same_decision_share"]].rename(columns={"n_pairs": "pairs", "delta_standard": "delta standard",
                                                             "delta_swapped": "delta swapped",
                                                             "same_decision_share": "same decision"}),
              signed=["delta standard", "delta swapped"])


def counterfactual_section(doc: Document, inputs: Inputs, n_rows: int) -> None:
    """Counterfactual prompts within one model: the residual cells and components that
    carry the source prompt's decision into the target's."""
    if not inputs.counterfactual_residual:
        return
    from .stats import grouped_mean_ci

    doc.h(2, "Counterfactual prompts")
    doc.p("One model, a source prompt patched into a target prompt that differs from it in a few tokens "
          "(README: counterfactual patching). delta change = patched - target delta; gap fraction = delta change "
          "/ (source - target delta): 1 = the patch carries the whole difference. Cells and components within "
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
