# N-way model diffing (docs/diffing.md): the activation-difference lens of every fine-tune
# against the base and the strategic model (cache reads; the reference is loaded for its
# unembedding and steered by the difference), and one crosscoder over every model.
rule adl_pair:
    input:
        model_caches=expand(R("cache/{{model}}/{scenario}.h5"), scenario=SCENARIOS),
        reference_caches=expand(
            R("cache/{{reference}}/{scenario}.h5"), scenario=SCENARIOS
        ),
        fingerprint=R("models/{reference}/fingerprint.json"),
        model_fingerprint=R("models/{model}/fingerprint.json"),
        weights=R("models/{reference}/model.safetensors"),
    output:
        differences=R("diffing/adl/per/{model}/{reference}/differences.csv"),
        tokens=R("diffing/adl/per/{model}/{reference}/tokens.csv"),
        lora=R("diffing/adl/per/{model}/{reference}/lora.csv"),
        steering=R("diffing/adl/per/{model}/{reference}/steering.csv"),
        vectors=R("diffing/adl/per/{model}/{reference}/vectors.npz"),
    log:
        R("logs/diffing/adl/{model}/{reference}.log"),
    benchmark:
        R("benchmarks/diffing/adl/{model}/{reference}.tsv")
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=1 if config["analysis"]["device"].startswith("cuda") else 0,
    params:
        scenarios=SCENARIOS,
        contexts=CONTEXTS,
        states=(
            scenario_states(config["scenarios"])
            if config["diffing"]["by_state"]
            else None
        ),
        adapter=lambda wc: (
            config["models"][wc.model].get("adapter")
            if wc.reference == DIFF_BASE
            else None
        ),
        steer={
            "alphas": config["diffing"]["steer_alphas"],
            "controls": config["diffing"]["steer_controls"],
        },
        top_k=config["diffing"]["top_tokens"],
        bootstrap=config["diffing"]["bootstrap"],
        precision=config["analysis"]["precision"],
        device=config["analysis"]["device"],
        max_rows=config["analysis"]["steering_max_rows"],
        allow_pickle=config["analysis"]["allow_pickle"],
        seed=config["seed"],
        code=code_version("adl_pair"),
    script:
        "../scripts/adl_pair.py"


rule adl_tables:
    input:
        adl_pair_outputs(),
    output:
        ADL_TABLES,
    log:
        R("logs/diffing/adl_tables.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        pairs=DIFF_PAIRS,
        code=code_version("adl_tables"),
    script:
        "../scripts/adl_tables.py"


rule adl_plot:
    input:
        differences=R("diffing/adl_differences.csv"),
        steering=R("diffing/adl_steering.csv"),
    output:
        report(
            R("diffing/adl.png"),
            caption="../report/adl.rst",
            category="Model diffing",
        ),
    log:
        R("logs/diffing/adl_plot.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        style=model_style(MODELS),
        code=code_version("adl_plot"),
    script:
        "../scripts/adl_plot.py"


rule crosscoder_train:
    input:
        caches=cache_files(),
        # each model's probe table, not probe_plots' concatenation (a new label rewrites that)
        probes=expand(R("probes/per/{model}.csv"), model=MODELS),
        fingerprints=expand(R("models/{model}/fingerprint.json"), model=MODELS),
    output:
        crosscoder=R("diffing/crosscoder/crosscoder.safetensors"),
        tables=[R(f"diffing/crosscoder/{t}.csv") for t in CROSSCODER_TABLES],
    log:
        R("logs/diffing/crosscoder_train.log"),
    benchmark:
        R("benchmarks/diffing/crosscoder_train.tsv")
    conda:
        "../../envs/interp.yaml"
    # training is the one dense loop here; Snakemake lowers this to --cores where fewer
    threads: 4
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        models=MODELS,
        scenarios=SCENARIOS,
        roles=config["roles"],
        settings=config["diffing"]["crosscoder"],
        seed=config["seed"],
        code=code_version("crosscoder_train"),
    script:
        "../scripts/crosscoder_train.py"


rule crosscoder_causal:
    input:
        crosscoder=R("diffing/crosscoder/crosscoder.safetensors"),
        latents=R("diffing/crosscoder/latents.csv"),
        caches=cache_files(scenarios=IPD_SCENARIOS),
        weights=expand(R("models/{model}/model.safetensors"), model=MODELS),
    output:
        R("diffing/crosscoder/causal.csv"),
    log:
        R("logs/diffing/crosscoder_causal.log"),
    benchmark:
        R("benchmarks/diffing/crosscoder_causal.tsv")
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=1 if config["analysis"]["device"].startswith("cuda") else 0,
    params:
        models=MODELS,
        scenarios=IPD_SCENARIOS,
        top_latents=config["diffing"]["crosscoder"]["top_latents"],
        controls=config["diffing"]["crosscoder"]["controls"],
        precision=config["analysis"]["precision"],
        device=config["analysis"]["device"],
        seed=config["seed"],
        code=code_version("crosscoder_causal"),
    script:
        "../scripts/crosscoder_causal.py"


rule crosscoder_plot:
    input:
        quality=R("diffing/crosscoder/quality.csv"),
        latents=R("diffing/crosscoder/latents.csv"),
        causal=R("diffing/crosscoder/causal.csv"),
    output:
        report(
            R("diffing/crosscoder.png"),
            caption="../report/crosscoder.rst",
            category="Model diffing",
        ),
    log:
        R("logs/diffing/crosscoder_plot.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("crosscoder_plot"),
    script:
        "../scripts/crosscoder_plot.py"
