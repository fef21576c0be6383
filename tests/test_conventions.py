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
