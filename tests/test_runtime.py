"""flaxvision.runtime: threefry unrolled on CPU gives the bits of JAX's own rolled loop."""

import subprocess
import sys

import jax
import numpy as np

from flaxvision.runtime import unroll_threefry_on_cpu

SHAPE = (3, 1001)  # an odd count: threefry pads its counters to pairs


def bits(key):
    return jax.random.bits(key, SHAPE)


def test_unrolled_threefry_gives_the_rolled_loops_bits():
    # JAX's own lowering, in a process that has not changed it.
    reference = (
        "import jax, numpy as np; "
        f"print(np.asarray(jax.jit(lambda key: jax.random.bits(key, {SHAPE}))(jax.random.key(7))).tobytes().hex())"
    )
    rolled = subprocess.run([sys.executable, "-c", reference], capture_output=True, text=True, check=True)
    unroll_threefry_on_cpu()
    assert "while" not in jax.jit(bits).lower(jax.random.key(7)).as_text()  # the rolled lowering's loop
    assert np.asarray(jax.jit(bits)(jax.random.key(7))).tobytes().hex() == rolled.stdout.strip()
