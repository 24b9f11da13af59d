"""The package layout keeps its rules (docs/architecture.md): stages in pipeline order, lower stages
never import higher ones (lazy imports inside functions included), no import cycle between modules,
no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fairlens"
# Pipeline order, lowest first. Modules directly under fairlens/ are the shared core (level 0);
# fairlens/__init__.py (the lazy public API), fairlens/testing.py (test helpers) and
# fairlens/__main__.py (`python -m fairlens`) sit on top.
STAGES = [
    "data",
    "models",
    "backend",
    "scoring",
    "activations",
    "detect",
    "directions",
    "steer",
    "search",
    "fairsteer",
    "evaluate",
    "analysis",
    "plots",
    "widgets",
    "apps",
]
TOP = len(STAGES) + 1
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _level(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("testing", "__main__"):
        return TOP
    if parts[1] in STAGES:
        return 1 + STAGES.index(parts[1])
    return 0  # errors, runtime, artifacts, stats, _version


def _exists(module: str) -> bool:
    path = PACKAGE.parent / module.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    """Every fairlens module ``path`` imports, at module level or inside a function."""
    found: set[str] = set()
    package = _module_name(path) if PACKAGE in path.parents else "fairlens.checked"
    here = package.split(".") if path.name == "__init__.py" else package.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fairlens")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = ".".join([*here[: len(here) - node.level + 1], *([base] if base else [])])
            if not base.startswith("fairlens"):
                continue
            found.add(base)
            for alias in node.names:  # ``from fairlens.models import tl_adapter``
                sub = f"{base}.{alias.name}"
                if _exists(sub):
                    found.add(sub)
    found.discard(package)
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_every_folder_is_a_known_stage():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(STAGES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_lower_stages_never_import_higher_ones(module):
    mine = _level(module)
    upward = sorted(m for m in GRAPH[module] if _level(m) > mine)
    assert not upward, f"{module} (level {mine}) imports higher stages: {upward}"


def test_no_import_cycles():
    """No cycle among modules (a package's ``__init__`` counts as the modules it re-exports)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(GRAPH.get(node, ())):
            if dep not in GRAPH:
                continue
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{module} has {n} lines (max {MAX_LINES}): split it by what it holds"


def test_the_layering_check_can_fail(tmp_path):
    """The checker itself: an upward import is seen, also inside a function."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f():\n    from fairlens.apps.cli import main\n    from fairlens import plots\n"
    )
    assert {"fairlens.apps.cli", "fairlens.plots"} <= _imports(bad)
    assert _level("fairlens.apps.cli") > _level("fairlens.data.bbq") > _level("fairlens.errors")


NOTEBOOK_MODULES = {
    "fairlens",
    "fairlens.analysis",
    "fairlens.plots",
    "fairlens.widgets",
    "fairlens.data",
    "fairlens.backend",
}


def test_notebooks_use_only_the_public_api():
    """The notebooks import fairlens, its analysis / plots / widgets / data packages and the hook
    API, never a module inside a stage (those may move; the public names stay)."""
    import json

    found: dict[str, set[str]] = {}
    for nb in sorted((PACKAGE.parent / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        tree = ast.parse(
            "\n".join(line for line in source.splitlines() if not line.startswith(("%", "!")))
        )
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                if name.startswith("fairlens") and name not in NOTEBOOK_MODULES:
                    found.setdefault(nb.name, set()).add(name)
    assert not found, f"notebooks import private modules: {found}"
