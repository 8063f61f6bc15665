"""Builds flaxvision's one compiled part: oneDNN's convolutions for XLA:CPU (flaxvision/ops/onednn_conv.cc),
loaded by flaxvision.ops.onednn. Everything else is in pyproject.toml.

The build environment (pyproject.toml's build-system) brings the headers: XLA's FFI API from the
pinned jaxlib, oneDNN's from onednn-devel-cpu-gomp, whose data files land in its prefix. Where
oneDNN has no wheel, or no C++ compiler is found, flaxvision installs without it and
`convolutions: onednn` says so.
"""

import hashlib
import importlib.util
import platform
import sys
from pathlib import Path

from setuptools import Extension, setup

ONEDNN_PLATFORM = sys.platform == "linux" and platform.machine() == "x86_64"  # the wheels' one platform
SOURCE = Path("flaxvision/ops/onednn_conv.cc")


def onednn_extension() -> Extension | None:
    """None where the build environment lacks jaxlib (a build without pyproject.toml's
    build-system, e.g. `--no-build-isolation` in an environment without JAX)."""
    spec = importlib.util.find_spec("jaxlib")
    if spec is None:
        return None
    jaxlib = Path(spec.submodule_search_locations[0])
    source_hash = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    return Extension(
        "flaxvision.ops._onednn",
        sources=[str(SOURCE)],
        # The library says which source it was built from: flaxvision.ops.onednn refuses a stale one.
        define_macros=[("SOURCE_SHA256", f'"{source_hash}"')],
        include_dirs=[str(jaxlib / "include"), str(Path(sys.prefix) / "include")],
        library_dirs=[str(Path(sys.prefix) / "lib")],
        libraries=["dnnl"],  # found at run time because flaxvision.ops.onednn loads it first
        # OpenMP: the kernel gradient's chunks run on oneDNN's threads (the same libgomp)
        extra_compile_args=["-std=c++17", "-O2", "-fopenmp"],
        extra_link_args=["-fopenmp"],
        language="c++",
        optional=True,  # a failed compile leaves flaxvision without it, and says so
    )


extension = onednn_extension() if ONEDNN_PLATFORM else None
setup(ext_modules=[extension] if extension else [])
