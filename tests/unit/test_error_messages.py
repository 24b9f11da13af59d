"""Every fairlens error says how to fix it, and every error class has its docs page.

The first check reads the source: each ``raise SomeError(...)`` of a fairlens error class passes a
``fix`` (second positional argument or ``fix=``), so the command line's one line always has a
``Fix:`` part. The second keeps ``docs/errors/`` in step with :mod:`fairlens.errors`.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import fairlens
from fairlens import errors

ROOT = Path(fairlens.__file__).resolve().parent
DOCS = ROOT.parent / "docs" / "errors"
CLASSES = {
    name: cls
    for name, cls in vars(errors).items()
    if inspect.isclass(cls) and issubclass(cls, errors.FairlensError)
}


def _raises_without_fix(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
            continue
        func = node.exc.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name not in CLASSES:
            continue
        args, keywords = node.exc.args, node.exc.keywords
        if len(args) >= 2 or any(isinstance(a, ast.Starred) for a in args):
            continue
        if any(k.arg == "fix" or k.arg is None for k in keywords):
            continue
        lines.append(node.lineno)
    return lines


def test_every_raised_fairlens_error_names_a_fix() -> None:
    missing = [
        f"{path.relative_to(ROOT.parent)}:{line}"
        for path in sorted(ROOT.rglob("*.py"))
        for line in _raises_without_fix(ast.parse(path.read_text()))
    ]
    assert missing == [], "raise these with a fix (the second argument):\n" + "\n".join(missing)


def test_the_check_finds_a_raise_without_fix() -> None:
    tree = ast.parse(
        "raise ConfigError('bad')\n"
        "raise errors.DataError('bad', 'do this')\n"
        "raise ArtifactError('bad', fix='do that')\n"
        "raise ValueError('not ours')\n"
    )
    assert _raises_without_fix(tree) == [1]


def _page(name: str) -> Path:
    return DOCS / (re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower() + ".md")


def test_every_error_class_has_a_linked_page() -> None:
    index = (DOCS / "index.md").read_text()
    for name in CLASSES:
        if name == "FairlensError":
            continue  # the base class: the index itself
        page = _page(name)
        assert page.is_file(), f"{name} has no page {page.relative_to(ROOT.parent)}"
        text = page.read_text()
        assert text.startswith(f"# {name}\n") and "**Fix.**" in text, page.name
        assert f"[{name}]({page.name})" in index, f"docs/errors/index.md does not link {name}"
