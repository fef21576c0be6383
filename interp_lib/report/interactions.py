"""The component-interaction section of the research-question summary: do two models (first of
all the deontological and the utilitarian one) wire the same components differently? Read
from interactions/summary.csv and interactions/differences.csv
(`interp_lib.analyses.interactions`)."""

from __future__ import annotations

import math

import pandas as pd

from .document import Document, fmt
from .inputs import Inputs, missing_file, read_table


def _interval(row) -> str:
    text = fmt(row["difference"], True)
    if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]):
        text += f" [{fmt(row['ci_low'], True)}, {fmt(row['ci_high'], True)}]"
    return text


def _limit(value) -> str:
    """A detectable |difference| (above 2: none can be detected)."""
    if not math.isfinite(value):
        return "n/a"
    return fmt(value) + (" (none: > 2)" if value > 2 else "")


def interactions_section(doc: Document, inputs: Inputs, roles: dict, n_rows: int) -> None:
    """Per compared pair: pairs of components whose correlation across prompts differs beyond
    the permutation null after BH, and what N prompts can show; the deontological vs
    utilitarian pair answered in words."""
    doc.h(3, "Component interactions: the same components, wired differently?")
    summary = read_table(inputs.interactions_summary)
    if summary is None or summary.empty:
        missing_file(doc, "component interaction summary", inputs.interactions_summary)
        return
    first = summary.iloc[0]
    n, fdr = int(first["n_prompts"]), float(first["fdr"])
    doc.p(f"Pearson correlation across all {n} prompts (every variant of every scenario, both labellings) of two "
          "components' signed DLA contributions at the decision position, per model; compared between two models "
          "as r_a - r_b on the same prompts, with a 95% bootstrap interval over prompts (resampled jointly for both "
          "models) and a permutation null (on each prompt the two models' contributions exchanged at random), "
          f"two-sided p per pair of components; Benjamini-Hochberg at q <= {fdr:g} over one comparison's pairs. "
          f"With N = {n} prompts the sampling SD of r is about (1 - r^2) / sqrt(N - 1) = "
          f"{fmt(1 / math.sqrt(max(n - 1, 1)))} near r = 0. Detectable |difference|: the |r_a - r_b| a lone pair "
          "must exceed to pass BH (z at fdr / (2 pairs tested)) times the SD of a difference of two independent r near "
          "0, sqrt(2 / (N - 1)), and times the permutation null's median SD; fewest passing: BH passes pairs at the "
          "smallest permutation p, 1 / (1 + permutations), only when at least that many pass together. From "
          f"`{inputs.interactions_summary}`.")
    centring = first.get("centring", "none")
    if centring == "labelling":
        doc.p("Each labelling's mean contribution was removed first (`analysis.interaction_centring: labelling`): r "
              f"is how components co-vary within a labelling ({int(first['n_groups'])} groups, so about "
              f"N - {int(first['n_groups'])} degrees of freedom).")
    elif int(first.get("n_labellings", 1)) > 1:
        doc.p("The prompts hold both labellings and are correlated as they are. The readout flips with the labelling "
              "(for a swapped prompt the Defect token is action1), so a component that writes a token rather than a "
              "meaning changes sign between the labellings: r of two such components is close to +-1 whatever "
              "else they do, and a difference between models then mostly says that a component's sign differs "
              "(the DLA difference above). `analysis.interaction_centring: labelling` correlates within "
              "labellings.")
    table = pd.DataFrame({
        "model a": summary["model_a"], "model b": summary["model_b"], "prompts": summary["n_prompts"],
        "pairs tested": summary["n_tested"], "permutations": summary["n_permutations"],
        "fewest passing": summary["min_discoveries"],
        "detectable (N)": [_limit(v) for v in summary["detectable_difference"]],
        "detectable (null)": [_limit(v) for v in summary["detectable_difference_null"]],
        "largest |difference|": summary["max_abs_difference"], "at": summary["max_difference_pair"],
        "pairs passing FDR": summary["n_significant"]})
    doc.table(table)
    constant = [f"{r.model_a} vs {r.model_b}: {r.constant_components}" for r in summary.itertuples()
                if isinstance(r.constant_components, str) and r.constant_components]
    if constant:
        doc.p("Components constant over the prompts (their correlations are NaN and untested): "
              + "; ".join(constant) + ".")
    de, ut = roles.get("deontological"), roles.get("utilitarian")
    row = summary[((summary["model_a"] == de) & (summary["model_b"] == ut))
                  | ((summary["model_a"] == ut) & (summary["model_b"] == de))]
    if de is None or ut is None or row.empty:
        doc.note("no comparison of the deontological and the utilitarian model (roles `deontological`, "
                 "`utilitarian`) in the interaction summary.")
        return
    row = row.iloc[0]
    k = int(row["n_significant"])
    limit = row["detectable_difference"]
    if int(row["n_tested"]) == 0:
        doc.p(f"Do {de} and {ut} wire the same components differently? No pair of components could be tested "
              f"(too few prompts, {n}, or constant components): the data cannot say.")
        return
    if k == 0:
        doc.p(f"Do {de} and {ut} wire the same components differently? No pair of components' correlation "
              f"differs between them beyond the permutation null after Benjamini-Hochberg (0 of "
              f"{int(row['n_tested'])} pairs; largest |difference| {fmt(row['max_abs_difference'])} at "
              f"{row['max_difference_pair']}). This does not show that they are wired alike: with {n} prompts only "
              f"differences of about {_limit(limit)} or more could pass alone, and with "
              f"{int(row['n_permutations'])} permutations at least {fmt(row['min_discoveries'])} pairs must pass "
              "together.")
    else:
        doc.p(f"Do {de} and {ut} wire the same components differently? {k} of {int(row['n_tested'])} pairs of "
              f"components differ beyond the permutation null after Benjamini-Hochberg at q <= {fdr:g}; the largest "
              f"by |difference| below (with {n} prompts, differences below about {_limit(limit)} could not have "
              "passed alone).")
    diff = read_table(inputs.interactions_differences)
    if diff is None or diff.empty:
        missing_file(doc, "component interaction differences", inputs.interactions_differences)
        return
    sel = diff[(diff["model_a"] == row["model_a"]) & (diff["model_b"] == row["model_b"])]
    sel = sel.reindex(sel["difference"].abs().sort_values(ascending=False, kind="stable").index).head(n_rows)
    doc.p(f"Largest |r({row['model_a']}) - r({row['model_b']})|, with the 95% bootstrap interval, permutation p and BH "
          f"q; from `{inputs.interactions_differences}`.")
    doc.table(pd.DataFrame({
        "component a": sel["component_a"], "component b": sel["component_b"], f"r {row['model_a']}": sel["r_a"],
        f"r {row['model_b']}": sel["r_b"], "difference": [_interval(r) for _, r in sel.iterrows()],
        "p": sel["p_perm"], "q": sel["q_fdr"], "passes FDR": sel["significant"].astype(bool)}),
        signed=[f"r {row['model_a']}", f"r {row['model_b']}"])
