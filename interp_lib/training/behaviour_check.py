"""A fine-tune's decisions on the counterbalanced evaluation prompts, straight from the model
(no cache): the quick check that an adapter decides by the game and not by the token.

The workflow's own tables (behavior/decisions.csv, label_bias.csv) read the activation
caches; this module runs the model once per prompt instead, decision position only, with
the prompts' shared prefixes run once (`prefix_tree.shared_prefix_logits`). Its rows have
`behavior.decisions_table`'s columns, so `behavior.label_bias` applies unchanged.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from ..analyses.behaviour import COLUMNS, action_of
from ..prompts import DEFAULT_SCENARIOS, build_dataset, swapped_sibling
from ..tokens import decision_input_ids, get_action_token_ids, labelled_action_tokens


def counterbalanced_scenarios(scenarios: dict | None = None) -> dict:
    """Each scenario followed by its swapped-label sibling (`<name>_swapped`, action1 = Defect)."""
    out = {}
    for name, spec in (DEFAULT_SCENARIOS if scenarios is None else scenarios).items():
        out[name] = spec
        sibling, sibling_spec = swapped_sibling(name, spec)
        out[sibling] = sibling_spec
    return out


@torch.no_grad()
def model_decisions(model, tokenizer, name: str, scenarios: dict | None = None, n_variants: int = 3,
                    seed: int = 0) -> pd.DataFrame:
    """One row per (scenario, variant) of the counterbalanced evaluation prompts:
    delta = logit(Defect) - logit(Cooperate) at the decision position (the labelling's tokens),
    p_defect = sigmoid(delta), p_action2 = P(the token action2)."""
    from ..model.prefix_tree import shared_prefix_logits

    records = build_dataset(counterbalanced_scenarios(scenarios), n_variants, seed)
    actions = get_action_token_ids(tokenizer)
    seqs = [decision_input_ids(tokenizer, rec["prompt"], actions)[0].tolist() for rec in records]
    logits = shared_prefix_logits(model, seqs, n_last=1)[:, -1]  # [n, vocab]
    rows = []
    for rec, row in zip(records, logits):
        tokens = labelled_action_tokens(actions, rec["labelling"])
        delta = float(row[tokens["D"]] - row[tokens["C"]])
        p_defect = 1.0 / (1.0 + math.exp(-delta))
        rows.append({"model": name, "scenario": rec["scenario"], "variant": rec["variant"],
                     "labelling": rec["labelling"], "template": rec["template"], "delta": delta,
                     "p_defect": p_defect,
                     "p_action2": p_defect if rec["labelling"] == "standard" else 1.0 - p_defect,
                     "action": action_of(delta)})
    return pd.DataFrame(rows, columns=COLUMNS)


def check_config(config_path: str, models: list[str] | None = None) -> str:
    """Markdown: P(Defect) per model x scenario (both labellings) and the label bias per model
    x scenario with its bootstrap 95% interval, for the config's models (or `models`)."""
    import copy

    from ..analyses.behaviour import label_bias
    from ..config import load_config
    from ..model.loading import load_model, merge_adapter
    from ..report.document import Document, to_markdown

    config = load_config(config_path)
    frames = []
    bases: dict = {}  # each base read once; adapters merge into copies of it
    for name in models or list(config["models"]):
        spec = config["models"][name]
        if spec["base"] not in bases:
            bases[spec["base"]] = load_model(name, {"base": spec["base"]})
        base_model, tokenizer = bases[spec["base"]]
        model = merge_adapter(copy.deepcopy(base_model), spec["adapter"], name) if spec.get("adapter") else base_model
        frames.append(model_decisions(model, tokenizer, name, n_variants=config["variants_per_scenario"],
                                      seed=config["seed"]))
        del model
    decisions = pd.concat(frames, ignore_index=True)
    doc = Document()
    doc.p("P(Defect), mean over the prompt variants:")
    doc.table(decisions.groupby(["model", "scenario"], sort=False)["p_defect"].mean().unstack().round(4)
              .reset_index())
    bias = label_bias(decisions)
    bias["cell"] = [f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]" for m, lo, hi in
                    zip(bias["label_bias"], bias["ci_low"], bias["ci_high"])]
    table = bias.pivot(index="model", columns="scenario", values="cell")
    table = table.loc[bias["model"].unique(), list(bias["scenario"].unique())]
    pairs = bias.assign(same=bias["same_decision_share"] * bias["n_pairs"]).groupby("model", sort=False)
    table["same decision in swapped pairs"] = [f"{round(g['same'].sum())} of {g['n_pairs'].sum()}"
                                               for _, g in pairs]
    doc.p("Label bias, delta(standard) - delta(swapped) in logits [bootstrap 95% interval]:")
    doc.table(table.reset_index())
    return to_markdown(doc)


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m interp_lib.training.behaviour_check CONFIG [MODEL ...]")
    print(check_config(sys.argv[1], sys.argv[2:] or None))
