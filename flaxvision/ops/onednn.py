"""oneDNN's convolutions on XLA:CPU (`convolutions: onednn` in params.yaml, the default).

XLA:CPU runs each convolution on one core; oneDNN's (TF and PyTorch run them on CPUs) use every
core and are faster per core too. Its three passes (forward, input gradient, kernel gradient) are
XLA FFI handlers compiled from onednn_conv.cc when flaxvision is installed (setup.py), and
``jax.custom_vjp`` differentiates through them, each gradient its own call, so XLA drops the
ones a step does not use (the input gradient of the first layer).

Their bits are the same on every x86-64 CPU with AVX2, whatever its thread count: numerics
portable caps oneDNN's code at AVX2 (DNNL_MAX_CPU_ISA, flaxvision.numerics), and the kernel
gradient, the one pass that sums over the batch, is summed in fixed chunks (onednn_conv.cc).
"""

import ctypes
import functools
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import platform
import sys
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec

from flaxvision.ops import cpu_kernels
from flaxvision.ops.cpu_kernels import Padding

PASSES = ("Forward", "InputGrad", "KernelGrad")  # the handlers' names, after OnednnConv
SUPPORTED = sys.platform == "linux" and platform.machine() == "x86_64"  # oneDNN's wheels' one platform


def conv_general_dilated(
    lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: str | Padding, **kwargs: Any
) -> jax.Array:
    """lax.conv_general_dilated (NHWC, HWIO) through oneDNN where it applies: on a CPU, float32,
    not grouped or dilated, a kernel larger than 1×1 and a feature map larger than the kernel;
    elsewhere (GPU and TPU included) flaxvision.ops.cpu_kernels.conv_general_dilated, which ends
    in XLA's own."""
    if not (
        jax.default_backend() == "cpu"
        and lhs.dtype == rhs.dtype == jnp.float32
        and kwargs["feature_group_count"] == 1
        and {*kwargs["lhs_dilation"], *kwargs["rhs_dilation"]} == {1}
        and kwargs.get("preferred_element_type") is None
        and kwargs.get("out_sharding") is None
        # 1×1 kernels, and maps no larger than the kernel, are matrix products there, which
        # run faster than oneDNN's convolutions
        and rhs.shape[:2] != (1, 1)
        and min(lhs.shape[1:3]) > max(rhs.shape[:2])
    ):
        return cpu_kernels.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    run = functools.partial(convolve, strides=tuple(window_strides), padding=tuple(tuple(pair) for pair in padding))
    # XLA cannot split a call it does not know over devices: under a mesh (a train step over
    # several), each device convolves its own rows of the batch and shard_map's transpose sums
    # the kernel gradient over devices, instead of every device convolving the whole batch.
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.size > 1 and lhs.shape[0] % mesh.size == 0:
        rows = PartitionSpec(mesh.axis_names)
        # check_vma off: the handlers' results carry no type of how they vary over devices
        run = jax.shard_map(run, mesh=mesh, in_specs=(rows, PartitionSpec()), out_specs=rows, check_vma=False)
    return run(lhs, rhs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def convolve(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, ...], padding: tuple[tuple[int, int], ...]
) -> jax.Array:
    """The convolution of x [B, H, W, C] with kernel [KH, KW, C, O]; ``padding`` is
    ((top, bottom), (left, right))."""
    (height, width), (kernel_height, kernel_width) = x.shape[1:3], kernel.shape[:2]
    output_shape = (
        x.shape[0],
        (height + sum(padding[0]) - kernel_height) // strides[0] + 1,
        (width + sum(padding[1]) - kernel_width) // strides[1] + 1,
        kernel.shape[3],
    )
    return _call("Forward", output_shape, x, kernel, strides, padding)


def _forward(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, ...], padding: tuple[tuple[int, int], ...]
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return convolve(x, kernel, strides, padding), (x, kernel)


def _backward(
    strides: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    residuals: tuple[jax.Array, jax.Array],
    grad: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    x, kernel = residuals
    return (
        _call("InputGrad", x.shape, grad, kernel, strides, padding),
        _call("KernelGrad", kernel.shape, x, grad, strides, padding),
    )


convolve.defvjp(_forward, _backward)


def _call(
    name: str,
    shape: tuple[int, ...],
    first: jax.Array,
    second: jax.Array,
    strides: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
) -> jax.Array:
    load()
    return jax.ffi.ffi_call(f"flaxvision_onednn_conv_{name}", jax.ShapeDtypeStruct(shape, jnp.float32))(
        first, second, strides=np.asarray(strides, np.int64), padding=np.asarray(padding, np.int64).ravel()
    )


REBUILD = "uv sync --reinstall-package flaxvision"


@functools.cache
def load() -> None:
    """Load the compiled handlers (oneDNN's library first: the handlers' library links it by name
    and it lies in the environment's lib/, outside the loader's search path) and register them.

    An ImportError when flaxvision was installed without them, or when they were compiled from
    another onednn_conv.cc than the one beside this file."""
    path = _library()
    if path is None:
        raise ImportError(
            "flaxvision was installed without its oneDNN extension (it needs Linux x86-64 and a "
            f"C++ compiler): install g++ and run `{REBUILD}`"
        )
    try:
        ctypes.CDLL(str(_onednn_library()), mode=ctypes.RTLD_GLOBAL)
        library = ctypes.CDLL(str(path))
    except (OSError, importlib.metadata.PackageNotFoundError) as error:  # oneDNN missing, or a broken build
        raise ImportError(f"{path.name} does not load ({error}): reinstall it with `{REBUILD}`") from None
    library.OnednnConvSourceHash.restype = ctypes.c_char_p
    source = Path(__file__).with_name("onednn_conv.cc")
    if source.is_file() and library.OnednnConvSourceHash().decode() != hashlib.sha256(source.read_bytes()).hexdigest():
        raise ImportError(f"{path.name} was compiled from another {source}: rebuild it with `{REBUILD}`")
    for name in PASSES:
        handler = jax.ffi.pycapsule(getattr(library, f"OnednnConv{name}"))
        jax.ffi.register_ffi_target(f"flaxvision_onednn_conv_{name}", handler, platform="cpu")


def _onednn_library() -> Path:
    """oneDNN's own library, which its wheel puts in the environment's lib/ (found through the
    wheel's file list, not sys.prefix: an interpreter run by path, as under qemu, has another)."""
    for file in importlib.metadata.distribution("onednn-cpu-gomp").files or ():
        if file.name == "libdnnl.so.3":
            return Path(str(file.locate()))
    raise OSError("the onednn-cpu-gomp package has no libdnnl.so.3")


def _library() -> Path | None:
    """The compiled handlers: beside this module, or, in a copy of the checkout (a DVC experiment's
    temp folder, which holds only the tracked files), in the checkout that is installed editable."""
    spec = importlib.util.find_spec("flaxvision.ops._onednn")
    if spec is not None and spec.origin is not None:
        return Path(spec.origin)
    # The environment's record of the install; a checkout's own flaxvision.egg-info has none.
    for distribution in importlib.metadata.distributions(name="flaxvision"):
        installed = json.loads(distribution.read_text("direct_url.json") or "{}")
        if installed.get("dir_info", {}).get("editable"):
            checkout = Path(urllib.request.url2pathname(urllib.parse.urlparse(installed["url"]).path))
            path = checkout / "flaxvision" / "ops" / f"_onednn{importlib.machinery.EXTENSION_SUFFIXES[0]}"
            return path if path.is_file() else None
    return None
