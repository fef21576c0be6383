"""Activation-patching plots: `PatchingVisualizer`, every patching figure. The figures live
in one module per kind: patching_grids (one scenario's layers x (heads, MLP) heatmap; the
patch_plots_experiment and counterfactual_plots jobs), patching_circuits (circuit discovery;
patch_plots_experiment), patching_rankings (one experiment's top components and their
consistency across scenarios; patch_plots_experiment); shared pieces (metric labels, the
noise band, reading a table, the figure classes' base) in patching_common, whose docstring
gives the tables' conventions. A workflow script imports the classes of the figures it
draws, so that its code version covers those modules only."""

from __future__ import annotations

from .patching_circuits import CircuitPlots, circuit_variants
from .patching_common import CHANGE_LABEL, METRIC_LABELS, metric_label, noise_band, read_table
from .patching_grids import PatchGridPlots, patch_grid
from .patching_rankings import RankingPlots, per_scenario_means, rank_components


class PatchingVisualizer(PatchGridPlots, RankingPlots, CircuitPlots):
    """Activation-patching figures. `style` fixes model labels and colours. Every method
    returns its Figure; with `out` it also saves it (atomically) and closes it."""


__all__ = ["CHANGE_LABEL", "METRIC_LABELS", "CircuitPlots", "PatchGridPlots", "PatchingVisualizer", "RankingPlots",
           "circuit_variants", "metric_label", "noise_band", "patch_grid", "per_scenario_means", "rank_components",
           "read_table"]
