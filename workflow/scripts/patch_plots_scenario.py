"""Patching figures of one experiment and scenario: the layers x (heads, MLP) heatmap of
delta_change (mean over prompt variants) and the circuit discovery curves."""

from interp_lib.io import job_logging
from interp_lib.plots.patching_circuits import CircuitPlots
from interp_lib.plots.patching_common import read_table
from interp_lib.plots.patching_grids import PatchGridPlots
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    p, wc = snakemake.params, snakemake.wildcards
    style = ModelStyle.from_entries(p.style)
    results = read_table(snakemake.input.results)
    PatchGridPlots(style=style).plot_patch_heatmap(results, out=snakemake.output.heatmap)
    CircuitPlots(style=style).plot_circuit_discovery(
        read_table(snakemake.input.circuits), results, out=snakemake.output.circuit, experiment=wc.experiment,
        scenario=wc.scenario, source=p.source, target=p.target, circuits_run=p.circuits)
