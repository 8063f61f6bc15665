"""No import cycles among the project's modules (flaxvision.dvc_stage.CODE_ROOTS: flaxvision/, models/, stages/).

The graph is read from the AST by tests/imports.py, the walker test_dvc_deps uses: every import
statement counts, lazy ones inside functions included, since a lazy import only postpones a cycle
to its first call. Nodes are the project's .py files. An edge A -> B says that importing A runs B:
B is a module A names, or a package whose ``__init__`` that import runs on the way (``import a.b.c``
runs ``a`` and ``a.b`` first).

Not an edge: from A to its own ancestor packages' ``__init__`` (and from an ``__init__`` to itself).
Python has run them before A, so naming them (``from flaxvision.data.datasets.dataset import ...`` in
flaxvision/data/datasets/) starts nothing; counted, they would close a false cycle with every
``__init__`` that imports its submodules. An edge from an ``__init__`` to its submodule stays: the
``__init__`` does run it, and with the rule above such an edge can only close a cycle through a
module outside the package, which is a real cycle (one that breaks when that module is imported first).
"""

from collections import deque
from pathlib import Path

import pytest

from flaxvision.dvc_stage import CODE_ROOTS
from tests.helpers import PROJECT_ROOT
from tests.imports import import_closure, imported_files, module_name


def import_graph() -> dict[Path, set[Path]]:
    """Each project file -> the project files importing it runs (see the module docstring)."""
    files = sorted(f for root in CODE_ROOTS for f in (PROJECT_ROOT / root).rglob("*.py"))
    return {f: {target for target in imported_files(f) if not _runs_before(target, f)} for f in files}


def _runs_before(target: Path, path: Path) -> bool:
    """Whether ``target`` is ``path`` itself or one of the packages ``path`` is in."""
    target_parts, parts = module_name(target).split("."), module_name(path).split(".")
    return parts[: len(target_parts)] == target_parts


def import_cycles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    """Shortest cycles, each from a file back to it, that together pass through every file on a cycle."""
    cycles, grouped = [], set()
    for start in sorted(graph):
        if start in grouped:
            continue
        group = {f for f in import_closure(start, graph.__getitem__) if start in import_closure(f, graph.__getitem__)}
        grouped |= group
        while group and (cycle := _shortest_cycle(min(group), graph)):  # none: a file alone, on no cycle
            cycles.append(cycle)
            group -= set(cycle)
    return cycles


def _shortest_cycle(start: Path, graph: dict[Path, set[Path]]) -> list[Path] | None:
    parents = {start: start}
    todo = deque([start])
    while todo:
        node = todo.popleft()
        for target in sorted(graph[node]):
            if target == start:
                cycle = [node]
                while cycle[-1] != start:
                    cycle.append(parents[cycle[-1]])
                return [*reversed(cycle), start]
            if target not in parents:
                parents[target] = node
                todo.append(target)
    return None


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    report = "\n".join(" -> ".join(str(p.relative_to(PROJECT_ROOT)) for p in cycle) for cycle in cycles)
    if cycles:
        pytest.fail(f"import cycles, each from a file back to it:\n{report}")


def test_edges_follow_what_an_import_runs():
    graph = import_graph()
    sources = PROJECT_ROOT / "flaxvision" / "data" / "datasets"
    assert PROJECT_ROOT / "flaxvision" / "__init__.py" in graph[PROJECT_ROOT / "stages" / "source.py"]  # on the way
    assert sources / "folders.py" in graph[sources / "__init__.py"]
    assert sources / "dataset.py" in graph[sources / "folders.py"]
    assert not {sources / "__init__.py", sources.parent / "__init__.py"} & graph[sources / "folders.py"]  # run before


def test_import_cycles_pass_through_every_file_on_one():
    a, b, c, d, e = (Path(name) for name in "abcde")
    graph = {a: {b}, b: {c, d}, c: {a}, d: {b, e}, e: set()}
    assert import_cycles(graph) == [[a, b, c, a], [d, b, d]]
