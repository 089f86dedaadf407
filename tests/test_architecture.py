"""The layers stay what docs/architecture.md says they are: the core does no I/O, only `aws`
imports an AWS SDK, every import points down the stack, and no module imports itself back."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import dynamo_backups

PACKAGE = Path(dynamo_backups.__file__).parent

# Lowest first; a module may import its own layer and the layers before it.
LAYERS = ["core", "aws", "backup", "pipeline", "jobs", "engines", "installer", "cli"]
ENTRY_POINTS = {
    "dynamo_backups.handler": "pipeline",
    "dynamo_backups.console": "cli",
    "dynamo_backups.__main__": "cli",
}  # deployed name; ranks with its layer
SDK = {"boto3", "botocore", "obstore", "pycurl", "s3transfer", "awscrt", "urllib3"}
# What the core may import besides the standard library: pure functions of values, no I/O.
PURE_LIBRARIES = frozenset({"__future__", "orjson"})  # orjson: JSON text (core/json_text.py)
IO_MODULES = {"socket", "ssl", "http", "subprocess", "os", "pathlib", "io", "shutil", "logging"}
IO_MODULES |= {"urllib.request", "sqlite3", "tempfile", "sys"}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = modules()


def imports_of(path: Path) -> Iterator[str]:
    """Every module an import statement names, function-level imports included, and those
    for type checkers only (``if TYPE_CHECKING:``): a type a module needs from another is a
    dependency on it too, and two modules typed by each other are one knot."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    yield f"{node.module}.{alias.name}"


def layer_of(module: str) -> str | None:
    if module in ENTRY_POINTS:
        return ENTRY_POINTS[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_sits_in_a_layer_and_every_layer_explains_itself() -> None:
    for module in MODULES:
        if module != "dynamo_backups":
            assert layer_of(module), f"{module} is in no layer"
    for layer in LAYERS:
        docstring = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert docstring and len(docstring) > 100, f"{layer}/__init__.py needs its paragraph"


def test_the_core_does_no_io_and_imports_nothing_above_it() -> None:
    for module, path in MODULES.items():
        if layer_of(module) != "core":
            continue
        for imported in imports_of(path):
            top = imported.split(".")[0]
            if top == "dynamo_backups":
                assert imported.startswith("dynamo_backups.core"), f"{module} imports {imported}"
            else:
                assert top in sys.stdlib_module_names or top in PURE_LIBRARIES, (
                    f"{module} imports {imported}"
                )
                assert imported not in IO_MODULES and top not in IO_MODULES, (
                    f"{module} imports {imported}, an I/O module"
                )


def test_only_the_aws_layer_imports_an_aws_sdk() -> None:
    for module, path in MODULES.items():
        if layer_of(module) == "aws":
            continue
        for imported in imports_of(path):
            assert imported.split(".")[0] not in SDK, f"{module} imports {imported}"


def test_every_import_points_down_the_stack() -> None:
    for module, path in MODULES.items():
        rank = LAYERS.index(layer_of(module) or "core")
        for imported in imports_of(path):
            target = layer_of(imported)
            if target is not None and imported.startswith("dynamo_backups."):
                assert LAYERS.index(target) <= rank, f"{module} ({rank}) imports {imported}"


def test_no_module_imports_itself_back() -> None:
    graph = {  # a module importing its own package is no cycle: the package loads first
        module: {
            name
            for name in imports_of(path)
            if name in MODULES and name != module and not module.startswith(f"{name}.")
        }
        for module, path in MODULES.items()
    }
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph[module]):
            if state.get(name) == "open":
                cycle = [*trail[trail.index(name) :], name] if name in trail else [module, name]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if name not in state:
                visit(name, [*trail, name])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
