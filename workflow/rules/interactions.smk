# Component interaction matrices from the DLA tables (no model is loaded): per model the
# correlation across prompts of every pair of heads' and MLPs' signed contributions, and per
# compared pair of models their difference with a bootstrap interval, a permutation null and
# Benjamini-Hochberg control; one table job and one figure job over every model and scenario.
from interp_lib.analyses.interactions import compared_pairs
from interp_lib.report.rq_summary import resolve_roles

# [model_a, model_b]: the RQ role pairs and each experiment's source and target (config
# `analysis.interaction_pairs: all` adds every other pair of models).
INTERACTION_PAIRS = compared_pairs(
    MODELS,
    config["experiments"],
    resolve_roles(config),
    config["analysis"]["interaction_pairs"],
)


rule interaction_tables:
    input:
        expand(R("dla/per/{model}/{scenario}.csv"), model=MODELS, scenario=SCENARIOS),
    output:
        correlations=R("interactions/correlations.csv"),
        differences=R("interactions/differences.csv"),
        summary=R("interactions/summary.csv"),
    log:
        R("logs/interactions/tables.log"),
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=2000,
    params:
        pairs=INTERACTION_PAIRS,
        n_bootstrap=config["analysis"]["interaction_bootstrap"],
        n_permutations=config["analysis"]["interaction_permutations"],
        fdr=config["analysis"]["interaction_fdr"],
        centring=config["analysis"]["interaction_centring"],
        labellings={
            s: config["scenarios"][s].get("labelling", "standard") for s in SCENARIOS
        },
        seed=config["seed"],
        code=code_version("interaction_tables"),
    script:
        "../scripts/interaction_tables.py"


rule interaction_plots:
    input:
        correlations=R("interactions/correlations.csv"),
        differences=R("interactions/differences.csv"),
    output:
        models=[
            report(
                R(f"interactions/correlations_{m}.png"),
                caption="../report/interactions_model.rst",
                category="Component interactions",
                subcategory="Per model",
                labels={"model": m},
            )
            for m in MODELS
        ],
        pairs=[
            report(
                R(f"interactions/differences_{a}_vs_{b}.png"),
                caption="../report/interactions_difference.rst",
                category="Component interactions",
                subcategory="Differences between models",
                labels={"comparison": f"{a} vs {b}"},
            )
            for a, b in INTERACTION_PAIRS
        ],
    log:
        R("logs/interactions/plots.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        models=MODELS,
        pairs=INTERACTION_PAIRS,
        style=model_style(MODELS),
        code=code_version("interaction_plots"),
    script:
        "../scripts/interaction_plots.py"
