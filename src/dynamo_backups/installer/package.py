"""The Lambda deployment package: the handler and the modules it imports, nothing else, in a
deterministic zip (same code, same bytes), so an unchanged deploy uploads nothing."""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import zipfile
from pathlib import Path

import dynamo_backups

HANDLER_MODULE = "dynamo_backups.handler"
PACKAGE_ROOT = Path(dynamo_backups.__file__).parent
_EPOCH = (1980, 1, 1, 0, 0, 0)


def handler_modules(entry: str = HANDLER_MODULE) -> list[str]:
    """Our modules the handler loads (its import closure, parents included), sorted."""
    todo, seen = [entry], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for node in ast.walk(ast.parse(module_path(module).read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            todo.extend(name for name in names if name.split(".")[0] == "dynamo_backups")
        parent = module.rpartition(".")[0]
        if parent:
            todo.append(parent)
    return sorted(seen)


def module_path(module: str) -> Path:
    parts = module.split(".")[1:]
    candidate = PACKAGE_ROOT.joinpath(*parts).with_suffix(".py") if parts else None
    if candidate is not None and candidate.exists():
        return candidate
    return PACKAGE_ROOT.joinpath(*parts, "__init__.py")


def build_zip(entry: str = HANDLER_MODULE) -> bytes:
    """The zip: fixed timestamps and permissions, sorted entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for module in handler_modules(entry):
            path = module_path(module)
            name = path.relative_to(PACKAGE_ROOT.parent).as_posix()
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def code_sha256(archive: bytes) -> str:
    """The hash Lambda reports as CodeSha256 (base64 of the SHA-256)."""
    return base64.b64encode(hashlib.sha256(archive).digest()).decode("ascii")
