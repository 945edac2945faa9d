"""The arrows of DESIGN.md that must never exist, checked on the source (every import, also
those inside functions): data never imports models, models never import data, optim knows no
GNN, train never imports a command."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hamgraph"

# (package, packages it must never import, why)
FORBIDDEN = [
    ("data", ("hamgraph.models",), "preprocessing (RWSE) is data; data never imports models"),
    ("models", ("hamgraph.data",), "a model receives a GraphTask, never a dataset"),
    ("optim", ("hamgraph.models", "hamgraph.data"), "HAM takes parameters, it knows no GNN"),
    (
        "train",
        ("hamgraph.grid", "hamgraph.sweep", "hamgraph.report", "hamgraph.cli"),
        "train never imports a command",
    ),
]


def imported_modules(source: str, module: str) -> set[str]:
    """Every module `source` (the text of `module`, dotted) imports, as absolute dotted names.

    `from hamgraph import models` counts as importing `hamgraph.models`; relative imports are
    resolved against `module`.
    """
    package = module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _violations(package: str, forbidden: tuple[str, ...], root: Path = PACKAGE) -> list[str]:
    files = sorted((root / package).rglob("*.py"))
    assert files, f"no sources under {root / package}"
    bad = []
    for path in files:
        rel = path.relative_to(root.parent).with_suffix("")
        module = ".".join(rel.parts)  # a package's __init__ resolves "." to the package itself
        for name in sorted(imported_modules(path.read_text(), module)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{rel}.py imports {name}")
    return bad


@pytest.mark.parametrize(("package", "forbidden", "why"), FORBIDDEN, ids=[f[0] for f in FORBIDDEN])
def test_no_forbidden_import(package, forbidden, why):
    assert _violations(package, forbidden) == [], why


def test_the_checker_sees_every_form_of_import():
    source = """
import hamgraph.models.gcnplus
from hamgraph.models.rwse import cached_rwse
from hamgraph import models

def late():
    from ..models import encoders
    from . import rwse
"""
    found = imported_modules(source, "hamgraph.data.ogbg")
    assert {
        "hamgraph.models.gcnplus",
        "hamgraph.models.rwse",
        "hamgraph.models",
        "hamgraph.models.encoders",
        "hamgraph.data.rwse",
    } <= found
    assert "hamgraph.models" in imported_modules("from .. import models", "hamgraph.data.ogbg")


def test_a_broken_arrow_is_reported(tmp_path):
    fake = tmp_path / "hamgraph"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "bad.py").write_text("def f():\n    from hamgraph.models import rwse\n")
    assert _violations("data", ("hamgraph.models",), root=fake) == [
        "hamgraph/data/bad.py imports hamgraph.models",
        "hamgraph/data/bad.py imports hamgraph.models.rwse",
    ]
