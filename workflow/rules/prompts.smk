# One prompt file per scenario (params hold that scenario's prompt settings alone, so adding
# a scenario touches no other scenario's prompts or caches, and its description, which no
# model reads, touches none), then the dataset for users, descriptions included.


rule scenario_prompts:
    input:
        model_dir_inputs(config["models"][prompt_tokenizer_model()]["base"]),
    output:
        R("prompts/scenarios/{scenario}.json"),
    log:
        R("logs/prompts/{scenario}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        spec=lambda wc: prompt_spec(wc.scenario),
        n_variants=config["variants_per_scenario"],
        seed=config["seed"],
        tokenizer=lambda wc, input: (
            os.path.dirname(input[0])
            if input
            else config["models"][prompt_tokenizer_model()]["base"]
        ),
        allow_download=config["analysis"]["allow_download"],
        code=code_version("scenario_prompts"),
    script:
        "../scripts/scenario_prompts.py"


rule prompt_dataset:
    input:
        expand(R("prompts/scenarios/{scenario}.json"), scenario=SCENARIOS),
    output:
        R("prompts/ipd_eval_prompts.json"),
    log:
        R("logs/prompts/dataset.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        descriptions={s: spec["description"] for s, spec in config["scenarios"].items()},
        code=code_version("prompt_dataset"),
    script:
        "../scripts/prompt_dataset.py"
