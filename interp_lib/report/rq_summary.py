"""The research-question summary (<results_dir>/rq_summary.md and .html), built from the
workflow's tables only: numbers and rankings, no conclusions. This module builds the
document and holds RQ1 and RQ2; the other sections are in their own modules of this package.

RQ1  suppression of selfish components: DLA of the strategic model's pro-Defect heads and
     MLPs in each moral model; patching strategic -> PT3 models (top components, flips,
     circuits).
RQ2  deontological vs utilitarian: cross-patching both ways, DLA difference.
RQ3  targeted fine-tuning: DLA change per component and layer, merged-weight change per
     module, layer and head, and components that rank high in both (rq3.py); steering
     by layer and probes (interventions.py).

Models enter through roles (the config's `roles`, overridable): a configuration with other
model names maps them here; a role whose model is not configured, an experiment that is
not configured and a table that is missing are named in the section that needs them.

Sign convention: delta = logit(D) - logit(C); a positive DLA contribution or delta change
is pro-Defect.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..noise import NOISE_MULTIPLE, below_noise, largest_floor
from .adapter_edits import adapter_edits_section
from .behaviour import behaviour_section
from .counterfactual import counterfactual_section
from .document import Document, fmt
from .inputs import Inputs, component_sort_key, missing_file, read_table, standard_rows
from .interactions import interactions_section
from .interventions import probe_section, steering_section
from .path_patching import path_patching_section
from .rq3 import MORAL_ROLES, rq3_section
from .diffing import diffing_section
from .transfer import transfer_section

PT3_ROLES = ("deontological", "utilitarian")  # RQ1 patching targets, RQ2 pair
N_ROWS = 10


def resolve_roles(config: dict, overrides: dict | None = None) -> dict:
    """role -> model: the config's `roles` (filled from the schema's defaults when the config
    is validated) updated with `overrides`; roles without a model are dropped."""
    roles = {**(config.get("roles") or {}), **(overrides or {})}
    return {role: model for role, model in roles.items() if model}


def relevant_experiments(experiments: dict, roles: dict) -> dict[str, list[str]]:
    """Configured experiments by the question that reads them (config order):
    "rq1": strategic -> a PT3 model, "rq2_forward": deontological -> utilitarian,
    "rq2_backward": utilitarian -> deontological."""
    pt3 = {roles.get(r) for r in PT3_ROLES} - {None}
    out = {"rq1": [], "rq2_forward": [], "rq2_backward": []}
    for name, exp in experiments.items():
        src, tgt = exp["source"], exp["target"]
        if src == roles.get("strategic") and tgt in pt3:
            out["rq1"].append(name)
        if src == roles.get("deontological") and tgt == roles.get("utilitarian"):
            out["rq2_forward"].append(name)
        if src == roles.get("utilitarian") and tgt == roles.get("deontological"):
            out["rq2_backward"].append(name)
    return out


def experiments_needed(experiments: dict, roles: dict) -> list[str]:
    """Every experiment the summary reads, once, in config order."""
    rel = relevant_experiments(experiments, roles)
    wanted = {e for names in rel.values() for e in names}
    return [e for e in experiments if e in wanted]


def dla_means(full: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(component x model table of mean contributions over all prompts, component metadata),
    heads and MLPs only (the embedding excluded)."""
    comps = full[full["kind"].isin(["head", "mlp"])]
    means = comps.pivot_table(index="component", columns="model", values="contribution", aggfunc="mean")
    means = means.loc[sorted(means.index, key=component_sort_key)]
    meta = comps.drop_duplicates("component").set_index("component")[["kind", "layer", "head"]].loc[means.index]
    return means, meta


def n_prompts(full: pd.DataFrame, model: str) -> int:
    return int(full.loc[full["model"] == model, ["scenario", "variant"]].drop_duplicates().shape[0])


def _col(model: str, labels: dict) -> str:
    return labels.get(model, model)


# --------------------------------------------------------------------------- analyses


def rq1_suppressed(means: pd.DataFrame, strategic: str, moral: list[str]) -> pd.DataFrame:
    """Components with mean contribution > 0 in `strategic` and lower in every `moral`
    model; reduction = strategic - moral. Ranked by the mean reduction over `moral`."""
    pro = means[means[strategic] > 0]
    reduced = pro[(pro[moral].lt(pro[strategic], axis=0)).all(axis=1)] if moral else pro.iloc[:0]
    out = pd.DataFrame({"component": reduced.index, strategic: reduced[strategic].to_numpy()})
    for m in moral:
        out[m] = reduced[m].to_numpy()
    for m in moral:
        out[f"reduction {m}"] = (reduced[strategic] - reduced[m]).to_numpy()
    out["mean reduction"] = out[[f"reduction {m}" for m in moral]].mean(axis=1) if moral else np.nan
    return out.sort_values("mean reduction", ascending=False, kind="stable").reset_index(drop=True)


