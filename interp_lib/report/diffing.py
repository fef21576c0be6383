"""RQ5 of the research-question summary: what did each fine-tune write? From the model-diffing
tables (diffing/adl_*.csv and diffing/crosscoder/*.csv: numbers only)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..contexts import REFERENCE
from ..diffing.adl import ALL_STATES, steering_name, steering_state
from .document import Document, fmt
from .inputs import Inputs, interval_text, missing_file, read_table, table_section

ADL_PARTS = ("differences", "tokens", "lora", "steering", "cosines")
CROSSCODER_PARTS = ("quality", "latents", "decisions", "causal")


def reading(std: pd.Series, swp: pd.Series) -> str:
    """How a difference reads across the labellings from its lens rows (lens_delta, lens_ci_*) in
    each: each labelling's lens is in its own Defect token, so a decision pushes both the same
    way and a token preference pushes them apart; "undetermined" unless both intervals exclude 0."""
    sign = [np.sign(r["lens_delta"]) if r["lens_ci_low"] > 0 or r["lens_ci_high"] < 0 else 0 for r in (std, swp)]
    if 0 in sign:
        return "undetermined"
    return "decision" if sign[0] == sign[1] else "token preference"


def pooled(table: pd.DataFrame) -> pd.DataFrame:
    """The rows pooled over states (all of a table written before the state column)."""
    return table[table["state"] == ALL_STATES] if "state" in table.columns else table


def lens_columns(ipd: pd.DataFrame) -> tuple[dict, pd.Series] | None:
    """From one group's IPD decision-position rows (both labellings, every layer): the prompts,
    the last layer's lens in each labelling and how it reads, and how many layers read a
    decision or a token; with the standard labelling's last-layer row. None without
    standard-labelling rows."""
    std, swp = (ipd[ipd["labelling"] == lab].set_index("layer") for lab in ("standard", "swapped"))
    if not len(std):
        return None
    last = std.index.max()
    s = std.loc[last]
    row = {"IPD prompts": int(s["n_prompts"]) + (int(swp.loc[last, "n_prompts"]) if last in swp.index else 0),
           "lens, standard [95% CI]": interval_text(s["lens_delta"], s["lens_ci_low"], s["lens_ci_high"], True)}
    if last in swp.index:
        w = swp.loc[last]
        row["lens, swapped [95% CI]"] = interval_text(w["lens_delta"], w["lens_ci_low"], w["lens_ci_high"], True)
        row["reads as"] = reading(s, w)
        both = std.index.intersection(swp.index)
        readings = [reading(std.loc[layer], swp.loc[layer]) for layer in both]
        row["layers: decision / token"] = f"{readings.count('decision')} / {readings.count('token preference')}"
    return row, s


def adl_overview(differences: pd.DataFrame) -> pd.DataFrame:
    """Per (fine-tune, reference), the IPD's decision position at the last layer, pooled over
    states: the difference's size relative to the reference's activations (95% CI) and to the
    noise norm, its lens in each labelling and how it reads; how many layers read a decision or
    a token; and the same size on the unrelated prompts (the control)."""
    d = pooled(differences[differences["position_class"] == "decision"])
    rows = []
    for (model, reference), g in d.groupby(["model", "reference"], sort=False):
        ipd = g[g["context"] == REFERENCE]
        read = lens_columns(ipd)
        if read is None:
            continue
        lens, s = read
        row = {"fine-tune": model, "reference": reference, "IPD prompts": lens.pop("IPD prompts"),
               "last layer: |diff| / |activation| [95% CI]": interval_text(
                   s["relative_norm"], s["norm_ci_low"] / s["reference_norm"], s["norm_ci_high"] / s["reference_norm"]),
               "/ noise norm": s["norm"] / s["noise_norm"] if s["noise_norm"] > 0 else math.nan, **lens}
        unrelated = g[g["context"].str.startswith("unrelated_") & (g["layer"] == s.name)]
        row["unrelated prompts: |diff| / |activation|"] = (
            fmt(unrelated["relative_norm"].mean()) if len(unrelated) else "no unrelated prompts")
        rows.append(row)
    return pd.DataFrame(rows)


def steering_summary(g: pd.DataFrame) -> dict:
    """One steering run's alpha = 1 rows: the layer that moves delta most in the expected
    direction, its mean change with a 95% interval over prompts, beside the random directions'
    mean |change|, and the share of prompts flipped."""
    from ..stats import mean_ci

    main = g[g["direction"] == "mean difference"]
    sign = int(main["expected_sign"].iloc[0])
    by_layer = main.groupby("layer")["delta_change"].mean() * sign
    best = int(by_layer.idxmax())
    values = main[main["layer"] == best]["delta_change"]
    mean, lo, hi = mean_ci(values.to_numpy())
    rand = g[(g["direction"] != "mean difference") & (g["layer"] == best)]["delta_change"].abs().mean()
    flips = main[main["layer"] == best]["flipped"].astype(str).str.lower().eq("true").mean()
    return {"expected sign": f"{sign:+d}", "best layer": best, "delta change [95% CI]": interval_text(mean, lo, hi, True),
            "random: mean |change|": rand, "flipped": flips, "prompts": len(values)}


def steering_overview(steering: pd.DataFrame) -> pd.DataFrame:
    """Per pair, steered by the difference pooled over states: steering_summary."""
    one = steering[(steering["alpha"] == 1.0) & (steering["steering"].map(steering_state) == ALL_STATES)]
    return pd.DataFrame([{"steering (reference steered)": name, **steering_summary(g)}
                         for name, g in one.groupby("steering", sort=False)])


def state_overview(differences: pd.DataFrame, steering: pd.DataFrame | None) -> pd.DataFrame:
    """Per (fine-tune, reference, state) of the IPD's decision position: the state's difference
    read at the last layer in both labellings (lens_columns) and, where it was steered, the
    reference steered on that state's prompts by it (steering_summary)."""
    if "state" not in differences.columns:
        return pd.DataFrame()
    d = differences[(differences["position_class"] == "decision") & (differences["context"] == REFERENCE)
                    & (differences["state"] != ALL_STATES)]
    one = steering[steering["alpha"] == 1.0] if steering is not None and len(steering) else None
    rows = []
    for (model, reference, state), g in d.groupby(["model", "reference", "state"], sort=False):
        read = lens_columns(g)
        if read is None:
            continue
        row = {"fine-tune": model, "reference": reference, "state": state, **read[0]}
        run = one[one["steering"] == steering_name(model, reference, state)] if one is not None else ()
        if len(run):
            summary = steering_summary(run)
            row.update({"steered: best layer": summary["best layer"],
                        "delta change [95% CI]": summary["delta change [95% CI]"],
                        "random: mean |change|": summary["random: mean |change|"], "flipped": summary["flipped"]})
        rows.append(row)
    return pd.DataFrame(rows)


