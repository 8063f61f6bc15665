"""XLA:CPU's numerics: the same bits on every x86-64 CPU (``portable``), or the kernels XLA picks
for the CPU it runs on (``native``); for oneDNN's convolutions too.

The stages take the mode from params.yaml's ``numerics``; predict, export, the Python API and the
tests from the environment variable FLAXVISION_NUMERICS; both default to portable. XLA reads its
flags (XLA_FLAGS) once, when JAX starts its CPU backend, and oneDNN its DNNL_MAX_CPU_ISA when it
first runs, so importing flaxvision sets them (`use_default`) and a stage sets its params' mode
before it computes anything (`use`).
GPU and TPU backends are not affected: their bits are their own.
"""

import os
import sys

from flaxvision.errors import UserError

MODES = ("portable", "native")
ENVIRONMENT_VARIABLE = "FLAXVISION_NUMERICS"

PORTABLE_FLAGS = {
    # LLVM's code for AVX2 and FMA, 256 bits wide, also on CPUs with AVX-512: vectors of another
    # width sum reductions in another order.
    "xla_cpu_max_isa": "AVX2",
    "xla_cpu_prefer_vector_width": "256",
    # Convolutions in YNNPACK, whose sums do not depend on the core count (Eigen's split them
    # by it); dots in Eigen, whose kernels do not depend on the CPU model (YNNPACK's do). Eigen
    # splits a long sum by the core count too: flaxvision.ops.cpu_kernels.matmul cuts it short.
    "xla_cpu_experimental_ynn_fusion_type": "individual_convolution",
    "xla_cpu_use_xnnpack": "false",
    "xla_cpu_strict_dot_conv_math": "true",
}
# oneDNN's (`convolutions: onednn`) code for AVX2 also on CPUs with AVX-512; it reads this when it
# first runs. Its sums never depend on the thread count (flaxvision/ops/onednn_conv.cc).
ONEDNN_ISA = ("DNNL_MAX_CPU_ISA", "AVX2")
_USERS_ISA = os.environ.get(ONEDNN_ISA[0])  # before this module sets it; native gives it back


def xla_flags(mode: str, current: str) -> str:
    """XLA_FLAGS for ``mode``: ``current`` (the user's own flags, such as a device count) without
    the portable flags, then, if ``mode`` is portable, those (XLA takes a flag's last value)."""
    portable = [f"--{name}={value}" for name, value in PORTABLE_FLAGS.items()]
    own = [flag for flag in current.split() if flag not in portable]
    return " ".join(own + portable if mode == "portable" else own)


def use(mode: str) -> None:
    """Compute with ``mode``'s numerics from now on. A UserError if JAX's backend already started
    with other flags (XLA would silently keep them)."""
    if mode not in MODES:
        raise UserError(f"params.yaml: 'numerics' must be one of {', '.join(MODES)}, got {mode!r}")
    wanted = _variables(mode)
    if all(os.environ.get(name) == value for name, value in wanted.items()):
        return
    if _backend_started():
        raise UserError(
            f"numerics {mode} must be set before JAX starts computing: set {ENVIRONMENT_VARIABLE}={mode} "
            "in the environment instead"
        )
    _set(wanted)


def use_default() -> None:
    """The mode FLAXVISION_NUMERICS names (portable when unset), if JAX has not started yet. Any
    other value is portable too, said in one line: a typo must not silently give native bits."""
    mode = os.environ.get(ENVIRONMENT_VARIABLE, "portable")
    if mode not in MODES:
        print(
            f"warning: {ENVIRONMENT_VARIABLE}={mode} is not one of {', '.join(MODES)}: using portable", file=sys.stderr
        )
        mode = "portable"
    if not _backend_started():
        _set(_variables(mode))


def _variables(mode: str) -> dict[str, str | None]:
    """The environment ``mode`` needs, from the current one: a value per variable, None to unset it."""
    name, isa = ONEDNN_ISA
    return {
        "XLA_FLAGS": xla_flags(mode, os.environ.get("XLA_FLAGS", "")) or None,
        name: isa if mode == "portable" else _USERS_ISA,
    }


def _set(variables: dict[str, str | None]) -> None:
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from flaxvision import jax_internals  # no public API says whether the backends exist yet

    return jax_internals.backends_started()
