"""The Lambda handler needs only the standard library, boto3 (in the runtime) and obstore
(in the package)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dynamo_backups

PACKAGE = Path(dynamo_backups.__file__).parent
ALLOWED_THIRD_PARTY = {"boto3", "botocore", "obstore"}
# Used where installed, not carried in the package: imported under ``except ImportError``.
OPTIONAL_THIRD_PARTY = {"orjson"}


def imported_modules(path: Path, optional: bool = True) -> set[str]:
    """The modules ``path`` imports (``optional=False``: not those it imports under
    ``try: ... except ImportError``)."""
    tree = ast.parse(path.read_text())
    guarded = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.Try)
        and any(
            isinstance(handler.type, ast.Name) and handler.type.id == "ImportError"
            for handler in node.handlers
        )
        for inner in node.body
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if not optional and id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def handler_import_closure() -> dict[str, set[str]]:
    """Every module of ours the handler loads, with the outside modules each one imports."""
    todo, seen, outside = ["dynamo_backups.handler"], set(), {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")[1:]
        path = PACKAGE.joinpath(*parts).with_suffix(".py") if parts else PACKAGE / "__init__.py"
        if not path.exists():
            path = PACKAGE.joinpath(*parts, "__init__.py")
        names = imported_modules(path)
        outside[module] = {name for name in names if not name.startswith("dynamo_backups")}
        todo.extend(name for name in names if name.startswith("dynamo_backups"))
        parent = module.rpartition(".")[0]
        if parent:
            todo.append(parent)
    return outside


def test_handler_imports_only_the_standard_library_boto3_and_obstore() -> None:
    closure = handler_import_closure()
    assert "dynamo_backups.cli" not in closure
    for module, names in closure.items():
        tops = {name.split(".")[0] for name in names}
        foreign = tops - set(sys.stdlib_module_names) - ALLOWED_THIRD_PARTY - {"__future__"}
        assert not foreign - OPTIONAL_THIRD_PARTY, f"{module} imports {sorted(foreign)}"
        if foreign:  # an optional one: the module must run without it
            path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
            plain = {name.split(".")[0] for name in imported_modules(path, optional=False)}
            assert not plain & foreign, f"{module} needs {sorted(plain & foreign)}"


def test_importing_the_handler_loads_no_cli_dependency() -> None:
    code = (
        "import sys, dynamo_backups.handler; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'click', 'rich', 'moto'}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"
