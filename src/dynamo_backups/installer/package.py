"""The Lambda deployment package: the handler's modules and the native wheel of its fast
transport (obstore) built for the function's architecture, in a deterministic zip (same code,
same bytes), so an unchanged deploy uploads nothing.

The Lambda runtime brings boto3. obstore is downloaded once per architecture with
``pip download --platform ... --only-binary=:all:`` (the version installed here, so the zip
runs what the tests ran) into a cache folder, and its wheel's tags are checked against the
runtime (Python 3.13 on Amazon Linux 2023, glibc 2.34) before it goes into the zip.
"""

from __future__ import annotations

import ast
import base64
import functools
import hashlib
import importlib.metadata
import io
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import dynamo_backups

HANDLER_MODULE = "dynamo_backups.handler"
COMPACT_MODULE = "dynamo_backups.jobs.compact_lambda"  # the scheduled compaction's handler
# The journal layout's package: the stream handler and the compaction function's handler.
JOURNAL_ENTRIES = (HANDLER_MODULE, COMPACT_MODULE)
PACKAGE_ROOT = Path(dynamo_backups.__file__).parent
RUNTIME = "python3.13"
RUNTIME_VERSION = (3, 13)
RUNTIME_GLIBC_MINOR = 34  # Amazon Linux 2023
NATIVE_DEPENDENCIES = ("obstore",)
ARCHITECTURES = {"arm64": "aarch64", "x86_64": "x86_64"}
_EPOCH = (1980, 1, 1, 0, 0, 0)


class PackageError(RuntimeError):
    """The package cannot be built; the message says why and what to do."""


def handler_modules(entry: str | tuple[str, ...] = HANDLER_MODULE) -> list[str]:
    """Our modules the handlers load (the import closure of ``entry``, one module or
    several, parents included), sorted."""
    todo, seen = [entry] if isinstance(entry, str) else list(entry), set()
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


# --- the native wheels ------------------------------------------------------------------------


@dataclass(frozen=True)
class WheelTags:
    name: str
    version: str
    python: str
    abi: str
    platform: str

    @classmethod
    def of(cls, path: Path) -> WheelTags:
        stem = path.name.removesuffix(".whl")
        parts = stem.split("-")
        if len(parts) < 5:
            raise PackageError(f"{path.name} is not a wheel file name")
        name, version, python, abi, platform = parts[0], parts[1], *parts[-3:]
        return cls(name, version, python, abi, platform)


def check_wheel(path: Path, architecture: str) -> WheelTags:
    """Refuse a wheel that would not load on the Lambda runtime for ``architecture``."""
    tags = WheelTags.of(path)
    machine = ARCHITECTURES[architecture]
    platforms = tags.platform.split(".")
    if not any(_runs_on(platform, machine) for platform in platforms):
        raise PackageError(
            f"{path.name} is built for {tags.platform}, not for Lambda's {architecture} "
            f"(manylinux, {machine}, glibc 2.{RUNTIME_GLIBC_MINOR} at most)"
        )
    runtime_tag = f"cp{RUNTIME_VERSION[0]}{RUNTIME_VERSION[1]}"
    if tags.abi == "abi3":
        floor = tags.python.removeprefix("cp")
        if not floor.isdigit() or (int(floor[0]), int(floor[1:])) > RUNTIME_VERSION:
            raise PackageError(f"{path.name} needs a newer Python than {RUNTIME}")
    elif not (tags.python == runtime_tag and tags.abi == runtime_tag):
        raise PackageError(
            f"{path.name} is built for {tags.python}/{tags.abi}, not for {RUNTIME}: "
            "it needs an abi3 wheel or one built for that version"
        )
    return tags


def _runs_on(platform: str, machine: str) -> bool:
    for prefix in ("manylinux_2_", "manylinux2014_"):
        if platform.startswith(prefix) and platform.endswith(f"_{machine}"):
            if prefix == "manylinux2014_":
                return True  # manylinux2014 is glibc 2.17
            minor = platform.removeprefix(prefix).removesuffix(f"_{machine}")
            return minor.isdigit() and int(minor) <= RUNTIME_GLIBC_MINOR
    return False


def default_wheel_cache() -> Path:
    configured = os.environ.get("DYNAMO_BACKUPS_WHEEL_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dynamo-backups" / "wheels"


def native_wheels(architecture: str, wheel_dir: Path | None = None) -> list[Path]:
    """The wheels of the handler's native dependencies for ``architecture``: found in
    ``wheel_dir`` (for hosts without PyPI), else downloaded once into the cache."""
    if architecture not in ARCHITECTURES:
        raise PackageError(f"architecture must be one of {', '.join(ARCHITECTURES)}")
    wheels = []
    for name in NATIVE_DEPENDENCIES:
        version = importlib.metadata.version(name)
        folder = wheel_dir or default_wheel_cache() / architecture
        found = _matching_wheels(folder, name, version, architecture)
        if not found and wheel_dir is None:
            _download(name, version, architecture, folder)
            found = _matching_wheels(folder, name, version, architecture)
        if not found:
            raise PackageError(
                f"no {name}=={version} wheel for Lambda {architecture} in {folder}: download "
                f"it with pip download --no-deps --only-binary=:all: --python-version 3.13 "
                f"--platform manylinux_2_17_{ARCHITECTURES[architecture]} {name}=={version}"
            )
        wheels.append(found[0])
    return wheels


def _matching_wheels(folder: Path, name: str, version: str, architecture: str) -> list[Path]:
    matching = []
    for path in sorted(folder.glob(f"{name}-{version}-*.whl")):
        try:
            check_wheel(path, architecture)
        except PackageError:
            continue
        matching.append(path)
    return matching


def _download(name: str, version: str, architecture: str, folder: Path) -> None:
    machine = ARCHITECTURES[architecture]
    platforms = [
        f"--platform=manylinux_2_{minor}_{machine}" for minor in range(17, RUNTIME_GLIBC_MINOR + 1)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        f"--python-version={RUNTIME_VERSION[0]}.{RUNTIME_VERSION[1]}",
        "--implementation=cp",
        *platforms,
        f"--dest={folder}",
        f"{name}=={version}",
    ]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise PackageError(
            f"could not download {name}=={version} for Lambda {architecture}: "
            f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}; on a host without "
            "PyPI, pass --wheel-dir with the wheel in it"
        )


# --- the zip ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def build_zip(
    entry: str | tuple[str, ...] = HANDLER_MODULE,
    architecture: str = "arm64",
    wheel_dir: Path | None = None,
) -> bytes:
    """The zip: our modules (those ``entry``, one handler module or several, loads), then
    each native wheel's files; fixed timestamps and permissions, sorted entries. Built once
    per process and set of inputs."""
    files: dict[str, tuple[bytes, int]] = {}
    for module in handler_modules(entry):
        path = module_path(module)
        files[path.relative_to(PACKAGE_ROOT.parent).as_posix()] = (path.read_bytes(), 0o644)
    for wheel in native_wheels(architecture, wheel_dir):
        with zipfile.ZipFile(wheel) as source:
            for info in source.infolist():
                if info.is_dir():
                    continue
                mode = 0o755 if info.filename.endswith(".so") else 0o644
                files[info.filename] = (source.read(info), mode)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(files):
            data, mode = files[name]
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def code_sha256(archive: bytes) -> str:
    """The hash Lambda reports as CodeSha256 (base64 of the SHA-256)."""
    return base64.b64encode(hashlib.sha256(archive).digest()).decode("ascii")
