# Activations of one model on one scenario's prompts, one HDF5 file each.


rule cache_activations:
    input:
        weights="results/models/{model}/model.safetensors",
        fingerprint="results/models/{model}/fingerprint.json",
        prompts="results/prompts/scenarios/{scenario}.json",
    output:
        "results/cache/{model}/{scenario}.h5",
    log:
        "results/logs/cache/{model}/{scenario}.log",
    benchmark:
        "results/benchmarks/cache/{model}/{scenario}.tsv"
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=16000,
        runtime=30,
        gpu=1 if config["analysis"]["device"].startswith("cuda") else 0,
    params:
        model_dir=lambda wc, input: os.path.dirname(input.weights),
        dtype=config["analysis"]["dtype"],
        device=config["analysis"]["device"],
        code=code_version("cache", "hooked", "tokens"),
    script:
        "../scripts/cache_activations.py"
