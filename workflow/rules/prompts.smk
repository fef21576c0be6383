# One prompt file per scenario (params hold that scenario alone, so adding a scenario
# touches no other scenario's prompts or caches), then the dataset for users.


rule scenario_prompts:
    input:
        model_dir_inputs(config["models"][prompt_tokenizer_model()]["base"]),
    output:
        "results/prompts/scenarios/{scenario}.json",
    log:
        "results/logs/prompts/{scenario}.log",
    conda:
        "../../envs/interp.yaml"
    params:
        spec=lambda wc: config["scenarios"][wc.scenario],
        n_variants=config["variants_per_scenario"],
        seed=config["seed"],
        tokenizer=lambda wc, input: (
            os.path.dirname(input[0])
            if input
            else config["models"][prompt_tokenizer_model()]["base"]
        ),
        allow_download=config["analysis"]["allow_download"],
    script:
        "../scripts/scenario_prompts.py"


rule prompt_dataset:
    input:
        expand("results/prompts/scenarios/{scenario}.json", scenario=SCENARIOS),
    output:
        "results/prompts/ipd_eval_prompts.json",
    log:
        "results/logs/prompts/dataset.log",
    conda:
        "../../envs/interp.yaml"
    script:
        "../scripts/prompt_dataset.py"
