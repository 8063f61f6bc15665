"""Process-wide JAX setup for every stage: the persistent compilation cache, random bits lowered
for speed on CPU (flaxvision.jax_internals), and multi-host runs.

Each DVC stage is a new process, so without the cache every stage recompiles what the one before
it compiled: building a backbone alone compiles one initializer per weight shape (DenseNet121 has
many, and this cache saves most of its build time), and every train or logits step is compiled
again per run.
"""

import os

import jax

from flaxvision.jax_internals import unroll_threefry_on_cpu
from flaxvision.paths import cache_dir


def setup_jax() -> None:
    """Keep every compiled XLA program in ``<cache dir>/xla`` ($FLAXVISION_CACHE), however small;
    with FLAXVISION_DISTRIBUTED=1, join the other processes: jax.distributed.initialize finds the
    coordinator, process count and id itself on TPU pods and under SLURM, Open MPI or Kubernetes;
    elsewhere it reads JAX_COORDINATOR_ADDRESS, and the process count and id come from
    JAX_NUM_PROCESSES and JAX_PROCESS_ID (which JAX does not read)."""
    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    unroll_threefry_on_cpu()
    if os.environ.get("FLAXVISION_DISTRIBUTED") == "1":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices' collectives across processes
        count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
        jax.distributed.initialize(
            num_processes=None if count is None else int(count), process_id=None if index is None else int(index)
        )
