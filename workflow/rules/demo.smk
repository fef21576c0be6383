# The embedded demo family: a small Gemma-2 and four LoRA adapters trained with the
# paper's rewards. Built only for models whose paths lie under config["embedded"]["dir"];
# real users point the config at their own models and these rules never run.
from interp_lib.training.demo import ADAPTER_REWARDS


rule demo_base:
    output:
        f"{EMBEDDED_DIR}/base/config.json",
        f"{EMBEDDED_DIR}/base/model.safetensors",
        f"{EMBEDDED_DIR}/base/tokenizer.json",
    log:
        R("logs/demo/base.log"),
    benchmark:
        R("benchmarks/demo/base.tsv")
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        seed=config["seed"],
        steps=config["embedded"]["pretrain_steps"],
        code=code_version("demo_base"),
    script:
        "../scripts/demo_base.py"


rule demo_adapter:
    input:
        f"{EMBEDDED_DIR}/base/config.json",
        f"{EMBEDDED_DIR}/base/model.safetensors",
    output:
        f"{EMBEDDED_DIR}/adapters/{{adapter}}/adapter_config.json",
        f"{EMBEDDED_DIR}/adapters/{{adapter}}/adapter_model.safetensors",
    log:
        R("logs/demo/adapter_{adapter}.log"),
    benchmark:
        R("benchmarks/demo/adapter_{adapter}.tsv")
    wildcard_constraints:
        adapter="|".join(ADAPTER_REWARDS),
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        base=lambda wc, input: os.path.dirname(input[0]),
        reward=lambda wc: ADAPTER_REWARDS[wc.adapter],
        seed=config["seed"],
        steps=config["embedded"]["rl_steps"],
        code=code_version("demo_adapter"),
    script:
        "../scripts/demo_adapter.py"
