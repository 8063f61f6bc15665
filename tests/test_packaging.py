"""What installing the project puts into site-packages: one `flaxvision` package (models/ as
flaxvision.models), its license and metadata, and no generic top-level `models` or `stages`."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import PROJECT_ROOT, copy_checkout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel setuptools builds from a copy of the checkout (so no build/ or egg-info is left here)."""
    source, dist = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    copy_checkout(source)
    build = f"from setuptools import build_meta; print(build_meta.build_wheel({str(dist)!r}))"
    built = subprocess.run([sys.executable, "-c", build], cwd=source, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return zipfile.ZipFile(dist / built.stdout.split()[-1])


@pytest.mark.slow
def test_the_wheel_installs_one_package_holding_every_library_module(wheel):
    names = set(wheel.namelist())
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"flaxvision"}
    library = {
        f"flaxvision/{path.relative_to(PROJECT_ROOT / 'flaxvision')}"
        for path in (PROJECT_ROOT / "flaxvision").rglob("*.py")
    }
    library |= {
        f"flaxvision/models/{path.relative_to(PROJECT_ROOT / 'models')}"
        for path in (PROJECT_ROOT / "models").glob("*.py")
    }
    assert library <= names, f"missing from the wheel (pyproject.toml's packages): {sorted(library - names)}"


def test_the_wheel_carries_the_license_and_metadata(wheel):
    dist_info = next(name.split("/")[0] for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
    metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Summary: A reproducible image-classification pipeline" in metadata
    assert wheel.read(f"{dist_info}/licenses/LICENSE") == (PROJECT_ROOT / "LICENSE").read_bytes()


@pytest.mark.slow
def test_the_installed_package_imports_without_the_checkout(wheel, tmp_path):
    wheel.extractall(tmp_path)
    check = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import importlib.util as u;"
        "import flaxvision.builder, flaxvision.models as m;"
        "print(m.__file__, u.find_spec('models'), u.find_spec('stages'))"
    )
    # Outside the checkout, so neither its folders nor the editable install's are what is found.
    ran = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == [str(tmp_path / "flaxvision" / "models" / "__init__.py"), "None", "None"]


# flaxvision.models and two of its submodules, then the checkout's other folders and files under
# flaxvision's name: each must be no module (importing flaxvision.setup would run setup()).
CHECKOUT_IMPORTS = """
import importlib
import flaxvision.models, flaxvision.models.layers, flaxvision.models.resnet
print(flaxvision.models.__file__, flaxvision.models.layers.__file__, flaxvision.models.resnet.__file__)
for name in ("flaxvision.stages", "flaxvision.benchmarks", "flaxvision.setup", "flaxvision.tests"):
    try:
        importlib.import_module(name)
        print("imported", name)
    except ModuleNotFoundError as error:
        print("none", error.name)
"""


def checkout_imports(checkout, cwd) -> list[str]:
    """CHECKOUT_IMPORTS run in ``cwd``: flaxvision.models' files must be ``checkout``'s models/."""
    ran = subprocess.run([sys.executable, "-c", CHECKOUT_IMPORTS], cwd=cwd, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    models, *others = ran.stdout.splitlines()
    assert models.split() == [str(checkout / "models" / name) for name in ("__init__.py", "layers.py", "resnet.py")]
    return others


NONE_BUT_MODELS = [f"none flaxvision.{name}" for name in ("stages", "benchmarks", "setup", "tests")]


@pytest.mark.slow
def test_the_checkout_maps_flaxvision_models_alone(tmp_path):
    """In the checkout, flaxvision.models is its models/ folder, from inside it or (through the
    editable install) from elsewhere; stages/, benchmarks/, tests/ and setup.py are not flaxvision's."""
    assert checkout_imports(PROJECT_ROOT, cwd=PROJECT_ROOT) == NONE_BUT_MODELS
    assert checkout_imports(PROJECT_ROOT, cwd=tmp_path) == NONE_BUT_MODELS


@pytest.mark.slow
def test_a_copy_of_the_checkout_imports_its_own_models(tmp_path):
    """DVC runs --temp and queued experiments in a copy of the project: its flaxvision.models must be
    the copy's models/, not the folder the editable install points at."""
    for folder in ("flaxvision", "models", "stages", "benchmarks"):
        # not the benchmarks' peer environments and working data (.gitignore'd, gigabytes)
        ignored = shutil.ignore_patterns("__pycache__", ".peers", ".work")
        shutil.copytree(PROJECT_ROOT / folder, tmp_path / folder, ignore=ignored)
    shutil.copy2(PROJECT_ROOT / "setup.py", tmp_path / "setup.py")
    assert checkout_imports(tmp_path, cwd=tmp_path) == NONE_BUT_MODELS
