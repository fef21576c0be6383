"""Lazy exports of a package (PEP 562): its public names load their defining module on first
use, so that importing the package stays cheap (no torch) and a workflow rule's code version
follows only the modules it uses (code_version reads each package's literal `_EXPORTS`)."""

from __future__ import annotations

import sys
from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]):
    """(`__getattr__`, `__dir__`) for `package`; `exports`: public name -> module relative to it."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
