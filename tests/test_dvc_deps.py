"""dvc.yaml's deps against the import graph: a stage re-runs whenever code it imports changes."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from flaxvision.dvc_stage import CODE_ROOTS, TOOLCHAIN_LOCK, code_files
from tests.helpers import PROJECT_ROOT, STAGES
from tests.imports import import_closure, module_file


def stage_module(stage: dict) -> Path:
    (module,) = re.fullmatch(r"python -m ([\w.]+)", stage["cmd"]).groups()
    return module_file(module)


def stage_code(name: str) -> set[Path]:
    """The files `python -m stages.<name>` runs: the stages package's __init__ (run first), the
    stage's module, and all they import."""
    module = stage_module(STAGES[name])
    return import_closure(module) | import_closure(module.parent / "__init__.py")


@pytest.mark.parametrize("name", list(STAGES))
def test_deps_cover_every_imported_module(name):
    imported = stage_code(name)
    declared = set(code_files(name, PROJECT_ROOT / "dvc.yaml"))
    missing = sorted(str(p.relative_to(PROJECT_ROOT)) for p in imported - declared)
    assert not missing, f"dvc.yaml stage {name} imports these but does not depend on them: {missing}"


@pytest.mark.parametrize("name", list(STAGES))
def test_every_code_dep_is_imported(name):
    """No code dep is superfluous: each covers at least one module the stage imports."""
    imported = stage_code(name)
    for dep in STAGES[name]["deps"]:
        path = PROJECT_ROOT / dep
        if Path(dep).parts[0] not in CODE_ROOTS:
            continue
        covered = set(path.rglob("*.py")) if path.is_dir() else {path}
        assert covered & imported, f"dvc.yaml stage {name} depends on {dep}, which it never imports"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STAGES))
def test_stages_that_compute_depend_on_the_pinned_toolchain(name):
    """A new JAX or XLA gives other numbers: every stage that loads JAX re-runs with a new uv.lock."""
    module = STAGES[name]["cmd"].removeprefix("python -m ")
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print('jax' in sys.modules)"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    depends = TOOLCHAIN_LOCK.relative_to(PROJECT_ROOT).as_posix() in STAGES[name]["deps"]
    assert depends == (loaded == "True"), (
        f"dvc.yaml stage {name}: {'add' if loaded == 'True' else 'drop'} the dep uv.lock"
    )


def test_the_import_walk_sees_lazy_imports():
    """dvc_stage.stage_main imports flaxvision.runtime inside the function: it must still count."""
    closure = import_closure(PROJECT_ROOT / "flaxvision" / "dvc_stage.py")
    assert PROJECT_ROOT / "flaxvision" / "runtime.py" in closure
    assert PROJECT_ROOT / "flaxvision" / "paths.py" in closure
