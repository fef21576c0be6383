# The behavioural baseline every analysis is read against.


rule decisions:
    input:
        cache_files(),
    output:
        R("behavior/decisions.csv"),
    log:
        R("logs/behavior/decisions.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("decisions"),
    script:
        "../scripts/decisions.py"
