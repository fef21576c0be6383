# The behavioural baseline every analysis is read against.


rule decisions:
    input:
        cache_files(),
    output:
        "results/behavior/decisions.csv",
    log:
        "results/logs/behavior/decisions.log",
    conda:
        "../../envs/interp.yaml"
    script:
        "../scripts/decisions.py"