def patch_component_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per component of one experiment: mean delta_change over all prompts (mean over
    variants per scenario, then over scenarios), mean |delta_change|, mean gap fraction,
    sign agreement across scenarios, single-patch flips; with a noise_floor column, whether
    the mean is outside the noise band (NOISE_MULTIPLE x the largest floor)."""
    per = (results.groupby(["component", "scenario"], sort=False)
           .agg(dc=("delta_change", "mean"), gap=("gap_fraction", "mean")).reset_index())
    rows = []
    for comp, g in per.groupby("component", sort=False):
        mean = g["dc"].mean()
        rows.append({"component": comp, "mean delta_change": mean, "mean |delta_change|": g["dc"].abs().mean(),
                     "mean gap_fraction": g["gap"].mean(),
                     "sign agreement": float(np.mean(np.sign(g["dc"]) == np.sign(mean))) if mean != 0 else 0.0,
                     "flips": int(results.loc[results["component"] == comp, "action_flipped"].astype(bool).sum())})
    out = pd.DataFrame(rows)
    floor = largest_floor(results)
    if math.isfinite(floor):
        out["above noise"] = ["yes" if not below_noise(v, floor) else "no (noise)" for v in out["mean delta_change"]]
    return out


CIRCUIT_TABLE_COLUMNS = ["circuit", "size", "kind", "prompts flipped", "scenarios"]


def _circuit_kind(g: pd.DataFrame) -> str:
    """"minimal", "minimal (pruned from greedy prefixes of 5, 6)", or "greedy" (not minimal
    or not checked): the circuit's kind over the prompts it flips. Tables without
    circuit_kind predate the minimality check: their circuits are greedy prefixes."""
    kinds = g["circuit_kind"].fillna("greedy") if "circuit_kind" in g else pd.Series("greedy", index=g.index)
    parts = []
    for kind in dict.fromkeys(kinds):
        sub = g[kinds == kind]
        if kind == "minimal" and "greedy_size" in sub:
            sizes = sorted({int(n) for n, m in zip(sub["greedy_size"], sub["circuit_size"]) if n > m})
            if sizes:
                kind += f" (pruned from greedy prefix{'es' if len(sizes) > 1 else ''} of {', '.join(map(str, sizes))})"
        parts.append(kind)
    return "; ".join(parts)


def circuit_table(circuits: pd.DataFrame) -> pd.DataFrame:
    """Distinct circuits (sets, components in model order) that flipped the target: size,
    kind (minimal: no member can be dropped; greedy: a ranking prefix), prompts, scenarios."""
    if circuits is None or circuits.empty or "flipped" not in circuits:
        return pd.DataFrame(columns=CIRCUIT_TABLE_COLUMNS)
    flipped = circuits[circuits["flipped"].astype(bool)].copy()
    if flipped.empty:
        return pd.DataFrame(columns=CIRCUIT_TABLE_COLUMNS)
    flipped["key"] = flipped["circuit"].fillna("").map(
        lambda c: ", ".join(sorted(filter(None, c.split(";")), key=component_sort_key)))
    rows = [{"circuit": key, "size": int(g["circuit_size"].iloc[0]), "kind": _circuit_kind(g),
             "prompts flipped": len(g), "scenarios": ", ".join(dict.fromkeys(g["scenario"]))}
            for key, g in flipped.groupby("key", sort=False)]
    return pd.DataFrame(rows).sort_values(["prompts flipped", "size"], ascending=[False, True],
                                          kind="stable").reset_index(drop=True)


def _excluded_note(circ: pd.DataFrame) -> str:
    """How many strong single patches were left out of the search for pushing away
    (excluded_opposing, summed over prompts; nothing for tables that predate it)."""
    if "excluded_opposing" not in circ:
        return ""
    n = int(circ["excluded_opposing"].fillna(0).sum())
    return f"; left out for pushing away from the source's action: {n} of the prompts' strongest single patches"


def cross_patching(fwd: pd.DataFrame, bwd: pd.DataFrame, n: int) -> tuple[pd.DataFrame, dict]:
    """Components in the top n by mean |delta_change| in both directions, and over all
    components: how many have opposite / equal signs, and the Pearson correlation of the
    two directions' mean delta_change."""
    a = fwd.set_index("component")
    b = bwd.set_index("component")
    common = a.index.intersection(b.index)
    rank_a = a["mean |delta_change|"].rank(ascending=False, method="first")
    rank_b = b["mean |delta_change|"].rank(ascending=False, method="first")
    both = [c for c in common if rank_a[c] <= n and rank_b[c] <= n]
    both.sort(key=lambda c: rank_a[c] + rank_b[c])
    table = pd.DataFrame({
        "component": both,
        "rank forward": [int(rank_a[c]) for c in both], "rank backward": [int(rank_b[c]) for c in both],
        "mean delta_change forward": [a.at[c, "mean delta_change"] for c in both],
        "mean delta_change backward": [b.at[c, "mean delta_change"] for c in both],
        "signs": ["opposite" if np.sign(a.at[c, "mean delta_change"]) * np.sign(b.at[c, "mean delta_change"]) < 0
                  else "same" for c in both],
    })
    x = a.loc[common, "mean delta_change"].to_numpy()
    y = b.loc[common, "mean delta_change"].to_numpy()
    prod = np.sign(x) * np.sign(y)
    stats = {"n": len(common), "opposite": int((prod < 0).sum()), "same": int((prod > 0).sum()),
             "pearson": float(np.corrcoef(x, y)[0, 1]) if len(common) > 1 and x.std() > 0 and y.std() > 0
             else float("nan")}
    return table, stats


