# LoRA adapters trained against Tit-for-Tat with the paper's rewards (config rl_adapters:
# output directory -> base, reward, rank, alpha, steps, lr, seed, labellings,
# label_consistency, init_adapter). A model whose adapter names such a directory depends
# on this rule; training.json records the settings, the expected reward per step and the
# behaviour before and after.
rule rl_adapter:
    input:
        lambda wc: model_dir_inputs(config["rl_adapters"][wc.rl_dir]["base"]),
        lambda wc: model_dir_inputs(config["rl_adapters"][wc.rl_dir]["init_adapter"]),
    output:
        "{rl_dir}/adapter_config.json",
        "{rl_dir}/adapter_model.safetensors",
        "{rl_dir}/training.json",
    log:
        R("logs/rl_adapters/{rl_dir}.log"),
    benchmark:
        R("benchmarks/rl_adapters/{rl_dir}.tsv")
    wildcard_constraints:
        rl_dir="|".join(re.escape(d) for d in config["rl_adapters"]) or "^$",
    conda:
        "../../envs/interp.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        out_dir=lambda wc: wc.rl_dir,
        spec=lambda wc: config["rl_adapters"][wc.rl_dir],
        code=code_version("rl_adapter"),
    script:
        "../scripts/rl_adapter.py"
