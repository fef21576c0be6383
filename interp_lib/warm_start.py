"""Warm start for the workflow's scripts: one preloaded interpreter forks a process per job.

A workflow job's own work often takes well under a second, while a fresh Python process
spends about 4 s importing torch and transformers. `run_warm(globals())`, the first
statement of every script in workflow/scripts/, sends the script to a server process that
has imported them once and forks a child per job: the child adopts the job's working
directory, environment and standard streams, runs the very script Snakemake wrote
(preamble included), and its exit status becomes the job's. The DAG and every output are
unchanged: one job is still one process, just forked from a warm parent instead of a
cold interpreter.

A server serves one (interpreter, sys.path, environment, interp_lib source) combination:
editing interp_lib, installing a package or changing an environment variable gives a new
server; an idle server exits after INTERP_WARM_IDLE_S seconds (default 60). If a job's
client dies (Snakemake interrupted), the server kills the job's process group.
INTERP_WARM_START=0 turns it off; it is off inside SLURM, PBS and LSF jobs (one job per
allocation there). Whenever no server can be used the script simply runs in its own
process, as it would without this module.

Snakemake's benchmark files then measure the client: wall time is the job's, but max_rss
and cpu_time are not (run with INTERP_WARM_START=0 to measure those).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
OFF_VALUES = {"0", "false", "no", "off"}
BATCH_SCHEDULERS = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID")
# Imported once by each server (failures are skipped); INTERP_WARM_PRELOAD overrides.
PRELOAD = (
    "torch", "numpy", "h5py", "pandas", "scipy.stats", "safetensors.torch", "tqdm", "yaml",
    "transformers", "transformers.models.gemma2.modeling_gemma2", "transformers.models.llama.modeling_llama",
    "peft", "sklearn.linear_model", "sklearn.model_selection", "matplotlib", "matplotlib.pyplot",
    "interp_lib.jobs.caching", "interp_lib.jobs.patching", "interp_lib.jobs.steering",
    "interp_lib.jobs.counterfactual", "interp_lib.models", "interp_lib.prompts", "interp_lib.dla",
    "interp_lib.logit_lens", "interp_lib.attention", "interp_lib.probes", "interp_lib.weight_deltas",
    "interp_lib.rq_summary", "interp_lib.plots.dla", "interp_lib.plots.logit_lens", "interp_lib.plots.patching",
    "interp_lib.plots.steering", "interp_lib.plots.probes", "interp_lib.plots.weights", "interp_lib.plots.attention",
    "interp_lib.plots.counterfactual", "interp_lib.demo", "interp_lib.rl_training",
)
# Set per shell or per test phase; nothing reads them at import time, so they do not key a server.
VOLATILE_ENV = {"_", "PWD", "OLDPWD", "SHLVL", "PYTEST_CURRENT_TEST"}
CONNECT_TIMEOUT_S = 180.0
_HEADER = struct.Struct("!I")
_in_child = False  # set in a forked job: run_warm then returns and the script runs here


def run_warm(script_globals: dict) -> None:
    """Runs the calling script in a child of a warm server and exits with its status.

    Returns without doing anything when warm start is off, inside a forked job, or when no
    server can be reached: the script then runs in this process."""
    if _in_child or not enabled(os.environ):
        return
    script = script_globals.get("__real_file__") or script_globals.get("__file__")
    if not script:
        return
    request = {"script": os.path.abspath(script), "cwd": os.getcwd(), "env": dict(os.environ), "argv": sys.argv}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        conn = connect(os.environ)
        _send(conn, request)
    except OSError as exc:  # nothing has run yet
        print(f"warm start unavailable ({exc}); running in this process", file=sys.stderr)
        return
    raise SystemExit(_wait(conn))


def enabled(env) -> bool:
    if env.get("INTERP_WARM_START", "1").strip().lower() in OFF_VALUES:
        return False
    return sys.platform == "linux" and not any(name in env for name in BATCH_SCHEDULERS)


def server_key(env, package_root: Path = PACKAGE_ROOT) -> str:
    """Hash of what a preloaded interpreter depends on: the interpreter, the environment
    (PYTHONPATH included), its site-packages (installing a package changes their mtimes) and
    the name, size and mtime of every interp_lib source file."""
    import site

    h = hashlib.sha256()
    stable_env = sorted((k, v) for k, v in env.items() if k not in VOLATILE_ENV)
    h.update(json.dumps([sys.executable, sys.version, str(package_root), stable_env]).encode())
    for path in sorted(package_root.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(package_root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    for entry in [*site.getsitepackages(), site.getusersitepackages()]:
        with contextlib.suppress(OSError):
            h.update(f"{entry}:{os.stat(entry).st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def server_dir(env) -> Path:
    root = env.get("INTERP_WARM_DIR") or os.path.join(env.get("XDG_RUNTIME_DIR") or tempfile.gettempdir(),
                                                      f"interp-warm-{os.getuid()}")
    path = Path(root)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def connect(env) -> socket.socket:
    """A connection to this environment's server, started first if it is not running."""
    import fcntl

    base = server_dir(env) / server_key(env)
    address = f"{base}.sock"
    with contextlib.suppress(OSError):
        return _connect(address)
    with open(f"{base}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter; the others wait here, then connect
        with contextlib.suppress(OSError):
            return _connect(address)
        with open(f"{base}.log", "ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                 "from interp_lib.warm_start import serve; serve(sys.argv[2])",
                 str(PACKAGE_ROOT.parent), address],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd="/", env=dict(env))
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                return _connect(address)
            if server.poll() is not None:
                raise OSError(f"the server exited with status {server.returncode}; see {base}.log")
            time.sleep(0.05)
        server.kill()
        raise OSError(f"the server did not start within {CONNECT_TIMEOUT_S:.0f} s; see {base}.log")