# --------------------------------------------------------------------------- document


def build_summary(config: dict, inputs: Inputs, roles: dict | None = None, n_rows: int = N_ROWS,
                  labels: dict | None = None) -> Document:
    """The whole summary as a Document (render with to_markdown / to_html)."""
    roles = resolve_roles(config, roles)
    configured = list(config["models"])
    labels = labels or {m: config["models"][m].get("label") or m for m in configured}
    role_model = {r: m for r, m in roles.items() if m in configured}
    missing_roles = {r: m for r, m in roles.items() if m not in configured}
    doc = Document()
    doc.h(1, "Research-question summary")
    doc.p("Generated by `interp_lib.report.rq_summary` from the workflow's tables; every number is computed from the "
          "file named before its table. delta = logit(D) - logit(C) at the decision position: a positive DLA "
          "contribution or delta change is pro-Defect. DLA contributions are means over all prompts (every "
          f"scenario and prompt variant), in pre-softcap logit units. Tables show at most {n_rows} rows.")
    doc.p("Roles of the configured models (the config's `roles` key; the rule's `roles` parameter overrides "
          "it):")
    doc.table(pd.DataFrame({"role": list(roles), "model": list(roles.values()),
                            "configured": [m in configured for m in roles.values()],
                            "label": [labels.get(m, "") for m in roles.values()]}))
    if missing_roles:
        doc.note("roles without a configured model: " + ", ".join(f"{r} ({m})" for r, m in missing_roles.items()))

    decisions = read_table(inputs.decisions)
    if decisions is not None and "labelling" in decisions.columns:
        inputs.swapped_scenarios = set(decisions.loc[decisions["labelling"] == "swapped", "scenario"])
    if inputs.swapped_scenarios:
        doc.p("RQ tables read the standard labelling's prompts only (action1 = Cooperate); the swapped-label "
              f"scenarios ({', '.join(sorted(inputs.swapped_scenarios))}) enter the label bias.")
    full = standard_rows(inputs, read_table(inputs.dla))
    if full is None or full.empty:
        means = None
    else:
        means, _ = dla_means(full)
    weights = read_table(inputs.weights)
    if weights is not None and not weights.empty:
        weights["head"] = weights["head"].astype("Int64")
    rel = relevant_experiments(config.get("experiments", {}), role_model)

    behaviour_section(doc, inputs, configured, labels)
    _rq1(doc, inputs, means, full, role_model, rel, n_rows)
    _rq2(doc, inputs, means, role_model, rel, n_rows)
    interactions_section(doc, inputs, role_model, n_rows)
    measures = rq3_section(doc, inputs, means, weights, role_model, n_rows)
    steering_section(doc, inputs, measures, n_rows)
    probe_section(doc, inputs, n_rows)
    counterfactual_section(doc, inputs, n_rows)
    path_patching_section(doc, inputs, n_rows)
    adapter_edits_section(doc, inputs, config, n_rows)
    transfer_section(doc, inputs, n_rows)
    diffing_section(doc, inputs, n_rows)
    return doc


