"""The deprecation guard (interp_lib/deprecation_guard.py; README: "A reproducible environment"):
a deprecated API that our code calls is an error, whether the library reports it as a Python
warning or on the transformers logger; one that a library calls itself is listed, not an error.

Deprecated calls are planted in a temporary "our code" (a guard whose root is tmp_path/ours)
calling a temporary library outside it, in transformers itself, in a pytest session run with
tests/conftest.py (code compiled under a file name in interp_lib/), and in a process that
imports interp_lib as every workflow script does (INTERP_DEPRECATIONS_AS_ERRORS=1)."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from interp_lib import deprecation_guard
from interp_lib.deprecation_guard import DeprecatedCall, Guard

LIBRARY = '''\
import warnings

from transformers.utils import logging

logger = logging.get_logger("transformers.planted")


def old():  # a deprecated API that names its caller (stacklevel 2)
    warnings.warn("old() is deprecated, use new()", FutureWarning, stacklevel=2)


def old_here():  # one that names its own line, as transformers' is_gradient_checkpointing does
    warnings.warn("old_here() is deprecated", DeprecationWarning)


def old_logged():  # one that says so on the transformers logger
    logger.warning("`old_logged` is deprecated and will be removed in v9")


def internal():  # the library calling its own deprecated APIs
    old()
    old_here()
    old_logged()
'''

OURS = '''\
import planted_library


def calls_old():
    planted_library.old()


def calls_old_here():
    planted_library.old_here()


def calls_old_logged():
    planted_library.old_logged()


def calls_internal():
    planted_library.internal()


def reads_is_gradient_checkpointing(model):
    return model.is_gradient_checkpointing


def wraps_in_peft(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
'''


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """(a raising guard whose code is tmp_path/ours, our planted module, what it passed on):
    the session's guard is off meanwhile, so that the planted calls stay out of its lists."""
    for sub, name, text in (("lib", "planted_library", LIBRARY), ("ours", "planted_ours", OURS)):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / f"{name}.py").write_text(text)
        monkeypatch.syspath_prepend(str(tmp_path / sub))
    session = deprecation_guard.installed()
    if session is not None:
        session.uninstall()
    shown = []
    guard = Guard(roots=[tmp_path / "ours"], raise_errors=True).install(show=shown.append)
    try:
        yield guard, importlib.import_module("planted_ours"), shown
    finally:
        guard.uninstall()
        for name in ("planted_library", "planted_ours"):
            sys.modules.pop(name, None)
        if session is not None:
            session.install()


def test_a_deprecation_warning_from_a_library_called_by_our_code_is_an_error(planted, tmp_path):
    _, ours, _ = planted
    where = f"{tmp_path / 'ours' / 'planted_ours.py'}:{line_of(OURS, 'planted_library.old()')}"
    with pytest.raises(DeprecatedCall) as raised:
        ours.calls_old()
    assert str(raised.value) == f"deprecated API called by our code at {where}: FutureWarning: old() is deprecated, use new()"
    # A warning that names its own line (stacklevel 1): the caller of the function that warned.
    where = f"{tmp_path / 'ours' / 'planted_ours.py'}:{line_of(OURS, 'planted_library.old_here()')}"
    with pytest.raises(DeprecatedCall, match=f"at {where}: DeprecationWarning: old_here"):
        ours.calls_old_here()


def test_a_deprecation_on_the_transformers_logger_called_by_our_code_is_an_error(planted, tmp_path):
    _, ours, _ = planted
    where = f"{tmp_path / 'ours' / 'planted_ours.py'}:{line_of(OURS, 'planted_library.old_logged()')}"
    with pytest.raises(DeprecatedCall) as raised:
        ours.calls_old_logged()
    assert str(raised.value) == (f"deprecated API called by our code at {where}: transformers.planted logger: "
                                 "`old_logged` is deprecated and will be removed in v9")


def test_a_library_calling_its_own_deprecated_api_is_listed_not_an_error(planted, tmp_path):
    guard, ours, shown = planted
    ours.calls_internal()  # our code is on the stack, but not the deprecated APIs' caller
    assert guard.ours == []
    lib = tmp_path / "lib" / "planted_library.py"

    def at(needle):
        return f"{lib}:{line_of(LIBRARY, needle)}"

    assert list(guard.theirs) == [
        f"FutureWarning: old() is deprecated, use new() ({at('old() is dep')}, called from {at('    old()')})",
        f"DeprecationWarning: old_here() is deprecated ({at('old_here() is dep')}, called from {at('    old_here()')})",
        (f"transformers.planted logger: `old_logged` is deprecated and will be removed in v9 "
         f"({at('logger.warning(')}, called from {at('    old_logged()')})"),
    ]
    assert [str(m.message) for m in shown] == ["old() is deprecated, use new()"]  # as Python's default filters


def test_a_recording_guard_collects_our_calls_without_raising(tmp_path, monkeypatch):
    (tmp_path / "ours").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path / "ours"))
    (tmp_path / "ours" / "planted_recorded.py").write_text(
        "import warnings\n\n\ndef f():\n    warnings.warn('x is deprecated', PendingDeprecationWarning)\n")
    session = deprecation_guard.installed()
    session.uninstall()
    guard = Guard(roots=[tmp_path / "ours"]).install(show=lambda msg: None)
    try:
        importlib.import_module("planted_recorded").f()  # C-level or stacklevel-1 warning on our own line
    finally:
        guard.uninstall()
        session.install()
        sys.modules.pop("planted_recorded", None)
    assert guard.ours == [(f"deprecated API called by our code at {tmp_path / 'ours' / 'planted_recorded.py'}:5: "
                           "PendingDeprecationWarning: x is deprecated")]


