"""RQ3 of the research-question summary: where moral fine-tuning changed the model (DLA
change, merged-weight change, candidates ranked by both). Where intervening on it moves the
decision (steering by layer) and where the decision becomes linearly readable (probes)
follow in interventions.py.

Sign convention: delta = logit(D) - logit(C); a positive DLA contribution or delta change
is pro-Defect.
"""

from __future__ import annotations

import pandas as pd

from .inputs import component_sort_key, missing_file

MORAL_ROLES = ("deontological", "utilitarian", "game_deontological")


def dla_changes(means: pd.DataFrame, moral: list[str], references: list[str]) -> pd.DataFrame:
    """Per component: mean contribution of each moral model minus each reference model
    (columns "M - R"), and "mean |difference|" over those columns."""
    out = pd.DataFrame(index=means.index)
    for ref in references:
        for m in moral:
            out[f"{m} - {ref}"] = means[m] - means[ref]
    out["mean |difference|"] = out.abs().mean(axis=1)
    return out


def weight_component_change(weights: pd.DataFrame, models: list[str]) -> pd.Series:
    """Per component, the mean over `models` of its relative weight change: a head L{l}H{h}
    its o_proj columns W_O[h]; an MLP L{l}_MLP gate/up/down_proj pooled."""
    from ..analyses.weight_deltas import MLP_MODULES, head_table, pooled

    w = weights[weights["model"].isin(models)]
    heads = head_table(w)
    head_change = heads.assign(component=[f"L{int(l)}H{int(h)}" for l, h in zip(heads["layer"], heads["head"])])
    mlp = pooled(w[w["module"].isin(MLP_MODULES)], ["model", "layer"])
    mlp = mlp.assign(component=[f"L{int(l)}_MLP" for l in mlp["layer"]])
    both = pd.concat([head_change[["component", "model", "relative_delta"]],
                      mlp[["component", "model", "relative_delta"]]], ignore_index=True)
    return both.groupby("component")["relative_delta"].mean()


def candidates(dla_change: pd.Series, weight_change: pd.Series, n: int) -> pd.DataFrame:
    """Components ranked by both measures; ordered by the worse of the two ranks, then by
    their sum; the first n."""
    common = dla_change.index.intersection(weight_change.index)
    d = dla_change[common].rank(ascending=False, method="min").astype(int)
    w = weight_change[common].rank(ascending=False, method="min").astype(int)
    out = pd.DataFrame({"component": common, "DLA change": dla_change[common].to_numpy(), "DLA rank": d.to_numpy(),
                        "weight change": weight_change[common].to_numpy(), "weight rank": w.to_numpy()})
    out["worse rank"] = out[["DLA rank", "weight rank"]].max(axis=1)
    out["_sum"] = out["DLA rank"] + out["weight rank"]
    out = out.sort_values(["worse rank", "_sum"], kind="stable").drop(columns="_sum").head(n)
    return out.reset_index(drop=True)


