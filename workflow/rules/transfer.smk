# Mechanism transfer across games and prompts (issue 28 item 4): does what an experiment's
# fine-tune changed in the IPD carry the decision in the other games and prompts? Only when the
# scenarios hold the reference context (the IPD in the training format) and another
# (interp_lib.contexts). Model runs: the IPD circuit patched in every patched scenario; cache
# reads: probes trained on the IPD; the rest reads the patching, DLA and steering tables.
rule circuit_transfer_scenario:
    input:
        unpack(patch_inputs),
        patches=R("patching/per/{experiment}/{scenario}/patches.csv"),
        ipd_circuits=expand(
            R("patching/per/{{experiment}}/{scenario}/circuits.csv"),
            scenario=IPD_PATCH_SCENARIOS,
        ),
    output:
        R("transfer/circuits/per/{experiment}/{scenario}.csv"),
    log:
        R("logs/transfer/circuits/{experiment}/{scenario}.log"),
    benchmark:
        R("benchmarks/transfer/circuits/{experiment}/{scenario}.tsv")
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=16000,
        runtime=30,
        gpu=1 if config["analysis"]["device"].startswith("cuda") else 0,
    params:
        source=lambda wc: experiment_models(wc)[0],
        target=lambda wc: experiment_models(wc)[1],
        positions=config["analysis"]["patch_positions"],
        head_site=lambda wc: config["analysis"]["head_patch_site"],
        precision=config["analysis"]["precision"],
        device=config["analysis"]["device"],
        seed=config["seed"],
        code=code_version("circuit_transfer_scenario"),
    script:
        "../scripts/circuit_transfer_scenario.py"


rule probe_transfer_model:
    input:
        caches=expand(R("cache/{{model}}/{scenario}.h5"), scenario=SCENARIOS),
        fingerprint=R("models/{model}/fingerprint.json"),
    output:
        R("transfer/probes/per/{model}.csv"),
    log:
        R("logs/transfer/probes/{model}.log"),
    benchmark:
        R("benchmarks/transfer/probes/{model}.tsv")
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=4000,
    params:
        model=lambda wc: wc.model,
        scenarios=SCENARIOS,
        contexts=CONTEXTS,
        code=code_version("probe_transfer_model"),
    script:
        "../scripts/probe_transfer_model.py"


localrules:
    transfer_tables,


rule transfer_tables:
    input:
        patches=expand(
            R("patching/per/{experiment}/{scenario}/patches.csv"),
            experiment=EXPERIMENTS,
            scenario=PATCH_SCENARIOS,
        ),
        dla=expand(
            R("dla/per/{model}/{scenario}.csv"), model=MODELS, scenario=PATCH_SCENARIOS
        ),
        steering=[out for name in STEERING for out in steering_outputs(name)],
        probes=expand(R("transfer/probes/per/{model}.csv"), model=MODELS),
        circuits=expand(
            R("transfer/circuits/per/{experiment}/{scenario}.csv"),
            experiment=EXPERIMENTS,
            scenario=PATCH_SCENARIOS,
        ),
    output:
        components=R("transfer/components.csv"),
        steering=R("transfer/steering.csv"),
        probes=R("transfer/probes.csv"),
        circuits=R("transfer/circuits.csv"),
    log:
        R("logs/transfer/tables.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        experiments={
            e: [config["experiments"][e]["source"], config["experiments"][e]["target"]]
            for e in EXPERIMENTS
        },
        steering={name: len(steering_outputs(name)) for name in STEERING},
        models=MODELS,
        scenarios=PATCH_SCENARIOS,
        contexts=CONTEXTS,
        states=scenario_states(config["scenarios"]),
        labellings={
            s: spec.get("labelling", "standard")
            for s, spec in config["scenarios"].items()
        },
        top_k=config["analysis"]["top_k"],
        seed=config["seed"],
        code=code_version("transfer_tables"),
    script:
        "../scripts/transfer_tables.py"


rule transfer_plot:
    input:
        components=R("transfer/components.csv"),
        probes=R("transfer/probes.csv"),
        circuits=R("transfer/circuits.csv"),
    output:
        report(
            R("transfer/transfer.png"),
            caption="../report/transfer.rst",
            category="Transfer across games",
            labels={"figure": "components, probes, circuits"},
        ),
    log:
        R("logs/transfer/plot.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        style=model_style(MODELS),
        code=code_version("transfer_plot"),
    script:
        "../scripts/transfer_plot.py"
