"""The house's arrows, held by the code's own imports (README "Layout"; DESIGN.md "Packages").

Every import statement of every project module is read with ``ast``, function-level and ``TYPE_CHECKING``
imports included (a lazy import is still a dependency). Two rules:

1. Packages point one way: ``flows -> {instruments, privacy, analysis, reports} -> schemas``. ``schemas``
   imports nothing of the project; ``analysis``, ``instruments``, ``privacy`` and ``reports`` import only
   themselves and ``schemas``. Nothing outside ``flows/cli/`` imports the command line.
2. No cycle between modules.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.support import REPO

PACKAGES = ("schemas", "instruments", "privacy", "analysis", "reports", "flows")
ALLOWED = {
    "schemas": {"schemas"},
    "instruments": {"instruments", "schemas"},
    "privacy": {"privacy", "schemas"},
    "analysis": {"analysis", "schemas"},
    "reports": {"reports", "schemas"},
    "flows": set(PACKAGES),
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path = REPO) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            found[_module_name(path, root)] = path
    return found


def _resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The project module an import names (the longest known prefix), or None for a third-party one."""
    parts = target.split(".")
    while parts:
        name = ".".join(parts)
        if name in modules:
            return name
        parts.pop()
    return None


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported project module, line) of every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # "from pkg import sub" imports the submodule when there is one, else a name of pkg
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved is not None and resolved != name:
                out.append((resolved, node.lineno))
    return out


def _graph(root: Path = REPO) -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    modules = _modules(root)
    graph: dict[str, set[str]] = defaultdict(set)
    edges = []
    for name, path in modules.items():
        graph[name]
        for target, line in _imports(name, path, modules):
            graph[name].add(target)
            edges.append((name, target, line))
    return graph, edges


def _wrong_arrows(edges: list[tuple[str, str, int]]) -> list[str]:
    wrong = []
    for source, target, line in edges:
        src_pkg, dst_pkg = source.split(".")[0], target.split(".")[0]
        if dst_pkg not in ALLOWED[src_pkg]:
            wrong.append(f"{source} (line {line}) imports {target}: {src_pkg} may import only {sorted(ALLOWED[src_pkg])}")
        if (target == "flows.cli" or target.startswith("flows.cli.")) and not (
                source == "flows.cli" or source.startswith("flows.cli.")):
            wrong.append(f"{source} (line {line}) imports the command line {target}; the CLI is a leaf")
    return wrong


def test_packages_point_one_way():
    _, edges = _graph()
    assert len(edges) > 100  # the reader sees the house's imports at all
    wrong = _wrong_arrows(edges)
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_cycle_between_modules():
    graph, _ = _graph()
    assert _cycles(graph) == []


def test_the_checks_can_fail(tmp_path):
    """On a made-up tree: a lazy import from analysis into flows, the CLI imported by a flow, and a cycle of
    three modules (one a relative import inside a function) are all caught."""
    files = {
        "analysis/__init__.py": "",
        "analysis/model.py": "def fit():\n    from flows.stats import read\n    return read\n",
        "flows/__init__.py": "",
        "flows/stats.py": "from analysis.model import fit\nfrom flows import loop_b\n",
        "flows/loop_b.py": "import flows.loop_c\n",
        "flows/loop_c.py": "def f():\n    from . import stats\n",
        "flows/cli/__init__.py": "",
        "flows/pipeline.py": "from flows.cli import app\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph, edges = _graph(tmp_path)
    wrong = _wrong_arrows(edges)
    assert any(w.startswith("analysis.model (line 2) imports flows.stats") for w in wrong), wrong
    assert any(w.startswith("flows.pipeline (line 1) imports the command line flows.cli") for w in wrong), wrong
    assert ["analysis.model", "flows.loop_b", "flows.loop_c", "flows.stats"] in _cycles(graph)


def test_the_command_line_starts_without_the_heavy_libraries():
    """`flourish --help` and `--version` load no data or modelling library: each command imports what it uses, and
    `instruments` loads SciPy and pandas only when scoring or psychometrics are used (every run checks its study's
    instruments; measured: `import flows.cli` 3.9 s before, 0.14 s after, on a loaded machine)."""
    import subprocess
    import sys

    heavy = ["pandas", "scipy", "prefect", "duckdb", "pymc", "opendp", "altair", "great_expectations", "flows.ingest"]
    probe = ("import sys, flows.cli, instruments; instruments.check_licences; "
             f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "", f"loaded at start: {out.stdout.strip()}"
