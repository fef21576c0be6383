"""Writes constraints.txt: the version installed in this environment of everything interp_lib
needs (pyproject.toml's dependencies and its extras test and slurm, followed transitively
through the installed packages' own requirements), for `pip install ... -c constraints.txt`.

torch itself, and the nvidia-* and triton packages a CUDA build of it brings, stay out: the
install commands pin torch on their own (README: "A reproducible environment"), so that a GPU
user installs the CUDA build of that version. Packages installed by hand (ruff, the real
families' GGUF packages, pinned in .ci/run) are not requirements and stay out too.

Run it with the interpreter of an environment where the tests pass (CI's: Python 3.11, Linux):

    .venv/bin/python tools/update_constraints.py            # rewrites constraints.txt
    .venv/bin/python tools/update_constraints.py --check    # exit 1 if its pins differ (.ci/run)
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    sys.exit("tools/update_constraints.py needs Python 3.11 or later (tomllib), as CI uses")

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "constraints.txt"
EXTRAS = ("test", "slurm")
NOT_LOCKED = re.compile(r"^(torch|triton|pytorch-triton.*|nvidia-.*)$")  # canonical names

HEADER = """\
# The versions CI tested (.ci/run), for `pip install torch==2.13.0 -e '.[test,slurm]' -c constraints.txt`.
# Every package interp_lib needs (pyproject.toml's dependencies and extras test and slurm,
# transitively), as installed in the environment where the tests passed: Python {python}, {platform}.
# torch (and a CUDA build's nvidia-* and triton) is not here: the install command pins it, so
# that a GPU user installs the CUDA build of that version from the PyTorch index.
# Written by tools/update_constraints.py; to regenerate after upgrading that environment:
#   .venv/bin/python tools/update_constraints.py
"""


def locked_versions() -> dict[str, str]:
    """{distribution name: installed version} of every package the project needs, torch aside."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    queue = [(Requirement(r), ()) for r in project["dependencies"]]
    queue += [(Requirement(r), ()) for extra in EXTRAS for r in project["optional-dependencies"][extra]]
    pins: dict[str, str] = {}
    done: set[tuple[str, frozenset]] = set()
    while queue:
        req, parent_extras = queue.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in ("", *parent_extras)):
            continue
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in done:
            continue
        done.add((name, frozenset(req.extras)))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{req} is required but not installed in {sys.prefix}")
        if not NOT_LOCKED.match(name):
            pins[dist.metadata["Name"]] = dist.version
        queue += [(Requirement(r), tuple(req.extras)) for r in dist.requires or ()]
    return pins


def render(pins: dict[str, str]) -> str:
    platform = {"linux": "Linux", "darwin": "macOS", "win32": "Windows"}.get(sys.platform, sys.platform)
    lines = [f"{name}=={version}" for name, version in sorted(pins.items(), key=lambda kv: canonicalize_name(kv[0]))]
    python = ".".join(map(str, sys.version_info[:2]))
    return HEADER.format(python=python, platform=platform) + "\n".join(lines) + "\n"


def _pins(text: str) -> set[str]:
    return {line for line in text.splitlines() if line and not line.startswith("#")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if constraints.txt's pins are not this environment's")
    args = parser.parse_args(argv)
    text = render(locked_versions())
    if args.check:  # the pins only: the header names the Python that wrote it
        want, have = _pins(text), _pins(OUT.read_text() if OUT.exists() else "")
        if want != have:
            print(f"{OUT.name} is not this environment's versions (rerun tools/update_constraints.py):",
                  *[f"  installed {line}" for line in sorted(want - have)],
                  *[f"  locked    {line}" for line in sorted(have - want)], sep="\n", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({text.count(chr(10)) - HEADER.count(chr(10))} packages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
