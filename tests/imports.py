"""The project's import graph, read from the AST: what test_dvc_deps and test_imports walk."""

import ast
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path

from flaxvision.dvc_stage import CODE_ROOTS
from tests.helpers import PROJECT_ROOT

# Packages that live in another folder than their name says (pyproject.toml: models/ is flaxvision.models).
PACKAGE_DIRS: dict[str, str] = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
    "package-dir"
]


def module_file(module: str) -> Path | None:
    for package, folder in PACKAGE_DIRS.items():
        if module == package or module.startswith(f"{package}."):
            module = folder + module[len(package) :]
    path = PROJECT_ROOT.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    """``flaxvision/data/__init__.py`` -> ``flaxvision.data``, ``flaxvision/errors.py`` -> ``flaxvision.errors``."""
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    for package, folder in PACKAGE_DIRS.items():
        if name == folder or name.startswith(f"{folder}."):
            return package + name[len(folder) :]
    return name


def imported_files(path: Path) -> set[Path]:
    """Project files that ``path`` imports, lazy imports inside functions included, with the
    packages whose ``__init__`` each import runs."""
    name = module_name(path).split(".")
    package = name if path.name == "__init__.py" else name[:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [base])])
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    files = set()
    for name in names:
        parts = name.split(".")
        if parts[0] in CODE_ROOTS:
            files.update(f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i]))))
    return files


def import_closure(start: Path, imports: Callable[[Path], Iterable[Path]] = imported_files) -> set[Path]:
    """``start`` and every file it imports, directly or not (``imports``: a file's imports)."""
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += imports(path)
    return seen
