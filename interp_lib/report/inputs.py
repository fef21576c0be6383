"""Shared pieces of the research-question summary: which tables it reads (Inputs), how it
reads them, and how a cell is written."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .document import Document, fmt


@dataclass
class Inputs:
    """Paths of the tables the summary reads (None or a missing file = not available)."""

    dla: str | None = None
    decisions: str | None = None
    weights: str | None = None
    patch_results: dict = field(default_factory=dict)  # experiment -> path
    circuits: dict = field(default_factory=dict)  # experiment -> path
    counterfactual_residual: dict = field(default_factory=dict)  # counterfactual -> residual_patches.csv
    counterfactual_components: dict = field(default_factory=dict)  # counterfactual -> component_patches.csv
    steering_layers: dict = field(default_factory=dict)  # steering experiment -> steering_layers_{name}.csv
    probes: str | None = None  # probe_accuracy.csv
    interactions_summary: str | None = None  # interactions/summary.csv
    interactions_differences: str | None = None  # interactions/differences.csv
    path_saturation: str | None = None  # patching/path_patching_saturation.csv
    adapter_edits: dict = field(default_factory=dict)  # "summary", "verdicts", "sets" -> adapter_edits/*.csv
    transfer: dict = field(default_factory=dict)  # "components", "steering", "probes", "circuits" -> transfer/*.csv
    diffing: dict = field(default_factory=dict)  # report.diffing's ADL_PARTS + CROSSCODER_PARTS -> diffing/*.csv
    # scenarios outside the reference context (other games and prompts, interp_lib.contexts):
    # left out of RQ1-RQ3, which are about the IPD; RQ4 compares them
    other_contexts: set = field(default_factory=set)
    # scenarios in the swapped labelling (from the behaviour table): left out of the RQ
    # means, which would otherwise mix labellings; the label bias section reports them
    swapped_scenarios: set = field(default_factory=set)


def standard_rows(inputs: Inputs, df: pd.DataFrame | None) -> pd.DataFrame | None:
    """`df` without the rows of swapped-label scenarios and of scenarios outside the IPD's
    training format."""
    left_out = inputs.swapped_scenarios | inputs.other_contexts
    if df is None or "scenario" not in df.columns or not left_out:
        return df
    return df[~df["scenario"].isin(left_out)].reset_index(drop=True)


def read_table(path) -> pd.DataFrame | None:
    if not path or not Path(path).is_file():
        return None
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    return df


def component_sort_key(name: str):
    """Model order: embed, then per layer its heads, then its MLP."""
    if name == "embed":
        return (-1, 0, 0)
    if name.endswith("_MLP"):
        return (int(name[1:-4]), 1, 0)
    layer, head = name[1:].split("H")
    return (int(layer), 0, int(head))


def missing_file(doc: Document, what: str, path) -> None:
    if path:
        doc.note(f"{what}: {path} does not exist (build it with the workflow).")
    else:
        doc.note(f"{what}: no file given.")


def interval_text(value, low, high, signed: bool = False) -> str:
    """"1.23 [0.95, 1.51]" of a value and its interval (the interval omitted unless both ends are finite)."""
    text = fmt(value, signed=signed)
    if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)):
        text += f" [{fmt(low, signed=signed)}, {fmt(high, signed=signed)}]"
    return text


def table_section(doc: Document, title: str, path, text: str, overview, n_rows: int, what: str,
                  empty: str = "") -> None:
    """A level-3 section showing overview(table) of the CSV at `path` under `text`; a note when
    the file is missing, a line when it or its overview has no rows (`empty` says why)."""
    doc.h(3, title)
    table = read_table(path)
    why = f" ({empty})" if empty else ""
    if table is None:
        missing_file(doc, what, path)
    elif table.empty:
        doc.p(f"No rows in `{path}`{why}.")
    else:
        shown = overview(table)
        doc.p(f"{text} From `{path}`." + ("" if len(shown) else f" Nothing to show{why}."))
        if len(shown):
            doc.table(shown.head(n_rows * 4))


def token_text(text) -> str:
    """A token as shown in a table: surrounding spaces dropped, a newline as \\n."""
    return str(text).replace("\n", "\\n").strip() or "(space)"


def with_interval(row, column: str = "mean_delta") -> str:
    """"+1.23 [+0.95, +1.51]" (the interval omitted when it is NaN)."""
    text = fmt(row[column], signed=True)
    if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]):
        text += f" [{fmt(row['ci_low'], signed=True)}, {fmt(row['ci_high'], signed=True)}]"
    return text
