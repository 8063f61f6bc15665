"""flaxvision.numerics: the XLA flags of each mode, set before JAX starts. (flaxvision.runtime's
threefry lowering: tests/test_jax_internals.py.)"""

import os
import subprocess
import sys

import jax
import pytest

from flaxvision import numerics
from flaxvision.errors import UserError


def test_portable_flags_come_after_the_users_own_and_native_removes_only_them():
    portable = numerics.xla_flags("portable", "--xla_force_host_platform_device_count=2")
    assert portable.split()[0] == "--xla_force_host_platform_device_count=2"
    assert "--xla_cpu_max_isa=AVX2" in portable.split()
    assert numerics.xla_flags("native", portable) == "--xla_force_host_platform_device_count=2"
    assert numerics.xla_flags("portable", portable) == portable  # applying it twice changes nothing


def test_native_gives_back_the_users_own_onednn_isa():
    script = (
        "import os, flaxvision, flaxvision.numerics as n; print(os.environ['DNNL_MAX_CPU_ISA']); "
        "n.use('native'); print(os.environ.get('DNNL_MAX_CPU_ISA'))"
    )
    for users, after_native in (("AVX512_CORE", "AVX512_CORE"), (None, "None")):
        env = {**os.environ, numerics.ENVIRONMENT_VARIABLE: "portable"}
        env.pop("DNNL_MAX_CPU_ISA", None)
        if users:
            env["DNNL_MAX_CPU_ISA"] = users
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert result.stdout.splitlines() == ["AVX2", after_native]


def test_a_mode_that_differs_from_the_started_backends_is_a_one_line_error():
    jax.numpy.zeros(1).block_until_ready()  # the backend has started, with this process's flags
    numerics.use(os.environ.get(numerics.ENVIRONMENT_VARIABLE, "portable"))  # the same: nothing to do
    with pytest.raises(UserError, match="must be set before JAX starts computing"):
        numerics.use(
            "native" if os.environ.get(numerics.ENVIRONMENT_VARIABLE, "portable") == "portable" else "portable"
        )
    with pytest.raises(UserError, match="'numerics' must be one of portable, native, got 'fast'"):
        numerics.use("fast")


def test_importing_flaxvision_sets_the_portable_flags_and_a_misspelt_mode_says_so():
    script = "import os, flaxvision; print(os.environ['XLA_FLAGS']); print(os.environ['DNNL_MAX_CPU_ISA'])"
    env = {**os.environ, "XLA_FLAGS": "", "DNNL_MAX_CPU_ISA": "AVX512_CORE", numerics.ENVIRONMENT_VARIABLE: "portabel"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [numerics.xla_flags("portable", ""), "AVX2"]
    assert result.stderr.strip() == (
        "warning: FLAXVISION_NUMERICS=portabel is not one of portable, native: using portable"
    )
