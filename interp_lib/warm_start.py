"""Warm start for the workflow's scripts: one preloaded interpreter forks a process per job.

A workflow job's own work often takes well under a second, while a fresh Python process
spends about 4 s importing torch and transformers. `run_warm(globals())`, the first
statement of every script in workflow/scripts/, sends the script to a server process
(warm_server.py) that has imported them once and forks a child per job: the child adopts
the job's working directory, environment, umask and standard streams, runs the very script
Snakemake wrote (preamble included), and its exit status becomes the job's. The DAG and
every output are unchanged: one job is still one process, forked from a warm parent
instead of started cold.

A server serves one (host, interpreter, working directory, environment, interp_lib source)
combination: editing interp_lib, installing a package or changing an environment variable
gives a new server; an idle server exits after INTERP_WARM_IDLE_S seconds (default 60). If
a job's client dies (Snakemake interrupted), the server stops the job's process group; if
the server dies, its jobs die with it. INTERP_WARM_START=0 turns it off; it is off inside
SLURM, PBS, LSF and Flux jobs (one job per allocation there). Whenever no server can be
used, the script runs in its own process, as it would without this module.

Snakemake's benchmark files then measure the client: wall time is the job's, but max_rss
and cpu_time are not (run with INTERP_WARM_START=0 to measure those).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
OFF_VALUES = {"0", "false", "no", "off"}
BATCH_SCHEDULERS = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "FLUX_JOB_ID")
# Set per shell or per test phase; nothing reads them at import time, so they do not key a server.
VOLATILE_ENV = {"_", "PWD", "OLDPWD", "SHLVL", "PYTEST_CURRENT_TEST"}
CONNECT_TIMEOUT_S = 180.0
MAX_SOCKET_PATH = 100  # sockaddr_un holds 108 bytes
HEADER = struct.Struct("!I")  # the request's length; the client's stdin, stdout, stderr travel with it
ACK = b"A"  # sent by the server once the job's process exists: from then on it has run
_in_child = False  # True in a forked job: run_warm then returns and the script runs there
_server_pid: int | None = None


def run_warm(script_globals: dict) -> None:
    """Runs the calling script in a child of a warm server and exits with its status.

    Returns without doing anything when warm start is off, inside a forked job, or when no
    server takes the job before it starts: the script then runs in this process.

    With INTERP_DEPRECATIONS_AS_ERRORS=1 (the tests set it), a deprecated API called by our
    code raises wherever the script runs (interp_lib/deprecation_guard.py)."""
    from .deprecation_guard import install_from_env

    install_from_env(os.environ)
    if _in_child or not enabled(os.environ):
        return
    script = script_globals.get("__real_file__") or script_globals.get("__file__")
    if not script:
        return
    umask = os.umask(0o022)
    os.umask(umask)
    request = {"script": os.path.abspath(script), "cwd": os.getcwd(), "env": dict(os.environ), "argv": sys.argv,
               "umask": umask}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        conn = connect(os.environ, request["cwd"])
        _send(conn, request)
        _wait_for_ack(conn)
    except OSError as exc:  # the job has not started anywhere
        # A server that refuses while this job waits in its backlog resets the connection
        # after writing its reason: the reason, not the reset, is what the user needs.
        reason = _refusal(os.environ, request["cwd"]) or exc
        print(f"warm start unavailable ({reason}); running in this process", file=sys.stderr)
        return
    raise SystemExit(_wait_for_status(conn))


def forked_from() -> int | None:
    """The pid of the warm server this process was forked from, or None in a cold process."""
    return _server_pid if _in_child else None


def enabled(env) -> bool:
    if env.get("INTERP_WARM_START", "1").strip().lower() in OFF_VALUES:
        return False
    return sys.platform == "linux" and not any(name in env for name in BATCH_SCHEDULERS)


def server_key(env, cwd: str, package_root: Path = PACKAGE_ROOT) -> str:
    """Hash of what a preloaded interpreter depends on: the host, the interpreter, the working
    directory (imports may read files there), the environment (PYTHONPATH included), its
    site-packages (installing a package changes their mtimes) and the name, size and mtime
    of every interp_lib source file."""
    import site

    h = hashlib.sha256()
    stable_env = sorted((k, v) for k, v in env.items() if k not in VOLATILE_ENV)
    h.update(json.dumps([socket.gethostname(), sys.executable, sys.version, str(package_root), str(cwd),
                         stable_env]).encode())
    for path in sorted(package_root.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(package_root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    for entry in [*site.getsitepackages(), site.getusersitepackages()]:
        with contextlib.suppress(OSError):
            h.update(f"{entry}:{os.stat(entry).st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def server_dir(env) -> Path:
    """The directory of this user's servers: created private, and refused (OSError) unless it
    is a real directory owned by this user that nobody else may enter."""
    root = env.get("INTERP_WARM_DIR") or os.path.join(env.get("XDG_RUNTIME_DIR") or tempfile.gettempdir(),
                                                      f"interp-warm-{os.getuid()}")
    path = Path(root)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{path} is not a private directory of this user")
    return path


def connect(env, cwd: str) -> socket.socket:
    """A connection to this environment's server, started first if it is not running."""
    import fcntl

    base = server_dir(env) / server_key(env, cwd)
    address = f"{base}.sock"
    if len(address.encode()) > MAX_SOCKET_PATH:
        raise OSError(f"the socket path {address} is too long; set INTERP_WARM_DIR to a shorter directory")
    refused = Path(f"{base}.refused")
    if refused.exists():
        raise OSError(f"a server for this environment refused to serve: {refused.read_text().strip()}")
    with contextlib.suppress(OSError):
        return _connect(address)
    lock = os.open(f"{base}.lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter; the others wait here, then connect
        with contextlib.suppress(OSError):
            return _connect(address)
        log = os.open(f"{base}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            server = subprocess.Popen(
                [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                 "from interp_lib.warm_server import serve; serve(sys.argv[2])", str(PACKAGE_ROOT.parent), address],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=cwd, env=dict(env))
        finally:
            os.close(log)
        # The server listens before it preloads: a connection waits in its backlog meanwhile.
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                return _connect(address)
            if server.poll() is not None:
                if refused.exists():
                    raise OSError(f"the server refused to serve: {refused.read_text().strip()}")
                raise OSError(f"the server exited with status {server.returncode}; see {base}.log")
            time.sleep(0.02)
        server.kill()
        raise OSError(f"the server did not start within {CONNECT_TIMEOUT_S:.0f} s; see {base}.log")
    finally:
        os.close(lock)


def _refusal(env, cwd: str) -> str | None:
    """Why this environment's server refused to serve, if it did."""
    with contextlib.suppress(OSError):
        refused = Path(f"{server_dir(env) / server_key(env, cwd)}.refused")
        return f"the server refused to serve: {refused.read_text().strip()}"
    return None


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
        socket.send_fds(conn, [HEADER.pack(len(payload))], [0, 1, 2])
        conn.sendall(payload)
    except OSError:
        conn.close()
        raise


def _wait_for_ack(conn: socket.socket) -> None:
    """Returns once the server has forked the job; OSError if it closed the connection before
    (it refused to serve, could not fork, or exited idle): then nothing has run."""
    try:
        ack = conn.recv(1)
    except OSError:
        conn.close()
        raise
    if ack != ACK:
        conn.close()
        raise OSError("the server closed the connection before starting the job")


def _wait_for_status(conn: socket.socket) -> int:
    """The job's exit status: 128 + n for a job killed by signal n, as a shell reports it;
    1 if the server went away without one (its jobs die with it)."""
    reply = b""
    with conn:
        with contextlib.suppress(OSError):
            while chunk := conn.recv(4096):
                reply += chunk
    try:
        status = int(json.loads(reply)["status"])
    except (ValueError, KeyError):
        print("warm start: the server stopped before the job finished", file=sys.stderr)
        return 1
    return 128 - status if status < 0 else status
