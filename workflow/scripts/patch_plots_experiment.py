"""Patching figures of one experiment: per patched scenario the layers x (heads, MLP)
heatmap of delta_change (mean over prompt variants) and the circuit discovery curves;
then the top components by mean |delta_change| over scenarios, and their consistency
across scenarios (ranking and counts from the experiment's top_components table)."""

from tqdm.auto import tqdm

from interp_lib.io import job_logging
from interp_lib.plots.patching_circuits import CircuitPlots
from interp_lib.plots.patching_common import read_table
from interp_lib.plots.patching_grids import PatchGridPlots
from interp_lib.plots.patching_rankings import RankingPlots
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    p, inp, out, experiment = snakemake.params, snakemake.input, snakemake.output, snakemake.wildcards.experiment
    style = ModelStyle.from_entries(p.style)
    grids, circuits = PatchGridPlots(style=style), CircuitPlots(style=style)
    for scenario, patches, found, heatmap, circuit in tqdm(
            list(zip(p.scenarios, inp.scenario_results, inp.scenario_circuits, out.heatmaps, out.circuits)),
            desc=f"patching {experiment}"):
        results = read_table(patches)
        grids.plot_patch_heatmap(results, out=heatmap)
        circuits.plot_circuit_discovery(read_table(found), results, out=circuit, experiment=experiment,
                                        scenario=scenario, source=p.source, target=p.target, circuits_run=p.circuits)
    viz = RankingPlots(style=style)
    results = read_table(inp.results)
    viz.plot_top_components(results, top_k=p.top_k, out=out.top)
    viz.plot_consistency(results, top_k=p.top_k, top_components=read_table(inp.top), out=out.consistency)
