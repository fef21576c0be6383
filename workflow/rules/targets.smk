"""The target `all`: every output of every analysis for the config in use."""


def all_targets():
    """Every output of `all`, in the order of the analyses (docs/analyses.md: What the workflow computes)."""
    return [
        R("prompts/ipd_eval_prompts.json"),
        R("behavior/decisions.csv"),
        R("behavior/games.csv"),
        R("behavior/games.png"),
        R("logit_lens/trajectories.json"),
        R("logit_lens/statistics.csv"),
        expand(
            R("logit_lens/logit_lens_comparison_{scenario}.png"), scenario=SCENARIOS
        ),
        R("logit_lens/logit_lens_grid.png"),
        R("logit_lens/final_preferences_heatmap.png"),
        R("dla/dla_full_results.csv"),
        R("dla/dla_summary_stats.csv"),
        R("dla/dla_top_components.csv"),
        expand(
            R("dla/dla_{kind}_{model}_{scenario}.png"),
            kind=["heads", "mlps"],
            model=MODELS,
            scenario=SCENARIOS,
        ),
        expand(R("dla/dla_top_components_{model}.png"), model=MODELS),
        expand(R("dla/dla_model_comparison_{scenario}.png"), scenario=SCENARIOS),
        # component interaction matrices (rules/interactions.smk)
        R("interactions/correlations.csv"),
        R("interactions/differences.csv"),
        R("interactions/summary.csv"),
        expand(R("interactions/correlations_{model}.png"), model=MODELS),
        [R(f"interactions/differences_{a}_vs_{b}.png") for a, b in INTERACTION_PAIRS],
        expand(
            R("attention/attention_{scenario}.{ext}"),
            scenario=SCENARIOS,
            ext=["csv", "png"],
        ),
        expand(
            R("patching/{plot}_{experiment}_{scenario}.png"),
            plot=["patch_heatmap", "circuit_discovery"],
            experiment=EXPERIMENTS,
            scenario=PATCH_SCENARIOS,
        ),
        expand(
            R("patching/{plot}_{experiment}.png"),
            plot=["patch_top_components", "patch_consistency"],
            experiment=EXPERIMENTS,
        ),
        R("patching/cross_experiment_summary.csv"),
        R("patching/path_patching_saturation.csv"),
        expand(R("patching/path_patching_{experiment}.png"), experiment=EXPERIMENTS),
        expand(
            R("counterfactual/{plot}_{counterfactual}.png"),
            plot=["residual_heatmap", "component_heatmap"],
            counterfactual=COUNTERFACTUALS,
        ),
        [out for name in STEERING for out in steering_outputs(name)],
        expand(
            R("steering/steering_{steering}.{ext}"),
            steering=STEERING,
            ext=["csv", "png"],
        ),
        expand(R("steering/steering_layers_{steering}.csv"), steering=STEERING),
        R("probes/probe_accuracy.csv"),
        R("probes/probe_accuracy.png"),
        transfer_targets(),
        diffing_targets(),
        R("weights/weight_deltas.csv"),
        R("weights/weight_deltas_modules.png"),
        R("weights/weight_deltas_heads.png"),
        R("rq_summary.md"),
        R("rq_summary.html"),
        adapter_edit_targets(),
    ]
