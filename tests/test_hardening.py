"""Hardening: bad input, interrupted runs, stale or damaged caches, unsafe files.

Everything runs the real library or the real workflow (on copies of the shared completed
run); nothing is mocked. Complements test_config.py and test_bad_input.py."""

import ast
import filecmp
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, snakemake
from interp_lib.cache import FORMAT_VERSION, CacheError, CacheFile, NonFiniteActivation, write_cache
from interp_lib.jobs import build_cache_file
from interp_lib.model.loading import (FINGERPRINT_FILE, ModelLoadError, load_base_model, load_tokenizer, merge_adapter,
                               read_fingerprint, state_fingerprint)


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    return msg


def rebuild_hint(path) -> str:
    return f"delete {path} and rerun the workflow (snakemake --cores 1 {path})"


def copy_run(workflow_dir: Path, dest: Path) -> Path:
    """A private copy of the completed run (mtimes kept, so Snakemake sees it up to date)."""
    shutil.copytree(workflow_dir, dest, symlinks=True,
                    ignore=shutil.ignore_patterns("conda", "conda-archive", "shadow", "singularity"))
    return dest


def copy_model(workflow_dir: Path, name: str, dest: Path) -> Path:
    return Path(shutil.copytree(workflow_dir / "results/models" / name, dest))


def records(workflow_dir: Path, scenario: str) -> list[dict]:
    return json.loads((workflow_dir / f"results/prompts/scenarios/{scenario}.json").read_text())


def keeping_mtime(path: Path, edit) -> None:
    """Edits a file behind Snakemake's back (mtime unchanged), as a copy with `cp -p` would."""
    st = path.stat()
    edit(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob(".*.tmp-*"))


# --- 1. config -------------------------------------------------------------------------------


