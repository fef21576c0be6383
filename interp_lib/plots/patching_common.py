"""Shared pieces of the activation-patching figures (patching_grids, patching_rankings,
patching_circuits; all three together: `PatchingVisualizer` in patching.py): metric labels,
selecting one experiment's or scenario's rows, the noise band, reading a table, and the
figure classes' base. Inputs are the workflow's tidy tables (`patching.RESULT_COLUMNS`,
one row per experiment, scenario, variant and component; `patching.CIRCUIT_COLUMNS`, one
row per variant). delta = logit(D) - logit(C) (post-softcap) at the decision position;
delta_change = patched - baseline delta, positive = towards Defect (red), negative =
towards Cooperate (blue). Where the tables carry `noise_floor`, every figure shows the band
of effects indistinguishable from noise (|delta_change| <= NOISE_MULTIPLE x the largest
floor of the plotted prompts): grey on bar axes and colour bars, a grey dot in heatmap
cells whose mean lies in it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..noise import NOISE_MULTIPLE, largest_floor
from ..style import DELTA_LABEL, ModelStyle
from . import save_figure

CHANGE_LABEL = "delta change: patched - baseline, logit (D - C)"
METRIC_LABELS = {
    "delta_change": CHANGE_LABEL,
    "patched_delta": f"patched {DELTA_LABEL}",
    "gap_fraction": "gap fraction: delta change / (source - baseline delta)",
    "effect_size": "effect size: |delta change| / |baseline delta|",
    "atp_delta_change": "AtP estimate of the delta change, logit (D - C)",
}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def _only(df: pd.DataFrame, column: str, value, what: str) -> pd.DataFrame:
    """The rows of `df` with `column == value`; with value None, `df` must hold one value."""
    if column not in df.columns or df.empty:
        return df
    if value is not None:
        return df[df[column] == value]
    values = pd.unique(df[column])
    if len(values) > 1:
        raise ValueError(f"{what} holds {len(values)} {column}s ({', '.join(map(str, values))}): pass {column}=...")
    return df


def _first(df: pd.DataFrame, column: str, default=None):
    return df[column].iat[0] if column in df.columns and len(df) else default


def _as_bool(series: pd.Series) -> pd.Series:
    if series.dtype == bool:
        return series
    return series.astype(str).str.lower().isin(("true", "1", "yes"))


NOISE_COLOR = "#9a9a9a"


def noise_band(results: pd.DataFrame) -> float:
    """NOISE_MULTIPLE x the largest noise floor of the results' prompts (NaN if unknown)."""
    return NOISE_MULTIPLE * largest_floor(results)


def _band_label(band: float) -> str:
    return f"noise: |delta change| \u2264 {NOISE_MULTIPLE:g} \u00d7 floor = {band:.2g}"


def _mark_noise_cells(ax, matrix: np.ndarray, band: float) -> int:
    """Grey dots on cells whose |value| is within the band; returns how many."""
    if not math.isfinite(band):
        return 0
    rows, cols = np.nonzero(np.abs(np.nan_to_num(matrix, nan=np.inf)) <= band)
    ax.scatter(cols, rows, s=6, color=NOISE_COLOR, zorder=4, linewidths=0)
    return len(rows)


def _colorbar_band(cbar, band: float) -> None:
    if math.isfinite(band):
        cbar.ax.axhspan(-band, band, color=NOISE_COLOR, alpha=0.8, zorder=3)


def _fmt(value: float) -> str:
    """"+0.12" / "-0.12", and "0.00" where the sign would be noise."""
    return f"{value:+.2f}" if abs(value) >= 0.005 else "0.00"


def read_table(path) -> pd.DataFrame:
    """A CSV table; an empty file (no header) gives an empty DataFrame."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


class PatchingFigures:
    """Base of the patching figure classes. `style` fixes model labels and colours. Every
    method returns its Figure; with `out` it also saves it (atomically) and closes it."""

    def __init__(self, action_tokens: dict | None = None, style: ModelStyle | None = None):
        self.action_tokens = action_tokens
        self.style = style or ModelStyle()

    def _pair(self, df: pd.DataFrame, experiment=None, source=None, target=None) -> str:
        """"source -> target (experiment)" from the table's columns or the arguments."""
        source = source or _first(df, "source")
        target = target or _first(df, "target")
        experiment = experiment or _first(df, "experiment")
        pair = f"{self.style.label(source)} \u2192 {self.style.label(target)}" if source and target else ""
        if experiment and pair:
            return f"{pair} ({experiment})"
        return pair or str(experiment or "")

    @staticmethod
    def _finish(fig, out, tight: bool = True):
        if tight:
            fig.tight_layout()
        if out is not None:
            save_figure(fig, out)
        return fig
