"""Portable numerics (flaxvision.numerics): the default experiment's first training steps give
the same weights on every x86-64 CPU, whatever its core count.

This machine's CPU runs them natively, on all its cores, on one, and with another number of
oneDNN threads than cores, and qemu-user runs them as
another CPU model (AVX2 and FMA, no AVX-512); each must give BITS_SHA256, the hash committed
here, so a CI run on any CPU checks it against every CPU that ran before.
"""

import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from flaxvision import numerics
from tests.helpers import PROJECT_ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(platform.machine() != "x86_64", reason="the committed bits are x86-64's"),
]

# sha256 of the train state after `python -m tests.bits_probe 3` with numerics portable
# (params.yaml's train and augment sections and its model: change those, and this changes).
BITS_SHA256 = "40ac9e22ce1fdd4dbf894334ef78f5ed26b92f5947c6a9e5f44c42911e28298a"
EMULATED_CPU = "Haswell-v4"  # Intel, AVX2 and FMA: another vendor and vector width than most CI hosts
STEPS = "3"


def probe(*prefix: str, single_core: bool = False, threads: int | None = None, timeout: int = 120) -> str:
    env = {**os.environ, numerics.ENVIRONMENT_VARIABLE: "portable"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env["XLA_FLAGS"] = numerics.xla_flags("native", env.get("XLA_FLAGS", ""))  # the probe's import sets them
    python = sys.executable
    if prefix:  # qemu runs the interpreter itself (not the venv's link), given the venv's packages by path
        python = str(Path(sys.executable).resolve())
        env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), sysconfig.get_paths()["purelib"]])
    first_core = min(os.sched_getaffinity(0))
    result = subprocess.run(
        [*prefix, python, "-m", "tests.bits_probe", STEPS],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=(lambda: os.sched_setaffinity(0, {first_core})) if single_core else None,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_first_steps_give_the_committed_bits_on_all_cores_on_one_and_on_three_threads():
    assert probe() == BITS_SHA256
    assert probe(single_core=True) == BITS_SHA256
    assert probe(threads=3) == BITS_SHA256


def test_first_steps_give_the_committed_bits_as_another_cpu():
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 not installed (Debian: apt-get install qemu-user; .ci/run installs it)")
    assert probe(qemu, "-cpu", EMULATED_CPU, timeout=1500) == BITS_SHA256
