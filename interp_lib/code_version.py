"""Which interp_lib source files a workflow script runs, and a hash of them.

Snakemake's code trigger sees a rule's script but not the modules it imports. Each rule
carries `code_version(script)` as a param: the sha256 of every interp_lib module that the
script imports, followed transitively (imports inside functions included), so that an
edit to one of those modules, and to no other, reruns the rule. Importing a module also
runs its subpackages' `__init__` (counted); a package whose `__init__` holds lazy exports
(`_EXPORTS`, as `interp_lib/__init__.py` does) counts, where a name is imported from it, the
module that defines the name.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "interp_lib"
# Files beside a module that it reads at run time (the embedded tokenizer's vocabulary).
DATA_SUFFIXES = (".json",)


def package_root() -> Path:
    """The directory of the interp_lib that is imported (a copied tree on PYTHONPATH wins)."""
    import interp_lib

    return Path(interp_lib.__file__).resolve().parent


def _module_file(root: Path, dotted: str) -> Path | None:
    """interp_lib.a.b -> root/a/b.py or root/a/b/__init__.py (None outside the package)."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if len(parts) > 1 and candidate.is_file():
            return candidate
    return root / "__init__.py" if len(parts) == 1 else None


def _dotted_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _parent_inits(root: Path, path: Path) -> set[Path]:
    """`__init__.py` of every subpackage that holds `path` (not the root package's)."""
    return {d / "__init__.py" for d in path.parents if d != root and d.is_relative_to(root)}


def _nodes(path: Path) -> list[ast.AST]:
    """The imports and assignments of `path`, parsed once per content of the file: a Snakefile
    computes code_version for every rule, and the rules share most modules."""
    return _walk(str(path), path.read_text())


@functools.cache
def _walk(filename: str, text: str) -> list[ast.AST]:
    return [n for n in ast.walk(ast.parse(text, filename=filename)) if isinstance(n, (ast.Import, ast.ImportFrom, ast.Assign))]


def _lazy_exports(init_file: Path) -> dict[str, str]:
    """A package's `_EXPORTS` table (lazy exports): public name -> module relative to it."""
    for node in _nodes(init_file):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _imports(root: Path, path: Path) -> set[Path]:
    """interp_lib files that `path` imports directly (anywhere in its body)."""
    here = _dotted_name(root, path) if path.is_relative_to(root) else ""
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[Path] = set()
    for node in _nodes(path):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (f := _module_file(root, alias.name)) is not None:
                    found.add(f)
                    found.update(_parent_inits(root, f))
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            module = ".".join(anchor + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        source = _module_file(root, module)
        if source is None:
            continue
        found.update(_parent_inits(root, source))
        for alias in node.names:
            submodule = _module_file(root, f"{module}.{alias.name}")
            if submodule is not None:
                found.add(submodule)
            elif source.name == "__init__.py" and alias.name in (exports := _lazy_exports(source)):
                found.add(_module_file(root, f"{module}.{exports[alias.name]}"))
            else:
                found.add(source)
    return found


def imported_files(script: str | Path, root: Path | None = None) -> list[Path]:
    """Every interp_lib file that `script` reaches through imports, with the data files
    beside them, sorted. `script` may be a workflow script or an interp_lib module."""
    root = root or package_root()
    seen: set[Path] = set()
    todo = [Path(script).resolve()]
    while todo:
        path = todo.pop()
        for dep in _imports(root, path):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    data = {p for module in seen for p in module.parent.iterdir() if p.suffix in DATA_SUFFIXES}
    return sorted(seen | data)


def import_cycles(root: Path | None = None) -> list[list[Path]]:
    """Groups of interp_lib modules that import each other in a circle (imports inside
    functions included; a module's import of its own package's `__init__` is membership,
    not a dependency), each sorted; [] when there is none."""
    root = root or package_root()
    modules = sorted(root.rglob("*.py"))
    graph = {m: sorted(d for d in _imports(root, m)
                       if d != m and d.suffix == ".py" and not (d.name == "__init__.py" and d.parent in m.parents))
             for m in modules}
    order: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    cycles = []
    for start in modules:  # Tarjan's strongly connected components, iteratively
        if start in order:
            continue
        work = [(start, iter(graph[start]))]
        order[start] = low[start] = len(order)
        stack.append(start)
        while work:
            node, deps = work[-1]
            dep = next(deps, None)
            if dep is not None:
                if dep not in order:
                    order[dep] = low[dep] = len(order)
                    stack.append(dep)
                    work.append((dep, iter(graph.get(dep, []))))
                elif dep in stack:
                    low[node] = min(low[node], order[dep])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == order[node]:
                group = []
                while True:
                    member = stack.pop()
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))
    return cycles


def code_version(script: str | Path, root: Path | None = None) -> str:
    """Short sha256 over the relative names and bytes of `imported_files(script)`."""
    root = root or package_root()
    h = hashlib.sha256()
    for path in imported_files(script, root):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]
