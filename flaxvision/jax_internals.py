"""Every use of a private JAX or Flax internal, each behind a check of what it uses.

Where the public API lacks something flaxvision needs, the functions here reach into the internals
of the JAX, Flax and jax2onnx that pyproject.toml pins (`PINNED`). Each first checks that what it
uses is there and has the shape it was written for, and otherwise raises `InternalChanged`, which
names the pinned version: never a silent fallback, so an upgrade that changes an internal fails at
its first use, and in tests/test_jax_internals.py, which runs every check and the effect of every
patch. Each docstring says why the function exists and when it can go.

Nothing here imports JAX at module level: flaxvision.numerics asks `backends_started` before JAX
may be imported at all.
"""

import functools
import importlib.metadata
import inspect
from typing import Any

# The versions the internals below were read in: pyproject.toml's pins (a test compares them).
PINNED = {"jax": "0.12.0.1", "flax": "0.12.12", "jax2onnx": "0.17.1"}


class InternalChanged(RuntimeError):
    """A private internal flaxvision uses is missing, or not what it was written against."""


def _changed(package: str, what: str) -> InternalChanged:
    try:
        installed = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        installed = "(not installed)"
    return InternalChanged(
        f"{what}: flaxvision.jax_internals was written against {package}=={PINNED[package]}, and {package} "
        f"{installed} changed it. Update or drop the patch there (its docstring says why it exists)."
    )


# --- jax: threefry's lowering on CPU ----------------------------------------------------------


def unroll_threefry_on_cpu() -> None:
    """Lower threefry, JAX's random bits, on CPU as on the other backends: its rounds unrolled.

    On CPU JAX rolls them into a while loop, to compile faster; XLA:CPU then makes a pass over the
    whole array per iteration, on one core, and the dropout masks and augmentation draws of a train
    step take several times longer than one fused loop over the same integer arithmetic. The bits
    are the same either way (tests/test_jax_internals.py checks them against the rolled loop's).

    Uses jax._src.random.threefry2x32: its primitive ``threefry2x32_p``, the unrolled lowering rule
    ``_threefry2x32_lowering_rule`` (the other backends') and, to check that JAX still rolls on
    CPU, ``_threefry2x32_cpu_lowering_rule``. Can go when JAX unrolls on CPU itself (that CPU rule
    gone) or offers the choice through its config.
    """
    try:
        from jax._src.random import threefry2x32
        from jax.extend.core import Primitive
        from jax.interpreters import mlir
    except ImportError as error:
        raise _changed("jax", f"jax._src.random.threefry2x32 ({error})") from None
    primitive = getattr(threefry2x32, "threefry2x32_p", None)
    unrolled = getattr(threefry2x32, "_threefry2x32_lowering_rule", None)
    rolled = getattr(threefry2x32, "_threefry2x32_cpu_lowering_rule", None)
    if not (isinstance(primitive, Primitive) and primitive.name == "threefry2x32" and primitive.multiple_results):
        raise _changed("jax", "jax._src.random.threefry2x32.threefry2x32_p, the primitive of threefry's rounds")
    if not (callable(unrolled) and callable(rolled)):
        raise _changed(
            "jax",
            "jax._src.random.threefry2x32's lowering rules _threefry2x32_lowering_rule (unrolled) and "
            "_threefry2x32_cpu_lowering_rule (rolled, CPU's)",
        )
    mlir.register_lowering(primitive, unrolled, platform="cpu", inline=False)


# --- jax: whether the backends have started ---------------------------------------------------


def backends_started() -> bool:
    """Whether JAX has started its backends, so XLA has read its flags (flaxvision.numerics).

    No public API says so without starting them (jax.devices() would); this reads
    jax._src.xla_bridge.backends_are_initialized(). Can go when JAX offers a public equivalent.
    """
    try:
        from jax._src import xla_bridge
    except ImportError as error:
        raise _changed("jax", f"jax._src.xla_bridge ({error})") from None
    check = getattr(xla_bridge, "backends_are_initialized", None)
    if not callable(check) or inspect.signature(check).parameters:
        raise _changed("jax", "jax._src.xla_bridge.backends_are_initialized(), a function of no arguments")
    started = check()
    if not isinstance(started, bool):
        raise _changed("jax", f"jax._src.xla_bridge.backends_are_initialized() returned {started!r}, not a bool")
    return started


