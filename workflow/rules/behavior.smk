# The behavioural baseline every analysis is read against: each prompt's decision, means
# with bootstrap 95% intervals, and the label bias of counterbalanced scenarios.


rule decisions:
    input:
        cache_files(),
    output:
        decisions=R("behavior/decisions.csv"),
        summary=R("behavior/behaviour_summary.csv"),
        label_bias=R("behavior/label_bias.csv"),
    log:
        R("logs/behavior/decisions.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("decisions"),
    script:
        "../scripts/decisions.py"


# Scenario -> its game, metric, format and the moves its prompt states (issue 28).
GAME_SCENARIO_META = {
    name: {
        "game": spec.get("game", "ipd"),
        "metric": scenario_metric(config, name),
        "format": spec.get("format", "table"),
        "preprompt": spec.get("preprompt"),
        "self_last": spec.get("self_last"),
        "opponent_last": spec.get("opponent_last"),
    }
    for name, spec in config["scenarios"].items()
}


rule games_behaviour:
    input:
        decisions=R("behavior/decisions.csv"),
        label_bias=R("behavior/label_bias.csv"),
    output:
        table=R("behavior/games.csv"),
        figure=report(
            R("behavior/games.png"),
            caption="../report/games.rst",
            category="Behaviour",
            labels={"figure": "per game"},
        ),
    log:
        R("logs/behavior/games.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        scenario_meta=GAME_SCENARIO_META,
        style=model_style(MODELS),
        code=code_version("games_behaviour"),
    script:
        "../scripts/games_behaviour.py"
