"""RQ4 of the research-question summary: does what fine-tuning changed in the IPD carry the
decision in other games and prompts? From the transfer tables (transfer/*.csv: numbers only)."""

from __future__ import annotations

import math

import pandas as pd

from .document import Document, fmt
from .inputs import Inputs, interval_text, table_section


def component_overview(components: pd.DataFrame) -> pd.DataFrame:
    def text(value) -> str:
        return value if isinstance(value, str) else ""

    rows = [{"experiment": r["experiment"], "analysis": r["analysis"], "context": r["context"],
             "IPD states": r["reference_states"],
             "prompts (IPD / context)": f"{int(r['n_prompts_ipd'])} / {int(r['n_prompts_context'])}",
             "Spearman [95% CI]": interval_text(r["spearman"], r["ci_low"], r["ci_high"], signed=True),
             "null band": r["null_band"], "noise ceiling": r["noise_ceiling"], "verdict": r["verdict"],
             "shared top": text(r["shared"]), "opposite sign": text(r["shared_opposite"]),
             "only in context": text(r["context_only"])}
            for _, r in components.iterrows()]
    return pd.DataFrame(rows)


def steering_overview(steering: pd.DataFrame) -> pd.DataFrame:
    """Per steering experiment and context: the rank-1 layer and its effect beside the random
    control, and how many layers are ranked (beyond noise and control, the expected sign)."""
    rows = []
    for (name, context), g in steering.groupby(["steering", "context"], sort=False):
        ranked = g[g["rank"].notna()].sort_values("rank")
        best = ranked.iloc[0] if len(ranked) else None
        rows.append({"steering": name, "context": context,
                     "layers ranked": f"{len(ranked)} of {len(g)}",
                     "best layer": int(best["layer"]) if best is not None else pd.NA,
                     "effect [95% CI]": interval_text(best["effect"], best["ci_low"], best["ci_high"], True)
                     if best is not None else "",
                     "random control": best["control_effect"] if best is not None else math.nan,
                     "flip share": best["flip_share"] if best is not None else math.nan})
    return pd.DataFrame(rows)


def probe_overview(probes: pd.DataFrame) -> pd.DataFrame:
    """Per model and context: layers whose interval is above the floor, and the last layer's accuracy."""
    rows = []
    for (model, context), g in probes.groupby(["model", "context"], sort=False):
        g = g.sort_values("layer")
        last = g.iloc[-1]
        above = g[g["above_chance"].astype(str).str.lower() == "true"]
        rows.append({"model": model, "context": context, "prompts (train / test)":
                     f"{int(last['n_train'])} / {int(last['n_test'])}",
                     "chance": last["chance"], "IPD majority": last["constant"],
                     "layers above both": f"{len(above)} of {len(g)}",
                     "first such layer": int(above.iloc[0]["layer"]) if len(above) else pd.NA,
                     "last-layer accuracy": interval_text(last["accuracy"], last["ci_low"], last["ci_high"]),
                     "status": last["status"]})
    return pd.DataFrame(rows)


def circuit_overview(circuits: pd.DataFrame) -> pd.DataFrame:
    rows = [{"experiment": r["experiment"], "context": r["context"], "in sample": r["in_sample"],
             "circuit": r["circuit"], "to flip": f"{int(r['n_to_flip'])} of {int(r['n_prompts'])}",
             "flipped [95% CI]": interval_text(r["flip_share"], r["flip_ci_low"], r["flip_ci_high"]),
             "gap recovered [95% CI]": interval_text(r["gap_recovered"], r["gap_ci_low"], r["gap_ci_high"], True),
             "random sets: gap": r["random_gap_recovered"], "random sets: flipped": r["random_flip_share"],
             "status": r["status"]} for _, r in circuits.iterrows()]
    return pd.DataFrame(rows)


# key of Inputs.transfer -> (heading, what the table holds, its overview)
PARTS = {
    "components": (
        "Component rankings (patching and DLA change)",
        "Per experiment, each component's patching delta change (source into target) or DLA change (source minus "
        "target), averaged over each context's prompts; Spearman between the IPD's and the context's means over all "
        "components (the IPD's prompts in the context's own states where it has them), +- 1.96 bootstrap standard "
        "deviations over prompts resampled within each context; the null band is what unrelated rankings of these "
        "components reach by chance. Noise ceiling: what the same true ranking would give at these prompt counts "
        "(split-half reliabilities, Spearman-Brown, attenuation): 'same ranking' when the interval is above the band "
        "and reaches it, 'no shared ranking' when it reaches into the band and stays below the ceiling, "
        "'undetermined' when it reaches both, 'ranking below noise' when a context's own prompts share no ranking. "
        "Shared top: the top components (by |mean|, beyond 3 noise floors for patching) of both with the same sign; "
        "opposite sign: in both tops with opposite signs.",
        component_overview),
    "steering": (
        "The IPD steering directions in each context",
        "Each steering experiment's direction (built from the scenarios its config names) added at every layer of "
        "each context's prompts (standard labelling); the rank-1 layer, its mean delta change beside the random "
        "direction of the same norm, and how many layers are beyond the noise floor and the control with the "
        "expected sign.",
        steering_overview),
    "probes": (
        "Probes trained on the IPD",
        "A logistic-regression probe per layer fitted on the model's IPD prompts (both labellings) to its decision "
        "in meaning, tested on each context's prompts (both labellings) against the model's own decision there; "
        "accuracy with its 95% Wilson interval. A layer counts when the interval is above both the context's chance "
        "(majority share) and the IPD majority's score there. Layers are not independent tests: read the count, not "
        "the best layer.",
        probe_overview),
    "circuits": (
        "The IPD circuit in each context",
        "The IPD circuit (the members of at least half of the circuits that flipped the IPD prompts) patched jointly "
        "from source into target on each context's prompts; over the prompts where source and target disagree, the "
        "share flipped (95% Wilson interval) and the mean gap recovered (95% bootstrap interval), beside random "
        "component sets of its size. The IPD row is in sample.",
        circuit_overview),
}


def transfer_section(doc: Document, inputs: Inputs, n_rows: int) -> None:
    """RQ4 (nothing when the transfer tables are not given: no context beside the IPD)."""
    if not inputs.transfer:
        return
    doc.h(2, "RQ4: does what fine-tuning changed in the IPD carry the decision in other games and prompts?")
    doc.p("Contexts: each scenario's game, and its format, preprompt or action symbols where they differ from the "
          "training prompts (interp_lib.contexts); the reference is the IPD in the training format. The DLA, "
          "patching and path-patching tables of RQ1-RQ3 above read the reference's prompts only; the steering, "
          "probe and interaction sections pool every scenario they were given. Behaviour per game, with the label "
          "bias that says whether a model decides by meaning or writes a token, is in `behavior/games.csv`: a transfer found for a model that "
          "writes a token locates that token preference, not a decision.")
    if inputs.other_contexts:
        doc.p("Scenarios outside the reference, left out of the DLA and patching tables of RQ1-RQ3: "
              + ", ".join(sorted(inputs.other_contexts)) + ".")
    for key, (title, text, overview) in PARTS.items():
        table_section(doc, title, inputs.transfer.get(key), text, overview, n_rows, f"transfer table ({key})",
                      empty="no scenario of this analysis outside the reference")
