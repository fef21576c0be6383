"""The behaviour section of the research-question summary: mean delta per model and
scenario, Defect decisions, and the label bias of counterbalanced scenarios."""

from __future__ import annotations

import pandas as pd

from .document import Document
from .inputs import Inputs, missing_file, read_table, with_interval


def behaviour_section(doc: Document, inputs: Inputs, models: list[str], labels: dict) -> None:
    from ..analyses.behaviour import behaviour_summary, label_bias

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