def cosine_overview(cosines: pd.DataFrame) -> pd.DataFrame:
    """The fine-tunes' IPD differences against the base (standard labelling), at the last layer
    and the middle one: cosine similarity of every pair."""
    c = pooled(cosines)
    c = c[(c["context"] == REFERENCE) & (c["labelling"] == "standard") & (c["model_a"] < c["model_b"])]
    if not len(c):
        return pd.DataFrame()
    last = int(c["layer"].max())
    layers = sorted({last // 2, last})
    rows = []
    for (reference, a, b), g in c.groupby(["reference", "model_a", "model_b"], sort=False):
        g = g.set_index("layer")["cosine"]
        rows.append({"reference": reference, "pair": f"{a} / {b}",
                     **{f"layer {layer}": g.get(layer, math.nan) for layer in layers}})
    return pd.DataFrame(rows)


def lora_overview(lora: pd.DataFrame) -> pd.DataFrame:
    """Per fine-tune: the share of the IPD difference (vs the base) inside the span of its
    adapter's B columns up to the layer, at the last layer and on average, beside a random direction's."""
    a = lora[lora["module"] == "all up to here"]
    rows = []
    for model, g in a.groupby("model", sort=False):
        last = g.loc[g["layer"].idxmax()]
        rows.append({"fine-tune": model, "B columns (last layer)": int(last["span_rank"]),
                     "in their span, last layer": last["span_fraction"],
                     "random direction": last["random_span_fraction"],
                     "mean over layers": g["span_fraction"].mean(),
                     "random, mean over layers": g["random_span_fraction"].mean()})
    return pd.DataFrame(rows)


def quality_overview(quality: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"model": quality["model"], "FVE held out": quality["fve_held_out"],
                         "FVE train": quality["fve_train"],
                         "PCA (as many components as L0), held out": quality["pca_fve_held_out"]})


def latent_overview(latents: pd.DataFrame, decisions: pd.DataFrame, causal: pd.DataFrame, n: int) -> pd.DataFrame:
    """The specific latents (not shared, not dead) that fire most at the decision, and those the
    causal check tested: where they are present, their correlation with each model's decision,
    and the causal check's effect beside the random directions'."""
    checked = set(causal["latent"]) if len(causal) else set()
    specific = latents[~latents["class"].isin(["shared", "dead"]) | latents["latent"].isin(checked)]
    specific = specific.sort_values("decision_mean_activation", ascending=False).head(max(n, len(checked)))
    rows = []
    for _, lat in specific.iterrows():
        j = int(lat["latent"])
        corr = decisions[decisions["latent"] == j]
        row = {"latent": j, "class": lat["class"], "present in": lat["present_in"],
               "fires at the decision": lat["decision_frequency"],
               "r with decision (per model)": ", ".join(
                   f"{r['model']} {interval_text(r['r'], r['ci_low'], r['ci_high'], True)}" for _, r in corr.iterrows())
               or "never fires at the decision"}
        c = causal[causal["latent"] == j] if len(causal) else causal
        if len(c):
            parts = []
            for (model, action), g in c.groupby(["model", "action"], sort=False):
                main = g[g["direction"] == "latent"]["delta_change"]
                rand = g[g["direction"] != "latent"]["delta_change"].abs().mean()
                parts.append(f"{action} in {model}: {fmt(main.mean(), signed=True)} (random {fmt(rand)})")
            row["causal: mean delta change"] = "; ".join(parts)
        rows.append(row)
    return pd.DataFrame(rows)


def diffing_section(doc: Document, inputs: Inputs, n_rows: int) -> None:
    """RQ5 (nothing when the diffing tables are not given)."""
    if not inputs.diffing:
        return
    doc.h(2, "RQ5: what did each fine-tune write?")
    doc.p("Model diffing reads the cached activations of every fine-tune beside the base and the strategic model on "
          "the same prompts. The activation-difference lens (ADL): each fine-tune's mean resid_post minus the "
          "reference's at the decision position, its size with a 95% bootstrap interval over prompts and beside the "
          "noise norm (what a difference without a common direction would measure), read through the final norm and "
          "unembedding in both labellings. Each labelling's lens is in its own Defect token: the same sign in both "
          "is a decision, opposite signs a token preference. A difference that reads as a token preference, or "
          "that is as large on the unrelated prompts, says what the fine-tune wrote, not where it decides.")
    for key, title, overview, text, empty in (
            ("differences", "The activation-difference lens", adl_overview,
             "The IPD's prompts at the decision position; 'layers: decision / token' counts the layers whose lens "
             "intervals exclude 0 in both labellings with the same / opposite signs. Pooled over the states the "
             "prompts show; \"By state\" below splits them.", ""),
            ("steering", "The difference as a steering direction", steering_overview,
             "The reference steered on the IPD prompts by the IPD's decision-position resid_pre difference at each "
             "layer (alpha = 1); the best layer is picked on the same prompts, so its interval is optimistic; "
             "random: directions of the same norm at that layer.", ""),
            ("differences", "By state: what a conditional policy wrote",
             lambda d: state_overview(d, read_table(inputs.diffing.get("steering"))),
             "Each state's IPD prompts alone (own and opponent's last moves, both labellings), at the decision "
             "position: a policy that cooperates in one state and defects in another (tit-for-tat) writes "
             "differences of opposite sign that the pooled mean cancels. Steered: the reference on that state's "
             "prompts by that state's resid_pre difference (alpha = 1, best layer picked on the same prompts, "
             "random directions of the same norm beside it).",
             "the IPD prompts show one state, or diffing.by_state is off"),
            ("cosines", "Do the fine-tunes write the same direction?", cosine_overview,
             "Cosine similarity of the decision-position differences (IPD, standard labelling, pooled over states).",
             ""),
            ("lora", "The difference and the adapters' own directions", lora_overview,
             "The share of the difference against the base inside the span of the adapter's o_proj and down_proj B "
             "columns of every layer up to it; a random direction's share is sqrt(rank / d).", "")):
        table_section(doc, title, inputs.diffing.get(key), text, overview, n_rows, f"diffing table ({key})", empty)
    tables = {k: read_table(inputs.diffing.get(k)) for k in CROSSCODER_PARTS}
    doc.h(3, "One crosscoder over the base and every fine-tune")
    quality, latents = tables["quality"], tables["latents"]
    if quality is None or latents is None:
        missing_file(doc, "crosscoder tables", inputs.diffing.get("quality"))
        return
    q = quality.iloc[0]
    counts = latents["class"].value_counts()
    doc.p(f"A BatchTopK crosscoder with {int(q['n_latents'])} latents (k = {int(q['k'])}, {int(q['steps'])} steps) on "
          f"resid_post at layer {int(q['layer'])} ({q['layer_reason']}): {int(q['tokens_train'])} training and "
          f"{int(q['tokens_held_out'])} held-out token positions ({int(q['prompts_train'])} and "
          f"{int(q['prompts_held_out'])} prompts; {int(q['positions_before_dedup'])} positions before repeated "
          f"prefixes were removed), mean L0 {fmt(q['l0_held_out'])} held out, {int(q['dead_latents'])} dead "
          "latents (never firing on the training tokens). "
          "Latent classes (present in a model when its decoder norm there is at least half its largest, or "
          "when Latent Scaling's error fit says that model's activations carry at least half of it): "
          + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".")
    doc.table(quality_overview(quality))
    if (quality["fve_held_out"] <= quality["pca_fve_held_out"]).any():
        doc.note("The crosscoder does not beat PCA with as many components on every model: its latents are not "
                 "a better basis than the principal directions at this data size.")
    decisions = tables["decisions"] if tables["decisions"] is not None else pd.DataFrame()
    causal = tables["causal"] if tables["causal"] is not None else pd.DataFrame()
    overview = latent_overview(latents, decisions, causal, n_rows)
    if not latents["class"].isin(["fine-tune-only", "moral-only", "game-only", "base-only", "other"]).any():
        doc.p("No latent is specific to any model: at this layer and data size every live latent is shared, so "
              "the crosscoder finds nothing the fine-tunes wrote that the base lacks outright.")
    if not overview.empty:
        doc.p("The specific latents that fire most at the decision, and those the causal check tested (the specific "
              "ones, else the live ones whose decoder leans most to the fine-tunes; Pearson r of the latent's "
              "decision-position activation with each model's delta, Fisher 95% interval; causal: the latent's "
              "decoder direction, scaled by its activation on each prompt, removed from each model that has it or "
              "added to the base at the decision position of the next layer's resid_pre, beside random directions "
              "of equal norm).")
        doc.table(overview)
