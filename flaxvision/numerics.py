"""XLA:CPU's numerics: the same bits on every x86-64 CPU (``portable``), or the kernels XLA picks
for the CPU it runs on (``native``).

The stages take the mode from params.yaml's ``numerics``; predict, export, the Python API and the
tests from the environment variable FLAXVISION_NUMERICS; both default to portable. XLA reads its
flags (XLA_FLAGS) once, when JAX starts its CPU backend, so importing flaxvision sets them
(`use_default`) and a stage sets its params' mode before it computes anything (`use`).
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
    # by it); dots in Eigen, whose kernels do not depend on the CPU model (YNNPACK's do).
    "xla_cpu_experimental_ynn_fusion_type": "individual_convolution",
    "xla_cpu_use_xnnpack": "false",
    "xla_cpu_strict_dot_conv_math": "true",
}


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
    wanted = xla_flags(mode, os.environ.get("XLA_FLAGS", ""))
    if wanted == os.environ.get("XLA_FLAGS", ""):
        return
    if _backend_started():
        raise UserError(
            f"numerics {mode} must be set before JAX starts computing: set {ENVIRONMENT_VARIABLE}={mode} "
            "in the environment instead"
        )
    os.environ["XLA_FLAGS"] = wanted


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
        os.environ["XLA_FLAGS"] = xla_flags(mode, os.environ.get("XLA_FLAGS", ""))


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge  # no public API says whether the backends exist yet

    return xla_bridge.backends_are_initialized()
