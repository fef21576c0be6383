"""The warm-start server (see warm_start.py): preloads the libraries the workflow's scripts
import, then forks one child per job until it has been idle for a while.

Single-threaded on purpose: a process that forks must have no other threads, so one
selector loop accepts requests, watches each job's process (a pidfd) and its client's
connection (the client closing it means Snakemake stopped the job).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from . import warm_start
from .io import atomic_path
from .warm_start import ACK, HEADER

# Imported once by each server (failures are skipped); INTERP_WARM_PRELOAD overrides.
PRELOAD = (
    "torch", "numpy", "h5py", "pandas", "scipy.stats", "safetensors.torch", "tqdm", "yaml",
    "transformers", "transformers.models.gemma2.modeling_gemma2", "transformers.models.llama.modeling_llama",
    "peft", "sklearn.linear_model", "sklearn.model_selection", "matplotlib", "matplotlib.pyplot",
    "snakemake.iocontainers", "snakemake.logging",
    "interp_lib.jobs.caching", "interp_lib.jobs.patching", "interp_lib.jobs.steering",
    "interp_lib.jobs.counterfactual", "interp_lib.models", "interp_lib.prompts", "interp_lib.dla",
    "interp_lib.logit_lens", "interp_lib.attention", "interp_lib.probes", "interp_lib.weight_deltas",
    "interp_lib.report.rq_summary", "interp_lib.report.patching_tables", "interp_lib.plots.dla",
    "interp_lib.plots.logit_lens", "interp_lib.plots.patching", "interp_lib.plots.steering", "interp_lib.plots.probes",
    "interp_lib.plots.weights", "interp_lib.plots.attention", "interp_lib.plots.counterfactual", "interp_lib.demo",
    "interp_lib.rl_training",
)
KILL_GRACE_S = 10.0  # after SIGTERM, a job whose client went away gets SIGKILL
PR_SET_PDEATHSIG = 1


def serve(address: str, idle_timeout: float | None = None) -> None:
    """Listens on `address` (first, so that clients can queue), preloads, then forks one
    child per request until idle for `idle_timeout` s (INTERP_WARM_IDLE_S, default 60)."""
    env = os.environ
    idle_timeout = float(env.get("INTERP_WARM_IDLE_S", 60)) if idle_timeout is None else idle_timeout
    base = address.removesuffix(".sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(address)  # a dead server's: the client started this one because it refused
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    inode = None
    try:
        listener.bind(address)
        listener.listen(128)
        inode = os.stat(address).st_ino
        # torch.cuda.is_available() then asks NVML instead of initialising the CUDA driver,
        # which a forked child could not use; jobs see their own environment, not this one.
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
        fresh_torch_rng = _preload(env.get("INTERP_WARM_PRELOAD"))
        if _cuda_driver_loaded():
            raise RuntimeError("the CUDA driver was loaded while preloading; a forked job could not use it")
        if _threads() != 1:
            raise RuntimeError(f"{_threads()} threads after preloading; forking is unsafe")
    except Exception as exc:  # the clients of this key then run in their own processes, without retrying
        with atomic_path(f"{base}.refused") as tmp:
            tmp.write_text(f"{type(exc).__name__}: {exc}\n")
        with contextlib.suppress(OSError):
            if os.stat(address).st_ino == inode:
                os.unlink(address)
        raise SystemExit(f"warm start: refused to serve: {exc}") from exc
    print(f"{time.strftime('%F %T')} serving {address} (pid {os.getpid()})", flush=True)
    _Loop(listener, address, inode, idle_timeout, fresh_torch_rng).run()
    print(f"{time.strftime('%F %T')} idle for {idle_timeout:.0f} s; exiting", flush=True)


class _Loop:
    def __init__(self, listener, address, inode, idle_timeout, fresh_torch_rng):
        self.listener, self.address, self.inode = listener, address, inode
        self.idle_timeout, self.fresh_torch_rng = idle_timeout, fresh_torch_rng
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, ("accept", None))
        self.jobs: dict[int, tuple[socket.socket, int | None]] = {}  # pid -> (client, pidfd or None: polled)
        self.kill_at: dict[int, float | None] = {}  # pid -> when SIGKILL follows its SIGTERM (None: sent)

    def run(self) -> None:
        closing = False
        while True:
            if closing and not self.jobs:
                # The address is gone, so nobody can connect any more: serve whoever connected
                # before it went, then stop.
                events = self.sel.select(timeout=0)
                if not events:
                    break
            else:
                events = self.sel.select(timeout=self._timeout())
                if not events and not self.jobs:
                    closing = True
                    if not self._replaced():
                        os.unlink(self.address)
                    continue
            for key, _ in events:
                kind, pid = key.data
                if kind == "accept":
                    self._accept()
                elif kind == "exited":
                    self._finish(pid)
                elif kind == "client":
                    self._stop(pid)
            self._poll_children()
            self._escalate()
            if not self.jobs and not closing and self._replaced():
                closing = True  # another server took the address (e.g. after a race on start)
        self.listener.close()

    def _timeout(self) -> float | None:
        waits = [0.05] if any(pidfd is None for _, pidfd in self.jobs.values()) else []
        waits += [max(0.0, t - time.monotonic()) for t in self.kill_at.values() if t is not None]
        if waits:
            return min(waits)
        return None if self.jobs else self.idle_timeout

    def _replaced(self) -> bool:
        try:
            return os.stat(self.address).st_ino != self.inode
        except FileNotFoundError:
            return True

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError as exc:
            print(f"accept failed: {exc}", flush=True)
            return
        try:
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
            if uid != os.getuid():
                raise ValueError(f"a client of user {uid}")
            request, fds = _receive(conn)
        except (OSError, ValueError) as exc:
            print(f"request refused: {exc}", flush=True)
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        server = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:  # the client sees no ACK and runs the job itself
            print(f"fork failed: {exc}", flush=True)
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        if pid == 0:
            self.sel.close()
            self.listener.close()
            for other, pidfd in self.jobs.values():
                other.close()
                if pidfd is not None:
                    os.close(pidfd)
            _run_child(server, conn, fds, request, self.fresh_torch_rng)
        with contextlib.suppress(OSError):  # also done by the child: whichever runs first
            os.setpgid(pid, pid)
        for fd in fds:
            os.close(fd)
        try:
            pidfd = os.pidfd_open(pid)
            self.sel.register(pidfd, selectors.EVENT_READ, ("exited", pid))
        except OSError:  # no pidfds (old kernels, some seccomp profiles): poll with waitpid
            pidfd = None
        self.jobs[pid] = (conn, pidfd)
        self.sel.register(conn, selectors.EVENT_READ, ("client", pid))
        try:
            conn.sendall(ACK)
        except OSError:
            self._stop(pid)

    def _poll_children(self) -> None:
        for pid, (_, pidfd) in list(self.jobs.items()):
            if pidfd is None:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    self._finish(pid, status)

    def _finish(self, pid: int, status: int | None = None) -> None:
        conn, pidfd = self.jobs.pop(pid)
        self.kill_at.pop(pid, None)
        if status is None:
            _, status = os.waitpid(pid, 0)
        for obj in (pidfd, conn):
            if obj is not None:
                with contextlib.suppress(KeyError):  # a client that went away is unregistered
                    self.sel.unregister(obj)
        if pidfd is not None:
            os.close(pidfd)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode())
        conn.close()

    def _stop(self, pid: int) -> None:
        """The client said nothing after its request, so its connection turning readable
        means it went away: stop the job and whatever it started."""
        if pid not in self.jobs or pid in self.kill_at:
            return
        with contextlib.suppress(KeyError):
            self.sel.unregister(self.jobs[pid][0])
        print(f"client of job {pid} went away; stopping the job", flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        self.kill_at[pid] = time.monotonic() + KILL_GRACE_S

    def _escalate(self) -> None:
        now = time.monotonic()
        for pid, when in list(self.kill_at.items()):
            if when is not None and now >= when and pid in self.jobs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self.kill_at[pid] = None


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _cuda_driver_loaded() -> bool:
    try:
        return "libcuda.so" in Path("/proc/self/maps").read_text()
    except OSError:
        return True  # cannot tell: do not serve


def _preload(names: str | None):
    """Imports `names` (comma-separated; default PRELOAD); returns torch's fresh RNG state."""
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
    header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
    if len(header) != HEADER.size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError("expected a length and three file descriptors")
    (size,) = HEADER.unpack(header)
    payload = b""
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            for fd in fds:
                os.close(fd)
            raise ValueError("truncated request")
        payload += chunk
    return json.loads(payload), fds