def test_transformers_is_gradient_checkpointing_is_ours_to_read_and_peft_s_inside_get_peft_model(planted):
    """transformers 5 deprecates PreTrainedModel.is_gradient_checkpointing (a FutureWarning at
    its own line); peft 0.21's get_peft_model reads it: a library's call, not ours."""
    from transformers import LlamaConfig, LlamaForCausalLM

    guard, ours, _ = planted
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(cfg)
    with pytest.raises(DeprecatedCall, match=r"planted_ours.py:\d+: FutureWarning: `is_gradient_checkpointing` is"):
        ours.reads_is_gradient_checkpointing(model)
    ours.wraps_in_peft(model)
    assert len(guard.ours) == 1, guard.ours  # the read above, not get_peft_model's
    # peft 0.21.2's read (a newer peft may no longer make it)
    for line in guard.theirs:
        assert re.fullmatch(r"FutureWarning: `is_gradient_checkpointing` is deprecated.* \(transformers/modeling_utils"
                            r"\.py:\d+, called from peft/peft_model\.py:\d+\)", line), guard.theirs


def test_snakemakes_copy_of_a_workflow_script_is_our_code():
    guard = Guard()
    assert guard.is_ours(str(REPO / "interp_lib" / "model" / "hooked.py"))
    assert guard.is_ours(str(REPO / "workflow" / "scripts" / "decisions.py"))
    assert guard.is_ours("/some/workdir/.snakemake/scripts/tmpab12cd.decisions.py")
    assert not guard.is_ours(str(REPO / "tests" / "conftest.py"))
    assert not guard.is_ours(deprecation_guard.warnings.__file__)


PLANTED_TEST = '''\
import warnings


def deprecated():
    warnings.warn("deprecated() is going away", FutureWarning, stacklevel=2)


def library_internal():
    deprecated()


OUR_CODE = dict()
exec(compile("def call(api):\\n    return api()\\n", OURS_FILE, "exec"), OUR_CODE)


def test_our_call():
    OUR_CODE["call"](deprecated)


def test_the_librarys_own_call():
    OUR_CODE["call"](library_internal)
'''


def test_the_pytest_session_fails_the_test_whose_code_called_a_deprecated_api(tmp_path):
    """tests/conftest.py's guard, in a pytest session of its own: the planted call is compiled
    under a file name in interp_lib/ (no such file is written)."""
    ours = str(REPO / "interp_lib" / "_planted_by_test_deprecation_guard.py")
    (tmp_path / "test_planted.py").write_text(PLANTED_TEST.replace("OURS_FILE", repr(ours)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-q", "-p", "no:cacheprovider",
                           "test_planted.py"], check=False, cwd=tmp_path, env=env, capture_output=True, text=True)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "1 failed, 1 passed" in out, out
    message = ("deprecated API called by our code at interp_lib/_planted_by_test_deprecation_guard.py:2: "
               "FutureWarning: deprecated() is going away")
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("_") and " test_our_call " in line)
    assert lines[at + 1] == message and " warnings summary " in lines[at + 2], out  # no traceback
    assert "FAILED test_planted.py::test_our_call" in out, out
    assert out.split("deprecated API called by our code (failures)")[1].splitlines()[1] == message, out
    listed = out.split("deprecated API called by libraries themselves (not failures)")[1]
    assert "1 x FutureWarning: deprecated() is going away (" in listed and "test_planted.py:5, called from " in listed \
        and "test_planted.py:9)" in listed, out


def test_importing_interp_lib_with_INTERP_DEPRECATIONS_AS_ERRORS_installs_a_raising_guard(tmp_path):
    """A process that imports interp_lib (every workflow script does, before its own statements
    run) with INTERP_DEPRECATIONS_AS_ERRORS=1 fails on a deprecated call made by our code; without
    the variable the same call only warns. The import loads neither torch nor transformers."""
    script = textwrap.dedent(f'''\
        import sys
        import warnings
        import interp_lib
        assert not {{"torch", "transformers"}} & set(sys.modules), sorted(sys.modules)
        def deprecated():
            warnings.warn("deprecated() is going away", FutureWarning, stacklevel=2)
        exec(compile("deprecated()\\n", {str(REPO / "workflow" / "scripts" / "_planted.py")!r}, "exec"))
        print("done")
        ''')
    env = {k: v for k, v in os.environ.items() if k != deprecation_guard.ENV}
    env.update(PYTHONPATH=str(REPO))
    run = [sys.executable, "-c", script]
    proc = subprocess.run(run, check=False, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    assert "FutureWarning: deprecated() is going away" in proc.stderr  # shown, not raised
    proc = subprocess.run(run, check=False, cwd=tmp_path, env={**env, deprecation_guard.ENV: "1"}, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "interp_lib.deprecation_guard.DeprecatedCall: deprecated API called by our code at "
        "workflow/scripts/_planted.py:1: FutureWarning: deprecated() is going away"), proc.stderr


def test_every_workflow_script_imports_interp_lib():
    """So that each job installs the guard above (importing interp_lib) before its own code runs."""
    for script in sorted((REPO / "workflow" / "scripts").glob("*.py")):
        assert re.search(r"(?m)^(from interp_lib[. ]|import interp_lib\b)", script.read_text()), script.name