def _rq1(doc, inputs, means, full, roles, rel, n_rows) -> None:
    doc.h(2, "RQ1: suppression of pro-Defect components by moral fine-tuning")
    strategic = roles.get("strategic")
    moral = [roles[r] for r in MORAL_ROLES if r in roles]
    doc.h(3, "Direct logit attribution")
    if strategic is None:
        doc.note("no configured model has the role `strategic` (default PT2_COREDe).")
    elif means is None:
        missing_file(doc, "DLA table", inputs.dla)
    else:
        present = [m for m in moral if m in means.columns]
        absent = [m for m in moral if m not in means.columns]
        if strategic not in means.columns:
            doc.note(f"{inputs.dla} has no rows of the strategic model {strategic}.")
        elif not present:
            doc.note(f"{inputs.dla} has no rows of a moral model ({', '.join(moral) or 'none configured'}).")
        else:
            if absent:
                doc.note(f"{inputs.dla} has no rows of {', '.join(absent)}; compared with {', '.join(present)} only.")
            table = rq1_suppressed(means, strategic, present)
            n_pro = int((means[strategic] > 0).sum())
            doc.p(f"Heads and MLPs with a positive (pro-Defect) mean DLA contribution in {strategic} whose mean "
                  f"contribution is lower in every moral model ({', '.join(present)}), ranked by the mean "
                  f"reduction ({strategic} minus moral model) over the moral models; from `{inputs.dla}` "
                  f"({n_prompts(full, strategic)} prompts per model). {len(table)} of the {n_pro} pro-Defect "
                  f"components of {strategic} (of {len(means)} heads and MLPs) are reduced in every moral model.")
            doc.table(table.head(n_rows), signed=[c for c in table.columns if c != "component"])

    doc.h(3, f"Activation patching {strategic or 'strategic'} -> PT3 models")
    if not rel["rq1"]:
        pt3 = [roles[r] for r in PT3_ROLES if r in roles]
        doc.note(f"no configured experiment with source {strategic or '(strategic)'} and target "
                 f"{' or '.join(pt3) or '(a PT3 model)'}.")
    for exp in rel["rq1"]:
        _patching_experiment(doc, inputs, exp, n_rows, by="signed")


def _patching_experiment(doc, inputs, exp, n_rows, by: str):
    res = standard_rows(inputs, read_table(inputs.patch_results.get(exp)))
    doc.h(4, f"Experiment {exp}")
    if res is None or res.empty:
        missing_file(doc, f"patching results of {exp}", inputs.patch_results.get(exp))
        return None
    source, target = res["source"].iat[0], res["target"].iat[0]
    comps = patch_component_table(res)
    n_prompts_ = res[["scenario", "variant"]].drop_duplicates().shape[0]
    if by == "signed":
        comps = comps.sort_values("mean delta_change", ascending=False, kind="stable")
        how = ("by mean delta_change (largest first: patching the component from the source moves the target "
               "most towards Defect)")
    else:
        comps = comps.sort_values("mean |delta_change|", ascending=False, kind="stable")
        how = "by mean |delta_change|"
    comps = comps.reset_index(drop=True)
    doc.p(f"Components patched one at a time from {source} into {target}, ranked {how}; means over "
          f"{res['scenario'].nunique()} scenarios of the per-scenario means over variants; sign agreement = share of "
          f"scenarios whose mean has the overall sign; flips = prompts where the single patch flips {target}'s "
          f"action; from `{inputs.patch_results[exp]}`.")
    doc.table(comps.head(n_rows), signed=["mean delta_change"])
    if "above noise" in comps:
        floor = largest_floor(res)
        n_above = int((comps["above noise"] == "yes").sum())
        mode = res["precision"].iat[0] if "precision" in res else "the run's"
        doc.p(f"Noise floor (largest deviation of patches that must change nothing, {mode} precision): "
              f"{fmt(floor)}; components whose mean is within {NOISE_MULTIPLE:g} x that ({fmt(NOISE_MULTIPLE * floor)}) "
              f"are marked 'no (noise)' and their order is not meaningful: {n_above} of {len(comps)} components "
              "are above it.")
    flips = res[res["action_flipped"].astype(bool)]
    doc.p(f"Single-component patches that flip {target}'s action: {len(flips)} of {len(res)} "
          f"({flips['component'].nunique()} distinct components, {n_prompts_} prompts).")
    circ = standard_rows(inputs, read_table(inputs.circuits.get(exp)))
    if circ is None:
        missing_file(doc, f"circuits of {exp}", inputs.circuits.get(exp))
    elif circ.empty:
        doc.p(f"Circuit discovery was not run for {exp} (`{inputs.circuits[exp]}` is empty).")
    else:
        table = circuit_table(circ)
        n_flip = int(circ["flipped"].astype(bool).sum())
        sizes = circ.loc[circ["flipped"].astype(bool), "circuit_size"]
        mean_size = fmt(float(sizes.mean())) if len(sizes) else "n/a"
        how = ("searched greedily over the components whose single patch moves it toward the source's action, "
               "then pruned until no member can be dropped: kind minimal" if "circuit_kind" in circ else
               "greedy prefixes of the ranking by |single-patch delta change|, a table written before circuits "
               "were checked for minimality")
        doc.p(f"Circuits (sets of components whose joint patch flips {target}'s action; {how}): "
              f"found for {n_flip} of {len(circ)} prompts, mean size "
              f"{mean_size}{_excluded_note(circ)}; distinct circuits ranked by the number of prompts they flip; "
              f"from `{inputs.circuits[exp]}`.")
        if len(table):
            doc.table(table.head(n_rows))
    return comps