def test_workflow_names_a_missing_required_key(tmp_path):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    del cfg["models"]["PT2_COREDe"]["base"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(tmp_path, "--cores", "1", "all", check=False)
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
    assert proc.returncode != 0
    assert errors == ["Error: config.yaml: models.PT2_COREDe: 'base' is a required property"]
    assert not (tmp_path / "results").exists()


# --- 2. models -------------------------------------------------------------------------------


def _bin_twin(adapter: Path, dest: Path, extra=None) -> Path:
    """The adapter with its weights as a pickle (adapter_model.bin) only."""
    from safetensors.torch import load_file

    dest.mkdir()
    shutil.copy(adapter / "adapter_config.json", dest)
    state = load_file(adapter / "adapter_model.safetensors")
    torch.save({**state, **(extra or {})}, dest / "adapter_model.bin")
    return dest


class _RunsCode:
    """A pickle payload that runs a command when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_adapter_refused_unless_allowed_then_loaded_weights_only(workflow_dir, tmp_path):
    from peft.utils.save_and_load import torch_load

    base, adapter = workflow_dir / "results/demo/base", workflow_dir / "results/demo/adapters/PT2_COREDe"
    twin = _bin_twin(adapter, tmp_path / "bin")
    with pytest.raises(ModelLoadError) as info:
        merge_adapter(load_base_model(str(base)), str(twin), "PT2_COREDe")
    assert one_line(info) == (f"model PT2_COREDe: adapter {twin} is a pickle (adapter_model.bin); convert it to "
                              "safetensors or set analysis.allow_pickle: true (loaded with weights_only=True)")
    # allowed: peft's loader (torch_load, weights_only=True by default) gives the same merge
    assert inspect.signature(torch_load).parameters["weights_only"].default is True
    merged_bin = merge_adapter(load_base_model(str(base)), str(twin), "PT2_COREDe", allow_pickle=True)
    merged_st = merge_adapter(load_base_model(str(base)), str(adapter), "PT2_COREDe")
    assert state_fingerprint(merged_bin) == state_fingerprint(merged_st)
    # a pickle that would run code is refused by weights_only=True, and nothing runs
    marker = tmp_path / "code_ran"
    evil = _bin_twin(adapter, tmp_path / "evil", {"payload": _RunsCode(marker)})
    with pytest.raises(ModelLoadError) as info:
        merge_adapter(load_base_model(str(base)), str(evil), "PT2_COREDe", allow_pickle=True)
    assert one_line(info).startswith(f"model PT2_COREDe: adapter {evil}: adapter_model.bin holds more than "
                                     "tensors, refused by torch.load(weights_only=True) (Trying to load unsupported")
    assert not marker.exists()


def _with_custom_code(workflow_dir: Path, dest: Path, model_type: str, marker: Path) -> Path:
    """A merged model whose config.json points (auto_map) at a module that leaves a marker."""
    d = copy_model(workflow_dir, "base", dest)
    (d / "custom.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import Gemma2Config, Gemma2ForCausalLM\n"
        f"class CustomConfig(Gemma2Config):\n    model_type = {model_type!r}\n"
        "class CustomModel(Gemma2ForCausalLM):\n    config_class = CustomConfig\n"
    )
    for name, auto_map in (("config.json", {"AutoConfig": "custom.CustomConfig",
                                            "AutoModelForCausalLM": "custom.CustomModel"}),
                           ("tokenizer_config.json", {"AutoTokenizer": ["custom.CustomTokenizer", None]})):
        cfg = json.loads((d / name).read_text())
        cfg["auto_map"] = auto_map
        if name == "config.json":
            cfg["model_type"] = model_type
        (d / name).write_text(json.dumps(cfg))
    return d


def test_remote_code_is_never_run(workflow_dir, tmp_path):
    marker = tmp_path / "code_ran"
    # a known architecture: auto_map is ignored, the built-in class loads the weights
    known = _with_custom_code(workflow_dir, tmp_path / "known", "gemma2", marker)
    assert type(load_base_model(str(known), name="base")).__name__ == "Gemma2ForCausalLM"
    load_tokenizer(str(known), "base")
    # an architecture only the custom code implements: refused
    custom = _with_custom_code(workflow_dir, tmp_path / "custom", "custom_lm", marker)
    with pytest.raises(ModelLoadError) as info:
        load_base_model(str(custom), name="base")
    assert one_line(info) == (f"model base: {str(custom)!r} needs custom code (auto_map in its config), which is "
                              "never run (trust_remote_code=False); use a model type that transformers implements")
    assert not marker.exists()


def _calls(root: Path, attr: str):
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attr:
                yield path.relative_to(REPO), node


def test_every_from_pretrained_in_interp_lib_refuses_remote_code():
    checked = 0
    for path, call in _calls(REPO / "interp_lib", "from_pretrained"):
        owner = ast.unparse(call.func.value)
        if owner in ("PeftModel", "LoraConfig"):  # adapters: weights and a JSON config, no code to trust
            continue
        kw = {k.arg: k.value for k in call.keywords}
        assert isinstance(kw.get("trust_remote_code"), ast.Constant) and kw["trust_remote_code"].value is False, \
            f"{path}:{call.lineno}: {owner}.from_pretrained without trust_remote_code=False"
        checked += 1
    assert checked >= 5


def test_prompt_longer_than_the_context_is_refused_before_running(workflow_dir, tmp_path):
    model_dir = copy_model(workflow_dir, "PT2_COREDe", tmp_path / "PT2_COREDe")
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["max_position_embeddings"] = 64
    (model_dir / "config.json").write_text(json.dumps(cfg))
    recs = records(workflow_dir, "CD_punished")
    out = tmp_path / "out" / "CD_punished.h5"
    with pytest.raises(ValueError) as info:
        build_cache_file(model_dir, "PT2_COREDe", "CD_punished", recs, out)
    assert one_line(info) == (f"model PT2_COREDe: prompt CD_punished/1 has {recs[0]['n_tokens']} tokens, "
                              "more than the model's context of 64")
    assert not out.parent.exists() or not any(out.parent.iterdir())


# --- 4. numerics -----------------------------------------------------------------------------


@pytest.mark.parametrize("value,weight,hook", [
    (float("nan"), "model.layers.1.mlp.down_proj.weight", "blocks.1."),
    (float("inf"), "model.layers.0.self_attn.v_proj.weight", "blocks.0.attn.hook_z"),
])
def test_non_finite_activation_stops_the_cache_job(workflow_dir, tmp_path, value, weight, hook):
    from safetensors.torch import load_file, save_file

    model_dir = copy_model(workflow_dir, "PT2_COREDe", tmp_path / "PT2_COREDe")
    state = load_file(model_dir / "model.safetensors")
    state[weight][0, 0] = value
    save_file(state, model_dir / "model.safetensors", metadata={"format": "pt"})
    meta = read_fingerprint(model_dir)  # the weights as merged: the fingerprint check passes
    meta["fingerprint"] = state_fingerprint(load_base_model(str(model_dir)))
    (model_dir / FINGERPRINT_FILE).write_text(json.dumps(meta))
    out = tmp_path / "out" / "CD_punished.h5"
    with pytest.raises(NonFiniteActivation) as info:
        build_cache_file(model_dir, "PT2_COREDe", "CD_punished", records(workflow_dir, "CD_punished"), out)
    msg = one_line(info)
    assert msg.startswith(f"model PT2_COREDe, prompt CD_punished/1: NaN or Inf in {hook}"), msg
    assert not out.exists() and leftovers(out.parent) == []


# --- 6. damaged caches -----------------------------------------------------------------------


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _edit(fn):
    def edit(path):
        with h5py.File(path, "r+") as f:
            fn(f)
    return edit


def _read_dla(path):
    from interp_lib.analyses.dla import results_from_cache

    with CacheFile(path) as cache:
        return results_from_cache(cache)


def _read_lens(path):
    from interp_lib.analyses.logit_lens import trajectories_from_cache

    with CacheFile(path) as cache:
        return trajectories_from_cache(cache)


def _read_patching(path):
    with CacheFile(path) as cache:
        return cache[2]["resid_pre"]


def _read_decisions(path):
    from interp_lib.analyses.behaviour import decisions_table

    return decisions_table([path])


DAMAGE = {
    "truncated": (_truncate, _read_dla, "cannot read {p} (damaged or truncated: Unable to synchronously open file "
                                        "(truncated file: eof = "),
    "dataset deleted": (_edit(lambda f: f["1"].pop("mlp_out")), _read_dla, "cannot read variant 1, mlp_out of {p} "),
    "dataset NaN (DLA)": (_edit(lambda f: f["1/mlp_out"].__setitem__((0, -1, 0), np.nan)), _read_dla,
                          "{p}: NaN or Inf in variant 1, mlp_out; "),
    "dataset Inf (logit lens)": (_edit(lambda f: f["3/resid_post"].__setitem__((1, -1, 5), np.inf)), _read_lens,
                                 "{p}: NaN or Inf in variant 3, resid_post; "),
    "dataset NaN (patching)": (_edit(lambda f: f["2/resid_pre"].__setitem__((0, 0, 0), np.nan)), _read_patching,
                               "{p}: NaN or Inf in variant 2, resid_pre; "),
    "attr NaN (decisions)": (_edit(lambda f: f["1"].attrs.__setitem__("delta", np.nan)), _read_decisions,
                             "{p}: NaN or Inf in variant 1, attr delta; "),
    "unembed NaN": (_edit(lambda f: f["unembed/W_U_actions"].__setitem__((0, 0), np.nan)), _read_dla,
                    "{p}: NaN or Inf in unembed/W_U_actions; "),
    "other format version": (_edit(lambda f: f.attrs.__setitem__("format_version", 0)), _read_dla,
                             "{p} has cache format version 0, this interp_lib reads versions 3, 4, %d; " % FORMAT_VERSION),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_cache_is_refused_with_how_to_rebuild(workflow_dir, tmp_path, case):
    damage, read, expected = DAMAGE[case]
    path = tmp_path / "CC_temptation.h5"
    shutil.copy(workflow_dir / "results/cache/PT2_COREDe/CC_temptation.h5", path)
    read(path)  # intact: reads
    damage(path)
    with pytest.raises(CacheError) as info:
        read(path)
    msg = one_line(info)
    assert msg.startswith(expected.format(p=path)), msg
    assert msg.endswith(rebuild_hint(path))


def test_cache_of_other_weights_is_refused(workflow_dir):
    path = workflow_dir / "results/cache/PT2_COREDe/CC_continue.h5"
    current = read_fingerprint(workflow_dir / "results/models/PT2_COREDe")["fingerprint"]
    CacheFile(path, fingerprint=current).close()
    with pytest.raises(CacheError) as info:
        CacheFile(path, fingerprint="0" * 64)
    assert one_line(info) == (f"{path} was made from other weights than {workflow_dir}/results/models/PT2_COREDe now holds "
                              f"(fingerprint mismatch); {rebuild_hint(path)}")


def test_workflow_jobs_refuse_stale_or_damaged_caches(workflow_dir, tmp_path):
    wd = copy_run(workflow_dir, tmp_path / "wd")

    def new_fingerprint(path):  # results/models/PT2_COREDe replaced by other weights
        path.write_text(json.dumps({**json.loads(path.read_text()), "fingerprint": "0" * 64}))

    keeping_mtime(wd / "results/models/PT2_COREDe/fingerprint.json", new_fingerprint)
    keeping_mtime(wd / "results/cache/PT3_COREDe/CC_continue.h5", _truncate)
    keeping_mtime(wd / "results/cache/base/CC_continue.h5", _edit(lambda f: f["1"].attrs.__setitem__("delta", np.nan)))
    targets = ["results/dla/per/PT2_COREDe/CC_continue.csv", "results/dla/per/PT3_COREDe/CC_continue.csv",
               "results/behavior/decisions.csv"]
    for t in targets:
        (wd / t).unlink()
    proc = snakemake(wd, "--cores", "1", "--keep-going", *targets, check=False)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("interp_lib.cache.")]
    assert len(errors) == 3, proc.stderr[-3000:]
    c = "results/cache/{}/CC_continue.h5".format
    by_cache = {m: [e for e in errors if c(m) in e] for m in ("PT2_COREDe", "PT3_COREDe", "base")}
    assert by_cache["PT2_COREDe"] == [
        f"interp_lib.cache.CacheError: {c('PT2_COREDe')} was made from other weights than "
        f"results/models/PT2_COREDe now holds (fingerprint mismatch); {rebuild_hint(c('PT2_COREDe'))}"]
    (truncated,) = by_cache["PT3_COREDe"]
    assert truncated.startswith(f"interp_lib.cache.CacheError: cannot read {c('PT3_COREDe')} (damaged or truncated: ")
    assert truncated.endswith(rebuild_hint(c("PT3_COREDe")))
    assert by_cache["base"] == [f"interp_lib.cache.NonFiniteActivation: {c('base')}: NaN or Inf in variant 1, "
                                f"attr delta; {rebuild_hint(c('base'))}"]
    for t in targets:  # nothing a later rule could take for a result
        assert not (wd / t).exists() and leftovers((wd / t).parent) == []


# --- 5. interruption -------------------------------------------------------------------------


def test_killed_run_resumes_to_identical_results(workflow_dir, tmp_path):
    wd = copy_run(workflow_dir, tmp_path / "wd")
    cache, table = "results/cache/PT2_COREDe/CC_continue.h5", "results/behavior/decisions.csv"
    log = wd / "results/logs/cache/PT2_COREDe/CC_continue.log"
    for path in (wd / cache, wd / table, log):
        path.unlink()
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(wd),
           "--cores", "1", cache, table]
    proc = subprocess.Popen(cmd, cwd=wd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while not log.exists():  # the cache job's script has started
            assert proc.poll() is None and time.time() < deadline, "the cache job did not start"
            time.sleep(0.05)
        assert list((wd / ".snakemake/incomplete").iterdir())  # Snakemake has it marked as running
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (wd / cache).exists() and not (wd / table).exists()  # temp then rename: no half-written file
    # docs/robustness.md: after a kill, unlock, then rerun with --rerun-incomplete
    assert "LockException" in snakemake(wd, "--cores", "1", cache, table, check=False).stderr
    snakemake(wd, "--unlock")
    snakemake(wd, "--cores", "1", "--rerun-incomplete", cache, table)
    for rel in (cache, table):
        assert filecmp.cmp(wd / rel, workflow_dir / rel, shallow=False), rel  # byte for byte
    assert not list((wd / ".snakemake/incomplete").iterdir())


# --- 7. atomic outputs -----------------------------------------------------------------------


def test_a_failed_write_leaves_the_previous_file_or_nothing(workflow_dir, tmp_path):
    from interp_lib.io import atomic_path

    out = tmp_path / "CC_continue.h5"
    unstorable = {1: {"arrays": {"z": np.array([object()], dtype=object)}, "attrs": {}}}
    with pytest.raises(TypeError):
        write_cache(out, {"format_version": 1}, {}, unstorable)
    assert not out.exists() and leftovers(tmp_path) == []
    out.write_text("complete")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("job killed")
    assert out.read_text() == "complete" and leftovers(tmp_path) == []


# Writers of files: (name of the call, which argument is the path). A call is atomic when
# its path is a temporary one (io.atomic_path, demo's atomic_output_dir, a TemporaryDirectory).
WRITE_CALLS = {"to_csv": 0, "to_json": 0, "to_parquet": 0, "to_excel": 0, "to_html": 0, "savefig": 0,
               "save_pretrained": 0, "write_text": None, "write_bytes": None, "save_file": 1, "save": None}
ALLOWED = {  # (file, function): why a direct write is safe
    ("interp_lib/io.py", "job_logging"): "a job's log, written live; Snakemake keeps failed jobs' logs",
    ("interp_lib/training/demo/tokenizer.py", "save_tokenizer"): "writes into atomic_output_dir's temporary dir only",
    ("interp_lib/training/demo/rl.py", "_canonicalise_adapter_config"): "edits a file in atomic_output_dir's temporary dir",
}


def _writes(path: Path):
    """(function, line, written path expression) of every file-writing call in a module."""
    tree = ast.parse(path.read_text())
    owner = {}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                owner.setdefault(node, fn.name)  # outermost first: nested defs keep the outer name
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f, target = node.func, None
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        args = node.args + [k.value for k in node.keywords]
        if name in ("open", "File") and len(args) > 1:  # open(p, "w"), h5py.File(p, "w")
            mode = args[1]
            if isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+"):
                target = args[0]
        elif name in ("write_text", "write_bytes"):
            target = f.value
        elif name == "save" and isinstance(f, ast.Attribute) and ast.unparse(f.value) in ("torch", "np", "numpy"):
            target = args[1] if ast.unparse(f.value) == "torch" else args[0]
        elif (name in WRITE_CALLS and WRITE_CALLS[name] is not None and len(args) > WRITE_CALLS[name]
              and (isinstance(f, ast.Attribute) or name == "save_file")):  # df.to_html(path), not to_html(doc)
            target = args[WRITE_CALLS[name]]
        if target is not None:
            yield owner.get(node, "<module>"), node.lineno, ast.unparse(target)


def test_every_output_is_written_atomically():
    files = sorted((REPO / "interp_lib").rglob("*.py")) + sorted((REPO / "workflow/scripts").glob("*.py"))
    unsafe, allowed_hit, n = [], set(), 0
    for path in files:
        rel = str(path.relative_to(REPO))
        for function, line, target in _writes(path):
            n += 1
            if "tmp" in target.lower():
                continue
            if (rel, function) in ALLOWED:
                allowed_hit.add((rel, function))
                continue
            unsafe.append(f"{rel}:{line} in {function}: writes {target} directly")
    assert not unsafe, "write to a temporary path and rename (interp_lib.io.atomic_path):\n" + "\n".join(unsafe)
    assert allowed_hit == set(ALLOWED)  # no stale exceptions
    assert n >= 10
    # the demo helpers that write directly are only ever handed a temporary directory
    for helper in ("save_tokenizer", "_canonicalise_adapter_config"):
        calls = [(rel, c) for rel, c in _calls_of(files, helper)]
        assert calls and all("tmp" in ast.unparse(c.args[-1]) for _, c in calls), helper


def _calls_of(files, name):
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name:
                yield path.relative_to(REPO), node
