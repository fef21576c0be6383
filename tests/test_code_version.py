"""The rules' code versions: which interp_lib files a script reaches through its imports."""

import re
import textwrap
from pathlib import Path

from conftest import REPO
from interp_lib.code_version import code_version, import_cycles, imported_files, package_root


def _package(root: Path, files: dict) -> Path:
    pkg = root / "interp_lib"
    for name, text in files.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return pkg


FILES = {
    "__init__.py": '_EXPORTS = {"Thing": "things", "Plot": "plots.things"}\n',
    "things.py": "from .helpers import helper\n\ndef f():\n    from . import lazy\n",
    "helpers.py": "import json\n",
    "lazy.py": "from interp_lib.deep.leaf import x\n",
    "deep/__init__.py": "",
    "deep/leaf.py": "x = 1\n",
    "deep/vocab.json": "{}\n",
    "plots/__init__.py": "from ..style import colour\n",
    "plots/things.py": "from ..things import f\nfrom . import save\n",
    "style.py": "colour = 1\n",
    "unrelated.py": "from .things import f\n",
    "sub/__init__.py": '_EXPORTS = {"leafy": "leafmod"}\n',
    "sub/leafmod.py": "from ..style import colour\nleafy = 1\n",
    "sub/other.py": "y = 1\n",
}


def _names(pkg: Path, script_text: str, tmp_path: Path) -> list[str]:
    script = tmp_path / "script.py"
    script.write_text(script_text)
    return [str(p.relative_to(pkg)) for p in imported_files(script, pkg)]


def test_imports_are_followed_transitively_and_no_further(tmp_path):
    pkg = _package(tmp_path, FILES)
    # function-level and relative imports, a subpackage's __init__ and the data beside a module
    assert _names(pkg, "from interp_lib.things import f\n", tmp_path) == [
        "deep/__init__.py", "deep/leaf.py", "deep/vocab.json", "helpers.py", "lazy.py", "things.py"]
    # the lazy exports of interp_lib/__init__ resolve to the module that defines the name
    assert _names(pkg, "from interp_lib import Plot\n", tmp_path) == [
        "deep/__init__.py", "deep/leaf.py", "deep/vocab.json", "helpers.py", "lazy.py",
        "plots/__init__.py", "plots/things.py", "style.py", "things.py"]
    # and so do a subpackage's: only the module that defines the name, not its siblings
    assert _names(pkg, "from interp_lib.sub import leafy\n", tmp_path) == [
        "style.py", "sub/__init__.py", "sub/leafmod.py"]
    assert _names(pkg, "import interp_lib.style\nimport numpy\n", tmp_path) == ["style.py"]
    assert _names(pkg, "import os\n", tmp_path) == []


def test_the_hash_moves_exactly_with_the_files_reached(tmp_path):
    pkg = _package(tmp_path, FILES)
    script = tmp_path / "script.py"
    script.write_text("from interp_lib.things import f\n")
    before = code_version(script, pkg)
    (pkg / "unrelated.py").write_text("# edited\n")
    (pkg / "style.py").write_text("colour = 2\n")
    assert code_version(script, pkg) == before
    (pkg / "deep/leaf.py").write_text("x = 2\n")
    assert code_version(script, pkg) != before


def test_workflow_scripts_reach_what_they_run():
    root = package_root()
    scripts = REPO / "workflow" / "scripts"

    def reached(name):
        return {str(p.relative_to(root)) for p in imported_files(scripts / f"{name}.py")}

    assert {"jobs/caching.py", "tokens.py", "model/hooked.py", "cache/collect.py", "cache/write.py"} <= reached(
        "cache_activations")
    # a job that reads caches does not depend on the code that collects and writes them
    assert "cache/read.py" in reached("decisions") and not {"cache/collect.py", "cache/write.py"} & reached("decisions")
    assert "prompts.py" not in reached("cache_activations")  # the prompt records arrive as a file
    # each job's code only: an edit of the patching or steering code reruns no cache
    assert not {p for p in reached("cache_activations") if p.startswith(("patching/", "steering/"))}
    assert not {p for p in reached("cache_activations") if p.startswith("jobs/")} - {"jobs/__init__.py",
                                                                                     "jobs/caching.py"}
    assert {"jobs/steering.py", "steering/steer.py"} <= reached("steering_scenario")
    # the steering tables read summary.py; steer.py (torch) is no part of them
    assert "steering/summary.py" in reached("steering_tables") and "steering/steer.py" not in reached("steering_tables")
    assert not {"jobs/caching.py", "jobs/patching.py", "patching/residual.py"} & reached("steering_scenario")
    # steering reads the neutral prompt_activations, so no patching edit reruns it
    assert "cache/prompt_activations.py" in reached("steering_scenario")
    assert not {p for p in reached("steering_scenario") if p.startswith("patching/")}
    assert not {p for p in reached("probe_model") if p.startswith(("jobs/", "patching/", "steering/"))}
    assert "config.py" not in reached("merge_model")  # the loader's config reading runs in no job
    # analyses and plots are separate: an edit of a plot module reruns only its plots
    for name in ("dla_model", "dla_tables", "logit_lens_model", "patch_scenario", "rq_summary",
                 "attention_tables"):
        assert not any(f.startswith("plots/") for f in reached(name)), name
    assert "plots/dla.py" in reached("dla_plots")
    assert "plots/dla.py" not in reached("logit_lens_plots")
    # the patching figures, one module per job: the counterfactual heatmap is the scenario heatmap only
    assert "plots/patching_grids.py" in reached("counterfactual_plots")
    assert not {"plots/patching_circuits.py", "plots/patching_rankings.py"} & reached("counterfactual_plots")
    # one job per experiment draws its scenario heatmaps, circuit figures and rankings
    assert {"report/patching_tables.py", "plots/patching_grids.py", "plots/patching_circuits.py",
            "plots/patching_rankings.py"} <= reached("patch_plots_experiment")
    # path patching runs in the patching job; its table and figure jobs run no model
    assert {"patching/paths.py", "patching/saturation.py"} <= reached("patch_scenario")
    assert "patching/saturation.py" in reached("path_patch_tables") and "plots/path_patching.py" in reached(
        "path_patch_plots")
    for name in ("path_patch_tables", "path_patch_plots"):
        assert not {"patching/runner.py", "jobs/patching.py", "model/hooked.py"} & reached(name), name
    assert "patching/paths.py" not in reached("path_patch_plots")


def test_every_rule_hashes_the_script_it_runs():
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^(?=rule )", smk.read_text())[1:]:
            rule = re.match(r"rule (\w+):", block).group(1)
            script = re.search(r'script:\n\s+"\.\./scripts/(\w+)\.py"', block)
            if script is None:
                continue
            assert f'code=code_version("{script.group(1)}")' in block, (smk.name, rule)


def test_an_import_circle_hidden_inside_a_function_is_found(tmp_path):
    pkg = _package(tmp_path, {**FILES, "a.py": "from .b import x\ny = 1\n",
                              "b.py": "x = 1\n\ndef f():\n    from .a import y\n"})
    assert [[str(p.relative_to(pkg)) for p in group] for group in import_cycles(pkg)] == [["a.py", "b.py"]]
    # a package importing its modules, which import each other's package: no circle
    assert import_cycles(_package(tmp_path / "clean", FILES)) == []


def test_interp_lib_has_no_import_circle():
    """Issue 26: adapter_deltas and weight_deltas imported each other (one of them inside a
    function); every interp_lib module now depends only downwards."""
    root = package_root()
    assert [[str(p.relative_to(root)) for p in group] for group in import_cycles()] == []
