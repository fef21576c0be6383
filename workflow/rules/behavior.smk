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
