"""The few numbers a README or paper abstract quotes, generated from a finished run:
behaviour per model and scenario, and which components carry the moral fine-tuning.

    python -m interp_lib.report.headline results_smollm2 [config.smollm2.yaml]

prints Markdown: P(action2 | {action1, action2}) per model x scenario (mean over variants of
sigmoid(delta)); the strongest components of each experiment (mean delta_change over
scenarios, its noise floor, flips, circuits); and the components whose DLA moved most
between the strategic (or base) and the moral models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ..noise import largest_floor
from .document import Document, fmt, to_markdown
from .rq3 import MORAL_ROLES, dla_changes
from .rq_summary import dla_means, patch_component_table, resolve_roles

N_TOP = 3


def behaviour_table(decisions: pd.DataFrame, labels: dict | None = None) -> pd.DataFrame:
    """model x scenario: mean over variants of p_action2 (rows in the decisions' order,
    named by `labels`)."""
    p = decisions.groupby(["model", "scenario"], sort=False)["p_action2"].mean().unstack()
    p.index = [(labels or {}).get(m, m) for m in p.index]
    return p


def strongest_components(results: pd.DataFrame, n: int = N_TOP) -> pd.DataFrame:
    """An experiment's n components with the largest mean |delta_change| (patch_component_table)."""
    table = patch_component_table(results)
    return table.sort_values("mean |delta_change|", ascending=False, kind="stable").head(n)


def headline(results_dir: str | Path, config: dict) -> str:
    root = Path(results_dir)
    labels = {m: spec.get("label", m) for m, spec in config["models"].items()}
    doc = Document()
    doc.p("P(action2 | {action1, action2}) (action2 is Defect in the standard labelling and Cooperate "
          "in the `_swapped` scenarios), mean over the prompt variants, to 3 decimals "
          f"(`{root}/behavior/decisions.csv`):")
    behaviour = behaviour_table(pd.read_csv(root / "behavior/decisions.csv"), labels).round(3)
    doc.table(behaviour.reset_index(names="model"))
    out = [to_markdown(doc)]
    for name, exp in config.get("experiments", {}).items():
        results = pd.read_csv(root / f"patching/patch_results_{name}.csv")
        floor = largest_floor(results)
        circuits_path = root / f"patching/circuits_{name}.csv"
        circuits = pd.read_csv(circuits_path) if circuits_path.stat().st_size else pd.DataFrame()
        top = strongest_components(results)
        parts = [f"{c} {fmt(a)} ({fmt(m, signed=True)})"
                 for c, a, m in zip(top["component"], top["mean |delta_change|"], top["mean delta_change"])]
        n_prompts = results[["scenario", "variant"]].drop_duplicates().shape[0]
        flipped = int(circuits["flipped"].astype(bool).sum()) if "flipped" in circuits else 0
        size = circuits.loc[circuits["flipped"].astype(bool), "circuit_size"].mean() if flipped else float("nan")
        out.append(f"- **{name}** ({exp['source']} -> {exp['target']}, {results['positions'].iat[0]} positions): "
                   f"strongest single patches, mean |delta_change| (signed mean) {', '.join(parts)}; noise floor {fmt(floor)}; "
                   f"single patches that flip: {int(results['action_flipped'].astype(bool).sum())}; circuits "
                   f"that flip: {flipped} of {n_prompts} prompts" + (f", mean size {fmt(size)}." if flipped else "."))
    means, _ = dla_means(pd.read_csv(root / "dla/dla_full_results.csv"))
    roles = resolve_roles(config)  # the RQ summary's strategic / base / moral models
    moral = [roles[r] for r in MORAL_ROLES if roles.get(r) in means.columns]
    refs = [roles[r] for r in ("strategic", "base") if roles.get(r) in means.columns]
    if moral and refs:
        change = dla_changes(means, moral, refs)["mean |difference|"].sort_values(ascending=False, kind="stable")
        top = ", ".join(f"{c} {fmt(v)}" for c, v in change.head(N_TOP + 2).items())
        out.append(f"- **DLA change** (moral minus {' and '.join(refs)}, mean |difference| in logits over "
                   f"{len(moral) * len(refs)} pairs): {top}.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    from ..config import load_config

    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m interp_lib.report.headline RESULTS_DIR [CONFIG]")
    print(headline(sys.argv[1], load_config(sys.argv[2] if len(sys.argv) == 3 else None)))
