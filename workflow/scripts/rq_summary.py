"""The research-question summary: <results_dir>/rq_summary.md and its HTML rendering (the
report item), from the DLA, behaviour, patching, weight-delta, steering, probe and
component-interaction tables."""

from interp_lib.io import job_logging
from interp_lib.report.document import write_summary
from interp_lib.report.inputs import Inputs
from interp_lib.report.rq_summary import build_summary
from interp_lib.report.diffing import ADL_PARTS, CROSSCODER_PARTS
from interp_lib.report.transfer import PARTS as TRANSFER_PARTS

with job_logging(snakemake.log[0]):
    inp, p = snakemake.input, snakemake.params
    inputs = Inputs(dla=inp.dla, decisions=inp.decisions, weights=inp.weights,
                    patch_results=dict(zip(p.experiments, inp.patch_results)),
                    circuits=dict(zip(p.experiments, inp.circuits)),
                    counterfactual_residual=dict(zip(p.counterfactuals, inp.counterfactual_residual)),
                    counterfactual_components=dict(zip(p.counterfactuals, inp.counterfactual_components)),
                    steering_layers=dict(zip(p.steering, inp.steering_layers)), probes=inp.probes,
                    interactions_summary=inp.interactions_summary,
                    interactions_differences=inp.interactions_differences,
                    path_saturation=inp.path_saturation,
                    adapter_edits=dict(zip(("summary", "verdicts", "sets"), inp.adapter_edits)),
                    transfer=dict(zip(TRANSFER_PARTS, inp.transfer)),
                    diffing=dict(zip((*ADL_PARTS, *CROSSCODER_PARTS), inp.diffing)),
                    other_contexts=set(p.other_contexts))
    doc = build_summary(p.config, inputs, roles=p.roles, n_rows=p.n_rows, labels=p.labels)
    write_summary(doc, snakemake.output.md, snakemake.output.html)