def _rq2(doc, inputs, means, roles, rel, n_rows) -> None:
    doc.h(2, "RQ2: deontological vs utilitarian")
    de, ut = roles.get("deontological"), roles.get("utilitarian")
    doc.h(3, "Cross-patching")
    tables = {}
    for direction, src, tgt in (("forward", de, ut), ("backward", ut, de)):
        names = rel[f"rq2_{direction}"]
        if not names:
            doc.note(f"no configured experiment with source {src or '(deontological)'} and target "
                     f"{tgt or '(utilitarian)'}.")
            continue
        if len(names) > 1:
            doc.p(f"Several experiments {src} -> {tgt} ({', '.join(names)}); the first is used.")
        tables[direction] = (names[0], _patching_experiment(doc, inputs, names[0], n_rows, by="abs"))
    if all(d in tables and tables[d][1] is not None for d in ("forward", "backward")):
        (fwd_name, fwd), (bwd_name, bwd) = tables["forward"], tables["backward"]
        both, stats = cross_patching(fwd, bwd, n_rows)
        doc.h(4, "Both directions")
        doc.p(f"Components in the top {n_rows} by mean |delta_change| of both {fwd_name} (forward) and {bwd_name} "
              f"(backward), ordered by the sum of their ranks, with the sign relation of the two mean delta changes; "
              f"from the two patch_results files above. {len(both)} components qualify.")
        if len(both):
            doc.table(both, signed=["mean delta_change forward", "mean delta_change backward"])
        doc.p(f"Over all {stats['n']} components patched both ways: {stats['opposite']} have opposite signs of mean "
              f"delta_change in the two directions, {stats['same']} the same sign; Pearson correlation of the two "
              f"directions' mean delta_change: {fmt(stats['pearson'])}.")
    doc.h(3, "DLA difference")
    if de is None or ut is None:
        doc.note("the roles `deontological` and `utilitarian` need configured models.")
    elif means is None:
        missing_file(doc, "DLA table", inputs.dla)
    elif de not in means.columns or ut not in means.columns:
        doc.note(f"{inputs.dla} lacks rows of {' and '.join(m for m in (de, ut) if m not in means.columns)}.")
    else:
        diff = pd.DataFrame({"component": means.index, de: means[de].to_numpy(), ut: means[ut].to_numpy()})
        diff[f"{de} - {ut}"] = diff[de] - diff[ut]
        diff = diff.reindex(diff[f"{de} - {ut}"].abs().sort_values(ascending=False, kind="stable").index)
        doc.p(f"Mean DLA contribution per component in {de} and {ut} and their difference, ranked by "
              f"|{de} - {ut}|; from `{inputs.dla}`. Sum of the differences over all heads: "
              f"{fmt(float(diff.loc[diff['component'].str.contains('H'), f'{de} - {ut}'].sum()), True)}, over all "
              f"MLPs: {fmt(float(diff.loc[diff['component'].str.endswith('_MLP'), f'{de} - {ut}'].sum()), True)}.")
        doc.table(diff.head(n_rows), signed=[de, ut, f"{de} - {ut}"])


__all__ = [
    "PT3_ROLES",
    "build_summary",
    "circuit_table",
    "cross_patching",
    "dla_means",
    "experiments_needed",
    "patch_component_table",
    "relevant_experiments",
    "resolve_roles",
    "rq1_suppressed",
]
