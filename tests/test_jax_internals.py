"""flaxvision.jax_internals: each patch of a private JAX, Flax or jax2onnx internal passes its guard
on the pinned versions, still has its effect (and is still needed), and a changed internal is a loud
InternalChanged naming the pinned version, never a silent fallback.

A JAX, Flax or jax2onnx upgrade that breaks one of these tests changed what a patch relies on: update
the patch in flaxvision/jax_internals.py, or drop it where the test says it is no longer needed."""

import re
import subprocess
import sys
import tomllib
import types

import jax
import numpy as np
import pytest
from flax import nnx

from flaxvision import jax_internals
from flaxvision.jax_internals import InternalChanged
from flaxvision.models.layers import Dropout
from tests.helpers import PROJECT_ROOT

SHAPE = (3, 1001)  # an odd count: threefry pads its counters to pairs


def test_the_pinned_versions_are_pyprojects():
    dependencies = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(dependency.split(";")[0].strip().split("==") for dependency in dependencies if "==" in dependency)
    assert {package: pins[package] for package in jax_internals.PINNED} == jax_internals.PINNED


def changed(package: str) -> str:
    """What InternalChanged says of ``package``: the pinned version, matched literally."""
    return re.escape(f"written against {package}=={jax_internals.PINNED[package]}")


# --- threefry ---------------------------------------------------------------------------------


def bits(key):
    return jax.random.bits(key, SHAPE)


def test_unrolled_threefry_gives_the_rolled_loops_bits():
    # JAX's own lowering, in a process that has not changed it: still a loop on CPU (else the
    # patch is no longer needed), and the bits the unrolled one must give.
    reference = (
        "import jax, numpy as np; "
        f"bits = jax.jit(lambda key: jax.random.bits(key, {SHAPE})); "
        "print('while' in bits.lower(jax.random.key(7)).as_text()); "
        "print(np.asarray(bits(jax.random.key(7))).tobytes().hex())"
    )
    rolled = subprocess.run([sys.executable, "-c", reference], capture_output=True, text=True, check=True)
    loops, rolled_bits = rolled.stdout.split()
    assert loops == "True", "JAX no longer rolls threefry on CPU: drop jax_internals.unroll_threefry_on_cpu"
    jax_internals.unroll_threefry_on_cpu()
    assert "while" not in jax.jit(bits).lower(jax.random.key(7)).as_text()  # the rolled lowering's loop
    assert np.asarray(jax.jit(bits)(jax.random.key(7))).tobytes().hex() == rolled_bits


def test_a_changed_threefry_is_a_loud_error(monkeypatch):
    from jax._src.random import threefry2x32

    monkeypatch.delattr(threefry2x32, "_threefry2x32_cpu_lowering_rule")
    with pytest.raises(InternalChanged, match=changed("jax")):
        jax_internals.unroll_threefry_on_cpu()
    monkeypatch.setattr(threefry2x32, "threefry2x32_p", object())
    with pytest.raises(InternalChanged, match="threefry2x32_p"):
        jax_internals.unroll_threefry_on_cpu()


# --- whether the backends have started ----------------------------------------------------------


def test_backends_started_says_whether_jax_computed_yet():
    script = (
        "import jax; from flaxvision import jax_internals as j; before = j.backends_started(); "
        "jax.numpy.zeros(1).block_until_ready(); print(before, j.backends_started())"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert ran.stdout.split() == ["False", "True"]


def test_a_changed_backends_are_initialized_is_a_loud_error(monkeypatch):
    from jax._src import xla_bridge

    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: 1)
    with pytest.raises(InternalChanged, match=changed("jax")):
        jax_internals.backends_started()
    monkeypatch.delattr(xla_bridge, "backends_are_initialized")
    with pytest.raises(InternalChanged, match="backends_are_initialized"):
        jax_internals.backends_started()


# --- jax2onnx's ClosedJaxpr ---------------------------------------------------------------------

NESTED_JIT_TO_ONNX = """
import jax, jax.numpy as jnp
from jax2onnx import to_onnx
from flaxvision import jax_internals
inner = jax.jit(lambda x: jnp.sin(x) * 2)
spec = [jax.ShapeDtypeStruct((2, 3), jnp.float32)]
try:
    to_onnx(lambda x: inner(x) + 1, spec)
    print("converts-without")
except AttributeError as error:
    print("needs" if "ClosedJaxpr" in str(error) else f"other-error: {error}")
jax_internals.give_jax2onnx_closed_jaxpr()
jax_internals.give_jax2onnx_closed_jaxpr()  # twice: the second call finds its own name
print(len(to_onnx(lambda x: inner(x) + 1, spec).graph.node) > 0)
"""


@pytest.mark.slow
def test_jax2onnx_converts_a_jit_call_with_closed_jaxpr_given_and_still_needs_it():
    # A fresh process: in this one an export may have given the name already.
    ran = subprocess.run([sys.executable, "-c", NESTED_JIT_TO_ONNX], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    without, converted = ran.stdout.split()[-2:]
    assert without == "needs", f"jax2onnx converts without jax._src.core.ClosedJaxpr ({without}): drop the patch"
    assert converted == "True"


def test_a_closed_jaxpr_jax_has_again_is_a_loud_error(monkeypatch):
    from jax._src import core

    monkeypatch.setattr(jax_internals, "_closed_jaxpr_given", False)
    monkeypatch.setattr(core, "ClosedJaxpr", type("ClosedJaxpr", (), {}), raising=False)
    with pytest.raises(InternalChanged, match=rf"ClosedJaxpr again.*{changed('jax')}"):
        jax_internals.give_jax2onnx_closed_jaxpr()


# --- nnx.Dropout's attributes -------------------------------------------------------------------


def test_nnx_dropout_keeps_what_layers_dropout_reads():
    # The masks themselves: tests/test_models.py (test_dropout_draws_nnx_dropouts_masks_behind_a_barrier).
    for layer in (nnx.Dropout(0.3, rngs=nnx.Rngs(0)), nnx.Dropout(0.3), Dropout(0.3, rngs=nnx.Rngs(0))):
        jax_internals.check_dropout(layer)
    layer = Dropout(0.3, broadcast_dims=(1,), rngs=nnx.Rngs(0))
    assert (layer.rate, layer.broadcast_dims, layer.deterministic) == (0.3, (1,), False)


def test_a_changed_nnx_dropout_is_a_loud_error():
    with pytest.raises(InternalChanged, match=rf"attributes broadcast_dims, .*{changed('flax')}"):
        jax_internals.check_dropout(types.SimpleNamespace(rate=0.5, deterministic=False, rngs=None))
    with pytest.raises(InternalChanged, match="not an nnx.RngStream"):
        jax_internals.check_dropout(types.SimpleNamespace(rate=0.5, broadcast_dims=(), deterministic=False, rngs=7))

    class Renamed:
        def __init__(self, rate, *, broadcast_dims=(), deterministic=False, rng_stream=None): ...
        def __call__(self, inputs, *, deterministic=None, rngs=None): ...

    with pytest.raises(InternalChanged, match=r"Dropout\.__init__'s arguments rngs"):
        jax_internals._check_dropout_signatures(Renamed)
