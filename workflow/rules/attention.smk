# Attention patterns from the activation caches (no model is loaded): per scenario, the
# decision position's attention of the heads with the largest |DLA| and |patching effect|
# (top_k of each), as a table and a figure.


rule attention_scenario:
    input:
        caches=expand(R("cache/{model}/{{scenario}}.h5"), model=MODELS),
        fingerprints=expand(R("models/{model}/fingerprint.json"), model=MODELS),
        dla=expand(R("dla/per/{model}/{{scenario}}.csv"), model=MODELS),
        # none when the scenario is not patched: then DLA alone selects the heads
        patches=lambda wc: (
            [R(f"patching/per/{e}/{wc.scenario}/patches.csv") for e in EXPERIMENTS]
            if wc.scenario in PATCH_SCENARIOS
            else []
        ),
    output:
        R("attention/attention_{scenario}.csv"),
    log:
        R("logs/attention/{scenario}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        models=MODELS,
        top_k=config["analysis"]["top_k"],
        code=code_version("attention_scenario"),
    script:
        "../scripts/attention_scenario.py"


rule attention_plots_scenario:
    input:
        R("attention/attention_{scenario}.csv"),
    output:
        report(
            R("attention/attention_{scenario}.png"),
            caption="../report/attention.rst",
            category="Attention patterns",
            labels={"scenario": "{scenario}"},
        ),
    log:
        R("logs/attention/plots_{scenario}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        style=model_style(MODELS),
        code=code_version("attention_plots_scenario"),
    script:
        "../scripts/attention_plots_scenario.py"
