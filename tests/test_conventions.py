"""Snakemake conventions: lint-clean, snakefmt-clean, and every rule with a log, the
conda env, and a benchmark where it runs a model."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]
MODEL_RULES = {"demo_base", "demo_adapter", "convert_gguf", "merge_model", "cache_activations", "patch_scenario"}


def rule_blocks():
    for path in RULE_FILES:
        text = path.read_text()
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", text, re.M):
            yield path, m.group(1), m.group(2)


def test_snakemake_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--cores", "1"], cwd=REPO,
                          capture_output=True, text=True)
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_snakefmt_check_is_clean():
    snakefmt = Path(sys.executable).with_name("snakefmt")
    proc = subprocess.run([str(snakefmt), "--check", *map(str, RULE_FILES)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_every_rule_has_log_conda_and_benchmark_where_it_runs_a_model():
    rules = list(rule_blocks())
    assert len(rules) > 20
    names = set()
    for path, name, body in rules:
        names.add(name)
        if name == "all":
            continue
        assert re.search(r"^\s+log:", body, re.M), f"{path.name}: rule {name} has no log"
        conda = re.search(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", body, re.M)
        assert conda, f"{path.name}: rule {name} has no conda env"
        assert (path.parent / conda.group(1)).resolve() == (REPO / "envs/interp.yaml").resolve(), name
        if name in MODEL_RULES:
            assert re.search(r"^\s+benchmark:", body, re.M), f"{path.name}: rule {name} runs a model without benchmark"
    assert MODEL_RULES <= names


def test_the_config_files_in_use_come_from_snakemakes_config_settings():
    """workflow/rules/config.smk reads the --configfile(s) from the workflow's ConfigSettings
    (snakemake.settings.types, the settings type of Snakemake's documented Python API; no
    Snakefile API names them) and nothing else of Snakemake's internals. If a release renames
    these fields, this fails naming them (tests/test_dag.py then shows what breaks)."""
    import dataclasses

    import snakemake.api  # noqa: F401  (snakemake.workflow imports in that order only)
    from snakemake.settings.types import ConfigSettings
    from snakemake.workflow import Workflow

    assert {"configfiles", "config"} <= {f.name for f in dataclasses.fields(ConfigSettings)}
    assert "config_settings" in {f.name for f in dataclasses.fields(Workflow)}
    text = (REPO / "workflow/rules/config.smk").read_text()
    used = set(re.findall(r"workflow\.(\w+(?:\.\w+)?)", text))
    assert used == {"config_settings.configfiles", "config_settings.config", "configfile"}, used