def _run_child(server: int, conn: socket.socket, fds: list[int], request: dict, fresh_torch_rng) -> None:
    """In the forked child: become the job (streams, directory, environment, umask, fresh
    random state, the signal handlers of a fresh interpreter), run the script as __main__,
    shut down as the interpreter would, exit with the script's status. Never returns."""
    import atexit
    import random
    import runpy
    import tempfile
    import threading
    import traceback

    status = 1
    try:
        _die_with(server)
        conn.close()
        with contextlib.suppress(OSError):  # the job and anything it starts can be stopped together
            os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python sets it at startup
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.umask(request["umask"])
        sys.argv = list(request["argv"])
        sys.path[:] = [os.path.dirname(request["script"]), *[p for p in sys.path if p]]
        tempfile.tempdir = None
        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        if fresh_torch_rng is not None:
            sys.modules["torch"].random.set_rng_state(fresh_torch_rng)
        warm_start._in_child, warm_start._server_pid = True, server
        runpy.run_path(request["script"], run_name="__main__")
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException as exc:
        tb = exc.__traceback__  # from the script's frames on, as a fresh interpreter prints it
        while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, "<frozen runpy>"):
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
    finally:
        with contextlib.suppress(BaseException):  # as the interpreter's own shutdown does
            threading._shutdown()  # joins the non-daemon threads
            atexit._run_exitfuncs()
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def _die_with(server: int) -> None:
    """Asks the kernel to kill this process when the server dies, so that no job outlives
    it unnoticed (its client has reported the job failed by then)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != server:  # the server died before the request took effect
        os._exit(1)
