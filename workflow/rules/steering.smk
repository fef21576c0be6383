# Steering vectors: one job per (experiment, scenario) builds the experiment's direction
# from cached activations and runs the target model steered at every layer x alpha; the
# experiment's tables (per scenario and per layer, with the best layer) and figure are
# drawn from those.


rule steering_scenario:
    input:
        unpack(steering_inputs),
    output:
        R("steering/per/{steering}/{scenario}.csv"),
    log:
        R("logs/steering/{steering}/{scenario}.log"),
    benchmark:
        R("benchmarks/steering/{steering}/{scenario}.tsv")
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=1 if config["analysis"]["device"].startswith("cuda") else 0,
    params:
        spec=lambda wc: steering_spec(wc.steering),
        direction_caches=steering_direction_caches,
        precision=config["analysis"]["precision"],
        device=config["analysis"]["device"],
        max_rows=config["analysis"]["steering_max_rows"],
        seed=config["seed"],
        code=code_version("steering_scenario"),
    script:
        "../scripts/steering_scenario.py"


rule steering_tables:
    input:
        lambda wc: steering_outputs(wc.steering),
    output:
        summary=R("steering/steering_{steering}.csv"),
        layers=R("steering/steering_layers_{steering}.csv"),
    log:
        R("logs/steering/{steering}/tables.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("steering_tables"),
    script:
        "../scripts/steering_tables.py"


rule steering_plots:
    input:
        summary=R("steering/steering_{steering}.csv"),
        layers=R("steering/steering_layers_{steering}.csv"),
    output:
        report(
            R("steering/steering_{steering}.png"),
            caption="../report/steering.rst",
            category="Steering",
            labels={"experiment": "{steering}"},
        ),
    log:
        R("logs/steering/{steering}/plots.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("steering_plots"),
    script:
        "../scripts/steering_plots.py"
