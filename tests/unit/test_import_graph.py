"""A static reading of raylurm's imports: no cycles, and no library module imports a ``__main__``.

Every import statement counts — module level, inside functions and classes, ``import a.b``,
``from a.b import c`` (``c`` may be a submodule), relative imports — plus
``importlib.import_module("literal")`` calls. Each maps to the raylurm modules it names (a
package is its ``__init__.py``): ``import a.b`` -> ``a.b``; ``from a.b import c`` -> ``a.b`` (its
``__init__`` runs and must provide ``c``) and ``a.b.c`` too when that is a submodule. Parents that
Python initialises on the way (``a`` for ``import a.b``) are not edges: a package ``__init__`` that
re-exports its submodules is the usual layout, not a cycle. Imports from outside raylurm are ignored.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import raylurm

PACKAGE_ROOT = Path(raylurm.__file__).resolve().parent


@dataclass(frozen=True)
class Edge:
    target: str
    file: str
    line: int


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under the package directory ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted ``name`` that is a module of ours (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def _base_of_relative(module: str, is_package: bool, level: int) -> str:
    """The package ``from .{level}`` refers to inside ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return package


def _named(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names an import node (or a literal ``import_module`` call) refers to."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = _base_of_relative(module, is_package, node.level) if node.level else ""
        source = ".".join(p for p in (base, node.module or "") if p)
        # ``from a.b import c``: c is a submodule (a.b.c) or a name in a.b; _resolve picks the one that exists
        return [source] + [f"{source}.{alias.name}" for alias in node.names if alias.name != "*"]
    if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in ("import_module", "__import__"):
            return [node.args[0].value]
    return []


def import_graph(root: Path) -> dict[str, dict[str, Edge]]:
    """Module -> {imported module of the same package -> the first statement importing it}."""
    modules = module_names(root)
    graph: dict[str, dict[str, Edge]] = {name: {} for name in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            for name in _named(node, module, is_package):
                target = _resolve(name, modules)
                if target is not None and target != module:
                    graph[module].setdefault(target, Edge(target, str(path.relative_to(root.parent)), node.lineno))
    return graph


def find_cycle(graph: dict[str, dict[str, Edge]]) -> list[Edge] | None:
    """The edges of one import cycle (first in sorted order), or None (iterative DFS, three colours)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        path: list[Edge] = []
        stack = [(start, iter(sorted(graph[start].values(), key=lambda e: e.target)))]
        state[start] = 1
        while stack:
            node, edges = stack[-1]
            edge = next(edges, None)
            if edge is None:
                state[node] = 2
                stack.pop()
                if path:
                    path.pop()
                continue
            if state.get(edge.target) == 1:
                on_path = [e.target for e in path]
                begin = on_path.index(edge.target) + 1 if edge.target in on_path else 0
                return path[begin:] + [edge]
            if not state.get(edge.target):
                state[edge.target] = 1
                path.append(edge)
                stack.append((edge.target, iter(sorted(graph[edge.target].values(), key=lambda e: e.target))))
    return None


def describe_cycle(cycle: list[Edge], start: str) -> str:
    lines, source = [], start
    for edge in cycle:
        lines.append(f"  {source} -> {edge.target}    ({edge.file}:{edge.line})")
        source = edge.target
    return "\n".join(lines)


def main_imports(graph: dict[str, dict[str, Edge]]) -> list[str]:
    """``importer -> X.__main__ (file:line)`` for every non-``__main__`` module importing a ``__main__``."""
    return [f"{module} -> {edge.target} ({edge.file}:{edge.line})"
            for module, edges in sorted(graph.items()) if not module.endswith("__main__")
            for edge in edges.values() if edge.target.endswith("__main__")]


def check_imports(root: Path) -> list[str]:
    """Problems of the package at ``root``: at most one cycle (its path) and every library -> __main__ import."""
    graph = import_graph(root)
    problems = []
    cycle = find_cycle(graph)
    if cycle:
        problems.append(f"import cycle:\n{describe_cycle(cycle, start=cycle[-1].target)}")
    problems += [f"a library module imports a __main__: {line}" for line in main_imports(graph)]
    return problems


# --------------------------------------------------------------------------------------- raylurm


def test_raylurm_has_no_import_cycle_and_no_library_imports_a_main():
    problems = check_imports(PACKAGE_ROOT)
    assert not problems, "\n".join(problems)


def test_the_reading_sees_raylurm_s_real_imports():
    """Guards against a checker that passes because it reads nothing."""
    graph = import_graph(PACKAGE_ROOT)
    assert len(graph) > 60 and "raylurm.boi.pipeline" in graph and "raylurm" in graph
    assert "raylurm.boi.vocabulary" in graph["raylurm.boi.pipeline"]  # module level, from-import of a name
    assert "raylurm.losses.info_nce" in graph["raylurm.losses"]  # a package __init__ re-exporting
    assert {"raylurm.train.batch", "raylurm.losses"} <= set(graph["raylurm.methods.lurm"])
    assert "raylurm.tune.sweeps" in graph["raylurm.bench.tune"]  # in a function: ``from raylurm.tune import sweeps``
    assert "raylurm.serving.app" in graph["raylurm.bench.serve"]  # in a function, from-import of a name


# ------------------------------------------------------------------- the checker on tiny packages


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / next(iter(files)).split("/")[0]


def test_a_module_level_cycle_is_found_with_its_path(tmp_path):
    root = _package(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg.b import f\n",
                               "pkg/b.py": "import os\nimport pkg.c\n", "pkg/c.py": "from pkg import a\n",
                               "pkg/d.py": "import pkg.a\n"})
    problems = check_imports(root)
    assert len(problems) == 1 and problems[0].startswith("import cycle:")
    hops = [line.split("(")[0].split() for line in problems[0].splitlines()[1:]]
    assert [(h[0], h[2]) for h in hops] == [("pkg.a", "pkg.b"), ("pkg.b", "pkg.c"), ("pkg.c", "pkg.a")]
    assert "pkg/b.py:2" in problems[0]


@pytest.mark.parametrize("files", [
    # an import inside a function still closes the cycle
    {"pkg/__init__.py": "", "pkg/a.py": "def f():\n    from pkg.b import g\n", "pkg/b.py": "import pkg.a\n"},
    # inside a class body, and a from-import of a submodule (``from pkg.sub import b``)
    {"pkg/__init__.py": "", "pkg/a.py": "class A:\n    from pkg.sub import b\n", "pkg/sub/__init__.py": "",
     "pkg/sub/b.py": "from pkg import a\n"},
    # relative imports, one and two levels up
    {"pkg/__init__.py": "", "pkg/a.py": "from .sub.b import x\n", "pkg/sub/__init__.py": "",
     "pkg/sub/b.py": "from .. import a\n"},
    # a package __init__ in the cycle (a package = its __init__.py)
    {"pkg/__init__.py": "", "pkg/sub/__init__.py": "from pkg.sub.b import x\n", "pkg/sub/b.py": "from pkg.c import y\n",
     "pkg/c.py": "import pkg.sub\n"},
    # a literal importlib.import_module
    {"pkg/__init__.py": "", "pkg/a.py": "import importlib\ndef f():\n    importlib.import_module('pkg.b')\n",
     "pkg/b.py": "from pkg.a import f\n"},
], ids=["in-function", "class-body-submodule", "relative", "package-init", "import-module"])
def test_every_kind_of_import_statement_closes_a_cycle(tmp_path, files):
    problems = check_imports(_package(tmp_path, files))
    assert problems and problems[0].startswith("import cycle:"), problems


def test_a_self_import_and_an_acyclic_reexporting_package_are_not_cycles(tmp_path):
    root = _package(tmp_path, {"pkg/__init__.py": "from pkg.a import f\nfrom pkg.b import g\n",
                               "pkg/a.py": "import pkg.a\nfrom pkg.b import g\ndef f(): pass\n",
                               "pkg/b.py": "import os, json\nfrom collections import abc\ndef g(): pass\n"})
    assert check_imports(root) == []


def test_a_library_module_importing_a_main_is_reported(tmp_path):
    root = _package(tmp_path, {"pkg/__init__.py": "", "pkg/__main__.py": "from pkg import cli\n",
                               "pkg/cli.py": "def run(): pass\n", "pkg/sub/__init__.py": "",
                               "pkg/sub/__main__.py": "import pkg.__main__\n",
                               "pkg/lib.py": "def f():\n    from pkg.sub.__main__ import main\n"})
    problems = check_imports(root)
    assert problems == ["a library module imports a __main__: pkg.lib -> pkg.sub.__main__ (pkg/lib.py:2)"]
