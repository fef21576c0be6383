"""The transfer tables: component rankings (patching, DLA), steering per context, IPD probes
per context and the IPD circuit per context, from the per-job files."""

from interp_lib.report.transfer_tables import circuit_tables, component_tables, probe_tables, steering_tables
from interp_lib.io import job_logging, write_csv_atomic


def chunks(files, names, size):
    files = list(files)
    return {name: files[k * size:(k + 1) * size] for k, name in enumerate(names)}


with job_logging(snakemake.log[0]):
    p, i = snakemake.params, snakemake.input
    n = len(p.scenarios)
    components = component_tables(chunks(i.patches, p.experiments, n), chunks(i.dla, p.models, n),
                                  p.experiments, p.contexts, p.top_k, p.seed, p.states,
                                  p.labellings)
    steering, start = {}, 0
    for name, count in p.steering.items():
        steering[name], start = list(i.steering)[start:start + count], start + count
    write_csv_atomic(components, snakemake.output.components)
    write_csv_atomic(steering_tables(steering, p.contexts), snakemake.output.steering)
    write_csv_atomic(probe_tables(i.probes), snakemake.output.probes)
    write_csv_atomic(circuit_tables(i.circuits, p.contexts), snakemake.output.circuits)