def _connect(address: str) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address)
    except OSError:
        conn.close()
        raise
    return conn


def _send(conn: socket.socket, request: dict) -> None:
    """Sends the request with this process's stdin, stdout and stderr."""
    payload = json.dumps(request).encode()
    try:
        socket.send_fds(conn, [_HEADER.pack(len(payload))], [0, 1, 2])
        conn.sendall(payload)
    except OSError:
        conn.close()
        raise


def _wait(conn: socket.socket) -> int:
    """The job's exit status (1 if the server went away without one)."""
    reply = b""
    with conn:
        with contextlib.suppress(OSError):
            while chunk := conn.recv(4096):
                reply += chunk
    try:
        return int(json.loads(reply)["status"])
    except (ValueError, KeyError):
        print("warm start: the server stopped before the job finished", file=sys.stderr)
        return 1


# --- server -------------------------------------------------------------------------


def serve(address: str, idle_timeout: float | None = None) -> None:
    """Preloads modules, then forks one child per request until idle for `idle_timeout` s."""
    import selectors
    import signal
    import threading

    env = os.environ
    idle_timeout = float(env.get("INTERP_WARM_IDLE_S", 60)) if idle_timeout is None else idle_timeout
    # torch.cuda.is_available() then asks NVML instead of initialising the CUDA driver, which a
    # forked child could not use; jobs see their own environment, not this one.
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    fresh_torch_rng = _preload(env.get("INTERP_WARM_PRELOAD"))
    if _cuda_driver_loaded():
        raise SystemExit("warm start: the CUDA driver was loaded while preloading; a forked job could not use it")
    if threading.active_count() != 1:
        raise SystemExit(f"warm start: {threading.active_count()} threads after preloading; forking is unsafe")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(address)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    inode = os.stat(address).st_ino
    print(f"{time.strftime('%F %T')} serving {address} (pid {os.getpid()})", flush=True)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    jobs: dict[int, tuple[socket.socket, int]] = {}  # pid -> (client connection, pidfd)
    closing = False
    while True:
        if closing and not jobs:
            # The address is gone, so no client can connect any more; serve the ones that
            # connected before it went, then stop.
            events = sel.select(timeout=0)
            if not events:
                break
        else:
            events = sel.select(timeout=None if jobs else idle_timeout)
            if not events and not jobs:
                closing = True
                if not _replaced(address, inode):
                    os.unlink(address)
                continue
        for key, _ in events:
            kind = key.data
            if kind == "accept":
                conn, _ = listener.accept()
                try:
                    request, fds = _receive(conn)
                except (OSError, ValueError) as exc:
                    print(f"bad request: {exc}", flush=True)
                    conn.close()
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    listener.close()
                    for other, _pidfd in jobs.values():
                        other.close()
                    _run_child(conn, fds, request, fresh_torch_rng)
                with contextlib.suppress(OSError):  # also done by the child: whichever runs first
                    os.setpgid(pid, pid)
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                jobs[pid] = (conn, pidfd)
                sel.register(pidfd, selectors.EVENT_READ, ("exited", pid))
                sel.register(conn, selectors.EVENT_READ, ("client", pid))
            elif kind[0] == "exited":
                pid = kind[1]
                conn, pidfd = jobs.pop(pid)
                _, status = os.waitpid(pid, 0)
                for obj in (pidfd, conn):
                    with contextlib.suppress(KeyError):  # a client that went away is unregistered
                        sel.unregister(obj)
                os.close(pidfd)
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode())
                conn.close()
            elif kind[0] == "client" and kind[1] in jobs:
                # The client said nothing after its request, so readable means it went away.
                pid = kind[1]
                sel.unregister(jobs[pid][0])
                print(f"client of job {pid} went away; stopping the job", flush=True)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
        if not jobs and not closing and _replaced(address, inode):
            closing = True  # another server took the address (e.g. after a race on start)
    listener.close()
    print(f"{time.strftime('%F %T')} idle for {idle_timeout:.0f} s; exiting", flush=True)
    base = address.removesuffix(".sock")
    if not os.path.exists(address):  # no newer server uses these names
        for path in (f"{base}.log", f"{base}.lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _cuda_driver_loaded() -> bool:
    try:
        return "libcuda.so" in Path("/proc/self/maps").read_text()
    except OSError:
        return True  # cannot tell: do not serve


def _replaced(address: str, inode: int) -> bool:
    try:
        return os.stat(address).st_ino != inode
    except FileNotFoundError:
        return True


def _preload(names: str | None):
    import importlib

    fresh_torch_rng = None
    for name in (names.split(",") if names is not None else PRELOAD):
        if not name:
            continue
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # an optional package that is missing: its jobs import it themselves
            print(f"not preloaded: {name} ({type(exc).__name__}: {exc})", flush=True)
            continue
        if name == "torch":
            fresh_torch_rng = module.random.get_rng_state()
    return fresh_torch_rng


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    if len(header) != _HEADER.size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError("expected a length and three file descriptors")
    (size,) = _HEADER.unpack(header)
    payload = b""
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            raise ValueError("truncated request")
        payload += chunk
    return json.loads(payload), fds


def _run_child(conn: socket.socket, fds: list[int], request: dict, fresh_torch_rng) -> None:
    """In the forked child: become the job (streams, directory, environment, fresh random
    state), run the script as __main__, exit with its status. Never returns."""
    global _in_child
    import random
    import runpy
    import signal
    import traceback

    status = 1
    try:
        conn.close()
        with contextlib.suppress(OSError):  # the job and anything it starts can be stopped together
            os.setpgid(0, 0)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        tempfile.tempdir = None
        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        if fresh_torch_rng is not None:
            sys.modules["torch"].random.set_rng_state(fresh_torch_rng)
        _in_child = True
        runpy.run_path(request["script"], run_name="__main__")
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    except BaseException as exc:
        tb = exc.__traceback__  # from the script's frames on, as a fresh interpreter would print it
        while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, "<frozen runpy>"):
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)
