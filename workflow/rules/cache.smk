# Activations of one model on one scenario's prompts, one HDF5 file each.


rule cache_activations:
    input:
        weights=R("models/{model}/model.safetensors"),
        fingerprint=R("models/{model}/fingerprint.json"),
        prompts=R("prompts/scenarios/{scenario}.json"),
    output:
        R("cache/{model}/{scenario}.h5"),
    log:
        R("logs/cache/{model}/{scenario}.log"),
    benchmark:
        R("benchmarks/cache/{model}/{scenario}.tsv")
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=16000,
        runtime=30,
        gpu=1 if config["analysis"]["device"].startswith("cuda") else 0,
    params:
        model_dir=lambda wc, input: os.path.dirname(input.weights),
        precision=config["analysis"]["precision"],
        device=config["analysis"]["device"],
        cache_dtype=config["analysis"]["cache_dtype"],
        cache_compression=config["analysis"]["cache_compression"],
        code=code_version("cache_activations"),
    script:
        "../scripts/cache_activations.py"