# --- jax2onnx: jax._src.core.ClosedJaxpr ------------------------------------------------------

_closed_jaxpr_given = False  # whether jax._src.core.ClosedJaxpr is ours


def give_jax2onnx_closed_jaxpr() -> None:
    """Give jax._src.core back the name ClosedJaxpr, which jax2onnx's jit plugin reads.

    jax2onnx 0.17.1 (the newest) lowers jit calls through jax._src.core.ClosedJaxpr, which jax 0.12
    dropped when it merged ClosedJaxpr into Jaxpr; jax.extend.core still names it. Checks that
    jax._src.core lacks the name and jax.extend.core has it. Can go once jax2onnx reads
    jax.extend.core (tests/test_jax_internals.py fails when jax2onnx no longer needs it).
    """
    global _closed_jaxpr_given
    try:
        from jax._src import core
        from jax.extend import core as extend_core
    except ImportError as error:
        raise _changed("jax", f"jax._src.core or jax.extend.core ({error})") from None
    named = getattr(extend_core, "ClosedJaxpr", None)
    if not isinstance(named, type):
        raise _changed("jax", "jax.extend.core.ClosedJaxpr, the class jax2onnx needs as jax._src.core.ClosedJaxpr")
    if _closed_jaxpr_given and getattr(core, "ClosedJaxpr", None) is named:
        return
    if hasattr(core, "ClosedJaxpr"):
        raise _changed("jax", "jax._src.core has ClosedJaxpr again (jax2onnx's jit plugin no longer needs it given)")
    core.ClosedJaxpr = named  # type: ignore[attr-defined]
    _closed_jaxpr_given = True


# --- flax: the attributes of nnx.Dropout --------------------------------------------------------

# What layers.Dropout reads of nnx.Dropout: the arguments it keeps as attributes, and its call's.
DROPOUT_ARGUMENTS = {
    "__init__": ("rate", "broadcast_dims", "deterministic", "rngs"),
    "__call__": ("inputs", "deterministic", "rngs"),
}


def check_dropout(layer: Any) -> None:
    """Check that ``layer``, an nnx.Dropout, keeps its arguments where flaxvision.models.layers.Dropout
    reads them: ``rate``, ``broadcast_dims``, ``deterministic`` and ``rngs`` (its key stream, an
    nnx.RngStream, or None), and that nnx.Dropout takes them and its call's arguments by those names.

    layers.Dropout draws nnx.Dropout's mask itself on CPU, behind an optimization barrier (see its
    docstring), from these attributes: public, but no documented contract, and a Flax that renamed
    one would make it read the wrong thing. The masks themselves are compared with nnx.Dropout's by
    tests/test_models.py. Can go with that subclass, when XLA:CPU no longer computes a mask's bits
    twice.
    """
    from flax import nnx

    _check_dropout_signatures(nnx.Dropout)
    missing = [name for name in DROPOUT_ARGUMENTS["__init__"] if not hasattr(layer, name)]
    if missing:
        raise _changed("flax", f"flax.nnx.Dropout's attributes {', '.join(missing)}, which models.layers.Dropout reads")
    if not (layer.rngs is None or isinstance(layer.rngs, nnx.RngStream)):
        raise _changed("flax", f"flax.nnx.Dropout.rngs is a {type(layer.rngs).__name__}, not an nnx.RngStream or None")


@functools.cache
def _check_dropout_signatures(dropout: type) -> None:
    for method, names in DROPOUT_ARGUMENTS.items():
        parameters = inspect.signature(getattr(dropout, method)).parameters
        if missing := [name for name in names if name not in parameters]:
            raise _changed("flax", f"flax.nnx.Dropout.{method}'s arguments {', '.join(missing)}")
