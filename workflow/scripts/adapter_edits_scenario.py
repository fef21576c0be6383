"""A fine-tune's adapter edits on one scenario's prompts: ablation, sufficiency and transplants
of its LoRA update layer by layer and per module group, and the minimal sufficient set."""

import os

from interp_lib.io import job_logging, set_torch_threads, write_csv_atomic
from interp_lib.jobs.adapter_edits import adapter_edits_scenario

with job_logging(snakemake.log[0]):
    set_torch_threads(snakemake.threads)
    p, i, wc = snakemake.params, snakemake.input, snakemake.wildcards
    donors = {
        src: {**spec, "cache": cache, "dir": os.path.dirname(fingerprint)}
        for (src, spec), cache, fingerprint in zip(p.donors.items(), i.donor_caches, i.donor_fingerprints)
    }
    edits, sets = adapter_edits_scenario(
        wc.model,
        reference=p.reference,
        scenario=wc.scenario,
        adapter=p.adapter,
        finetune_cache=i.finetune_cache,
        base_cache=i.base_cache,
        finetune_dir=os.path.dirname(i.finetune_fingerprint),
        reference_dir=os.path.dirname(i.reference_weights),
        donors=donors,
        settings=dict(p.settings),
        precision=p.precision,
        device=p.device,
        allow_pickle=p.allow_pickle,
    )
    write_csv_atomic(edits, snakemake.output.edits)
    write_csv_atomic(sets, snakemake.output.sets)
