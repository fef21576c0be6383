"""Deprecated API called by our code is an error (docs/environment.md).

A `Guard` sees, as they are emitted, every DeprecationWarning, PendingDeprecationWarning and
FutureWarning (Python warnings, from Python or C code: it replaces `warnings._showwarnmsg`,
which both reach) and every record on the transformers and peft loggers whose message
mentions deprecation, and decides whose call it is. The call is ours when the deprecated API's
caller is a file of interp_lib/ or workflow/scripts/ (or Snakemake's copy of such a script
under .snakemake/scripts/). The caller is the location the warning names (its stacklevel); when
that is the very line that warns (stacklevel 1, as transformers' `is_gradient_checkpointing`
does) or the message came through a logger, it is the frame that called the function that
warned. So a deprecated API that a library calls itself (peft reading `is_gradient_checkpointing`
inside `get_peft_model`) is the library's, although our code is further out on the stack;
those are collected in `theirs`, not errors.

tests/conftest.py installs a recording guard for the whole pytest session (the test during
which our code made such a call fails, one line per call) and sets INTERP_DEPRECATIONS_AS_ERRORS=1,
with which importing interp_lib installs a raising guard in any process (interp_lib/__init__.py;
every workflow script imports from interp_lib before its own statements run), so that the
workflow tests' jobs fail on such a call too. The pytest session's own guard records, not raises.

Not seen: a warning that a library or a test silences itself (an "ignore" filter), a logger
record below the logger's level, and what a process emitted before it first imported
interp_lib.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from pathlib import Path

CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
LOGGERS = ("transformers", "peft")
ENV = "INTERP_DEPRECATIONS_AS_ERRORS"
REPO = Path(__file__).resolve().parents[1]
OUR_ROOTS = (REPO / "interp_lib", REPO / "workflow" / "scripts")


@functools.lru_cache(maxsize=4096)
def _real(filename: str) -> str:
    return os.path.normcase(os.path.realpath(filename))


# Frames that only carry a warning or a record to us: skipped when looking for its caller.
_PLUMBING = {_real(f) for f in (__file__, warnings.__file__, logging.__file__)}
_PLUMBING_SUFFIXES = (os.path.join("transformers", "utils", "logging.py"),)


class DeprecatedCall(Exception):
    """Our code called an API its library marks deprecated."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Guard:
    """Attributes deprecations to our code or to libraries; `install()` starts watching.

    raise_errors: raise DeprecatedCall where our code made the call (a workflow script);
    otherwise record it in `ours` (the pytest session, which fails the test)."""

    def __init__(self, roots=OUR_ROOTS, raise_errors: bool = False):
        self.roots = tuple(_real(str(r)).rstrip(os.sep) + os.sep for r in roots)
        self.raise_errors = raise_errors
        self.ours: list[str] = []  # one line per call, in order
        self.theirs: dict[str, int] = {}  # one line per deprecation -> times seen
        self._handler = _DeprecationHandler(self)
        self._hook = self._showwarnmsg  # one bound method, to recognise it when uninstalling
        self._show = self._previous = None
        self._shown: set = set()

    def is_ours(self, filename: str | None) -> bool:
        if not filename or filename.startswith("<"):
            return False
        path = _real(filename)
        parent = os.path.dirname(path)
        return path.startswith(self.roots) or (os.path.basename(parent) == "scripts"
                                                and os.path.basename(os.path.dirname(parent)) == ".snakemake")

    def caller(self, filename: str | None = None, lineno: int | None = None) -> tuple[str, str | None, bool]:
        """(where the library warned, where the deprecated API was called, whether that call is
        ours) for the warning or record being reported now, as `file:line`. filename, lineno:
        where a warning says it was called from (its stacklevel)."""
        frames = self._frames()
        emitter = next(frames, None)
        warned = self._where(emitter.f_code.co_filename, emitter.f_lineno) if emitter else "?"
        if filename is not None and (self.is_ours(filename) or emitter is None
                                     or (emitter.f_code.co_filename, emitter.f_lineno) != (filename, lineno)):
            return warned, self._where(filename, lineno), self.is_ours(filename)
        caller = next(frames, None)  # stacklevel 1 or a logger: the caller of the function that warned
        if caller is None:
            return warned, None, False
        return warned, self._where(caller.f_code.co_filename, caller.f_lineno), self.is_ours(caller.f_code.co_filename)

    def report(self, message: str, where: tuple[str, str | None, bool]) -> None:
        """where: `caller()`'s answer."""
        warned, called, ours = where
        if not ours:
            key = f"{message} ({warned}{f', called from {called}' if called and called != warned else ''})"
            self.theirs[key] = self.theirs.get(key, 0) + 1
            return
        line = f"deprecated API called by our code at {called}: {message}"
        self.ours.append(line)
        if self.raise_errors:
            raise DeprecatedCall(line)

    def install(self, show=None) -> Guard:
        """Starts watching; show: where warnings go on (default: where they went before)."""
        if self._show is None:
            self._previous = warnings._showwarnmsg
            self._show = show or self._previous
            warnings._showwarnmsg = self._hook
            for category in CATEGORIES:  # every emission reaches the hook, not the first per line only
                warnings.filterwarnings("always", category=category)
            for name in LOGGERS:
                logging.getLogger(name).addHandler(self._handler)
        return self

    def uninstall(self) -> None:
        if self._show is not None:
            if warnings._showwarnmsg is self._hook:
                warnings._showwarnmsg = self._previous
            for name in LOGGERS:
                logging.getLogger(name).removeHandler(self._handler)
            self._show = None

    def _showwarnmsg(self, msg: warnings.WarningMessage) -> None:
        if not issubclass(msg.category, CATEGORIES):
            return self._show(msg)
        self.report(f"{msg.category.__name__}: {_one_line(msg.message)}", self.caller(msg.filename, msg.lineno))
        if self.raise_errors and not sys.warnoptions:
            # Shown as Python's default filters would: a FutureWarning once per line, others not.
            key = (str(msg.message), msg.category, msg.filename, msg.lineno)
            if msg.category is not FutureWarning or key in self._shown:
                return None
            self._shown.add(key)
        return self._show(msg)

    def _frames(self):
        """Frames from the innermost outward, past the ones that carry a warning or record."""
        frame = sys._getframe(1)
        while frame is not None:
            name = frame.f_code.co_filename
            if _real(name) not in _PLUMBING and not name.endswith(_PLUMBING_SUFFIXES):
                yield frame
            frame = frame.f_back

    @staticmethod
    def _where(filename: str, lineno: int | None) -> str:
        """file:line, the file relative to the repository or to site-packages where it lies there."""
        real, repo = _real(filename), _real(str(REPO)) + os.sep
        if f"{os.sep}site-packages{os.sep}" in filename:  # first: a venv may lie inside the repository
            filename = filename.rsplit(f"{os.sep}site-packages{os.sep}", 1)[1]
        elif real.startswith(repo):
            filename = real[len(repo):]
        return f"{filename}:{lineno}"


class _DeprecationHandler(logging.Handler):
    def __init__(self, guard: Guard):
        super().__init__()
        self.guard = guard

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):  # a record whose arguments do not fit its format
            return
        if "deprecat" in text.lower():
            self.guard.report(f"{record.name} logger: {_one_line(text)}", self.guard.caller())


_installed: Guard | None = None


def install(raise_errors: bool = False) -> Guard:
    """The process's guard, installed once (a second call returns the first one)."""
    global _installed
    if _installed is None:
        _installed = Guard(raise_errors=raise_errors).install()
    return _installed


def installed() -> Guard | None:
    return _installed


def install_from_env(environ=os.environ) -> Guard | None:
    """A raising guard where INTERP_DEPRECATIONS_AS_ERRORS is set (importing interp_lib calls this)."""
    if environ.get(ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        return install(raise_errors=True)
    return None
