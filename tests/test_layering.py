"""Dependencies point one way (DESIGN.md): nothing in client/ imports daemon/ or cli/."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parent.parent / "client"
MODULES = sorted(
    "rkd.client" + ("" if p.stem == "__init__" else f".{p.stem}") for p in CLIENT.glob("*.py")
)
FORBIDDEN = ("rkd.daemon", "rkd.cli", "rkd.server")


def _imported(tree: ast.AST, module: str) -> set[str]:
    """Every module an import statement anywhere in ``tree`` names (function bodies too)."""
    package = module if module == "rkd.client" else module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return names


def _forbidden(names: set[str]) -> list[str]:
    # "rkd.cli" is a prefix of "rkd.client": compare whole dotted names
    return sorted(
        n for n in names if n in FORBIDDEN or n.startswith(tuple(f"{f}." for f in FORBIDDEN))
    )


def test_the_static_check_sees_a_lazy_import() -> None:
    """The check finds an import inside a function body, absolute or relative."""
    tree = ast.parse(
        "def f():\n    from rkd.daemon.storage import x\ndef g():\n    from ..cli import main\n"
    )
    assert ["rkd.cli", "rkd.cli.main", "rkd.daemon.storage", "rkd.daemon.storage.x"] == (
        _forbidden(_imported(tree, "rkd.client.sdk"))
    )


@pytest.mark.parametrize("path", sorted(CLIENT.glob("*.py")), ids=lambda p: p.name)
def test_no_client_module_imports_daemon_or_cli(path: Path) -> None:
    """No import statement in client/, even one inside a function, names daemon/ or cli/."""
    module = "rkd.client" + ("" if path.stem == "__init__" else f".{path.stem}")
    assert [] == _forbidden(_imported(ast.parse(path.read_text("utf-8")), module))


def test_importing_every_client_module_loads_no_daemon_or_cli() -> None:
    """In a fresh interpreter, importing all of client/ loads nothing of daemon/ or cli/."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {MODULES!r}: importlib.import_module(m)\n"
        f"bad = {FORBIDDEN!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m in bad or m.startswith("
        "tuple(b + '.' for b in bad)))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert [] == json.loads(out)
    assert len(MODULES) >= 15  # every module of client/ was imported, not none


ROOT = CLIENT.parent
SERVER_MAY_USE = ("rkd.client", "rkd.server", "rkd.daemon.redact", "rkd.daemon.detectors")


def _module_of(path: Path) -> str:
    package = "rkd." + path.parent.name
    return package if path.stem == "__init__" else f"{package}.{path.stem}"


@pytest.mark.parametrize(
    "path",
    sorted(p for d in ("client", "daemon", "cli") for p in (ROOT / d).glob("*.py")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_nothing_imports_the_server(path: Path) -> None:
    """rkd.server is the maintainers' side: no module of client/, daemon/ or cli/ names it."""
    names = _imported(ast.parse(path.read_text("utf-8")), _module_of(path))
    assert [] == sorted(n for n in names if n == "rkd.server" or n.startswith("rkd.server."))


@pytest.mark.parametrize("path", sorted((ROOT / "server").glob("*.py")), ids=lambda p: p.name)
def test_the_server_uses_only_the_client_and_the_daemons_scanner(path: Path) -> None:
    """server/ imports rkd.client and the daemon's pure scanner, nothing else of ours."""
    names = _imported(ast.parse(path.read_text("utf-8")), _module_of(path))
    ours = {n for n in names if n == "rkd" or n.startswith("rkd.")}
    assert [] == sorted(n for n in ours if not n.startswith(SERVER_MAY_USE))