def rq3_section(doc, inputs, means, weights, roles, n_rows) -> dict[str, pd.Series]:
    """Writes the section; returns the per-layer measures (name -> value by layer: DLA change,
    weight change) that the steering section ranks the layers by beside its own."""
    doc.h(2, "RQ3: where moral fine-tuning changed the model")
    moral = [roles[r] for r in MORAL_ROLES if r in roles]
    refs = [roles[r] for r in ("strategic", "base") if r in roles]
    dla_change = None
    measures: dict[str, pd.Series] = {}  # per-layer rankings: name -> value by layer
    doc.h(3, "DLA change per component")
    if means is None:
        missing_file(doc, "DLA table", inputs.dla)
    else:
        m_present = [m for m in moral if m in means.columns]
        r_present = [r for r in refs if r in means.columns]
        if not m_present or not r_present:
            doc.note(f"{inputs.dla} needs rows of a moral model ({', '.join(moral) or 'none configured'}) and of "
                     f"{' or '.join(refs) or 'a strategic or base model'}.")
        else:
            ch = dla_changes(means, m_present, r_present)
            dla_change = ch["mean |difference|"]
            ranked = ch.sort_values("mean |difference|", ascending=False, kind="stable")
            doc.p(f"Mean DLA contribution of each moral model minus that of {' and of '.join(r_present)}, per "
                  f"component, ranked by the mean |difference| over these {len(ch.columns) - 1} columns; from "
                  f"`{inputs.dla}`.")
            doc.table(ranked.head(n_rows).reset_index(names="component"),
                      signed=[c for c in ch.columns if c != "mean |difference|"])
            layer = pd.DataFrame({"layer": [component_sort_key(c)[0] for c in ch.index],
                                  "kind": ["MLP" if c.endswith("_MLP") else "heads" for c in ch.index],
                                  "v": ch["mean |difference|"].to_numpy()})
            per = layer.pivot_table(index="layer", columns="kind", values="v", aggfunc="sum").fillna(0.0)
            per = per.rename(columns={"heads": "heads (sum)", "MLP": "MLP"})
            per["layer total"] = per.sum(axis=1)
            measures["DLA change"] = per["layer total"].copy()
            per["share of total"] = per["layer total"] / per["layer total"].sum()
            per = per.sort_values("layer total", ascending=False, kind="stable").reset_index()
            doc.p("The same mean |difference| summed per layer (its heads, its MLP), ranked by the layer total; "
                  f"from `{inputs.dla}`.")
            doc.table(per.head(max(n_rows, 0)))

    doc.h(3, "Merged-weight change")
    weight_change = None
    if weights is None:
        missing_file(doc, "weight-delta table", inputs.weights)
    elif weights.empty:
        doc.note(f"{inputs.weights} is empty: no configured fine-tuned model has a reference model without an "
                 "adapter on the same base.")
    else:
        from ..analyses.weight_deltas import head_table, module_table, pooled

        compared = list(dict.fromkeys(weights["model"]))
        m_present = [m for m in moral if m in compared] or compared
        if not [m for m in moral if m in compared]:
            doc.note(f"{inputs.weights} has no moral model ({', '.join(moral)}); ranked over {', '.join(compared)}.")
        ref = ", ".join(dict.fromkeys(weights["reference"].astype(str))) if "reference" in weights else "base"
        rank_by = f"the mean over {', '.join(m_present)}"

        def ranked(table):
            """Adds the mean over the moral models and sorts by it, largest first."""
            table["mean (moral)"] = table[m_present].mean(axis=1)
            return table.sort_values("mean (moral)", ascending=False, kind="stable").reset_index()

        mods = module_table(weights)
        piv = ranked(mods.pivot_table(index=["layer", "module"], columns="model", values="relative_delta",
                                      sort=False)[compared])
        doc.p(f"Relative Frobenius change ||W - W_ref|| / ||W_ref|| of each layer's modules against {ref}, ranked "
              f"by {rank_by}; from `{inputs.weights}`.")
        doc.table(piv.head(n_rows))

        per_layer = ranked(pooled(weights, ["model", "layer"]).pivot_table(index="layer", columns="model",
                                                                            values="relative_delta")[compared])
        doc.p(f"Relative change of each whole layer (the seven modules pooled: sqrt of summed squared norms), "
              f"ranked by {rank_by}; from `{inputs.weights}`.")
        doc.table(per_layer.head(n_rows))
        measures["weight change"] = per_layer.set_index("layer")["mean (moral)"]

        per_module = ranked(pooled(weights, ["model", "module"]).pivot_table(index="module", columns="model",
                                                                              values="relative_delta")[compared])
        doc.p(f"Relative change of each module type pooled over layers, ranked by {rank_by}; from "
              f"`{inputs.weights}`.")
        doc.table(per_module)

        heads = head_table(weights)
        if len(heads):
            hp = heads.assign(component=[f"L{int(l)}H{int(h)}" for l, h in zip(heads["layer"], heads["head"])])
            hp = hp.pivot_table(index="component", columns="model", values="relative_delta", sort=False)[compared]
            hp["mean (moral)"] = hp[m_present].mean(axis=1)
            hp = hp.sort_values("mean (moral)", ascending=False, kind="stable").reset_index()
            doc.p(f"Relative change of each head's output matrix W_O[h] (its columns of o_proj), ranked by "
                  f"{rank_by}; from `{inputs.weights}`.")
            doc.table(hp.head(n_rows))
        weight_change = weight_component_change(weights, m_present)

    doc.h(3, "Candidates for targeted fine-tuning")
    if dla_change is None or weight_change is None:
        doc.note("needs both the DLA change and the weight change above.")
    else:
        cand = candidates(dla_change, weight_change, n_rows)
        n_common = len(dla_change.index.intersection(weight_change.index))
        doc.p(f"The {n_common} heads and MLPs ranked (1 = largest) by DLA change (mean |difference| above) and by "
              "weight change (a head: its W_O[h]; an MLP: gate/up/down_proj pooled; relative change, mean over the "
              f"moral models), ordered by the worse of the two ranks; from `{inputs.dla}` and `{inputs.weights}`.")
        doc.table(cand)
    return measures
