# Models shipped as GGUF files (config `gguf`: output directory -> {package, file} or
# {path}), converted once into a Hugging Face directory that a model's `base` names:
# float32 safetensors, config, tokenizer, fingerprint.json and source.json (the GGUF
# file's sha256 and the versions that read it). Replacing the GGUF file reruns it.
rule convert_gguf:
    input:
        lambda wc: GGUF_FILES[wc.gguf_dir],
    output:
        "{gguf_dir}/config.json",
        "{gguf_dir}/model.safetensors",
        "{gguf_dir}/tokenizer.json",
        "{gguf_dir}/fingerprint.json",
        "{gguf_dir}/source.json",
    log:
        R("logs/gguf/{gguf_dir}.log"),
    benchmark:
        R("benchmarks/gguf/{gguf_dir}.tsv")
    wildcard_constraints:
        gguf_dir="|".join(re.escape(d) for d in GGUF_FILES) or "^$",
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        source=lambda wc: config["gguf"][wc.gguf_dir],
        code=code_version("convert_gguf"),
    script:
        "../scripts/convert_gguf.py"
