"""What code produced a result: a plugin's distribution, its version, and a hash of its source.

A cell's cache key holds the fingerprint of its attack's and its defense's code, and a cached
teacher network the fingerprint of the code that trained it, so editing a plugin (the suite's own,
an editable install, or a new release of an installed package) recomputes exactly what it affects.
The source hash covers the plugin's module and, transitively, the modules of the same package it
imports (``kdbench.attacks.deepinversion`` and ``kdbench.attacks.student_recipe``); the engine's own
modules are not part of it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

# the suite's plugin packages: a plugin's "own package" is one of these, not the whole kdbench
SUITE_PLUGIN_PACKAGES = ("kdbench.attacks", "kdbench.defenses")


def own_package(module: str) -> str:
    """The package whose modules count as ``module``'s own code."""
    for package in SUITE_PLUGIN_PACKAGES:
        if module == package or module.startswith(package + "."):
            return package
    return module.split(".")[0]


def _module_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imports(path: Path, module: str) -> frozenset[str]:
    """Every module name ``path`` imports (absolute or relative), including imported names that are modules."""
    stat = path.stat()
    return _parsed_imports(str(path), module, stat.st_mtime_ns, stat.st_size)


@functools.cache
def _parsed_imports(path_name: str, module: str, mtime_ns: int, size: int) -> frozenset[str]:
    """:func:`_imports` of one version of the file (its modification time and size): parsed once,
    not once per cell key (the 70 keys of the digits matrix parse 258 files)."""
    path = Path(path_name)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return frozenset(names)


def source_files(module: str) -> list[Path]:
    """``module``'s file and those of its own package's modules that it imports, transitively."""
    root = own_package(module)
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        todo += [n for n in _imports(path, name) if (n == root or n.startswith(root + ".")) and n not in seen]
    return [seen[name] for name in sorted(seen)]


@functools.cache
def _distributions_by_package() -> dict[str, list[str]]:
    """Top-level import name → distributions. Reading it lists every installed file (about 0.4 s
    with torch installed), so a process reads it once; see :func:`_distribution` for a newcomer."""
    return dict(importlib.metadata.packages_distributions())


def _distribution(module: str) -> tuple[str, str]:
    top = module.split(".")[0]
    names = _distributions_by_package().get(top, [])
    if not names:  # installed since the process read the list (a plugin installed by a test, say)
        _distributions_by_package.cache_clear()
        names = _distributions_by_package().get(top, [])
    if not names:
        return "?", "?"
    try:
        return names[0], importlib.metadata.version(names[0])
    except importlib.metadata.PackageNotFoundError:
        return names[0], "?"


@functools.cache
def _fingerprint(module: str, stamp: tuple[tuple[str, int, int], ...]) -> dict[str, str]:
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        path = Path(name)
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    package, version = _distribution(module)
    return {"module": module, "package": package, "version": version, "source": digest.hexdigest()[:12]}


def code_fingerprint(module: str) -> dict[str, Any]:
    """``{"module", "package", "version", "source"}`` for the code of plugin module ``module``."""
    files = source_files(module)
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    return _fingerprint(module, stamp)
