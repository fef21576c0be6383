"""Warm start (interp_lib/warm_start.py): a script run through run_warm executes in a child
forked from a preloaded server, with the caller's directory, environment, streams and exit
status; it runs in its own process when warm start is off; a dead caller's job is stopped."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interp_lib.warm_start import BATCH_SCHEDULERS, server_key

REPO = Path(__file__).resolve().parents[1]
# "wave" stands for torch: a module no script imports before run_warm, so finding it in
# sys.modules shows that the script runs in a preloaded interpreter.
PROBE = """
import os, sys, time
__real_file__ = __file__; __file__ = "/the/original/script.py"  # as Snakemake's preamble does
from interp_lib.warm_start import run_warm
run_warm(globals())
print("preloaded", "wave" in sys.modules, "ppid", os.getppid(), "cwd", os.getcwd(),
      "var", os.environ.get("PROBE_VAR"), "file", __file__)
print("to stderr", file=sys.stderr)
action = os.environ.get("PROBE_ACTION", "")
if action == "sleep":
    open(os.environ["PROBE_PID_FILE"], "w").write(str(os.getpid()))
    time.sleep(120)
elif action == "raise":
    raise ValueError("a one-line message")
elif action == "message":
    sys.exit("stopped with a message")
sys.exit(int(os.environ.get("PROBE_STATUS", "0")))
"""


@pytest.fixture()
def probe(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {**os.environ, "INTERP_WARM_DIR": str(tmp_path / "servers"), "INTERP_WARM_PRELOAD": "wave",
           "INTERP_WARM_IDLE_S": "20", "PYTHONPATH": str(REPO)}
    for name in ("INTERP_WARM_START", *BATCH_SCHEDULERS):  # the suite may itself run inside a batch job
        env.pop(name, None)
    work = tmp_path / "work"
    work.mkdir()

    def run(**extra):
        return subprocess.Popen([sys.executable, str(script)], cwd=work, env={**env, **extra},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    yield run, work, tmp_path / "servers"
    for sock in (tmp_path / "servers").glob("*.sock"):  # stop the servers at once
        pid = _server_pid(sock.with_suffix(".log"))
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _server_pid(log: Path) -> int | None:
    for line in log.read_text().splitlines() if log.exists() else []:
        if "(pid " in line:
            return int(line.split("(pid ")[1].rstrip(")"))
    return None


def _finish(proc) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_a_script_runs_in_a_forked_child_with_the_callers_directory_environment_and_streams(probe):
    run, work, servers = probe
    for _ in range(2):  # the first call starts the server, the second reuses it
        proc = run(PROBE_VAR="seven", PROBE_STATUS="3")
        status, out, err = _finish(proc)
        assert status == 3, err
        fields = out.split()
        assert fields[fields.index("preloaded") + 1] == "True"
        assert int(fields[fields.index("ppid") + 1]) != proc.pid  # forked by the server, not the caller
        assert fields[fields.index("cwd") + 1] == str(work)
        assert fields[fields.index("var") + 1] == "seven"
        assert fields[fields.index("file") + 1] == "/the/original/script.py"
        assert err.strip() == "to stderr"
    assert len(list(servers.glob("*.sock"))) == 1
    server = _server_pid(next(servers.glob("*.log")))
    assert int(fields[fields.index("ppid") + 1]) == server


def test_with_warm_start_off_the_script_runs_in_its_own_process(probe):
    run, work, servers = probe
    proc = run(INTERP_WARM_START="0", PROBE_STATUS="4")
    status, out, _ = _finish(proc)
    assert status == 4
    fields = out.split()
    assert fields[fields.index("preloaded") + 1] == "False"
    assert int(fields[fields.index("ppid") + 1]) == os.getpid()  # the script is the process this test started
    assert not servers.exists() or not list(servers.glob("*.sock"))


def test_inside_a_slurm_job_warm_start_is_off(probe):
    run, _, _ = probe
    status, out, _ = _finish(run(SLURM_JOB_ID="12"))
    assert status == 0 and out.split()[1] == "False"


def test_errors_keep_their_status_and_message(probe):
    run, _, _ = probe
    status, out, err = _finish(run(PROBE_ACTION="raise"))
    assert out.split()[1] == "True"  # in a forked child, not after a fallback to this process
    assert status == 1
    lines = err.strip().splitlines()
    assert lines[-1] == "ValueError: a one-line message"
    assert "warm_start" not in err and "runpy" not in err  # the traceback starts at the script
    status, out, err = _finish(run(PROBE_ACTION="message"))
    assert out.split()[1] == "True"
    assert status == 1 and err.strip().splitlines()[-1] == "stopped with a message"


def _start_sleeping_job(run, pid_file: Path):
    """(the caller's process, the job's pid) once the job runs."""
    proc = run(PROBE_ACTION="sleep", PROBE_PID_FILE=str(pid_file))
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc, int(pid_file.read_text())


def test_a_job_whose_caller_dies_is_stopped(probe, tmp_path):
    run, _, _ = probe
    proc, job = _start_sleeping_job(run, tmp_path / "job.pid")
    assert job != proc.pid
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while _alive(job):
        assert time.monotonic() < deadline, "the orphaned job kept running"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return status != "Z"


def test_an_idle_server_exits_and_removes_its_socket(probe):
    run, _, servers = probe
    assert _finish(run(INTERP_WARM_IDLE_S="1"))[0] == 0
    server = _server_pid(next(servers.glob("*.log")))
    deadline = time.monotonic() + 20
    while list(servers.glob("*.sock")) or _alive(server):
        assert time.monotonic() < deadline, list(servers.iterdir())
        time.sleep(0.1)
    assert "exiting" in next(servers.glob("*.log")).read_text()


def test_concurrent_first_calls_start_one_server(probe):
    run, _, servers = probe
    procs = [run(PROBE_STATUS="2") for _ in range(6)]  # one environment, so one server's key
    results = [_finish(p) for p in procs]
    assert [status for status, _, _ in results] == [2] * 6
    assert all(out.split()[1] == "True" for _, out, _ in results)
    assert len(list(servers.glob("*.log"))) == 1
    assert len({int(out.split()[3]) for _, out, _ in results}) == 1  # every job's parent: the one server


def test_when_the_server_dies_its_job_dies_and_the_caller_reports_failure(probe, tmp_path):
    run, _, servers = probe
    proc, job = _start_sleeping_job(run, tmp_path / "job.pid")
    os.kill(_server_pid(next(servers.glob("*.log"))), signal.SIGKILL)  # as the OOM killer would
    status, _, err = _finish(proc)
    assert status == 1 and "the server stopped before the job finished" in err
    deadline = time.monotonic() + 10
    while _alive(job):
        assert time.monotonic() < deadline, "the job outlived its server"
        time.sleep(0.05)


def test_a_directory_others_may_enter_is_not_used(probe, tmp_path):
    run, _, servers = probe
    servers.mkdir(mode=0o755)
    servers.chmod(0o755)
    status, out, err = _finish(run())
    assert status == 0 and out.split()[1] == "False"
    assert "is not a private directory of this user" in err


def test_the_server_key_follows_code_environment_but_not_volatile_variables(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    env = {"HOME": "/root", "PYTEST_CURRENT_TEST": "one"}
    key = server_key(env, "/work", package)
    assert server_key({**env, "PYTEST_CURRENT_TEST": "two", "_": "/bin/ls"}, "/work", package) == key
    assert server_key({**env, "OMP_NUM_THREADS": "2"}, "/work", package) != key
    assert server_key(env, "/elsewhere", package) != key  # imports may read the working directory
    (package / "a.py").write_text("x = 22\n")  # an edit
    assert server_key(env, "/work", package) != key


def test_a_server_that_refuses_to_serve_is_not_retried(probe):
    """A preload that starts a thread (here: a module that starts one on import) makes forking
    unsafe: the server refuses, leaves the reason, and every later call of that environment
    runs in its own process at once."""
    run, work, servers = probe
    (work / "starts_a_thread.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n")
    extra = {"INTERP_WARM_PRELOAD": "starts_a_thread", "PYTHONPATH": f"{REPO}{os.pathsep}{work}"}
    for _ in range(2):
        status, out, err = _finish(run(**extra))
        assert status == 0 and out.split()[1] == "False"  # ran here, not in a forked child
        assert "threads after preloading; forking is unsafe" in err
    (refusal,) = servers.glob("*.refused")
    assert "forking is unsafe" in refusal.read_text()
    assert len(list(servers.glob("*.log"))) == 1  # one server was started, not one per call
