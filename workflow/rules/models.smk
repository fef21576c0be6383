# Each adapter merged into its base exactly once (in float32), saved in the weights dtype of
# analysis.precision (float32 and tf32 share one merge, as do bfloat16 and bfloat16-resid32).


rule merge_model:
    input:
        lambda wc: model_dir_inputs(config["models"][wc.model]["base"])
        + model_dir_inputs(config["models"][wc.model]["adapter"]),
    output:
        R("models/{model}/model.safetensors"),
        R("models/{model}/fingerprint.json"),
    log:
        R("logs/models/{model}.log"),
    benchmark:
        R("benchmarks/models/{model}.tsv")
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=24000,
        runtime=60,
    params:
        spec=lambda wc: model_spec(wc.model),
        dtype=get_precision(config["analysis"]["precision"]).weights_name,
        allow_download=config["analysis"]["allow_download"],
        allow_pickle=config["analysis"]["allow_pickle"],
        code=code_version("merge_model"),
    script:
        "../scripts/merge_model.py"
