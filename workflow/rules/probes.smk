# Linear probes from the activation caches (no model is loaded): per model, a
# logistic-regression probe on the decision position's resid_post of every layer,
# cross-validated over prompt variants, for the model's decision, the opponent's last move
# and the action token it writes; then one table and one figure of every model.


# Scenario -> what the probes read of it (not its description): a swapped-label sibling
# shares the group of the scenario it was derived from, so cross-validation never splits
# the two.
PROBE_SCENARIO_META = {
    name: {
        "opponent_last": spec.get("opponent_last"),
        "probe": not spec.get("format", "table").startswith("unrelated_"),
        "labelling": spec.get("labelling", "standard"),
        "group": spec.get("variants_of") or name,
    }
    for name, spec in config["scenarios"].items()
}


rule probe_model:
    input:
        caches=expand(R("cache/{{model}}/{scenario}.h5"), scenario=SCENARIOS),
        fingerprint=R("models/{model}/fingerprint.json"),
    output:
        R("probes/per/{model}.csv"),
    log:
        R("logs/probes/{model}.log"),
    benchmark:
        R("benchmarks/probes/{model}.tsv")
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=4000,
    params:
        model=lambda wc: wc.model,
        scenarios=SCENARIOS,
        scenario_meta=PROBE_SCENARIO_META,
        seed=config["seed"],
        code=code_version("probe_model"),
    script:
        "../scripts/probe_model.py"


rule probe_plots:
    input:
        expand(R("probes/per/{model}.csv"), model=MODELS),
    output:
        table=R("probes/probe_accuracy.csv"),
        figure=report(
            R("probes/probe_accuracy.png"),
            caption="../report/probes.rst",
            category="Linear probes",
            labels={"figure": "accuracy per layer"},
        ),
    log:
        R("logs/probes/plots.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        style=model_style(MODELS),
        code=code_version("probe_plots"),
    script:
        "../scripts/probe_plots.py"
